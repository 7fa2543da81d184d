"""Windowed, reflect-padded tile reads from a raster, on background threads.

rasterio dataset handles are not thread-safe, so each reader thread opens its own. Tiles are
routed to threads by column strip: each thread reads a contiguous strip of the scene, so the
blocks that vertically neighbouring tiles share are found in GDAL's block cache of that
thread's handle instead of being decompressed again.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import MaskFlags
from rasterio.windows import Window

from geofm.data.raster import count_nonfinite, raster_read_error
from geofm.inference.tiling import Tile, TileGrid, reflect_indices

__all__ = ["RasterTileSource", "TileData"]

log = logging.getLogger(__name__)


@dataclass
class TileData:
    """What a reader returns for one tile.

    Attributes:
        tile: The planned tile.
        image: ``(C, tile_h, tile_w)`` float32 raw values (NaN at nodata), reflect-padded
            outside the scene.
        valid: ``(h, w)`` bool, True where any selected band holds finite, unmasked data,
            over the part of the tile inside the scene; ``None`` when the raster has no
            nodata, no mask and integer bands (every pixel is valid).
        nonfinite: Pixels of the tile's own region (see
            :meth:`RasterTileSource.set_grid`) where a selected band is NaN or ±inf in the
            file; ``infinite``: those with ±inf; ``counted``: pixels of that region.
    """

    tile: Tile
    image: np.ndarray
    valid: np.ndarray | None
    nonfinite: int = 0
    infinite: int = 0
    counted: int = 0


class RasterTileSource:
    """Reads planned tiles of one raster, optionally on ``num_workers`` background threads.

    Args:
        path: Any raster rasterio opens (GeoTIFF, VRT...).
        bands: 1-based band indexes to read, in this order; all bands by default.
        num_workers: Reader threads; 0 reads in the calling thread.
        gdal_cache_mb: GDAL block cache, in MB, set while the reader threads run. ``None``
            sizes it to hold ``cache_rows`` full-width rows plus one row of blocks (at least
            16 MB), so that the blocks that tiles of neighbouring grid rows share are mostly
            decompressed once. GDAL's own default, 5 % of the machine's memory, would fill up
            on a large scene with blocks that are never read again.
        cache_rows: Rows of the scene the automatic cache holds (the tile height).
        nodata: A raw value read as nodata (NaN) in every band, besides each band's own
            nodata value, mask and non-finite values.

    Attributes:
        height: Scene height in pixels.
        width: Scene width in pixels.
        bands: The band indexes read.
        profile: The raster's rasterio profile.
        has_mask: Whether tiles come with valid masks: a selected band has nodata, a mask,
            an alpha band, or floating-point values (NaN and ±inf are nodata even in a file
            that declares no nodata value), or ``nodata`` is given.
    """

    def __init__(
        self,
        path: str | Path,
        bands: list[int] | None = None,
        num_workers: int = 2,
        gdal_cache_mb: int | None = None,
        cache_rows: int = 512,
        nodata: float | None = None,
    ):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"Input raster '{self.path}' does not exist.")
        if num_workers < 0:
            raise ValueError(f"num_workers={num_workers} must be 0 or more.")
        try:
            src = rasterio.open(self.path)
        except Exception as err:  # a file that is not a raster, or a truncated header
            raise raster_read_error(self.path, err, window="the header") from err
        with src:
            self.height, self.width, count = src.height, src.width, src.count
            self.profile: dict[str, Any] = dict(src.profile)
            self.crs, self.transform = src.crs, src.transform
            flags = src.mask_flag_enums
            self.profile["dtypes"] = list(src.dtypes)
            block_rows = src.block_shapes[0][0]
            pixel_bytes = sum(np.dtype(d).itemsize for d in src.dtypes)
            nodatavals = src.nodatavals
        self.bands = list(bands) if bands is not None else list(range(1, count + 1))
        bad = [b for b in self.bands if not (isinstance(b, int) and 1 <= b <= count)]
        if bad or not self.bands:
            raise ValueError(
                f"bands={bands!r}: {self.path} has {count} bands; give 1-based indexes in "
                f"[1, {count}] (rasterio convention)."
            )
        dtypes = [np.dtype(d) for d in self.profile.get("dtypes", [])] or [
            np.dtype(self.profile["dtype"])
        ] * count
        self.floating = any(dtypes[b - 1].kind in "fc" for b in self.bands)
        self._masked = any(flags[b - 1] != [MaskFlags.all_valid] for b in self.bands)
        self.extra_nodata = None if nodata is None else float(np.float32(nodata))
        if self.extra_nodata is not None and np.isnan(self.extra_nodata):
            self.extra_nodata = None  # NaN is nodata already
        self.has_mask = self._masked or self.floating or self.extra_nodata is not None
        self._owned: tuple[list[int], list[int]] | None = None
        # With plain nodata values, the mask follows from the data already read; dataset masks
        # and alpha bands need GDAL's mask reads.
        self._nodata: list[float] | None = None
        if all(flags[b - 1] == [MaskFlags.nodata] for b in self.bands):
            self._nodata = [float(np.float32(nodatavals[b - 1])) for b in self.bands]
        self.num_workers = num_workers
        if gdal_cache_mb is None:
            rows = min(cache_rows + block_rows, self.height)
            cache_bytes = max(rows * self.width * pixel_bytes, 16 << 20)
        else:
            cache_bytes = int(gdal_cache_mb) << 20
        self.cache_bytes = cache_bytes
        # rasterio hands an int GDAL_CACHEMAX to GDALSetCacheMax64: bytes.
        self._env_options = {"GDAL_CACHEMAX": cache_bytes}
        self._local = threading.local()
        self._lock = threading.Lock()
        self._opened: list[tuple[Any, Any]] = []  # (env, dataset) per thread, for close()
        self._pools = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"geofm-reader-{i}")
            for i in range(num_workers)
        ]

    def __enter__(self) -> RasterTileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _dataset(self) -> Any:
        dataset = getattr(self._local, "dataset", None)
        if dataset is None:
            env = rasterio.Env(**self._env_options)
            env.__enter__()
            dataset = rasterio.open(self.path)
            self._local.dataset = dataset
            with self._lock:
                self._opened.append((env, dataset))
        return dataset

    def set_grid(self, grid: TileGrid) -> None:
        """Count non-finite pixels per tile over a partition of the scene into the tiles of
        ``grid`` (the rows and columns from a tile's start to the next tile's), so that
        overlapping tiles count each pixel once."""

        def bounds(offsets: tuple[int, ...], size: int) -> list[int]:
            return [0, *(min(max(o, 0), size) for o in offsets[1:]), size]

        self._owned = (bounds(grid.row_offsets, self.height), bounds(grid.col_offsets, self.width))

    def _window_read(self, src: Any, window: Window, masks: bool = False) -> np.ndarray:
        try:
            if masks:
                return src.read_masks(self.bands, window=window)
            return src.read(self.bands, window=window, out_dtype="float32")
        except Exception as err:  # rasterio and GDAL (CPLE_*) raise unrelated types
            where = (
                f"rows {window.row_off}-{window.row_off + window.height}, columns "
                f"{window.col_off}-{window.col_off + window.width}"
                + (" (mask)" if masks else "")
            )
            raise raster_read_error(self.path, err, self.bands, where) from err

    def read(self, tile: Tile) -> TileData:
        """Read ``tile`` now, in the calling thread (with that thread's own handle).

        Raises:
            RasterError: GDAL cannot read the window (a truncated or corrupt file); names
                the file, bands and window.
        """
        src = self._dataset()
        rows = reflect_indices(tile.row, tile.height, self.height)
        cols = reflect_indices(tile.col, tile.width, self.width)
        r_lo, c_lo = int(rows.min()), int(cols.min())
        window = Window(c_lo, r_lo, int(cols.max()) + 1 - c_lo, int(rows.max()) + 1 - r_lo)
        data = self._window_read(src, window)
        nonfinite = infinite = counted = 0
        if self.floating and self._owned is not None:
            row_bounds, col_bounds = self._owned
            o_r0, o_r1 = row_bounds[tile.grid_row], row_bounds[tile.grid_row + 1]
            o_c0, o_c1 = col_bounds[tile.grid_col], col_bounds[tile.grid_col + 1]
            # Still unpadded: window rows and columns are scene rows and columns.
            own = data[:, o_r0 - r_lo : o_r1 - r_lo, o_c0 - c_lo : o_c1 - c_lo]
            nonfinite, infinite = count_nonfinite(own)
            counted = own.shape[1] * own.shape[2]
        # Reflection repeats indices, so a window as large as the tile means no padding.
        if window.height != tile.height:
            data = data[:, rows - r_lo]
        if window.width != tile.width:
            data = np.ascontiguousarray(data[:, :, cols - c_lo])
        if self._nodata is not None:
            # Nodata as NaN, as the datasets read it: the Preprocess fills both alike.
            for band, nodata in zip(data, self._nodata, strict=True):
                if not np.isnan(nodata):
                    band[band == nodata] = np.nan
        if self.extra_nodata is not None:
            data[data == self.extra_nodata] = np.nan
        valid = None
        if self.has_mask:
            r0, r1, c0, c1 = tile.inside(self.height, self.width)
            # A band holds data where it is finite (nodata values are NaN by now) and, with a
            # dataset mask or alpha band, unmasked; the pixel is valid where any band does.
            inside = data[:, r0 - tile.row : r1 - tile.row, c0 - tile.col : c1 - tile.col]
            finite = np.isfinite(inside)
            if self._masked and self._nodata is None:
                masks = self._window_read(src, Window(c0, r0, c1 - c0, r1 - r0), masks=True)
                finite &= masks > 0
            valid = finite.any(axis=0)
        return TileData(tile, data, valid, nonfinite, infinite, counted)

    def submit(self, tile: Tile, grid_cols: int) -> Future[TileData]:
        """Queue ``tile`` on the thread that owns its column strip (or read it now)."""
        if not self._pools:
            future: Future[TileData] = Future()
            future.set_result(self.read(tile))
            return future
        worker = min(tile.grid_col * len(self._pools) // max(grid_cols, 1), len(self._pools) - 1)
        return self._pools[worker].submit(self.read, tile)

    def batches(
        self, tiles: Sequence[Tile], grid_cols: int, batch_size: int, start: int = 0
    ) -> Iterator[list[TileData]]:
        """``tiles[start:]`` read in order, ``batch_size`` at a time (the last batch shorter).

        Reads are queued a few batches ahead on the reader threads, so a model consuming one
        batch never waits on I/O for the next. Reads still queued when the caller stops (an
        error, or ``close()`` on the iterator) are cancelled.
        """
        # Enough reads in flight to fill the next batch while the model runs this one.
        prefetch = batch_size + 2 * max(self.num_workers, 1)
        pending: deque[Future[TileData]] = deque()
        next_submit, batch = start, []
        try:
            for index in range(start, len(tiles)):
                while next_submit < len(tiles) and len(pending) < prefetch:
                    pending.append(self.submit(tiles[next_submit], grid_cols))
                    next_submit += 1
                batch.append(pending.popleft().result())
                if len(batch) == batch_size or index == len(tiles) - 1:
                    yield batch
                    batch = []
        finally:
            for future in pending:
                future.cancel()

    def _close_local(self) -> None:
        dataset = getattr(self._local, "dataset", None)
        if dataset is None:
            return
        self._local.dataset = None
        with self._lock:
            env = next(e for e, d in self._opened if d is dataset)
            self._opened = [(e, d) for e, d in self._opened if d is not dataset]
        dataset.close()
        env.__exit__()

    def close(self) -> None:
        """Close every thread's handle (each in its own thread) and stop the threads."""
        for pool in self._pools:
            pool.submit(self._close_local)
            pool.shutdown(wait=True, cancel_futures=False)
        self._pools = []
        self._close_local()
