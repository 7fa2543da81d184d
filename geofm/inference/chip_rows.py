"""Where chip embeddings go: GeoParquet rows per chip and per patch, a GeoTIFF grid per chip.

Shared by :func:`~geofm.inference.embedding.embed_chips` and the Lightning writer of
``geofm predict`` (:class:`~geofm.inference.embedding_writer.EmbeddingPredictionWriter`).

A GeoParquet geometry column holds one CRS, so rows are kept apart by CRS: with one CRS the
files are ``<name>.parquet`` and ``patches.parquet``; with several, one of each per CRS,
``<name>_EPSG_<code>.parquet`` (footprints stay exact: nothing is reprojected).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from geofm.inference.geoparquet import GeoParquetWriter, footprints

__all__ = ["ChipRows", "crs_tag", "patch_valid", "write_grid"]

log = logging.getLogger(__name__)


def crs_tag(crs: Any) -> str:
    """A file-name tag of a CRS: ``EPSG_<code>``, or a short digest of its WKT."""
    if crs is None:
        return "no_crs"
    epsg = crs.to_epsg() if hasattr(crs, "to_epsg") else None
    if epsg:
        return f"EPSG_{epsg}"
    return "crs_" + hashlib.blake2b(str(crs).encode(), digest_size=4).hexdigest()


def patch_valid(
    valid: np.ndarray | None, shape: tuple[int, int], patch: tuple[int, int]
) -> np.ndarray:
    """``(h, w)`` bool: patches of an ``(H, W)`` valid-pixel mask with one valid pixel or more
    (all patches when ``valid`` is ``None``); pixels past the mask count as invalid."""
    h, w = shape
    if valid is None:
        return np.ones((h, w), dtype=bool)
    full = np.zeros((h * patch[0], w * patch[1]), dtype=bool)
    rows, cols = min(valid.shape[0], full.shape[0]), min(valid.shape[1], full.shape[1])
    full[:rows, :cols] = valid[:rows, :cols]
    return full.reshape(h, patch[0], w, patch[1]).any(axis=(1, 3))


def write_grid(
    path: Path,
    values: np.ndarray,
    crs: Any,
    transform: Any,
    patch: tuple[int, int],
    fingerprint: dict[str, Any],
) -> Path:
    """A ``(D, h, w)`` float32 grid as a GeoTIFF on the patch grid (``transform`` scaled by
    ``patch``), NaN as nodata, under a temporary name renamed when complete."""
    from geofm.inference.writer import GeoTiffSink, geotiff_profile

    count, height, width = values.shape
    block = 16 * -(-min(height, width, 256) // 16)  # GeoTIFF blocks are multiples of 16
    profile = geotiff_profile(
        width, height, count, np.dtype("float32"), crs,
        transform @ transform.scale(patch[1], patch[0]), float("nan"), block=block,
    )
    # Not exclusive: written whole, by one process; an interruption leaves nothing.
    sink = GeoTiffSink(path, width, height, fingerprint=fingerprint, exclusive=False)
    sink.open(profile)
    try:
        sink.write(0, values.astype(np.float32))
        return sink.finish()
    finally:
        sink.close()


class ChipRows:
    """Rows and grids of embedded chips, written as they come; renamed into place on finish.

    Args:
        output_dir: The folder of the outputs.
        pooled: Write one row per chip (``<name>.parquet``).
        grid: Write each chip's grid (``<chip>_emb.tif``) and one row per valid patch
            (``<patches>.parquet``).
        name: Stem of the per-chip file(s).
        patches: Stem of the per-patch file(s).
        fingerprint: Settings stored in every file (for resume).
    """

    def __init__(
        self,
        output_dir: str | Path,
        pooled: bool,
        grid: bool,
        name: str = "embeddings",
        patches: str = "patches",
        fingerprint: dict[str, Any] | None = None,
    ):
        self.output_dir = Path(output_dir)
        self.pooled, self.grid = pooled, grid
        self.names = {"pooled": name, "patches": patches}
        self.fingerprint = fingerprint or {}
        self._writers: dict[tuple[str, str], GeoParquetWriter] = {}
        self._grids: list[Path] = []
        self._stems: set[str] = set()
        #: Pixels per grid cell ``(p_h, p_w)``, the model's stride (see
        #: :func:`~geofm.inference.embedding.feature_stride`); ``None``: each chip's size over
        #: its grid's.
        self.stride: tuple[int, int] | None = None

    @staticmethod
    def file_name(stem: str, tags: Iterable[str], tag: str) -> str:
        """``<stem>.parquet`` when ``tags`` holds one CRS, else ``<stem>_<tag>.parquet``."""
        return f"{stem}.parquet" if len(set(tags)) == 1 else f"{stem}_{tag}.parquet"

    def _writer(self, kind: str, crs: Any, dim: int) -> GeoParquetWriter:
        tag = crs_tag(crs)
        writer = self._writers.get((kind, tag))
        if writer is None:
            path = self.output_dir / f"{self.names[kind]}_{tag}.parquet"  # renamed in finish
            writer = GeoParquetWriter(
                path, crs, dim, grid_columns=kind == "patches", fingerprint=self.fingerprint
            )
            self._writers[(kind, tag)] = writer
        return writer

    def add(
        self,
        source: str | Path,
        crs: Any,
        transform: Any,
        height: int,
        width: int,
        pooled: np.ndarray | None = None,
        grid: np.ndarray | None = None,
        valid: np.ndarray | None = None,
        date: dt.date | None = None,
    ) -> None:
        """One chip.

        Args:
            source: Its file.
            crs: Its CRS (rasterio ``CRS``).
            transform: Its affine transform.
            height: Its height in pixels.
            width: Its width in pixels.
            pooled: ``(D,)`` vector (with ``pooled``).
            grid: ``(D, h, w)`` grid (with ``grid``).
            valid: ``(height, width)`` bool valid pixels, ``None``: all valid.
            date: Its acquisition date.

        Raises:
            ValueError: two chips of one name (their grid files would collide).
        """
        stem = Path(source).stem
        if self.pooled and pooled is not None:
            geometry = footprints(transform, [0], [0], [height], [width])
            writer = self._writer("pooled", crs, pooled.shape[0])
            writer.write(geometry, pooled[None], str(source), date)
        if not (self.grid and grid is not None):
            return
        if stem in self._stems:
            raise ValueError(
                f"Two chips are named '{stem}': their grids {stem}_emb.tif would collide."
            )
        self._stems.add(stem)
        values = np.array(grid, dtype=np.float32)
        cells = values.shape[1:]
        patch = self.stride or (height // cells[0], width // cells[1])
        if (cells[0] * patch[0], cells[1] * patch[1]) != (height, width):
            # A footprint per patch needs the chip to be whole cells of the model's stride.
            raise ValueError(
                f"'{source}' ({height} x {width} pixels) gives a {cells[0]} x {cells[1]} "
                f"feature grid of {patch[0]} x {patch[1]}-pixel cells, which does not cover it: "
                "grid output needs chip sides that are multiples of the model's patch size "
                "(stride); crop or pad the chips, or use output 'pooled'."
            )
        ok = patch_valid(valid, values.shape[1:], patch)
        values[:, ~ok] = np.nan
        target = self.output_dir / f"{stem}_emb.tif"
        self._grids.append(write_grid(target, values, crs, transform, patch, self.fingerprint))
        rows, cols = np.nonzero(ok)
        cells = transform @ transform.scale(patch[1], patch[0])
        self._writer("patches", crs, values.shape[0]).write(
            footprints(cells, rows, cols, np.ones_like(rows), np.ones_like(cols)),
            values[:, rows, cols].T, str(source), date, rows, cols,
        )

    def finish(self) -> list[Path]:
        """Name the GeoParquet files by the CRSs seen, close and rename them; all outputs."""
        written = list(self._grids)
        for kind in ("pooled", "patches"):
            tags = [tag for k, tag in self._writers if k == kind]
            for tag in tags:
                writer = self._writers.pop((kind, tag))
                writer.path = self.output_dir / self.file_name(self.names[kind], tags, tag)
                written.append(writer.finish())
        return written

    def close(self) -> None:
        """Abandon the GeoParquet files not finished (their temporary files are removed)."""
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
