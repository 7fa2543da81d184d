"""The torchmetrics collections each task logs, named as they appear under ``train/``, ``val/``...

Segmentation (``ignore_index`` pixels skipped):
    ``mIoU`` (macro IoU over the classes present in target or prediction), ``IoU_<class>``,
    ``F1`` (macro), ``Accuracy_macro`` (mean per-class accuracy) and ``Pixel_Accuracy``
    (micro accuracy: the share of valid pixels predicted right).
Regression (NaN and ``ignore_index`` targets are removed by the task before the update):
    ``RMSE``, ``MAE``, ``R2``.
Classification:
    ``Accuracy`` (micro), ``Accuracy_macro``, ``F1``, ``Precision``, ``Recall`` (macro), and
    ``F1_<class>``, ``Precision_<class>``, ``Recall_<class>``.
Multi-label classification (probabilities thresholded at 0.5):
    ``Accuracy`` (micro over all labels), ``F1``, ``Precision``, ``Recall`` (macro), and
    ``F1_<class>``, ``Precision_<class>``, ``Recall_<class>``.

Per-class metrics are named after ``class_names`` (class indices when there are none).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torchmetrics import ClasswiseWrapper, MetricCollection

from geofm.checkpoint_io import atomic_write

__all__ = [
    "segmentation_metrics",
    "regression_metrics",
    "classification_metrics",
    "multilabel_metrics",
    "write_metrics_csv",
]


def _labels(num_classes: int, class_names: Sequence[str] | None) -> list[str]:
    return [str(name) for name in class_names] if class_names else [str(i) for i in range(num_classes)]


def segmentation_metrics(
    num_classes: int, ignore_index: int | None = None, class_names: Sequence[str] | None = None
) -> MetricCollection:
    """Metrics of class maps ``(B, H, W)`` against masks ``(B, H, W)``."""
    from torchmetrics.classification import (
        MulticlassAccuracy,
        MulticlassF1Score,
        MulticlassJaccardIndex,
    )

    common = {"num_classes": num_classes, "ignore_index": ignore_index}
    return MetricCollection(
        {
            "mIoU": MulticlassJaccardIndex(average="macro", **common),
            "IoU": ClasswiseWrapper(
                MulticlassJaccardIndex(average="none", **common),
                labels=_labels(num_classes, class_names),
                prefix="IoU_",
            ),
            "F1": MulticlassF1Score(average="macro", **common),
            "Accuracy_macro": MulticlassAccuracy(average="macro", **common),
            "Pixel_Accuracy": MulticlassAccuracy(average="micro", **common),
        }
    )


def regression_metrics() -> MetricCollection:
    """Metrics of flat predictions ``(N,)`` against flat valid targets ``(N,)``."""
    from torchmetrics import MeanAbsoluteError, MeanSquaredError, R2Score

    return MetricCollection(
        {"RMSE": MeanSquaredError(squared=False), "MAE": MeanAbsoluteError(), "R2": R2Score()}
    )


def classification_metrics(
    num_classes: int, ignore_index: int | None = None, class_names: Sequence[str] | None = None
) -> MetricCollection:
    """Metrics of logits or probabilities ``(B, C)`` against labels ``(B,)``."""
    from torchmetrics.classification import (
        MulticlassAccuracy,
        MulticlassF1Score,
        MulticlassPrecision,
        MulticlassRecall,
    )

    common = {"num_classes": num_classes, "ignore_index": ignore_index}
    labels = _labels(num_classes, class_names)
    metrics = {
        "Accuracy": MulticlassAccuracy(average="micro", **common),
        "Accuracy_macro": MulticlassAccuracy(average="macro", **common),
    }
    for name, cls in (("F1", MulticlassF1Score), ("Precision", MulticlassPrecision), ("Recall", MulticlassRecall)):
        metrics[name] = cls(average="macro", **common)
        metrics[f"{name}_per_class"] = ClasswiseWrapper(
            cls(average="none", **common), labels=labels, prefix=f"{name}_"
        )
    return MetricCollection(metrics)


def multilabel_metrics(
    num_classes: int, ignore_index: int | None = None, class_names: Sequence[str] | None = None
) -> MetricCollection:
    """Metrics of probabilities ``(B, C)`` against 0/1 labels ``(B, C)``."""
    from torchmetrics.classification import (
        MultilabelAccuracy,
        MultilabelF1Score,
        MultilabelPrecision,
        MultilabelRecall,
    )

    common = {"num_labels": num_classes, "ignore_index": ignore_index}
    labels = _labels(num_classes, class_names)
    metrics = {"Accuracy": MultilabelAccuracy(average="micro", **common)}
    for name, cls in (("F1", MultilabelF1Score), ("Precision", MultilabelPrecision), ("Recall", MultilabelRecall)):
        metrics[name] = cls(average="macro", **common)
        metrics[f"{name}_per_class"] = ClasswiseWrapper(
            cls(average="none", **common), labels=labels, prefix=f"{name}_"
        )
    return MetricCollection(metrics)


def write_metrics_csv(path: Path, metrics: Mapping[str, torch.Tensor]) -> None:
    """``metrics`` as a ``Metric,Value`` CSV table (TerraTorch's ``metrics.csv``), written
    atomically."""
    text = io.StringIO()
    table = csv.writer(text, lineterminator="\n")
    table.writerow(["Metric", "Value"])
    for name, value in metrics.items():
        table.writerow([name, float(value)])
    atomic_write(path, lambda handle: handle.write(text.getvalue().encode()))
