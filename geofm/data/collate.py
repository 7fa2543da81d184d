"""Batching samples: tensors stacked, metadata kept as lists.

A dict of tensors (a multimodal ``image``: ``{modality: (C, H, W)}``) is stacked key by key.
Samples whose dicts hold different modalities (``allow_missing_modalities``) cannot form one
batch: the error names the samples and the modalities they lack (use ``batch_size=1``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["OBJECT_KEYS", "collate_detection", "collate_samples"]


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """``torch.stack``, through numpy for CPU tensors: a plain single-threaded copy, which on a
    busy machine is an order of magnitude faster than torch's multi-threaded stack."""
    if all(t.device.type == "cpu" and not t.requires_grad for t in tensors):
        return torch.from_numpy(np.stack([t.numpy() for t in tensors]))
    return torch.stack(tensors)


def _names(samples: Sequence[Mapping[str, Any]]) -> list[str]:
    return [str(s.get("filename", f"sample {i}")) for i, s in enumerate(samples)]


def _stack_checked(key: str, values: list[torch.Tensor], samples: Sequence[Mapping[str, Any]]) -> torch.Tensor:
    """Stack ``values`` (one per sample), or raise naming the files when shapes differ."""
    shapes = {tuple(v.shape) for v in values}
    if len(shapes) > 1:
        detail = ", ".join(
            f"'{n}' {tuple(v.shape)}" for n, v in zip(_names(samples), values, strict=True)
        )
        raise ValueError(
            f"Cannot batch '{key}' tensors of different shapes: {detail}. Use batch_size=1 "
            "(data.init_args.check_stackability: true sets it for a split whose files differ "
            "in size) or bring the files to one size."
        )
    return _stack(values)


def _stack_dicts(key: str, samples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack dicts of tensors (``{modality: (C, H, W)}``) key by key into ``(B, C, H, W)``."""
    dicts = [s[key] for s in samples]
    names = list(dicts[0])
    if any(set(d) != set(names) for d in dicts[1:]):
        union = list(dict.fromkeys(m for d in dicts for m in d))
        lacking = "; ".join(
            f"'{n}' lacks {[m for m in union if m not in d]}"
            for n, d in zip(_names(samples), dicts, strict=True)
            if set(d) != set(union)
        )
        raise ValueError(
            f"Cannot batch samples whose '{key}' holds different modalities: {lacking}. With "
            "allow_missing_modalities=True use batch_size=1, or give every sample every "
            "modality."
        )
    return {m: _stack_checked(f"{key}['{m}']", [d[m] for d in dicts], samples) for m in names}


def collate_samples(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack the tensors of ``samples`` and keep every other value as a list.

    Torch's default collate would turn a ``transform`` 6-tuple into six tensors and a WKT
    string list into nested lists; here ``batch["transform"][i]`` is sample ``i``'s tuple.

    Args:
        samples: Dicts with the same keys (``image`` ``(C, H, W)`` or a dict
            ``{modality: (C, H, W)}``, ``mask`` ``(H, W)``, ``label`` ``()``, ``filename``,
            ``crs``, ...).

    Returns:
        ``image`` ``(B, C, H, W)`` or ``(B, C, T, H, W)`` (a dict of those for dict images),
        ``mask`` ``(B, H, W)``, ``label`` ``(B,)``, ``nodata_mask`` ``(B, H, W)``, and lists of
        length ``B`` for the rest.

    Raises:
        ValueError: Samples have different keys, or tensors of one key have different shapes
            (the message names the files; crop or resize the data to one size), or dicts of
            tensors hold different keys (modalities).
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
            batch[key] = _stack_checked(key, values, samples)
        elif isinstance(values[0], Mapping) and values[0] and all(
            isinstance(v, torch.Tensor) for v in values[0].values()
        ):
            batch[key] = _stack_dicts(key, samples)
        else:
            batch[key] = values
    return batch


#: Per-object keys of detection samples: one tensor per sample, of its own length ``N_i``.
OBJECT_KEYS = ("boxes", "labels", "masks")


def collate_detection(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """:func:`collate_samples` for detection: objects stay lists, one tensor per sample.

    Args:
        samples: Dicts with ``image`` ``(C, H, W)`` and, when labelled, ``boxes`` ``(N_i, 4)``,
            ``labels`` ``(N_i,)`` and optional ``masks`` ``(N_i, H, W)``.

    Returns:
        ``image`` ``(B, C, H, W)`` (and the other keys as :func:`collate_samples` batches them);
        ``boxes``, ``labels``, ``masks`` as lists of length ``B`` (torchvision's detection
        models take targets as a list per image, since each image has its own count).
    """
    objects = {k: [s[k] for s in samples] for k in OBJECT_KEYS if k in samples[0]}
    rest = [{k: v for k, v in s.items() if k not in OBJECT_KEYS} for s in samples]
    for sample in samples[1:]:
        if [k for k in OBJECT_KEYS if k in sample] != list(objects):
            raise ValueError(
                f"Samples have different object keys: {list(objects)} and "
                f"{[k for k in OBJECT_KEYS if k in sample]}."
            )
    return {**collate_samples(rest), **objects}
