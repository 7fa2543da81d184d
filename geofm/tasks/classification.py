"""``ClassificationTask`` (one class per image) and ``MultiLabelClassificationTask``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torchmetrics import MetricCollection

from geofm.tasks.base import BaseTask, check_class_targets
from geofm.tasks.losses import LossSpec
from geofm.tasks.metrics import classification_metrics, multilabel_metrics

__all__ = ["ClassificationTask", "MultiLabelClassificationTask"]


class ClassificationTask(BaseTask):
    """Scene classification: logits ``(B, C)`` against labels ``(B,)``.

    Metrics: ``Accuracy``, ``Accuracy_macro``, ``F1``, ``Precision``, ``Recall`` and their
    per-class values. Losses: ``ce``, ``bce``, ``focal``.

    Args:
        model_factory: Name of a factory in ``MODEL_FACTORY_REGISTRY``.
        model_args: Keyword arguments of the factory's ``build_model``.
        model: A ready model instead of ``model_factory``/``model_args``.
        num_classes: Number of classes.
        loss: A name, a list of names, a dict of name -> weight, or a module.
        ignore_index: Label value skipped by losses and metrics.
        class_weights: One loss weight per class.
        class_names: Names in per-class metrics and plots.
        **kwargs: The other :class:`~geofm.tasks.base.BaseTask` arguments (no
            ``tiled_inference`` nor ``tiled_inference_parameters``: a tile has no label of its
            own).
    """

    model_task = "classification"
    plot_mode = "classification"
    loss_kind = "classification"

    def __init__(
        self,
        model_factory: str = "EncoderDecoderFactory",
        model_args: dict[str, Any] | None = None,
        model: nn.Module | None = None,
        num_classes: int | None = None,
        loss: LossSpec = "ce",
        ignore_index: int | None = None,
        class_weights: list[float] | None = None,
        class_names: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        for key in ("tiled_inference", "tiled_inference_parameters"):
            if kwargs.get(key):
                raise ValueError(
                    f"{type(self).__name__} does not support {key} (one label per image); "
                    "remove it or resize the images in the datamodule."
                )
        super().__init__(
            model_factory=model_factory,
            model_args=model_args,
            model=model,
            loss=loss,
            ignore_index=ignore_index,
            class_weights=class_weights,
            num_classes=num_classes,
            class_names=class_names,
            **kwargs,
        )

    def build_metrics(self) -> MetricCollection:
        return classification_metrics(self.num_classes, self.hparams.ignore_index, self.hparams.class_names)

    def target(self, batch: Mapping[str, Any]) -> torch.Tensor:
        if "label" not in batch:
            raise KeyError(f"The batch has no 'label' key (keys: {sorted(batch)}); it holds the target.")
        return batch["label"].long()

    def check_target(self, batch: Mapping[str, Any], target: torch.Tensor) -> None:
        """Labels outside ``[0, num_classes)`` that are not ``ignore_index`` raise, naming the
        batch's files (see :func:`~geofm.tasks.base.check_class_targets`)."""
        check_class_targets(target, self.num_classes, self.hparams.ignore_index, batch)

    def metric_inputs(self, prediction: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return prediction, target

    def decode(self, prediction: torch.Tensor) -> torch.Tensor:
        return prediction.argmax(dim=1)

    def prediction_outputs(self, logits: torch.Tensor, probabilities: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"prediction": self.decode(logits), "probabilities": probabilities}


class MultiLabelClassificationTask(ClassificationTask):
    """Multi-label scene classification: logits ``(B, C)`` against 0/1 labels ``(B, C)``.

    A label is predicted when its sigmoid probability exceeds 0.5. ``ignore_index`` marks
    unknown label entries. Metrics: ``Accuracy``, ``F1``, ``Precision``, ``Recall`` and their
    per-class values. Losses: ``bce`` (default), ``focal``. Arguments as
    :class:`ClassificationTask`.
    """

    plot_mode = "multilabel"
    loss_kind = "multilabel"
    prediction_kind = "multilabel"

    def __init__(
        self,
        model_factory: str = "EncoderDecoderFactory",
        model_args: dict[str, Any] | None = None,
        model: nn.Module | None = None,
        num_classes: int | None = None,
        loss: LossSpec = "bce",
        ignore_index: int | None = None,
        class_weights: list[float] | None = None,
        class_names: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            model_factory=model_factory,
            model_args=model_args,
            model=model,
            num_classes=num_classes,
            loss=loss,
            ignore_index=ignore_index,
            class_weights=class_weights,
            class_names=class_names,
            **kwargs,
        )

    def build_metrics(self) -> MetricCollection:
        return multilabel_metrics(self.num_classes, self.hparams.ignore_index, self.hparams.class_names)

    def metric_inputs(self, prediction: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return prediction.sigmoid(), target

    def check_target(self, batch: Mapping[str, Any], target: torch.Tensor) -> None:
        """Multi-hot labels ``(B, C)`` hold 0/1 per class, not class indices: nothing to check
        against ``num_classes``."""

    def decode(self, prediction: torch.Tensor) -> torch.Tensor:
        return (prediction.sigmoid() > 0.5).long()

    def prediction_outputs(self, logits: torch.Tensor, probabilities: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"prediction": self.decode(logits), "probabilities": probabilities}
