"""TerraTorch's datamodule arguments do what they do in TerraTorch (or fail naming geofm's
equivalent): allow_substring_split_file, check_stackability, rgb_indices, dataset_bands /
output_bands (HLSBands names, integer identifiers, [[first, last]] intervals),
expand_temporal_dimension, reduce_zero_label, no_data_replace, no_label_replace,
constant_scale, means/stds as .txt files."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from geofm.data import GenericNonGeoClassificationDataModule, GenericNonGeoSegmentationDataModule
from geofm.data.bands import HLSBands
from geofm.models.preprocess import Preprocess

from .fixtures import IMAGE_NODATA, LABEL_NODATA, make_class_folder, make_pixel_folder, write_tif


@pytest.fixture
def folder(tmp_path):
    return make_pixel_folder(tmp_path, names=("a_1", "a_2", "a_10", "b_3"))


def seg(folder, **kwargs):
    args = dict(
        batch_size=2,
        train_data_root=folder.image_root,
        train_label_data_root=folder.label_root,
        img_grep="*_img.tif",
        label_grep="lbl_*.tif",
        num_classes=3,
        no_label_replace=-1,
    )
    args.update(kwargs)
    return GenericNonGeoSegmentationDataModule(**args)


def train_names(dm) -> list[str]:
    dm.setup("fit")
    return sorted(dm.train_dataset.names)


# ---------------------------------------------------------------- allow_substring_split_file
def test_substring_split_selects_every_sample_containing_an_entry(folder, tmp_path, caplog):
    split = tmp_path / "split.txt"
    split.write_text("a\n")
    with pytest.raises(ValueError, match=r"Entries such as 'a' are parts of file names: set allow_substring_split_file: true"):
        train_names(seg(folder, train_split=split))  # geofm's default: exact names
    dm = seg(folder, train_split=split, allow_substring_split_file=True)
    assert train_names(dm) == ["a_1", "a_10", "a_2"]
    # Labels pair with the selected images, not by position.
    assert [p.name for p in dm.train_dataset.label_files] == [f"lbl_{n}.tif" for n in dm.train_dataset.names]


def test_substring_split_warns_about_exact_entries_that_select_more(folder, tmp_path, caplog):
    split = tmp_path / "split.txt"
    split.write_text("a_1\nb_3\n")
    assert train_names(seg(folder, train_split=split)) == ["a_1", "b_3"]  # exact: a_1 is not a_10
    with caplog.at_level(logging.WARNING, logger="geofm.data.files"):
        names = train_names(seg(folder, train_split=split, allow_substring_split_file=True))
    assert names == ["a_1", "a_10", "b_3"]  # TerraTorch's rule: 'a_1' is in 'a_10'
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "'a_1' also selects 'a_10'" in warnings[0] and "allow_substring_split_file: false" in warnings[0]

    caplog.clear()
    split.write_text("a_1\na_10\n")
    with caplog.at_level(logging.WARNING, logger="geofm.data.files"):
        assert train_names(seg(folder, train_split=split, allow_substring_split_file=True)) == ["a_1", "a_10"]
    assert "1 sample(s) match several entries: 'a_10' (a_1, a_10)" in caplog.records[0].getMessage()


def test_substring_without_split_file_changes_nothing(folder):
    assert train_names(seg(folder, allow_substring_split_file=True)) == train_names(seg(folder))


def test_substring_split_in_classification(tmp_path):
    make_class_folder(tmp_path / "data", per_class=2)
    split = tmp_path / "split.txt"
    split.write_text("forest\nwater_1\n")
    dm = GenericNonGeoClassificationDataModule(
        batch_size=2, train_data_root=tmp_path / "data", train_split=split, allow_substring_split_file=True
    )
    dm.setup("fit")
    assert sorted(dm.train_dataset.names) == ["forest_0.tif", "forest_1.tif", "water_1.tif"]
    exact = GenericNonGeoClassificationDataModule(batch_size=2, train_data_root=tmp_path / "data", train_split=split)
    exact.setup("fit")
    assert exact.train_dataset.names == ["water_1.tif"]


# ---------------------------------------------------------------- check_stackability
@pytest.fixture
def mixed_sizes(tmp_path):
    folder = make_pixel_folder(tmp_path, names=("a_1", "a_2", "a_3"), size=32)
    image = np.ones((6, 24, 24), np.float32)
    write_tif(folder.image_root / "a_3_img.tif", image, origin=folder.origins["a_3"])
    write_tif(folder.label_root / "lbl_a_3.tif", np.zeros((24, 24), np.uint8), origin=folder.origins["a_3"])
    return folder


def test_check_stackability_batches_mixed_sizes_one_at_a_time(mixed_sizes, caplog):
    dm = seg(mixed_sizes, check_stackability=True)
    dm.setup("fit")
    with caplog.at_level(logging.WARNING, logger="geofm.data.datamodules.base"):
        loader = dm.train_dataloader()
    assert loader.batch_size == 1
    assert len([b for b in loader]) == 3  # every sample batched alone
    assert "2 different shapes" in caplog.text and "batch_size=1" in caplog.text

    plain = seg(mixed_sizes, batch_size=3)  # geofm's default: a batch of two sizes fails
    plain.setup("fit")
    assert plain.train_dataloader().batch_size == 3
    with pytest.raises(ValueError, match=r"Cannot batch 'image' tensors of different shapes.*a_3_img.tif.*check_stackability"):
        next(iter(plain.train_dataloader()))


def test_check_stackability_keeps_batch_size_for_one_size(folder):
    dm = seg(folder, check_stackability=True)
    dm.setup("fit")
    assert dm.train_dataloader().batch_size == 2


# ---------------------------------------------------------------- bands
def test_hls_band_names_and_terratorch_intervals(folder):
    hls = [HLSBands.BLUE, "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2"]
    dm = seg(folder, dataset_bands=hls, output_bands=["RED", HLSBands.GREEN, "blue"])
    dm.setup("fit")
    sample = dm.train_dataset[dm.train_dataset.names.index("a_2")]
    written = folder.images["a_2"]
    np.testing.assert_array_equal(np.nan_to_num(sample["image"].numpy(), nan=IMAGE_NODATA), written[[2, 1, 0]])
    assert dm.band_names == ["RED", "GREEN", "BLUE"]

    # TerraTorch's [[first, last]] intervals of integer identifiers, 0-based here:
    # dataset_bands [[0, 5]], output_bands [[1, 3], 5] select file bands 2, 3, 4 and 6.
    dm = seg(folder, dataset_bands=[[0, 5]], output_bands=[[1, 3], 5])
    dm.setup("fit")
    sample = dm.train_dataset[dm.train_dataset.names.index("a_2")]
    np.testing.assert_array_equal(np.nan_to_num(sample["image"].numpy(), nan=IMAGE_NODATA), written[[1, 2, 3, 5]])
    # Identifiers mixed with names; repeated identifiers resolve to the first (TerraTorch's index).
    dm = seg(folder, dataset_bands=[0, "GREEN", 7, 7, "SWIR_1", 9], output_bands=["SWIR_1", 7, 0])
    assert dm.selection.indexes == (5, 3, 1)
    with pytest.raises(ValueError, match=r"output_bands integer 6 is ambiguous.*identifiers \(0\.\.5\)"):
        seg(folder, dataset_bands=[[0, 5]], output_bands=[6])


def test_expand_temporal_dimension_reads_time_major_files(folder):
    dm = seg(folder, dataset_bands=["BLUE", "GREEN", "RED"], expand_temporal_dimension=True)
    dm.setup("fit")
    sample = dm.train_dataset[dm.train_dataset.names.index("b_3")]
    image = np.nan_to_num(sample["image"].numpy(), nan=IMAGE_NODATA)
    assert image.shape == (3, 2, 32, 32)  # (C, T, H, W) from 6 = T x C bands
    written = folder.images["b_3"]
    for t in range(2):
        for c in range(3):
            np.testing.assert_array_equal(image[c, t], written[t * 3 + c])


# ---------------------------------------------------------------- labels
def test_reduce_zero_label_and_no_label_replace(folder):
    dm = seg(folder, reduce_zero_label=True, no_label_replace=-1)
    dm.setup("fit")
    index = dm.train_dataset.names.index("a_1")
    mask = dm.train_dataset[index]["mask"].numpy()
    written = folder.labels["a_1"].astype(np.int64)
    nodata = written == LABEL_NODATA
    np.testing.assert_array_equal(mask[~nodata], written[~nodata] - 1)  # class 0 -> -1
    assert (mask[nodata] == -1).all() and (written[~nodata] == 0).any()
    plain = seg(folder, no_label_replace=7, num_classes=None)
    plain.setup("fit")
    assert (plain.train_dataset[index]["mask"].numpy()[nodata] == 7).all()


# ---------------------------------------------------------------- preprocessing settings
def test_constant_scale_and_no_data_replace_as_terratorch(folder, tmp_path):
    means, stds = tmp_path / "means.txt", tmp_path / "stds.txt"
    means.write_text("# TerraTorch's statistics files: one value per band\n10.0\n20.0\n")
    stds.write_text("2.0 4.0\n")  # or all on one line
    dm = seg(folder, output_bands=[1, 2], constant_scale=0.5, no_data_replace=-8, means=means, stds=stds)
    assert dm.means == [10.0, 20.0] and dm.stds == [2.0, 4.0]
    dm.setup("fit")
    sample = dm.train_dataset[0]
    raw = folder.images[dm.train_dataset.names[0]][:2]
    out = Preprocess(**dm.preprocess_settings())(sample["image"][None])[0].numpy()
    expected = (np.where(raw == IMAGE_NODATA, -8.0, raw) * 0.5 - np.array([10.0, 20.0])[:, None, None]) / np.array(
        [2.0, 4.0]
    )[:, None, None]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)  # nodata -> -8, then scaled


def test_statistics_txt_for_every_dataset_band_and_errors(folder, tmp_path):
    path = tmp_path / "means.txt"
    path.write_text("\n".join(str(v) for v in range(6)))  # one value per dataset band
    dm = seg(folder, dataset_bands=[[0, 5]], output_bands=[4, 1], means=path, stds=[1.0] * 6)
    assert dm.means == [4.0, 1.0]
    path.write_text("1 2\n3 4\n")
    with pytest.raises(ValueError, match=r"means='.*means.txt' holds a table of 2 lines"):
        seg(folder, means=path, stds=path)
    path.write_text("1\nlots\n")
    with pytest.raises(ValueError, match=r"means='.*means.txt': .*numbers only"):
        seg(folder, means=path, stds=path)
    with pytest.raises(FileNotFoundError, match=r"means='.*none.txt'"):
        seg(folder, means=tmp_path / "none.txt", stds=path)


# ---------------------------------------------------------------- rgb_indices
def test_rgb_indices_are_checked_and_reach_the_task_plots(folder, monkeypatch):
    from geofm.tasks import SemanticSegmentationTask, plotting

    from ..tasks.helpers import TinyPixelModel, trainer
    from ..tasks.test_plotting import FigureLogger

    with pytest.raises(ValueError, match=r"rgb_indices=\[0, 1, 6\] must be three 0-based positions among the 6"):
        seg(folder, dataset_bands=[[1, 6]], rgb_indices=[0, 1, 6])
    shown = []
    monkeypatch.setattr(plotting, "plot_sample", lambda *a, **k: shown.append(k["rgb_indices"]) or object())
    dm = seg(folder, val_data_root=folder.image_root, val_label_data_root=folder.label_root, rgb_indices=[3, 2, 1])
    task = SemanticSegmentationTask(model=TinyPixelModel(in_chans=6), num_classes=3, ignore_index=-1, plot_on_val=True)
    trainer(logger=FigureLogger(), limit_val_batches=1).validate(task, datamodule=dm)
    assert shown == [[3, 2, 1]]
