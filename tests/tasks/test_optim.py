"""Optimizers and schedulers from names: groups by pattern, warm-up, errors."""

from __future__ import annotations

import pytest
import torch

from geofm.tasks import SemanticSegmentationTask
from geofm.tasks.optim import build_optimizer, build_scheduler

from .helpers import DictDataModule, TinyPixelModel, make_samples, trainer


def _task(**kwargs):
    return SemanticSegmentationTask(model=TinyPixelModel(), num_classes=3, **kwargs)


def test_param_groups_by_fnmatch_pattern():
    task = _task(
        optimizer="SGD", lr=0.1, optimizer_hparams={"momentum": 0.9},
        param_groups=[{"pattern": "encoder.*", "lr": 1e-3}, {"pattern": ["*.bias"], "weight_decay": 0.0}],
        freeze_head=True,
    )
    optimizer = task.configure_optimizers()
    assert isinstance(optimizer, torch.optim.SGD)
    encoder, biases, rest = optimizer.param_groups
    model = task.model
    assert {id(p) for p in encoder["params"]} == {id(p) for p in model.encoder.parameters()}
    assert encoder["lr"] == 1e-3 and encoder["momentum"] == 0.9
    assert {id(p) for p in biases["params"]} == {id(model.decoder[0].bias)}  # encoder biases already taken
    assert biases["lr"] == 0.1 and biases["weight_decay"] == 0.0
    assert {id(p) for p in rest["params"]} == {id(model.decoder[0].weight)}  # head frozen: left out


def test_optimizer_by_class_path_and_errors():
    params = [("w", torch.nn.Parameter(torch.zeros(2)))]
    assert isinstance(build_optimizer(params, "torch.optim.Adam", lr=0.1), torch.optim.Adam)
    with pytest.raises(ValueError, match="optimizer='AdamX'.*did you mean 'Adam"):
        build_optimizer(params, "AdamX")
    with pytest.raises(ValueError, match="cannot be imported"):
        build_optimizer(params, "nowhere.Optim")
    with pytest.raises(ValueError, match=r"param_groups\[0\] pattern \['decoder\.\*'\] matches no"):
        build_optimizer(params, "SGD", param_groups=[{"pattern": "decoder.*", "lr": 1.0}])
    with pytest.raises(ValueError, match=r"param_groups\[0\] needs a 'pattern'"):
        build_optimizer(params, "SGD", param_groups=[{"lr": 1.0}])


def _lrs(config, steps: int) -> list[float]:
    optimizer = config["scheduler"].optimizer
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        config["scheduler"].step()
    return lrs


def test_warmup_then_scheduler():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    config = build_scheduler(optimizer, "StepLR", {"step_size": 1, "gamma": 0.5, "interval": "step",
                                                   "warmup_steps": 2, "warmup_start_factor": 0.5})
    assert config["interval"] == "step"
    assert _lrs(config, 5) == pytest.approx([0.5, 0.75, 1.0, 0.5, 0.25])


def test_warmup_alone_and_plateau_monitor():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    config = build_scheduler(optimizer, None, {"warmup_epochs": 2, "warmup_start_factor": 0.5})
    assert config["interval"] == "epoch" and _lrs(config, 3) == pytest.approx([0.5, 0.75, 1.0])
    assert build_scheduler(optimizer, None, None) is None
    plateau = build_scheduler(optimizer, "ReduceLROnPlateau", {"patience": 1})
    assert plateau["monitor"] == "val/loss"


def test_scheduler_errors():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="warmup_steps needs interval='step'"):
        build_scheduler(optimizer, "StepLR", {"step_size": 1, "warmup_steps": 2})
    with pytest.raises(ValueError, match="interval='batch'"):
        build_scheduler(optimizer, "StepLR", {"step_size": 1, "interval": "batch"})
    with pytest.raises(ValueError, match="scheduler='Cosine'"):
        build_scheduler(optimizer, "Cosine")
    with pytest.raises(ValueError, match="ReduceLROnPlateau cannot follow a warm-up"):
        build_scheduler(optimizer, "ReduceLROnPlateau", {"warmup_epochs": 1})


def test_scheduler_runs_in_trainer():
    task = _task(lr=0.1, scheduler="LinearLR",
                 scheduler_hparams={"start_factor": 1.0, "end_factor": 0.1, "total_iters": 2, "interval": "step"})
    t = trainer()
    t.fit(task, datamodule=DictDataModule(make_samples("segmentation")))
    assert t.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.01)
