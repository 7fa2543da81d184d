"""``PixelwiseRegressionTask``: values ``(B, H, W)`` against float masks ``(B, H, W)``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torchmetrics import MetricCollection

from geofm.tasks.base import BaseTask
from geofm.tasks.losses import LossSpec, valid_regression_targets
from geofm.tasks.metrics import regression_metrics
from geofm.tasks.segmentation import pixel_target

__all__ = ["PixelwiseRegressionTask"]


class PixelwiseRegressionTask(BaseTask):
    """Pixel-wise regression (biomass, canopy height, temperature...).

    Targets that are NaN or equal to ``ignore_index`` are skipped by losses and metrics.
    Metrics: ``RMSE``, ``MAE``, ``R2``. Losses: ``mse``, ``mae``, ``rmse``, ``huber``.

    Args:
        model_factory: Name of a factory in ``MODEL_FACTORY_REGISTRY``.
        model_args: Keyword arguments of the factory's ``build_model``.
        model: A ready model instead of ``model_factory``/``model_args``.
        loss: A name, a list of names, a dict of name -> weight, or a module.
        ignore_index: Target value to skip (a nodata value such as ``-9999``).
        **kwargs: The other :class:`~geofm.tasks.base.BaseTask` arguments.
    """

    model_task = "regression"
    plot_mode = "regression"
    loss_kind = "regression"
    needs_num_classes = False
    prediction_kind = "values"

    def __init__(
        self,
        model_factory: str = "EncoderDecoderFactory",
        model_args: dict[str, Any] | None = None,
        model: nn.Module | None = None,
        loss: LossSpec = "mse",
        ignore_index: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            model_factory=model_factory,
            model_args=model_args,
            model=model,
            loss=loss,
            ignore_index=ignore_index,
            **kwargs,
        )

    def build_metrics(self) -> MetricCollection:
        return regression_metrics()

    def target(self, batch: Mapping[str, Any]) -> torch.Tensor:
        return pixel_target(batch).float()

    def metric_inputs(self, prediction: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        valid = valid_regression_targets(target, self.hparams.ignore_index)
        return prediction[valid].float(), target[valid]

    def decode(self, prediction: torch.Tensor) -> torch.Tensor:
        return prediction

    def prediction_outputs(self, logits: torch.Tensor, probabilities: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"prediction": probabilities}
