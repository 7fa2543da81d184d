"""PixelwiseRegressionTask: train/validate/test/predict, metrics against numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from geofm.tasks import PixelwiseRegressionTask

from .helpers import SIZE, DictDataModule, FixedOutputModel, TinyPixelModel, make_samples, trainer


def test_fit_validate_test_predict():
    dm = DictDataModule(make_samples("regression"), means=[500.0] * 4, stds=[290.0] * 4)
    task = PixelwiseRegressionTask(model=TinyPixelModel(out_channels=0), loss="huber", lr=1e-2)
    t = trainer()
    t.fit(task, datamodule=dm)
    for key in ("train/RMSE", "val/loss", "val/RMSE", "val/MAE", "val/R2"):
        assert math.isfinite(float(t.callback_metrics[key])), key
    assert set(t.test(task, datamodule=dm)[0]) >= {"test/loss", "test/RMSE", "test/MAE", "test/R2"}
    prediction = t.predict(task, datamodule=dm)[0]
    assert prediction["prediction"].shape == (2, SIZE, SIZE) and prediction["prediction"].is_floating_point()
    assert prediction["filename"] == ["chip_0.tif", "chip_1.tif"]


def test_logged_metrics_skip_nan_and_ignore_index():
    gen = torch.Generator().manual_seed(4)
    output = torch.randn(2, SIZE, SIZE, generator=gen)
    samples = make_samples("regression", n=2, seed=4)
    samples[0]["mask"][:4] = float("nan")
    samples[1]["mask"][:, :3] = -9999.0
    target = torch.stack([s["mask"] for s in samples]).numpy()
    # a model output of (B, 1, H, W) is accepted too
    task = PixelwiseRegressionTask(model=FixedOutputModel([output.unsqueeze(1)]), ignore_index=-9999.0, loss="mse")
    t = trainer(limit_val_batches=1)
    t.validate(task, datamodule=DictDataModule(samples))
    valid = np.isfinite(target) & (target != -9999.0)
    pred, true = output.numpy()[valid], target[valid]
    expected = {
        "loss": ((pred - true) ** 2).mean(),
        "RMSE": math.sqrt(((pred - true) ** 2).mean()),
        "MAE": np.abs(pred - true).mean(),
        "R2": 1 - ((pred - true) ** 2).sum() / ((true - true.mean()) ** 2).sum(),
    }
    for key, value in expected.items():
        assert float(t.callback_metrics[f"val/{key}"]) == pytest.approx(value, rel=1e-4), key


def test_class_weights_are_refused():
    with pytest.raises(ValueError, match="class_weights"):
        PixelwiseRegressionTask(model=TinyPixelModel(out_channels=0), class_weights=[1.0, 2.0])


class _TrainLosses(Callback):
    """Records the training loss of every step (computed before that step's update)."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def test_factory_model_trains():
    args = {"backbone": "timm_resnet18", "decoder": "smp_Unet", "backbone_in_chans": 4,
            "decoder_decoder_channels": [32, 16, 16, 8, 8]}
    task = PixelwiseRegressionTask(model_args=args, lr=1e-3)
    # One fixed batch of 4 samples, seen 8 times: a model that learns fits it.
    dm = DictDataModule(make_samples("regression"), batch_size=4, means=[500.0] * 4, stds=[290.0] * 4)
    record = _TrainLosses()
    t = trainer(max_epochs=8, limit_train_batches=1, limit_val_batches=1, callbacks=[record])
    t.fit(task, datamodule=dm)
    assert len(record.losses) == 8 and all(map(math.isfinite, record.losses))
    # Falls step after step (Adam on a fixed batch); a model that does not learn stays flat.
    assert all(later < earlier for earlier, later in zip(record.losses, record.losses[1:])), record.losses
    assert record.losses[-1] < 0.9 * record.losses[0], record.losses
    assert math.isfinite(float(t.callback_metrics["val/RMSE"]))
