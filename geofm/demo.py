"""The README's first command (``make demo``): map water on a real Sentinel-2 flood chip.

1. Carve the 512 x 512 Sen1Floods11 chip into 64 x 64 tiles by spatial blocks: one block in
   every 2 x 2 group of blocks validates (those with (row + 2 * column) % 4 == 0), the others
   train; no pixel is in both.
2. ``geofm compute-statistics`` on the training tiles, then ``geofm fit`` with
   ``examples/sen1floods11_resnet_unet.yaml``.
3. ``geofm validate`` with the best checkpoint (prints the water IoU), and
   ``geofm predict`` on the whole chip: a georeferenced water map on the chip's exact grid.
4. A PNG with RGB | label | prediction.

Everything goes under ``runs/demo`` (``--run-dir``); the data folder is a setting.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "examples" / "sen1floods11_resnet_unet.yaml"
CHIP = "sen1floods11_sample"
STEM = "Spain_7370579"

log = logging.getLogger("geofm.demo")


def carve_tiles(chip_dir: Path, out_dir: Path, block: int = 64) -> dict[str, int]:
    """Write the chip's S2 image and label as ``block``-pixel tiles under train/ and val/.

    Block (row, column) goes to ``val`` when ``(row + 2 * column) % 4 == 0``, else to
    ``train``: exactly one block of every 2 x 2 group, so validation covers the whole chip. Each tile keeps
    its georeferencing (the window's transform).

    Returns:
        Number of tiles per split.
    """
    import rasterio
    from rasterio.windows import Window

    counts = {"train": 0, "val": 0}
    sources = {"S2Hand": chip_dir / f"{STEM}_S2Hand.tif", "LabelHand": chip_dir / f"{STEM}_LabelHand.tif"}
    for path in sources.values():
        if not path.is_file():
            raise FileNotFoundError(
                f"The demo needs {path}; pass --data-root to the folder that holds '{CHIP}/'."
            )
    with rasterio.open(sources["S2Hand"]) as image, rasterio.open(sources["LabelHand"]) as label:
        if (image.width, image.height) != (label.width, label.height):
            raise ValueError(f"{sources['S2Hand']} and {sources['LabelHand']} differ in size.")
        rows, cols = image.height // block, image.width // block
        for r in range(rows):
            for c in range(cols):
                split = "val" if (r + 2 * c) % 4 == 0 else "train"
                window = Window(c * block, r * block, block, block)
                (out_dir / split).mkdir(parents=True, exist_ok=True)
                for kind, src in (("S2Hand", image), ("LabelHand", label)):
                    profile = {
                        **src.profile,
                        "width": block,
                        "height": block,
                        "transform": src.window_transform(window),
                        "tiled": False,
                        "compress": "deflate",
                    }
                    profile.pop("blockxsize", None)
                    profile.pop("blockysize", None)
                    target = out_dir / split / f"{STEM}_r{r}c{c}_{kind}.tif"
                    with rasterio.open(target, "w", **profile) as dst:
                        dst.write(src.read(window=window))
                counts[split] += 1
    return counts


def render_png(chip_dir: Path, prediction: Path, out_png: Path) -> None:
    """RGB | label | prediction side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import rasterio

    with rasterio.open(chip_dir / f"{STEM}_S2Hand.tif") as src:
        rgb = src.read([4, 3, 2]).astype("float32").transpose(1, 2, 0)
    with rasterio.open(chip_dir / f"{STEM}_LabelHand.tif") as src:
        label = src.read(1)
    with rasterio.open(prediction) as src:
        pred = src.read(1, masked=True)
    low, high = np.percentile(rgb[rgb > 0], [2, 98]) if (rgb > 0).any() else (0, 1)
    rgb = np.clip((rgb - low) / max(high - low, 1e-6), 0, 1)
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.4))
    axes[0].imshow(rgb)
    axes[0].set_title("Sentinel-2 RGB")
    axes[1].imshow(np.ma.masked_less(label, 0), cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    axes[1].set_title("hand label (water)")
    axes[2].imshow(pred, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    axes[2].set_title("prediction (water)")
    for ax in axes:
        ax.set_axis_off()
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data", help="folder holding sen1floods11_sample/")
    parser.add_argument("--run-dir", type=Path, default=Path("runs/demo"))
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--max-epochs", type=int, default=None, help="override the config's trainer.max_epochs")
    args = parser.parse_args(argv)
    # Our messages only: Lightning configures its own logger, and the root would repeat it.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger("geofm").addHandler(handler)
    logging.getLogger("geofm").setLevel(logging.INFO)
    # The geofm commands below get their arguments from us, not from this script's argv.
    sys.argv = sys.argv[:1]

    from geofm.cli import main as geofm

    chip_dir = (args.data_root / CHIP).resolve()
    run = args.run_dir.resolve()
    tiles = run / "tiles"
    started = time.perf_counter()
    counts = carve_tiles(chip_dir, tiles)
    log.info("Carved %s into %d training and %d validation tiles under %s", chip_dir, counts["train"], counts["val"], tiles)

    common = [
        "-c", str(args.config),
        "--trainer.default_root_dir", str(run / "train"),
        "--data.init_args.train_data_root", str(tiles / "train"),
        "--data.init_args.val_data_root", str(tiles / "val"),
        "--data.init_args.test_data_root", str(tiles / "val"),
        "--data.init_args.predict_data_root", str(chip_dir),
        "--data.init_args.means", str(run / "statistics.yaml"),
        "--data.init_args.stds", str(run / "statistics.yaml"),
    ]
    geofm([
        "compute-statistics", "-c", str(args.config), "-o", str(run / "statistics.yaml"),
        "--data.init_args.train_data_root", str(tiles / "train"),
        "--data.init_args.means", "null", "--data.init_args.stds", "null",
    ])
    epochs = []
    if args.max_epochs:
        epochs = ["--trainer.max_epochs", str(args.max_epochs),
                  "--trainer.check_val_every_n_epoch", str(min(10, args.max_epochs))]
    shutil.rmtree(run / "train" / "checkpoints", ignore_errors=True)  # no stale best-*.ckpt
    geofm(["fit", *common, *epochs])
    from geofm.cli_lightning import best_checkpoint, run_lightning_cli

    best = best_checkpoint(run / "train" / "checkpoints")

    validation = run_lightning_cli(["validate", *common, "--ckpt_path", str(best)])
    metrics = {k: float(v) for k, v in validation.trainer.callback_metrics.items()}
    predictions = run / "predictions"
    geofm(["predict", *common, "--ckpt_path", str(best), "--predict_output_dir", str(predictions)])
    water_map = predictions / f"{STEM}_S2Hand_pred.tif"
    png = run / "demo.png"
    render_png(chip_dir, water_map, png)

    minutes = (time.perf_counter() - started) / 60
    print()
    print(f"validation water IoU: {metrics.get('val/IoU_water', float('nan')):.4f}  "
          f"(mIoU {metrics.get('val/mIoU', float('nan')):.4f}, held-out 64 px blocks)")
    print(f"water map (GeoTIFF on the chip's grid): {water_map}")
    print(f"figure (RGB | label | prediction):      {png}")
    print(f"checkpoint: {best}")
    print(f"total time: {minutes:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
