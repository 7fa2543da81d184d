"""Object detection over whole scenes: overlapping tiles, cross-tile suppression, one vector
file per scene.

Per scene:

1. :func:`~geofm.inference.tiling.plan_tiles` plans overlapping tiles and
   :class:`~geofm.inference.reader.RasterTileSource` reads them window by window on reader
   threads (memory holds the tiles in flight and the kept detections, never the scene).
   Pixels of a tile outside the scene are nodata (NaN, which the task's preprocessing fills),
   not the reflection the pixel-wise tiler uses: a mirrored copy of an object would be
   detected as one.
2. A detector maps a batch of raw tiles ``(N, C, h, w)`` to one ``{"boxes", "scores",
   "labels"[, "masks"]}`` per tile (an ``ObjectDetectionTask``'s :meth:`detect`: preprocess,
   model, score threshold, per-class NMS). Boxes are moved to scene pixels and clipped to the
   scene.
3. A box within ``edge_margin`` pixels of an inner tile edge (one with a neighbouring tile)
   is probably an object cut by that edge. It is dropped when, on one such edge, the
   neighbouring tile reaches past the box's other side by ``edge_margin``: that tile (same
   rows, or same columns) sees all this tile sees of the object and its far end too, so it
   reports the object whole when the object is smaller than the overlap, and otherwise passes
   the same test on. Cut boxes that no neighbour sees more of are kept: nothing is lost.
4. Per-class non-maximum suppression (``torchvision.ops.batched_nms``) across every tile's
   kept boxes removes the copies of objects that lie whole in several tiles' overlap.

So with ``overlap`` larger than the objects (plus ``2 * edge_margin``), every object is
reported once, with the box a tile that holds it whole gives; an object larger than the
overlap, which no tile holds whole, is reported as the largest parts the tiles see, which NMS
merges only where they overlap by more than ``iou_threshold``.

Mask R-CNN masks are vectorised per tile (the part inside the scene) and carried with their
boxes, so the result's geometries are the masks' polygons.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geofm.inference.reader import RasterTileSource, TileData
from geofm.inference.tiling import Tile, TileGrid, plan_tiles, resolve_tile_args

__all__ = [
    "SceneDetections",
    "detect_scene",
    "predict_scene_detections",
    "predict_task_scene_detections",
]

log = logging.getLogger(__name__)

#: Raw tiles ``(N, C, h, w)`` -> one detection dict per tile.
Detector = Callable[[torch.Tensor], Sequence[dict[str, torch.Tensor]]]

_SETTINGS = (
    "tile_size",
    "overlap",
    "stride",
    "batch_size",
    "num_workers",
    "edge_margin",
    "input_nodata",
    "output_format",
    "progress",
)


@dataclass
class SceneDetections:
    """A scene's detections, in scene pixel coordinates.

    Attributes:
        boxes: ``(N, 4)`` float64 xyxy.
        scores: ``(N,)`` float32.
        labels: ``(N,)`` int64 0-based class ids.
        geometries: One map-coordinate (multi)polygon per detection from its mask (Mask
            R-CNN), ``None`` without masks.
        crs: The scene's CRS.
        transform: The scene's pixel -> map transform.
        tiles: Tiles the scene was read in.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    geometries: list[Any] | None = None
    crs: Any = None
    transform: Any = None
    tiles: int = 0


def _cut_and_seen_elsewhere(
    box: np.ndarray, tile: Tile, grid: TileGrid, margin: float
) -> bool:
    """Whether ``box`` (scene pixels) touches an inner edge of ``tile`` whose neighbouring
    tile reaches past the box's other side by ``margin`` (so it sees more of the object)."""
    x1, y1, x2, y2 = box
    for lo, hi, offsets, index, size, extent in (
        (x1, x2, grid.col_offsets, tile.grid_col, grid.tile_size[1], grid.width),
        (y1, y2, grid.row_offsets, tile.grid_row, grid.tile_size[0], grid.height),
    ):
        start = offsets[index]
        if index > 0 and start > 0 and lo <= start + margin:  # near the low inner edge
            if hi <= offsets[index - 1] + size - margin:
                return True
        end = start + size
        if index + 1 < len(offsets) and end < extent and hi >= end - margin:  # the high edge
            if lo >= offsets[index + 1] + margin:
                return True
    return False


def _tile_image(data: TileData, height: int, width: int) -> np.ndarray:
    """The tile's raw values with the pixels outside the scene set to NaN (nodata)."""
    image = data.image
    tile = data.tile
    r0, r1, c0, c1 = tile.inside(height, width)
    if (r0, r1, c0, c1) == (tile.row, tile.row + tile.height, tile.col, tile.col + tile.width):
        return image
    image = image.copy()
    image[:, : r0 - tile.row] = np.nan
    image[:, r1 - tile.row :] = np.nan
    image[:, :, : c0 - tile.col] = np.nan
    image[:, :, c1 - tile.col :] = np.nan
    return image


