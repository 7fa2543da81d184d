"""TerraTorch's albumentations transform lists, read as geofm augmentation.

A TerraTorch config gives ``train_transform`` (``val_transform``, ``test_transform``) as a list
of albumentations transforms::

    train_transform:
      - class_path: albumentations.D4
      - class_path: albumentations.RandomCrop
        init_args: {height: 224, width: 224}
      - class_path: ToTensorV2

:func:`build_transforms` reads every entry of such a list one of three ways:

- **Mapped to the device.** Geometric transforms with an exact kornia counterpart become the
  batch augmentation of :mod:`geofm.data.transforms` (per sample, one geometry for image,
  ``mask`` and ``nodata_mask``, masks nearest-neighbour): ``HorizontalFlip``, ``VerticalFlip``,
  ``RandomRotate90``, ``D4`` (also ``SquareSymmetry``), ``Transpose`` (the last three as
  :class:`~geofm.data.transforms.RandomSquareSymmetry`, square images), ``RandomCrop``,
  ``CenterCrop``, ``Resize`` and ``RandomResizedCrop``. Defaults, ``p`` included, are those of
  albumentations 1.4.10, the version TerraTorch pins (``RandomRotate90`` has ``p=0.5`` there
  and ``p=1`` in albumentations 2). Images resample as OpenCV does; masks take the nearest
  pixel centre (OpenCV's ``INTER_NEAREST`` can pick the pixel half a step off). An entry with
  an argument the mapping does not take (``pad_if_needed``, an ``interpolation`` other than
  nearest, linear or cubic) runs on the CPU.
- **Per sample on the CPU through albumentations.** Every other albumentations transform
  (``Rotate``, ``Affine``, ``ShiftScaleRotate``, ``GaussNoise``, ``CoarseDropout``, ...: their
  borders, kernels and value ranges have no exact kornia counterpart) runs in the dataset, in
  the DataLoader workers, before collation
  (:class:`~geofm.data.sample_transforms.AlbumentationsSampleTransform`): the image
  as ``(H, W, C)`` float32 numpy (``(C, T, H, W)`` as ``(H, W, C*T)``, a multimodal dict as its
  modalities' channels side by side), ``mask`` and ``nodata_mask`` as ``(H, W)`` masks. It sees
  raw values, NaN at nodata, before ``constant_scale`` and normalisation. It needs
  ``pip install albumentations`` (or ``pip install geofm[albumentations]``).
- **Dropped**, with an INFO line each: ``ToTensorV2`` (geofm's samples are tensors already) and
  TerraTorch's ``FlattenTemporalIntoChannels`` / ``UnflattenTemporalFromChannels`` (geofm folds
  time into channels for augmentation, on either route, and unfolds it after).

Order. The CPU runs before batches reach the device, so a list is cut after its last CPU-only
entry: that entry and all before it run on the CPU through albumentations, in order (mapped ones
too, with the same defaults), and the rest run on the device. A kornia entry before a CPU-only
one cannot run through albumentations: that is an error saying to move it after.

TerraTorch class paths arrive as written (``albumentations.HorizontalFlip``,
``albumentations.pytorch.ToTensorV2``, ``terratorch.datasets.transforms.X`` or, after a prefix
swap, ``geofm.datasets.transforms.X``) or, while the ``geofm`` command aliases TerraTorch's
modules, as instances of this module's :class:`FlattenTemporalIntoChannels` /
:class:`UnflattenTemporalFromChannels`; both are read alike, and TerraTorch itself is never
imported. A bare name is kornia's when ``kornia.augmentation`` has it (``RandomCrop`` is
kornia's, as before); else ``ToTensorV2`` and albumentations names are read as above.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import kornia.augmentation as K
from torch import nn

from geofm.data.sample_transforms import AlbumentationsSampleTransform, import_albumentations
from geofm.data.transforms import (
    AugmentationSpec,
    BatchAugmentation,
    RandomSquareSymmetry,
    _build_one,
    _tuples,
)
from geofm.errors import ConfigError
from geofm.registry.class_path import import_object

__all__ = [
    "MAPPED_TRANSFORMS",
    "FlattenTemporalIntoChannels",
    "UnflattenTemporalFromChannels",
    "build_transforms",
]

log = logging.getLogger(__name__)

_INSTALL = "pip install albumentations (or pip install geofm[albumentations])"


class FlattenTemporalIntoChannels(nn.Module):
    """TerraTorch's transform of that name, which geofm drops: time is folded for augmentation
    (and unfolded after) without it. Kept so that its class path resolves."""

    def forward(self, x: Any) -> Any:
        return x


class UnflattenTemporalFromChannels(nn.Module):
    """TerraTorch's transform of that name, which geofm drops (see
    :class:`FlattenTemporalIntoChannels`); takes TerraTorch's arguments and ignores them."""

    def __init__(self, n_timesteps: int | None = None, n_channels: int | None = None):
        super().__init__()
        self.n_timesteps, self.n_channels = n_timesteps, n_channels

    def forward(self, x: Any) -> Any:
        return x


