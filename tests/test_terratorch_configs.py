"""TerraTorch-style configs run with only the class-path prefix changed (issue 13).

Each config below is written as TerraTorch's examples and integration tests write theirs
(burn scars, Sen1Floods11 with smp and through its named datamodule, the manufactured tiled
test, AGB regression, ForestNet with timm, multi-temporal crops, multimodal TerraMind), scaled down to tiny models and generated
chips. Every construct of the issue appears in at least one of them: albumentations transforms,
``ToTensorV2``, HLS band names and 0-based band intervals, ``-1`` placeholder bands, ``.txt``
split files and statistics, ``tiled_inference_parameters``, ``plot_on_val`` as bool and int,
``lr_overrides``, the legacy factories and their argument names, backbones without necks,
TerraTorch's backbone keywords, ``RichProgressBar``, ``StateDictAwareModelCheckpoint``, the
``optimizer``/``lr_scheduler`` blocks. Each runs ``fit`` under ``fast_dev_run`` as written
(``terratorch.`` paths) and with the prefix swapped to ``geofm.``, and passes ``check-config``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from geofm.cli import main as geofm
from tests.data.benchmark_layouts import make_crop, make_sen1floods11
from tests.data.fixtures import make_class_folder, make_pixel_folder, write_tif

TRAINER = """
trainer:
  accelerator: cpu
  devices: 1
  num_nodes: 1
  precision: 32
  fast_dev_run: true
  logger:
    class_path: TensorBoardLogger
    init_args:
      save_dir: {out}
      name: tt
  callbacks:
    - class_path: RichProgressBar
    - class_path: LearningRateMonitor
      init_args:
        logging_interval: epoch
    - class_path: EarlyStopping
      init_args:
        monitor: val/loss
        patience: 40
  max_epochs: 2
  check_val_every_n_epoch: 1
  log_every_n_steps: 1
  enable_checkpointing: true
  default_root_dir: {out}
"""

OPTIMIZER = """
optimizer:
  class_path: torch.optim.AdamW
  init_args:
    lr: 1.e-4
    weight_decay: 0.05
lr_scheduler:
  class_path: ReduceLROnPlateau
  init_args:
    monitor: val/loss
"""

HLS_STATS = """
    means: [547.36707, 898.5121, 1020.9082, 2665.5352, 2340.584, 1610.1407]
    stds: [411.4701, 558.54065, 815.94025, 812.4403, 1113.7145, 1067.641]
"""

# examples/confs/burn_scars.yaml: Prithvi ViT + necks + UNetDecoder, albumentations, tiling.
BURN_SCARS = """
data:
  class_path: terratorch.datamodules.GenericNonGeoSegmentationDataModule
  init_args:
    batch_size: 2
    num_workers: 0
    dataset_bands: [BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2]
    output_bands: [BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2]
    rgb_indices: [2, 1, 0]
    train_transform:
      - class_path: albumentations.RandomCrop
        init_args:
          height: 32
          width: 32
      - class_path: albumentations.D4
      - class_path: ToTensorV2
    no_data_replace: 0
    no_label_replace: -1
    train_data_root: {seg}/train/images
    train_label_data_root: {seg}/train/labels
    val_data_root: {seg}/val/images
    val_label_data_root: {seg}/val/labels
    test_data_root: {seg}/val/images
    test_label_data_root: {seg}/val/labels
    img_grep: "*_img.tif"
    label_grep: "lbl_*.tif"
""" + HLS_STATS + """
    num_classes: 3