def detect_scene(
    detector: Detector,
    input_path: str | Path,
    *,
    tile_size: int | tuple[int, int] = 512,
    overlap: int | tuple[int, int] | None = None,
    stride: int | tuple[int, int] | None = None,
    iou_threshold: float = 0.5,
    edge_margin: float = 2.0,
    bands: list[int] | None = None,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
    num_workers: int = 2,
    input_nodata: float | None = None,
    progress: bool = False,
) -> SceneDetections:
    """Detect objects over a whole scene, tile by tile (see the module docstring).

    Args:
        detector: Raw tiles ``(N, C, h, w)`` (NaN = nodata) on ``device`` -> one ``{"boxes":
            (K, 4) xyxy tile pixels, "scores": (K,), "labels": (K,)[, "masks": (K, h, w)
            bool]}`` per tile.
        input_path: The scene (any raster rasterio reads).
        tile_size: Tile side or ``(h, w)``.
        overlap: Pixels shared by neighbouring tiles (default ``tile_size // 8``); larger
            than the objects, so that each lies whole in a tile.
        stride: Step between tiles instead of ``overlap``.
        iou_threshold: IoU of the cross-tile per-class non-maximum suppression.
        edge_margin: Pixels from an inner tile edge within which a box counts as cut by it.
        bands: 1-based band indexes read, in model order; all by default.
        batch_size: Tiles per detector call; does not change the result.
        device: Where the tiles go before the detector.
        num_workers: Reader threads (0: read in this thread); does not change the result.
        input_nodata: A raw value read as nodata in every band, besides the bands' own.
        progress: Show a progress bar.

    Returns:
        The scene's detections, highest score first.
    """
    from torchvision.ops import batched_nms
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be at least 1.")
    if edge_margin < 0:
        raise ValueError(f"edge_margin={edge_margin} must be 0 or more.")
    tile = resolve_tile_args(tile_size, overlap, stride)[0]
    device = torch.device(device)
    boxes: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    geometries: list[Any] = []
    with_masks = False
    reader = RasterTileSource(input_path, bands, num_workers, None, tile[0], nodata=input_nodata)
    with reader as source:
        grid = plan_tiles(source.height, source.width, tile_size, overlap, stride)
        tiles = list(grid)
        crs, transform = source.crs, source.transform

        def consume(batch: list[TileData]) -> None:
            nonlocal with_masks
            images = np.stack([_tile_image(d, grid.height, grid.width) for d in batch])
            with torch.inference_mode():
                outputs = detector(torch.from_numpy(images).to(device))
            if len(outputs) != len(batch):
                raise ValueError(
                    f"The detector returned {len(outputs)} results for {len(batch)} tiles."
                )
            for data, det in zip(batch, outputs, strict=True):
                kept = _keep_tile_detections(data.tile, det, grid, edge_margin)
                if kept is None:
                    continue
                boxes.append(kept["boxes"])
                scores.append(kept["scores"])
                labels.append(kept["labels"])
                if "masks" in kept:
                    with_masks = True
                    polygons = _tile_mask_polygons(data.tile, kept["masks"], grid, transform)
                    geometries.extend(polygons)

        bar = tqdm(total=len(tiles), unit="tile", disable=not progress, dynamic_ncols=True)
        batches = source.batches(tiles, grid.shape[1], batch_size)
        try:
            for batch in batches:
                consume(batch)
                bar.update(len(batch))
        finally:
            batches.close()  # cancels the reads still queued when the detector fails
            bar.close()
    if not boxes:
        none = (np.zeros((0, 4)), np.zeros(0, np.float32), np.zeros(0, np.int64))
        return SceneDetections(*none, None, crs, transform, len(tiles))
    all_boxes = torch.from_numpy(np.concatenate(boxes))
    all_scores = torch.from_numpy(np.concatenate(scores))
    all_labels = torch.from_numpy(np.concatenate(labels))
    keep = batched_nms(all_boxes.float(), all_scores.float(), all_labels, iou_threshold).numpy()
    return SceneDetections(
        all_boxes.numpy()[keep],
        all_scores.numpy()[keep],
        all_labels.numpy()[keep],
        [geometries[i] for i in keep] if with_masks else None,
        crs,
        transform,
        len(tiles),
    )


def _keep_tile_detections(
    tile: Tile, det: dict[str, torch.Tensor], grid: TileGrid, margin: float
) -> dict[str, np.ndarray] | None:
    """A tile's detections in scene pixels, clipped to the scene, without those cut by an
    inner edge that a neighbour sees whole; ``None`` when none is left."""
    box = det["boxes"].detach().float().cpu().numpy().astype(np.float64).reshape(-1, 4)
    if not len(box):
        return None
    box = box + np.array([tile.col, tile.row, tile.col, tile.row], dtype=np.float64)
    box[:, 0::2] = box[:, 0::2].clip(0, grid.width)
    box[:, 1::2] = box[:, 1::2].clip(0, grid.height)
    keep = (box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1])
    keep &= np.array([not _cut_and_seen_elsewhere(b, tile, grid, margin) for b in box], dtype=bool)
    if not keep.any():
        return None
    kept = {
        "boxes": box[keep],
        "scores": det["scores"].detach().float().cpu().numpy()[keep],
        "labels": det["labels"].detach().long().cpu().numpy()[keep],
    }
    if "masks" in det:
        kept["masks"] = det["masks"].detach().cpu().numpy()[keep]
    return kept