# name -> why geofm drops it (one INFO line per entry).
_DROPPED: dict[str, str] = {
    "ToTensorV2": "geofm's samples are tensors already",
    "FlattenTemporalIntoChannels": "geofm folds time into channels for augmentation itself "
    "and unfolds it after",
    "UnflattenTemporalFromChannels": "geofm folds time into channels for augmentation itself "
    "and unfolds it after",
}
_DROP_MARKERS = (FlattenTemporalIntoChannels, UnflattenTemporalFromChannels)
# Modules TerraTorch's own transforms are named by (before and after a prefix swap).
_TERRATORCH_TRANSFORMS = ("terratorch.datasets.transforms.", "geofm.datasets.transforms.")


class _Unmapped(Exception):
    """The arguments have no exact kornia counterpart: the entry runs through albumentations."""


# OpenCV interpolation flags (albumentations' ``interpolation``) that kornia has.
_RESAMPLE = {0: "nearest", 1: "bilinear", 2: "bicubic"}


def _resample(interpolation: int, mask_interpolation: int) -> str:
    if interpolation not in _RESAMPLE:
        raise _Unmapped(
            f"interpolation={interpolation} (kornia has 0, 1, 2: nearest, linear, cubic)"
        )
    if mask_interpolation != 0:
        raise _Unmapped(f"mask_interpolation={mask_interpolation} (masks move nearest-neighbour)")
    return _RESAMPLE[interpolation]


def _pair(value: Any, name: str) -> tuple[int, int]:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return int(value[0]), int(value[1])
    raise _Unmapped(f"{name}={value!r} (expected [height, width])")


# One function per mapped transform: its albumentations arguments (1.4.10 defaults) -> kornia.
def _horizontal_flip(p: float = 0.5) -> nn.Module:
    return K.RandomHorizontalFlip(p=p)


def _vertical_flip(p: float = 0.5) -> nn.Module:
    return K.RandomVerticalFlip(p=p)


def _flip(p: float = 0.5) -> nn.Module:
    # albumentations 1.4's Flip (gone in 2): horizontal, vertical or both, one third each.
    return RandomSquareSymmetry((7, 5, 2), p=p)


def _random_rotate90(p: float = 0.5) -> nn.Module:
    return RandomSquareSymmetry((0, 1, 2, 3), p=p)


def _d4(p: float = 1.0) -> nn.Module:
    return RandomSquareSymmetry(tuple(range(8)), p=p)


def _transpose(p: float = 0.5) -> nn.Module:
    return RandomSquareSymmetry((4,), p=p)


def _random_crop(height: int, width: int, p: float = 1.0) -> nn.Module:
    return K.RandomCrop((int(height), int(width)), p=p)


def _center_crop(height: int, width: int, p: float = 1.0) -> nn.Module:
    return K.CenterCrop((int(height), int(width)), p=p)


def _resize(
    height: int, width: int, interpolation: int = 1, mask_interpolation: int = 0, p: float = 1.0
) -> nn.Module:
    # align_corners=False: OpenCV samples pixel centres as torch's align_corners=False does.
    resample = _resample(interpolation, mask_interpolation)
    return K.Resize((int(height), int(width)), resample=resample, align_corners=False, p=p)


def _random_resized_crop(
    size: Any = None,
    height: int | None = None,
    width: int | None = None,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (0.75, 4 / 3),
    interpolation: int = 1,
    mask_interpolation: int = 0,
    p: float = 1.0,
) -> nn.Module:
    if size is None:
        if height is None or width is None:
            raise _Unmapped("neither size nor height and width")
        size = (height, width)
    elif isinstance(size, int) and width is not None:
        size = (size, width)  # albumentations 1.4: size as the height, with width
    resample = _resample(interpolation, mask_interpolation)
    return K.RandomResizedCrop(
        _pair(size, "size"),
        scale=_tuples(list(scale)),
        ratio=_tuples(list(ratio)),
        resample=resample,
        align_corners=False,
        p=p,
    )


#: albumentations transform name -> function from its arguments to the kornia augmentation.
MAPPED_TRANSFORMS: dict[str, Callable[..., nn.Module]] = {
    "HorizontalFlip": _horizontal_flip,
    "VerticalFlip": _vertical_flip,
    "Flip": _flip,
    "RandomRotate90": _random_rotate90,
    "D4": _d4,
    "SquareSymmetry": _d4,  # albumentations 2's name for D4
    "Transpose": _transpose,
    "RandomCrop": _random_crop,
    "CenterCrop": _center_crop,
    "Resize": _resize,
    "RandomResizedCrop": _random_resized_crop,
}


