"""The named benchmark datamodules and TorchGeoDataModule on generated copies of their layouts."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback

from geofm.compat.terratorch import TerratorchAliasError, resolve_class_path
from geofm.data.datamodules import (
    FireScarsNonGeoDataModule,
    MultiTemporalCropClassificationDataModule,
    Sen1Floods11NonGeoDataModule,
    TorchGeoDataModule,
)
from geofm.data.datamodules.benchmark import LayoutError
from geofm.errors import GeofmError
from geofm.models.preprocess import Preprocess
from tests.data.benchmark_layouts import (
    CROP_SPLITS,
    FIRE_SPLITS,
    SEN1FLOODS11_SPLITS,
    make_crop,
    make_eurosat,
    make_fire_scars,
    make_sen1floods11,
)

SIX = ["BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2"]
# TerraTorch's Sen1Floods11 statistics of SIX (reflectance units).
S1F_MEANS = [0.1412956, 0.13795798, 0.12353792, 0.30902815, 0.2044958, 0.11912015]
S1F_STDS = [0.07406382, 0.07370365, 0.08692279, 0.11798815, 0.09772074, 0.07659938]


def names_of(batch) -> list[str]:
    return [Path(f).name for f in batch["filename"]]


def all_batches(loader) -> list[dict]:
    return list(loader)


# ---------------------------------------------------------------------------- Sen1Floods11
@pytest.fixture(scope="module")
def sen1floods11(tmp_path_factory):
    return make_sen1floods11(tmp_path_factory.mktemp("sen1floods11"))


def test_sen1floods11_splits_batches_and_defaults(sen1floods11):
    dm = Sen1Floods11NonGeoDataModule(sen1floods11.root, batch_size=2, bands=SIX)
    dm.setup("fit")
    # Split files select exact names: India_1 (valid) never pulls India_10 (train).
    assert dm.train_dataset.names == list(SEN1FLOODS11_SPLITS["train"])
    assert dm.val_dataset.names == list(SEN1FLOODS11_SPLITS["valid"])
    dm.setup("test")
    dm.setup("predict")
    assert dm.test_dataset.names == list(SEN1FLOODS11_SPLITS["test"])
    assert dm.predict_dataset.names == list(SEN1FLOODS11_SPLITS["test"])  # as TerraTorch

    batch = next(iter(dm.test_dataloader()))
    assert batch["image"].shape == (2, 6, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["mask"].shape == (2, 32, 32) and batch["mask"].dtype == torch.int64
    for i, name in enumerate(n.removesuffix("_S2Hand.tif") for n in names_of(batch)):
        written = sen1floods11.images[name]
        # Raw digital numbers of BLUE..SWIR_2 (file bands 2, 3, 4, 9, 12, 13).
        np.testing.assert_array_equal(batch["image"][i].numpy(), written[[1, 2, 3, 8, 11, 12]])
        np.testing.assert_array_equal(batch["mask"][i].numpy(), sen1floods11.labels[name])
    # TerraTorch's defaults: its statistics of the selected bands, constant_scale 1e-4.
    settings = dm.preprocess_settings()
    np.testing.assert_allclose(settings["mean"], S1F_MEANS)
    np.testing.assert_allclose(settings["std"], S1F_STDS)
    assert settings["constant_scale"] == 1e-4 and settings["no_data_replace"] == 0
    assert settings["bands"] == SIX and dm.rgb_indices == [2, 1, 0]
    scaled = Preprocess(**settings)(batch["image"])
    expected = (batch["image"][:, 0] * 1e-4 - S1F_MEANS[0]) / S1F_STDS[0]
    torch.testing.assert_close(scaled[:, 0], expected)


def test_sen1floods11_label_minus_one_with_and_without_nodata_tag(sen1floods11):
    """Ghana_1 tags -1 as nodata, Ghana_2 does not: both give -1 (no_label_replace)."""
    dm = Sen1Floods11NonGeoDataModule(sen1floods11.root, batch_size=3, drop_last=False)
    dm.setup("fit")
    masks = {}
    for batch in all_batches(dm.train_dataloader()):
        for name, mask in zip(names_of(batch), batch["mask"]):
            masks[name.removesuffix("_S2Hand.tif")] = mask
    for name in ("Ghana_1", "Ghana_2"):
        assert masks[name][0, :3].tolist() == [-1, -1, -1]
        assert set(masks[name].unique().tolist()) == {-1, 0, 1}
    assert dm.train_dataset[0]["image"].shape[0] == 13  # every band by default
    # no_label_replace applies to the tagged nodata pixels.
    dm = Sen1Floods11NonGeoDataModule(sen1floods11.root, no_label_replace=255, num_classes=None)
    dm.setup("fit")
    index = dm.train_dataset.names.index("Ghana_1")
    assert dm.train_dataset[index]["mask"][0, :3].tolist() == [255, 255, 255]


def test_sen1floods11_bands_by_number_and_release_folder(sen1floods11):
    by_number = Sen1Floods11NonGeoDataModule(sen1floods11.root, bands=[2, 3, 4, 9, 12, 13])
    assert by_number.preprocess_settings()["bands"] == SIX
    np.testing.assert_allclose(by_number.means, S1F_MEANS)
    # data_root may be the v1.1 folder itself.
    release = Sen1Floods11NonGeoDataModule(sen1floods11.root / "v1.1", bands=SIX)
    release.setup("test")
    assert release.test_dataset.names == list(SEN1FLOODS11_SPLITS["test"])
    with pytest.raises(ValueError, match="Sen1Floods11NonGeoDataModule: bands names band 'NIR'.*NIR_NARROW"):
        Sen1Floods11NonGeoDataModule(sen1floods11.root, bands=["NIR"])


@pytest.mark.parametrize(
    ("remove", "stage", "named"),
    [
        ("v1.1/data/flood_events/HandLabeled/LabelHand", "fit", "LabelHand does not exist (the train labels)"),
        ("v1.1/splits/flood_handlabeled/flood_test_data.txt", "test", "flood_test_data.txt does not exist (the test split file)"),
        ("", "fit", "does not exist (data_root)"),
    ],
)
def test_sen1floods11_layout_errors_name_the_missing_path(tmp_path, remove, stage, named):
    layout = make_sen1floods11(tmp_path / "s1f", size=16)
    root = layout.root
    if remove:
        missing = root / remove
        if missing.is_dir():
            for f in missing.iterdir():
                f.unlink()
            missing.rmdir()
        else:
            missing.unlink()
    else:
        root = tmp_path / "nowhere"
    dm = Sen1Floods11NonGeoDataModule(root)
    with pytest.raises(LayoutError) as info:
        dm.setup(stage)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, GeofmError)
    assert named in message
    assert str(root / remove if remove else root) in message
    assert "v1.1/data/flood_events/HandLabeled/S2Hand/<name>_S2Hand.tif" in message
    assert "GenericNonGeoSegmentationDataModule" in message


def test_augmentation_fills_masks_with_no_label_replace(sen1floods11):
    """Configs pass mask_fill: null; pixels an augmentation brings in still get -1."""
    rotate = [{"class_path": "kornia.augmentation.RandomRotation", "init_args": {"degrees": 30.0}}]
    dm = Sen1Floods11NonGeoDataModule(sen1floods11.root, train_transform=rotate, mask_fill=None)
    assert dm.augmentations["train"].mask_fill == -1


def test_layout_settings_are_refused(sen1floods11):
    with pytest.raises(ValueError, match=r"fixes \['img_grep', 'train_data_root'\].*GenericNonGeo"):
        Sen1Floods11NonGeoDataModule(sen1floods11.root, img_grep="*.tif", train_data_root="x")


def test_predict_transform_takes_only_entries_that_do_nothing(sen1floods11):
    Sen1Floods11NonGeoDataModule(sen1floods11.root, predict_transform=[{"class_path": "ToTensorV2"}])
    resize = {"class_path": "albumentations.Resize", "init_args": {"height": 8, "width": 8}}
    with pytest.raises(ValueError, match="predict_transform: geofm never transforms prediction batches"):
        Sen1Floods11NonGeoDataModule(sen1floods11.root, predict_transform=[resize])


class BatchRecorder(Callback):
    """The training batches as the task receives them."""

    def __init__(self) -> None:
        self.batches: list[dict] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches.append({k: v.clone() for k, v in batch.items() if isinstance(v, torch.Tensor)})


def test_sen1floods11_terratorch_config_fits(tmp_path, sen1floods11):
    """A TerraTorch-style config (terratorch.* class paths, TerraTorch's arguments) fits."""
    from geofm.cli_lightning import run_lightning_cli

    config = {
        "trainer": {
            "accelerator": "cpu",
            "fast_dev_run": True,
            "enable_progress_bar": False,
            "default_root_dir": str(tmp_path / "run"),
        },
        "model": {
            "class_path": "terratorch.tasks.SemanticSegmentationTask",
            "init_args": {
                "model_args": {
                    "backbone": "timm_resnet18",
                    "backbone_pretrained": False,
                    "backbone_in_chans": 6,
                    "backbone_out_indices": [0, 1, 2],
                    "decoder": "smp_Unet",
                    "decoder_encoder_depth": 3,
                    "decoder_decoder_channels": [16, 8, 8],
                    "num_classes": 2,
                },
                "ignore_index": -1,
                "lr": 1e-3,
            },
        },
        "data": {
            "class_path": "terratorch.datamodules.Sen1Floods11NonGeoDataModule",
            "init_args": {
                "data_root": str(sen1floods11.root),
                "batch_size": 2,
                "num_workers": 0,
                "bands": SIX,
                "constant_scale": 0.0001,
                "no_data_replace": 0,
                "no_label_replace": -1,
                "use_metadata": False,
            },
        },
    }
    path = tmp_path / "sen1floods11.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = run_lightning_cli(["fit", "-c", str(path)])
    assert type(cli.datamodule) is Sen1Floods11NonGeoDataModule
    # The task took the datamodule's preprocessing and trained.
    preprocess = cli.model.preprocess
    np.testing.assert_allclose(preprocess.mean.tolist(), S1F_MEANS, rtol=1e-6)
    assert preprocess.constant_scale == 1e-4 and preprocess.bands == SIX
    assert math.isfinite(float(cli.trainer.callback_metrics["train/loss"]))
    assert math.isfinite(float(cli.trainer.callback_metrics["val/loss"]))


# ---------------------------------------------------------------------------- crop
@pytest.fixture(scope="module")
def crop(tmp_path_factory):
    return make_crop(tmp_path_factory.mktemp("crop"))


def test_crop_time_axis_splits_and_labels(crop):
    dm = MultiTemporalCropClassificationDataModule(crop.root, batch_size=2)
    dm.setup("fit")
    dm.setup("test")
    assert dm.train_dataset.names == list(CROP_SPLITS["training"])  # chip_909_999 is in no split
    assert dm.val_dataset.names == dm.test_dataset.names == list(CROP_SPLITS["validation"])
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 6, 3, 16, 16) and batch["image"].dtype == torch.float32
    for i, name in enumerate(n.removesuffix("_merged.tif") for n in names_of(batch)):
        written = crop.images[name].reshape(3, 6, 16, 16)  # the file holds date after date
        np.testing.assert_array_equal(batch["image"][i].numpy(), written.transpose(1, 0, 2, 3))
        # reduce_zero_label: file 0 (no data) becomes -1, classes 1..13 become 0..12.
        np.testing.assert_array_equal(batch["mask"][i].numpy(), crop.labels[name].astype(np.int64) - 1)
    assert int(batch["mask"].min()) == -1 and int(batch["mask"].max()) <= 12
    assert len(dm.means) == 6 and dm.means[0] == pytest.approx(494.905781)
    assert dm.preprocess_settings()["constant_scale"] == 1.0 and dm.rgb_indices == [2, 1, 0]


