"""Streamed scene embeddings: tiles (chips) per second and peak memory on the Landsat scene.

Embeds ``../shared/data/landsat8_scene`` (2041 x 1860, 3 bands) with ``timm_resnet18`` through
:func:`geofm.inference.embedding_scenes.embed_scene` (tiles aligned to the 32-pixel feature grid,
pooled rows per tile, the 512-band patch-grid GeoTIFF and one row per patch), and, to show that
memory does not grow with the scene's area, a mosaic of mirrored copies four times as large
(``bench_inference.build_mosaic``). Each case runs in a fresh subprocess, so its peak RSS is its
own. Prints figures, asserts nothing.

    python benchmarks/bench_embed.py                # the scene and a 4096 x 4096 mosaic
    python benchmarks/bench_embed.py --quick        # the scene only
    python benchmarks/bench_embed.py --tile 256 --overlap 64 --layer -1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCENE = "LC08_L1TP_224078_20200518_20200518_01_RT.TIF"
LANDSAT = HERE.parent / ".." / "shared" / "data" / "landsat8_scene" / SCENE


def _landsat() -> Path:
    # ../shared beside the checkout, or a level up (a worktree in a folder of worktrees).
    for base in (HERE.parent.parent, HERE.parent.parent.parent):
        path = base / "shared" / "data" / "landsat8_scene" / LANDSAT.name
        if path.is_file():
            return path
    raise SystemExit(
        f"Landsat scene not found at {LANDSAT}: check out ../shared beside the repository."
    )


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_case(scene: str, out: str, tile: int, overlap: int, layer: int, batch: int) -> dict:
    """Embed one scene in this process; figures as a dict."""
    import rasterio
    import torch

    from geofm.inference.embedding import feature_stride
    from geofm.inference.embedding_scenes import embed_scene, plan_patch_tiles
    from geofm.tasks.embedding import EmbeddingTask

    torch.manual_seed(0)
    task = EmbeddingTask(
        model_args={"backbone": "timm_resnet18", "backbone_in_chans": 3}, layer=layer, output="both"
    )
    task.configure_preprocess(None)
    baseline = _peak_rss_mb()
    with rasterio.open(scene) as src:
        height, width = src.height, src.width
    stride = feature_stride(task.predictor, 3, (tile, tile), torch.device("cpu"))
    tiles = len(plan_patch_tiles(height, width, tile, overlap, stride))
    start = time.perf_counter()
    paths = embed_scene(task, scene, out, output="both", patch_rows=True, tile_size=tile,
                        overlap=overlap, batch_size=batch, num_workers=2, progress=False)
    seconds = time.perf_counter() - start
    return {
        "scene": f"{height} x {width}",
        "tiles": tiles,
        "seconds": round(seconds, 1),
        "tiles_per_s": round(tiles / seconds, 2),
        "mpx_per_s": round(height * width / seconds / 1e6, 3),
        "peak_rss_mb": round(_peak_rss_mb(), 0),
        "rss_over_model_mb": round(_peak_rss_mb() - baseline, 0),
        "outputs_mb": round(sum(Path(p).stat().st_size for p in paths.values()) / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the scene only, no mosaic")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument(
        "--layer", type=int, default=-1, help="ResNet-18 feature level (-1: stride 32, 512-D)"
    )
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--case", nargs=2, metavar=("SCENE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:  # the subprocess
        print(json.dumps(run_case(*args.case, args.tile, args.overlap, args.layer, args.batch)))
        return
    landsat = _landsat()
    with tempfile.TemporaryDirectory() as tmp:
        scenes = [landsat]
        if not (args.quick or os.environ.get("GEOFM_BENCH_QUICK")):
            sys.path.insert(0, str(HERE))
            import bench_inference

            bench_inference.LANDSAT = landsat  # the scene found above, wherever ../shared is
            mosaic = Path(tmp) / "mosaic_4096.tif"
            bench_inference.build_mosaic(4096, mosaic)
            scenes.append(mosaic)
        print(
            f"timm_resnet18 layer {args.layer}, tile {args.tile}, overlap {args.overlap}, "
            f"batch {args.batch}, torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}"
        )
        for scene in scenes:
            command = [
                sys.executable, __file__, "--case", str(scene), str(Path(tmp) / scene.stem),
                "--tile", str(args.tile), "--overlap", str(args.overlap),
                "--layer", str(args.layer), "--batch", str(args.batch),
            ]
            # This checkout's geofm, not an installed one.
            paths = [str(HERE.parent), os.environ.get("PYTHONPATH", "")]
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
            result = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
            figures = json.loads(result.stdout.strip().splitlines()[-1])
            print("  ".join(f"{k}={v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