@dataclass
class _Entry:
    """One entry of a transform list, read."""

    key: str  # "train_transform[2]"
    name: str  # as written, for messages
    device: nn.Module | None = None  # the kornia augmentation, when it may run on the device
    path: str | None = None  # albumentations class path, to run it on the CPU
    init_args: dict[str, Any] = field(default_factory=dict)
    instance: Any = None  # an albumentations transform given as an object
    cpu_only: bool = False
    why_cpu: str = ""  # why it cannot run on the device, for the missing-package error

    @property
    def runs_in_albumentations(self) -> bool:
        return self.path is not None or self.instance is not None


def _is_albumentations_object(obj: Any) -> bool:
    cls = obj if isinstance(obj, type) else type(obj)
    return cls.__module__.split(".")[0] == "albumentations"


def _drop(key: str, name: str) -> None:
    short = name.rpartition(".")[2]
    log.info("%s: %s dropped: %s.", key, name, _DROPPED[short])


def _albumentations_args(name: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """Arguments as both albumentations 1.4 and 2 take them."""
    out = dict(args)
    if out.pop("always_apply", False):  # 1.4's switch, gone in 2: the same as p=1
        out["p"] = 1.0
    if name == "RandomResizedCrop" and "size" not in out and {"height", "width"} <= set(out):
        out["size"] = (out.pop("height"), out.pop("width"))  # 1.4's deprecated form
    mapper = MAPPED_TRANSFORMS.get(name)
    if mapper is not None and "p" not in out:
        # TerraTorch's default (albumentations 1.4.10), also through albumentations 2.
        out["p"] = inspect.signature(mapper).parameters["p"].default
    return out


def _albumentations_entry(path: str, args: Mapping[str, Any], key: str) -> _Entry:
    """An ``albumentations.X`` entry: mapped to kornia when its arguments allow, else CPU."""
    name = path.rpartition(".")[2]
    init_args = _albumentations_args(name, args)
    mapper = MAPPED_TRANSFORMS.get(name)
    if mapper is None:
        why = "it has no kornia counterpart"
        return _Entry(key, path, path=path, init_args=init_args, cpu_only=True, why_cpu=why)
    kornia_args = {k: _tuples(v) for k, v in init_args.items()}
    try:
        inspect.signature(mapper).bind(**kornia_args)
    except TypeError:
        takes = ", ".join(inspect.signature(mapper).parameters)
        why = f"its arguments {sorted(args)} are beyond the kornia mapping, which takes {takes}"
        return _Entry(key, path, path=path, init_args=init_args, cpu_only=True, why_cpu=why)
    try:
        module = mapper(**kornia_args)
    except _Unmapped as err:
        why = f"kornia has no counterpart of {err}"
        return _Entry(key, path, path=path, init_args=init_args, cpu_only=True, why_cpu=why)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{key}: {path} with {dict(args)}: {err}") from err
    return _Entry(key, path, device=module, path=path, init_args=init_args)


def _albumentations_has(name: str) -> bool:
    try:
        return hasattr(import_albumentations(), name)
    except ImportError:
        return False


def _resolve_path(path: str, args: Mapping[str, Any], key: str) -> _Entry | None:
    """The entry a ``class_path`` names; ``None`` for a dropped one."""
    name = path.rpartition(".")[2]
    root = path.split(".")[0]
    as_kornia = {"class_path": path, "init_args": args}
    if "." not in path:
        if hasattr(K, path):  # bare names are kornia's first, as before
            return _Entry(key, path, device=_build_one(as_kornia, key))
        if path in _DROPPED:
            _drop(key, path)
            return None
        if path in MAPPED_TRANSFORMS or _albumentations_has(path):
            return _albumentations_entry(f"albumentations.{path}", args, key)
    elif name in _DROPPED and root in ("albumentations", "terratorch", "geofm"):
        _drop(key, path)
        return None
    elif path.startswith(_TERRATORCH_TRANSFORMS):
        raise ConfigError(
            f"{key}: {path} has no geofm counterpart. Of TerraTorch's own transforms geofm "
            f"reads {', '.join(sorted(n for n in _DROPPED if n != 'ToTensorV2'))} (dropped); "
            "give albumentations or kornia transforms instead."
        )
    elif root == "albumentations":
        return _albumentations_entry(path, args, key)
    return _Entry(key, path, device=_build_one(as_kornia, key))


def _resolve(entry: Any, key: str) -> _Entry | None:
    """Read one entry of a transform list; ``None`` for a dropped one."""
    if isinstance(entry, _DROP_MARKERS) or (
        isinstance(entry, type) and issubclass(entry, _DROP_MARKERS)
    ):
        _drop(key, entry.__name__ if isinstance(entry, type) else type(entry).__name__)
        return None
    if isinstance(entry, type) and _is_albumentations_object(entry):
        return _resolve_path(f"albumentations.{entry.__name__}", {}, key)
    if not isinstance(entry, (nn.Module, type, str, Mapping)) and _is_albumentations_object(entry):
        name = type(entry).__name__
        if name in _DROPPED:
            _drop(key, name)
            return None
        # An object is run as built: its arguments are not read back to map them.
        why = "an albumentations object runs as given"
        return _Entry(key, name, instance=entry, cpu_only=True, why_cpu=why)
    if isinstance(entry, str):
        return _resolve_path(entry, {}, key)
    if isinstance(entry, Mapping) and isinstance(entry.get("class_path"), str):
        extra = set(entry) - {"class_path", "init_args"}
        if extra:
            raise ConfigError(f"{key}: transform entry has unknown keys {sorted(extra)}.")
        return _resolve_path(entry["class_path"], dict(entry.get("init_args") or {}), key)
    name = entry.__name__ if isinstance(entry, type) else type(entry).__name__
    return _Entry(key, name, device=_build_one(entry, key))


def build_transforms(
    spec: AugmentationSpec | Sequence[AugmentationSpec] | None,
    key: str = "transform",
    mask_fill: float | None = None,
) -> tuple[AlbumentationsSampleTransform | None, BatchAugmentation | None]:
    """A ``*_transform`` setting as its per-sample CPU part and its device part.

    Args:
        spec: One entry or a list: kornia augmentations (as :func:`~geofm.data.transforms.
            build_augmentation` takes them), albumentations transforms (class paths, config
            dicts or objects), ``ToTensorV2`` and TerraTorch's temporal transforms (see the
            module docstring).
        key: The setting's name, for messages (``"train_transform"``); entries are named
            ``train_transform[i]``.
        mask_fill: Value for mask pixels that a transform brings in from outside the image.

    Returns:
        The transform the dataset runs on each sample (``None`` when every entry runs on the
        device) and the batch augmentation run on the device (``None`` when none is left).

    Raises:
        ConfigError: a kornia entry comes before a CPU-only one; albumentations is needed but
            not installed; an albumentations transform rejects its arguments.
    """
    if spec is None:
        return None, None
    if isinstance(spec, BatchAugmentation):
        return None, spec
    many = isinstance(spec, Sequence) and not isinstance(spec, str)
    entries = list(spec) if many else [spec]
    resolved = [r for i, e in enumerate(entries) if (r := _resolve(e, f"{key}[{i}]")) is not None]
    cut = max((i + 1 for i, r in enumerate(resolved) if r.cpu_only), default=0)
    on_cpu, on_device = resolved[:cut], resolved[cut:]
    if on_cpu:
        last = on_cpu[-1]
        for r in on_cpu:
            if not r.runs_in_albumentations:
                raise ConfigError(
                    f"{r.key}: {r.name} runs on the device, after the per-sample CPU "
                    f"transforms, but {last.key}: {last.name} after it runs only per sample on "
                    f"the CPU through albumentations ({last.why_cpu}). Move {r.name} after "
                    f"{last.name}, or use an albumentations transform in its place."
                )
        _require_albumentations(on_cpu)
        sample_transform = AlbumentationsSampleTransform(
            [_albumentations(r) for r in on_cpu], mask_fill
        )
        log.info(
            "%s: %s per sample on the CPU (albumentations)%s.",
            key,
            ", ".join(r.name.rpartition(".")[2] for r in on_cpu),
            f", then {len(on_device)} on the device (kornia)" if on_device else "",
        )
    else:
        sample_transform = None
    batch = BatchAugmentation([r.device for r in on_device], mask_fill) if on_device else None
    return sample_transform, batch


def _require_albumentations(on_cpu: Sequence[_Entry]) -> None:
    """Raise, naming the entry that needs it, when albumentations is not installed."""
    try:
        import_albumentations()
    except ImportError as err:
        last = on_cpu[-1]
        before = f" (and so the {len(on_cpu) - 1} before it)" if len(on_cpu) > 1 else ""
        raise ConfigError(
            f"{last.key}: {last.name} runs per sample on the CPU through albumentations "
            f"({last.why_cpu}){before}, and albumentations is not installed: {_INSTALL}."
        ) from err


def _albumentations(entry: _Entry) -> Any:
    """The albumentations transform of ``entry`` (built from its class path)."""
    if entry.instance is not None:
        return entry.instance
    assert entry.path is not None  # runs_in_albumentations was checked
    cls = import_object(entry.path, "albumentations", what=f"{entry.key}: '{entry.path}'")
    try:
        return cls(**entry.init_args)
    except Exception as err:  # albumentations validates arguments with its own error types
        detail = " ".join(str(err).split())
        raise ConfigError(f"{entry.key}: {entry.path}({entry.init_args}): {detail}") from err