def test_crop_without_time_axis_and_band_subset(crop):
    dm = MultiTemporalCropClassificationDataModule(
        crop.root, batch_size=1, bands=["RED", "NIR_NARROW"], expand_temporal_dimension=False
    )
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    name = names_of(batch)[0].removesuffix("_merged.tif")
    assert batch["image"].shape == (1, 6, 16, 16)  # 3 dates x 2 bands, date by date
    np.testing.assert_array_equal(batch["image"][0].numpy(), crop.images[name][[2, 3, 8, 9, 14, 15]])
    assert dm.means == pytest.approx([924.335066, 2968.881459] * 3)


def test_crop_layout_error(tmp_path):
    (tmp_path / "training_chips").mkdir()
    dm = MultiTemporalCropClassificationDataModule(tmp_path)
    with pytest.raises(LayoutError, match=r"training_data.txt does not exist \(the train split file\)"):
        dm.setup("fit")


def test_crop_metadata_file_other_than_the_default_is_refused(tmp_path):
    MultiTemporalCropClassificationDataModule(tmp_path, metadata_file_name="chips_df.csv")
    with pytest.raises(ValueError, match="metadata_file_name='dates.csv': geofm does not read"):
        MultiTemporalCropClassificationDataModule(tmp_path, metadata_file_name="dates.csv")