model:
  class_path: terratorch.tasks.SemanticSegmentationTask
  init_args:
    model_factory: EncoderDecoderFactory
    model_args:
      backbone: prithvi_eo_tiny
      backbone_pretrained: false
      backbone_drop_path: 0.1
      backbone_bands: [BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2]
      necks:
        - name: SelectIndices
          indices: [0, 1, 2, 3]
        - name: ReshapeTokensToImage
        - name: LearnedInterpolateToPyramidal
      decoder: UNetDecoder
      decoder_channels: [64, 32, 16, 8]
      head_channel_list: [16]
      head_dropout: 0.1
      num_classes: 3
    loss: dice
    plot_on_val: 10
    ignore_index: -1
    freeze_backbone: false
    freeze_decoder: false
    tiled_inference_parameters:
      h_crop: 32
      h_stride: 24
      w_crop: 32
      w_stride: 24
      average_patches: true
""" + OPTIMIZER

# tests/resources/configs/manufactured-finetune_prithvi_eo_v2_600_segmentation_tiled.yaml:
# PrithviModelFactory arguments, band intervals, Rotate, tiled testing.
MANUFACTURED_TILED = """
data:
  class_path: GenericNonGeoSegmentationDataModule
  init_args:
    batch_size: 2
    num_workers: 0
    train_transform:
      - class_path: albumentations.HorizontalFlip
        init_args:
          p: 0.5
      - class_path: albumentations.Rotate
        init_args:
          limit: 30
          border_mode: 0
          p: 0.5
      - class_path: ToTensorV2
    dataset_bands:
      - [0, 7]
    output_bands:
      - [1, 3]
      - [4, 6]
    rgb_indices: [2, 1, 0]
    train_data_root: {seg8}/train/images
    train_label_data_root: {seg8}/train/labels
    val_data_root: {seg8}/val/images
    val_label_data_root: {seg8}/val/labels
    test_data_root: {seg8}/val/images
    test_label_data_root: {seg8}/val/labels
    img_grep: "*_img.tif"
    label_grep: "lbl_*.tif"
""" + HLS_STATS + """
    no_label_replace: -1
    no_data_replace: 0
    num_classes: 3
model:
  class_path: terratorch.tasks.SemanticSegmentationTask
  init_args:
    model_args:
      decoder: UperNetDecoder
      pretrained: false
      backbone: prithvi_eo_tiny
      decoder_channels: 16
      in_channels: 6
      bands: [BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2]
      num_frames: 1
      num_classes: 3
      head_dropout: 0.5
    output_most_probable: false
    tiled_inference_on_testing: true
    loss: ce
    ignore_index: -1
    freeze_backbone: true
    freeze_decoder: false
    model_factory: PrithviModelFactory
    tiled_inference_parameters:
      h_crop: 32
      h_stride: 16
      w_crop: 32
      w_stride: 32
      average_patches: true
""" + OPTIMIZER

# examples/confs/sen1floods11_vit_smp.yaml: 13 Sentinel-2 bands, constant_scale, .txt splits,
# an smp decoder on Prithvi, class weights.
SEN1FLOODS11_SMP = """
data:
  class_path: terratorch.datamodules.GenericNonGeoSegmentationDataModule
  init_args:
    batch_size: 2
    num_workers: 0
    constant_scale: 0.0001
    dataset_bands: [COASTAL_AEROSOL, BLUE, GREEN, RED, RED_EDGE_1, RED_EDGE_2, RED_EDGE_3, NIR_BROAD,
                    NIR_NARROW, WATER_VAPOR, CIRRUS, SWIR_1, SWIR_2]
    output_bands: [BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2]
    rgb_indices: [2, 1, 0]
    train_data_root: {s2}/S2Hand/
    train_label_data_root: {s2}/LabelHand
    val_data_root: {s2}/S2Hand/
    val_label_data_root: {s2}/LabelHand
    test_data_root: {s2}/S2Hand/
    test_label_data_root: {s2}/LabelHand
    train_split: {s2}/splits/flood_train_data.txt
    val_split: {s2}/splits/flood_valid_data.txt
    test_split: {s2}/splits/flood_valid_data.txt
    img_grep: "*_S2Hand.tif"
    label_grep: "*_LabelHand.tif"
    no_label_replace: -1
    no_data_replace: 0
    means: {s2}/means.txt
    stds: {s2}/stds.txt
    num_classes: 2
