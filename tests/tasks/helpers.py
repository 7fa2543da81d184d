"""Tiny models, batches and datamodules for the task tests (all generated here, seeded)."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningDataModule, Trainer
from torch import nn
from torch.utils.data import DataLoader, Dataset

from geofm.models.model import Model, ModelOutput

SIZE = 32


class TinyPixelModel(Model):
    """conv encoder -> conv decoder -> 1x1 head; ``out_channels`` 0 means regression ``(B, H, W)``."""

    def __init__(self, in_chans: int = 4, out_channels: int = 3, aux: tuple[str, ...] = ()):
        super().__init__()
        self.regression = out_channels == 0
        classes = 1 if self.regression else out_channels
        self.encoder = nn.Sequential(nn.Conv2d(in_chans, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.decoder = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(8, classes, 1)
        self.aux_heads = nn.ModuleDict({name: nn.Conv2d(8, classes, 1) for name in aux})
        self.seen: list[torch.Tensor] = []  # inputs of forward, for tests that check them

    def forward(self, x: torch.Tensor, **kwargs: Any) -> ModelOutput:
        self.seen.append(x.detach().clone())
        features = self.encoder(x)
        out = self.head(self.decoder(features))
        aux = {name: head(features) for name, head in self.aux_heads.items()}
        if self.regression:
            return ModelOutput(out.squeeze(1), {k: v.squeeze(1) for k, v in aux.items()})
        return ModelOutput(out, aux)


class TinyClassifier(Model):
    def __init__(self, in_chans: int = 4, num_classes: int = 3):
        super().__init__()
        self.encoder = nn.Conv2d(in_chans, 8, 3, padding=1)
        self.decoder = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor, **kwargs: Any) -> ModelOutput:
        return ModelOutput(self.head(self.decoder(self.encoder(x)).flatten(1)))


class FixedOutputModel(Model):
    """Returns ``outputs[i]`` on its i-th call (cycling), whatever the input: metrics we control."""

    def __init__(self, outputs: list[torch.Tensor]):
        super().__init__()
        self.outputs = outputs
        self.calls = 0
        self.weight = nn.Parameter(torch.zeros(()))  # something for the optimizer
        self.seen: list[tuple[torch.Tensor, dict[str, Any]]] = []

    def forward(self, x: torch.Tensor, **kwargs: Any) -> ModelOutput:
        self.seen.append((x.detach().clone(), kwargs))
        out = self.outputs[self.calls % len(self.outputs)].to(x.device)
        self.calls += 1
        return ModelOutput(out + self.weight * 0)


class DictDataset(Dataset):
    """Samples of dict-of-tensors (and metadata lists), like a TorchGeo dataset."""

    def __init__(self, samples: list[dict[str, Any]]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.samples[index]


def make_samples(
    kind: str, n: int = 4, bands: int = 4, num_classes: int = 3, seed: int = 0, ignore_index: int | None = None
) -> list[dict[str, Any]]:
    """``n`` samples of ``kind`` ``"segmentation"``, ``"regression"``, ``"classification"``, ``"multilabel"``."""
    gen = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(n):
        sample: dict[str, Any] = {
            "image": torch.rand(bands, SIZE, SIZE, generator=gen) * 1000,
            "filename": f"chip_{i}.tif",
            "crs": "EPSG:32614",
            "transform": (30.0, 0.0, 500000.0 + i * 960, 0.0, -30.0, 4000000.0),
        }
        if kind == "segmentation":
            mask = torch.randint(0, num_classes, (SIZE, SIZE), generator=gen)
            if ignore_index is not None:
                mask[:2, :2] = ignore_index
            sample["mask"] = mask
        elif kind == "regression":
            sample["mask"] = torch.rand(SIZE, SIZE, generator=gen)
        elif kind == "classification":
            sample["label"] = torch.randint(0, num_classes, (), generator=gen)
        elif kind == "multilabel":
            sample["label"] = torch.randint(0, 2, (num_classes,), generator=gen)
        samples.append(sample)
    return samples


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors, keep other values as lists (TorchGeo's collate does the same)."""
    batch: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        batch[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return batch


class DictDataModule(LightningDataModule):
    """In-memory datamodule with ``means``/``stds``/``constant_scale`` like geofm's."""

    def __init__(
        self,
        samples: list[dict[str, Any]],
        batch_size: int = 2,
        means: list[float] | None = None,
        stds: list[float] | None = None,
    ):
        super().__init__()
        self.samples = samples
        self.batch_size = batch_size
        self.means = means
        self.stds = stds
        self.constant_scale = 1.0

    def _loader(self) -> DataLoader:
        return DataLoader(DictDataset(self.samples), batch_size=self.batch_size, collate_fn=collate)

    def train_dataloader(self) -> DataLoader:
        return self._loader()

    def val_dataloader(self) -> DataLoader:
        return self._loader()

    def test_dataloader(self) -> DataLoader:
        return self._loader()

    def predict_dataloader(self) -> DataLoader:
        return self._loader()


def trainer(**kwargs: Any) -> Trainer:
    """A quiet CPU trainer: one epoch, two batches per stage, no checkpoints."""
    defaults: dict[str, Any] = {
        "max_epochs": 1,
        "limit_train_batches": 2,
        "limit_val_batches": 2,
        "limit_test_batches": 2,
        "limit_predict_batches": 2,
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "log_every_n_steps": 1,
    }
    defaults.update(kwargs)
    return Trainer(**defaults)
