"""MAEPretrainingTask end to end: GeoTIFF folders without labels, ``geofm fit``, the loss, the
reconstruction figure, multi-temporal TL batches, resuming, and fine-tuning from what it saved
(plus a few steps on the real HLS chip in ../shared/data)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback

from geofm.cli_lightning import run_lightning_cli
from geofm.data import GenericUnlabeledDataModule
from geofm.models.factories.mae import build_prithvi_mae
from geofm.models.mae.model import PrithviMAE
from geofm.tasks.mae import MAEPretrainingTask
from geofm.tasks.segmentation import SemanticSegmentationTask
from tests.data.fixtures import write_tif

from .helpers import TinyPixelModel, trainer
from .test_plotting import FigureLogger

REPO = Path(__file__).resolve().parents[2]
BANDS = ["BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2"]
TINY = {
    "backbone": "prithvi_eo_tiny",
    "backbone_img_size": 32,
    "decoder_embed_dim": 32,
    "decoder_depth": 1,
    "decoder_num_heads": 2,
}
DECODER = {k: v for k, v in TINY.items() if k.startswith("decoder")}
# ../shared/data beside the checkout, or beside the folder of its worktrees.
HLS_CHIP = next(
    (
        found
        for parent in (REPO.parent, REPO.parent.parent)
        if (found := parent / "shared" / "data" / "hls_chip" / "hls_chip_10band.tif").is_file()
    ),
    REPO.parent / "shared" / "data" / "hls_chip" / "hls_chip_10band.tif",
)


def smooth_images(root: Path, count: int, bands: int = 6, size: int = 32) -> list[Path]:
    """Reflectance-like images: per-band gradients and a bright square, seeded."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:size, 0:size] / size
    paths = []
    for i in range(count):
        image = np.empty((bands, size, size), np.float32)
        for b in range(bands):
            angle = rng.uniform(0, 2 * np.pi)
            image[b] = 1500 + 800 * b + 600 * (np.cos(angle) * rows + np.sin(angle) * cols)
        r, c = rng.integers(0, size - 8, 2)
        image[:, r : r + 8, c : c + 8] += 1200
        paths.append(write_tif(root / f"scene_{i}.tif", image))
    return paths


def datamodule(root: Path, **kwargs: Any) -> GenericUnlabeledDataModule:
    options = {"batch_size": 4, "train_data_root": root, "val_data_root": root}
    options["dataset_bands"] = BANDS
    return GenericUnlabeledDataModule(**{**options, **kwargs})


class Losses(Callback):
    def __init__(self) -> None:
        self.train: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.train.append(float(outputs["loss"]))


# ------------------------------------------------------------------------------ training
def test_loss_falls_on_a_tiny_synthetic_set(tmp_path: Path) -> None:
    torch.manual_seed(0)
    smooth_images(tmp_path / "images", 4)
    task = MAEPretrainingTask(model_args=TINY, lr=1e-3, mask_ratio=0.5)
    losses = Losses()
    run = trainer(max_epochs=12, limit_train_batches=1, limit_val_batches=0, callbacks=[losses])
    run.fit(task, datamodule=datamodule(tmp_path / "images"))
    assert len(losses.train) == 12 and all(np.isfinite(losses.train))
    first, last = np.mean(losses.train[:3]), np.mean(losses.train[-3:])
    assert last < 0.85 * first, losses.train


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_mask_ratio_norm_pix_loss_and_nodata_reach_the_loss() -> None:
    torch.manual_seed(0)
    image = torch.rand(2, 6, 32, 32) * 3000 + 500
    tasks = {
        (ratio, norm): MAEPretrainingTask(model_args=TINY, mask_ratio=ratio, norm_pix_loss=norm)
        for ratio, norm in ((0.5, True), (0.5, False), (0.75, True))
    }
    state = tasks[(0.5, True)].model.state_dict()
    for task in tasks.values():
        task.model.load_state_dict(state)
        task.configure_preprocess(None)
    losses = {}
    for key, task in tasks.items():
        loss, output, _ = task._mae_step({"image": image}, "val", batch_idx=3)
        assert output.mask.mean().item() == key[0]
        losses[key] = float(loss)
    assert losses[(0.5, True)] != losses[(0.5, False)]
    # Validation masks with the batch index's noise: the same loss twice.
    again, output, _ = tasks[(0.5, True)]._mae_step({"image": image}, "val", batch_idx=3)
    assert float(again) == losses[(0.5, True)]
    # A nodata pixel in a masked patch counts nowhere: NaN or any value behind nodata_mask.
    masked = int(output.mask[0].argmax())  # token index in the 2 x 2 grid
    row, col = divmod(masked, 2)
    nodata = image.clone()
    nodata[0, :, row * 16 + 3, col * 16 + 5] = float("nan")
    with_nan, _, _ = tasks[(0.5, True)]._mae_step({"image": nodata}, "val", batch_idx=3)
    assert torch.isfinite(with_nan) and float(with_nan) != losses[(0.5, True)]
    behind_mask = nodata.clone()
    behind_mask[0, :, row * 16 + 3, col * 16 + 5] = 9999.0
    flags = torch.zeros(2, 32, 32, dtype=torch.bool)
    flags[0, row * 16 + 3, col * 16 + 5] = True
    flagged, _, _ = tasks[(0.5, True)]._mae_step(
        {"image": behind_mask, "nodata_mask": flags}, "val", batch_idx=3
    )
    torch.testing.assert_close(flagged, with_nan)