model:
  class_path: terratorch.tasks.SemanticSegmentationTask
  init_args:
    model_args:
      backbone_pretrained: false
      backbone: prithvi_eo_tiny
      backbone_bands: [BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2]
      backbone_num_frames: 1
      num_classes: 2
      head_dropout: 0.1
      head_channel_list: [16]
      necks:
        - name: SelectIndices
          indices: [0, 1, 2, 3]
        - name: ReshapeTokensToImage
        - name: LearnedInterpolateToPyramidal
      decoder: smp_FPN
    loss: ce
    ignore_index: -1
    class_weights: [0.3, 0.7]
    freeze_backbone: false
    freeze_decoder: false
    model_factory: EncoderDecoderFactory
    lr_overrides:
      encoder: 1.0e-5
""" + OPTIMIZER

# The SMP factory of TerraTorch's integration tests, a backbone without necks for the ViT.
SMP_FACTORY = """
data:
  class_path: terratorch.datamodules.GenericNonGeoSegmentationDataModule
  init_args:
    batch_size: 2
    num_workers: 0
    dataset_bands: [BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2]
    output_bands: [BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2]
    train_data_root: {seg}/train/images
    train_label_data_root: {seg}/train/labels
    val_data_root: {seg}/val/images
    val_label_data_root: {seg}/val/labels
    img_grep: "*_img.tif"
    label_grep: "lbl_*.tif"
    no_label_replace: -1
    no_data_replace: 0
    allow_substring_split_file: true
    check_stackability: false
""" + HLS_STATS + """
    num_classes: 3
model:
  class_path: terratorch.tasks.SemanticSegmentationTask
  init_args:
    model_factory: SMPModelFactory
    model_args:
      model: Unet
      backbone: resnet18
      pretrained: false
      bands: [BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2]
      in_channels: 6
      num_classes: 3
    loss: ce
    ignore_index: -1
    plot_on_val: false
""" + OPTIMIZER

# A Prithvi ViT straight into a single-scale decoder: no necks, the reshape is inserted.
VIT_WITHOUT_NECKS = """
data:
  class_path: terratorch.datamodules.GenericNonGeoSegmentationDataModule
  init_args:
    batch_size: 2
    num_workers: 0
    train_data_root: {seg}/train/images
    train_label_data_root: {seg}/train/labels
    val_data_root: {seg}/val/images
    val_label_data_root: {seg}/val/labels
    img_grep: "*_img.tif"
    label_grep: "lbl_*.tif"
    no_label_replace: -1
""" + HLS_STATS + """
    num_classes: 3
model:
  class_path: terratorch.tasks.SemanticSegmentationTask
  init_args:
    model_factory: EncoderDecoderFactory
    model_args:
      backbone: prithvi_eo_tiny
      backbone_pretrained: false
      backbone_in_channels: 6
      backbone_drop_path_rate: 0.1
      backbone_model_bands: [BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2]
      decoder: FCNDecoder
      num_classes: 3
    loss: ce
    ignore_index: -1
""" + OPTIMIZER

# examples/confs/sen1floods11_vit_peft.yaml: LoRA through model_args.peft_config, with the
# fused qkv split (replace_qkv) so that LoRA targets q and v apart, and an auxiliary head.
VIT_PEFT = """
data:
  class_path: terratorch.datamodules.GenericNonGeoSegmentationDataModule
  init_args:
    batch_size: 2
    num_workers: 0
    train_data_root: {seg}/train/images
    train_label_data_root: {seg}/train/labels
    val_data_root: {seg}/val/images
    val_label_data_root: {seg}/val/labels
    img_grep: "*_img.tif"
    label_grep: "lbl_*.tif"
    no_label_replace: -1
""" + HLS_STATS + """
    num_classes: 3
