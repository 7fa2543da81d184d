"""Bad input files: NaN and ±inf pixels without a nodata value, truncated GeoTIFFs."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from geofm.data.datasets.base import GeoTiffDataset
from geofm.data.raster import RasterError, read_label

PROFILE = {
    "driver": "GTiff",
    "crs": "EPSG:32633",
    "transform": Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_200_000.0),
    "tiled": True,
    "blockxsize": 16,
    "blockysize": 16,
}


def write(path: Path, data: np.ndarray, nodata: float | None = None) -> Path:
    profile = {**PROFILE, "count": data.shape[0], "height": data.shape[1], "width": data.shape[2]}
    with rasterio.open(path, "w", dtype=data.dtype, nodata=nodata, **profile) as dst:
        dst.write(data)
    return path


def test_nonfinite_pixels_are_nodata_and_counted_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = np.random.default_rng(0).random((3, 32, 40)).astype(np.float32)
    data[:, 2, 3] = np.inf
    data[1, 5, 6] = -np.inf  # one band only: the pixel is still nodata in the mask
    data[:, 10, 10:15] = np.nan
    path = write(tmp_path / "scene.tif", data)  # no nodata value
    dataset = GeoTiffDataset([path])
    with caplog.at_level(logging.INFO, logger="geofm.data.raster"):
        sample = dataset[0]
        dataset[0]  # a second epoch does not log again
    expected = ~np.isfinite(data).all(axis=0)
    np.testing.assert_array_equal(sample["nodata_mask"].numpy(), expected)
    image = sample["image"].numpy()
    assert np.isnan(image[:, 2, 3]).all() and np.isnan(image[1, 5, 6])
    lines = [r for r in caplog.records if str(path) in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert "7 of 1280 pixels" in lines[0].getMessage()
    assert "2 of them ±inf" in lines[0].getMessage()


def truncated(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header (at the start) still reads
    return path


def test_truncated_image_and_label_name_the_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = truncated(write(tmp_path / "image.tif", rng.random((3, 64, 64)).astype(np.float32)))
    label = truncated(write(tmp_path / "label.tif", rng.integers(0, 3, (1, 64, 64)).astype(np.uint8)))
    with rasterio.open(image) as src:
        assert src.shape == (64, 64)  # opens: only reading the pixels fails
    with pytest.raises(RasterError, match="truncated or corrupt") as info:
        GeoTiffDataset([image])[0]
    assert str(image) in str(info.value) and "band(s) [1, 2, 3]" in str(info.value)
    with pytest.raises(RasterError, match="truncated or corrupt") as info:
        read_label(label)
    assert str(label) in str(info.value)
