"""The one prediction function: raw tiles (+ extra inputs) to probabilities or values.

Per-chip prediction, in-memory tiling (:func:`~geofm.inference.in_memory.tiled_forward`) and
streamed scenes (:func:`~geofm.inference.streaming.predict_scene`) all call a
:class:`Predictor`, and the tiled routes blend what it returns. So one checkpoint gives the
same class maps and probabilities on every route.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch

__all__ = [
    "COORDINATE_KEYS",
    "PredictionKind",
    "Predictor",
    "activate",
    "model_extra_inputs",
    "model_output",
    "output_tensor",
    "probabilities_to_logits",
    "repeat_extra",
]

#: Batch keys that models may take as keyword inputs besides the image.
COORDINATE_KEYS = ("temporal_coords", "location_coords")

#: ``"probabilities"``: softmax over classes (sigmoid for one channel); ``"multilabel"``:
#: sigmoid of each class; ``"values"``: as is.
PredictionKind = Literal["probabilities", "multilabel", "values"]


def model_output(output: Any) -> torch.Tensor:
    """The tensor in what a model returned (a tensor, a ``ModelOutput`` or a dict with
    ``"output"``); a ``(B, h, w)`` regression map gains its channel."""
    if isinstance(output, dict) and "output" in output:
        output = output["output"]
    elif not isinstance(output, torch.Tensor) and hasattr(output, "output"):
        output = output.output
    if not isinstance(output, torch.Tensor):
        raise TypeError(
            f"The model returned {type(output).__name__}; prediction and export need a tensor, "
            "a ModelOutput or a dict with an 'output' tensor."
        )
    return output.unsqueeze(1) if output.ndim == 3 else output


def output_tensor(output: Any) -> torch.Tensor:
    """The prediction tensor in what a model returned, as ``(B, K, h, w)``.

    Accepts a tensor, a :class:`~geofm.models.model.ModelOutput` (its ``output``) or a dict
    with an ``"output"`` key; ``(B, h, w)`` regression maps gain a channel axis.
    """
    output = model_output(output)
    if output.ndim != 4:
        raise ValueError(
            f"The model returned a tensor of shape {tuple(output.shape)}; pixel-wise prediction "
            "needs (B, K, h, w) outputs."
        )
    return output


def activate(logits: torch.Tensor, kind: PredictionKind) -> torch.Tensor:
    """Probabilities from ``(N, K, ...)`` logits (softmax; sigmoid when ``K == 1`` or
    ``kind="multilabel"``), or values."""
    if kind == "values":
        return logits.float()
    if kind == "multilabel" or logits.shape[1] == 1:
        return torch.sigmoid(logits.float())
    return torch.softmax(logits.float(), dim=1)


def probabilities_to_logits(probabilities: torch.Tensor) -> torch.Tensor:
    """Logits whose :func:`activate` gives ``probabilities`` back (for losses on blended tiles)."""
    p = probabilities.clamp(1e-12, 1.0)
    if p.shape[1] == 1:
        return torch.logit(p.clamp(max=1 - 1e-7))
    return p.log()


def model_extra_inputs(model: Callable[..., Any]) -> tuple[str, ...]:
    """The :data:`COORDINATE_KEYS` a model takes as keyword inputs.

    A model that declares ``extra_inputs`` (every geofm model does) is taken at its word;
    otherwise its ``forward`` signature decides (``**kwargs`` takes them all).
    """
    declared = getattr(model, "extra_inputs", None)
    if declared is not None:
        return tuple(declared)
    forward = getattr(model, "forward", model)
    try:
        params = inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return ()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return COORDINATE_KEYS
    return tuple(key for key in COORDINATE_KEYS if key in params)


class Predictor:
    """Preprocess, model and activation: raw tiles to ``(N, K, h, w)`` float32 outputs.

    Args:
        model: Maps preprocessed ``(N, C, h, w)`` / ``(N, C, T, h, w)`` inputs (multimodal
            models: a dict ``{modality: (N, C_m, h, w)}``) to logits or values (a tensor, a
            ``ModelOutput`` or a dict with ``"output"``).
        preprocess: Applied to raw tiles first (a
            :class:`~geofm.models.preprocess.Preprocess`); identity when ``None``.
        kind: ``"probabilities"`` for classes, ``"multilabel"`` for independent classes,
            ``"values"`` for regression.
    """

    def __init__(
        self,
        model: Callable[..., Any],
        preprocess: Callable[[Any], Any] | None = None,
        kind: PredictionKind = "probabilities",
    ):
        if kind not in ("probabilities", "multilabel", "values"):
            raise ValueError(f"kind={kind!r}; choose 'probabilities', 'multilabel' or 'values'.")
        self.model = model
        self.preprocess = preprocess
        self.kind: PredictionKind = kind
        self.extra_inputs = model_extra_inputs(model)

    def logits(self, image: torch.Tensor | Mapping[str, torch.Tensor], **extra: torch.Tensor) -> torch.Tensor:
        """The model's output for raw ``image``, before the activation.

        ``image`` is a tensor, or for multimodal models a dict ``{modality: (N, C_m, h, w)}``
        that the preprocessing and the model take as is.

        ``(N, K, h, w)`` for pixel-wise models (a ``(N, h, w)`` regression map gains its
        channel axis), ``(N, K)`` for classifiers. Extra inputs the model does not take are
        dropped here, in one place.
        """
        return model_output(self.outputs(image, **extra))

    def outputs(
        self, image: torch.Tensor | Mapping[str, torch.Tensor], **extra: torch.Tensor
    ) -> Any:
        """What the model returns for raw ``image`` (preprocessed here), as it returns it.

        For models whose return holds more than one tensor (an embedding model's grid and
        pooled vectors); :meth:`logits` takes the main tensor of the same call.
        """
        if self.preprocess is not None:
            x = self.preprocess(image)
        elif isinstance(image, Mapping):
            x = {name: value.float() for name, value in image.items()}
        else:
            x = image.float()
        inputs = {key: value for key, value in extra.items() if key in self.extra_inputs}
        return self.model(x, **inputs)

    def __call__(self, image: torch.Tensor | Mapping[str, torch.Tensor], **extra: torch.Tensor) -> torch.Tensor:
        """``(N, K, h, w)`` float32 probabilities or values for raw ``image``."""
        return activate(self.logits(image, **extra), self.kind)


def repeat_extra(extra: Mapping[str, torch.Tensor], count: int) -> dict[str, torch.Tensor]:
    """Per-image inputs ``(1, ...)`` repeated for ``count`` tiles of that image."""
    return {key: value.expand(count, *value.shape[1:]) for key, value in extra.items()}
