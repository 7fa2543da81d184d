"""Tile plans over a scene, blend windows and reflect padding, shared by every tiled path.

The in-memory :func:`~geofm.inference.in_memory.tiled_forward` and the streaming engine use
the same plan, weights and padding, so their results agree exactly.

A plan covers the scene padded by half the overlap on each side (so that edge pixels sit
inside a tile, not on its border) with as few tiles as the stride allows, spread evenly from
the padded start to the padded end (steps of the stride or slightly less); an axis no longer
than a tile gets one tile centred on it.
Pixels outside the scene are filled by reflection (``numpy.pad(mode="reflect")``: the edge
pixel is not repeated).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "Tile",
    "TileGrid",
    "WindowKind",
    "blend_weights",
    "blend_window",
    "plan_tiles",
    "reflect_indices",
    "resolve_tile_args",
]

WindowKind = Literal["hann", "uniform"]

# Floor of the blend window: the weight never reaches zero, so every covered pixel keeps a
# defined value even where only a tile's border covers it.
_WINDOW_FLOOR = 1e-3
# Weight of a tile's margin pixels (TerraTorch's ``delta``): they count only where no tile's
# inside covers them, yet every pixel keeps a value.
_MARGIN_WEIGHT = 1e-6


@dataclass(frozen=True)
class Tile:
    """One tile of a plan, in scene pixel coordinates.

    Attributes:
        index: Position in the plan's row-major order.
        grid_row: Row of the tile in the plan's grid of tiles.
        grid_col: Column of the tile in the plan's grid of tiles.
        row: Top row of the tile; negative or past the scene where it covers padding.
        col: Left column of the tile; may likewise fall outside the scene.
        height: Tile height in pixels.
        width: Tile width in pixels.
    """

    index: int
    grid_row: int
    grid_col: int
    row: int
    col: int
    height: int
    width: int

    def inside(self, scene_height: int, scene_width: int) -> tuple[int, int, int, int]:
        """The part of the tile inside the scene: ``(row_start, row_stop, col_start, col_stop)``."""
        return (
            max(self.row, 0),
            min(self.row + self.height, scene_height),
            max(self.col, 0),
            min(self.col + self.width, scene_width),
        )


@dataclass(frozen=True)
class TileGrid:
    """Overlapping tiles over a ``height`` x ``width`` scene, in row-major order.

    The grid is the product of ``row_offsets`` and ``col_offsets``, which makes the sum of the
    separable blend weights separable too (see :meth:`weight_sums`).

    Attributes:
        height: Scene height in pixels.
        width: Scene width in pixels.
        tile_size: ``(tile_height, tile_width)``.
        stride: ``(row_stride, col_stride)``: the largest step between consecutive tiles
            (steps are spread evenly, so some may be a little shorter).
        row_offsets: Top row of each grid row (the first may be negative: padding).
        col_offsets: Left column of each grid column.
    """

    height: int
    width: int
    tile_size: tuple[int, int]
    stride: tuple[int, int]
    row_offsets: tuple[int, ...]
    col_offsets: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.row_offsets) * len(self.col_offsets)

    def __iter__(self) -> Iterator[Tile]:
        th, tw = self.tile_size
        index = 0
        for i, row in enumerate(self.row_offsets):
            for j, col in enumerate(self.col_offsets):
                yield Tile(index, i, j, row, col, th, tw)
                index += 1

    @property
    def shape(self) -> tuple[int, int]:
        """Number of tiles ``(rows, cols)``."""
        return len(self.row_offsets), len(self.col_offsets)

    def final_rows(self, grid_row: int) -> int:
        """Scene rows ``[0, n)`` no tile after grid row ``grid_row`` touches: returns ``n``."""
        if grid_row + 1 >= len(self.row_offsets):
            return self.height
        return min(max(self.row_offsets[grid_row + 1], 0), self.height)

    def first_grid_row_touching(self, row: int) -> int:
        """Index of the first grid row whose tiles reach scene row ``row`` or below."""
        th = self.tile_size[0]
        for i, top in enumerate(self.row_offsets):
            if top + th > row:
                return i
        return len(self.row_offsets)

    def weight_sums(
        self, window: WindowKind = "hann", margin: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-row and per-column sums of the blend weights of every tile covering them.

        The total weight at pixel ``(r, c)`` is ``rows[r] * cols[c]`` because the grid is a
        product of row and column offsets and the window is separable.

        Args:
            window: The blend window's kind.
            margin: Pixels of each tile edge weighted (almost) zero (see :func:`blend_window`).

        Returns:
            ``(rows, cols)``: float32 arrays of shape ``(height,)`` and ``(width,)``.
        """
        return (
            _axis_weight_sum(self.row_offsets, self.tile_size[0], self.height, window, margin),
            _axis_weight_sum(self.col_offsets, self.tile_size[1], self.width, window, margin),
        )


