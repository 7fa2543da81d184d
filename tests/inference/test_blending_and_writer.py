"""Failure paths of the blender and the background writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from geofm.inference.blending import BandBlender, OutputConverter, output_type
from geofm.inference.tiling import plan_tiles
from geofm.inference.writer import BackgroundWriter, GeoTiffSink


def test_blender_needs_row_major_order() -> None:
    grid = plan_tiles(100, 100, 32, overlap=8)
    dtype, nodata, count = output_type("class", 3)
    blender = BandBlender(
        grid, 3, OutputConverter(grid, "hann", "class", dtype, nodata), count, dtype, masked=False
    )
    tiles = list(grid)
    blender.add(tiles[0], np.ones((3, 32, 32), np.float32), None)
    with pytest.raises(RuntimeError, match="row-major plan order"):
        blender.add(tiles[grid.shape[1]], np.ones((3, 32, 32), np.float32), None)
    with pytest.raises(RuntimeError, match="instead of grid row 0, column 1"):
        blender.add(tiles[2], np.ones((3, 32, 32), np.float32), None)


def test_output_types() -> None:
    assert output_type("class", 5)[:3] == (np.dtype("uint8"), 255, 1)
    assert output_type("class", 256)[:2] == (np.dtype("int16"), -1)
    assert output_type("probabilities", 3, nodata=-1.0) == (np.dtype("float32"), -1.0, 3)
    with pytest.raises(ValueError, match="one output channel"):
        output_type("regression", 2)


def test_writer_errors_reach_the_caller(tmp_path: Path) -> None:
    sink = GeoTiffSink(tmp_path / "out.tif", 8, 8, {"test": 1})
    writer = BackgroundWriter(sink)  # never opened: every write fails
    writer.put(0, np.zeros((1, 8, 8), np.uint8))
    with pytest.raises(RuntimeError, match="not open"):
        writer.stop()
    assert not (tmp_path / "out.tif").exists()


def test_sink_refuses_rows_out_of_order(tmp_path: Path) -> None:
    sink = GeoTiffSink(tmp_path / "out.tif", 8, 20, {"test": 1})
    sink.open(
        {
            "width": 8,
            "height": 20,
            "count": 1,
            "dtype": "uint8",
            "blockysize": 16,
            "blockxsize": 16,
            "tiled": True,
            "crs": "EPSG:32633",
            "transform": Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_200_000.0),
        }
    )
    sink.write(0, np.zeros((1, 5, 8), np.uint8))
    with pytest.raises(RuntimeError, match="expected row 5"):
        sink.write(6, np.zeros((1, 5, 8), np.uint8))
    with pytest.raises(RuntimeError, match=r"0 of 20 rows"):
        sink.finish()
    sink.close()


@pytest.mark.parametrize(("tile", "overlap"), [(32, 8), ((24, 16), (20, 6))])
def test_blender_matches_a_whole_scene_sum_and_holds_few_rows(tile, overlap) -> None:
    height, width, channels = 300, 70, 3
    grid = plan_tiles(height, width, tile, overlap=overlap)
    rng = np.random.default_rng(0)
    outputs = rng.random((len(grid), channels, *grid.tile_size), dtype=np.float32)
    valid = rng.random((height, width)) > 0.1

    # Oracle: the whole scene summed in plan order.
    total = np.zeros((channels, height, width), np.float32)
    for tile_, out in zip(grid, outputs, strict=True):
        r0, r1, c0, c1 = tile_.inside(height, width)
        total[:, r0:r1, c0:c1] += out[
            :, r0 - tile_.row : r1 - tile_.row, c0 - tile_.col : c1 - tile_.col
        ]
    rows, cols = grid.weight_sums()
    expected = (total / (rows[:, None] * cols[None, :])).argmax(0).astype(np.uint8)
    expected[~valid] = 255

    dtype, nodata, count = output_type("class", channels)
    convert = OutputConverter(grid, "hann", "class", dtype, nodata)
    blender = BandBlender(grid, channels, convert, count, dtype, masked=True)
    result = np.full((height, width), 7, np.uint8)
    next_row, most_rows, most_carried = 0, 0, 0
    for tile_, out in zip(grid, outputs, strict=True):
        r0, r1, c0, c1 = tile_.inside(height, width)
        emitted = blender.add(tile_, out, valid[r0:r1, c0:c1])
        most_rows = max(most_rows, blender.valid.shape[0], blender._window.shape[1])
        most_carried = max(most_carried, blender.carry.shape[1])
        if emitted is not None:
            row, data = emitted
            assert row == next_row  # rows come once, in order
            result[row : row + data.shape[1]] = data[0]
            next_row = row + data.shape[1]
    assert next_row == height
    np.testing.assert_array_equal(result, expected)
    # Memory: a tile's rows at most, and only the overlap rows carried, whatever the height.
    assert most_rows <= grid.tile_size[0]
    assert 0 < most_carried <= grid.tile_size[0] - min(np.diff(grid.row_offsets))
    assert blender.carry.shape[1] == 0