model:
  class_path: terratorch.tasks.SemanticSegmentationTask
  init_args:
    model_args:
      decoder: FCNDecoder
      backbone_pretrained: false
      backbone: prithvi_eo_tiny
      decoder_channels: 32
      backbone_bands: [BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2]
      num_classes: 3
      head_dropout: 0.1
      decoder_num_convs: 2
      necks:
        - name: SelectIndices
          indices: [-1]
        - name: ReshapeTokensToImage
      peft_config:
        method: LORA
        replace_qkv: qkv
        peft_config_kwargs:
          target_modules: [qkv.q_linear, qkv.v_linear, mlp.fc1, mlp.fc2]
          lora_alpha: 16
          r: 16
    loss: ce
    aux_heads:
      - name: aux_head
        decoder: FCNDecoder
        decoder_args:
          decoder_channels: 32
          decoder_in_index: -1
          decoder_num_convs: 2
          head_dropout: 0.1
    aux_loss:
      aux_head: 1.0
    ignore_index: -1
    freeze_backbone: false
""" + OPTIMIZER

# examples/tutorials/PrithviEOv2/configs/prithvi_v2_eo_300_tl_unet_agb.yaml: regression,
# -1 placeholder bands, D4, plot_on_val: true.
AGB_REGRESSION = """
data:
  class_path: GenericNonGeoPixelwiseRegressionDataModule
  init_args:
    batch_size: 2
    num_workers: 0
    train_data_root: {reg}/train/images
    train_label_data_root: {reg}/train/labels
    val_data_root: {reg}/val/images
    val_label_data_root: {reg}/val/labels
    test_data_root: {reg}/val/images
    test_label_data_root: {reg}/val/labels
    img_grep: '*_img.tif'
    label_grep: 'lbl_*.tif'
""" + HLS_STATS + """
    train_transform:
      - class_path: albumentations.D4
      - class_path: ToTensorV2
    dataset_bands: [-1, BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2, -1]
    output_bands: [BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2]
    rgb_indices: [2, 1, 0]
    no_data_replace: 0
    no_label_replace: -1
model:
  class_path: terratorch.tasks.PixelwiseRegressionTask
  init_args:
    model_factory: EncoderDecoderFactory
    model_args:
      backbone: prithvi_eo_tiny
      backbone_pretrained: false
      backbone_num_frames: 1
      backbone_img_size: 64
      backbone_bands: [BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2]
      necks:
        - name: SelectIndices
          indices: [0, 1, 2, 3]
        - name: ReshapeTokensToImage
        - name: LearnedInterpolateToPyramidal
      decoder: UNetDecoder
      decoder_channels: [64, 32, 16, 8]
    loss: rmse
    ignore_index: -1
    freeze_backbone: true
    freeze_decoder: false
    plot_on_val: true
""" + OPTIMIZER

# examples/confs/forestnet_timm.yaml: TimmModelFactory classification, Resize on val/test.
FORESTNET_TIMM = """
data:
  class_path: terratorch.datamodules.GenericNonGeoClassificationDataModule
  init_args:
    batch_size: 2
    num_workers: 0
    dataset_bands: [BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2]
    output_bands: [BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2]
    rgb_indices: [2, 1, 0]
    train_data_root: {cls}/train
    val_data_root: {cls}/val
    test_data_root: {cls}/val
    constant_scale: 39.216
""" + HLS_STATS + """
    num_classes: 3
    train_transform:
      - class_path: albumentations.RandomCrop
        init_args:
          height: 24
          width: 24
      - class_path: albumentations.HorizontalFlip
        init_args:
          p: 0.5
      - class_path: ToTensorV2
    val_transform:
      - class_path: albumentations.Resize
        init_args:
          height: 24
          width: 24
      - class_path: ToTensorV2
model:
  class_path: terratorch.tasks.ClassificationTask
  init_args:
    model_factory: TimmModelFactory
    model_args:
      backbone: resnet18
      pretrained: false
      in_channels: 6
      num_classes: 3
    freeze_backbone: false
    loss: ce
    class_names: [forest, urban, water]
