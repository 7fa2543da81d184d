"""LoRA on a model's backbone with the ``peft`` library: settings, injection, counting, merging.

A task's ``peft: {method: lora, r: 8, alpha: 16, target_modules: [qkv, proj]}`` (or
TerraTorch's ``model_args.peft_config: {method: LORA, replace_qkv: qkv, peft_config_kwargs:
{target_modules: [...], r: 16, lora_alpha: 16}}``) becomes one :class:`LoraSettings`
(:func:`lora_settings`); :func:`apply_lora` freezes the model's encoder (no gradients, norm
layers kept in eval mode, as ``freeze_backbone`` does) and injects LoRA layers into the
encoder's matching modules with ``peft.inject_adapter_in_model``. That keeps the module tree:
the model is not wrapped in a ``PeftModel``, only each targeted layer becomes a peft layer
holding the original as ``base_layer`` (state-dict keys ``...qkv.base_layer.weight``,
``...qkv.lora_A.default.weight``). Only the LoRA weights (and biases with ``bias: all`` or
``lora_only``) of the encoder train; necks, decoder and head train as usual.

``target_modules`` follows peft: a list of module-name suffixes (``qkv`` matches
``blocks.0.attn.qkv``; ``proj`` matches ``blocks.0.attn.proj`` *and* ``patch_embed.proj``), or
one string, a regular expression matched against whole module names
(``blocks\\.\\d+\\.attn\\.(qkv|proj)``). Every entry must match a module of the backbone.

:func:`merge_lora` folds the LoRA weights into the base layers and puts the plain layers back
(a split ``qkv`` is fused again), so that an exported model runs without peft and has the
state-dict names of the backbone without LoRA.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "LoraSettings",
    "ParameterSummary",
    "SplitQKV",
    "apply_lora",
    "has_lora",
    "lora_settings",
    "merge_lora",
    "parameter_summary",
    "require_peft",
]

log = logging.getLogger(__name__)

_BIAS = ("none", "all", "lora_only")
# geofm's keys (and TerraTorch's / peft's names of the same settings).
_KEYS = {"method", "r", "alpha", "dropout", "bias", "target_modules", "replace_qkv"}
_ALIASES = {"lora_alpha": "alpha", "lora_dropout": "dropout"}
_TERRATORCH_KEYS = {"method", "replace_qkv", "peft_config_kwargs"}


def require_peft() -> Any:
    """The ``peft`` module, or an ImportError naming the extra to install."""
    try:
        import peft
    except ImportError as err:
        raise ImportError(
            "LoRA (the task's peft setting, or model_args.peft_config) needs the peft library: "
            "pip install 'geofm[peft]'."
        ) from err
    return peft


@dataclass(frozen=True)
class LoraSettings:
    """What LoRA to apply to a backbone.

    Attributes:
        target_modules: Module-name suffixes, or one regular expression matched against
            whole module names (peft's rule).
        r: Rank of the low-rank update.
        alpha: Scale numerator: the update is ``(alpha / r) * B @ A`` (default 8, as peft's).
        dropout: Dropout on the LoRA branch's input.
        bias: ``"none"`` (backbone biases frozen), ``"all"`` (every backbone bias trains) or
            ``"lora_only"`` (the biases of the targeted layers train).
        replace_qkv: TerraTorch's setting: the name of fused query-key-value linear layers
            (``qkv``) to split into ``q_linear``, ``k_linear``, ``v_linear`` first, so that
            LoRA can target them one by one (``qkv.q_linear``).
    """

    target_modules: tuple[str, ...] | str
    r: int = 8
    alpha: float = 8.0
    dropout: float = 0.0
    bias: str = "none"
    replace_qkv: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain values (for checkpoints and logs)."""
        values = asdict(self)
        if isinstance(self.target_modules, tuple):
            values["target_modules"] = list(self.target_modules)
        return {"method": "lora", **values}


def lora_settings(spec: Mapping[str, Any], where: str = "peft") -> LoraSettings:
    """Read geofm's ``{method: lora, r, alpha, dropout, bias, target_modules}`` or TerraTorch's
    ``{method: LORA, replace_qkv, peft_config_kwargs: {target_modules, r, lora_alpha,
    lora_dropout, bias}}``.

    Args:
        spec: The setting as written in the config.
        where: Its config key, for messages (``"model.init_args.peft"``).

    Raises:
        ValueError: an unknown key or method, a missing ``target_modules``, a bad value; the
            message names the key at fault.
    """
    if not isinstance(spec, Mapping):
        raise ValueError(
            f"{where} must be a mapping such as {{method: lora, r: 8, target_modules: [qkv]}}, "
            f"got {spec!r}."
        )
    values = dict(spec)
    if "peft_config_kwargs" in values:  # TerraTorch's form: peft's LoraConfig arguments inside
        unknown = sorted(set(values) - _TERRATORCH_KEYS)
        if unknown:
            raise ValueError(
                f"{where}: unknown keys {unknown} beside peft_config_kwargs; TerraTorch's form "
                f"takes {sorted(_TERRATORCH_KEYS)}."
            )
        inner = values.pop("peft_config_kwargs") or {}
        if not isinstance(inner, Mapping):
            raise ValueError(f"{where}.peft_config_kwargs must be a mapping, got {inner!r}.")
        clash = sorted(set(inner) & set(values))
        if clash:
            raise ValueError(
                f"{where}: {clash} given both in and beside peft_config_kwargs; keep one."
            )
        values.update(inner)
        where_kw = f"{where}.peft_config_kwargs"
    else:
        where_kw = where
    for alias, name in _ALIASES.items():
        if alias in values:
            if name in values:
                raise ValueError(f"{where_kw}: both {alias} and {name} are given; keep one.")
            values[name] = values.pop(alias)
    unknown = sorted(set(values) - _KEYS)
    if unknown:
        supported = sorted(_KEYS | set(_ALIASES))
        raise ValueError(
            f"{where_kw}: unsupported LoRA settings {unknown}; geofm supports {supported} (other "
            "peft LoraConfig arguments are refused rather than passed on untested)."
        )
    method = str(values.pop("method", "lora"))
    if method.lower() != "lora":
        raise ValueError(
            f"{where}.method={method!r}: geofm supports method 'lora' (TerraTorch's 'LORA') only."
        )
    targets = values.pop("target_modules", None)
    if isinstance(targets, str):
        try:
            re.compile(targets)
        except re.error as err:
            raise ValueError(
                f"{where_kw}.target_modules={targets!r} is not a valid regular expression ({err})."
            ) from err
    elif isinstance(targets, (list, tuple)) and targets and all(
        isinstance(t, str) and t for t in targets
    ):
        targets = tuple(targets)
    else:
        raise ValueError(
            f"{where_kw}.target_modules={targets!r}: give a list of module-name suffixes "
            "([qkv, proj]) or a regular expression string ('blocks\\.\\d+\\.attn\\.qkv')."
        )
    r = values.get("r", 8)
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise ValueError(f"{where_kw}.r={r!r} must be a positive integer (the LoRA rank).")
    alpha = values.get("alpha", 8)  # peft's default, whatever r (TerraTorch configs rely on it)
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or alpha <= 0:
        raise ValueError(f"{where_kw}.alpha={alpha!r} must be a positive number.")
    dropout = values.get("dropout", 0.0)
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout < 1:
        raise ValueError(f"{where_kw}.dropout={dropout!r} must be in [0, 1).")
    bias = values.get("bias", "none")
    if bias not in _BIAS:
        raise ValueError(f"{where_kw}.bias={bias!r} must be one of {list(_BIAS)}.")
    replace_qkv = values.get("replace_qkv")
    if replace_qkv is not None and (not isinstance(replace_qkv, str) or not replace_qkv):
        raise ValueError(
            f"{where}.replace_qkv={replace_qkv!r} must be a module name such as 'qkv'."
        )
    return LoraSettings(targets, int(r), float(alpha), float(dropout), str(bias), replace_qkv)


# ---------------------------------------------------------------------------- qkv split
class SplitQKV(nn.Module):
    """A fused ``(D -> 3D)`` query-key-value linear layer as three ``D -> D`` layers.

    Same output as the fused layer (``cat(q, k, v)``); the parts are named as in TerraTorch
    (``q_linear``, ``k_linear``, ``v_linear``) so that its ``target_modules`` match.
    """

    def __init__(self, fused: nn.Linear):
        super().__init__()
        dim = fused.in_features
        if fused.out_features != 3 * dim:
            raise ValueError(
                f"replace_qkv: a fused qkv layer maps D to 3 * D features; this one maps "
                f"{fused.in_features} to {fused.out_features}."
            )
        bias = fused.bias is not None
        for index, name in enumerate(("q_linear", "k_linear", "v_linear")):
            weight = fused.weight
            part = nn.Linear(dim, dim, bias=bias, device=weight.device, dtype=weight.dtype)
            with torch.no_grad():
                part.weight.copy_(fused.weight[index * dim : (index + 1) * dim])
                if bias:
                    part.bias.copy_(fused.bias[index * dim : (index + 1) * dim])
            setattr(self, name, part)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.q_linear(x), self.k_linear(x), self.v_linear(x)), dim=-1)

    def fused(self) -> nn.Linear:
        """The one linear layer equal to this module (after merging LoRA into its parts)."""
        parts = (self.q_linear, self.k_linear, self.v_linear)
        dim = parts[0].in_features
        bias = parts[0].bias is not None
        weight = parts[0].weight
        out = nn.Linear(dim, 3 * dim, bias=bias, device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            out.weight.copy_(torch.cat([p.weight for p in parts]))
            if bias:
                out.bias.copy_(torch.cat([p.bias for p in parts]))
        out.requires_grad_(weight.requires_grad)
        return out


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, module)


