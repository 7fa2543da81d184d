"""The generic datamodules on generated GeoTIFF folders: every stage, values, settings, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from rasterio.crs import CRS as RioCRS

from geofm.data import (
    GenericNonGeoClassificationDataModule,
    GenericNonGeoPixelwiseRegressionDataModule,
    GenericNonGeoSegmentationDataModule,
)
from geofm.data.raster import RasterError
from geofm.models.preprocess import Preprocess
from tests.data.fixtures import (
    CRS,
    IMAGE_NODATA,
    LABEL_NODATA,
    PIXEL,
    make_class_folder,
    make_pixel_folder,
    write_tif,
)

SIX_BANDS = ["BLUE", "GREEN", "RED", "NIR", "SWIR_1", "SWIR_2"]


@pytest.fixture
def folder(tmp_path):
    return make_pixel_folder(tmp_path)


def seg_dm(folder, **kwargs):
    args = dict(
        batch_size=2,
        train_data_root=folder.image_root,
        train_label_data_root=folder.label_root,
        val_data_root=folder.image_root,
        val_label_data_root=folder.label_root,
        test_data_root=folder.image_root,
        test_label_data_root=folder.label_root,
        img_grep="*_img.tif",
        label_grep="lbl_*.tif",
        num_classes=3,
    )
    args.update(kwargs)
    return GenericNonGeoSegmentationDataModule(**args)


def by_name(batch):
    """Sample index in the batch by common name (``a_1`` for ``.../a_1_img.tif``)."""
    return {
        f.rsplit("/", 1)[-1].removesuffix("_img.tif"): i for i, f in enumerate(batch["filename"])
    }


def test_segmentation_all_stages_shapes_values(folder):
    dm = seg_dm(
        folder,
        dataset_bands=SIX_BANDS,
        output_bands=["RED", 2, "SWIR_2"],  # by name and by 1-based number
        no_data_replace=0.0,
        no_label_replace=-1,
    )
    for stage in ("fit", "validate", "test"):
        dm.setup(stage)
    loaders = {
        "train": dm.train_dataloader(),
        "val": dm.val_dataloader(),
        "test": dm.test_dataloader(),
    }
    for split, loader in loaders.items():
        batches = list(loader)
        assert sum(len(b["filename"]) for b in batches) == 4, split
        for batch in batches:
            assert batch["image"].shape == (2, 3, 32, 32) and batch["image"].dtype == torch.float32
            assert batch["mask"].shape == (2, 32, 32) and batch["mask"].dtype == torch.int64
            assert batch["nodata_mask"].dtype == torch.bool
            for i, name in ((i, n) for n, i in by_name(batch).items()):
                written = folder.images[name]
                expected = written[[2, 1, 5]]  # RED, band 2 (GREEN), SWIR_2
                nodata = expected == IMAGE_NODATA
                got = batch["image"][i].numpy()
                np.testing.assert_array_equal(got[~nodata], expected[~nodata])
                assert nodata.any() and np.isnan(got[nodata]).all()  # raw: nodata as NaN
                filled = Preprocess(**dm.preprocess_settings())(batch["image"][i : i + 1])[0]
                assert (filled.numpy()[nodata] == 0.0).all()  # no_data_replace=0
                np.testing.assert_array_equal(batch["nodata_mask"][i].numpy(), nodata.any(axis=0))
                label = folder.labels[name].astype(np.int64)
                label[label == LABEL_NODATA] = -1
                np.testing.assert_array_equal(batch["mask"][i].numpy(), label)
                # Georeferencing of the file, as a 6-tuple and WKT.
                x0, y0 = folder.origins[name]
                assert batch["transform"][i] == (PIXEL, 0.0, x0, 0.0, -PIXEL, y0)
                assert RioCRS.from_wkt(batch["crs"][i]) == RioCRS.from_string(CRS)
                assert batch["height"][i] == batch["width"][i] == 32
    assert dm.band_names == ["RED", "GREEN", "SWIR_2"]


def test_drop_last_pin_memory_workers(folder):
    dm = seg_dm(folder, batch_size=3, num_workers=1, drop_last=True)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert loader.drop_last and loader.persistent_workers and loader.num_workers == 1
    assert len(list(loader)) == 1  # 4 samples, batch 3, last dropped
    assert not dm.val_dataloader().drop_last
    dm0 = seg_dm(folder, num_workers=0, pin_memory=True)
    dm0.setup("fit")
    assert dm0.train_dataloader().pin_memory and not dm0.train_dataloader().persistent_workers


def test_nodata_is_nan_and_filled_with_the_mean_without_replacement(folder):
    dm = seg_dm(folder, output_bands=[1], means=[500.0], stds=[10.0])
    dm.setup("test")
    sample = dm.test_dataset[0]
    name = dm.test_dataset.names[0]
    nodata = folder.images[name][0] == IMAGE_NODATA
    assert torch.isnan(sample["image"][0]).sum() == nodata.sum() > 0
    # Without no_data_replace, nodata takes the band mean: 0 once normalised, never NaN.
    normalised = Preprocess(**dm.preprocess_settings())(sample["image"][None])[0, 0]
    assert torch.isfinite(normalised).all() and (normalised[torch.from_numpy(nodata)] == 0).all()
    # Label nodata keeps its value when no_label_replace is not set.
    assert (sample["mask"] == LABEL_NODATA).sum() == 4


def test_reduce_zero_label(folder):
    dm = seg_dm(folder, reduce_zero_label=True, no_label_replace=99)
    dm.setup("test")
    sample = dm.test_dataset[0]
    label = folder.labels[dm.test_dataset.names[0]].astype(np.int64)
    nodata = label == LABEL_NODATA
    np.testing.assert_array_equal(sample["mask"].numpy()[~nodata], label[~nodata] - 1)
    assert np.all(sample["mask"].numpy()[nodata] == 99)  # nodata is not shifted


def _sample(dm, name):
    """The test sample of common name ``name`` (read now, so label checks run)."""
    dm.setup("test")
    return dm.test_dataset[dm.test_dataset.names.index(name)]


def test_labels_outside_num_classes_name_file_values_and_num_classes(folder):
    label = np.array(folder.labels["a_2"])
    label[5, :3] = [7, 3, 12]  # the folder has 3 classes: 0, 1, 2
    write_tif(
        folder.label_root / "lbl_a_2.tif", label, nodata=LABEL_NODATA, origin=folder.origins["a_2"]
    )
    dm = seg_dm(folder, no_label_replace=-1)
    with pytest.raises(
        RasterError,
        match=r"Label '.*lbl_a_2.tif' has class values \[3, 7, 12\] outside \[0, 3\) for num_classes=3",
    ):
        _sample(dm, "a_2")
    # The other files are fine, nodata (255) is not a class, and a larger num_classes accepts it.
    _sample(dm, "a_1")
    wide = seg_dm(folder, num_classes=13, no_label_replace=-1)
    assert _sample(wide, "a_2")["mask"].max() == 12


def test_label_check_allows_no_label_replace_and_reduce_zero_label(folder):
    label = np.array(folder.labels["a_1"])
    label[6, 0] = 99  # marks ignored pixels without being the file's nodata value
    write_tif(folder.label_root / "lbl_a_1.tif", label, nodata=LABEL_NODATA)
    with pytest.raises(RasterError, match=r"\[99\]"):
        dm = seg_dm(folder)
        _sample(dm, "a_1")
    dm = seg_dm(folder, no_label_replace=99)
    assert _sample(dm, "a_1")["mask"][6, 0] == 99
    # Classes 1..3 shifted to 0..2; class 0 becomes -1, which reduce_zero_label means.
    shifted = np.where(label == LABEL_NODATA, label, np.minimum(label + 1, 3)).astype(np.uint8)
    shifted[6, 0] = 0
    write_tif(folder.label_root / "lbl_a_1.tif", shifted, nodata=LABEL_NODATA)
    dm = seg_dm(folder, reduce_zero_label=True)
    assert _sample(dm, "a_1")["mask"][6, 0] == -1


def test_fractional_float_labels_are_refused(tmp_path):
    folder = make_pixel_folder(tmp_path, label_dtype="float32", label_nodata=-1.0)
    whole = {name: np.where(lbl == -1.0, lbl, np.clip(np.round(lbl), 0, 2)) for name, lbl in folder.labels.items()}
    for name, lbl in whole.items():
        write_tif(
            folder.label_root / f"lbl_{name}.tif", lbl.astype(np.float32), nodata=-1.0,
            origin=folder.origins[name],
        )
    dm = seg_dm(folder, no_label_replace=-1)
    np.testing.assert_array_equal(
        _sample(dm, "b_3")["mask"].numpy(), whole["b_3"].astype(np.int64)
    )
    bad = whole["b_3"].copy()
    bad[3, 3], bad[3, 4] = 0.99, 1.5
    write_tif(
        folder.label_root / "lbl_b_3.tif", bad.astype(np.float32), nodata=-1.0,
        origin=folder.origins["b_3"],
    )
    # Checked even without num_classes: casting would make 0.99 class 0 silently.
    dm = seg_dm(folder, no_label_replace=-1, num_classes=None)
    with pytest.raises(RasterError, match=r"Label '.*lbl_b_3.tif' holds non-integer values \[0.99, 1.5\]"):
        _sample(dm, "b_3")


def test_nodata_replacement_is_in_file_units_then_scaled(folder):
    # TerraTorch replaces nodata by no_data_replace, then multiplies by constant_scale.
    dm = seg_dm(folder, constant_scale=0.5, no_data_replace=-2.0, output_bands=[3])
    dm.setup("test")
    sample = dm.test_dataset[0]
    written = folder.images[dm.test_dataset.names[0]][2]
    nodata = written == IMAGE_NODATA
    image = Preprocess(**dm.preprocess_settings())(sample["image"][None])[0, 0].numpy()
    np.testing.assert_allclose(image[~nodata], written[~nodata] * 0.5)
    assert np.all(image[nodata] == -1.0)  # -2 * 0.5
    assert dm.constant_scale == 0.5


def test_split_file_exact_names(folder, tmp_path):
    split = tmp_path / "train.txt"
    split.write_text("a_1\nb_3\n")
    dm = seg_dm(folder, train_split=split)
    dm.setup("fit")
    assert dm.train_dataset.names == ["a_1", "b_3"]  # not a_10
    assert [p.name for p in dm.train_dataset.label_files] == ["lbl_a_1.tif", "lbl_b_3.tif"]
    assert len(dm.val_dataset) == 4


def test_labels_in_image_folder(tmp_path):
    folder = make_pixel_folder(
        tmp_path, separate_labels=False, image_pattern="{}.tif", label_pattern="{}_mask.tif"
    )
    dm = GenericNonGeoSegmentationDataModule(
        train_data_root=folder.image_root, img_grep="*.tif", label_grep="*_mask.tif", batch_size=1
    )
    dm.setup("fit")
    ds = dm.train_dataset
    assert ds.names == ["a_1", "a_10", "a_2", "b_3"]
    assert all(p.name.endswith("_mask.tif") for p in ds.label_files)
    np.testing.assert_array_equal(ds[1]["mask"].numpy(), folder.labels["a_10"])


def test_expand_temporal_dimension(tmp_path):
    rng = np.random.default_rng(1)
    frames, per_step = 3, 4
    stacked = rng.uniform(0, 100, (frames * per_step, 16, 16)).astype(np.float32)
    write_tif(tmp_path / "img" / "s_img.tif", stacked)
    write_tif(tmp_path / "lbl" / "lbl_s.tif", rng.integers(0, 2, (16, 16)).astype(np.uint8))
    dm = GenericNonGeoSegmentationDataModule(
        batch_size=1,
        test_data_root=tmp_path / "img",
        test_label_data_root=tmp_path / "lbl",
        img_grep="*_img.tif",
        label_grep="lbl_*.tif",
        dataset_bands=["B", "G", "R", "N"],
        output_bands=["N", "B"],
        expand_temporal_dimension=True,
        means=[1, 2, 3, 4],
        stds=[1, 1, 1, 1],
    )
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    assert batch["image"].shape == (1, 2, frames, 16, 16)
    for t in range(frames):
        np.testing.assert_array_equal(batch["image"][0, 0, t].numpy(), stacked[t * per_step + 3])
        np.testing.assert_array_equal(batch["image"][0, 1, t].numpy(), stacked[t * per_step + 0])
    assert dm.means == [4.0, 1.0]  # per dataset band, reduced to the output bands


def test_predict_root_alone(folder):
    dm = GenericNonGeoSegmentationDataModule(
        batch_size=3,
        predict_data_root=folder.image_root,
        img_grep="*_img.tif",
        dataset_bands=SIX_BANDS,
        output_bands=["RED", "GREEN", "BLUE"],
        predict_dataset_bands=["X", "BLUE", "GREEN", "RED", "Y", "Z"],  # same files, renamed
        predict_output_bands=["RED", "GREEN", "BLUE"],
        train_transform=[
            {"class_path": "kornia.augmentation.RandomHorizontalFlip", "init_args": {"p": 1.0}}
        ],
    )
    dm.setup("predict")
    batches = list(dm.predict_dataloader())
    assert [len(b["filename"]) for b in batches] == [3, 1]  # predict keeps the last batch
    batch = batches[0]
    assert "mask" not in batch and batch["image"].shape == (3, 3, 32, 32)
    i = by_name(batch)["a_1"]
    expected = folder.images["a_1"][3].astype(np.float32)
    expected[expected == IMAGE_NODATA] = np.nan
    np.testing.assert_array_equal(batch["image"][i, 0].numpy(), expected)
    assert dm.augment(batch, "predict") is batch  # never augmented
    with pytest.raises(ValueError, match="Stage 'fit' needs train_data_root"):
        dm.setup("fit")


def test_means_stds_from_statistics_file(folder, tmp_path):
    stats = tmp_path / "stats.yaml"
    stats.write_text("bands: [BLUE, GREEN, RED, NIR]\nmeans: [1, 2, 3, 4]\nstds: [5, 6, 7, 8]\n")
    dm = seg_dm(
        folder,
        dataset_bands=SIX_BANDS,
        output_bands=["NIR", "BLUE"],
        means=str(stats),
        stds=str(stats),
    )
    assert dm.means == [4.0, 1.0] and dm.stds == [8.0, 5.0]
    with pytest.raises(ValueError, match=r"means has 5 values but output_bands selects 2"):
        seg_dm(
            folder,
            dataset_bands=SIX_BANDS,
            output_bands=["NIR", "BLUE"],
            means=[1] * 5,
            stds=[1] * 5,
        )


def test_regression(tmp_path):
    folder = make_pixel_folder(tmp_path, label_dtype="float32", label_nodata=-1.0)
    dm = GenericNonGeoPixelwiseRegressionDataModule(
        batch_size=4,
        train_data_root=folder.image_root,
        train_label_data_root=folder.label_root,
        img_grep="*_img.tif",
        label_grep="lbl_*.tif",
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 6, 32, 32)
    assert batch["mask"].shape == (4, 32, 32) and batch["mask"].dtype == torch.float32
    i = by_name(batch)["a_2"]
    label = folder.labels["a_2"]
    got = batch["mask"][i].numpy()
    np.testing.assert_array_equal(got[label != -1.0], label[label != -1.0])
    assert np.isnan(got[label == -1.0]).all() and (label == -1.0).sum() == 4
    assert dm.val_dataloader() == []  # no val root: fit without validation


def test_classification(tmp_path):
    written = make_class_folder(tmp_path / "train")
    make_class_folder(tmp_path / "val", classes=("urban",), per_class=1)
    make_class_folder(tmp_path / "predict", classes=("any",), per_class=2)
    dm = GenericNonGeoClassificationDataModule(
        batch_size=6,
        train_data_root=tmp_path / "train",
        val_data_root=tmp_path / "val",
        predict_data_root=tmp_path / "predict",
        num_classes=3,
        dataset_bands=["B", "G", "R", "N"],
        output_bands=["N", "R"],
        no_data_replace=0,
        drop_last=False,
    )
    assert dm.class_names == ["forest", "urban", "water"]
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (6, 2, 16, 16) and batch["label"].dtype == torch.int64
    for i, filename in enumerate(batch["filename"]):
        stem = filename.rsplit("/", 1)[-1].removesuffix(".tif")
        cls, image = written[stem]
        assert batch["label"][i].item() == dm.class_names.index(cls)
        valid = image[3] != IMAGE_NODATA
        np.testing.assert_array_equal(batch["image"][i, 0].numpy()[valid], image[3][valid])
    val = next(iter(dm.val_dataloader()))
    assert val["label"].tolist() == [1]  # "urban" keeps index 1 in a folder of one class
    dm.setup("predict")
    pred = next(iter(dm.predict_dataloader()))
    assert "label" not in pred and pred["image"].shape == (2, 2, 16, 16)
    with pytest.raises(ValueError, match=r"num_classes=2 but there are 3 classes"):
        _ = GenericNonGeoClassificationDataModule(
            train_data_root=tmp_path / "train", num_classes=2
        ).class_names


# ---------------------------------------------------------------------------- errors
def test_missing_root_names_argument(folder, tmp_path):
    dm = seg_dm(folder, train_data_root=tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"train_data_root='.*nope' does not exist"):
        dm.setup("fit")
    dm = seg_dm(folder, val_label_data_root=tmp_path / "nolabels")
    with pytest.raises(FileNotFoundError, match=r"val_label_data_root='.*nolabels' does not exist"):
        dm.setup("validate")


def test_label_without_image_and_image_without_label(folder):
    (folder.image_root / "a_2_img.tif").unlink()
    dm = seg_dm(folder)
    with pytest.raises(
        FileNotFoundError, match=r"No image found for 1 label\(s\): '.*lbl_a_2.tif'"
    ):
        dm.setup("fit")
    (folder.label_root / "lbl_b_3.tif").unlink()
    (folder.label_root / "lbl_a_2.tif").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"No label found for 1 image\(s\): '.*b_3_img.tif'"
    ):
        seg_dm(folder).setup("fit")


def test_size_mismatch_names_both_files(folder):
    write_tif(folder.label_root / "lbl_a_1.tif", np.zeros((30, 32), np.uint8))
    dm = seg_dm(folder)
    dm.setup("test")
    index = dm.test_dataset.names.index("a_1")
    with pytest.raises(
        RasterError,
        match=r"Label '.*lbl_a_1.tif' is 30 x 32 pixels but its image '.*a_1_img.tif' is 32 x 32",
    ):
        dm.test_dataset[index]


def test_band_errors_name_key_or_file(folder):
    with pytest.raises(ValueError, match=r"output_bands names band 'NIRR'.*Did you mean 'NIR'"):
        seg_dm(folder, dataset_bands=SIX_BANDS, output_bands=["NIRR"])
    dm = seg_dm(folder, output_bands=[2, 7])
    with pytest.raises(
        RasterError, match=r"output_bands asks for band 7 but '.*_img.tif' has only 6 band"
    ):
        dm.setup("fit")  # found at set-up: the first file's header is checked
    dm = seg_dm(folder, dataset_bands=SIX_BANDS[:4])
    with pytest.raises(RasterError, match=r"has 6 bands but dataset_bands describes 4"):
        dm.setup("test")
    with pytest.raises(ValueError, match="expand_temporal_dimension=True needs dataset_bands"):
        seg_dm(folder, expand_temporal_dimension=True).setup("test")
    with pytest.raises(
        ValueError, match="predict_output_bands selects 1 bands but output_bands selects 2"
    ):
        seg_dm(folder, output_bands=[1, 2], predict_output_bands=[1])


def test_yaml_config_builds_datamodule(folder, tmp_path):
    """The config a user writes: augmentations as class_path dicts, parsed by jsonargparse."""
    from jsonargparse import ArgumentParser

    config = tmp_path / "data.yaml"
    config.write_text(
        f"""
