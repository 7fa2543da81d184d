"""Loss functions by name, with ``ignore_index`` and class weights, and weighted combinations.

``build_loss(kind, spec, ...)`` turns what a config says (``"ce"``, ``["ce", "dice"]``,
``{"ce": 1.0, "dice": 0.5}`` or a ready ``nn.Module``) into one module called as
``loss(prediction, target)``. Every named loss honours ``ignore_index`` and ``class_weights``
when it can; one that cannot refuses them with an error instead of silently dropping them.

Names by kind:

- ``segmentation`` (logits ``(B, C, H, W)``, mask ``(B, H, W)`` int64): ``ce``, ``dice``,
  ``focal``, ``jaccard``, ``lovasz`` (no class weights).
- ``regression`` (prediction ``(B, H, W)``, target ``(B, H, W)`` float; NaN targets and
  ``ignore_index`` are skipped; no class weights): ``mse``, ``mae``, ``rmse``, ``huber``.
- ``classification`` (logits ``(B, C)``, label ``(B,)`` int64): ``ce``, ``bce``, ``focal``.
- ``multilabel`` (logits ``(B, C)``, label ``(B, C)`` 0/1; ``ignore_index`` marks unknown
  entries): ``bce``, ``focal``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from geofm.registry.errors import close_names

__all__ = [
    "LOSS_NAMES",
    "build_loss",
    "parse_loss_spec",
    "WeightedSumLoss",
    "CrossEntropyLoss",
    "MaskedRegressionLoss",
    "MaskedBCEWithLogitsLoss",
    "MultiLabelFocalLoss",
    "SkipAllIgnored",
]

log = logging.getLogger(__name__)

LossSpec = str | Sequence[str] | Mapping[str, float] | nn.Module


class WeightedSumLoss(nn.Module):
    """``sum(weight_i * loss_i(prediction, target))``.

    Args:
        losses: Loss modules by name.
        weights: Weight of each loss, by the same names.
    """

    def __init__(self, losses: Mapping[str, nn.Module], weights: Mapping[str, float]):
        super().__init__()
        self.losses = nn.ModuleDict(dict(losses))
        self.weights = {name: float(weights[name]) for name in self.losses}

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(self.weights[name] * loss(prediction, target) for name, loss in self.losses.items())


class SkipAllIgnored(nn.Module):
    """Returns a zero loss (still in the graph) when every target equals ``ignore_index``.

    Mean-reduced losses divide by the number of valid targets, so an all-nodata tile would
    otherwise give a NaN loss and NaN gradients.
    """

    def __init__(self, loss: nn.Module, ignore_index: int):
        super().__init__()
        self.loss = loss
        self.ignore_index = ignore_index

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not bool((target != self.ignore_index).any()):
            return prediction.sum() * 0.0
        return self.loss(prediction, target)


class CrossEntropyLoss(nn.CrossEntropyLoss):
    """``torch.nn.CrossEntropyLoss`` whose ``ignore_index`` may be ``None`` (nothing ignored).

    Args:
        weight: Per-class weights ``(C,)``; the mean is then weighted by the target's class,
            as in torch.
        ignore_index: Target value that contributes nothing.
    """

    def __init__(self, weight: torch.Tensor | None = None, ignore_index: int | None = None):
        # -100 is torch's "nothing ignored" default
        super().__init__(weight=weight, ignore_index=-100 if ignore_index is None else ignore_index)


class MaskedRegressionLoss(nn.Module):
    """A pixel-wise regression loss over the valid targets only.

    Targets that are NaN, infinite, or equal to ``ignore_index`` contribute nothing.

    Args:
        kind: ``"mse"``, ``"mae"``, ``"rmse"`` or ``"huber"``.
        ignore_index: Target value to skip (a nodata value such as ``-9999``).
        delta: Huber threshold.
    """

    def __init__(self, kind: str, ignore_index: float | None = None, delta: float = 1.0):
        super().__init__()
        if kind not in ("mse", "mae", "rmse", "huber"):
            raise ValueError(f"MaskedRegressionLoss kind='{kind}'; use mse, mae, rmse or huber.")
        self.kind = kind
        self.ignore_index = ignore_index
        self.delta = delta

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean loss of ``prediction`` against ``target``, both ``(B, H, W)`` (or any same shape)."""
        valid = valid_regression_targets(target, self.ignore_index)
        if not bool(valid.any()):
            return prediction.sum() * 0.0
        pred, true = prediction[valid], target[valid].to(prediction.dtype)
        match self.kind:
            case "mse":
                return F.mse_loss(pred, true)
            case "rmse":
                # clamp: the gradient of sqrt is infinite at an exact fit
                return F.mse_loss(pred, true).clamp_min(1e-12).sqrt()
            case "mae":
                return F.l1_loss(pred, true)
            case "huber":
                return F.huber_loss(pred, true, delta=self.delta)
            case _:
                raise ValueError(f"Unknown regression loss kind '{self.kind}'.")


