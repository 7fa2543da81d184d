"""Object labels from vector files in map coordinates, placed on a chip's pixel grid.

A detection label file (GeoJSON, GeoPackage, Shapefile: anything GDAL/pyogrio reads) holds one
polygon per object in some CRS. :func:`read_vector_objects` turns it into the targets of one
chip:

- reprojected to the chip's CRS when the file's differs (logged once per file and CRS pair);
- clipped to the chip's footprint: a polygon crossing the edge keeps its inside part, one
  entirely outside (or touching the edge only) is dropped;
- mapped to pixels with the chip's affine transform: ``boxes`` ``(N, 4)`` float32
  ``(x_min, y_min, x_max, y_max)`` in pixel-edge coordinates (``0..W``, ``0..H``, the
  convention of torchvision's detection models);
- ``labels`` ``(N,)`` int64 0-based classes, from an attribute column (its values mapped
  through ``class_names``, or taken as class ids) or one class for every object;
- ``masks`` ``(N, H, W)`` uint8, each object rasterised on the chip's grid (pixel centres
  inside the polygon), when asked for (instance segmentation).

An empty file (no features, or zero bytes) is a chip without objects: ``(0, 4)``, ``(0,)``,
``(0, H, W)``. The vector libraries (pyogrio, shapely) are imported on first use; without them
the error says ``pip install 'geofm[vector]'``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geofm.data.raster import GridInfo
from geofm.registry.errors import import_optional

__all__ = [
    "LabelFileError",
    "class_index",
    "empty_objects",
    "import_vector_libraries",
    "polygon_objects",
    "read_vector_objects",
]

log = logging.getLogger(__name__)

# (file, source CRS, chip CRS) already reported: one line per pair and process, not per epoch.
_REPROJECTED: set[tuple[str, str, str]] = set()
_REPORTED_LOCK = threading.Lock()


class LabelFileError(ValueError):
    """A detection label file that cannot be used as the settings ask; names the file."""


def import_vector_libraries() -> tuple[Any, Any]:
    """``(pyogrio, shapely)``, or an error naming the extra that installs them."""
    pyogrio, _, shapely = import_optional(
        "Reading vector labels (GeoJSON, GeoPackage)", "vector", "pyogrio", "pyproj", "shapely"
    )
    return pyogrio, shapely


def empty_objects(height: int, width: int, return_masks: bool) -> dict[str, np.ndarray]:
    """The targets of a chip without objects: ``boxes`` ``(0, 4)``, ``labels`` ``(0,)`` and,
    with ``return_masks``, ``masks`` ``(0, H, W)``."""
    objects = {
        "boxes": np.zeros((0, 4), dtype=np.float32),
        "labels": np.zeros((0,), dtype=np.int64),
    }
    if return_masks:
        objects["masks"] = np.zeros((0, height, width), dtype=np.uint8)
    return objects


def class_index(
    value: Any,
    *,
    path: Path | str,
    column: str,
    class_names: Sequence[str] | None,
    num_classes: int | None = None,
) -> int:
    """The 0-based class of one attribute ``value``.

    With ``class_names`` the value is looked up by its text (``"building"``, or ``3`` for a
    name ``"3"``); without, it must be a whole number, the class id itself.

    Raises:
        LabelFileError: naming ``path``, ``column`` and the value, when the value is missing,
            not in ``class_names``, not a whole number, or outside ``[0, num_classes)``.
    """
    where = f"Label file '{path}', column '{column}'"
    if value is None or (isinstance(value, float) and np.isnan(value)):
        raise LabelFileError(f"{where}: a feature has no value; every object needs a class.")
    if class_names is not None:
        text = _text(value)
        names = [str(n) for n in class_names]
        if text not in names:
            raise LabelFileError(
                f"{where}: value {value!r} is not one of class_names {names}. Add it to "
                "class_names, or fix the file."
            )
        return names.index(text)
    if isinstance(value, (bool, np.bool_)) or not _is_whole(value):
        raise LabelFileError(
            f"{where}: value {value!r} is not a class id (a whole number from 0). Give "
            "class_names to map names or codes to classes."
        )
    index = int(value)
    if index < 0 or (num_classes is not None and index >= num_classes):
        bound = f", {num_classes})" if num_classes is not None else ", ...)"
        raise LabelFileError(
            f"{where}: class id {index} is outside [0{bound}. Class ids are 0-based"
            + (f"; raise num_classes={num_classes}" if num_classes is not None else "")
            + ", or map the values with class_names."
        )
    return index


def _text(value: Any) -> str:
    """A value as the text it is compared to class names by (``3.0`` reads as ``"3"``)."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _is_whole(value: Any) -> bool:
    if isinstance(value, (int, np.integer)):
        return True
    if isinstance(value, (float, np.floating)):
        return bool(np.isfinite(value) and float(value).is_integer())
    return False


