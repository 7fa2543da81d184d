"""Batch augmentation on the device with kornia, the same geometry for image and masks.

Augmentations are configured per split as a list whose entries are kornia (or any
``nn.Module``) augmentations: instances, classes (built without arguments) or config dicts
``{"class_path": "kornia.augmentation.RandomHorizontalFlip", "init_args": {"p": 0.5}}``; a bare
class name such as ``"RandomVerticalFlip"`` is looked up in ``kornia.augmentation``. In YAML::

    train_transform:
      - class_path: kornia.augmentation.RandomHorizontalFlip
        init_args: {p: 0.5}
      - class_path: kornia.augmentation.RandomCrop
        init_args: {size: [224, 224]}

The lists of TerraTorch configs, albumentations transforms (``albumentations.HorizontalFlip``,
``ToTensorV2``, ...), are read by :mod:`geofm.data.albumentations_compat`: geometric ones with
a kornia counterpart run here, on the device; the others run per sample on the CPU through
albumentations, in the dataset; ``ToTensorV2`` and TerraTorch's temporal reshapes are dropped.

:class:`BatchAugmentation` runs them through ``kornia.augmentation.AugmentationSequential``
with ``data_keys=["input", "mask"]``: each sample of the batch draws its own parameters, and
its image, ``mask`` and ``nodata_mask`` receive the same geometric transform (masks with
nearest-neighbour resampling; intensity augmentations touch the image only). Any number of
bands works; ``(B, C, T, H, W)`` images are folded to ``(B, C*T, H, W)`` so every frame moves
alike. A multimodal image ``{modality: (B, C_m, H, W)}`` is concatenated along channels,
augmented once and split back, so every modality, the mask and the nodata mask receive the same
geometry (intensity augmentations then see all modalities' channels together).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import kornia.augmentation as K
import torch
from kornia.augmentation import GeometricAugmentationBase2D
from torch import nn

from geofm.errors import ConfigError
from geofm.registry.class_path import import_object

__all__ = ["AugmentationSpec", "BatchAugmentation", "RandomSquareSymmetry", "build_augmentation"]

log = logging.getLogger(__name__)

#: What a ``*_transform`` setting accepts.
AugmentationSpec = nn.Module | type | Mapping[str, Any] | str


def _import_class(path: str, key: str) -> type:
    return import_object(path, "kornia.augmentation", what=f"{key}: '{path}'")


def _tuples(value: Any) -> Any:
    """YAML lists as tuples: kornia takes sizes and ranges as tuples (``size: [224, 224]``)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def _build_one(entry: AugmentationSpec, key: str) -> nn.Module:
    if isinstance(entry, nn.Module):
        return entry
    if isinstance(entry, type):
        return entry()
    if isinstance(entry, str):
        return _import_class(entry, key)()
    if isinstance(entry, Mapping):
        if "class_path" not in entry:
            raise ValueError(
                f"{key}: augmentation {dict(entry)} has no 'class_path'; write "
                "{class_path: kornia.augmentation.RandomHorizontalFlip, init_args: {p: 0.5}}."
            )
        extra = set(entry) - {"class_path", "init_args"}
        if extra:
            raise ValueError(f"{key}: augmentation entry has unknown keys {sorted(extra)}.")
        cls = _import_class(entry["class_path"], key)
        init_args = {k: _tuples(v) for k, v in dict(entry.get("init_args") or {}).items()}
        return cls(**init_args)
    raise ValueError(
        f"{key}: {entry!r} is not an augmentation (an nn.Module, a class, or a "
        "{class_path, init_args} dict)."
    )


def build_augmentation(
    spec: AugmentationSpec | Sequence[AugmentationSpec] | None,
    key: str = "transform",
    mask_fill: float | None = None,
) -> BatchAugmentation | None:
    """A :class:`BatchAugmentation` from a config value, or ``None`` for no augmentation.

    Args:
        spec: One entry or a list of entries (see the module docstring; albumentations entries
            with a kornia counterpart are mapped); ``None`` or ``[]`` for none.
        key: The setting name, for error messages (``"train_transform"``).
        mask_fill: Value for mask pixels that the geometry brings in from outside the image
            (see :class:`BatchAugmentation`).

    Raises:
        ConfigError: an entry runs only per sample on the CPU; a datamodule's ``*_transform``
            takes such lists (:func:`geofm.data.albumentations_compat.build_transforms`).
    """
    if spec is None or isinstance(spec, BatchAugmentation):
        return spec
    # Deferred: that module builds on this one.
    from geofm.data.albumentations_compat import build_transforms

    on_cpu, on_device = build_transforms(spec, key, mask_fill)
    if on_cpu is not None:
        raise ConfigError(
            f"{key}: {on_cpu!r} run per sample on the CPU, which a batch augmentation cannot "
            "do; give the list to a datamodule's *_transform setting (or use build_transforms)."
        )
    return on_device