def valid_regression_targets(target: torch.Tensor, ignore_index: float | None) -> torch.Tensor:
    """Boolean mask of the targets that are finite and not ``ignore_index``."""
    valid = torch.isfinite(target)
    if ignore_index is not None:
        valid &= target != ignore_index
    return valid


class MaskedBCEWithLogitsLoss(nn.Module):
    """Binary cross-entropy on logits ``(B, C)`` against 0/1 targets ``(B, C)``.

    Args:
        class_weights: Per-class weights ``(C,)``; the mean is weighted by them.
        ignore_index: Target entries equal to it (unknown labels) contribute nothing.
    """

    def __init__(self, class_weights: torch.Tensor | None = None, ignore_index: int | None = None):
        super().__init__()
        self.register_buffer("class_weights", class_weights)
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = _valid_entries(target, self.ignore_index)
        losses = F.binary_cross_entropy_with_logits(
            logits, torch.where(valid, target, 0).to(logits.dtype), reduction="none"
        )
        return _weighted_mean(losses, valid, self.class_weights)


class MultiLabelFocalLoss(nn.Module):
    """Sigmoid focal loss (``torchvision.ops.sigmoid_focal_loss``) on logits ``(B, C)``.

    Args:
        class_weights: Per-class weights ``(C,)``; the mean is weighted by them.
        ignore_index: Target entries equal to it contribute nothing.
        alpha: Weight of positives (``None`` or negative: no weighting).
        gamma: Focusing exponent.
    """

    def __init__(
        self,
        class_weights: torch.Tensor | None = None,
        ignore_index: int | None = None,
        alpha: float | None = None,
        gamma: float = 2.0,
    ):
        super().__init__()
        self.register_buffer("class_weights", class_weights)
        self.ignore_index = ignore_index
        self.alpha = -1.0 if alpha is None else alpha
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        from torchvision.ops import sigmoid_focal_loss

        valid = _valid_entries(target, self.ignore_index)
        losses = sigmoid_focal_loss(
            logits,
            torch.where(valid, target, 0).to(logits.dtype),
            alpha=self.alpha,
            gamma=self.gamma,
            reduction="none",
        )
        return _weighted_mean(losses, valid, self.class_weights)


def _valid_entries(target: torch.Tensor, ignore_index: int | None) -> torch.Tensor:
    if ignore_index is None:
        return torch.ones_like(target, dtype=torch.bool)
    return target != ignore_index


def _weighted_mean(
    losses: torch.Tensor, valid: torch.Tensor, class_weights: torch.Tensor | None
) -> torch.Tensor:
    weights = valid.to(losses.dtype)
    if class_weights is not None:
        weights = weights * class_weights.to(losses.dtype)
    total = weights.sum()
    if not bool(total > 0):
        return losses.sum() * 0.0
    return (losses * weights).sum() / total


