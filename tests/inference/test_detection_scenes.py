"""Whole-scene detection: tiles with overlap, cut boxes dropped, cross-tile NMS.

Must hold: the boxes of the whole-scene path equal those of per-tile prediction away from
tile edges and are not duplicated at edges. The detector here is a deterministic test double
(the boxes of connected bright blobs), so that the tiling logic, not a network, is under test.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import Affine
from scipy import ndimage
from torch import nn
from torchvision.ops import batched_nms

from geofm.inference.detection_scenes import detect_scene, predict_scene_detections
from geofm.inference.tiling import plan_tiles
from geofm.inference.task_scenes import predict_task_scenes
from geofm.tasks.detection import ObjectDetectionTask

HEIGHT, WIDTH, TILE, OVERLAP = 150, 210, 64, 24
TRANSFORM = Affine(10.0, 0.0, 400_000.0, 0.0, -10.0, 5_000_000.0)


def blobs(image: torch.Tensor, masks: bool = False) -> dict[str, torch.Tensor]:
    """Boxes of the connected regions of band 0 above 0.5 (NaN is background); the label is
    the region's value - 1, the score its mean of band 1."""
    plane = torch.nan_to_num(image[0], nan=0.0).cpu().numpy()
    regions, count = ndimage.label(plane > 0.5)
    boxes, labels, scores, found = [], [], [], []
    for index, where in enumerate(ndimage.find_objects(regions), start=1):
        rows, cols = where
        boxes.append([cols.start, rows.start, cols.stop, rows.stop])
        labels.append(int(round(plane[regions == index].max())) - 1)
        scores.append(float(np.nan_to_num(image[1].cpu().numpy())[regions == index].mean()))
        found.append(regions == index)
    out = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }
    if masks:
        out["masks"] = torch.from_numpy(np.stack(found) if found else np.zeros((0, *plane.shape), bool))
    return out


