"""Whole-scene detection: tiles per second and peak memory of ``detect_scene``.

Generated float32 scenes (2 bands, ``--sizes`` pixels square, ~1 square object per 400 pixels
squared) go through :func:`geofm.inference.detection_scenes.detect_scene` twice: with a
deterministic blob detector (so the figure is the tiler's own cost: reads, box bookkeeping,
cut-box removal, cross-tile NMS) and with an untrained Faster R-CNN on a ResNet-18 (a model's
cost on CPU). Peak resident memory before/after shows what detection adds: the tiles in
flight and a GDAL cache of a band of rows, which grow with the scene's width, not its area.
Run with ``python benchmarks/bench_detection_scenes.py``; prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import logging
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import rasterio.windows
import torch
from affine import Affine
from scipy import ndimage

from geofm.inference.detection_scenes import detect_scene


def write_scene(path: Path, size: int, seed: int = 0, strip: int = 256) -> int:
    """Squares of 6-14 pixels at random, on a UTM grid, written a strip of rows at a time (so
    that writing does not set the peak memory); returns how many were drawn."""
    rng = np.random.default_rng(seed)
    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": 2, "dtype": "float32",
        "crs": "EPSG:32631", "transform": Affine(10.0, 0.0, 400_000.0, 0.0, -10.0, 5_000_000.0),
        "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate",
    }
    drawn = 0
    with rasterio.open(path, "w", **profile) as dst:
        for top in range(0, size, strip):
            rows = min(strip, size - top)
            image = np.zeros((2, rows, size), np.float32)
            for _ in range(rows * size // 400):
                side = int(rng.integers(6, min(15, rows)))
                y = int(rng.integers(0, rows - side + 1))
                x = int(rng.integers(0, size - side))
                image[0, y : y + side, x : x + side] = 1.0
                image[1, y : y + side, x : x + side] = rng.uniform(0.2, 1.0)
                drawn += 1
            dst.write(image, window=rasterio.windows.Window(0, top, size, rows))
    return drawn


def blob_detector(images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    out = []
    for image in images:
        plane = torch.nan_to_num(image[0]).numpy()
        regions, _ = ndimage.label(plane > 0.5)
        boxes = [[c.start, r.start, c.stop, r.stop] for r, c in ndimage.find_objects(regions)]
        n = len(boxes)
        out.append({
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.ones(n), "labels": torch.zeros(n, dtype=torch.long),
        })
    return out


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="2048,8192", help="scene sides, smallest first")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--model-size", type=int, default=768, help="scene side for the model run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    blob_detector(torch.zeros(1, 2, args.tile, args.tile))  # imports and first-call allocations
    with tempfile.TemporaryDirectory() as folder:
        for size in (int(v) for v in args.sizes.split(",")):
            scene = Path(folder) / f"scene_{size}.tif"
            drawn = write_scene(scene, size)
            before = peak_mb()
            for workers in (0, 2):
                start = time.perf_counter()
                found = detect_scene(
                    blob_detector, scene, tile_size=args.tile, overlap=args.overlap, num_workers=workers
                )
                seconds = time.perf_counter() - start
                print(
                    f"{size} px scene ({2 * 4 * size**2 / 2**20:.0f} MB raw, {drawn} squares drawn), "
                    f"blob detector, {workers} reader threads: {found.tiles} tiles in "
                    f"{seconds:.2f} s ({found.tiles / seconds:.1f} tiles/s), {len(found.boxes)} "
                    f"objects, peak RSS {before:.0f} -> {peak_mb():.0f} MB"
                )
        from geofm.tasks.detection import ObjectDetectionTask

        task = ObjectDetectionTask(
            model_args={
                "framework": "faster-rcnn", "backbone": "timm_resnet18", "backbone_in_chans": 2,
                "necks": [{"name": "SelectIndices", "indices": [1, 2, 3, 4]}],  # no stride-2 level
            },
            num_classes=1, means=[0.0, 0.0], stds=[1.0, 1.0], score_threshold=0.5,
        )
        small = Path(folder) / "small.tif"
        write_scene(small, args.model_size)
        start = time.perf_counter()
        found = detect_scene(task.detect, small, tile_size=args.tile, overlap=args.overlap, batch_size=2)
        seconds = time.perf_counter() - start
        print(
            f"untrained Faster R-CNN ResNet-18 on CPU ({torch.get_num_threads()} threads), "
            f"{args.model_size} px scene: {found.tiles} tiles in {seconds:.1f} s "
            f"({seconds / found.tiles:.2f} s/tile), peak RSS {peak_mb():.0f} MB"
        )


if __name__ == "__main__":
    main()
