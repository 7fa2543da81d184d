"""Faults the tasks name instead of failing deep inside torch or passing silently.

Bad class values in a batch, a checkpoint on other bands (or another band order) than the
data, images too small for the model's BatchNorm, and a time axis the backbone does not take.
"""

from __future__ import annotations

import pytest
import torch

from geofm.data import GenericNonGeoSegmentationDataModule
from geofm.inference.task_scenes import predict_task_scenes
from geofm.tasks import ClassificationTask, SemanticSegmentationTask
from tests.data.fixtures import make_pixel_folder

from .helpers import SIZE, DictDataModule, TinyClassifier, TinyPixelModel, make_samples, trainer

SIX_BANDS = ["BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2"]


# ---------------------------------------------------------------- class values of the targets
def _with_values(samples, index, values):
    samples[index]["mask"][3, :len(values)] = torch.tensor(values)
    return samples


# ce, dice: a torch error naming no file; focal, lovasz: no error at all on CPU
@pytest.mark.parametrize("loss", ["ce", "dice", "focal", "lovasz"])
def test_mask_values_beyond_num_classes_name_the_file(loss):
    """No datamodule num_classes to catch it: the step names the file, values and settings."""
    samples = _with_values(make_samples("segmentation", ignore_index=-1), 2, [5, 3, 5])
    task = SemanticSegmentationTask(
        model=TinyPixelModel(), num_classes=3, ignore_index=-1, loss=loss
    )
    with pytest.raises(
        ValueError,
        match=r"Target values 3, 5 in 'chip_2.tif' are outside \[0, 3\) for num_classes=3 "
        r"\(ignore_index=-1\)",
    ):
        trainer().fit(task, datamodule=DictDataModule(samples))


def test_negative_mask_values_without_ignore_index_are_named():
    samples = _with_values(make_samples("segmentation"), 1, [-1])
    task = SemanticSegmentationTask(model=TinyPixelModel(), num_classes=3)
    with pytest.raises(ValueError, match=r"Target values -1 in 'chip_1.tif' .*\(no ignore_index\)"):
        trainer().fit(task, datamodule=DictDataModule(samples))


def test_ignore_index_values_pass_the_check():
    samples = make_samples("segmentation", ignore_index=255)
    task = SemanticSegmentationTask(model=TinyPixelModel(), num_classes=3, ignore_index=255)
    trainer(limit_val_batches=0).fit(task, datamodule=DictDataModule(samples))


def test_class_labels_beyond_num_classes_name_the_file():
    samples = make_samples("classification")
    samples[3]["label"] = torch.tensor(7)
    task = ClassificationTask(model=TinyClassifier(), num_classes=3)
    with pytest.raises(ValueError, match=r"Target values 7 in 'chip_3.tif' are outside \[0, 3\)"):
        trainer().fit(task, datamodule=DictDataModule(samples))


# ---------------------------------------------------------------- bands of a checkpoint
def _geotiff_dm(folder, output_bands, **kwargs):
    return GenericNonGeoSegmentationDataModule(
        batch_size=2,
        train_data_root=folder.image_root,
        train_label_data_root=folder.label_root,
        predict_data_root=folder.image_root,
        img_grep="*_img.tif",
        label_grep="lbl_*.tif",
        dataset_bands=SIX_BANDS,
        output_bands=output_bands,
        no_label_replace=-1,
        num_classes=3,
        **kwargs,
    )


def _seg_task():
    return SemanticSegmentationTask(
        model=TinyPixelModel(in_chans=3), num_classes=3, ignore_index=-1
    )


@pytest.fixture
def trained(tmp_path):
    """A folder and a checkpoint trained on BLUE, GREEN, RED (in that order)."""
    folder = make_pixel_folder(tmp_path / "data")
    t = trainer(limit_val_batches=0)
    t.fit(_seg_task(), datamodule=_geotiff_dm(folder, ["BLUE", "GREEN", "RED"]))
    path = tmp_path / "rgb.ckpt"
    t.save_checkpoint(path)
    return folder, path


def test_predict_with_reordered_bands_names_both_lists(trained):
    folder, ckpt = trained
    reordered = _geotiff_dm(folder, ["RED", "GREEN", "BLUE"])
    with pytest.raises(
        ValueError,
        match=r"trained on bands \['BLUE', 'GREEN', 'RED'\] \(in this order\) but the data gives "
        r"\['RED', 'GREEN', 'BLUE'\]\. Set data\.init_args\.predict_output_bands",
    ):
        trainer().predict(_seg_task(), datamodule=reordered, ckpt_path=ckpt)
    # other bands, same count
    with pytest.raises(ValueError, match=r"but the data gives \['NIR_NARROW', 'GREEN', 'RED'\]"):
        other = _geotiff_dm(folder, ["NIR_NARROW", "GREEN", "RED"])
        trainer().predict(_seg_task(), datamodule=other, ckpt_path=ckpt)


