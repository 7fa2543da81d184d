"""Streamed tiled inference on large scenes: wall time, tiles/s, peak memory, model-only time.

Builds scenes of 2,048, 8,192 and 16,384 pixels a side by mosaicking the Landsat 8 scene in
``../shared/data/landsat8_scene`` (mirrored copies with an offset, one transform for the
mosaic, written strip by strip as tiled LZW GeoTIFFs with nodata 0), then predicts each in a
fresh subprocess (so peak memory is that scene's alone) and times the model alone on as many
tiles. Prints figures, asserts nothing.

    python benchmarks/bench_inference.py            # 2k, 8k, 16k with the small CNN
    python benchmarks/bench_inference.py --quick    # 1k and 2k, a few seconds each
    python benchmarks/bench_inference.py --model unet18 --sizes 2048

``--model tiny`` (default) is a 5k-parameter encoder-decoder CNN: the registry model
(``timm_resnet18`` + ``smp_Unet``, ``--model unet18``) runs about 0.06 Mpx/s on 2 CPU cores, an
hour for the 16k scene. ``GEOFM_BENCH_QUICK=1`` equals ``--quick``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LANDSAT = (
    Path(__file__).resolve().parents[1]
    / ".."
    / "shared"
    / "data"
    / "landsat8_scene"
    / "LC08_L1TP_224078_20200518_20200518_01_RT.TIF"
)
OFFSET = (333, 777)  # (row, col) of the scene pixel at the mosaic's origin
CLASSES = 4


def _mirror(index, n: int):  # type: ignore[no-untyped-def]
    """Index into ``n`` pixels of an endless row of alternately flipped copies."""
    import numpy as np

    m = np.mod(index, 2 * n)
    return np.where(m < n, m, 2 * n - 1 - m)


def build_mosaic(size: int, path: Path) -> None:
    """Write a ``size`` x ``size`` mosaic of flipped Landsat copies, 256 rows at a time."""
    import numpy as np
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    with rasterio.open(LANDSAT) as src:
        scene = src.read()  # 23 MB: the source, never the mosaic
        profile = dict(src.profile)
        transform = src.transform * Affine.translation(OFFSET[1], OFFSET[0])
    cols = _mirror(np.arange(size) + OFFSET[1], scene.shape[2])
    profile.update(
        width=size,
        height=size,
        transform=transform,
        nodata=0,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="lzw",
        predictor=2,
        BIGTIFF="IF_SAFER",
    )
    scratch = path.with_name(path.name + ".tmp")
    with rasterio.open(scratch, "w", **profile) as dst:
        for row in range(0, size, 256):
            rows = _mirror(np.arange(row, min(row + 256, size)) + OFFSET[0], scene.shape[1])
            dst.write(scene[:, rows][:, :, cols], window=Window(0, row, size, len(rows)))
    os.replace(scratch, path)


def build_model(name: str):  # type: ignore[no-untyped-def]
    import torch
    import torch.nn.functional as F
    from torch import nn

    class TinySegNet(nn.Module):
        """Full-resolution features plus context at 1/4 resolution, fused by a 1x1 conv."""

        def __init__(self, in_chans: int = 3, classes: int = CLASSES, width: int = 8):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(in_chans, width, 3, padding=1), nn.ReLU())
            self.context = nn.Sequential(
                nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1),
                nn.ReLU(),
            )
            self.head = nn.Conv2d(3 * width, classes, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            f = self.stem(x)
            c = F.interpolate(self.context(f), size=f.shape[-2:], mode="bilinear")
            return self.head(torch.cat([f, c], dim=1))

    class RegistryUnet(nn.Module):
        """timm resnet18 features + smp Unet decoder + 1x1 conv, from geofm's registries."""

        def __init__(self) -> None:
            super().__init__()
            from geofm.registry import BACKBONE_REGISTRY, DECODER_REGISTRY

            self.backbone = BACKBONE_REGISTRY.build("timm_resnet18", in_chans=3)
            self.decoder = DECODER_REGISTRY.build("smp_Unet", self.backbone.out_channels)
            self.head = nn.Conv2d(self.decoder.out_channels, CLASSES, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.head(self.decoder(self.backbone(x)))
            return F.interpolate(y, size=x.shape[-2:], mode="bilinear")

    torch.manual_seed(0)
    model = {"tiny": TinySegNet, "unet18": RegistryUnet}[name]()
    return model.eval()


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(args: argparse.Namespace) -> None:
    """One scene in this fresh process; prints one JSON line of figures."""
    import torch

    from geofm.inference.streaming import predict_scene
    from geofm.inference.tiling import plan_tiles
    from geofm.models.preprocess import Preprocess

    model = build_model(args.model)
    mean, std = 9000.0, 2000.0
    # The preprocessing every geofm route runs (nodata fill, normalisation).
    preprocess = Preprocess(mean=[mean] * 3, std=[std] * 3)

    tile = args.tile
    batch = torch.randn(args.batch_size, 3, tile, tile) * std + mean
    with torch.inference_mode():
        model(preprocess(batch))  # warm up allocator and kernels before the baseline
    baseline = _peak_rss_mb()

    size = rasterio_size(args.scene)
    tiles = len(plan_tiles(size, size, tile, overlap=args.overlap))
    n_model = tiles if args.model_only_tiles <= 0 else min(tiles, args.model_only_tiles)

    def model_only(n: int) -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            for done in range(0, n, args.batch_size):
                model(preprocess(batch[: min(args.batch_size, n - done)]))
        return time.perf_counter() - start

    # Half of the model-only timing before the pipeline, half after: other load on the
    # machine then weighs on both alike.
    model_time = model_only(n_model // 2)

    forward_s = 0.0

    def timed_model(x: torch.Tensor) -> torch.Tensor:
        # Time spent in the model inside the pipeline, under the same machine load.
        nonlocal forward_s
        begin = time.perf_counter()
        y = model(x)
        forward_s += time.perf_counter() - begin
        return y

    start = time.perf_counter()
    out = predict_scene(
        timed_model,
        args.scene,
        Path(args.scene).with_suffix(".pred.tif"),
        model_id=args.model,
        preprocess=preprocess,
        tile_size=tile,
        overlap=args.overlap,
        batch_size=args.batch_size,
        num_workers=args.workers,
        progress=False,
    )
    wall = time.perf_counter() - start
    peak = _peak_rss_mb()
    model_time += model_only(n_model - n_model // 2)
    model_time *= tiles / n_model
    import rasterio

    with rasterio.open(args.scene) as src, rasterio.open(out) as dst:
        if (dst.width, dst.height, dst.transform) != (src.width, src.height, src.transform):
            raise RuntimeError(f"{out} is not on the grid of {args.scene}")
    print(
        json.dumps(
            {
                "size": size,
                "tiles": tiles,
                "wall_s": wall,
                "tiles_per_s": tiles / wall,
                "baseline_mb": baseline,
                "peak_mb": peak,
                "model_s": model_time,
                "model_tiles_per_s": tiles / model_time,
                "forward_share": forward_s / wall,
                "model_timed_tiles": n_model,
            }
        )
    )


def rasterio_size(path: str) -> int:
    import rasterio

    with rasterio.open(path) as src:
        return src.width


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        default=bool(os.environ.get("GEOFM_BENCH_QUICK")),
        help="small scenes for a short run (or GEOFM_BENCH_QUICK=1)",
    )
    parser.add_argument("--sizes", type=int, nargs="+", help="scene sides in pixels")
    parser.add_argument("--model", choices=["tiny", "unet18"], default="tiny")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="reader threads")
    parser.add_argument(
        "--model-only-tiles",
        type=int,
        default=0,
        help="time the model alone on this many tiles and scale (0: all tiles)",
    )
    parser.add_argument("--workdir", type=Path, help="keep mosaics here between runs")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scene", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if not LANDSAT.is_file():
        print(f"Skipped: the Landsat scene is not at {LANDSAT} (see ../shared/data/README.md).")
        return
    sizes = args.sizes or ([1024, 2048] if args.quick else [2048, 8192, 16384])
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="geofm-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"model={args.model} tile={args.tile} overlap={args.overlap} batch={args.batch_size} "
        f"workers={args.workers} torch threads: default; mosaics in {workdir}"
    )
    print(
        "model tiles/s: the model alone on as many tiles (half timed before the scene, half "
        "after); in-model: share of the pipeline's wall time spent in the model's forward; "
        "base MB: peak resident memory after loading the model and one warm-up batch; "
        "peak MB: after the scene"
    )
    print(
        f"{'size':>6} {'tiles':>6} {'build s':>8} {'wall s':>8} {'tiles/s':>8} "
        f"{'model tiles/s':>13} {'pipeline/model':>14} {'in-model':>8} {'base MB':>8} "
        f"{'peak MB':>8}"
    )
    rows = []
    try:
        for size in sizes:
            scene = workdir / f"mosaic_{size}.tif"
            start = time.perf_counter()
            if not scene.exists():
                build_mosaic(size, scene)
            build = time.perf_counter() - start
            command = [
                sys.executable,
                __file__,
                "--child",
                "--scene",
                str(scene),
                "--model",
                args.model,
                "--tile",
                str(args.tile),
                "--overlap",
                str(args.overlap),
                "--batch-size",
                str(args.batch_size),
                "--workers",
                str(args.workers),
                "--model-only-tiles",
                str(args.model_only_tiles),
            ]
            result = subprocess.run(command, check=True, capture_output=True, text=True)
            r = json.loads(result.stdout.strip().splitlines()[-1])
            rows.append(r)
            print(
                f"{size:>6} {r['tiles']:>6} {build:>8.1f} {r['wall_s']:>8.1f} "
                f"{r['tiles_per_s']:>8.2f} {r['model_tiles_per_s']:>13.2f} "
                f"{r['tiles_per_s'] / r['model_tiles_per_s']:>14.0%} "
                f"{r['forward_share']:>8.0%} {r['baseline_mb']:>8.0f} {r['peak_mb']:>8.0f}",
                flush=True,
            )
            (workdir / f"mosaic_{size}.pred.tif").unlink(missing_ok=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if len(rows) > 1:
        growth = rows[-1]["peak_mb"] / rows[0]["peak_mb"] - 1
        ratios = ", ".join(f"{r['tiles_per_s'] / r['model_tiles_per_s']:.0%}" for r in rows)
        print(
            f"peak memory {rows[0]['size']} -> {rows[-1]['size']}: {growth:+.1%} "
            f"(target < +20 %); pipeline/model throughput: {ratios} (target >= 85 %)"
        )


if __name__ == "__main__":
    main()