def blob_detector(images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    return [blobs(image) for image in images]


def _inner_edges(offsets: tuple[int, ...], size: int, extent: int) -> list[int]:
    """Positions of tile edges that lie inside the scene (where a neighbour takes over)."""
    edges = [o for o in offsets[1:] if 0 < o < extent]
    edges += [o + size for o in offsets[:-1] if 0 < o + size < extent]
    return sorted(set(edges))


def make_scene(path: Path, seed: int = 0) -> list[tuple[int, int, int, int]]:
    """Squares of 5-12 pixels across every inner tile edge and at random, 2+ pixels apart.

    Returns:
        The squares' boxes (x1, y1, x2, y2).
    """
    rng = np.random.default_rng(seed)
    grid = plan_tiles(HEIGHT, WIDTH, TILE, OVERLAP)
    col_edges = _inner_edges(grid.col_offsets, TILE, WIDTH)
    row_edges = _inner_edges(grid.row_offsets, TILE, HEIGHT)
    occupied = np.zeros((HEIGHT, WIDTH), bool)
    image = np.zeros((2, HEIGHT, WIDTH), np.float32)
    placed: list[tuple[int, int, int, int]] = []

    def place(x1: int, y1: int, side: int) -> None:
        x2, y2 = x1 + side, y1 + side
        if x1 < 0 or y1 < 0 or x2 > WIDTH or y2 > HEIGHT:
            return
        if occupied[max(y1 - 2, 0) : y2 + 2, max(x1 - 2, 0) : x2 + 2].any():
            return
        occupied[y1:y2, x1:x2] = True
        image[0, y1:y2, x1:x2] = 1 + int(rng.integers(0, 2))  # class 0 or 1
        image[1, y1:y2, x1:x2] = rng.uniform(0.2, 1.0)  # its score
        placed.append((x1, y1, x2, y2))

    for edge in col_edges:  # straddling each vertical edge, at several heights
        for y in range(3, HEIGHT - 12, 19):
            side = int(rng.integers(5, 13))
            place(edge - int(rng.integers(1, side)), y, side)
    for edge in row_edges:
        for x in range(3, WIDTH - 12, 23):
            side = int(rng.integers(5, 13))
            place(x, edge - int(rng.integers(1, side)), side)
    for ce in col_edges:  # and on the crossings of both
        for re in row_edges:
            place(ce - 4, re - 4, 9)
    for _ in range(200):
        place(int(rng.integers(0, WIDTH)), int(rng.integers(0, HEIGHT)), int(rng.integers(5, 13)))
    profile = {
        "driver": "GTiff", "width": WIDTH, "height": HEIGHT, "count": 2, "dtype": "float32",
        "crs": "EPSG:32631", "transform": TRANSFORM, "tiled": True, "blockxsize": 32, "blockysize": 32,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(image)
    return placed


def _sorted(boxes: np.ndarray) -> list[tuple[float, ...]]:
    return sorted(tuple(map(float, b)) for b in boxes)


def _cut_by_an_inner_edge(box, grid) -> bool:
    x1, y1, x2, y2 = box
    cols = _inner_edges(grid.col_offsets, TILE, WIDTH)
    rows = _inner_edges(grid.row_offsets, TILE, HEIGHT)
    return any(x1 < e < x2 for e in cols) or any(y1 < e < y2 for e in rows)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_scene_boxes_equal_whole_image_boxes_each_object_once(tmp_path, num_workers):
    path = tmp_path / "scene.tif"
    placed = make_scene(path)
    grid = plan_tiles(HEIGHT, WIDTH, TILE, OVERLAP)
    crossing = [b for b in placed if _cut_by_an_inner_edge(b, grid)]
    assert len(crossing) >= 20  # the test is about them: enough squares cross tile edges
    with rasterio.open(path) as src:
        scene = torch.from_numpy(src.read())
    whole = blobs(scene)  # the detector on the whole image at once
    assert _sorted(whole["boxes"].numpy()) == _sorted(np.array(placed))

    found = detect_scene(
        blob_detector, path, tile_size=TILE, overlap=OVERLAP, batch_size=3, num_workers=num_workers
    )
    assert found.tiles == len(grid) > 6
    # Every object exactly once, with the box, class and score of the whole-image detection.
    assert _sorted(found.boxes) == _sorted(whole["boxes"].numpy())
    order = np.lexsort(found.boxes.T[::-1])
    reference = np.lexsort(whole["boxes"].numpy().T[::-1])
    assert found.labels[order].tolist() == whole["labels"].numpy()[reference].tolist()
    assert np.allclose(found.scores[order], whole["scores"].numpy()[reference])


def test_per_tile_boxes_away_from_edges_are_the_scene_boxes(tmp_path):
    """What one tile finds well inside its own pixels is in the scene result, unchanged;
    naive stitching (every tile's boxes, then NMS) would report the cut objects twice."""
    path = tmp_path / "scene.tif"
    make_scene(path, seed=1)
    grid = plan_tiles(HEIGHT, WIDTH, TILE, OVERLAP)
    found = set(_sorted(detect_scene(blob_detector, path, tile_size=TILE, overlap=OVERLAP).boxes))
    naive_boxes, interior = [], 0
    with rasterio.open(path) as src:
        for tile in grid:
            r0, r1, c0, c1 = tile.inside(HEIGHT, WIDTH)
            window = rasterio.windows.Window(c0, r0, c1 - c0, r1 - r0)
            det = blobs(torch.from_numpy(src.read(window=window)))
            for x1, y1, x2, y2 in det["boxes"].tolist():
                box = (x1 + c0, y1 + r0, x2 + c0, y2 + r0)
                naive_boxes.append(box)
                touches = (x1 <= 0 and c0 > 0) or (y1 <= 0 and r0 > 0)
                touches |= (x2 >= c1 - c0 and c1 < WIDTH) or (y2 >= r1 - r0 and r1 < HEIGHT)
                if not touches:
                    interior += 1
                    assert box in found
    assert interior > 50
    naive = torch.tensor(naive_boxes)
    keep = batched_nms(naive, torch.ones(len(naive)), torch.zeros(len(naive), dtype=torch.long), 0.5)
    assert len(keep) > len(found)  # cut halves survive plain NMS: the edge rule is needed


def test_masks_and_the_written_file(tmp_path):
    path = tmp_path / "scene.tif"
    placed = make_scene(path, seed=2)

    def detector(images):
        return [blobs(image, masks=True) for image in images]

    out = predict_scene_detections(
        detector, path, tmp_path / "scene_pred.gpkg", tile_size=TILE, overlap=OVERLAP, class_names=["a", "b"]
    )
    frame = gpd.read_file(out)
    assert frame.crs.to_epsg() == 32631 and len(frame) == len(placed)
    # Each square's polygon is its pixels: area side^2 * 100 m^2, at its map position.
    expected = sorted((TRANSFORM.c + 10 * x1, TRANSFORM.f - 10 * y2, TRANSFORM.c + 10 * x2, TRANSFORM.f - 10 * y1)
                      for x1, y1, x2, y2 in placed)
    assert sorted(tuple(round(v, 6) for v in g.bounds) for g in frame.geometry) == expected
    assert np.allclose(sorted(frame.geometry.area), sorted((x2 - x1) * (y2 - y1) * 100.0 for x1, y1, x2, y2 in placed))
    assert set(frame["class_name"]) <= {"a", "b"}


class BlobModel(nn.Module):
    """The blob detector as a model, so a task's whole predict route runs around it."""

    framework = "faster-rcnn"
    returns_masks = False

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))

    def forward(self, x, targets=None):
        return [blobs(image) for image in x]


