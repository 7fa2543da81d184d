"""LoRA on the real Sen1Floods11 chip: a few steps of `geofm fit` on its tiles, then `geofm
predict` on the whole chip from the trimmed checkpoint (base weights rebuilt from their file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import yaml

from geofm.cli_lightning import run_lightning_cli
from geofm.demo import STEM, carve_tiles
from geofm.tasks.peft_checkpoint import CHECKPOINT_KEY

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "examples" / "sen1floods11_resnet_unet.yaml"


def _chip_dir() -> Path | None:
    """``shared/data/sen1floods11_sample`` beside the checkout or beside its worktrees' folder."""
    for parent in (REPO.parent, REPO.parent.parent):
        path = parent / "shared" / "data" / "sen1floods11_sample"
        if (path / f"{STEM}_S2Hand.tif").is_file():
            return path
    return None


CHIP = _chip_dir()
pytestmark = pytest.mark.skipif(CHIP is None, reason="real Sen1Floods11 chip not found in ../shared/data")


def _statistics(folder: Path) -> tuple[list[float], list[float]]:
    stack = np.concatenate(
        [rasterio.open(p).read().reshape(13, -1) for p in sorted(folder.glob("*_S2Hand.tif"))], axis=1
    ).astype(np.float64)
    return stack.mean(axis=1).tolist(), (stack.std(axis=1) + 1e-6).tolist()


def test_lora_fine_tunes_and_predicts_the_flood_chip(tmp_path):
    import timm

    tiles = tmp_path / "tiles"
    carve_tiles(CHIP, tiles)
    # A ResNet-18 weight file to refer to (random: no pretrained weights are reachable here).
    torch.manual_seed(0)
    base = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18", zero_init_last=False).state_dict(), base)
    config = yaml.safe_load(CONFIG.read_text())
    model = config["model"]["init_args"]
    model["model_args"].update(backbone_pretrained=False, backbone_ckpt_path=str(base))
    model["peft"] = {"method": "lora", "r": 4, "alpha": 8, "target_modules": ["conv1", "conv2"]}
    means, stds = _statistics(tiles / "train")
    data = config["data"]["init_args"]
    data.update(
        train_data_root=str(tiles / "train"), val_data_root=str(tiles / "val"),
        test_data_root=str(tiles / "val"), predict_data_root=str(CHIP), means=means, stds=stds,
        batch_size=4,
    )
    config["trainer"].update(
        max_epochs=1, limit_train_batches=3, limit_val_batches=1, check_val_every_n_epoch=1,
        accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=str(tmp_path / "run"),
    )
    path = tmp_path / "lora.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = run_lightning_cli(["fit", "-c", str(path)])
    assert cli.trainer.global_step == 3
    summary = cli.model.peft_summary
    assert 0 < summary.backbone_fraction < 0.10
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint[CHECKPOINT_KEY]["base"]["file"] == str(base)
    # timm backbones sit under model.encoder.model.; the frozen base of the residual layers is
    # left out, only their LoRA weights are kept.
    layers = [k for k in checkpoint["state_dict"] if k.startswith("model.encoder.model.layer")]
    assert layers and all(".lora_" in k for k in layers)
    base_keys = checkpoint[CHECKPOINT_KEY]["base_keys"]
    assert "model.encoder.model.layer1.0.conv1.base_layer.weight" in base_keys

    out = tmp_path / "pred"
    run_lightning_cli(["predict", "-c", str(path), "--ckpt_path", str(last), "--predict_output_dir", str(out)])
    with rasterio.open(out / f"{STEM}_S2Hand_pred.tif") as pred, rasterio.open(CHIP / f"{STEM}_S2Hand.tif") as src:
        assert (pred.width, pred.height, pred.crs) == (src.width, src.height, src.crs)
        values = np.unique(pred.read(1))
    assert set(values.tolist()) <= {0, 1, 255}

    # geofm export merges the LoRA weights: the ONNX file holds no adapter and matches the task
    import onnx

    from geofm.cli import main as geofm

    model_file = tmp_path / "water.onnx"
    assert geofm(["export", "-c", str(path), "--ckpt_path", str(last), "-o", str(model_file)]) == 0
    names = [init.name for init in onnx.load(str(model_file)).graph.initializer]
    assert names and not any("lora" in name for name in names)