# ---------------------------------------------------------------------------- burn scars
def test_fire_scars_folders_and_masks(tmp_path):
    layout = make_fire_scars(tmp_path / "hls_burn_scars")
    dm = FireScarsNonGeoDataModule(layout.root, batch_size=2, bands=["RED", "GREEN", "BLUE"])
    dm.setup("fit")
    dm.setup("predict")
    assert dm.train_dataset.names == sorted(FIRE_SPLITS["training"])
    assert dm.val_dataset.names == dm.predict_dataset.names == list(FIRE_SPLITS["validation"])
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 16, 16) and batch["mask"].dtype == torch.int64
    for i, name in enumerate(n.removesuffix("_merged.tif") for n in names_of(batch)):
        np.testing.assert_array_equal(batch["image"][i].numpy(), layout.images[name][[2, 1, 0]])
        np.testing.assert_array_equal(batch["mask"][i].numpy(), layout.labels[name])
    assert batch["mask"][:, -1, -3:].eq(-1).all()
    assert dm.rgb_indices == [0, 1, 2] and dm.means[0] == pytest.approx(0.05889748132001316)
    # The HLS file names carry the acquisition date (year, day of year).
    assert batch["temporal_coords"].shape == (2, 1, 2)
    (tmp_path / "empty" / "training").mkdir(parents=True)
    with pytest.raises(LayoutError, match="validation does not exist"):
        FireScarsNonGeoDataModule(tmp_path / "empty").setup("validate")


