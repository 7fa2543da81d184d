"""Detections as vector files: GeoJSON or GeoPackage in the input raster's CRS.

One feature per detection with columns ``class_id``, ``class_name``, ``score`` and a geometry:
the box as a polygon (its four pixel-edge corners through the raster's affine transform, so
rotated grids stay exact), or for instance masks the mask's pixels vectorised
(``rasterio.features.shapes``) and merged into one (multi)polygon. Files are written under a
temporary name beside the target and renamed once complete, so a reader never sees a partial
file.

geopandas, pyogrio and shapely are imported on first use; without them the error names
``pip install 'geofm[vector]'``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from rasterio.crs import CRS
from rasterio.transform import Affine

from geofm.inference.prediction_writer import require_outputs
from geofm.registry.errors import import_optional

__all__ = [
    "VECTOR_FORMATS",
    "VectorPredictionWriter",
    "box_polygons",
    "detections_frame",
    "mask_polygon",
    "vector_libraries",
    "write_vector",
]

log = logging.getLogger(__name__)

#: Output format -> (file suffix, OGR driver).
VECTOR_FORMATS: dict[str, tuple[str, str]] = {
    "geojson": (".geojson", "GeoJSON"),
    "gpkg": (".gpkg", "GPKG"),
}
_COLUMNS = ("class_id", "class_name", "score")


def vector_libraries() -> tuple[Any, Any]:
    """``(geopandas, shapely)``, or an error naming the extra that installs them."""
    geopandas, _, shapely = import_optional(
        "Writing detections as GeoJSON/GeoPackage", "vector", "geopandas", "pyogrio", "shapely"
    )
    return geopandas, shapely


def _as_numpy(values: Any, dtype: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype)


def box_polygons(boxes: Any, transform: Affine) -> list[Any]:
    """Polygons of pixel boxes in map coordinates.

    Args:
        boxes: ``(N, 4)`` xyxy in pixel coordinates (x: column, y: row; pixel ``(r, c)``
            covers ``[c, c + 1] x [r, r + 1]``).
        transform: The raster's pixel -> map affine transform.

    Returns:
        ``N`` shapely polygons (corners top-left, top-right, bottom-right, bottom-left).
    """
    _, shapely = vector_libraries()
    boxes = _as_numpy(boxes, np.float64).reshape(-1, 4)
    x1, y1, x2, y2 = boxes.T
    cols = np.stack([x1, x2, x2, x1], axis=1)
    rows = np.stack([y1, y1, y2, y2], axis=1)
    a, b, c, d, e, f = transform[:6]
    xs = a * cols + b * rows + c
    ys = d * cols + e * rows + f
    return list(shapely.polygons(np.stack([xs, ys], axis=-1)))


def mask_polygon(mask: Any, transform: Affine) -> Any:
    """The ``True`` pixels of one ``(h, w)`` mask as one (multi)polygon in map coordinates,
    ``None`` when the mask is empty. ``transform`` maps the mask's own pixels."""
    from rasterio.features import shapes

    _, shapely = vector_libraries()
    mask = _as_numpy(mask, bool)
    if not mask.any():
        return None
    parts = [
        shapely.geometry.shape(geom)
        for geom, value in shapes(mask.astype(np.uint8), mask=mask, transform=transform)
        if value == 1
    ]
    return shapely.union_all(parts)


def detections_frame(
    boxes: Any,
    scores: Any,
    labels: Any,
    crs: Any,
    transform: Affine,
    class_names: Sequence[str] | None = None,
    geometries: Sequence[Any] | None = None,
) -> Any:
    """A GeoDataFrame of detections: ``class_id``, ``class_name``, ``score``, ``geometry``.

    Args:
        boxes: ``(N, 4)`` xyxy pixel boxes.
        scores: ``(N,)`` scores.
        labels: ``(N,)`` 0-based class ids.
        crs: The raster's CRS (rasterio CRS, WKT, EPSG code), or ``None``.
        transform: The raster's pixel -> map transform.
        class_names: Names by class id (else ``class_<id>``).
        geometries: Map-coordinate geometries to use instead of the boxes (vectorised masks);
            ``None`` entries fall back to the box.

    Raises:
        ValueError: lengths that differ, or class ids without a name.
    """
    geopandas, _ = vector_libraries()
    boxes = _as_numpy(boxes, np.float64).reshape(-1, 4)
    scores = _as_numpy(scores, np.float64).reshape(-1)
    labels = _as_numpy(labels, np.int64).reshape(-1)
    if not len(boxes) == len(scores) == len(labels):
        raise ValueError(
            f"{len(boxes)} boxes, {len(scores)} scores and {len(labels)} labels: one each per "
            "detection."
        )
    if class_names is not None and len(labels) and int(labels.max()) >= len(class_names):
        raise ValueError(
            f"Class id {int(labels.max())} has no name: class_names has {len(class_names)} "
            f"({list(class_names)})."
        )
    polygons = box_polygons(boxes, transform)
    if geometries is not None:
        if len(geometries) != len(polygons):
            raise ValueError(f"{len(geometries)} geometries for {len(polygons)} detections.")
        polygons = [g if g is not None else p for g, p in zip(geometries, polygons, strict=True)]
    names = [class_names[i] if class_names is not None else f"class_{i}" for i in labels]
    if crs is not None and not isinstance(crs, CRS):
        crs = CRS.from_user_input(crs)
    return geopandas.GeoDataFrame(
        {
            "class_id": labels.astype(np.int32),
            "class_name": np.asarray(names, dtype=object),
            "score": scores.astype(np.float32),
        },
        geometry=geopandas.GeoSeries(polygons, dtype="geometry"),
        crs=crs.to_wkt() if crs is not None else None,
    )


