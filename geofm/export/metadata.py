"""The metadata written beside an exported file, ``<file>.json``.

Keys (the contract :mod:`geofm.export` describes; engines read it to feed the file and to
read what it returns)::

    format            "onnx" | "torch-export" | "safetensors"
    geofm_version     the geofm that wrote it
    torch_version     the torch that traced it
    opset             ONNX opset (onnx only, else null)
    task              "segmentation" | "regression" | "classification" | "multilabel"
    input:
      name            "image"
      layout          "BCHW" (multi-temporal files too: their T x C bands, time-major)
      dtype           "float32"
      bands           every band of the file, in file order
      model_bands     the bands the model sees, in its order
      frames          time steps per file (1 but for multi-temporal models)
      nodata          the file's nodata value, or null (NaN and ±inf are always nodata)
      fixed_size      null (any height and width that are multiples of size_multiple) or
                      [h, w] (the only size the file takes)
      size_multiple   height and width must be multiples of it (null with fixed_size)
      preprocess      what the graph does first: constant_scale, no_data_replace, mean, std
    output:
      name            "logits"
      layout          "BKHW" (pixel-wise) or "BK" (classification)
      activation      "softmax" | "sigmoid" | "none": to apply to the logits
      num_classes     classes (null for regression)
      channels        K
      class_names     or null
      class_colors    or null
    tile              {size: [h, w], overlap} the model predicts on, or null
    config_sha256     SHA-256 of the resolved config YAML, or null
    check             {sizes: [[h, w], ...], max_abs_diff}: the file against the task
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch

from geofm.export.graph import InputBands

__all__ = ["activation_of", "build_metadata", "task_kind"]


def task_kind(task: Any) -> str:
    """``"segmentation"``, ``"regression"``, ``"classification"`` or ``"multilabel"``."""
    if getattr(getattr(task, "predictor", None), "kind", None) == "multilabel":
        return "multilabel"
    kind = getattr(task, "model_task", None)
    if kind not in ("segmentation", "regression", "classification"):
        raise ValueError(f"{type(task).__name__} is not a geofm task (model_task={kind!r}).")
    return str(kind)


def activation_of(task: Any, channels: int) -> str:
    """The activation that turns the logits into the task's predictions (as
    :func:`geofm.inference.predictor.activate` does)."""
    kind = task.predictor.kind
    if kind == "values":
        return "none"
    if kind == "multilabel" or channels == 1:
        return "sigmoid"
    return "softmax"


def _channels(task: Any) -> int:
    if task_kind(task) == "regression":
        return 1
    return int(task.num_classes)


def _floats(values: torch.Tensor) -> list[float] | None:
    return [float(v) for v in values.tolist()] if values.numel() else None


def build_metadata(
    task: Any,
    *,
    format: str,
    bands: InputBands,
    frames: int,
    nodata: float | None,
    fixed_size: Sequence[int] | None,
    size_multiple: int | None,
    tile: Sequence[int] | None,
    overlap: int | None,
    config_text: str | None,
    check_sizes: Sequence[Sequence[int]],
    max_abs_diff: float,
    opset: int | None,
    preprocess: Any,
) -> dict[str, Any]:
    """The metadata dict of an exported task (see the module docstring)."""
    import geofm

    kind = task_kind(task)
    channels = _channels(task)
    names = getattr(task, "hparams", {}).get("class_names")
    if frames > 1:
        file_bands = [f"{band}_t{t}" for t in range(1, frames + 1) for band in bands.file_bands]
    else:
        file_bands = list(bands.file_bands)
    mean = getattr(preprocess, "mean", torch.empty(0))
    std = getattr(preprocess, "std", torch.empty(0))
    return {
        "format": format,
        "geofm_version": geofm.__version__,
        "torch_version": torch.__version__.split("+")[0],
        "opset": opset,
        "task": kind,
        "input": {
            "name": "image",
            "layout": "BCHW",
            "dtype": "float32",
            "bands": file_bands,
            "model_bands": list(bands.model_bands),
            "frames": frames,
            "nodata": None if nodata is None else float(nodata),
            "fixed_size": None if fixed_size is None else [int(s) for s in fixed_size],
            "size_multiple": size_multiple,
            "preprocess": {
                "constant_scale": float(getattr(preprocess, "constant_scale", 1.0)),
                "no_data_replace": getattr(preprocess, "no_data_replace", None),
                "mean": _floats(mean),
                "std": _floats(std),
            },
        },
        "output": {
            "name": "logits",
            "layout": "BK" if kind in ("classification", "multilabel") else "BKHW",
            "activation": activation_of(task, channels),
            "num_classes": None if kind == "regression" else channels,
            "channels": channels,
            "class_names": list(names) if names else None,
            "class_colors": None,
        },
        "tile": None if tile is None else {"size": [int(s) for s in tile], "overlap": overlap},
        "config_sha256": None if config_text is None else hashlib.sha256(config_text.encode()).hexdigest(),
        "check": {"sizes": [[int(s) for s in size] for size in check_sizes], "max_abs_diff": float(max_abs_diff)},
    }
