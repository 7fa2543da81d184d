"""ClassificationTask and MultiLabelClassificationTask: runs, metrics against numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from geofm.tasks import ClassificationTask, MultiLabelClassificationTask

from .helpers import DictDataModule, FixedOutputModel, TinyClassifier, make_samples, trainer

NAMES = ["forest", "crop", "urban"]


@pytest.mark.parametrize("task_class,kind", [(ClassificationTask, "classification"),
                                              (MultiLabelClassificationTask, "multilabel")])
def test_fit_validate_test_predict(task_class, kind):
    dm = DictDataModule(make_samples(kind), means=[500.0] * 4, stds=[290.0] * 4)
    task = task_class(model=TinyClassifier(), num_classes=3, class_names=NAMES)
    t = trainer()
    t.fit(task, datamodule=dm)
    for key in ("val/loss", "val/Accuracy", "val/F1", "val/Precision_crop", "val/Recall_urban"):
        assert math.isfinite(float(t.callback_metrics[key])), key
    assert "test/F1_forest" in t.test(task, datamodule=dm)[0]
    prediction = t.predict(task, datamodule=dm)[0]
    assert prediction["probabilities"].shape == (2, 3)
    expected_shape = (2,) if kind == "classification" else (2, 3)
    assert prediction["prediction"].shape == expected_shape and prediction["filename"] == ["chip_0.tif", "chip_1.tif"]


def _per_class(pred: np.ndarray, true: np.ndarray, c: int) -> tuple[float, float, float]:
    tp = float(((pred == c) & (true == c)).sum())
    fp = float(((pred == c) & (true != c)).sum())
    fn = float(((pred != c) & (true == c)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return precision, recall, f1


def test_multiclass_metrics_equal_numpy():
    logits = torch.tensor([[2.0, 0.1, 0.0], [0.0, 3.0, 0.1], [0.2, 0.1, 1.0], [1.0, 0.0, 0.5],
                           [0.0, 0.1, 2.0], [0.3, 0.2, 0.1]])
    labels = [0, 1, 1, 2, 2, -1]
    samples = make_samples("classification", n=6)
    for sample, label in zip(samples, labels):
        sample["label"] = torch.tensor(label)
    task = ClassificationTask(model=FixedOutputModel([logits]), num_classes=3, class_names=NAMES, ignore_index=-1)
    t = trainer(limit_val_batches=1)
    t.validate(task, datamodule=DictDataModule(samples, batch_size=6))
    pred = logits.argmax(1).numpy()[:5]
    true = np.array(labels[:5])
    stats = [_per_class(pred, true, c) for c in range(3)]
    expected = {"Accuracy": (pred == true).mean(), "F1": np.mean([s[2] for s in stats]),
                "Precision": np.mean([s[0] for s in stats]), "Recall": np.mean([s[1] for s in stats]),
                "Accuracy_macro": np.mean([s[1] for s in stats])}
    for c, name in enumerate(NAMES):
        expected[f"Precision_{name}"], expected[f"Recall_{name}"], expected[f"F1_{name}"] = stats[c]
    log_prob = torch.log_softmax(logits[:5], 1).numpy()
    expected["loss"] = -log_prob[np.arange(5), true].mean()
    for key, value in expected.items():
        assert float(t.callback_metrics[f"val/{key}"]) == pytest.approx(value, rel=1e-5, abs=1e-7), key


def test_multilabel_metrics_equal_numpy():
    logits = torch.tensor([[2.0, -1.0, 0.5], [-2.0, 1.0, 1.5], [0.3, 0.2, -0.1], [-1.0, -1.0, 2.0]])
    labels = torch.tensor([[1, 0, 0], [0, 1, 1], [1, 0, 1], [0, 1, 1]])
    samples = make_samples("multilabel", n=4)
    for sample, label in zip(samples, labels):
        sample["label"] = label
    task = MultiLabelClassificationTask(model=FixedOutputModel([logits]), num_classes=3, class_names=NAMES)
    t = trainer(limit_val_batches=1)
    t.validate(task, datamodule=DictDataModule(samples, batch_size=4))
    pred = (torch.sigmoid(logits) > 0.5).long().numpy()
    true = labels.numpy()
    stats = [_per_class(pred[:, c], true[:, c], 1) for c in range(3)]
    expected = {"Accuracy": (pred == true).mean(), "F1": np.mean([s[2] for s in stats])}
    for c, name in enumerate(NAMES):
        expected[f"Precision_{name}"], expected[f"Recall_{name}"], expected[f"F1_{name}"] = stats[c]
    expected["loss"] = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.float()).item()
    for key, value in expected.items():
        assert float(t.callback_metrics[f"val/{key}"]) == pytest.approx(value, rel=1e-5, abs=1e-7), key


def test_tiled_inference_is_refused():
    with pytest.raises(ValueError, match="tiled_inference"):
        ClassificationTask(model=TinyClassifier(), num_classes=3, tiled_inference={"tile_size": 16})


class _TrainLosses(Callback):
    """Records the training loss of every step (computed before that step's update)."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def test_factory_model_trains():
    args = {"backbone": "timm_resnet18", "decoder": "smp_Unet", "backbone_in_chans": 4,
            "decoder_decoder_channels": [32, 16, 16, 8, 8]}
    task = ClassificationTask(model_args=args, num_classes=3, lr=1e-3)
    # One fixed batch of 4 samples, seen 8 times: a model that learns fits it.
    dm = DictDataModule(make_samples("classification"), batch_size=4, means=[500.0] * 4, stds=[290.0] * 4)
    record = _TrainLosses()
    t = trainer(max_epochs=8, limit_train_batches=1, limit_val_batches=1, callbacks=[record])
    t.fit(task, datamodule=dm)
    assert len(record.losses) == 8 and all(map(math.isfinite, record.losses))
    # Falls step after step (Adam on a fixed batch); a model that does not learn stays flat.
    assert all(later < earlier for earlier, later in zip(record.losses, record.losses[1:])), record.losses
    assert record.losses[-1] < 0.9 * record.losses[0], record.losses
    assert math.isfinite(float(t.callback_metrics["val/Accuracy"]))
