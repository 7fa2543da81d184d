"""tiled_inference: one call to geofm.inference.tiled_forward, a clear error without it."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest
import torch
from torch import nn

from geofm.models.model import Model, ModelOutput
from geofm.tasks import PixelwiseRegressionTask, SemanticSegmentationTask

from .helpers import SIZE, DictDataModule, collate, make_samples, trainer


class PointwiseModel(Model):
    """1x1 convolutions only, so tiles give exactly the whole-image result."""

    def __init__(self, out_channels: int):
        super().__init__()
        self.encoder = nn.Conv2d(4, 8, 1)
        self.decoder = nn.Identity()
        self.head = nn.Conv2d(8, max(out_channels, 1), 1)
        self.regression = out_channels == 0

    def forward(self, x: torch.Tensor, **kwargs: Any) -> ModelOutput:
        out = self.head(torch.relu(self.encoder(x)))
        return ModelOutput(out.squeeze(1) if self.regression else out)


@pytest.fixture
def fake_inference(monkeypatch):
    """A stand-in geofm.inference whose tiled_forward cuts non-overlapping tiles."""
    calls = []

    def tiled_forward(fn, image, tile_size, overlap=0):
        calls.append((tuple(image.shape), tile_size, overlap))
        rows = []
        for top in range(0, image.shape[-2], tile_size):
            row = [fn(image[..., top:top + tile_size, left:left + tile_size])
                   for left in range(0, image.shape[-1], tile_size)]
            rows.append(torch.cat(row, dim=-1))
        return torch.cat(rows, dim=-2)

    module = types.ModuleType("geofm.inference")
    module.tiled_forward = tiled_forward
    monkeypatch.setitem(sys.modules, "geofm.inference", module)
    return calls


@pytest.mark.parametrize("task_class,kind,out", [(SemanticSegmentationTask, "segmentation", 3),
                                                 (PixelwiseRegressionTask, "regression", 0)])
def test_tiled_predictions_match_whole_image(fake_inference, task_class, kind, out):
    model = PointwiseModel(out)
    kwargs = {"num_classes": 3, "output_on_inference": "logits"} if kind == "segmentation" else {}
    whole = task_class(model=model, **kwargs)
    tiled = task_class(model=model, tiled_inference={"tile_size": 16, "overlap": 0}, **kwargs)
    dm = DictDataModule(make_samples(kind, n=2))
    key = "logits" if kind == "segmentation" else "prediction"
    expected = trainer().predict(whole, datamodule=dm)[0][key]
    got = trainer().predict(tiled, datamodule=dm)[0][key]
    assert fake_inference == [((2, 4, SIZE, SIZE), 16, 0)]
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected)
    trainer(limit_val_batches=1).validate(tiled, datamodule=dm)
    assert len(fake_inference) == 2  # validation goes through the tiles too


def test_missing_inference_module_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "geofm.inference", None)  # import -> ImportError
    task = SemanticSegmentationTask(model=PointwiseModel(3), num_classes=3, tiled_inference={"tile_size": 16})
    with pytest.raises(NotImplementedError, match="tiled_inference needs geofm.inference.tiled_forward"):
        trainer().predict(task, datamodule=DictDataModule(make_samples("segmentation")))
    with pytest.raises(NotImplementedError, match="tiled_inference"):
        task._inference(collate(make_samples("segmentation", n=1)))
    with pytest.raises(TypeError, match="tiled_inference must be a dict"):
        SemanticSegmentationTask(model=PointwiseModel(3), num_classes=3, tiled_inference=224)


class TimeShiftModel(PointwiseModel):
    """Adds each image's summed temporal_coords to its logits: per-image inputs must line up."""

    def forward(self, x: torch.Tensor, temporal_coords: torch.Tensor | None = None, **kwargs: Any) -> ModelOutput:
        out = super().forward(x).output
        return ModelOutput(out + temporal_coords.sum(dim=(1, 2)).view(-1, 1, 1, 1))


def test_real_tiled_forward_matches_whole_image():
    samples = make_samples("segmentation", n=2)
    for i, sample in enumerate(samples):
        sample["temporal_coords"] = torch.tensor([[2020.0 + i, 100.0 * i]])
    dm = DictDataModule(samples)
    model = TimeShiftModel(3)
    whole = SemanticSegmentationTask(model=model, num_classes=3, output_on_inference="logits")
    tiled = SemanticSegmentationTask(
        model=model, num_classes=3, output_on_inference="logits",
        tiled_inference={"tile_size": 16, "overlap": 4, "batch_size": 3},
    )
    expected = trainer().predict(whole, datamodule=dm)[0]["logits"]
    got = trainer().predict(tiled, datamodule=dm)[0]["logits"]
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-5)
