"""compute_statistics against numpy, class counts, and the file the datamodules read back."""

from __future__ import annotations

import json

import numpy as np
import pytest

from geofm.data import GenericNonGeoClassificationDataModule, GenericNonGeoSegmentationDataModule
from geofm.data.datasets import GenericNonGeoSegmentationDataset
from geofm.data.statistics import compute_statistics, load_statistics, write_statistics
from tests.data.fixtures import (
    IMAGE_NODATA,
    LABEL_NODATA,
    make_class_folder,
    make_pixel_folder,
    write_tif,
)


@pytest.fixture
def folder(tmp_path):
    return make_pixel_folder(tmp_path, names=("s1", "s2", "s3"), bands=6, size=24)


def seg(folder, **kwargs):
    return GenericNonGeoSegmentationDataModule(
        train_data_root=folder.image_root,
        train_label_data_root=folder.label_root,
        img_grep="*_img.tif",
        label_grep="lbl_*.tif",
        dataset_bands=["B1", "B2", "B3", "B4", "B5", "B6"],
        **kwargs,
    )


def test_statistics_equal_numpy_ignoring_nodata(folder):
    dm = seg(folder, output_bands=["B5", "B2"], constant_scale=0.1, no_data_replace=0)
    stats = compute_statistics(dm, progress=False)
    stack = np.stack([folder.images[n] for n in folder.names])[:, [4, 1]]  # (N, 2, H, W)
    for band in range(2):
        values = stack[:, band]
        valid = values[values != IMAGE_NODATA].astype(np.float64) * np.float32(0.1)
        assert stats.pixel_counts[band] == valid.size < values.size
        np.testing.assert_allclose(stats.means[band], valid.mean(), rtol=1e-6)
        np.testing.assert_allclose(stats.stds[band], valid.std(), rtol=1e-5)
    assert stats.bands == ["B5", "B2"] and stats.num_samples == 3
    labels = np.stack([folder.labels[n] for n in folder.names])
    values, counts = np.unique(labels[labels != LABEL_NODATA], return_counts=True)
    assert stats.class_counts == dict(zip(values.tolist(), counts.tolist(), strict=True))
    # Workers read in parallel and give the same figures.
    again = compute_statistics(dm.build_dataset("train"), num_workers=2, progress=False, constant_scale=0.1)
    np.testing.assert_allclose(again.means, stats.means)
    np.testing.assert_allclose(again.stds, stats.stds)


def test_large_offsets_keep_precision(tmp_path):
    """float32 sums of squares would lose the small spread around a large mean."""
    rng = np.random.default_rng(0)
    images = [1e6 + rng.normal(0, 0.01, (1, 64, 64)) for _ in range(3)]
    for i, image in enumerate(images):
        write_tif(tmp_path / f"{i}.tif", image.astype(np.float64))
    ds = GenericNonGeoSegmentationDataset(tmp_path, with_labels=False, img_grep="*.tif")
    stats = compute_statistics(ds, progress=False)
    np.testing.assert_allclose(
        stats.stds[0], np.concatenate(images).astype(np.float32).std(), rtol=1e-3
    )


def test_temporal_statistics_pool_frames(tmp_path):
    rng = np.random.default_rng(2)
    stacked = rng.uniform(0, 10, (6, 8, 8)).astype(np.float32)  # 3 frames x 2 bands
    write_tif(tmp_path / "x.tif", stacked)
    ds = GenericNonGeoSegmentationDataset(
        tmp_path, with_labels=False, dataset_bands=["A", "B"], expand_temporal_dimension=True
    )
    stats = compute_statistics(ds, progress=False)
    np.testing.assert_allclose(stats.means, [stacked[0::2].mean(), stacked[1::2].mean()], rtol=1e-6)
    np.testing.assert_allclose(stats.stds, [stacked[0::2].std(), stacked[1::2].std()], rtol=1e-5)


def test_classification_counts_samples_per_class(tmp_path):
    make_class_folder(tmp_path, classes=("a", "b"), per_class=3)
    (tmp_path / "b" / "b_2.tif").unlink()
    dm = GenericNonGeoClassificationDataModule(train_data_root=tmp_path)
    assert compute_statistics(dm, progress=False).class_counts == {0: 3, 1: 2}


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_written_file_feeds_means_and_stds(folder, tmp_path, suffix):
    dm = seg(folder, output_bands=["B3", "B1"])
    stats = compute_statistics(dm, progress=False)
    path = write_statistics(stats, tmp_path / f"stats{suffix}")
    data = load_statistics(path)
    assert data["means"] == pytest.approx(stats.means) and data["bands"] == ["B3", "B1"]
    if suffix == ".json":
        json.loads(path.read_text())
    # Another datamodule picks its bands out of the file by name.
    other = seg(folder, output_bands=["B1"], means=str(path), stds=str(path))
    assert other.means == pytest.approx([stats.means[1]]) and other.stds == pytest.approx(
        [stats.stds[1]]
    )
    with pytest.raises(ValueError, match=r"must end in .yaml, .yml or .json"):
        write_statistics(stats, tmp_path / "stats.txt")


def test_statistics_rejects_other_inputs(tmp_path):
    with pytest.raises(TypeError, match="needs a geofm GeoTIFF dataset or datamodule"):
        compute_statistics([1, 2, 3])
    with pytest.raises(ValueError, match="no 'means' key"):
        path = tmp_path / "s.yaml"
        path.write_text("stds: [1]\n")
        GenericNonGeoSegmentationDataModule(means=str(path), stds=str(path))
