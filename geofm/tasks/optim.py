"""Optimizers and learning-rate schedulers from names, with per-group learning rates and warm-up.

Parameter groups pick parameters by **fnmatch** pattern (shell-style: ``*`` matches any text,
dots included) on the parameter's name inside the model, e.g. ``"encoder.*"`` or
``"*.bias"``. The first group whose pattern matches a parameter takes it; parameters no group
takes use the optimizer's defaults. Frozen parameters (``requires_grad=False``) are left out.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable, Mapping, Sequence
from types import ModuleType
from typing import Any

import torch
from torch import nn

from geofm.registry.class_path import import_object

__all__ = ["resolve_class", "build_optimizer", "build_scheduler", "SCHEDULER_KEYS"]

log = logging.getLogger(__name__)

# Keys of scheduler_hparams that geofm reads; every other key goes to the scheduler.
SCHEDULER_KEYS = ("interval", "frequency", "monitor", "warmup_epochs", "warmup_steps", "warmup_start_factor")


def resolve_class(spec: str | type, namespace: ModuleType, what: str) -> type:
    """A class from a name in ``namespace`` (``"AdamW"``) or a dotted path (``"pkg.mod.Cls"``).

    Raises:
        ValueError: naming ``what`` (the config key), with close names in ``namespace``.
    """
    if isinstance(spec, type):
        return spec
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"{what} must be a class name or a dotted class path, got {spec!r}.")
    found = import_object(spec, namespace.__name__, what=f"{what}='{spec}'")
    if not isinstance(found, type):
        raise ValueError(f"{what}='{spec}' is not a class.")
    return found


def _group_parameters(
    named_parameters: Iterable[tuple[str, nn.Parameter]], param_groups: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    trainable = [(name, p) for name, p in named_parameters if p.requires_grad]
    groups: list[dict[str, Any]] = []
    taken: set[str] = set()
    for index, spec in enumerate(param_groups):
        spec = dict(spec)
        patterns = spec.pop("pattern", None)
        if patterns is None:
            raise ValueError(
                f"param_groups[{index}] needs a 'pattern' key (fnmatch, e.g. 'encoder.*'); "
                f"got keys {sorted(spec)}."
            )
        patterns = [patterns] if isinstance(patterns, str) else list(patterns)
        params = [
            p for name, p in trainable
            if name not in taken and any(fnmatch.fnmatchcase(name, pat) for pat in patterns)
        ]
        matched = {name for name, _ in trainable if any(fnmatch.fnmatchcase(name, pat) for pat in patterns)}
        if not params:
            examples = [name for name, _ in trainable[:5]]
            raise ValueError(
                f"param_groups[{index}] pattern {patterns} matches no trainable parameter not "
                f"already taken by an earlier group (patterns are fnmatch on names such as {examples})."
            )
        taken |= matched
        groups.append({"params": params, **spec})
    rest = [p for name, p in trainable if name not in taken]
    if rest:
        groups.append({"params": rest})
    return groups


def build_optimizer(
    named_parameters: Iterable[tuple[str, nn.Parameter]],
    optimizer: str | type = "AdamW",
    lr: float = 1e-3,
    optimizer_hparams: Mapping[str, Any] | None = None,
    param_groups: Sequence[Mapping[str, Any]] | None = None,
) -> torch.optim.Optimizer:
    """An optimizer over the trainable parameters.

    Args:
        named_parameters: ``(name, parameter)`` pairs; names are what the patterns match.
        optimizer: A ``torch.optim`` class name or a class path.
        lr: Default learning rate.
        optimizer_hparams: Other optimizer arguments (``weight_decay``...).
        param_groups: ``[{"pattern": "encoder.*", "lr": 1e-5, ...}, ...]``; any other key
            overrides the optimizer's argument for that group.

    Raises:
        ValueError: for an unknown optimizer, or a group pattern that matches nothing.
    """
    cls = resolve_class(optimizer, torch.optim, "optimizer")
    groups = _group_parameters(named_parameters, param_groups or [])
    if not groups:
        raise ValueError("No trainable parameters: everything is frozen, so there is nothing to optimize.")
    return cls(groups, lr=lr, **dict(optimizer_hparams or {}))


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    scheduler: str | type | None = None,
    scheduler_hparams: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """A Lightning ``lr_scheduler`` config dict, or ``None`` when there is no scheduler.

    Args:
        optimizer: The optimizer to schedule.
        scheduler: A ``torch.optim.lr_scheduler`` class name or a class path; ``None`` with a
            warm-up gives the warm-up alone.
        scheduler_hparams: The scheduler's arguments plus geofm's keys: ``interval``
            (``"epoch"``, the default, or ``"step"``), ``frequency``, ``monitor`` (for
            ``ReduceLROnPlateau``, default ``"val/loss"``), ``warmup_epochs`` (with interval
            ``"epoch"``) or ``warmup_steps`` (with interval ``"step"``): a linear ramp from
            ``warmup_start_factor`` (default 0.01) times the learning rate, then the scheduler.

    Raises:
        ValueError: for an unknown scheduler, a bad interval or a warm-up that does not match it.
    """
    args = dict(scheduler_hparams or {})
    interval = args.pop("interval", "epoch")
    frequency = args.pop("frequency", 1)
    monitor = args.pop("monitor", "val/loss")
    warmup_epochs = args.pop("warmup_epochs", None)
    warmup_steps = args.pop("warmup_steps", None)
    start_factor = args.pop("warmup_start_factor", 0.01)
    if interval not in ("epoch", "step"):
        raise ValueError(f"scheduler_hparams.interval='{interval}'; use 'epoch' or 'step'.")
    if warmup_epochs and warmup_steps:
        raise ValueError("scheduler_hparams sets both warmup_epochs and warmup_steps; keep one.")
    if warmup_epochs and interval != "epoch":
        raise ValueError("scheduler_hparams.warmup_epochs needs interval='epoch'; use warmup_steps with 'step'.")
    if warmup_steps and interval != "step":
        raise ValueError("scheduler_hparams.warmup_steps needs interval='step'; use warmup_epochs with 'epoch'.")
    warmup = int(warmup_epochs or warmup_steps or 0)
    if scheduler is None:
        if args:
            raise ValueError(f"scheduler_hparams {sorted(args)} given without a scheduler.")
        if not warmup:
            return None
        schedule: Any = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor, total_iters=warmup)
    else:
        cls = resolve_class(scheduler, torch.optim.lr_scheduler, "scheduler")
        if warmup and issubclass(cls, torch.optim.lr_scheduler.ReduceLROnPlateau):
            raise ValueError(
                "ReduceLROnPlateau cannot follow a warm-up (torch's SequentialLR does not chain it); "
                "remove warmup_epochs/warmup_steps or pick another scheduler."
            )
        if warmup:
            ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor, total_iters=warmup)
            main = cls(optimizer, **args)
            schedule = torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])
        else:
            schedule = cls(optimizer, **args)
    config: dict[str, Any] = {"scheduler": schedule, "interval": interval, "frequency": frequency}
    if isinstance(schedule, torch.optim.lr_scheduler.ReduceLROnPlateau):
        config["monitor"] = monitor
    return config