def vector_format(path: str | Path) -> str:
    """``"geojson"`` or ``"gpkg"`` from a file name's suffix."""
    suffix = Path(path).suffix.lower()
    for name, (ext, _) in VECTOR_FORMATS.items():
        if suffix == ext or (name == "geojson" and suffix == ".json"):
            return name
    raise ValueError(
        f"'{path}': detections are written as .geojson or .gpkg files, not "
        f"'{suffix or 'no suffix'}'."
    )


def write_vector(frame: Any, path: str | Path) -> Path:
    """Write ``frame`` to ``path`` (``.geojson`` or ``.gpkg``), atomically.

    The file is written as ``.<name>.<pid>.partial<suffix>`` beside ``path`` and renamed over
    it once complete; on failure the partial file is removed and ``path`` left as it was.
    """
    path = Path(path)
    driver = VECTOR_FORMATS[vector_format(path)][1]
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    try:
        layer = path.stem if driver == "GPKG" else None
        frame.to_file(temp, driver=driver, engine="pyogrio", layer=layer)
        os.replace(temp, path)
    except BaseException:
        for end in ("", "-wal", "-shm", "-journal"):  # GeoPackage (SQLite) side files too
            temp.with_name(temp.name + end).unlink(missing_ok=True)
        raise
    return path


def _grid(prediction: Mapping[str, Any], index: int, filename: str) -> tuple[Any, Affine]:
    """Sample ``index``'s CRS and transform: the batch's, else read from its file."""
    crs, transform = prediction.get("crs"), prediction.get("transform")
    if crs is not None and transform is not None:
        crs, transform = crs[index], transform[index]
        if isinstance(transform, torch.Tensor):
            transform = transform.tolist()
        return crs, transform if isinstance(transform, Affine) else Affine(*list(transform)[:6])
    import rasterio

    try:
        with rasterio.open(filename) as src:
            return src.crs, src.transform
    except rasterio.errors.RasterioIOError as err:
        raise ValueError(
            f"The predict batch gives no 'crs'/'transform' for '{filename}' and the file cannot "
            f"be opened to read them ({err}); predicted boxes need the input's grid."
        ) from err


class VectorPredictionWriter(BasePredictionWriter):
    """Write each input's detections as ``<stem>_pred.geojson`` (or ``.gpkg``) in its CRS.

    Reads ``boxes``, ``scores``, ``labels`` (and ``masks``, vectorised) from
    ``ObjectDetectionTask.predict_step``, and each sample's ``crs``/``transform`` from the
    batch (else from the input file). An input without detections gets an empty file.

    Args:
        output_dir: Folder for the outputs (created).
        output_format: ``"geojson"`` or ``"gpkg"``.
        class_names: Names by class id (default: the task's ``class_names``, else the
            datamodule's).
    """

    def __init__(
        self,
        output_dir: str | Path,
        output_format: str = "geojson",
        class_names: Sequence[str] | None = None,
    ):
        super().__init__(write_interval="batch")
        if output_format not in VECTOR_FORMATS:
            raise ValueError(
                f"output_format={output_format!r}; choose one of {list(VECTOR_FORMATS)}."
            )
        vector_libraries()  # fail before predicting, not after the first batch
        self.output_dir = Path(output_dir)
        self.output_format = output_format
        self.class_names = list(class_names) if class_names is not None else None
        self._written: set[Path] = set()

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._written.clear()

    def write_on_batch_end(
        self,
        trainer: Any,
        pl_module: Any,
        prediction: Mapping[str, Any],
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        require_outputs(
            prediction,
            ["filename", "boxes", "scores", "labels"],
            "VectorPredictionWriter writes the detections of ObjectDetectionTask, one file named "
            "after each input.",
        )
        filenames = prediction["filename"]
        names = self.class_names
        if names is None:
            hparams = getattr(pl_module, "hparams", None)
            names = hparams.get("class_names") if hparams is not None else None
        if names is None:  # the datamodule's (its class_names setting), else class_<id>
            names = getattr(getattr(trainer, "datamodule", None), "class_names", None)
        suffix = VECTOR_FORMATS[self.output_format][0]
        for i, filename in enumerate(filenames):
            crs, transform = _grid(prediction, i, str(filename))
            geometries = None
            masks = prediction.get("masks")
            if masks is not None:
                geometries = [mask_polygon(m, transform) for m in masks[i]]
            frame = detections_frame(
                prediction["boxes"][i],
                prediction["scores"][i],
                prediction["labels"][i],
                crs,
                transform,
                names,
                geometries,
            )
            target = self.output_dir / f"{Path(str(filename)).stem}_pred{suffix}"
            if target in self._written:
                raise ValueError(
                    f"Two inputs named '{Path(str(filename)).stem}' would both write {target}; "
                    "rename one."
                )
            write_vector(frame, target)
            self._written.add(target)