""" + OPTIMIZER

# examples/confs/multi_temporal_crop.yaml: three dates, time flattened for albumentations and
# back, reduce_zero_label, a ViT straight into FCNDecoder (reshape inserted), .txt splits.
MULTI_TEMPORAL_CROP = """
data:
  class_path: GenericNonGeoSegmentationDataModule
  init_args:
    batch_size: 2
    num_workers: 0
    train_transform:
      - class_path: FlattenTemporalIntoChannels
      - class_path: albumentations.Flip
      - class_path: ToTensorV2
      - class_path: UnflattenTemporalFromChannels
        init_args:
          n_timesteps: 3
    dataset_bands: [BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2]
    output_bands: [BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2]
    rgb_indices: [2, 1, 0]
    reduce_zero_label: True
    expand_temporal_dimension: True
    train_data_root: {crop}/training_chips
    train_label_data_root: {crop}/training_chips
    val_data_root: {crop}/validation_chips
    val_label_data_root: {crop}/validation_chips
    test_data_root: {crop}/validation_chips
    test_label_data_root: {crop}/validation_chips
    train_split: {crop}/training_data.txt
    test_split: {crop}/validation_data.txt
    val_split: {crop}/validation_data.txt
    img_grep: "*_merged.tif"
    label_grep: "*.mask.tif"
    means: [494.905781, 815.239594, 924.335066, 2968.881459, 2634.621962, 1739.579917]
    stds: [284.925432, 357.84876, 575.566823, 896.601013, 951.900334, 921.407808]
    num_classes: 13
model:
  class_path: terratorch.tasks.SemanticSegmentationTask
  init_args:
    model_args:
      decoder: FCNDecoder
      backbone_pretrained: false
      backbone: prithvi_eo_tiny
      backbone_in_channels: 6
      rescale: False
      backbone_bands: [BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2]
      backbone_num_frames: 3
      num_classes: 13
      head_dropout: 0.1
      decoder_channels: 32
      head_channel_list: [16, 8]
    loss: ce
    class_weights: [0.39, 0.66, 0.55, 0.64, 0.88, 0.93, 3.25, 1.54, 2.18, 2.27, 3.06, 3.63, 1.20]
    ignore_index: -1
    freeze_backbone: false
    freeze_decoder: false
    model_factory: EncoderDecoderFactory
    tiled_inference_parameters:
      h_crop: 32
      h_stride: 16
      w_crop: 32
      w_stride: 16
      average_patches: true
""" + OPTIMIZER

# The named Sen1Floods11 datamodule with TerraTorch's timm ResNet integration-test model.
SEN1FLOODS11_NAMED = """
data:
  class_path: terratorch.datamodules.Sen1Floods11NonGeoDataModule
  init_args:
    data_root: {floods}
    batch_size: 2
    num_workers: 0
    bands: [BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2]
    train_transform:
      - class_path: albumentations.VerticalFlip
      - class_path: ToTensorV2
model:
  class_path: terratorch.tasks.SemanticSegmentationTask
  init_args:
    model_args:
      backbone: timm_resnet18
      backbone_pretrained: false
      num_classes: 2
      backbone_in_chans: 6
      necks:
        - name: SelectIndices
          indices: [0, 1, 2, 3]
      decoder: UNetDecoder
      decoder_channels: [64, 32, 16, 8]
      head_channel_list: [16]
      head_dropout: 0.1
    model_factory: EncoderDecoderFactory
    loss: ce
    plot_on_val: 2
    ignore_index: -1
    freeze_backbone: false
    freeze_decoder: false