def _split_qkv(encoder: nn.Module, suffix: str) -> int:
    names = [n for n, m in encoder.named_modules() if (n == suffix or n.endswith(f".{suffix}"))]
    for name in names:
        module = encoder.get_submodule(name)
        if not isinstance(module, nn.Linear):
            raise ValueError(
                f"replace_qkv={suffix!r}: '{name}' is a {type(module).__name__}, not a linear "
                "layer."
            )
        _replace(encoder, name, SplitQKV(module))
    if not names:
        raise ValueError(
            f"replace_qkv={suffix!r} matches no module of the backbone; its layers include "
            f"{_layer_names(encoder)}."
        )
    return len(names)


# ---------------------------------------------------------------------------- injection
_LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)


def _layer_names(encoder: nn.Module, limit: int = 10) -> str:
    """Distinct names of the layers LoRA can target, block numbers as ``*`` (for messages)."""
    seen: dict[str, None] = {}
    for name, module in encoder.named_modules():
        if name and isinstance(module, _LAYER_TYPES):
            seen.setdefault(re.sub(r"\.\d+(?=\.|$)", ".*", name))
    names = list(seen)
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith(f".{target}")


def _check_targets(encoder: nn.Module, targets: tuple[str, ...] | str) -> None:
    """Raise when an entry of ``targets`` selects no module of ``encoder``."""
    names = [n for n, _ in encoder.named_modules() if n]
    if isinstance(targets, str):
        unmatched = [] if any(re.fullmatch(targets, n) for n in names) else [targets]
    else:
        unmatched = [t for t in targets if not any(_matches(n, t) for n in names)]
    if unmatched:
        raise ValueError(
            f"LoRA target_modules {unmatched} match no module of the backbone "
            f"{type(encoder).__name__}. Targets are module-name suffixes (or one regular "
            f"expression for whole names); the backbone's layers are: {_layer_names(encoder)}."
        )


