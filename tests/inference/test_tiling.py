"""Tile plans, blend windows and reflect padding."""

from __future__ import annotations

import numpy as np
import pytest

from geofm.inference.tiling import (
    blend_weights,
    blend_window,
    plan_tiles,
    reflect_indices,
    resolve_tile_args,
)


@pytest.mark.parametrize("size", [1, 5, 20, 31, 32, 33, 100, 300])
@pytest.mark.parametrize(("tile", "overlap"), [(32, 8), (32, 0), (16, 15)])
def test_plan_covers_the_scene_with_bounded_steps(size: int, tile: int, overlap: int) -> None:
    grid = plan_tiles(size, size, tile, overlap=overlap)
    offsets = np.array(grid.row_offsets)
    covered = np.zeros(size, int)
    for start in offsets:
        covered[max(start, 0) : min(start + tile, size)] += 1
    assert (covered >= 1).all()
    assert (np.diff(offsets) > 0).all()
    assert (np.diff(offsets) <= tile - overlap).all()
    if size <= tile:  # one tile, the scene in its middle
        assert len(offsets) == 1 and offsets[0] <= 0 and offsets[0] + tile >= size
    else:  # half the overlap of context beyond each edge
        assert offsets[0] == -(overlap // 2)
        assert offsets[-1] + tile == size + overlap // 2


def test_plan_is_row_major_and_rectangular() -> None:
    grid = plan_tiles(50, 90, (16, 32), stride=(12, 24))
    tiles = list(grid)
    assert len(tiles) == len(grid) == grid.shape[0] * grid.shape[1]
    assert [t.index for t in tiles] == list(range(len(tiles)))
    assert all(t.height == 16 and t.width == 32 for t in tiles)
    assert [(t.grid_row, t.grid_col) for t in tiles[: grid.shape[1] + 1]][-1] == (1, 0)


def test_final_rows_and_first_touching_row() -> None:
    grid = plan_tiles(100, 10, 32, overlap=8)
    assert grid.final_rows(0) == grid.row_offsets[1]
    assert grid.final_rows(len(grid.row_offsets) - 1) == 100
    for row in (0, 27, 50, 99):
        first = grid.first_grid_row_touching(row)
        assert grid.row_offsets[first] + 32 > row
        assert first == 0 or grid.row_offsets[first - 1] + 32 <= row


def test_tile_args_defaults_and_errors() -> None:
    assert resolve_tile_args(64) == ((64, 64), (56, 56))
    assert resolve_tile_args(64, stride=(32, 48)) == ((64, 64), (32, 48))
    with pytest.raises(ValueError, match="not both"):
        resolve_tile_args(64, overlap=8, stride=56)
    with pytest.raises(ValueError, match="stride along height"):
        resolve_tile_args(64, overlap=64)
    with pytest.raises(ValueError, match="tile_size"):
        plan_tiles(10, 10, (0, 4))


def test_hann_window_is_smooth_positive_and_symmetric() -> None:
    window = blend_window(32)
    assert window.dtype == np.float32
    assert (window > 0).all() and window.max() <= 1
    np.testing.assert_array_equal(window, window[::-1])
    assert window[0] < 0.05 and window[15] > 0.95
    np.testing.assert_array_equal(blend_window(8, "uniform"), np.ones(8, np.float32))
    np.testing.assert_array_equal(blend_weights((4, 6)), np.outer(blend_window(4), blend_window(6)))
    with pytest.raises(ValueError, match="hann"):
        blend_window(8, "gauss")  # type: ignore[arg-type]


def test_weight_sums_equal_the_sum_of_2d_weights() -> None:
    grid = plan_tiles(70, 45, 16, overlap=6)
    total = np.zeros((70, 45), np.float64)
    weights = blend_weights(grid.tile_size)
    for tile in grid:
        r0, r1, c0, c1 = tile.inside(70, 45)
        total[r0:r1, c0:c1] += weights[r0 - tile.row : r1 - tile.row, c0 - tile.col : c1 - tile.col]
    rows, cols = grid.weight_sums()
    np.testing.assert_allclose(rows[:, None] * cols[None, :], total, rtol=1e-5)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 40])
def test_reflect_indices_match_numpy_reflect_padding(n: int) -> None:
    padded = np.pad(np.arange(n), 100, mode="reflect")
    for start in range(-60, n + 40, 7):
        np.testing.assert_array_equal(
            reflect_indices(start, 25, n), padded[start + 100 : start + 125]
        )