# ---------------------------------------------------------------------------- TorchGeo
@pytest.fixture(scope="module")
def eurosat(tmp_path_factory):
    return make_eurosat(tmp_path_factory.mktemp("eurosat"))


EUROSAT_BANDS = ["B02", "B03", "B04", "B08"]
CLASSIFIER = {
    "backbone": "timm_resnet18",
    "backbone_pretrained": False,
    "backbone_in_chans": 4,
    "decoder": "IdentityDecoder",
}


def test_torchgeo_datamodule_by_name_moves_normalisation(eurosat):
    from torchgeo.datamodules.eurosat import MEAN, STD

    dm = TorchGeoDataModule("EuroSATDataModule", batch_size=2, root=str(eurosat.root), bands=EUROSAT_BANDS)
    assert type(dm.wrapped).__name__ == "EuroSATDataModule" and dm.wrapped.batch_size == 2
    dm.setup("fit")
    settings = dm.preprocess_settings()
    np.testing.assert_allclose(settings["mean"], [MEAN[b] for b in EUROSAT_BANDS], rtol=1e-6)
    np.testing.assert_allclose(settings["std"], [STD[b] for b in EUROSAT_BANDS], rtol=1e-6)
    assert settings["bands"] == EUROSAT_BANDS and settings["constant_scale"] == 1.0
    assert len(dm.train_dataset) == 4  # attributes of the wrapped datamodule

    batch = next(iter(dm.train_dataloader()))
    # TorchGeo's augmentation no longer normalises: the task does.
    augmented = dm.wrapped.aug({"image": batch["image"].clone(), "label": batch["label"]})
    torch.testing.assert_close(augmented["image"], batch["image"])
    out = dm.on_after_batch_transfer(batch, 0)
    assert out["image"].shape == (2, 4, 32, 32) and out["image"].dtype == torch.float32
    assert out["label"].dtype == torch.int64 and out["label"].shape == (2,)
    assert float(out["image"].min()) >= 1000  # raw digital numbers