# ---------------------------------------------------------------------------- builders
# Each builder takes (ignore_index, class_weights, num_classes) and returns a module; the
# options a loss cannot honour are listed in _REFUSES and refused before it is called.


def _smp(name: str, mode: str) -> Callable[..., nn.Module]:
    def build(ignore_index: int | None, class_weights: list[float] | None, **_: Any) -> nn.Module:
        from segmentation_models_pytorch import losses as smp_losses

        kwargs: dict[str, Any] = {"ignore_index": ignore_index}
        if class_weights is not None:
            kwargs["class_weights"] = list(class_weights)
        return getattr(smp_losses, name)(mode, **kwargs)

    return build


def _ce(ignore_index: int | None, class_weights: list[float] | None, **_: Any) -> nn.Module:
    return CrossEntropyLoss(weight=_as_tensor(class_weights), ignore_index=ignore_index)


def _one_hot_bce(ignore_index: int | None, class_weights: list[float] | None, **_: Any) -> nn.Module:
    # the inner loss masks the -1 rows that _OneHot writes for ignored samples
    return _OneHot(MaskedBCEWithLogitsLoss(_as_tensor(class_weights), ignore_index=-1), ignore_index)


class _OneHot(nn.Module):
    """Turns class indices ``(B,)`` into one-hot ``(B, C)`` targets; ignored samples get -1 rows."""

    def __init__(self, loss: nn.Module, ignore_index: int | None):
        super().__init__()
        self.loss = loss
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = _valid_entries(target, self.ignore_index)
        one_hot = F.one_hot(torch.where(valid, target, 0).long(), logits.shape[1]).to(logits.dtype)
        return self.loss(logits, torch.where(valid[:, None], one_hot, -1.0))


def _regression(kind: str) -> Callable[..., nn.Module]:
    def build(ignore_index: float | None, **_: Any) -> nn.Module:
        return MaskedRegressionLoss(kind, ignore_index=ignore_index)

    return build


def _multilabel_bce(ignore_index: int | None, class_weights: list[float] | None, **_: Any) -> nn.Module:
    return MaskedBCEWithLogitsLoss(_as_tensor(class_weights), ignore_index)


def _multilabel_focal(ignore_index: int | None, class_weights: list[float] | None, **_: Any) -> nn.Module:
    return MultiLabelFocalLoss(_as_tensor(class_weights), ignore_index)


def _as_tensor(values: Sequence[float] | None) -> torch.Tensor | None:
    return None if values is None else torch.as_tensor(list(values), dtype=torch.float32)


_BUILDERS: dict[str, dict[str, Callable[..., nn.Module]]] = {
    "segmentation": {
        "ce": _ce,
        "dice": _smp("DiceLoss", "multiclass"),
        "focal": _smp("FocalLoss", "multiclass"),
        "jaccard": _smp("JaccardLoss", "multiclass"),
        "lovasz": _smp("LovaszLoss", "multiclass"),
    },
    "regression": {name: _regression(name) for name in ("mse", "mae", "rmse", "huber")},
    "classification": {
        "ce": _ce,
        "bce": _one_hot_bce,
        "focal": _smp("FocalLoss", "multiclass"),
    },
    "multilabel": {"bce": _multilabel_bce, "focal": _multilabel_focal},
}

# (kind, name) -> options the loss cannot honour
_REFUSES: dict[tuple[str, str], tuple[str, ...]] = {
    ("segmentation", "lovasz"): ("class_weights",),
    **{("regression", name): ("class_weights",) for name in _BUILDERS["regression"]},
}

# Losses that give NaN (their mean divides by the count of valid targets) or, for smp's
# lovasz, an empty tensor when every target is ignored.
_NEEDS_EMPTY_GUARD = {
    ("segmentation", "ce"),
    ("segmentation", "focal"),
    ("segmentation", "lovasz"),
    ("classification", "ce"),
    ("classification", "focal"),
}

