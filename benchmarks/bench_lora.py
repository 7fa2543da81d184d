"""LoRA: trainable fraction on ViT backbones, and full fine-tuning vs LoRA on the flood chip.

1. Parameter counts (built on the meta device: no memory, no weights) of Prithvi-EO tiny and
   Prithvi-EO-2.0 300M segmentation models with rank-8 LoRA on the attention layers
   (``attn.qkv``, ``attn.proj``): trainable parameters against full fine-tuning's, for the
   whole model and for the backbone alone, and the size of the weights a checkpoint keeps.
2. The demo's flood example (``geofm/demo.py``: 64 px tiles carved from the Sen1Floods11 chip,
   ResNet-18 + U-Net, ``examples/sen1floods11_resnet_unet.yaml``) trained twice with the same
   schedule: full fine-tuning, and LoRA (rank 8 on every ``conv1``/``conv2`` of the ResNet)
   with the decoder and head trained. Prints the trainable fraction, the validation water IoU
   and the time of each.

No pretrained weights are reachable offline here, so both runs start from the same *random*
ResNet-18, saved as a weight file that the LoRA run refers to (built with
``zero_init_last=False``: timm's default zero scale on each block's last BatchNorm would leave
a frozen random backbone's blocks without gradient). LoRA adapts pretrained features; on a
random, frozen backbone (BatchNorm statistics included) it is expected to trail full
fine-tuning, and these figures say nothing about LoRA on Prithvi's or ImageNet's weights.

Run with ``make bench`` or ``python benchmarks/bench_lora.py [--epochs 30]``; prints figures,
asserts nothing.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
HLS = ["BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2"]
VIT_LORA = {"method": "lora", "r": 8, "alpha": 16, "target_modules": ["attn.qkv", "attn.proj"]}
CNN_LORA = {"method": "lora", "r": 8, "alpha": 16, "target_modules": ["conv1", "conv2"]}


def _mb(count: int) -> str:
    return f"{count * 4 / 2**20:,.1f} MB"


def vit_fractions() -> None:
    from geofm.models.factories.encoder_decoder import EncoderDecoderFactory
    from geofm.models.peft import apply_lora, lora_settings, parameter_summary

    print("Trainable parameters, rank-8 LoRA on attn.qkv + attn.proj (fp32 sizes)")
    print(f"{'backbone':<20} {'decoder':<28} {'trainable':>15} {'full':>10} {'fraction':>9} "
          f"{'backbone frac.':>14} {'checkpoint weights':>22}")
    necks = {
        "prithvi_eo_tiny": [1, 2, 3, 3],
        "prithvi_eo_v2_300": [5, 11, 17, 23],
    }
    decoders = {
        "UNetDecoder [256..32]": {"decoder": "UNetDecoder", "decoder_channels": [256, 128, 64, 32]},
        "UperNetDecoder 256": {"decoder": "UperNetDecoder", "decoder_channels": 256},
        "FCNDecoder 256 (last)": {"decoder": "FCNDecoder", "decoder_channels": 256},
    }
    for backbone, indices in necks.items():
        for label, decoder in decoders.items():
            neck = [{"name": "SelectIndices", "indices": indices}, {"name": "ReshapeTokensToImage"}]
            if decoder["decoder"] == "FCNDecoder":
                neck = [{"name": "SelectIndices", "indices": [indices[-1]]}, {"name": "ReshapeTokensToImage"}]
            elif decoder["decoder"] == "UNetDecoder":
                neck = [*neck, {"name": "InterpolateToPyramidal"}]
            else:
                neck = [*neck, {"name": "LearnedInterpolateToPyramidal"}]
            with torch.device("meta"):
                model = EncoderDecoderFactory().build_model(
                    "segmentation", backbone=backbone, backbone_bands=HLS, necks=neck,
                    num_classes=2, **decoder,
                )
                apply_lora(model, lora_settings(VIT_LORA))
            s = parameter_summary(model)
            first = model.encoder.patch_embed.proj.weight.numel() + model.encoder.patch_embed.proj.bias.numel()
            kept = s.trainable + first  # a checkpoint with a base file: trained part + first layer
            print(f"{backbone:<20} {label:<28} {s.trainable / 1e6:>13.2f} M {s.full / 1e6:>8.1f} M "
                  f"{100 * s.fraction:>8.2f}% {100 * s.backbone_fraction:>13.2f}% "
                  f"{_mb(kept):>10} vs {_mb(s.full):>9}")


def _train(
    config: dict, run: Path, tiles: Path, stats: Path, epochs: int
) -> tuple[float, float, object, int]:
    """Fit ``config`` on the demo's tiles and validate the best checkpoint.

    Returns:
        The water IoU, the fit's minutes, the task, and the checkpoint's size in bytes.
    """
    from geofm.cli_lightning import best_checkpoint, run_lightning_cli

    path = run / "config.yaml"
    run.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    common = [
        "-c", str(path),
        "--trainer.default_root_dir", str(run),
        "--trainer.max_epochs", str(epochs),
        "--trainer.check_val_every_n_epoch", str(min(10, epochs)),
        "--trainer.enable_progress_bar", "false",
        "--model.init_args.scheduler_hparams", yaml.safe_dump({"T_max": epochs}).strip(),
        "--data.init_args.train_data_root", str(tiles / "train"),
        "--data.init_args.val_data_root", str(tiles / "val"),
        "--data.init_args.test_data_root", str(tiles / "val"),
        "--data.init_args.means", str(stats),
        "--data.init_args.stds", str(stats),
    ]
    started = time.perf_counter()
    fit = run_lightning_cli(["fit", *common])
    minutes = (time.perf_counter() - started) / 60
    best = best_checkpoint(run / "checkpoints")
    validation = run_lightning_cli(["validate", *common, "--ckpt_path", str(best)])
    iou = float(validation.trainer.callback_metrics["val/IoU_water"])
    return iou, minutes, fit.model, best.stat().st_size


def flood_report(data_root: Path, epochs: int, workdir: Path) -> None:
    import timm

    from geofm.cli import main as geofm
    from geofm.demo import CHIP, carve_tiles
    from geofm.models.peft import parameter_summary

    chip = data_root / CHIP
    tiles = workdir / "tiles"
    counts = carve_tiles(chip, tiles)
    stats = workdir / "statistics.yaml"
    config_path = REPO / "examples" / "sen1floods11_resnet_unet.yaml"
    geofm(["compute-statistics", "-c", str(config_path), "-o", str(stats),
           "--data.init_args.train_data_root", str(tiles / "train"),
           "--data.init_args.means", "null", "--data.init_args.stds", "null"])
    torch.manual_seed(0)
    base = workdir / "resnet18_random.pth"
    torch.save(timm.create_model("resnet18", zero_init_last=False).state_dict(), base)
    config = yaml.safe_load(config_path.read_text())
    config["model"]["init_args"]["model_args"].update(backbone_ckpt_path=str(base))
    config["trainer"]["logger"] = False
    full = yaml.safe_load(yaml.safe_dump(config))
    lora = yaml.safe_load(yaml.safe_dump(config))
    lora["model"]["init_args"]["peft"] = CNN_LORA

    results = {}
    for name, cfg in (("full fine-tuning", full), ("LoRA r=8 conv1/conv2", lora)):
        iou, minutes, task, size = _train(cfg, workdir / name.split()[0], tiles, stats, epochs)
        summary = parameter_summary(task.model)
        results[name] = (summary.trainable, summary.full, iou, minutes, size)
    print()
    print(f"Flood example: {counts['train']} training / {counts['val']} validation tiles of 64 px, "
          f"ResNet-18 + U-Net, {epochs} epochs, same schedule; random ResNet-18 base (see caveat)")
    print(f"{'run':<24} {'trainable':>12} {'of':>10} {'fraction':>9} {'val water IoU':>14} "
          f"{'fit time':>9} {'checkpoint':>11}")
    for name, (trainable, full_count, iou, minutes, size) in results.items():
        print(f"{name:<24} {trainable / 1e6:>10.2f} M {full_count / 1e6:>8.2f} M "
              f"{100 * trainable / full_count:>8.1f}% {iou:>14.4f} {minutes:>7.1f} min "
              f"{size / 2**20:>8.1f} MB")
    print("Caveat: no pretrained weights offline; LoRA on a random frozen backbone is expected to "
          "trail full fine-tuning.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--skip-flood", action="store_true", help="print the parameter counts only")
    args = parser.parse_args(argv)
    sys.argv = sys.argv[:1]  # the geofm commands below get their arguments from us
    logging.getLogger("lightning").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    vit_fractions()
    if args.skip_flood:
        return 0
    data_root = args.data_root
    if not (data_root / "sen1floods11_sample").is_dir() and (REPO.parent.parent / "shared" / "data").is_dir():
        data_root = REPO.parent.parent / "shared" / "data"  # a worktree beside the checkout
    with tempfile.TemporaryDirectory(prefix="bench_lora_") as workdir:
        flood_report(data_root, args.epochs, Path(workdir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
