"""Reading GeoTIFF samples with rasterio: only the requested bands, nodata found and replaced.

Images come back as float32, labels in their own dtype; every read returns the pixel grid
(``crs`` as WKT, ``transform`` as a 6-tuple, ``height``, ``width``) so predictions can be
written back on the sample's grid.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from einops import rearrange
from rasterio.errors import RasterioIOError

from geofm.data.band_selection import BandSelection

__all__ = [
    "GridInfo",
    "RasterError",
    "check_band_selection",
    "count_nonfinite",
    "raster_read_error",
    "read_image",
    "read_label",
    "read_grid",
    "report_nonfinite",
]

log = logging.getLogger(__name__)

# Files whose non-finite pixels were reported: one line per file and process, not per epoch.
_REPORTED: set[str] = set()
_REPORTED_LOCK = threading.Lock()


class RasterError(ValueError):
    """A file that cannot be read the way the settings ask (bands, size, values)."""


def raster_read_error(
    path: Path, err: BaseException, bands: list[int] | None = None, window: str | None = None
) -> RasterError:
    """The error for pixels of ``path`` that GDAL cannot read: names the file, bands, window.

    Args:
        path: The raster.
        err: What rasterio or GDAL raised.
        bands: The 1-based bands being read.
        window: The pixels being read, in words (``"rows 0-512, columns 0-512"``).
    """
    where = ", ".join(
        part
        for part in (f"band(s) {bands}" if bands else None, window)
        if part is not None
    )
    reason = str(err)
    if err.__cause__ is not None and "previous exception" in reason:
        reason = str(err.__cause__)  # GDAL's own reason, not rasterio's pointer to it
    return RasterError(
        f"Cannot read {where or 'the pixels'} of '{path}': {reason.rstrip('.')}. The file looks "
        "truncated or "
        "corrupt (an interrupted copy or download?): copy or export it again, or remove it "
        "from the inputs."
    )


def count_nonfinite(raw: np.ndarray) -> tuple[int, int]:
    """Pixels of ``raw`` ``(C, H, W)`` where any band is NaN or ±inf, and of those ±inf."""
    if not np.issubdtype(raw.dtype, np.floating):
        return 0, 0
    nonfinite = int((~np.isfinite(raw)).any(axis=0).sum())
    infinite = int(np.isinf(raw).any(axis=0).sum()) if nonfinite else 0
    return nonfinite, infinite


def report_nonfinite(path: Path | str, nonfinite: int, infinite: int, pixels: int) -> None:
    """Log, once per file and process, how many pixels hold NaN or ±inf (read as nodata).

    ±inf is unusual (a broken band ratio, an overflow): WARNING; NaN alone is a common
    nodata convention: INFO.
    """
    if nonfinite == 0:
        return
    with _REPORTED_LOCK:
        if str(path) in _REPORTED:
            return
        _REPORTED.add(str(path))
    level = logging.WARNING if infinite else logging.INFO
    log.log(
        level,
        "'%s': %d of %d pixels hold NaN or ±inf in a selected band (%d of them ±inf); they "
        "are treated as nodata.",
        path,
        nonfinite,
        pixels,
        infinite,
    )


@dataclass(frozen=True)
class GridInfo:
    """Where a raster lies.

    Attributes:
        crs: The coordinate reference system as WKT, or ``None`` when the file has none.
        transform: The affine pixel-to-CRS transform ``(a, b, c, d, e, f)``.
        height: Rows.
        width: Columns.
        count: Bands in the file.
    """

    crs: str | None
    transform: tuple[float, float, float, float, float, float]
    height: int
    width: int
    count: int

    def as_metadata(self) -> dict[str, object]:
        """The sample keys ``crs``, ``transform``, ``height``, ``width``."""
        return {
            "crs": self.crs,
            "transform": self.transform,
            "height": self.height,
            "width": self.width,
        }


def _open(path: Path) -> rasterio.DatasetReader:
    try:
        return rasterio.open(path)
    except RasterioIOError as err:
        if not path.exists() and "://" not in str(path):
            raise RasterError(f"Cannot read '{path}': it does not exist.") from err
        raise RasterError(
            f"Cannot read '{path}' as a raster: {err}. If it should be one, it looks truncated "
            "or corrupt: copy or export it again, or remove it from the inputs."
        ) from err


def _read(src: rasterio.DatasetReader, path: Path, indexes: list[int] | int) -> np.ndarray:
    try:
        return src.read(indexes)
    except Exception as err:  # rasterio and GDAL (CPLE_*) raise unrelated types
        bands = [indexes] if isinstance(indexes, int) else list(indexes)
        raise raster_read_error(path, err, bands) from err


def _grid(src: rasterio.DatasetReader) -> GridInfo:
    t = src.transform
    return GridInfo(
        crs=src.crs.to_wkt() if src.crs is not None else None,
        transform=(t.a, t.b, t.c, t.d, t.e, t.f),
        height=src.height,
        width=src.width,
        count=src.count,
    )


def read_grid(path: str | Path) -> GridInfo:
    """The grid of ``path`` without reading pixels."""
    with _open(Path(path)) as src:
        return _grid(src)


def _nodata_mask(raw: np.ndarray, nodatavals: list[float | None]) -> np.ndarray:
    """``(C, H, W)`` True where a band holds its nodata value, NaN or ±inf."""
    floating = np.issubdtype(raw.dtype, np.floating)
    mask = ~np.isfinite(raw) if floating else np.zeros(raw.shape, bool)
    for band, nodata in enumerate(nodatavals):
        if nodata is None or np.isnan(nodata):
            continue
        if np.issubdtype(raw.dtype, np.integer):
            info = np.iinfo(raw.dtype)
            if not (info.min <= nodata <= info.max and float(nodata).is_integer()):
                continue  # a nodata value this dtype cannot hold marks no pixel
        # Compare in the file's dtype so float32 nodata like -9999.0 matches exactly.
        mask[band] |= raw[band] == np.asarray(nodata).astype(raw.dtype)
    return mask


def _file_indexes(
    path: Path, count: int, selection: BandSelection, temporal: bool, key: str
) -> tuple[list[int], int]:
    """1-based band numbers to read from a file with ``count`` bands, and the number of frames."""
    per_step = selection.dataset_count
    if temporal:
        if per_step is None:
            raise RasterError(
                "expand_temporal_dimension=True needs dataset_bands (the bands of one time step) "
                "to know how many bands form a frame."
            )
        if count % per_step:
            raise RasterError(
                f"'{path}' has {count} bands, not a multiple of the {per_step} bands per time "
                "step that dataset_bands describes (expand_temporal_dimension=True)."
            )
        frames = count // per_step
    else:
        if per_step is not None and per_step != count:
            raise RasterError(
                f"'{path}' has {count} bands but dataset_bands describes {per_step}; list every "
                "band of the file in dataset_bands (integers or [first, last] ranges for unnamed "
                "ones)."
            )
        frames, per_step = 1, count
    wanted = (
        list(selection.indexes) if selection.indexes is not None else list(range(1, per_step + 1))
    )
    too_far = [i for i in wanted if i > per_step]
    if too_far:
        raise RasterError(
            f"{key} asks for band {too_far[0]} but '{path}' has only {per_step} band(s)"
            + (" per time step." if temporal else ".")
        )
    indexes = [t * per_step + i for t in range(frames) for i in wanted]
    return indexes, frames


def check_band_selection(
    path: str | Path,
    selection: BandSelection,
    *,
    expand_temporal_dimension: bool = False,
    bands_key: str = "output_bands",
) -> GridInfo:
    """Check that ``selection`` fits the bands of ``path``, reading only its header.

    Raises:
        RasterError: The file cannot be opened, its band count differs from what
            ``dataset_bands`` describes, or a band number is beyond its bands.
    """
    path = Path(path)
    with _open(path) as src:
        _file_indexes(path, src.count, selection, expand_temporal_dimension, bands_key)
        return _grid(src)


def read_image(
    path: str | Path,
    selection: BandSelection,
    *,
    expand_temporal_dimension: bool = False,
    bands_key: str = "output_bands",
) -> tuple[np.ndarray, np.ndarray, GridInfo]:
    """Read the selected bands of an image as raw float32 values, nodata as NaN.

    Scaling, nodata filling and normalisation are not done here: the task's
    :class:`~geofm.models.preprocess.Preprocess` does them, identically for every route.

    Args:
        path: The GeoTIFF.
        selection: Bands to read (see :mod:`geofm.data.band_selection`).
        expand_temporal_dimension: The file stacks ``T`` frames of ``C`` bands (time-major);
            return ``(C, T, H, W)``.
        bands_key: The setting that chose the bands, for error messages.

    Returns:
        ``image`` ``(C, H, W)`` or ``(C, T, H, W)`` float32 with NaN where a band holds the
        file's nodata value or a non-finite value, ``nodata`` bool of the same shape (True
        there), and the file's grid.

    Raises:
        RasterError: The file cannot be read, or the bands asked for do not fit its band count.
    """
    path = Path(path)
    with _open(path) as src:
        grid = _grid(src)
        indexes, frames = _file_indexes(
            path, src.count, selection, expand_temporal_dimension, bands_key
        )
        raw = _read(src, path, indexes)
        nodatavals = [src.nodatavals[i - 1] for i in indexes]
    report_nonfinite(path, *count_nonfinite(raw), raw.shape[-2] * raw.shape[-1])
    nodata = _nodata_mask(raw, nodatavals)
    image = raw.astype(np.float32, copy=False)
    if nodata.any():
        image = np.where(nodata, np.float32(np.nan), image)
    if expand_temporal_dimension:
        image = rearrange(image, "(t c) h w -> c t h w", t=frames)
        nodata = rearrange(nodata, "(t c) h w -> c t h w", t=frames)
    return np.ascontiguousarray(image), np.ascontiguousarray(nodata), grid


def read_label(path: str | Path) -> tuple[np.ndarray, np.ndarray, GridInfo]:
    """Read the first band of a label raster.

    Returns:
        ``label`` ``(H, W)`` in the file's dtype, ``nodata`` ``(H, W)`` bool (the file's nodata
        value or NaN), and the file's grid.
    """
    path = Path(path)
    with _open(path) as src:
        grid = _grid(src)
        raw = _read(src, path, 1)
        nodata_value = src.nodatavals[0]
    report_nonfinite(path, *count_nonfinite(raw[None]), raw.size)
    nodata = _nodata_mask(raw[None], [nodata_value])[0]
    return raw, nodata, grid