data:
  class_path: geofm.data.GenericNonGeoSegmentationDataModule
  init_args:
    batch_size: 2
    train_data_root: {folder.image_root}
    train_label_data_root: {folder.label_root}
    img_grep: "*_img.tif"
    label_grep: "lbl_*.tif"
    dataset_bands: [[1, 3], NIR, [5, 6]]
    output_bands: [NIR, [1, 2]]
    means: [1, 2, 3]
    stds: [1, 1, 1]
    num_classes: 3
    train_transform:
      - class_path: kornia.augmentation.RandomVerticalFlip
        init_args: {{p: 1.0}}
"""
    )
    import lightning.pytorch as pl

    parser = ArgumentParser()
    parser.add_subclass_arguments(pl.LightningDataModule, "data")
    parser.add_argument("--config", action="config")
    cfg = parser.parse_args([f"--config={config}"])
    dm = parser.instantiate(cfg).data
    assert isinstance(dm, GenericNonGeoSegmentationDataModule)
    assert dm.band_names == ["NIR", "band_1", "band_2"] and dm.num_classes == 3
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    before = batch["image"].clone(), batch["mask"].clone()
    out = dm.augment(batch, "train")
    torch.testing.assert_close(out["image"], before[0].flip(-2), rtol=0, atol=0, equal_nan=True)
    assert torch.equal(out["mask"], before[1].flip(-2))
    assert math.isclose(dm.stds[0], 1.0)


# ---------------------------------------------------------------- labels on their image's grid
def _read_a_1(folder):
    dm = seg_dm(folder)
    dm.setup("test")
    return dm.test_dataset[dm.test_dataset.names.index("a_1")]


def test_label_on_another_crs_names_both_files_and_grids(folder):
    label = folder.labels["a_1"]
    write_tif(folder.label_root / "lbl_a_1.tif", label, nodata=LABEL_NODATA, crs="EPSG:32615")
    with pytest.raises(
        RasterError,
        match=r"Label '.*lbl_a_1.tif' is not on the grid of its image '.*a_1_img.tif' "
        r"\(label vs image: CRS EPSG:32615 vs EPSG:32614\)",
    ):
        _read_a_1(folder)


def test_label_with_another_transform_names_both_transforms(folder):
    # a_1's image lies at 440280; a label one pixel east is on another grid
    label = folder.labels["a_1"]
    origin = (440310.0, 3159720.0)
    write_tif(folder.label_root / "lbl_a_1.tif", label, nodata=LABEL_NODATA, origin=origin)
    with pytest.raises(
        RasterError, match=r"transform \(30, 0, 440310, 0, -30, 3\.15972e\+06\) vs \(30, 0, 440280,"
    ):
        _read_a_1(folder)


def test_label_without_crs_or_transform_is_taken_on_the_image_grid(folder):
    import rasterio

    label = folder.labels["a_1"]
    path = folder.label_root / "lbl_a_1.tif"
    write_tif(path, label, nodata=LABEL_NODATA, crs=None)  # the image's transform, no CRS
    assert torch.equal(_read_a_1(folder)["mask"][1:], torch.from_numpy(label[1:].astype(np.int64)))
    profile = {
        "driver": "GTiff", "height": 32, "width": 32, "count": 1, "dtype": "uint8",
        "nodata": LABEL_NODATA,
    }
    with pytest.warns(rasterio.errors.NotGeoreferencedWarning):
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(label[None])  # neither CRS nor transform
    assert torch.equal(_read_a_1(folder)["mask"][1:], torch.from_numpy(label[1:].astype(np.int64)))


def test_label_pixel_size_rounding_is_not_a_mismatch(folder):
    from affine import Affine

    import rasterio

    label = folder.labels["a_1"]
    profile = {
        "driver": "GTiff", "height": 32, "width": 32, "count": 1, "dtype": "uint8", "crs": CRS,
        "nodata": LABEL_NODATA,
        "transform": Affine(PIXEL * (1 + 1e-12), 0.0, 440280.0, 0.0, -PIXEL, 3159720.0),
    }
    with rasterio.open(folder.label_root / "lbl_a_1.tif", "w", **profile) as dst:
        dst.write(label[None])
    assert _read_a_1(folder)["mask"].shape == (32, 32)


def test_mask_fill_null_from_a_config_keeps_no_label_replace(folder):
    """The CLI passes mask_fill: null when a config says nothing: pixels a rotation brings in
    still get no_label_replace, and an explicit mask_fill wins."""
    rotate = [{"class_path": "kornia.augmentation.RandomRotation", "init_args": {"degrees": 30.0}}]
    dm = seg_dm(folder, train_transform=rotate, no_label_replace=-1, mask_fill=None)
    assert dm.augmentations["train"].mask_fill == -1
    assert seg_dm(folder, train_transform=rotate, no_label_replace=-1, mask_fill=7).augmentations["train"].mask_fill == 7