def test_torchgeo_datamodule_fits_classification_task(eurosat):
    from geofm.tasks import ClassificationTask

    dm = TorchGeoDataModule(
        "torchgeo.datamodules.EuroSATDataModule", batch_size=2, root=str(eurosat.root), bands=EUROSAT_BANDS
    )
    task = ClassificationTask(
        model_args=CLASSIFIER,
        num_classes=2,
        lr=1e-3,
    )
    record = BatchRecorder()
    trainer = Trainer(
        fast_dev_run=1,
        accelerator="cpu",
        devices=1,
        callbacks=[record],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(task, datamodule=dm)
    assert task.preprocess.mean.tolist() == pytest.approx(dm.means)
    batch = record.batches[0]
    assert batch["image"].dtype == torch.float32 and batch["label"].dtype == torch.int64
    assert float(batch["image"].min()) >= 1000  # normalised once, by the task
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))


def test_torchgeo_single_value_statistics_expand_and_masks(tmp_path):
    """TorchGeo's default /255 (one mean and std for every band) becomes per-band statistics;
    segmentation masks arrive (B, H, W) int64."""
    from torchgeo.datamodules import NonGeoDataModule

    from tests.tasks.test_torchgeo import SIZE, ChipFolder, make_chips

    class ChipDataModule(NonGeoDataModule):  # TorchGeo's default normalisation: / 255
        def __init__(self, root: Path, batch_size: int = 2, num_workers: int = 0):
            super().__init__(ChipFolder, batch_size=batch_size, num_workers=num_workers, root=root)

    make_chips(tmp_path, per_split=2)
    dm = TorchGeoDataModule(ChipDataModule, root=tmp_path)
    dm.setup("fit")
    assert dm.means == [0.0, 0.0, 0.0] and dm.stds == [255.0, 255.0, 255.0]
    batch = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    assert batch["mask"].shape == (2, SIZE, SIZE) and batch["mask"].dtype == torch.int64
    assert float(batch["image"].max()) > 1  # not divided by 255 any more


def test_torchgeo_geo_datamodule(tmp_path):
    """A GeoDataModule (sampled patches of a scene): crs/bounds dropped on transfer, the band
    count for TorchGeo's single-value statistics read through its sampler."""
    from torchgeo.datamodules import GeoDataModule
    from torchgeo.datasets import IntersectionDataset, RasterDataset

    from tests.data.fixtures import write_tif

    rng = np.random.default_rng(0)
    write_tif(tmp_path / "img_1.tif", rng.integers(1, 255, (3, 64, 64)).astype(np.uint8))
    write_tif(tmp_path / "lbl_1.tif", rng.integers(0, 2, (64, 64)).astype(np.uint8))

    class Image(RasterDataset):
        filename_glob = "img_*.tif"

    class Label(RasterDataset):
        filename_glob = "lbl_*.tif"
        is_image = False

    class Scene(IntersectionDataset):
        def __init__(self, root: str, split: str = "train"):
            super().__init__(Image(root), Label(root))

    class SceneDataModule(GeoDataModule):
        def __init__(self, root: str, num_workers: int = 0):
            super().__init__(Scene, 2, patch_size=32, length=4, num_workers=num_workers, root=root)

    dm = TorchGeoDataModule(SceneDataModule, root=str(tmp_path))
    dm.setup("fit")
    assert dm.means == [0.0] * 3 and dm.stds == [255.0] * 3
    batch = next(iter(dm.train_dataloader()))
    batch = dm.transfer_batch_to_device(batch, torch.device("cpu"), 0)
    batch = dm.on_after_batch_transfer(batch, 0)
    assert sorted(batch) == ["image", "mask"]
    assert batch["image"].shape == (2, 3, 32, 32) and float(batch["image"].max()) > 1
    assert batch["mask"].shape == (2, 32, 32) and batch["mask"].dtype == torch.int64