def apply_lora(model: nn.Module, settings: LoraSettings) -> list[str]:
    """Freeze ``model.encoder`` and inject LoRA layers into its modules ``settings`` targets.

    Args:
        model: A geofm model (``encoder`` and ``freeze_encoder``); changed in place.
        settings: What to inject.

    Returns:
        The names (inside the encoder) of the layers that received LoRA.

    Raises:
        TypeError: the model has no ``encoder`` or ``freeze_encoder``.
        ValueError: a target matches no module, or peft cannot adapt a matched module.
    """
    peft = require_peft()
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, nn.Module) or not callable(getattr(model, "freeze_encoder", None)):
        raise TypeError(
            f"LoRA is applied to a model's backbone (model.encoder) and needs freeze_encoder(); "
            f"{type(model).__name__} has "
            f"{'no encoder' if encoder is None else 'no freeze_encoder'}. "
            "Build the model with a geofm model factory."
        )
    if settings.replace_qkv:
        _split_qkv(encoder, settings.replace_qkv)
    _check_targets(encoder, settings.target_modules)
    # Base weights frozen and their norm layers kept in eval mode across .train(), as
    # freeze_backbone does; the LoRA weights created below train.
    model.freeze_encoder()
    target = settings.target_modules
    config = peft.LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        bias=settings.bias,
        target_modules=list(target) if isinstance(target, tuple) else target,
    )
    try:
        peft.inject_adapter_in_model(config, encoder)
    except ValueError as err:  # e.g. a target that is an attention block, not a layer
        raise ValueError(
            f"peft could not add LoRA for target_modules={settings.target_modules!r} ({err}). "
            f"Target layers (linear, convolution, embedding): {_layer_names(encoder)}."
        ) from err
    from peft.tuners.lora import LoraLayer

    adapted = [n for n, m in encoder.named_modules() if isinstance(m, LoraLayer)]
    log.info(
        "LoRA (r=%d, alpha=%g) on %d layers of the backbone: %s",
        settings.r, settings.alpha, len(adapted), _short(adapted),
    )
    return adapted


