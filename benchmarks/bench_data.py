"""Data-loading throughput of the segmentation datamodule on generated GeoTIFFs.

64 files of 10 bands x 224 x 224 (int16 with nodata, like HLS reflectance) and their labels
are written to a temporary folder; one epoch of the training loader is timed with 0 and 2
workers. Run with ``make bench`` or ``python benchmarks/bench_data.py``; prints figures, asserts
nothing.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from geofm.data import GenericNonGeoSegmentationDataModule


def write_folder(root: Path, files: int, bands: int, size: int, seed: int = 0) -> None:
    """``files`` image/label pairs on a UTM grid, a few nodata pixels per image."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(files):
        transform = Affine(30.0, 0.0, 440280.0 + i * size * 30.0, 0.0, -30.0, 3159720.0)
        image = rng.integers(0, 10_000, (bands, size, size), dtype=np.int16)
        image[:, :2, :2] = -9999
        label = rng.integers(0, 3, (size, size), dtype=np.uint8)
        common = {"height": size, "width": size, "crs": "EPSG:32614", "transform": transform}
        with rasterio.open(
            root / "images" / f"tile_{i:03d}.tif",
            "w",
            driver="GTiff",
            count=bands,
            dtype="int16",
            nodata=-9999,
            **common,
        ) as dst:
            dst.write(image)
        with rasterio.open(
            root / "labels" / f"tile_{i:03d}_mask.tif",
            "w",
            driver="GTiff",
            count=1,
            dtype="uint8",
            nodata=255,
            **common,
        ) as dst:
            dst.write(label[None])


def throughput(root: Path, num_workers: int, batch_size: int, epochs: int) -> float:
    """Samples per second over ``epochs`` epochs of the training loader (worker start included)."""
    dm = GenericNonGeoSegmentationDataModule(
        batch_size=batch_size,
        num_workers=num_workers,
        train_data_root=root / "images",
        train_label_data_root=root / "labels",
        img_grep="tile_*.tif",
        label_grep="tile_*_mask.tif",
        output_bands=[2, 3, 4, 5, 6, 7],
        constant_scale=1e-4,
        no_data_replace=0,
        no_label_replace=-1,
        drop_last=False,
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    samples = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            samples += batch["image"].shape[0]
    return samples / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=64)
    parser.add_argument("--bands", type=int, default=10)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_folder(root, args.files, args.bands, args.size)
        print(
            f"{args.files} GeoTIFFs, {args.bands} bands x {args.size} x {args.size} int16 "
            f"(6 bands read), batch {args.batch_size}, {args.epochs} epochs"
        )
        for workers in args.workers:
            rate = throughput(root, workers, args.batch_size, args.epochs)
            print(f"num_workers={workers}: {rate:8.1f} samples/s")


if __name__ == "__main__":
    main()
