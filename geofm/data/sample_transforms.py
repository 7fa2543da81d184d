"""Per-sample transforms on the CPU: albumentations run on one sample dict, in the dataset.

A dataset (:class:`~geofm.data.datasets.base.SampleDataset`) runs its ``transform`` on every
sample it returns, so these run in the DataLoader's workers, before collation and before the
batch augmentation on the device. :func:`geofm.data.albumentations_compat.build_transforms`
decides which entries of a ``*_transform`` setting run here.
"""

from __future__ import annotations

import os
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from geofm.data.transforms import _flatten_image

__all__ = ["AlbumentationsSampleTransform", "SampleTransform", "import_albumentations"]

#: What a dataset's ``transform`` is: a sample dict in, a sample dict out.
SampleTransform = Callable[[dict[str, Any]], dict[str, Any]]


def import_albumentations() -> types.ModuleType:
    """``albumentations``, imported without its update check.

    Raises:
        ImportError: albumentations is not installed.
    """
    # On first import albumentations asks PyPI for a newer version: a network call in every
    # run (and DataLoader worker), and a wait where there is no network. Off unless set.
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations

    return albumentations


class AlbumentationsSampleTransform:
    """albumentations transforms run on one sample, in the dataset (CPU, DataLoader workers).

    Pixels that a geometric transform brings in from outside the image are marked in
    ``nodata_mask`` and, with ``mask_fill``, set to it in ``mask``, as on the device (so are
    the holes of a dropout given ``fill_mask: 0``: they are filled, not data).

    Args:
        transforms: albumentations transforms, applied in order.
        mask_fill: Value for mask pixels brought in from outside the image; ``None`` leaves
            albumentations' ``fill_mask``.
    """

    def __init__(self, transforms: Sequence[Any], mask_fill: float | None = None):
        A = import_albumentations()
        self.transforms = list(transforms)
        self.mask_fill = mask_fill
        # "inside" is a mask of ones: after the transforms its zeros are pixels from outside.
        self.compose = A.Compose(
            self.transforms, additional_targets={"nodata_mask": "mask", "inside": "mask"}
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(type(t).__name__ for t in self.transforms)})"

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        """The transformed sample (a new dict; other keys as given).

        Args:
            sample: ``image`` ``(C, H, W)``, ``(C, T, H, W)`` or ``{modality: ...}`` tensors;
                optional ``mask`` ``(H, W)`` (any dtype) and ``nodata_mask`` ``(H, W)`` bool.

        Returns:
            Shapes as given except ``H, W`` where a crop or resize changed them.
        """
        image = sample["image"]
        batched = (
            {m: v[None] for m, v in image.items()} if isinstance(image, Mapping) else image[None]
        )
        flat, unflatten = _flatten_image(batched)  # (1, C', H, W)
        array = np.ascontiguousarray(flat[0].permute(1, 2, 0).numpy())
        h, w, channels = array.shape
        targets: dict[str, np.ndarray] = {"image": array, "inside": np.ones((h, w), np.uint8)}
        mask, nodata = sample.get("mask"), sample.get("nodata_mask")
        if isinstance(mask, torch.Tensor):
            targets["mask"] = mask.numpy().astype(np.float32)  # OpenCV takes no int64
        if isinstance(nodata, torch.Tensor):
            targets["nodata_mask"] = nodata.numpy().astype(np.uint8)
        self._seed()
        out = self.compose(**targets)
        result = np.asarray(out["image"])
        result = result[..., None] if result.ndim == 2 else result
        if result.shape[-1] != channels:
            raise ValueError(
                f"{self!r} turned {channels} bands into {result.shape[-1]}; geofm's transforms "
                "must keep the bands (the model's input)."
            )
        chw = torch.from_numpy(np.ascontiguousarray(result.transpose(2, 0, 1))).to(flat.dtype)
        restored = unflatten(chw[None])
        new = dict(sample)
        new["image"] = (
            {m: v[0] for m, v in restored.items()} if isinstance(restored, Mapping) else restored[0]
        )
        outside = torch.from_numpy(np.asarray(out["inside"]) < 0.5)
        if isinstance(mask, torch.Tensor):
            values = torch.from_numpy(np.array(out["mask"], dtype=np.float32))
            if self.mask_fill is not None:
                values = values.masked_fill(outside, self.mask_fill)
            if not mask.dtype.is_floating_point:
                values = values.round()
            new["mask"] = values.to(mask.dtype)
        if isinstance(nodata, torch.Tensor):
            new["nodata_mask"] = torch.from_numpy(np.asarray(out["nodata_mask"]) > 0) | outside
        return new

    def _seed(self) -> None:
        # albumentations 2 draws from its own generators, seeded from the OS unless told.
        # Seeding them from torch's generator (which seed_everything and each DataLoader
        # worker seed) makes runs repeat; albumentations 1.4 uses `random`, seeded alike.
        set_seed = getattr(self.compose, "set_random_seed", None)
        if set_seed is not None:
            set_seed(int(torch.randint(0, 2**31 - 1, ()).item()))
