"""``SemanticSegmentationTask``: class logits ``(B, C, H, W)`` against masks ``(B, H, W)``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torchmetrics import MetricCollection

from geofm.tasks.base import BaseTask, check_class_targets
from geofm.tasks.losses import LossSpec
from geofm.tasks.metrics import segmentation_metrics

__all__ = ["SemanticSegmentationTask", "INFERENCE_OUTPUTS", "pixel_target"]

INFERENCE_OUTPUTS = ("prediction", "probabilities", "logits")


def pixel_target(batch: Mapping[str, Any], key: str = "mask") -> torch.Tensor:
    """``batch[key]`` as ``(B, H, W)`` (a channel of 1, as some TorchGeo datasets give, is dropped)."""
    if key not in batch:
        raise KeyError(f"The batch has no '{key}' key (keys: {sorted(batch)}); it holds the target.")
    target = batch[key]
    if target.ndim == 4 and target.shape[1] == 1:
        target = target.squeeze(1)
    return target


def _inference_outputs(spec: str | list[str]) -> list[str]:
    outputs = [spec] if isinstance(spec, str) else list(spec)
    unknown = [o for o in outputs if o not in INFERENCE_OUTPUTS]
    if unknown or not outputs:
        raise ValueError(
            f"output_on_inference={spec!r}; choose from {list(INFERENCE_OUTPUTS)} or a list of them."
        )
    return outputs


class SemanticSegmentationTask(BaseTask):
    """Semantic segmentation: per-pixel classes.

    Metrics: ``mIoU``, ``IoU_<class>``, ``F1``, ``Accuracy_macro``, ``Pixel_Accuracy`` (see
    :mod:`geofm.tasks.metrics`). Losses: ``ce``, ``dice``, ``focal``, ``jaccard``, ``lovasz``.

    Args:
        model_factory: Name of a factory in ``MODEL_FACTORY_REGISTRY``.
        model_args: Keyword arguments of the factory's ``build_model``.
        model: A ready model instead of ``model_factory``/``model_args``.
        num_classes: Number of classes.
        loss: A name, a list of names, a dict of name -> weight, or a module.
        ignore_index: Mask value skipped by losses and metrics (nodata).
        class_weights: One loss weight per class.
        class_names: Names in per-class metrics (``val/IoU_<name>``) and plots.
        output_on_inference: What ``predict_step`` returns: ``"prediction"`` (class map
            ``(B, H, W)``), ``"probabilities"`` (``(B, C, H, W)``), ``"logits"`` (with
            ``tiled_inference``: the log of the blended probabilities), or a list.
        output_most_probable: TerraTorch's older switch: ``false`` is
            ``output_on_inference: probabilities``.
        **kwargs: The other :class:`~geofm.tasks.base.BaseTask` arguments (optimizer,
            scheduler, freezing, normalisation, tiled inference, plots, and TerraTorch's
            ``tiled_inference_parameters``, ``lr_overrides``, ``aux_heads``).
    """

    model_task = "segmentation"
    plot_mode = "segmentation"
    loss_kind = "segmentation"

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
        output_on_inference: str | list[str] = "prediction",
        output_most_probable: bool = True,
        **kwargs: Any,
    ) -> None:
        _inference_outputs(output_on_inference)  # validate before building anything
        if not output_most_probable and output_on_inference != "prediction":
            raise ValueError(
                "model.init_args.output_most_probable: false and output_on_inference both choose "
                "what predict returns; keep output_on_inference (TerraTorch deprecated "
                "output_most_probable: false for output_on_inference: probabilities)."
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
        if not output_most_probable:
            self.hparams["output_on_inference"] = "probabilities"

    def build_metrics(self) -> MetricCollection:
        return segmentation_metrics(self.num_classes, self.hparams.ignore_index, self.hparams.class_names)

    def target(self, batch: Mapping[str, Any]) -> torch.Tensor:
        return pixel_target(batch).long()

    def check_target(self, batch: Mapping[str, Any], target: torch.Tensor) -> None:
        """Mask values outside ``[0, num_classes)`` that are not ``ignore_index`` raise,
        naming the batch's files (see :func:`~geofm.tasks.base.check_class_targets`)."""
        check_class_targets(target, self.num_classes, self.hparams.ignore_index, batch)

    def metric_inputs(self, prediction: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return prediction.argmax(dim=1), target

    def decode(self, prediction: torch.Tensor) -> torch.Tensor:
        return prediction.argmax(dim=1)

    def prediction_outputs(self, logits: torch.Tensor, probabilities: torch.Tensor) -> dict[str, torch.Tensor]:
        result = {}
        for name in _inference_outputs(self.hparams.output_on_inference):
            match name:
                case "prediction":
                    result[name] = probabilities.argmax(dim=1)
                case "probabilities":
                    result[name] = probabilities
                case "logits":
                    result[name] = logits
                case _:
                    raise ValueError(f"Unknown output_on_inference entry '{name}'.")
        return result
