"""TorchGeo datamodules feed the tasks unchanged (skipped when torchgeo is not installed)."""

from __future__ import annotations

import math

import pytest
import torch

from geofm.tasks import SemanticSegmentationTask

from .helpers import TinyPixelModel, make_samples, trainer

torchgeo = pytest.importorskip("torchgeo", reason="torchgeo is not installed (pip install 'geofm[torchgeo]')")


def test_nongeo_datamodule_feeds_segmentation():
    from torchgeo.datamodules import NonGeoDataModule
    from torchgeo.datasets import NonGeoDataset

    class TinyDataset(NonGeoDataset):
        def __init__(self, split: str = "train"):
            self.samples = [
                {"image": s["image"] / 1000 * 255, "mask": s["mask"]}
                for s in make_samples("segmentation", n=4, bands=3, seed={"train": 0, "val": 1, "test": 2}[split])
            ]

        def __len__(self) -> int:
            return len(self.samples)

        def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
            return dict(self.samples[index])

    dm = NonGeoDataModule(TinyDataset, batch_size=2)
    model = TinyPixelModel(in_chans=3)
    task = SemanticSegmentationTask(model=model, num_classes=3)
    t = trainer()
    t.fit(task, datamodule=dm)
    assert math.isfinite(float(t.callback_metrics["val/mIoU"]))
    # TorchGeo's own batch augmentation (divide by 255) ran before the task's step
    assert float(model.seen[-1].max()) <= 1.0
    assert "test/mIoU" in t.test(task, datamodule=dm)[0]