def test_task_streaming_route_writes_one_file_per_scene(tmp_path):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    placed = make_scene(scenes / "one.tif", seed=3)
    task = ObjectDetectionTask(
        model=BlobModel(), num_classes=2, means=[0.0, 0.0], stds=[1.0, 1.0], score_threshold=0.0,
        prediction_format="geojson",
    )
    datamodule = SimpleNamespace(
        setup=lambda stage: None, predict_dataset=SimpleNamespace(image_files=[scenes / "one.tif"]),
        class_names=["small", "large"],
    )
    written = predict_task_scenes(
        task, datamodule, None, tmp_path / "out", {"tile_size": TILE, "overlap": OVERLAP, "num_workers": 0}
    )
    assert [p.name for p in written] == ["one_pred.geojson"]
    frame = gpd.read_file(written[0])
    assert len(frame) == len(placed)
    # The task has no class names: the datamodule's name the classes.
    assert sorted(set(frame["class_name"])) == ["large", "small"]
    with pytest.raises(ValueError, match=r"\['resume'\] apply to pixel-wise"):
        predict_task_scenes(task, datamodule, None, tmp_path / "out", {"resume": True})


def test_objects_larger_than_the_overlap_are_not_lost(tmp_path):
    """No tile sees such an object whole, so its cut boxes are kept (NMS may leave parts)."""
    grid = plan_tiles(HEIGHT, WIDTH, TILE, OVERLAP)
    cols = grid.col_offsets
    image = np.zeros((2, HEIGHT, WIDTH), np.float32)
    # From before the third column of tiles to past the second's end: wider than the overlap.
    x1, y1, x2, y2 = cols[2] - 10, 20, cols[1] + TILE + 10, 65
    image[:, y1:y2, x1:x2] = 1.0
    path = tmp_path / "big.tif"
    profile = {"driver": "GTiff", "width": WIDTH, "height": HEIGHT, "count": 2, "dtype": "float32",
               "crs": "EPSG:32631", "transform": TRANSFORM}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(image)
    found = detect_scene(blob_detector, path, tile_size=TILE, overlap=OVERLAP, num_workers=0)
    assert 1 <= len(found.boxes) <= 4
    covered = np.zeros((HEIGHT, WIDTH), bool)
    for bx1, by1, bx2, by2 in found.boxes.astype(int):
        assert x1 <= bx1 and y1 <= by1 and bx2 <= x2 and by2 <= y2  # parts of the object only
        covered[by1:by2, bx1:bx2] = True
    assert covered[y1:y2, x1:x2].mean() > 0.5


def test_a_failing_detector_stops_the_scene_and_writes_nothing(tmp_path):
    """The error reaches the caller (queued reads cancelled) and no output, not even a
    partial one, is left."""
    path = tmp_path / "scene.tif"
    make_scene(path, seed=4)
    calls = []

    def failing(images):
        calls.append(len(images))
        if len(calls) == 2:
            raise RuntimeError("detector failed on its second batch")
        return blob_detector(images)

    with pytest.raises(RuntimeError, match="second batch"):
        predict_scene_detections(
            failing, path, tmp_path / "out" / "scene_pred.geojson", tile_size=TILE,
            overlap=OVERLAP, batch_size=2, num_workers=2,
        )
    assert calls == [2, 2]  # stopped at the failure, not run over the remaining tiles
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