class BatchAugmentation(nn.Module):
    """kornia augmentations applied to a batch dict, one geometry per sample for all its parts.

    Args:
        augmentations: kornia augmentations, applied in order (an ``AugmentationSequential``
            is accepted as a single entry).
        mask_fill: Value written into ``mask`` where the geometry brought in pixels from outside
            the image (rotations by other than 90 degrees, padded crops); ``None`` leaves
            kornia's zero. ``nodata_mask`` is True there either way.
    """

    def __init__(self, augmentations: Sequence[nn.Module], mask_fill: float | None = None):
        super().__init__()
        if len(augmentations) == 1 and isinstance(augmentations[0], K.AugmentationSequential):
            self.sequential = augmentations[0]
        else:
            self.sequential = K.AugmentationSequential(*augmentations, data_keys=["input", "mask"])
        self.mask_fill = mask_fill

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Augment ``batch`` in place and return it.

        Args:
            batch: ``image`` ``(B, C, H, W)``, ``(B, C, T, H, W)`` or a dict of those by
                modality (same ``B, H, W``); optional ``mask``
                ``(B, H, W)`` (any dtype) and ``nodata_mask`` ``(B, H, W)`` bool. Other keys
                pass through untouched (geo metadata then describe the unaugmented sample).

        Returns:
            The batch, shapes as given except ``H, W`` where a crop or resize changed them.
        """
        image = batch["image"]
        flat, unflatten = _flatten_image(image)
        b = flat.shape[0]
        masks = [
            (k, batch[k]) for k in ("mask", "nodata_mask") if isinstance(batch.get(k), torch.Tensor)
        ]
        for name, m in masks:
            if m.shape != (b, *flat.shape[-2:]):
                raise ValueError(
                    f"batch['{name}'] has shape {tuple(m.shape)}; augmentation expects "
                    f"(B, H, W) = {(b, *flat.shape[-2:])} to match the image."
                )
        if not masks:
            out = self.sequential(flat, data_keys=["input"])
            out_image = out[0] if isinstance(out, (list, tuple)) else out
        else:
            # Masks travel as float channels next to a channel of ones that shows, after the
            # transform, which pixels came from inside the image.
            stack = [m.to(flat.dtype) for _, m in masks] + [
                torch.ones_like(masks[0][1], dtype=flat.dtype)
            ]
            out_image, out_masks = self.sequential(
                flat, torch.stack(stack, dim=1), data_keys=["input", "mask"]
            )
            outside = out_masks[:, -1] < 0.5
            for i, (name, original) in enumerate(masks):
                values = out_masks[:, i]
                if name == "nodata_mask":
                    batch[name] = (values > 0.5) | outside
                    continue
                if self.mask_fill is not None:
                    values = values.masked_fill(outside, self.mask_fill)
                if not original.dtype.is_floating_point:
                    values = values.round()
                batch[name] = values.to(original.dtype)
        batch["image"] = unflatten(out_image)
        return batch


def _flatten_image(image: Any) -> tuple[torch.Tensor, Any]:
    """``(B, C', H, W)`` for kornia, and the function that restores ``image``'s structure.

    ``(B, C, T, H, W)`` folds time into channels; a dict ``{modality: (B, C_m, [T,] H, W)}``
    is concatenated along channels in its key order (one geometry for every modality).

    Raises:
        ValueError: the modalities of a dict differ in batch size or height and width.
    """
    if isinstance(image, Mapping):
        names = list(image)
        parts = [_flatten_image(image[m]) for m in names]
        sizes = {m: (p.shape[0], *p.shape[-2:]) for m, (p, _) in zip(names, parts, strict=True)}
        if len(set(sizes.values())) > 1:
            raise ValueError(
                "Augmentation applies one geometry to every modality, so they need the same "
                f"batch size and height x width; got (B, H, W) {sizes}."
            )
        widths = [p.shape[1] for p, _ in parts]

        def unflatten_dict(out: torch.Tensor) -> dict[str, torch.Tensor]:
            chunks = torch.split(out, widths, dim=1)
            return {
                m: restore(chunk) for m, chunk, (_, restore) in zip(names, chunks, parts, strict=True)
            }

        return torch.cat([p for p, _ in parts], dim=1), unflatten_dict
    if image.ndim == 5:
        b, c = image.shape[:2]
        return image.reshape(b, -1, *image.shape[-2:]), lambda out: out.reshape(
            b, c, -1, *out.shape[-2:]
        )
    return image, lambda out: out


class RandomSquareSymmetry(GeometricAugmentationBase2D):
    """One of the symmetries of the square per sample: quarter turns, flips, transposition.

    The 8 symmetries are numbered ``e = 4 * t + k``: transpose (swap rows and columns) when
    ``t == 1``, then turn ``k`` quarter turns counter-clockwise (``torch.rot90``). Each applied
    sample draws one of ``elements`` uniformly. Pixels are moved by indexing, never resampled,
    so values (NaN at nodata included) and mask classes stay exact. This is albumentations'
    ``D4`` (``elements=range(8)``), ``RandomRotate90`` (``(0, 1, 2, 3)``) and ``Transpose``
    (``(4,)``) on the device; kornia's ``RandomRotation90`` resamples and draws its turns
    unevenly, so it is not used for them.

    Args:
        elements: The symmetries drawn from (numbers in ``0..7``); every one by default.
        p: Probability of applying the augmentation to a sample.
        same_on_batch: Draw one symmetry for the whole batch.
        keepdim: kornia's ``keepdim``.

    Raises:
        ValueError: at call time, for non-square images when an element swaps height and
            width (samples of one batch would end up with different shapes).
    """

    def __init__(
        self,
        elements: Sequence[int] = tuple(range(8)),
        p: float = 1.0,
        same_on_batch: bool = False,
        keepdim: bool = False,
    ):
        super().__init__(p=p, same_on_batch=same_on_batch, keepdim=keepdim)
        chosen = sorted({int(e) for e in elements})
        if not chosen or chosen[0] < 0 or chosen[-1] > 7:
            raise ValueError(f"elements={list(elements)} must be numbers in 0..7 (at least one).")
        self.elements = tuple(chosen)
        # Axes swap when the transposition and the odd quarter turns do not cancel out.
        self.swaps_axes = any((e // 4 + e % 4) % 2 for e in self.elements)

    def generate_parameters(self, batch_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        """``element`` ``(B,)``: the symmetry number of each sample."""
        b = batch_shape[0]
        choice = torch.randint(len(self.elements), (1 if self.same_on_batch else b,))
        element = torch.tensor(self.elements, dtype=torch.long)[choice]
        return {"element": element.expand(b) if self.same_on_batch else element}

    def compute_transformation(
        self, input: torch.Tensor, params: dict[str, torch.Tensor], flags: dict[str, Any]
    ) -> torch.Tensor:
        """``(B, 3, 3)`` matrices mapping input pixel ``(x, y)`` to its output position."""
        w = input.shape[-1]
        rotate = input.new_tensor([[0.0, 1.0, 0.0], [-1.0, 0.0, w - 1.0], [0.0, 0.0, 1.0]])
        transpose = input.new_tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
        matrices = []
        for e in params["element"].tolist():
            m = transpose if e >= 4 else torch.eye(3, dtype=input.dtype, device=input.device)
            matrices.append(torch.linalg.matrix_power(rotate, e % 4) @ m)
        return torch.stack(matrices) if matrices else input.new_zeros(0, 3, 3)

    def apply_transform(
        self,
        input: torch.Tensor,
        params: dict[str, torch.Tensor],
        flags: dict[str, Any],
        transform: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Images (or masks) ``(B, C, H, W)`` moved by each sample's symmetry."""
        h, w = input.shape[-2:]
        if self.swaps_axes and h != w:
            raise ValueError(
                f"{type(self).__name__} with quarter turns or transposition needs square images; "
                f"got {h} x {w}. Crop to a square first (RandomCrop height = width), or use "
                "HorizontalFlip / VerticalFlip."
            )
        element = params["element"].to(input.device)
        out = input.clone()
        for e in element.unique().tolist():
            rows = (element == e).nonzero().squeeze(1)
            moved = input[rows].transpose(-2, -1) if e >= 4 else input[rows]
            out[rows] = torch.rot90(moved, e % 4, dims=(-2, -1))
        return out