""" + OPTIMIZER

# integrationtests/configs/test_terramind_base.yaml: two modalities, bands by index per modality,
# rgb_modality, TerraMind through necks into UNetDecoder.
TERRAMIND_MULTIMODAL = """
data:
  class_path: terratorch.datamodules.GenericMultiModalDataModule
  init_args:
    task: 'segmentation'
    batch_size: 2
    num_workers: 0
    no_label_replace: -1
    no_data_replace: 0
    dataset_bands:
      S1GRD: [0, 1]
      S2L1C: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    output_bands:
      S1GRD: [0, 1]
      S2L1C: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    modalities: [S2L1C, S1GRD]
    rgb_modality: S2L1C
    rgb_indices: [1, 2, 3]
    train_data_root:
      S2L1C: {mm}/S2L1CHand
      S1GRD: {mm}/S1GRDHand
    train_label_data_root: {mm}/LabelHand
    val_data_root:
      S2L1C: {mm}/S2L1CHand
      S1GRD: {mm}/S1GRDHand
    val_label_data_root: {mm}/LabelHand
    test_data_root:
      S2L1C: {mm}/S2L1CHand
      S1GRD: {mm}/S1GRDHand
    test_label_data_root: {mm}/LabelHand
    train_split: {mm}/splits/flood_train_data.txt
    test_split: {mm}/splits/flood_valid_data.txt
    val_split: {mm}/splits/flood_valid_data.txt
    image_grep:
      S1GRD: '*_S1Hand.tif'
      S2L1C: '*_S2Hand.tif'
    label_grep: "*_LabelHand.tif"
    num_classes: 2
    means:
      S1GRD: [-10.46, -17.28]
      S2L1C: [1631.6, 1403.8, 1371.1, 1231.8, 1471.0, 2369.5, 2819.1, 2600.5, 3047.2, 487.4, 56.2, 2038.5, 1194.4]
    stds:
      S1GRD: [4.10, 4.72]
      S2L1C: [734.8, 774.3, 769.9, 900.7, 808.7, 947.3, 1109.4, 1048.0, 1223.9, 342.1, 114.6, 1019.2, 795.1]
    train_transform:
      - class_path: albumentations.D4
      - class_path: ToTensorV2
model:
  class_path: terratorch.tasks.SemanticSegmentationTask
  init_args:
    model_factory: EncoderDecoderFactory
    model_args:
      backbone: terramind_v1_tiny
      backbone_pretrained: false
      backbone_modalities: [S2L1C, S1GRD]
      backbone_merge_method: mean
      backbone_bands:
        S1GRD: [0, 1]
        S2L1C: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
      necks:
        - name: SelectIndices
          indices: [2, 5, 8, 11]
        - name: ReshapeTokensToImage
          remove_cls_token: False
        - name: LearnedInterpolateToPyramidal
      decoder: UNetDecoder
      decoder_channels: [64, 32, 16, 8]
      head_dropout: 0.1
      num_classes: 2
    loss: ce
    plot_on_val: 2
    ignore_index: -1
    freeze_backbone: false
    freeze_decoder: false
    tiled_inference_parameters:
      h_crop: 64
      h_stride: 48
      w_crop: 64
      w_stride: 48
      average_patches: True
