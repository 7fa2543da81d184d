"""A short MAE pretraining run on the real HLS chip: validation loss before and after, and a
reconstruction figure.

A ``prithvi_eo_tiny`` MAE (random start, small decoder) trains on random 64 x 64 crops of
``../shared/data/hls_chip/hls_chip_10band.tif`` (its bands 2-7, Prithvi's six HLS bands,
normalised with the Prithvi-EO-2.0 pretraining statistics), then validates on the whole
224 x 224 chip with the masking noise fixed. Run with ``make bench`` or
``python benchmarks/bench_mae.py [--steps 60] [--figure runs/mae_hls_chip.png]``; prints
figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

from geofm.data import GenericUnlabeledDataModule
from geofm.tasks import plotting
from geofm.tasks.mae import MAEPretrainingTask

REPO = Path(__file__).resolve().parents[1]
# ../shared/data beside the checkout, or beside the folder of its worktrees.
CHIP = next(
    (
        found
        for parent in (REPO.parent, REPO.parent.parent)
        if (found := parent / "shared" / "data" / "hls_chip" / "hls_chip_10band.tif").is_file()
    ),
    REPO.parent / "shared" / "data" / "hls_chip" / "hls_chip_10band.tif",
)
BANDS = ["BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chip", type=Path, default=CHIP)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--figure", type=Path, default=REPO / "runs" / "mae_hls_chip.png")
    args = parser.parse_args()
    if not args.chip.is_file():
        print(f"skipped: {args.chip} not found (check out ../shared beside the repository)")
        return
    logging.getLogger("lightning").setLevel(logging.ERROR)
    from lightning.pytorch import Trainer

    torch.manual_seed(0)
    dm = GenericUnlabeledDataModule(
        batch_size=1,
        train_data_root=args.chip.parent,
        val_data_root=args.chip.parent,
        img_grep=args.chip.name,
        output_bands=[2, 3, 4, 5, 6, 7],
        train_transform=[
            {"class_path": "kornia.augmentation.RandomCrop", "init_args": {"size": [64, 64]}},
            {"class_path": "kornia.augmentation.RandomHorizontalFlip", "init_args": {"p": 0.5}},
        ],
    )
    model_args = {
        "backbone": "prithvi_eo_tiny", "backbone_img_size": 64, "backbone_bands": BANDS,
        "decoder_embed_dim": 128, "decoder_depth": 2, "decoder_num_heads": 4,
    }
    task = MAEPretrainingTask(model_args=model_args, lr=1e-3, rgb_indices=[2, 1, 0])
    options = {"accelerator": "cpu", "logger": False, "enable_checkpointing": False,
               "enable_progress_bar": False, "enable_model_summary": False}
    before = Trainer(**options).validate(task, datamodule=dm, verbose=False)[0]["val/loss"]
    start = time.perf_counter()
    trainer = Trainer(max_epochs=args.steps, limit_val_batches=0, num_sanity_val_steps=0, **options)
    trainer.fit(task, datamodule=dm)
    seconds = time.perf_counter() - start
    after = Trainer(**options).validate(task, datamodule=dm, verbose=False)[0]["val/loss"]
    print(f"MAE on the HLS chip, prithvi_eo_tiny, {args.steps} steps of one 64 x 64 crop: "
          f"{seconds:.1f} s; val/loss (whole chip, mask 0.75, fixed noise) "
          f"{before:.3f} -> {after:.3f}")

    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    task.eval()
    inputs, reconstruction, masked = task.reconstruct_batch(batch)
    if plotting.matplotlib_available():
        shape = reconstruction.shape[-3:]
        image = inputs[0, :, : shape[0], : shape[1], : shape[2]]
        figure = plotting.plot_reconstruction(image, masked[0], reconstruction[0], [2, 1, 0])
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(args.figure, dpi=100, bbox_inches="tight")
        print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
