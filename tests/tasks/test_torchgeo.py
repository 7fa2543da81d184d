"""A real TorchGeo datamodule, reading generated GeoTIFFs, feeds a geofm task through Lightning."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback
from torchgeo.datamodules import NonGeoDataModule
from torchgeo.datasets import NonGeoDataset

from geofm.tasks import SemanticSegmentationTask
from tests.data.fixtures import write_tif

SIZE = 32


class ChipFolder(NonGeoDataset):
    """A TorchGeo dataset of ``root/<split>/chip_<i>.tif`` (RGB uint8) and ``mask_<i>.tif``.

    Samples follow TorchGeo's convention: ``image`` ``(3, H, W)`` float32 in [0, 255] and
    ``mask`` ``(H, W)`` int64.
    """

    def __init__(
        self,
        root: Path,
        split: str = "train",
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ):
        self.images = sorted((Path(root) / split).glob("chip_*.tif"))
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        path = self.images[index]
        with rasterio.open(path) as src:
            image = torch.from_numpy(src.read().astype(np.float32))
        with rasterio.open(path.with_name(path.name.replace("chip_", "mask_"))) as src:
            mask = torch.from_numpy(src.read(1).astype(np.int64))
        sample = {"image": image, "mask": mask}
        return self.transforms(sample) if self.transforms is not None else sample


class ChipDataModule(NonGeoDataModule):
    """TorchGeo's ``NonGeoDataModule`` (its own loaders and /255 batch normalisation)."""

    def __init__(self, root: Path, batch_size: int = 2):
        super().__init__(ChipFolder, batch_size=batch_size, num_workers=0, root=root)


def make_chips(root: Path, per_split: int = 4) -> None:
    """Random RGB chips whose class is "red above 127", so a model can learn it."""
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        for i in range(per_split):
            image = rng.integers(0, 256, (3, SIZE, SIZE)).astype(np.uint8)
            write_tif(root / split / f"chip_{i}.tif", image)
            write_tif(root / split / f"mask_{i}.tif", (image[0] > 127).astype(np.uint8))


class BatchRecorder(Callback):
    """Keeps the training batches as the task receives them (after TorchGeo's batch aug)."""

    def __init__(self) -> None:
        self.batches: list[dict[str, Any]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches.append({key: value.clone() for key, value in batch.items()})


def test_torchgeo_datamodule_feeds_segmentation_task(tmp_path):
    make_chips(tmp_path)
    dm = ChipDataModule(tmp_path)
    task = SemanticSegmentationTask(
        model_args={
            "backbone": "timm_resnet18",
            "decoder": "smp_Unet",
            "backbone_in_chans": 3,
            "decoder_decoder_channels": [32, 16, 16, 8, 8],
        },
        num_classes=2,
        lr=1e-3,
    )
    before = {name: p.detach().clone() for name, p in task.model.named_parameters()}
    record = BatchRecorder()
    trainer = Trainer(
        fast_dev_run=2,
        accelerator="cpu",
        devices=1,
        callbacks=[record],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(task, datamodule=dm)

    # TorchGeo's batch format reached the task: (B, C, H, W) float scaled by 1/255, (B, H, W) masks.
    assert len(record.batches) == 2
    for batch in record.batches:
        assert batch["image"].shape == (2, 3, SIZE, SIZE) and batch["image"].dtype == torch.float32
        assert 0.0 <= float(batch["image"].min()) and float(batch["image"].max()) <= 1.0
        assert batch["mask"].shape == (2, SIZE, SIZE) and batch["mask"].dtype == torch.int64
    # Two optimizer steps moved the weights, and they stayed finite.
    changed = [
        name for name, p in task.model.named_parameters() if not torch.equal(p.detach(), before[name])
    ]
    assert changed and any(name.startswith("encoder.") for name in changed)
    assert all(torch.isfinite(p).all() for p in task.model.parameters())
    for key in ("train/loss", "val/loss", "val/mIoU"):
        assert math.isfinite(float(trainer.callback_metrics[key])), key

    results = trainer.validate(task, datamodule=dm)[0]
    assert math.isfinite(results["val/loss"]) and results["val/loss"] > 0
    assert 0.0 <= results["val/mIoU"] <= 1.0