def polygon_objects(
    geometries: Sequence[Any],
    labels: Sequence[int],
    height: int,
    width: int,
    *,
    return_masks: bool,
) -> dict[str, np.ndarray]:
    """Boxes, labels and masks of polygons in pixel coordinates, already clipped to the chip.

    Args:
        geometries: Shapely (multi)polygons in pixel-edge coordinates (``x`` the column,
            ``y`` the row; the chip spans ``0..width`` x ``0..height``).
        labels: The class of each geometry.
        height: Chip rows.
        width: Chip columns.
        return_masks: Also rasterise each object (pixel centres inside it).

    Returns:
        ``boxes`` ``(N, 4)`` float32 xyxy pixels, ``labels`` ``(N,)`` int64, and ``masks``
        ``(N, H, W)`` uint8 with ``return_masks``.
    """
    import shapely

    if not len(geometries):
        return empty_objects(height, width, return_masks)
    boxes = shapely.bounds(np.asarray(geometries, dtype=object))
    # Clipping leaves coordinates a rounding error past the edge.
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    objects = {
        "boxes": boxes.astype(np.float32),
        "labels": np.asarray(labels, dtype=np.int64),
    }
    if return_masks:
        from rasterio.features import rasterize

        # rasterio's default transform is the identity: geometries are in pixels already.
        objects["masks"] = np.stack(
            [rasterize([(g, 1)], out_shape=(height, width), dtype="uint8") for g in geometries]
        )
    return objects


def _polygonal(geometry: Any, shapely: Any) -> Any | None:
    """The polygon parts of a clipped geometry (clipping can leave edge lines or points),
    or ``None`` when it has no area."""
    if geometry is None or geometry.is_empty:
        return None
    parts = [
        p for p in shapely.get_parts(geometry) if p.geom_type in ("Polygon", "MultiPolygon")
    ]
    parts = [p for p in parts if p.area > 0]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else shapely.union_all(parts)


def read_vector_objects(
    path: str | Path,
    grid: GridInfo,
    *,
    class_column: str | None = None,
    class_names: Sequence[str] | None = None,
    num_classes: int | None = None,
    return_masks: bool = False,
    image: str | Path | None = None,
) -> dict[str, np.ndarray]:
    """The objects of one chip from a vector label file.

    Args:
        path: GeoJSON, GeoPackage or any vector file GDAL reads; polygons in map coordinates.
        grid: The chip's grid: ``crs`` (WKT), ``transform``, ``height``, ``width``.
        class_column: Attribute holding each object's class; ``None``: every object is class 0.
        class_names: Class names in class order; a ``class_column`` value is looked up among
            them. Without it, the values are the class ids.
        num_classes: When given, class ids at or above it are an error.
        return_masks: Also rasterise each object to ``masks`` ``(N, H, W)`` uint8.
        image: The chip's file, for messages.

    Returns:
        ``boxes`` ``(N, 4)`` float32 xyxy pixels, ``labels`` ``(N,)`` int64 and, with
        ``return_masks``, ``masks`` ``(N, H, W)`` uint8 (see the module docstring).

    Raises:
        LabelFileError: the file cannot be read, has non-polygon geometries, lacks
            ``class_column`` or has a value that maps to no class; or the chip has no CRS
            while the file has one. The message names the file.
    """
    pyogrio, shapely = import_vector_libraries()
    from affine import Affine
    from rasterio.crs import CRS

    path = Path(path)
    height, width = grid.height, grid.width
    if path.stat().st_size == 0:  # an empty file written for a chip without objects
        return empty_objects(height, width, return_masks)
    try:
        # Every column: when class_column is missing, the message lists those there are.
        meta, _, geometry_wkb, field_data = pyogrio.raw.read(path)
    except Exception as err:  # pyogrio/GDAL raise their own types for unreadable files
        raise LabelFileError(f"Cannot read label file '{path}': {err}") from err
    if geometry_wkb is None or len(geometry_wkb) == 0:
        return empty_objects(height, width, return_masks)
    if class_column is not None and class_column not in list(meta["fields"]):
        raise LabelFileError(
            f"Label file '{path}' has no column '{class_column}' (class_column); its columns "
            f"are {list(meta['fields'])}."
        )
    geometries = shapely.from_wkb(geometry_wkb)
    if class_column is not None:
        values = field_data[list(meta["fields"]).index(class_column)]
        labels = [
            class_index(
                v, path=path, column=class_column, class_names=class_names,
                num_classes=num_classes,
            )
            for v in values
        ]
    else:
        labels = [0] * len(geometries)

    kinds = {g.geom_type for g in geometries if g is not None and not g.is_empty}
    others = kinds - {"Polygon", "MultiPolygon"}
    if others:
        raise LabelFileError(
            f"Label file '{path}' has {sorted(others)} geometries; detection objects are "
            "polygons (buffer points or lines into polygons first)."
        )

    source_crs = _file_crs(meta.get("crs"), path, grid, image)
    chip_crs = CRS.from_wkt(grid.crs) if grid.crs is not None else None
    if source_crs is not None and chip_crs is not None and source_crs != chip_crs:
        geometries = _reproject(geometries, source_crs, chip_crs, path, shapely)

    # Clip in pixel coordinates, where the chip is exactly [0, W] x [0, H].
    inverse = ~Affine(*grid.transform)
    geometries = shapely.transform(
        geometries,
        lambda xy: np.column_stack(
            [inverse.a * xy[:, 0] + inverse.b * xy[:, 1] + inverse.c,
             inverse.d * xy[:, 0] + inverse.e * xy[:, 1] + inverse.f]
        ),
    )
    # Only features whose bounding box meets the chip can reach it: a file covering many
    # chips is mostly skipped before the costlier validity check and clip.
    bounds = shapely.bounds(geometries)
    near = ~(
        (bounds[:, 0] > width) | (bounds[:, 2] < 0) | (bounds[:, 1] > height) | (bounds[:, 3] < 0)
    )
    near &= ~shapely.is_empty(geometries) & ~shapely.is_missing(geometries)
    candidates = geometries[near]
    invalid = ~shapely.is_valid(candidates)
    if invalid.any():  # self-intersecting rings would make the clip fail
        candidates[invalid] = shapely.make_valid(candidates[invalid])
    footprint = shapely.box(0, 0, width, height)
    clipped = [_polygonal(g, shapely) for g in shapely.intersection(candidates, footprint)]
    near_labels = [c for c, n in zip(labels, near, strict=True) if n]
    kept = [(g, c) for g, c in zip(clipped, near_labels, strict=True) if _has_extent(g)]
    return polygon_objects(
        [g for g, _ in kept], [c for _, c in kept], height, width, return_masks=return_masks
    )


