"""Streamed prediction of bad inputs: NaN and ±inf without a nodata value, truncated files."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from geofm.data.raster import RasterError
from geofm.inference.streaming import predict_scene
from tests.inference.helpers import PositionModel, write_raster

SETTINGS = {"tile_size": 32, "overlap": 8, "block_size": 16, "progress": False}


def fill_nonfinite(x: torch.Tensor) -> torch.Tensor:
    """Like the task's Preprocess: no NaN or ±inf reaches the model."""
    return torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


def test_nonfinite_pixels_without_nodata_value_are_output_nodata_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = np.random.default_rng(0).random((3, 70, 90)).astype(np.float32)
    data[:, 3, 4:9] = np.inf  # 5 pixels
    data[:, 40:42, 60] = -np.inf  # 2 pixels, on a tile overlap: counted once
    data[:, 20, 30:34] = np.nan  # 4 pixels
    profile = {
        "driver": "GTiff",
        "width": 90,
        "height": 70,
        "count": 3,
        "dtype": "float32",
        "crs": "EPSG:32633",
        "transform": Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_200_000.0),
        "tiled": True,
        "blockxsize": 16,
        "blockysize": 16,
    }  # no nodata value, no mask
    path = tmp_path / "scene.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    with caplog.at_level(logging.INFO):
        out = predict_scene(
            PositionModel(), path, tmp_path / "out.tif", preprocess=fill_nonfinite, **SETTINGS
        )
    with rasterio.open(out) as src:
        classes, nodata = src.read(1), src.nodata
    bad = ~np.isfinite(data).all(axis=0)
    np.testing.assert_array_equal(classes == nodata, bad)
    lines = [r.getMessage() for r in caplog.records if str(path) in r.getMessage() and "±inf" in r.getMessage()]
    assert len(lines) == 1 and "11 of 6300 pixels" in lines[0] and "7 of them ±inf" in lines[0]


@pytest.mark.parametrize("workers", [0, 2])
def test_truncated_scene_names_the_file_and_window(tmp_path: Path, workers: int) -> None:
    path = tmp_path / "scene.tif"
    write_raster(path, 170, 300)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the header still reads, later blocks do not
    out = tmp_path / "out.tif"
    with pytest.raises(RasterError, match="truncated or corrupt") as info:
        predict_scene(
            PositionModel(), path, out, preprocess=fill_nonfinite, num_workers=workers, **SETTINGS
        )
    message = str(info.value)
    assert str(path) in message and "band(s) [1, 2, 3], rows" in message
    assert not out.exists() and not Path(f"{out}.lock").exists()