def test_reconstruction_figure_is_logged(tmp_path: Path) -> None:
    smooth_images(tmp_path / "images", 4)
    logger = FigureLogger()
    task = MAEPretrainingTask(model_args=TINY, plot_on_val=1, rgb_indices=[2, 1, 0])
    trainer(logger=logger, limit_train_batches=1, limit_val_batches=1).fit(
        task, datamodule=datamodule(tmp_path / "images")
    )
    tags = [tag for tag, _, _ in logger.figures]
    assert tags == ["val/reconstruction_0"]
    figure = logger.figures[0][1]
    assert [ax.get_title() for ax in figure.axes] == ["input", "masked", "reconstruction"]


def test_reconstruction_keeps_visible_patches_and_fills_masked_ones() -> None:
    task = MAEPretrainingTask(model_args=TINY, norm_pix_loss=False)
    inputs = torch.randn(1, 6, 1, 32, 32)
    output = task.model(inputs, noise=torch.tensor([[0.1, 0.9, 0.8, 0.2]]))  # tokens 0, 3 kept
    reconstruction, masked = task.reconstruct(inputs, output)
    assert masked[0, 0, :16, :16].all().item() is False and masked[0, 0, :16, 16:].all()
    assert torch.equal(reconstruction[..., :16, :16], inputs[..., :16, :16])
    assert not torch.allclose(reconstruction[..., :16, 16:], inputs[..., :16, 16:])


def test_multi_temporal_tl_batches_pass_their_coordinates(tmp_path: Path, monkeypatch) -> None:
    rng = np.random.default_rng(1)
    for i in range(2):  # two dates per file, time-major: 12 bands
        image = rng.uniform(500, 3000, (12, 32, 32)).astype(np.float32)
        write_tif(tmp_path / "images" / f"tile{i}_20200105_20200617.tif", image)
    seen: list[dict[str, Any]] = []
    forward = PrithviMAE.forward

    def spy(self, x, temporal_coords=None, location_coords=None, **kwargs):
        seen.append({"x": tuple(x.shape), "time": temporal_coords, "location": location_coords})
        return forward(self, x, temporal_coords, location_coords, **kwargs)

    monkeypatch.setattr(PrithviMAE, "forward", spy)
    args = {**TINY, "backbone": "prithvi_eo_v2_tiny_tl", "backbone_num_frames": 2}
    task = MAEPretrainingTask(model_args=args)
    dm = datamodule(tmp_path / "images", batch_size=2, expand_temporal_dimension=True)
    trainer(limit_train_batches=1, limit_val_batches=1).fit(task, datamodule=dm)
    assert seen[0]["x"] == (2, 6, 2, 32, 32)
    dates = torch.tensor([[2020.0, 5.0], [2020.0, 169.0]])
    torch.testing.assert_close(seen[0]["time"][0].cpu(), dates)
    assert seen[0]["location"].shape == (2, 2)