""" + OPTIMIZER

CONFIGS = {
    "burn_scars": BURN_SCARS,
    "manufactured_tiled": MANUFACTURED_TILED,
    "sen1floods11_smp": SEN1FLOODS11_SMP,
    "smp_factory": SMP_FACTORY,
    "vit_without_necks": VIT_WITHOUT_NECKS,
    "vit_peft": VIT_PEFT,
    "agb_regression": AGB_REGRESSION,
    "forestnet_timm": FORESTNET_TIMM,
    "multi_temporal_crop": MULTI_TEMPORAL_CROP,
    "sen1floods11_named": SEN1FLOODS11_NAMED,
    "terramind_multimodal": TERRAMIND_MULTIMODAL,
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """Generated chips in the layouts the configs read."""
    root = tmp_path_factory.mktemp("tt_configs")
    for split, seed in (("train", 1), ("val", 2)):
        names = tuple(f"{split[0]}_{i}" for i in range(1, 5))
        make_pixel_folder(root / "seg" / split, names=names, size=64, seed=seed)
        make_pixel_folder(root / "seg8" / split, names=names, bands=8, size=64, seed=seed)
        make_pixel_folder(root / "reg" / split, names=names, bands=8, size=64, seed=seed,
                          label_dtype="float32", label_nodata=-9999.0)
        make_class_folder(root / "cls" / split, bands=6, size=32, seed=seed)
    # Sen1Floods11: 13 bands, labels in {-1, 0, 1}, split files of sample names.
    s2 = root / "s2"
    rng = np.random.default_rng(3)
    events = ["Bolivia_103757", "Ghana_5079", "India_1018", "Spain_7370"]
    for i, event in enumerate(events):
        origin = (440280.0 + 10_000 * i, 3159720.0)
        write_tif(s2 / "S2Hand" / f"{event}_S2Hand.tif", rng.uniform(0, 4000, (13, 64, 64)).astype("float32"),
                  origin=origin)
        label = rng.integers(-1, 2, (64, 64)).astype("int16")
        write_tif(s2 / "LabelHand" / f"{event}_LabelHand.tif", label, nodata=-1, origin=origin)
    (s2 / "splits").mkdir()
    (s2 / "splits" / "flood_train_data.txt").write_text("\n".join(events[:2]) + "\n")
    (s2 / "splits" / "flood_valid_data.txt").write_text("\n".join(events[2:]) + "\n")
    (s2 / "means.txt").write_text("\n".join(["0.14", "0.14", "0.12", "0.31", "0.20", "0.12"]) + "\n")
    (s2 / "stds.txt").write_text("\n".join(["0.07", "0.07", "0.09", "0.12", "0.10", "0.08"]) + "\n")
    # Sen1Floods11 multimodal: S2 L1C (13 bands) and S1 GRD (2 bands, dB) on one grid.
    mm = root / "mm"
    for i, event in enumerate(events):
        origin = (440280.0 + 10_000 * i, 3159720.0)
        write_tif(mm / "S2L1CHand" / f"{event}_S2Hand.tif", rng.uniform(0, 4000, (13, 64, 64)).astype("float32"),
                  origin=origin)
        write_tif(mm / "S1GRDHand" / f"{event}_S1Hand.tif", rng.uniform(-25, -5, (2, 64, 64)).astype("float32"),
                  origin=origin)
        write_tif(mm / "LabelHand" / f"{event}_LabelHand.tif", rng.integers(-1, 2, (64, 64)).astype("int16"),
                  nodata=-1, origin=origin)
    (mm / "splits").mkdir()
    (mm / "splits" / "flood_train_data.txt").write_text("\n".join(events[:2]) + "\n")
    (mm / "splits" / "flood_valid_data.txt").write_text("\n".join(events[2:]) + "\n")
    make_crop(root / "crop", size=32)
    make_sen1floods11(root / "floods", size=32)
    return {"seg": root / "seg", "seg8": root / "seg8", "reg": root / "reg", "cls": root / "cls", "s2": s2,
            "crop": root / "crop", "floods": root / "floods", "mm": mm}


def write(tmp_path: Path, data: dict[str, Path], name: str, prefix: str) -> Path:
    text = (TRAINER + CONFIGS[name]).format(out=tmp_path / "run", **data)
    if prefix != "terratorch.":
        text = text.replace("terratorch.", prefix)
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("prefix", ["terratorch.", "geofm."])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_config_fits_with_fast_dev_run(tmp_path, data, name, prefix):
    config = write(tmp_path, data, name, prefix)
    assert geofm(["fit", "-c", str(config)]) == 0
    assert not list((tmp_path / "run").rglob("*.ckpt"))  # fast_dev_run writes no checkpoint


@pytest.mark.parametrize("name", list(CONFIGS))
def test_config_has_no_unknown_keys(tmp_path, data, name, capsys):
    config = write(tmp_path, data, name, "terratorch.")
    assert geofm(["check-config", str(config)]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.strip().endswith("ok")
