"""GeoParquet files of embeddings, written in row groups under a temporary name.

One row per chip, tile or patch: ``geometry`` (its footprint polygon, WKB, in the raster's
CRS, recorded as PROJJSON in the ``geo`` metadata of GeoParquet 1.1), ``embedding`` (a
fixed-size list of float32), ``source`` (the input file), ``date`` (the acquisition date found
in the file name or tags, null when none) and, for tiles and patches, ``row`` and ``col``.

Rows are appended a batch at a time (memory holds one batch), to a hidden temporary file
beside the output that is renamed once complete; a file that was not finished never appears
under the output's name. The writing settings (``fingerprint``) are stored in the file's
metadata, so that a resumed run can tell a finished output made with the same settings.

pyarrow, shapely and pyproj come with ``pip install 'geofm[vector]'``; they are imported
when a file is written, never by ``import geofm``.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geofm.registry.errors import import_optional

__all__ = [
    "FINGERPRINT_KEY",
    "GeoParquetWriter",
    "footprints",
    "read_fingerprint",
    "vector_modules",
]

log = logging.getLogger(__name__)

#: Parquet metadata key holding the settings that produced a finished file.
FINGERPRINT_KEY = b"geofm_fingerprint"


def vector_modules() -> tuple[Any, Any, Any]:
    """``(pyarrow, pyarrow.parquet, shapely)``, or an error naming the extra to install."""
    return import_optional(
        "Writing GeoParquet", "vector", "pyarrow", "pyarrow.parquet", "shapely"
    )


def _projjson(crs: Any) -> dict[str, Any] | None:
    """A CRS (rasterio, WKT, EPSG string) as PROJJSON, as GeoParquet records it."""
    if crs is None:
        return None
    (pyproj,) = import_optional("Writing GeoParquet", "vector", "pyproj")
    text = crs.to_wkt() if hasattr(crs, "to_wkt") else crs
    return pyproj.CRS.from_user_input(text).to_json_dict()


def footprints(
    transform: Sequence[float],
    rows: np.ndarray,
    cols: np.ndarray,
    heights: np.ndarray,
    widths: np.ndarray,
) -> np.ndarray:
    """WKB polygons of pixel windows in a raster's CRS (exact for rotated transforms too).

    Args:
        transform: The raster's affine transform (``a, b, c, d, e, f``).
        rows: ``(N,)`` top rows of the windows.
        cols: ``(N,)`` left columns.
        heights: ``(N,)`` window heights in pixels.
        widths: ``(N,)`` window widths in pixels.

    Returns:
        ``(N,)`` object array of WKB bytes.
    """
    _, _, shapely = vector_modules()
    a, b, c, d, e, f = (float(v) for v in tuple(transform)[:6])
    r0 = np.asarray(rows, dtype=np.float64)
    c0 = np.asarray(cols, dtype=np.float64)
    r1, c1 = r0 + np.asarray(heights), c0 + np.asarray(widths)
    # Ring: top-left, top-right, bottom-right, bottom-left, closed.
    ring_cols = np.stack([c0, c1, c1, c0, c0], axis=1)
    ring_rows = np.stack([r0, r0, r1, r1, r0], axis=1)
    xy = np.stack([a * ring_cols + b * ring_rows + c, d * ring_cols + e * ring_rows + f], axis=2)
    return shapely.to_wkb(shapely.polygons(xy))


class GeoParquetWriter:
    """Append rows of embeddings to a GeoParquet file; rename it into place when finished.

    Args:
        path: The output file.
        crs: The geometries' CRS (rasterio ``CRS``, WKT or ``"EPSG:..."``); ``None``: unknown.
        dim: Embedding length ``D``.
        grid_columns: Add ``row`` and ``col`` (int32) columns.
        fingerprint: JSON-able settings stored in the file's metadata (see
            :func:`read_fingerprint`).
    """

    def __init__(
        self,
        path: str | Path,
        crs: Any,
        dim: int,
        grid_columns: bool = False,
        fingerprint: dict[str, Any] | None = None,
    ):
        pa, pq, _ = vector_modules()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Unique per process, as GeoTIFF outputs' temporary files.
        token = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.temp = self.path.with_name(f".{self.path.name}.{token}.partial")
        self.dim = int(dim)
        self.grid_columns = grid_columns
        fields = [
            pa.field("geometry", pa.binary()),
            pa.field("embedding", pa.list_(pa.float32(), self.dim)),
            pa.field("source", pa.string()),
            pa.field("date", pa.date32()),
        ]
        if grid_columns:
            fields += [pa.field("row", pa.int32()), pa.field("col", pa.int32())]
        geo = {
            "version": "1.1.0",
            "primary_column": "geometry",
            "columns": {
                "geometry": {
                    "encoding": "WKB",
                    "geometry_types": ["Polygon"],
                    "crs": _projjson(crs),
                }
            },
        }
        metadata = {b"geo": json.dumps(geo).encode()}
        if fingerprint is not None:
            metadata[FINGERPRINT_KEY] = json.dumps(fingerprint, sort_keys=True).encode()
        self.schema = pa.schema(fields, metadata=metadata)
        self._writer = pq.ParquetWriter(self.temp, self.schema, compression="zstd")
        self.rows = 0

    def __enter__(self) -> GeoParquetWriter:
        return self

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.close()

    def write(
        self,
        geometry: np.ndarray,
        embedding: np.ndarray,
        source: str | Sequence[str],
        date: Any = None,
        row: np.ndarray | None = None,
        col: np.ndarray | None = None,
    ) -> None:
        """Append ``N`` rows.

        Args:
            geometry: ``(N,)`` WKB polygons (see :func:`footprints`).
            embedding: ``(N, D)`` vectors (cast to float32).
            source: The input file of every row, or one per row.
            date: A ``datetime.date`` (or ``None``) for every row, or one per row.
            row: ``(N,)`` grid rows (with ``grid_columns``).
            col: ``(N,)`` grid columns (with ``grid_columns``).
        """
        pa, _, _ = vector_modules()
        n = len(geometry)
        vectors = np.ascontiguousarray(embedding, dtype=np.float32)
        if vectors.shape != (n, self.dim):
            raise ValueError(
                f"embedding of shape {vectors.shape} for {n} rows of length {self.dim}."
            )
        if isinstance(source, (str, os.PathLike)):
            sources = [str(source)] * n
        else:
            sources = [str(s) for s in source]
        dates = list(date) if isinstance(date, (list, tuple)) else [date] * n
        columns = [
            pa.array(list(geometry), pa.binary()),
            pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), self.dim),
            pa.array(sources, pa.string()),
            pa.array(dates, pa.date32()),
        ]
        if self.grid_columns:
            if row is None or col is None:
                raise ValueError(f"{self.path.name} has row and col columns: give row and col.")
            columns += [pa.array(np.asarray(row, np.int32)), pa.array(np.asarray(col, np.int32))]
        self._writer.write_table(pa.Table.from_arrays(columns, schema=self.schema))
        self.rows += n

    def append_file(self, part: str | Path) -> None:
        """Append every row of another file of the same schema (a resumable run's part),
        one row group at a time."""
        _, pq, _ = vector_modules()
        reader = pq.ParquetFile(part)
        for index in range(reader.num_row_groups):
            table = reader.read_row_group(index).replace_schema_metadata(self.schema.metadata)
            self._writer.write_table(table)
            self.rows += table.num_rows

    def finish(self) -> Path:
        """Close the file, flush it to disk and rename it to ``path``."""
        self._writer.close()
        with open(self.temp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(self.temp, self.path)
        log.info("Wrote %s (%d rows)", self.path, self.rows)
        return self.path

    def close(self) -> None:
        """Abandon the file: close and remove the temporary file."""
        try:
            self._writer.close()
        finally:
            self.temp.unlink(missing_ok=True)


def read_fingerprint(path: str | Path) -> dict[str, Any] | None:
    """The settings stored in a finished GeoParquet file, or ``None`` (no file, none stored,
    unreadable)."""
    path = Path(path)
    if not path.is_file():
        return None
    _, pq, _ = vector_modules()
    try:
        metadata = pq.read_schema(path).metadata or {}
    except Exception as err:  # a damaged file: not finished
        log.warning("%s does not read as Parquet (%s); making it again.", path, err)
        return None
    value = metadata.get(FINGERPRINT_KEY)
    return json.loads(value) if value is not None else None