def test_torchgeo_datamodule_errors(monkeypatch):
    with pytest.raises(ValueError, match="did you mean 'EuroSATDataModule'"):
        TorchGeoDataModule("EuroSatDataModule")
    with pytest.raises(ValueError, match="is not a LightningDataModule class"):
        TorchGeoDataModule("torch.nn.ReLU")

    class AlbumentationsLike:
        def __call__(self, **kwargs):
            return kwargs

    AlbumentationsLike.__module__ = "albumentations.augmentations.geometric"
    with pytest.raises(ValueError, match="albumentations transform"):
        TorchGeoDataModule("EuroSATDataModule", transforms=[AlbumentationsLike()])

    monkeypatch.setitem(sys.modules, "torchgeo.datamodules", None)
    with pytest.raises(ImportError, match=r"pip install 'geofm\[torchgeo\]'"):
        TorchGeoDataModule("EuroSATDataModule")


def test_torchgeo_datamodule_terratorch_config(tmp_path, eurosat):
    """TerraTorch's form: cls in init_args, the TorchGeo arguments in dict_kwargs."""
    from geofm.cli_lightning import run_lightning_cli

    config = {
        "trainer": {"accelerator": "cpu", "default_root_dir": str(tmp_path)},
        "model": {
            "class_path": "terratorch.tasks.ClassificationTask",
            "init_args": {
                "model_args": CLASSIFIER,
                "num_classes": 2,
            },
        },
        "data": {
            "class_path": "terratorch.datamodules.TorchNonGeoDataModule",
            "init_args": {"cls": "torchgeo.datamodules.EuroSATDataModule", "batch_size": 2},
            "dict_kwargs": {"root": str(eurosat.root), "bands": EUROSAT_BANDS},
        },
    }
    path = tmp_path / "eurosat.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = run_lightning_cli(["-c", str(path), "--trainer.logger", "false"], run=False)
    assert type(cli.datamodule).__name__ == "TorchNonGeoDataModule"
    assert type(cli.datamodule.wrapped).__name__ == "EuroSATDataModule"
    assert cli.datamodule.wrapped.kwargs["bands"] == EUROSAT_BANDS


# ---------------------------------------------------------------------------- names
def test_names_resolve_under_terratorch_and_prefix_swapped_paths():
    for name in (
        "Sen1Floods11NonGeoDataModule",
        "MultiTemporalCropClassificationDataModule",
        "FireScarsNonGeoDataModule",
        "TorchGeoDataModule",
        "TorchNonGeoDataModule",
        "GenericMultiModalDataModule",
    ):
        for prefix in ("terratorch.datamodules", "geofm.datamodules"):
            assert resolve_class_path(f"{prefix}.{name}") == f"geofm.data.datamodules.{name}"
    # TerraTorch's defining modules, as its docs write them.
    assert resolve_class_path("terratorch.datamodules.sen1floods11.Sen1Floods11NonGeoDataModule") == (
        "geofm.data.datamodules.sen1floods11.Sen1Floods11NonGeoDataModule"
    )


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("MEuroSATNonGeoDataModule", ["GEO-Bench", "geobench", "TorchGeoDataModule", "cls: EuroSATDataModule"]),
        ("MNeonTreeNonGeoDataModule", ["GEO-Bench", "GenericNonGeoSegmentationDataModule"]),
        ("GeobenchDataModule", ["GEO-Bench"]),
        ("BurnIntensityNonGeoDataModule", ["expand_temporal_dimension"]),
    ],
)
def test_unsupported_names_explain_what_to_use(name, says):
    import geofm.data.datamodules as datamodules

    with pytest.raises(AttributeError) as info:
        getattr(datamodules, name)
    with pytest.raises(TerratorchAliasError) as alias:
        resolve_class_path(f"terratorch.datamodules.{name}")
    for text in says:
        assert text in str(info.value) and text in str(alias.value)


def test_datamodules_import_without_torchgeo():
    code = (
        "import sys, geofm, geofm.data.datamodules\n"
        "print('torchgeo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
