"""Batch augmentation for detection: flips and quarter turns that move boxes and masks too.

A detection batch holds, besides ``image`` ``(B, C, H, W)``, each sample's objects as lists
(``boxes`` ``(N_i, 4)`` xyxy pixels, ``masks`` ``(N_i, H, W)``). kornia's
``AugmentationSequential`` resamples boxes through a matrix in pixel-centre coordinates,
which is half a pixel off for boxes in pixel-edge coordinates; so here every geometric
augmentation is one of the 8 symmetries of the square, applied by exact index moves to the
image, ``nodata_mask`` and masks, and by the matching exact arithmetic to the boxes.

A ``*_transform`` setting is read as for the other datamodules
(:func:`~geofm.data.albumentations_compat.build_transforms`), and each entry must be one of:

- a flip or quarter turn: kornia's ``RandomHorizontalFlip``, ``RandomVerticalFlip``,
  geofm's :class:`~geofm.data.transforms.RandomSquareSymmetry`, or albumentations'
  ``HorizontalFlip``, ``VerticalFlip``, ``Flip``, ``RandomRotate90``, ``D4``, ``Transpose``
  (their ``p`` and ``same_on_batch`` are honoured);
- a kornia intensity augmentation (``RandomGaussianNoise``, ``ColorJitter``...), which touches
  the image only.

Anything else (crops, resizes, rotations by other angles, albumentations transforms that run
per sample on the CPU) is refused with a message naming it: boxes would not follow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import kornia.augmentation as K
import torch
from torch import nn

from geofm.data.albumentations_compat import build_transforms
from geofm.data.transforms import AugmentationSpec, RandomSquareSymmetry
from geofm.errors import ConfigError

__all__ = [
    "DetectionAugmentation",
    "apply_symmetry",
    "build_detection_augmentation",
    "symmetry_boxes",
]

#: Symmetry numbers (see RandomSquareSymmetry: transpose when ``e >= 4``, then ``e % 4``
#: counter-clockwise quarter turns) of the two flips.
HORIZONTAL_FLIP = 7
VERTICAL_FLIP = 5

_SUPPORTED = (
    "flips and quarter turns (kornia RandomHorizontalFlip / RandomVerticalFlip, "
    "geofm RandomSquareSymmetry; albumentations HorizontalFlip, VerticalFlip, Flip, "
    "RandomRotate90, D4, Transpose) and kornia intensity augmentations"
)


def symmetry_boxes(boxes: torch.Tensor, element: int, height: int, width: int) -> torch.Tensor:
    """Boxes ``(N, 4)`` xyxy in pixel-edge coordinates moved by symmetry ``element``.

    Args:
        boxes: ``(N, 4)`` ``(x_min, y_min, x_max, y_max)`` on an ``height x width`` image.
        element: ``4 * t + k``: transpose when ``t == 1``, then ``k`` counter-clockwise quarter
            turns (as ``torch.rot90(x, k, dims=(-2, -1))``).
        height: Image rows before the move.
        width: Image columns before the move.

    Returns:
        ``(N, 4)`` boxes on the moved image.
    """
    x1, y1, x2, y2 = boxes.unbind(-1)
    h, w = height, width
    if element >= 4:  # transpose: (x, y) -> (y, x)
        x1, y1, x2, y2 = y1, x1, y2, x2
        h, w = w, h
    for _ in range(element % 4):
        # torch.rot90 by one quarter: pixel (row r, col c) goes to (w - 1 - c, r), so the
        # point (x, y) goes to (y, w - x).
        x1, y1, x2, y2 = y1, w - x2, y2, w - x1
        h, w = w, h
    return torch.stack([x1, y1, x2, y2], dim=-1)


def apply_symmetry(tensor: torch.Tensor, element: int) -> torch.Tensor:
    """``tensor`` ``(..., H, W)`` moved by symmetry ``element`` (exact indexing)."""
    moved = tensor.transpose(-2, -1) if element >= 4 else tensor
    return torch.rot90(moved, element % 4, dims=(-2, -1))


@dataclass(frozen=True)
class _Geometric:
    """One geometric entry: the symmetries it draws from and how often it applies."""

    name: str
    elements: tuple[int, ...]
    p: float
    same_on_batch: bool

    @property
    def swaps_axes(self) -> bool:
        return any((e // 4 + e % 4) % 2 for e in self.elements)


class DetectionAugmentation(nn.Module):
    """Flips, quarter turns and intensity augmentations of a detection batch.

    Args:
        augmentations: kornia modules as :func:`build_detection_augmentation` checked them.
        key: The setting's name, for messages.
    """

    def __init__(self, augmentations: Sequence[nn.Module], key: str = "transform"):
        super().__init__()
        self.steps: list[_Geometric | nn.Module] = []
        self.intensity = nn.ModuleList()  # registered so .to(device) moves their buffers
        for i, module in enumerate(augmentations):
            step = _geometric(module)
            if step is None:
                if not isinstance(module, K.IntensityAugmentationBase2D):
                    raise ConfigError(
                        f"{key}: {type(module).__name__} (entry {i} after mapping) cannot move "
                        f"the boxes of a detection batch with the image. Detection takes "
                        f"{_SUPPORTED}."
                    )
                self.intensity.append(module)
                step = module
            self.steps.append(step)

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Augment ``batch`` in place and return it.

        Args:
            batch: ``image`` ``(B, C, H, W)`` or ``(B, C, T, H, W)``; optional ``nodata_mask``
                ``(B, H, W)`` and the lists ``boxes`` ``(N_i, 4)``, ``masks`` ``(N_i, H, W)``.
                Other keys pass through (geo metadata then describe the unaugmented chip).
        """
        for step in self.steps:
            if isinstance(step, _Geometric):
                self._geometric(batch, step)
            else:
                image = batch["image"]
                flat = image.reshape(image.shape[0], -1, *image.shape[-2:])
                batch["image"] = step(flat).reshape(image.shape)
        return batch

    def _geometric(self, batch: dict[str, Any], step: _Geometric) -> None:
        image = batch["image"]
        b, (h, w) = image.shape[0], image.shape[-2:]
        if step.swaps_axes and h != w:
            raise ValueError(
                f"{step.name} with quarter turns or transposition needs square images; got "
                f"{h} x {w}. Use HorizontalFlip / VerticalFlip, or tile the chips as squares."
            )
        draws = 1 if step.same_on_batch else b
        applied = (torch.rand(draws) < step.p).expand(b) if step.same_on_batch else (
            torch.rand(b) < step.p
        )
        choice = torch.randint(len(step.elements), (draws,)).expand(b)
        elements = [
            step.elements[int(c)] if a else None for a, c in zip(applied, choice, strict=True)
        ]
        if all(e is None for e in elements):
            return
        images, nodata = list(image.unbind(0)), batch.get("nodata_mask")
        nodata_list = list(nodata.unbind(0)) if isinstance(nodata, torch.Tensor) else None
        for i, e in enumerate(elements):
            if e is None:
                continue
            images[i] = apply_symmetry(images[i], e)
            if nodata_list is not None:
                nodata_list[i] = apply_symmetry(nodata_list[i], e)
            if "boxes" in batch:
                batch["boxes"][i] = symmetry_boxes(batch["boxes"][i], e, h, w)
            if "masks" in batch:
                batch["masks"][i] = apply_symmetry(batch["masks"][i], e)
        batch["image"] = torch.stack(images)
        if nodata_list is not None:
            batch["nodata_mask"] = torch.stack(nodata_list)


