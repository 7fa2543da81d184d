"""Blending of weighted tiles, streamed: sums over a sliding window, finished rows out.

Tiles arrive in row-major plan order; :class:`BandBlender` sums them and hands over each grid
row's finished rows as output values (:class:`OutputConverter`: divided by the summed
weights, then argmax or values, nodata applied). It holds a tile-sized window, the overlap
rows carried to the next grid row and one grid row of output values: about
``K * 4 * (overlap_rows * width + tile_h * tile_w) + stride_rows * width * itemsize`` bytes.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from geofm.inference.tiling import Tile, TileGrid, WindowKind

__all__ = ["BandBlender", "OutputConverter", "OutputKind", "output_type"]

OutputKind = Literal["class", "probabilities", "regression"]

# Columns are converted in chunks of about this many floats, to bound temporaries.
_CHUNK_FLOATS = 1 << 22


def output_type(
    kind: OutputKind, channels: int, nodata: float | int | None = None
) -> tuple[np.dtype, float | int, int]:
    """The output's dtype, nodata value and band count for ``channels`` model outputs.

    Class maps are uint8 (nodata 255) up to 255 classes, int16 (nodata -1) beyond;
    probabilities and regression values are float32 (nodata NaN).
    """
    if kind == "regression" and channels != 1:
        raise ValueError(
            f"output='regression' needs a model with one output channel; this one gives "
            f"{channels}. Use output='probabilities' to keep several channels."
        )
    if kind != "class":
        return np.dtype("float32"), (float("nan") if nodata is None else nodata), channels
    classes = max(channels, 2)  # one sigmoid channel: classes 0 and 1
    if classes > np.iinfo(np.int16).max:
        raise ValueError(
            f"output='class' supports up to 32767 classes; the model gives {channels}."
        )
    dtype = np.dtype("uint8") if classes <= 255 else np.dtype("int16")
    default = 255 if dtype == np.uint8 else -1
    return dtype, (default if nodata is None else nodata), 1


class OutputConverter:
    """Turns summed weighted outputs into output values.

    Args:
        grid: The tile plan (gives the summed weights).
        window: The blend window used for the sums.
        kind: ``"class"`` (argmax; ``>= 0.5`` for one channel), ``"probabilities"`` or
            ``"regression"`` (the blended values).
        dtype: Output dtype (see :func:`output_type`).
        nodata: Written where the input holds no data.
    """

    def __init__(
        self,
        grid: TileGrid,
        window: WindowKind,
        kind: OutputKind,
        dtype: np.dtype,
        nodata: float | int,
    ):
        self.row_sums, self.col_sums = grid.weight_sums(window)
        self.kind, self.dtype, self.nodata = kind, dtype, nodata

    def __call__(self, acc: np.ndarray, valid: np.ndarray | None, row: int, col: int) -> np.ndarray:
        """Convert sums ``acc`` ``(K, h, w)`` at scene offset ``(row, col)``.

        Returns:
            ``(1, h, w)`` class map or ``(K, h, w)`` values, in the output dtype.
        """
        height, width = acc.shape[1:]
        total = self.row_sums[row : row + height, None] * self.col_sums[None, col : col + width]
        values = torch.from_numpy(acc) / torch.from_numpy(total)
        if self.kind == "class":
            if values.shape[0] == 1:
                out = (values[0] >= 0.5).numpy().astype(self.dtype)[None]
            else:
                # The index of the first maximum, like argmax; over the leading axis, max() is
                # several times faster than numpy's or torch's argmax.
                out = values.max(dim=0).indices.numpy().astype(self.dtype)[None]
        else:
            out = values.numpy().astype(self.dtype, copy=False)
        if valid is not None:
            out[:, ~valid] = self.nodata
        return out


class BandBlender:
    """Sums weighted tiles, arriving in row-major plan order, and emits finished rows.

    Within a grid row of tiles, the sums live in a window one tile wide that slides right:
    after each tile, the columns left of the next tile are complete. Their rows above the next
    grid row are final and converted to output values; their rows below (the overlap with the
    next grid row) are carried, full width, into the next grid row, where they seed the sums.
    Every pixel thus sums its tiles in plan order, exactly like
    :func:`~geofm.inference.in_memory.tiled_forward`. Memory: a tile-sized window, the carried
    overlap rows and one grid row of output values, never the scene.

    Args:
        grid: The plan the tiles come from.
        channels: Model output channels ``K``.
        convert: Turns sums into output values.
        count: Bands of the output.
        dtype: Output dtype.
        masked: Whether tiles come with valid-data masks.
        top: First scene row to emit; rows above were written before (resume).
    """

    def __init__(
        self,
        grid: TileGrid,
        channels: int,
        convert: OutputConverter,
        count: int,
        dtype: np.dtype,
        masked: bool,
        top: int = 0,
    ):
        self.grid, self.convert = grid, convert
        self.channels, self.count, self.dtype, self.masked = channels, count, dtype, masked
        self.height, self.width = grid.height, grid.width
        self.top = top
        self.carry = np.zeros((channels, 0, self.width), np.float32)  # rows [top, top + n)
        self.valid = np.zeros((0, self.width), bool) if masked else None
        self._row: int | None = None  # grid row in progress
        self._col = 0  # next grid column expected

    def _start_row(self, grid_row: int) -> None:
        th, tw = self.grid.tile_size
        self._row, self._col = grid_row, 0
        self._bottom = min(self.grid.row_offsets[grid_row] + th, self.height)
        self._final = self.grid.final_rows(grid_row)
        rows = max(self._bottom - self.top, 0)
        self._origin = 0  # scene column of the window's first column
        self._emitted = 0  # columns [0, _emitted) are done for this grid row
        self._window = np.zeros((self.channels, rows, min(tw, self.width)), np.float32)
        self._seed(0, self._window.shape[2])
        self._out = np.empty((self.count, max(self._final - self.top, 0), self.width), self.dtype)
        kept = max(self._bottom - max(self._final, self.top), 0)
        self._next_carry = np.zeros((self.channels, kept, self.width), np.float32)
        if self.valid is not None:
            grown = np.zeros((rows, self.width), bool)
            grown[: self.valid.shape[0]] = self.valid
            self.valid = grown

    def _seed(self, lo: int, hi: int) -> None:
        """Fill window columns ``[lo, hi)`` with the sums carried from earlier grid rows."""
        n = self.carry.shape[1]
        cols = slice(self._origin + lo, self._origin + hi)
        self._window[:, :n, lo:hi] = self.carry[:, :, cols]
        self._window[:, n:, lo:hi] = 0

    def add(
        self, tile: Tile, weighted: np.ndarray, valid: np.ndarray | None
    ) -> tuple[int, np.ndarray] | None:
        """Add one weighted tile ``(K, tile_h, tile_w)`` and its valid mask (inside part).

        Returns:
            ``(row, data)`` when the tile completes its grid row: ``data`` ``(count, h,
            width)`` holds the output values of rows ``[row, row + h)``; else ``None``.
        """
        if self._row is None:
            self._start_row(tile.grid_row)
        if (tile.grid_row, tile.grid_col) != (self._row, self._col):
            raise RuntimeError(
                f"Tile {tile.index} (grid row {tile.grid_row}, column {tile.grid_col}) came "
                f"instead of grid row {self._row}, column {self._col}; tiles must come in "
                "row-major plan order."
            )
        self._col += 1
        r0, r1, c0, c1 = tile.inside(self.height, self.width)
        lo = max(r0, self.top)
        if lo < r1:
            window = self._window[:, lo - self.top : r1 - self.top]
            window[:, :, c0 - self._origin : c1 - self._origin] += weighted[
                :, lo - tile.row : r1 - tile.row, c0 - tile.col : c1 - tile.col
            ]
            if self.valid is not None and valid is not None:
                # Every tile sees the same mask at a pixel: assigning is enough.
                self.valid[lo - self.top : r1 - self.top, c0:c1] = valid[lo - r0 :]
        last = tile.grid_col == len(self.grid.col_offsets) - 1
        done = (
            self.width
            if last
            else min(max(self.grid.col_offsets[tile.grid_col + 1], 0), self.width)
        )
        self._complete_columns(done)
        return self._finish_row() if last else None

    def _complete_columns(self, stop: int) -> None:
        """Columns ``[_emitted, stop)`` get no more tiles in this grid row: convert or carry."""
        start = self._emitted
        if stop <= start:
            return
        lo, hi = start - self._origin, stop - self._origin
        final = self._out.shape[1]
        if final:
            valid = None if self.valid is None else self.valid[:final, start:stop]
            self._out[:, :, start:stop] = self.convert(
                self._window[:, :final, lo:hi], valid, self.top, start
            )
        self._next_carry[:, :, start:stop] = self._window[:, final:, lo:hi]
        self._emitted = stop
        # Slide the window so that it starts at the next tile's first column.
        shift = stop - self._origin
        width = self._window.shape[2]
        keep = max(width - shift, 0)
        self._window[:, :, :keep] = self._window[:, :, shift:].copy()
        self._origin = stop
        self._seed(keep, min(width, self.width - self._origin))

    def _finish_row(self) -> tuple[int, np.ndarray] | None:
        final = self._out.shape[1]
        row, out = self.top, self._out
        self.carry = self._next_carry
        self.top += final
        if self.valid is not None:
            self.valid = self.valid[final:].copy()
        self._row = None
        return (row, out) if final else None