def _short(names: list[str], limit: int = 6) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def has_lora(module: nn.Module) -> bool:
    """Whether ``module`` holds peft adapter layers (without importing peft when it does not)."""
    return any(type(m).__module__.startswith("peft.") for m in module.modules())


def merge_lora(module: nn.Module) -> int:
    """Fold every LoRA layer of ``module`` into its base layer and put the plain layer back,
    in place; split ``qkv`` layers (``replace_qkv``) are fused again.

    Returns:
        The number of layers merged.
    """
    if not has_lora(module):
        return 0
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [(n, m) for n, m in module.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, layer in layers:
        layer.merge(safe_merge=True)  # safe: raises on non-finite merged weights
        _replace(module, name, layer.get_base_layer())
    for name, split in [(n, m) for n, m in module.named_modules() if isinstance(m, SplitQKV)]:
        _replace(module, name, split.fused())
    return len(layers)


# ---------------------------------------------------------------------------- counting
@dataclass(frozen=True)
class ParameterSummary:
    """Parameter counts of a model with LoRA.

    Attributes:
        trainable: Trainable parameters of the whole model.
        total: All parameters of the model (LoRA included).
        full: Parameters full fine-tuning trains (the model without the LoRA weights).
        lora: LoRA parameters.
        backbone: Parameters of the backbone without LoRA.
        backbone_trainable: Trainable parameters of the backbone (LoRA and trained biases).
    """

    trainable: int
    total: int
    full: int
    lora: int
    backbone: int
    backbone_trainable: int

    @property
    def fraction(self) -> float:
        """Trainable parameters as a fraction of full fine-tuning's."""
        return self.trainable / self.full if self.full else 0.0

    @property
    def backbone_fraction(self) -> float:
        """The backbone's trainable parameters as a fraction of its own."""
        return self.backbone_trainable / self.backbone if self.backbone else 0.0

    def describe(self) -> str:
        """``LoRA: 1.2 M of 25.3 M parameters trainable (4.7 %); backbone: ...``"""
        return (
            f"LoRA: {_count(self.trainable)} of {_count(self.full)} parameters trainable "
            f"({100 * self.fraction:.2f} % of full fine-tuning); backbone: "
            f"{_count(self.backbone_trainable)} of {_count(self.backbone)} "
            f"({100 * self.backbone_fraction:.2f} %)."
        )


def _count(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e5 else f"{n / 1e3:.1f} k"


def _is_lora(name: str) -> bool:
    return ".lora_" in f".{name}"


def parameter_summary(model: nn.Module) -> ParameterSummary:
    """Counts of trainable, LoRA and backbone parameters of ``model`` (see
    :class:`ParameterSummary`)."""
    named = list(model.named_parameters())
    lora = sum(p.numel() for n, p in named if _is_lora(n))
    encoder = getattr(model, "encoder", None)
    enc = list(encoder.named_parameters()) if isinstance(encoder, nn.Module) else []
    return ParameterSummary(
        trainable=sum(p.numel() for _, p in named if p.requires_grad),
        total=sum(p.numel() for _, p in named),
        full=sum(p.numel() for n, p in named if not _is_lora(n)),
        lora=lora,
        backbone=sum(p.numel() for n, p in enc if not _is_lora(n)),
        backbone_trainable=sum(p.numel() for _, p in enc if p.requires_grad),
    )