def _geometric(module: nn.Module) -> _Geometric | None:
    """The symmetries a flip or quarter-turn module draws from; ``None`` for other modules."""
    name = type(module).__name__
    same = bool(getattr(module, "same_on_batch", False))
    if isinstance(module, RandomSquareSymmetry):
        return _Geometric(name, module.elements, float(module.p), same)
    if isinstance(module, K.RandomHorizontalFlip):
        return _Geometric(name, (HORIZONTAL_FLIP,), float(module.p), same)
    if isinstance(module, K.RandomVerticalFlip):
        return _Geometric(name, (VERTICAL_FLIP,), float(module.p), same)
    return None


def build_detection_augmentation(
    spec: AugmentationSpec | Sequence[AugmentationSpec] | None, key: str = "transform"
) -> DetectionAugmentation | None:
    """The detection augmentation of a ``*_transform`` setting, or ``None`` for none.

    Raises:
        ConfigError: an entry is not a flip, quarter turn or intensity augmentation (named,
            with what detection takes), or runs per sample on the CPU.
    """
    on_cpu, on_device = build_transforms(spec, key, None)
    if on_cpu is not None:
        raise ConfigError(
            f"{key}: {on_cpu!r} run per sample on the CPU through albumentations, which does "
            f"not move detection boxes here. Detection takes {_SUPPORTED}."
        )
    if on_device is None:
        return None
    modules = list(on_device.sequential.children())
    return DetectionAugmentation(modules, key)
