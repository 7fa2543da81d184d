"""Eager torch vs the onnxruntime engine: tiles/s on the same models and tiles, and file sizes.

For each model (random weights, 6 HLS bands, 224 x 224 tiles, 2 classes, preprocessing in front):

1. **Predictor**: the same batches of raw tiles through the torch
   :class:`~geofm.inference.predictor.Predictor` (preprocess, model, softmax) and through the
   ONNX one (the exported graph, softmax), timed after a warm-up; the largest difference in
   probabilities is printed too.
2. **Scene**: :func:`~geofm.inference.streaming.predict_scene` over a generated 6-band uint16
   scene with each engine (reading, blending and writing included), and whether the class maps
   agree.
3. **Sizes**: the exported ``.onnx`` (with any external data) and the torch state dict.

Prints figures, asserts nothing. Needs the ``onnx`` extra and onnxscript (the exporter).

    python benchmarks/bench_onnx.py                  # both models, a 1,024 px scene
    python benchmarks/bench_onnx.py --quick          # resnet18 + U-Net, a 448 px scene
    python benchmarks/bench_onnx.py --models prithvi --batch 8 --scene 2048

The files are exported with the tests' module exporter (``tests/inference/onnx_export.py``,
the same graph contract as ``geofm export`` but for a bare model and Preprocess, no task);
``prithvi_eo_tiny`` is exported with a fixed 224 x 224 input.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BANDS = ["BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2"]
MEANS = [1100.0, 1300.0, 1400.0, 2600.0, 2300.0, 1600.0]
STDS = [600.0, 650.0, 800.0, 900.0, 850.0, 750.0]
SIZE = 224


def build(name: str):  # type: ignore[no-untyped-def]
    """``(model, fixed_size)`` for a benchmark model name."""
    from geofm.registry import MODEL_FACTORY_REGISTRY

    factory = MODEL_FACTORY_REGISTRY.build("EncoderDecoderFactory")
    if name == "prithvi":
        model = factory.build_model(
            "segmentation",
            backbone="prithvi_eo_tiny",
            backbone_pretrained=False,
            backbone_img_size=SIZE,
            necks=[
                {"name": "SelectIndices", "indices": [0, 1, 2, 3]},
                {"name": "ReshapeTokensToImage"},
                {"name": "LearnedInterpolateToPyramidal"},
            ],
            decoder="UperNetDecoder",
            decoder_channels=256,
            num_classes=2,
        )
        return model.eval(), (SIZE, SIZE)
    if name == "unet18":
        model = factory.build_model(
            "segmentation",
            backbone="timm_resnet18",
            backbone_in_chans=len(BANDS),
            decoder="smp_Unet",
            num_classes=2,
        )
        return model.eval(), None
    raise ValueError(f"--models: unknown model {name!r}; choose prithvi, unet18.")


LABELS = {"prithvi": "prithvi_eo_tiny + UperNet", "unet18": "timm resnet18 + smp U-Net"}


def write_scene(path: Path, size: int) -> None:
    """A ``size`` x ``size`` 6-band uint16 scene with smooth fields and noise."""
    import numpy as np
    import rasterio
    from affine import Affine

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.sin(6 * xx) * np.cos(4 * yy)
    data = np.stack(
        [m + s * (base * (i + 1) / 3 + 0.3 * rng.standard_normal((size, size))) for i, (m, s) in enumerate(zip(MEANS, STDS))]
    )
    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": len(BANDS), "dtype": "uint16",
        "crs": "EPSG:32633", "transform": Affine(30.0, 0, 500_000.0, 0, -30.0, 4_200_000.0),
        "nodata": 0, "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate",
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.clip(data, 1, 10_000).astype(np.uint16))


def tiles_per_second(predictor, tiles, batch: int, repeats: int) -> float:  # type: ignore[no-untyped-def]
    """Tiles/s of ``predictor`` over ``tiles`` in batches, after one warm-up batch."""
    import torch

    with torch.inference_mode():
        predictor(tiles[:batch])
        start = time.perf_counter()
        for _ in range(repeats):
            for i in range(0, len(tiles), batch):
                predictor(tiles[i : i + batch])
        return repeats * len(tiles) / (time.perf_counter() - start)


def file_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.suffix != ".json") / 1e6


def bench(name: str, args: argparse.Namespace, folder: Path) -> None:
    import numpy as np
    import rasterio
    import torch

    from geofm.inference import Predictor, predict_scene
    from geofm.inference.onnx_engine import OnnxRuntimeModel
    from geofm.models.preprocess import Preprocess
    from tests.inference.onnx_export import export_onnx

    torch.manual_seed(0)
    model, fixed = build(name)
    preprocess = Preprocess(mean=MEANS, std=STDS)
    path = folder / f"{name}.onnx"
    start = time.perf_counter()
    export_onnx(
        path, model, preprocess, bands=BANDS, model_bands=BANDS, num_classes=2,
        fixed_size=fixed, tile={"size": SIZE, "overlap": SIZE // 8},
    )
    export_s = time.perf_counter() - start
    buffer = io.BytesIO()
    torch.save({**model.state_dict(), **preprocess.state_dict()}, buffer)
    params = sum(p.numel() for p in model.parameters())
    onnx_model = OnnxRuntimeModel(path)
    eager = Predictor(model, preprocess, "probabilities")
    ort = onnx_model.scene_predictor()

    generator = torch.Generator().manual_seed(0)
    tiles = torch.rand(args.tiles, len(BANDS), SIZE, SIZE, generator=generator) * 3000 + 100
    with torch.inference_mode():
        diff = (eager(tiles[: args.batch]) - ort(tiles[: args.batch])).abs().max().item()
    eager_tps = tiles_per_second(eager, tiles, args.batch, args.repeats)
    ort_tps = tiles_per_second(ort, tiles, args.batch, args.repeats)
    print(
        f"{LABELS[name]}: {params / 1e6:.1f} M parameters; export {export_s:.0f} s; "
        f"providers {onnx_model.providers}"
    )
    print(
        f"  predictor, batch {args.batch}: torch {eager_tps:6.2f} tiles/s   onnxruntime "
        f"{ort_tps:6.2f} tiles/s   ({ort_tps / eager_tps:.2f}x; max |dp| {diff:.1e})"
    )

    scene = folder / f"scene_{args.scene}.tif"
    if not scene.exists():
        write_scene(scene, args.scene)
    settings = {"batch_size": args.batch, "progress": False, "num_workers": 1}
    times, maps = {}, {}
    for engine, runner in (("torch", eager), ("onnxruntime", path)):
        out = folder / f"{name}_{engine}.tif"
        start = time.perf_counter()
        predict_scene(runner, scene, out, engine=engine, tile_size=SIZE, overlap=SIZE // 8, **settings)
        times[engine] = time.perf_counter() - start
        with rasterio.open(out) as src:
            maps[engine] = src.read(1)
    from geofm.inference.tiling import plan_tiles

    count = len(list(plan_tiles(args.scene, args.scene, SIZE, overlap=SIZE // 8)))
    agree = float(np.mean(maps["torch"] == maps["onnxruntime"]))
    print(
        f"  scene {args.scene} px ({count} tiles): torch {count / times['torch']:6.2f} tiles/s   "
        f"onnxruntime {count / times['onnxruntime']:6.2f} tiles/s   (class maps agree on "
        f"{agree:.4%} of pixels)"
    )
    print(
        f"  sizes: {path.name} {file_mb(path):.1f} MB   torch state dict "
        f"{buffer.getbuffer().nbytes / 1e6:.1f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="prithvi,unet18", help="comma-separated: prithvi, unet18")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--tiles", type=int, default=8, help="tiles per timed pass")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--scene", type=int, default=1024, help="scene side in pixels")
    parser.add_argument("--quick", action="store_true", help="unet18 only, a 448 px scene")
    args = parser.parse_args()
    if args.quick or os.environ.get("GEOFM_BENCH_QUICK"):
        args.models, args.scene, args.repeats = "unet18", 448, 1
    try:
        import onnxruntime
        import onnxscript  # noqa: F401 (torch.onnx.export's translator)
    except ImportError as err:
        print(f"skipped: {err.name} is not installed (pip install 'geofm[onnx]' onnxscript)")
        return
    import torch

    sys.path.insert(0, str(REPO))  # the tests' stand-in exporter
    print(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime "
        f"{onnxruntime.__version__} (its default threads), {os.cpu_count()} CPUs; "
        f"{SIZE} x {SIZE} tiles of {len(BANDS)} bands"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            bench(name.strip(), args, Path(tmp))


if __name__ == "__main__":
    main()