def test_predict_output_bands_in_the_trained_order_predict(trained):
    folder, ckpt = trained
    # names match through aliases and case, as in dataset_bands
    restored = _geotiff_dm(
        folder, ["RED", "GREEN", "BLUE"], predict_output_bands=["blue", "GREEN", "RED"]
    )
    predictions = trainer().predict(_seg_task(), datamodule=restored, ckpt_path=ckpt)
    assert predictions[0]["prediction"].shape == (2, SIZE, SIZE)


def test_fit_resume_with_the_same_bands_works(trained):
    folder, ckpt = trained
    task = _seg_task()
    trainer(max_epochs=2, limit_val_batches=0).fit(
        task, datamodule=_geotiff_dm(folder, ["BLUE", "GREEN", "RED"]), ckpt_path=ckpt
    )
    assert task.preprocess.bands == ["BLUE", "GREEN", "RED"]
    with pytest.raises(ValueError, match=r"predict_output_bands \(or output_bands\) to the"):
        trainer(max_epochs=2, limit_val_batches=0).fit(
            _seg_task(), datamodule=_geotiff_dm(folder, ["GREEN", "BLUE", "RED"]), ckpt_path=ckpt
        )


def test_streaming_checks_the_bands_too(trained, tmp_path):
    folder, ckpt = trained
    settings = {"tile_size": 32, "overlap": 0, "progress": False, "num_workers": 0}
    reordered = _geotiff_dm(folder, ["RED", "GREEN", "BLUE"])
    with pytest.raises(ValueError, match=r"trained on bands \['BLUE', 'GREEN', 'RED'\]"):
        predict_task_scenes(_seg_task(), reordered, ckpt, tmp_path / "out", settings)
    restored = _geotiff_dm(
        folder, ["RED", "GREEN", "BLUE"], predict_output_bands=["BLUE", "GREEN", "RED"]
    )
    written = predict_task_scenes(_seg_task(), restored, ckpt, tmp_path / "out", settings)
    assert len(written) == len(folder.names)


# ---------------------------------------------------------------- inputs the model cannot take
def test_images_too_small_for_batchnorm_say_what_to_change():
    """batch_size 1 with 32 x 32 chips: a ResNet's deepest BatchNorm sees one value per channel."""
    args = {"backbone": "timm_resnet18", "decoder": "smp_Unet", "backbone_in_chans": 4,
            "decoder_decoder_channels": [16, 16, 8, 8, 8]}
    task = SemanticSegmentationTask(model_args=args, num_classes=3)
    with pytest.raises(
        ValueError,
        match=r"too small for the model: a batch of 1 image\(s\) of 32 x 32 pixels .*"
        r"batch_size >= 2.*drop_last: true",
    ):
        trainer().fit(task, datamodule=DictDataModule(make_samples("segmentation"), batch_size=1))


PRITHVI_3_FRAMES = {
    "backbone": "prithvi_eo_v2_tiny_tl",
    "backbone_pretrained": False,
    "backbone_num_frames": 3,
    "backbone_img_size": SIZE,
    "backbone_bands": SIX_BANDS,
    "necks": [
        {"name": "SelectIndices", "indices": [-1]},
        {"name": "ReshapeTokensToImage", "effective_time_dim": 3},
    ],
    "decoder": "FCNDecoder",
    "decoder_channels": 8,
}


def _frames_samples(frames: int | None):
    samples = make_samples("segmentation", n=2, bands=6)
    if frames is not None:
        for s in samples:
            s["image"] = torch.stack([s["image"]] * frames, dim=1)  # (C, T, H, W)
    return samples


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (None, r"backbone takes 3 time steps \(model_args\.backbone_num_frames=3\) but the batch's "
               r"images are \(B, C, H, W\) \(2, 6, 32, 32\).*expand_temporal_dimension: true"),
        (2, r"images have 2 time steps .* backbone takes 3 .* Set backbone_num_frames .* to 2"),
    ],
)
def test_a_time_axis_the_backbone_does_not_take_names_the_settings(frames, message):
    task = SemanticSegmentationTask(model_args=PRITHVI_3_FRAMES, num_classes=3)
    with pytest.raises(ValueError, match=message):
        trainer().fit(task, datamodule=DictDataModule(_frames_samples(frames)))
