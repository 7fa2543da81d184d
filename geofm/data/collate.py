"""Batching samples: tensors stacked, metadata kept as lists."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["collate_samples"]


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """``torch.stack``, through numpy for CPU tensors: a plain single-threaded copy, which on a
    busy machine is an order of magnitude faster than torch's multi-threaded stack."""
    if all(t.device.type == "cpu" and not t.requires_grad for t in tensors):
        return torch.from_numpy(np.stack([t.numpy() for t in tensors]))
    return torch.stack(tensors)


def collate_samples(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack the tensors of ``samples`` and keep every other value as a list.

    Torch's default collate would turn a ``transform`` 6-tuple into six tensors and a WKT
    string list into nested lists; here ``batch["transform"][i]`` is sample ``i``'s tuple.

    Args:
        samples: Dicts with the same keys (``image`` ``(C, H, W)``, ``mask`` ``(H, W)``,
            ``label`` ``()``, ``filename``, ``crs``, ...).

    Returns:
        ``image`` ``(B, C, H, W)`` or ``(B, C, T, H, W)``, ``mask`` ``(B, H, W)``, ``label``
        ``(B,)``, ``nodata_mask`` ``(B, H, W)``, and lists of length ``B`` for the rest.

    Raises:
        ValueError: Samples have different keys, or tensors of one key have different shapes
            (the message names the files; crop or resize the data to one size).
    """
    if not samples:
        raise ValueError("Cannot collate an empty list of samples.")
    keys = list(samples[0])
    for sample in samples[1:]:
        if list(sample) != keys:
            raise ValueError(f"Samples have different keys: {keys} and {list(sample)}.")
    batch: dict[str, Any] = {}
    for key in keys:
        values = [s[key] for s in samples]
        if isinstance(values[0], torch.Tensor):
            shapes = {tuple(v.shape) for v in values}
            if len(shapes) > 1:
                names = [s.get("filename", f"sample {i}") for i, s in enumerate(samples)]
                detail = ", ".join(
                    f"'{n}' {tuple(v.shape)}" for n, v in zip(names, values, strict=True)
                )
                raise ValueError(
                    f"Cannot batch '{key}' tensors of different shapes: {detail}. Use batch_size=1 "
                    "or bring the files to one size."
                )
            batch[key] = _stack(values)
        else:
            batch[key] = values
    return batch
