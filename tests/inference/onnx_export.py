"""A stand-in for ``geofm export`` in the tests: an ONNX file with the preprocessing inside
and its metadata JSON beside it, following the exported file's contract.

The graph takes ``image``, raw float32 ``(B, C_file, H, W)`` values of every file band,
selects the model bands, reads ``nodata`` values as NaN, runs the
:class:`~geofm.models.preprocess.Preprocess` and the model, and returns ``logits``
``(B, K, H, W)`` without activation.

It exports plain modules (no task), so the engine's tests can give the metadata any shape;
``test_a_geofm_export_file_matches_the_task_on_a_scene`` runs the real exporter's file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geofm.inference.predictor import output_tensor

__all__ = ["RawToLogits", "export_onnx"]


class RawToLogits(nn.Module):
    """Raw file tiles to logits: band selection, nodata, preprocessing, model.

    Args:
        model: Preprocessed ``(B, C_model, H, W)`` to logits (tensor or ``ModelOutput``).
        preprocess: The :class:`~geofm.models.preprocess.Preprocess` (or any module).
        band_index: 0-based positions of the model bands among the file bands.
        nodata: A raw value read as nodata, or ``None``.
    """

    def __init__(
        self,
        model: nn.Module,
        preprocess: nn.Module,
        band_index: Sequence[int],
        nodata: float | None = None,
    ):
        super().__init__()
        self.model, self.preprocess = model, preprocess
        self.register_buffer("band_index", torch.tensor(list(band_index), dtype=torch.long))
        self.nodata = nodata

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.index_select(1, self.band_index)
        if self.nodata is not None:
            x = torch.where(x == self.nodata, torch.full_like(x, float("nan")), x)
        return output_tensor(self.model(self.preprocess(x)))


def export_onnx(
    path: Path,
    model: nn.Module,
    preprocess: nn.Module,
    *,
    bands: Sequence[str],
    model_bands: Sequence[str],
    task: str = "segmentation",
    activation: str = "softmax",
    num_classes: int | None = None,
    nodata: float | None = None,
    fixed_size: tuple[int, int] | None = None,
    tile: dict[str, Any] | None = None,
    class_names: Sequence[str] | None = None,
    drop_keys: Sequence[str] = (),
) -> Path:
    """Export ``preprocess`` + ``model`` to ``path`` and write ``<path>.json``.

    Args:
        path: The ``.onnx`` file to write.
        model: The model (eval mode is set).
        preprocess: Its preprocessing.
        bands: The file band names, in file order.
        model_bands: The model's bands, names from ``bands``, in model order.
        task: The metadata ``task``.
        activation: The metadata ``output.activation``.
        num_classes: ``output.num_classes``.
        nodata: ``input.nodata``: a raw value read as nodata inside the graph.
        fixed_size: Export with a fixed ``(h, w)`` (``input.fixed_size``); dynamic otherwise.
        tile: ``{"size": ..., "overlap": ...}``.
        class_names: ``output.class_names``.
        drop_keys: Dotted metadata keys to leave out (``"output.class_colors"``).

    Returns:
        ``path``.
    """
    wrapper = RawToLogits(
        model, preprocess, [list(bands).index(b) for b in model_bands], nodata
    ).eval()
    h, w = fixed_size or (32, 32)
    example = torch.rand(2, len(bands), h, w) * 100
    dims: dict[int, Any] = {0: torch.export.Dim("batch", min=1)}
    if fixed_size is None:
        dims |= {2: torch.export.Dim("height", min=8), 3: torch.export.Dim("width", min=8)}
    logging.getLogger("torch.onnx").setLevel(logging.WARNING)
    torch.onnx.export(
        wrapper,
        (example,),
        str(path),
        input_names=["image"],
        output_names=["logits"],
        dynamic_shapes={"image": dims},
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    metadata: dict[str, Any] = {
        "format": "onnx",
        "task": task,
        "input": {
            "name": "image",
            "layout": "BCHW",
            "dtype": "float32",
            "bands": list(bands),
            "model_bands": list(model_bands),
            "nodata": nodata,
            "fixed_size": list(fixed_size) if fixed_size else None,
        },
        "output": {
            "name": "logits",
            "activation": activation,
            "num_classes": num_classes,
            "class_names": list(class_names) if class_names else None,
            "class_colors": None,
        },
        "tile": tile or {"size": None, "overlap": None},
        "config_sha256": None,
        "check": None,
    }
    for key in drop_keys:
        *parents, last = key.split(".")
        section = metadata
        for part in parents:
            section = section[part]
        section.pop(last)
    path.with_name(path.name + ".json").write_text(json.dumps(metadata, indent=2))
    return path