LOSS_NAMES: dict[str, list[str]] = {kind: sorted(names) for kind, names in _BUILDERS.items()}


def parse_loss_spec(spec: str | Sequence[str] | Mapping[str, float]) -> dict[str, float]:
    """``"ce"`` -> ``{"ce": 1.0}``; ``["ce", "dice"]`` -> both with weight 1; dicts pass through.

    Raises:
        TypeError: for another type, or a non-numeric weight.
        ValueError: for an empty spec.
    """
    if isinstance(spec, str):
        weights = {spec: 1.0}
    elif isinstance(spec, Mapping):
        weights = {}
        for name, weight in spec.items():
            if isinstance(weight, bool) or not isinstance(weight, (int, float)):
                raise TypeError(f"loss['{name}'] must be a number (its weight), got {weight!r}.")
            weights[str(name)] = float(weight)
    elif isinstance(spec, Sequence):
        weights = {str(name): 1.0 for name in spec}
    else:
        raise TypeError(
            "loss must be a name, a list of names, a dict of name -> weight or an nn.Module; "
            f"got {type(spec).__name__}."
        )
    if not weights:
        raise ValueError("loss is empty; give at least one loss name.")
    return weights


def build_loss(
    kind: str,
    spec: LossSpec,
    ignore_index: float | None = None,
    class_weights: Sequence[float] | None = None,
    num_classes: int | None = None,
) -> nn.Module:
    """The loss module a config asks for.

    Args:
        kind: ``"segmentation"``, ``"regression"``, ``"classification"`` or ``"multilabel"``.
        spec: A name, a list of names, a dict of name -> weight, or a ready module (returned
            unchanged: it handles ``ignore_index`` and weights itself).
        ignore_index: Target value that contributes nothing.
        class_weights: One weight per class.
        num_classes: Number of classes, checked against ``class_weights``.

    Raises:
        KeyError: for an unknown loss name (the valid names are listed).
        ValueError: when a loss cannot honour ``ignore_index`` or ``class_weights``, or the
            weights do not match ``num_classes``.
    """
    if kind not in _BUILDERS:
        raise ValueError(f"Unknown loss kind '{kind}'; choose from {sorted(_BUILDERS)}.")
    if isinstance(spec, nn.Module):
        if ignore_index is not None or class_weights is not None:
            log.info(
                "loss is a ready %s: ignore_index and class_weights are not applied to it by geofm.",
                type(spec).__name__,
            )
        return spec
    if class_weights is not None and num_classes is not None and len(class_weights) != num_classes:
        raise ValueError(
            f"class_weights has {len(class_weights)} values but there are {num_classes} classes."
        )
    weights = parse_loss_spec(spec)
    losses: dict[str, nn.Module] = {}
    for name in weights:
        builder = _BUILDERS[kind].get(name.lower())
        if builder is None:
            hint = close_names(name.lower(), _BUILDERS[kind])
            raise KeyError(
                f"loss='{name}' is not a {kind} loss; choose from {LOSS_NAMES[kind]}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + " or pass an nn.Module."
            )
        given = {"ignore_index": ignore_index, "class_weights": class_weights}
        for option in _REFUSES.get((kind, name.lower()), ()):
            if given[option] is not None:
                raise ValueError(
                    f"loss '{name}' ({kind}) cannot honour {option}={given[option]!r}; remove "
                    f"{option} or choose a loss that supports it."
                )
        loss = builder(ignore_index=ignore_index, class_weights=class_weights, num_classes=num_classes)
        if ignore_index is not None and (kind, name.lower()) in _NEEDS_EMPTY_GUARD:
            loss = SkipAllIgnored(loss, int(ignore_index))
        losses[name.lower()] = loss
    if len(losses) == 1 and next(iter(weights.values())) == 1.0:
        return next(iter(losses.values()))
    return WeightedSumLoss(losses, {name.lower(): w for name, w in weights.items()})