#: Objects thinner than this (pixels) after clipping are dropped: a polygon that only shares
#: the chip's edge leaves a sliver of rounding error (``x_min == x_max`` once clipped), which a
#: detector cannot take.
MIN_EXTENT = 1e-3


def _has_extent(geometry: Any | None) -> bool:
    if geometry is None:
        return False
    x0, y0, x1, y1 = geometry.bounds
    return x1 - x0 >= MIN_EXTENT and y1 - y0 >= MIN_EXTENT


def _file_crs(wkt: str | None, path: Path, grid: GridInfo, image: str | Path | None) -> Any:
    """The label file's CRS (``None`` when it has none, read as the chip's)."""
    from rasterio.crs import CRS

    chip = f"image '{image}'" if image is not None else "the image"
    if wkt is None:
        if grid.crs is not None:
            _report_once(
                (str(path), "none", grid.crs),
                "Label file '%s' has no CRS; reading its coordinates in the CRS of %s.",
                path,
                chip,
            )
        return None
    if grid.crs is None:
        raise LabelFileError(
            f"Label file '{path}' is in map coordinates ({_crs_name(CRS.from_user_input(wkt))}) "
            f"but {chip} has no CRS, so its objects cannot be placed on the image. Give the "
            "image a CRS and transform, or use pixel-coordinate labels (coco_file)."
        )
    return CRS.from_user_input(wkt)


def _reproject(geometries: Any, source: Any, target: Any, path: Path, shapely: Any) -> Any:
    """``geometries`` from ``source`` to ``target`` CRS (both rasterio CRSs)."""
    from pyproj import Transformer

    _report_once(
        (str(path), source.to_wkt(), target.to_wkt()),
        "Label file '%s' is in %s, its image in %s: reprojecting the labels to the image's CRS.",
        path,
        _crs_name(source),
        _crs_name(target),
    )
    transformer = Transformer.from_crs(source.to_wkt(), target.to_wkt(), always_xy=True)
    return shapely.transform(
        geometries, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1]))
    )


def _report_once(key: tuple[str, str, str], message: str, *args: Any) -> None:
    with _REPORTED_LOCK:
        if key in _REPROJECTED:
            return
        _REPROJECTED.add(key)
    log.info(message, *args)


def _crs_name(crs: Any) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg is not None else repr(crs.to_wkt()[:60] + "...")