def _tile_mask_polygons(tile: Tile, masks: np.ndarray, grid: TileGrid, transform: Any) -> list[Any]:
    """Each tile mask's part inside the scene, vectorised in map coordinates."""
    from rasterio.windows import Window
    from rasterio.windows import transform as window_transform

    from geofm.inference.vector_writer import mask_polygon

    r0, r1, c0, c1 = tile.inside(grid.height, grid.width)
    window = window_transform(Window(c0, r0, c1 - c0, r1 - r0), transform)
    inside = masks[:, r0 - tile.row : r1 - tile.row, c0 - tile.col : c1 - tile.col]
    return [mask_polygon(m > 0.5, window) for m in inside]


def predict_scene_detections(
    detector: Detector,
    input_path: str | Path,
    output_path: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    **kwargs: Any,
) -> Path:
    """Detect over a whole scene (:func:`detect_scene`) and write one vector file.

    Args:
        detector: As in :func:`detect_scene` (an ``ObjectDetectionTask``'s ``detect``).
        input_path: The scene.
        output_path: ``.geojson`` or ``.gpkg``; written atomically in the scene's CRS.
        class_names: Names by class id for the ``class_name`` column.
        **kwargs: Settings of :func:`detect_scene`.

    Returns:
        ``output_path``.
    """
    from geofm.inference.vector_writer import detections_frame, vector_format, write_vector

    vector_format(output_path)  # refuse a wrong suffix before the work
    found = detect_scene(detector, input_path, **kwargs)
    frame = detections_frame(
        found.boxes,
        found.scores,
        found.labels,
        found.crs,
        found.transform,
        class_names,
        found.geometries,
    )
    path = write_vector(frame, output_path)
    log.info("%s: %d detections from %d tiles.", path, len(found.boxes), found.tiles)
    return path


def predict_task_scene_detections(
    task: Any,
    datamodule: Any,
    ckpt_path: str | Path | None,
    output_dir: str | Path,
    settings: dict[str, Any],
    device: str | torch.device | None = None,
) -> list[Path]:
    """``geofm predict --streaming`` for an ``ObjectDetectionTask``: each predict scene of the
    datamodule through :func:`predict_scene_detections`, ``<scene>_pred.geojson`` (or
    ``.gpkg``) in ``output_dir``. Under ``torchrun`` each process takes its share.

    Args:
        task: The detection task (its preprocessing, model, thresholds and class names; the
            datamodule's ``class_names`` when the task has none).
        datamodule: A datamodule whose ``predict_dataset`` lists ``image_files``.
        ckpt_path: The checkpoint to predict with.
        output_dir: Where the vector files go.
        settings: ``tile_size``, ``overlap``/``stride``, ``batch_size``, ``num_workers``,
            ``edge_margin``, ``input_nodata``, ``output_format`` (``geojson``/``gpkg``,
            default the task's ``prediction_format``), ``progress``.
        device: Where the model runs; the first GPU when available by default.

    Raises:
        ValueError: a setting this route does not take (``resume``, ``overviews``...).
    """
    from geofm.inference.streaming import default_tile_size
    from geofm.inference.task_scenes import load_task_checkpoint
    from geofm.inference.vector_writer import VECTOR_FORMATS

    settings = dict(settings)
    unknown = sorted(set(settings) - set(_SETTINGS))
    if unknown:
        raise ValueError(
            f"--streaming for object detection takes {list(_SETTINGS)}; {unknown} apply to "
            "pixel-wise predictions only."
        )
    output_format = settings.pop("output_format", task.hparams.get("prediction_format", "geojson"))
    if output_format not in VECTOR_FORMATS:
        raise ValueError(f"output_format={output_format!r}; choose one of {list(VECTOR_FORMATS)}.")
    datamodule.setup("predict")
    task.configure_preprocess(datamodule, stage="predict")
    if ckpt_path:
        load_task_checkpoint(task, ckpt_path)
    dataset = getattr(datamodule, "predict_dataset", None)
    scenes = list(getattr(dataset, "image_files", None) or [])
    if not scenes:
        raise ValueError("--streaming found no scenes: set data.init_args.predict_data_root.")
    selection = getattr(dataset, "selection", None)
    indexes = getattr(selection, "indexes", None)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    task.to(device).eval()
    if "tile_size" not in settings:
        settings["tile_size"] = default_tile_size(task.model)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    output_dir = Path(output_dir)
    suffix = VECTOR_FORMATS[output_format][0]
    # The task's names, else the datamodule's (the same fallback as VectorPredictionWriter).
    class_names = task.hparams.get("class_names") or getattr(datamodule, "class_names", None)
    written = []
    for scene in sorted(Path(s) for s in scenes)[rank::world]:
        written.append(
            predict_scene_detections(
                task.detect,
                scene,
                output_dir / f"{scene.stem}_pred{suffix}",
                class_names=class_names,
                iou_threshold=task.hparams.iou_threshold,
                bands=list(indexes) if indexes is not None else None,
                device=device,
                **settings,
            )
        )
    return written
