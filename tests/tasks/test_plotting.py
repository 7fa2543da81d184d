"""plot_on_val: figures reach loggers that accept them; missing matplotlib warns once."""

from __future__ import annotations

import logging
import sys

import pytest
import torch
from lightning.pytorch.loggers.logger import Logger

from geofm.tasks import ClassificationTask, PixelwiseRegressionTask, SemanticSegmentationTask
from geofm.tasks import plotting

from .helpers import DictDataModule, TinyClassifier, TinyPixelModel, make_samples, trainer


class FigureLogger(Logger):
    """Records add_figure calls (what TensorBoard's SummaryWriter offers)."""

    def __init__(self):
        super().__init__()
        self.figures: list[tuple[str, object, int]] = []

    @property
    def name(self) -> str:
        return "figures"

    @property
    def version(self) -> int:
        return 0

    @property
    def experiment(self) -> FigureLogger:
        return self

    def add_figure(self, tag, figure, global_step=None):
        self.figures.append((tag, figure, global_step))

    def log_metrics(self, metrics, step=None):
        pass

    def log_hyperparams(self, params, *args, **kwargs):
        pass


@pytest.mark.parametrize(
    "task,kind,panels",
    [
        (lambda: SemanticSegmentationTask(model=TinyPixelModel(), num_classes=3, plot_on_val=2, rgb_indices=[2, 1, 0]),
         "segmentation", 3),
        (lambda: PixelwiseRegressionTask(model=TinyPixelModel(out_channels=0), plot_on_val=2), "regression", 4),
        (lambda: ClassificationTask(model=TinyClassifier(), num_classes=3, plot_on_val=2,
                                    class_names=["a", "b", "c"]), "classification", 1),
    ],
    ids=["segmentation", "regression", "classification"],
)
def test_figures_for_the_first_validation_batches(task, kind, panels):
    # plot_on_val=2: epoch 0 plots (every 2nd epoch), each of its first 10 batches (here 3).
    logger = FigureLogger()
    trainer(logger=logger, limit_val_batches=3).validate(task(), datamodule=DictDataModule(make_samples(kind, n=6)))
    assert [tag for tag, _, _ in logger.figures] == ["val/sample_0", "val/sample_1", "val/sample_2"]
    figure = logger.figures[0][1]
    assert len(figure.axes) == panels  # image | label | prediction (+ colour bar for regression)
    if kind == "classification":
        assert figure.axes[0].get_title().startswith("label: ")


def test_tensorboard_receives_the_figure(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path, name="tb")
    task = SemanticSegmentationTask(model=TinyPixelModel(), num_classes=3, plot_on_val=1)
    trainer(logger=logger, limit_val_batches=1).validate(task, datamodule=DictDataModule(make_samples("segmentation")))
    logger.experiment.flush()
    events = EventAccumulator(logger.log_dir)
    events.Reload()
    assert "val/sample_0" in events.Tags()["images"]


def test_missing_matplotlib_warns_once_and_skips(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    monkeypatch.setattr(plotting, "_WARNED", False)
    logger = FigureLogger()
    task = SemanticSegmentationTask(model=TinyPixelModel(), num_classes=3, plot_on_val=2)
    with caplog.at_level(logging.WARNING, logger="geofm.tasks.plotting"):
        trainer(logger=logger).validate(task, datamodule=DictDataModule(make_samples("segmentation")))
    assert logger.figures == []
    warnings = [r for r in caplog.records if "matplotlib" in r.getMessage()]
    assert len(warnings) == 1 and "pip install 'geofm[plot]'" in warnings[0].getMessage()


def test_rgb_image_checks_indices():
    rgb = plotting.rgb_image(torch.rand(4, 2, 8, 8) * 1000, rgb_indices=[3, 2, 1])  # (C, T, H, W)
    assert rgb.shape == (8, 8, 3) and rgb.min() >= 0 and rgb.max() <= 1
    with pytest.raises(ValueError, match=r"rgb_indices=\[0, 1, 9\]"):
        plotting.rgb_image(torch.rand(4, 8, 8), rgb_indices=[0, 1, 9])


def test_datamodule_rgb_indices_reach_the_plots(monkeypatch):
    shown = []
    monkeypatch.setattr(plotting, "plot_sample", lambda *a, **k: shown.append(k["rgb_indices"]) or object())
    dm = DictDataModule(make_samples("segmentation", n=2))
    dm.rgb_indices = [3, 0, 1]
    task = SemanticSegmentationTask(model=TinyPixelModel(), num_classes=3, plot_on_val=1)
    trainer(logger=FigureLogger(), limit_val_batches=1).validate(task, datamodule=dm)
    assert shown == [[3, 0, 1]]
    own = SemanticSegmentationTask(model=TinyPixelModel(), num_classes=3, plot_on_val=1, rgb_indices=[2, 1, 0])
    trainer(logger=FigureLogger(), limit_val_batches=1).validate(own, datamodule=dm)
    assert shown[-1] == [2, 1, 0]  # the task's own choice wins
