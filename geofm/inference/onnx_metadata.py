"""The metadata of an exported model: ``<file>.json`` beside ``model.onnx``.

``geofm export`` writes it; the onnxruntime engine (:mod:`geofm.inference.onnx_engine`) reads
it with :func:`read_metadata`, which accepts missing optional keys and rejects anything else
that does not fit the contract, naming the key:

- ``format`` (``onnx``), ``task`` (segmentation, regression, classification, multilabel),
  ``config_sha256``, ``check``;
- ``input``: ``name``, ``layout`` (``BCHW``), ``dtype`` (``float32``), ``bands`` (the file's
  band names, in file order), ``model_bands``, ``nodata``, ``fixed_size`` (null or ``[h, w]``);
- ``output``: ``name``, ``activation`` (softmax, sigmoid, none), ``num_classes``,
  ``class_names``, ``class_colors``;
- ``tile``: ``size`` and ``overlap`` (null, an int or ``[h, w]``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geofm.errors import GeofmError
from geofm.inference.predictor import PredictionKind

__all__ = [
    "PIXELWISE_TASKS",
    "OnnxMetadata",
    "OnnxModelError",
    "metadata_path",
    "read_metadata",
]

#: Tasks whose outputs are maps, which streamed prediction writes.
PIXELWISE_TASKS = ("segmentation", "regression")
_TASKS = (*PIXELWISE_TASKS, "classification", "multilabel")
_ACTIVATIONS = ("softmax", "sigmoid", "none")


class OnnxModelError(GeofmError, ValueError):
    """An exported model (ONNX file or its metadata) that the engine cannot run as asked."""


def metadata_path(model_path: str | Path) -> Path:
    """Where the metadata of an exported file lies: ``<file>.json`` (``model.onnx.json``)."""
    path = Path(model_path)
    return path.with_name(path.name + ".json")


@dataclass(frozen=True)
class OnnxMetadata:
    """What ``<file>.json`` says about an exported model (see the module docstring).

    Attributes:
        path: The metadata file.
        task: ``segmentation``, ``regression``, ``classification`` or ``multilabel``.
        input_name: The graph input.
        bands: The file band names the graph takes, in file order.
        model_bands: The bands the model uses (selected inside the graph); ``None`` when not
            given.
        nodata: A raw value the graph reads as nodata in every band, or ``None``.
        fixed_size: ``(h, w)`` when the graph takes only tiles of that size.
        size_multiple: ``(h, w)`` that tile sides must be multiples of when the graph takes
            several sizes (``geofm export`` traces the model's padding away), or ``None``.
        output_name: The graph output (logits).
        activation: ``softmax``, ``sigmoid`` or ``none``.
        num_classes: Output channels, when given.
        class_names: Names of the classes, when given.
        class_colors: Colours of the classes, when given.
        tile_size: The tile size the model was set up with (``tile.size``), or ``None``.
        tile_overlap: The overlap that goes with it (``tile.overlap``), or ``None``.
        config_sha256: Digest of the training config, when given.
    """

    path: Path
    task: str
    input_name: str
    bands: tuple[str, ...]
    model_bands: tuple[str, ...] | None
    nodata: float | None
    fixed_size: tuple[int, int] | None
    size_multiple: tuple[int, int] | None
    output_name: str
    activation: str
    num_classes: int | None
    class_names: tuple[str, ...] | None
    class_colors: tuple[Any, ...] | None
    tile_size: int | tuple[int, int] | None
    tile_overlap: int | tuple[int, int] | None
    config_sha256: str | None

    @property
    def kind(self) -> PredictionKind:
        """The :class:`~geofm.inference.predictor.Predictor` kind of the activation:
        softmax: ``probabilities``; sigmoid: ``multilabel`` (per channel, so one channel
        too); none: ``values``."""
        return {"softmax": "probabilities", "sigmoid": "multilabel", "none": "values"}[
            self.activation
        ]


def read_metadata(model_path: str | Path) -> OnnxMetadata:
    """Read and check the metadata beside an exported file.

    Keys the contract marks optional (``model_bands``, ``nodata``, ``fixed_size``,
    ``size_multiple``,
    ``num_classes``, ``class_names``, ``class_colors``, ``tile``, ``config_sha256``) may be
    missing or null; the others must be there and valid.

    Raises:
        OnnxModelError: The file is missing (names the path looked at), is not JSON, or a key
            is missing or invalid (names the key).
    """
    path = metadata_path(model_path)
    if not path.is_file():
        raise OnnxModelError(
            f"'{model_path}' has no metadata file: expected '{path}' beside it (geofm export "
            "writes both; copy the .json with the model)."
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise OnnxModelError(f"Cannot read the model metadata '{path}': {err}.") from err
    reader = _Keys(data, path)
    fmt = reader.get("format", str, required=False)
    if fmt is not None and fmt.lower() != "onnx":
        raise OnnxModelError(
            f"{path}: format is {fmt!r}; the onnxruntime engine runs ONNX files (format 'onnx')."
        )
    task = reader.choice("task", _TASKS)
    layout = reader.get("input.layout", str, required=False)
    if layout is not None and layout.upper() != "BCHW":
        raise OnnxModelError(f"{path}: input.layout is {layout!r}; the engine feeds 'BCHW' tiles.")
    dtype = reader.get("input.dtype", str, required=False)
    if dtype is not None and dtype != "float32":
        raise OnnxModelError(f"{path}: input.dtype is {dtype!r}; the engine feeds 'float32' tiles.")
    bands = reader.names("input.bands")
    if not bands:
        raise OnnxModelError(f"{path}: input.bands is empty; it lists the file bands in order.")
    nodata = reader.get("input.nodata", (int, float), required=False)
    activation = reader.choice("output.activation", _ACTIVATIONS)
    expected = {"segmentation": ("softmax", "sigmoid"), "regression": ("none",)}.get(task)
    if expected is not None and activation not in expected:
        raise OnnxModelError(
            f"{path}: output.activation is {activation!r} for a {task} model; expected "
            f"{' or '.join(repr(a) for a in expected)}."
        )
    tile = reader.get("tile", dict, required=False) or {}
    multiple = reader.get("input.size_multiple", (int, list), required=False)
    return OnnxMetadata(
        path=path,
        task=task,
        input_name=reader.get("input.name", str),
        bands=bands,
        model_bands=reader.names("input.model_bands", required=False),
        nodata=None if nodata is None else float(nodata),
        fixed_size=reader.size("input.fixed_size"),
        size_multiple=_pair(_size_or_int(multiple, path, "input.size_multiple")),
        output_name=reader.get("output.name", str),
        activation=activation,
        num_classes=reader.get("output.num_classes", int, required=False),
        class_names=reader.names("output.class_names", required=False),
        class_colors=tuple(reader.get("output.class_colors", list, required=False) or ()) or None,
        tile_size=_size_or_int(tile.get("size"), path, "tile.size"),
        tile_overlap=_size_or_int(tile.get("overlap"), path, "tile.overlap", minimum=0),
        config_sha256=reader.get("config_sha256", str, required=False),
    )


class _Keys:
    """Typed lookups of dotted keys in the metadata, with errors that name the key."""

    def __init__(self, data: Any, path: Path):
        if not isinstance(data, dict):
            raise OnnxModelError(f"{path}: expected a JSON object, got {type(data).__name__}.")
        self.data, self.path = data, path

    def get(self, key: str, types: type | tuple[type, ...], required: bool = True) -> Any:
        value: Any = self.data
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            if required:
                raise OnnxModelError(f"{self.path}: '{key}' is missing; the exported metadata has it.")
            return None
        bad_bool = isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,))
        if bad_bool or not isinstance(value, types):
            names = types.__name__ if isinstance(types, type) else "/".join(t.__name__ for t in types)
            raise OnnxModelError(f"{self.path}: '{key}' is {value!r}; expected {names}.")
        return value

    def choice(self, key: str, options: Sequence[str]) -> str:
        value = self.get(key, str)
        if value not in options:
            raise OnnxModelError(f"{self.path}: '{key}' is {value!r}; expected one of {list(options)}.")
        return value

    def names(self, key: str, required: bool = True) -> tuple[str, ...] | None:
        value = self.get(key, list, required)
        return None if value is None else tuple(str(v) for v in value)

    def size(self, key: str) -> tuple[int, int] | None:
        value = self.get(key, list, required=False)
        if value is None:
            return None
        if len(value) != 2 or not all(isinstance(v, int) and v > 0 for v in value):
            raise OnnxModelError(f"{self.path}: '{key}' is {value!r}; expected null or [h, w].")
        return int(value[0]), int(value[1])


def _pair(value: int | tuple[int, int] | None) -> tuple[int, int] | None:
    return (value, value) if isinstance(value, int) else value


def _size_or_int(
    value: Any, path: Path, key: str, minimum: int = 1
) -> int | tuple[int, int] | None:
    if value is None:
        return None
    pair = [value, value] if isinstance(value, int) and not isinstance(value, bool) else value
    if (
        not isinstance(pair, list)
        or len(pair) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in pair)
    ):
        raise OnnxModelError(f"{path}: '{key}' is {value!r}; expected null, an int or [h, w].")
    return pair[0] if pair[0] == pair[1] else (pair[0], pair[1])