# ------------------------------------------------------------------------------ saving
def test_cli_run_resumes_and_its_encoder_fine_tunes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    smooth_images(tmp_path / "images", 4)
    config = {
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "logger": False,
                    "enable_progress_bar": False, "default_root_dir": str(tmp_path / "run")},
        "model": {"class_path": "MAEPretrainingTask",
                  "init_args": {"model_args": TINY, "lr": 1e-3}},
        "data": {"class_path": "GenericUnlabeledDataModule",
                 "init_args": {"batch_size": 2, "train_data_root": str(tmp_path / "images"),
                               "val_data_root": str(tmp_path / "images"), "dataset_bands": BANDS}},
    }
    path = tmp_path / "mae.yaml"
    path.write_text(yaml.safe_dump(config))
    first = run_lightning_cli(["fit", "-c", str(path)])
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert last.is_file() and first.trainer.global_step == 2
    more = ["--trainer.max_epochs", "2", "--ckpt_path", "last"]
    resumed = run_lightning_cli(["fit", "-c", str(path), *more])
    assert resumed.trainer.global_step == 4
    pretrained = resumed.model.model
    initial = build_prithvi_mae("prithvi_eo_tiny", img_size=32, **DECODER)

    # The Lightning checkpoint, as it is, is a backbone_ckpt_path for fine-tuning.
    segmentation = SemanticSegmentationTask(
        model_args={
            "backbone": "prithvi_eo_tiny", "backbone_ckpt_path": str(last), "backbone_img_size": 32,
            "necks": [{"name": "SelectIndices", "indices": [3]}, {"name": "ReshapeTokensToImage"}],
            "decoder": "FCNDecoder", "num_classes": 2,
        }
    )
    encoder = segmentation.model.encoder.state_dict()
    for key, value in pretrained.encoder.state_dict().items():
        assert torch.equal(encoder[key], value), key
    qkv = pretrained.encoder.blocks[0].attn.qkv.weight
    assert not torch.equal(qkv, initial.encoder.blocks[0].attn.qkv.weight)  # it trained

    # ... and, decoder included, for more MAE pretraining from it.
    continued = build_prithvi_mae("prithvi_eo_tiny", ckpt_path=last, img_size=32, **DECODER)
    for key, value in pretrained.decoder.state_dict().items():
        assert torch.equal(continued.decoder.state_dict()[key], value), key

    # model.state_dict() is the official V2 layout: it loads as a backbone and as an MAE.
    official = tmp_path / "mae_official.pt"
    torch.save(pretrained.state_dict(), official)
    assert all(k.startswith(("encoder.", "decoder.")) for k in torch.load(official))
    again = build_prithvi_mae("prithvi_eo_tiny", ckpt_path=official, img_size=32, **DECODER)
    for key, value in pretrained.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("ratio", [0.0, 1.0, 1.5])
def test_mask_ratio_outside_zero_one_is_refused(ratio: float) -> None:
    message = rf"model.init_args.mask_ratio={ratio!r} must be between 0 and 1"
    with pytest.raises(ValueError, match=message):
        MAEPretrainingTask(model_args=TINY, mask_ratio=ratio)


def test_non_prithvi_models_are_refused() -> None:
    with pytest.raises(ValueError, match="MAE pretraining needs a Prithvi ViT backbone"):
        MAEPretrainingTask(model_args={"backbone": "timm_resnet18"})
    with pytest.raises(TypeError, match="trains a PrithviMAE, got TinyPixelModel"):
        MAEPretrainingTask(model=TinyPixelModel())


# ------------------------------------------------------------------------------ real data
def test_a_few_steps_on_crops_of_the_real_hls_chip(tmp_path: Path) -> None:
    assert HLS_CHIP.is_file(), f"real HLS chip not found at {HLS_CHIP}: check out ../shared"
    torch.manual_seed(0)
    dm = GenericUnlabeledDataModule(
        batch_size=1,
        train_data_root=HLS_CHIP.parent,
        val_data_root=HLS_CHIP.parent,
        img_grep=HLS_CHIP.name,
        output_bands=[2, 3, 4, 5, 6, 7],  # the file's HLS bands, 1-based
        train_transform=[
            {"class_path": "kornia.augmentation.RandomCrop", "init_args": {"size": [64, 64]}}
        ],
    )
    args = {**TINY, "backbone_img_size": 64, "backbone_bands": BANDS}
    task = MAEPretrainingTask(model_args=args, lr=1e-3, plot_on_val=1, rgb_indices=[2, 1, 0])
    losses, logger = Losses(), FigureLogger()
    run = trainer(
        max_epochs=4, logger=logger, limit_val_batches=1, check_val_every_n_epoch=4,
        callbacks=[losses],
    )
    run.fit(task, datamodule=dm)
    assert len(losses.train) == 4 and all(np.isfinite(losses.train))
    assert task.preprocess.source == "the backbone's pretraining statistics"
    assert [tag for tag, _, _ in logger.figures] == ["val/reconstruction_0"]
    assert np.isfinite(float(run.callback_metrics["val/loss"]))