def _pair(value: int | tuple[int, int] | list[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
        raise ValueError(f"{name}={value!r} must be an int or a pair of ints (height, width).")
    return int(pair[0]), int(pair[1])


def resolve_tile_args(
    tile_size: int | tuple[int, int],
    overlap: int | tuple[int, int] | None = None,
    stride: int | tuple[int, int] | None = None,
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Tile size and stride from a tile size and either an overlap or a stride.

    Args:
        tile_size: Tile side, or ``(height, width)``.
        overlap: Pixels shared by neighbouring tiles; default ``tile_size // 8``.
        stride: Step between tiles (``tile_size - overlap``); give overlap or stride, not both.

    Returns:
        ``((tile_h, tile_w), (stride_h, stride_w))``.
    """
    tile = _pair(tile_size, "tile_size")
    if min(tile) < 1:
        raise ValueError(f"tile_size={tile_size!r} must be positive.")
    if overlap is not None and stride is not None:
        raise ValueError(
            f"Give overlap ({overlap!r}) or stride ({stride!r}), not both: "
            "stride = tile_size - overlap."
        )
    if stride is None:
        ov = _pair(overlap, "overlap") if overlap is not None else (tile[0] // 8, tile[1] // 8)
        steps = (tile[0] - ov[0], tile[1] - ov[1])
    else:
        steps = _pair(stride, "stride")
    for t, s, axis in zip(tile, steps, ("height", "width"), strict=True):
        if not 0 < s <= t:
            raise ValueError(
                f"The stride along {axis} is {s} for a tile of {t}: it must lie in [1, {t}] "
                f"(overlap in [0, {t - 1}])."
            )
    return tile, steps


def _axis_offsets(n: int, tile: int, stride: int) -> tuple[int, ...]:
    if n <= tile:  # one tile, the scene in its middle
        return (-((tile - n) // 2),)
    pad = (tile - stride) // 2
    extent = max(n + 2 * pad, tile)
    start = -((extent - n) // 2)
    if extent == tile:
        return (start,)
    # As few tiles as the stride allows, spread evenly (integer steps of stride or one less)
    # from the padded start to the padded end, so no pair of tiles overlaps much more.
    steps = math.ceil((extent - tile) / stride)
    return tuple(start + (i * (extent - tile)) // steps for i in range(steps + 1))


def plan_tiles(
    height: int,
    width: int,
    tile_size: int | tuple[int, int],
    overlap: int | tuple[int, int] | None = None,
    stride: int | tuple[int, int] | None = None,
) -> TileGrid:
    """Plan overlapping tiles over a ``height`` x ``width`` scene.

    Args:
        height: Scene height in pixels.
        width: Scene width in pixels.
        tile_size: Tile side, or ``(height, width)``.
        overlap: Pixels shared by neighbouring tiles; default ``tile_size // 8``.
        stride: Step between tiles; give overlap or stride, not both.

    Returns:
        The plan; scenes smaller than a tile get one tile per small axis.
    """
    if height < 1 or width < 1:
        raise ValueError(f"Cannot tile an empty scene of {height} x {width} pixels.")
    tile, steps = resolve_tile_args(tile_size, overlap, stride)
    return TileGrid(
        height=height,
        width=width,
        tile_size=tile,
        stride=steps,
        row_offsets=_axis_offsets(height, tile[0], steps[0]),
        col_offsets=_axis_offsets(width, tile[1], steps[1]),
    )


def blend_window(size: int, kind: WindowKind = "hann", margin: int = 0) -> np.ndarray:
    """One axis of the separable blend window.

    Args:
        size: Tile side in pixels.
        kind: ``"hann"``: a raised cosine sampled at pixel centres, highest in the middle and
            small but never zero at the borders, so overlaps fade smoothly and no seam shows;
            ``"uniform"``: equal weights (plain averaging of overlaps).
        margin: Pixels at each end whose weight is (almost) zero, 1e-6: a tile's outputs there
            count only where no tile's inside covers the pixel (TerraTorch's ``delta``, which
            crops them).

    Returns:
        ``(size,)`` float32 weights in ``(0, 1]``.
    """
    if not 0 <= margin < (size + 1) // 2:
        raise ValueError(
            f"margin={margin} must lie in [0, {(size + 1) // 2 - 1}] for tiles of {size} pixels: "
            "each tile must keep an inside."
        )
    if kind == "uniform":
        window = np.ones(size, dtype=np.float32)
    elif kind == "hann":
        x = (np.arange(size, dtype=np.float64) + 0.5) / size
        hann = np.sin(np.pi * x) ** 2
        window = (_WINDOW_FLOOR + (1 - _WINDOW_FLOOR) * hann).astype(np.float32)
    else:
        raise ValueError(f"Unknown blend window kind={kind!r}; choose 'hann' or 'uniform'.")
    if margin:
        window[:margin] = window[-margin:] = _MARGIN_WEIGHT
    return window


def _axis_weight_sum(
    offsets: tuple[int, ...], tile: int, n: int, kind: WindowKind, margin: int = 0
) -> np.ndarray:
    window = blend_window(tile, kind, margin)
    total = np.zeros(n, dtype=np.float32)
    for offset in offsets:  # fixed order: the sums are bitwise reproducible
        lo, hi = max(offset, 0), min(offset + tile, n)
        total[lo:hi] += window[lo - offset : hi - offset]
    return total


def reflect_indices(start: int, length: int, n: int) -> np.ndarray:
    """Source indices of ``length`` positions from ``start`` along an axis of ``n`` pixels.

    Positions outside ``[0, n)`` are reflected about the edge pixels (as
    ``numpy.pad(mode="reflect")``, repeatedly when the padding exceeds the axis).

    Returns:
        ``(length,)`` int64 indices in ``[0, n)``.
    """
    idx = np.arange(start, start + length, dtype=np.int64)
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= n, period - idx, idx)


def blend_weights(
    tile_size: tuple[int, int], kind: WindowKind = "hann", margin: int = 0
) -> np.ndarray:
    """The 2-D blend weights of one tile: the outer product of the two axis windows.

    Args:
        tile_size: ``(tile_h, tile_w)``.
        kind: The window's kind (see :func:`blend_window`).
        margin: Pixels of each edge weighted (almost) zero (see :func:`blend_window`).

    Returns:
        ``(tile_h, tile_w)`` float32 weights.
    """
    rows = blend_window(tile_size[0], kind, margin)
    cols = blend_window(tile_size[1], kind, margin)
    return rows[:, None] * cols[None, :]
