"""The onnxruntime engine: an exported ONNX file as the model of streamed scene prediction.

``geofm export`` writes ``model.onnx`` with the preprocessing inside (band selection,
``constant_scale``, nodata fill, normalisation) and ``model.onnx.json`` beside it:

- graph input ``input.name`` (``image``): float32 ``(B, C_file, H, W)``, the raw values of
  every band of the scene in file order (``input.bands``); NaN, ±inf and ``input.nodata`` are
  nodata;
- graph output ``output.name`` (``logits``): float32 ``(B, K, H, W)``, no activation inside;
  ``output.activation`` (softmax, sigmoid or none) says which one applies.

:class:`OnnxRuntimeModel` runs such a file on raw tiles and
:func:`~geofm.inference.streaming.predict_scene` (``engine="onnxruntime"``) feeds it through
the same :class:`~geofm.inference.predictor.Predictor`, blending and GeoTIFF writing as the
torch engine, so both write the same maps. Only the bands the model uses are read from the
scene (the others reach the graph as NaN, which its band selection drops), so a pixel is
nodata in the output exactly where every model band is, as with the torch engine.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geofm.errors import GeofmError
from geofm.inference.onnx_metadata import (
    PIXELWISE_TASKS,
    OnnxMetadata,
    OnnxModelError,
    metadata_path,
    read_metadata,
)
from geofm.inference.predictor import PredictionKind, Predictor

__all__ = [
    "OnnxMetadata",
    "OnnxModelError",
    "OnnxRuntimeModel",
    "as_onnx_model",
    "metadata_path",
    "read_metadata",
]

log = logging.getLogger(__name__)


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as err:
        raise GeofmError(
            "The onnxruntime engine needs onnxruntime: pip install 'geofm[onnx]' (or "
            "onnxruntime-gpu for CUDA)."
        ) from err
    return onnxruntime


def _file_digest(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


class OnnxRuntimeModel:
    """An exported ONNX model run by onnxruntime: raw tiles to logits.

    Args:
        path: The ``.onnx`` file; its metadata is read from ``<path>.json``.
        providers: onnxruntime execution providers, in order of preference; by default
            ``CUDAExecutionProvider`` when onnxruntime has it, then ``CPUExecutionProvider``.
        threads: Threads of the CPU provider (``intra_op_num_threads``); onnxruntime's
            default (one per physical core) when ``None``.

    Attributes:
        metadata: The file's :class:`OnnxMetadata`.
        kind: The :class:`~geofm.inference.predictor.Predictor` kind of its activation.
        bands: The file bands the graph takes, in file order.
        read_bands: The 1-based bands to read from a scene: those of ``model_bands`` when the
            metadata names them among ``bands``, else all.
        input_size: The tile size the file asks for (its fixed size, else ``tile.size``), or
            ``None``; :func:`~geofm.inference.streaming.default_tile_size` reads it.
        overlap: The metadata's ``tile.overlap``, or ``None``.
        providers: The providers the session runs on.
        fingerprint: Identifies the file and its metadata (for resume).

    Shapes: ``(N, C_file, h, w)`` float32 in, ``(N, K, h, w)`` float32 logits out (CPU).
    """

    extra_inputs: tuple[str, ...] = ()  # the graph takes the image only

    def __init__(
        self,
        path: str | Path,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
    ):
        self.path = Path(path)
        if not self.path.is_file():
            raise OnnxModelError(f"ONNX model '{self.path}' does not exist.")
        self.metadata = read_metadata(self.path)
        ort = _onnxruntime()
        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        else:
            providers = list(providers)
            missing = [p for p in providers if p not in available]
            if missing or not providers:
                raise OnnxModelError(
                    f"providers={providers}: this onnxruntime has {available}"
                    + (f", not {missing}." if missing else ".")
                )
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as err:  # onnxruntime's own error types: a corrupt or foreign file
            raise OnnxModelError(f"onnxruntime cannot load '{self.path}': {err}") from err
        self.providers: list[str] = list(self.session.get_providers())
        meta = self.metadata
        self.kind: PredictionKind = meta.kind
        self.bands: list[str] = list(meta.bands)
        self.read_bands = self._read_bands()
        self.fixed_size = self._check_graph()
        self.input_size = self.fixed_size or meta.tile_size
        self.overlap = meta.tile_overlap
        self.nodata = meta.nodata
        digest = hashlib.blake2b(digest_size=16)
        digest.update(_file_digest(self.path).encode())
        digest.update(meta.path.read_bytes())
        for data in sorted(self.path.parent.glob(self.path.name + ".data")):  # external weights
            digest.update(_file_digest(data).encode())
        self.fingerprint = f"onnx:{digest.hexdigest()}"
        log.info("%s on %s (%s, %d bands).", self.path, self.providers, meta.task, len(self.bands))

    def __repr__(self) -> str:
        return f"OnnxRuntimeModel('{self.path}', providers={self.providers})"

    def _read_bands(self) -> list[int]:
        """1-based positions of the model bands among the file bands, when they name them
        once each; every band otherwise."""
        everything = list(range(1, len(self.bands) + 1))
        wanted = self.metadata.model_bands
        if not wanted or list(wanted) == self.bands:
            return everything
        if any(self.bands.count(b) != 1 for b in wanted):
            log.info(
                "%s: model_bands %s are not named once each in bands %s; reading every band.",
                self.metadata.path,
                list(wanted),
                self.bands,
            )
            return everything
        return sorted({self.bands.index(b) + 1 for b in wanted})

    def _check_graph(self) -> tuple[int, int] | None:
        """Check the graph's input and output against the metadata; the graph's fixed size."""
        meta = self.metadata
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        if meta.input_name not in inputs:
            raise OnnxModelError(
                f"'{self.path}' has inputs {list(inputs)}, not {meta.input_name!r} "
                f"(input.name of {meta.path})."
            )
        if meta.output_name not in outputs:
            raise OnnxModelError(
                f"'{self.path}' has outputs {outputs}, not {meta.output_name!r} "
                f"(output.name of {meta.path})."
            )
        graph_input = inputs[meta.input_name]
        shape = list(graph_input.shape)
        if graph_input.type != "tensor(float)" or len(shape) != 4:
            raise OnnxModelError(
                f"'{self.path}': input {meta.input_name!r} is {graph_input.type} of shape "
                f"{shape}; the engine feeds float32 (B, C, H, W) tiles."
            )
        if isinstance(shape[1], int) and shape[1] != len(self.bands):
            raise OnnxModelError(
                f"'{self.path}' takes {shape[1]} bands but its metadata lists "
                f"{len(self.bands)}: {self.bands}."
            )
        graph_size = tuple(shape[2:]) if all(isinstance(s, int) for s in shape[2:]) else None
        fixed = meta.fixed_size
        if graph_size is not None and fixed is not None and graph_size != fixed:
            raise OnnxModelError(
                f"'{self.path}' takes {graph_size[0]} x {graph_size[1]} tiles but "
                f"input.fixed_size of {meta.path} says {fixed[0]} x {fixed[1]}."
            )
        return fixed or graph_size  # type: ignore[return-value]

    # ------------------------------------------------------------------ scenes
    def check_tile_size(self, tile: tuple[int, int]) -> None:
        """Raise unless ``(h, w)`` tiles fit the graph (its fixed size, or multiples of its
        ``size_multiple``)."""
        multiple = self.metadata.size_multiple
        off = multiple is not None and (tile[0] % multiple[0] or tile[1] % multiple[1])
        if self.fixed_size is None and off:
            raise OnnxModelError(
                f"tile_size {tile[0]} x {tile[1]} does not fit '{self.path}', which takes tiles "
                f"whose sides are multiples of {multiple[0]} x {multiple[1]} "
                "(input.size_multiple): set tile_size to such a size or leave it unset."
            )
        if self.fixed_size is not None and tuple(tile) != tuple(self.fixed_size):
            h, w = self.fixed_size
            raise OnnxModelError(
                f"tile_size {tile[0]} x {tile[1]} does not fit '{self.path}', which takes only "
                f"{h} x {w} tiles (input.fixed_size): set tile_size to {h if h == w else [h, w]} "
                "or leave it unset."
            )

    def scene_bands(self, scene: str | Path) -> list[int]:
        """The 1-based bands to read from ``scene``, after checking its band count.

        Raises:
            OnnxModelError: The scene does not have ``len(bands)`` bands.
        """
        import rasterio

        from geofm.data.raster import raster_read_error

        scene = Path(scene)
        if not scene.exists():
            raise FileNotFoundError(f"Input raster '{scene}' does not exist.")
        try:
            with rasterio.open(scene) as src:
                count = src.count
        except Exception as err:  # a file that is not a raster, or a truncated header
            raise raster_read_error(scene, err, window="the header") from err
        if count != len(self.bands):
            raise OnnxModelError(
                f"Scene '{scene}' has {count} bands but '{self.path}' takes {len(self.bands)}: "
                f"{self.bands} (every band of the files it was exported for, in file order)."
            )
        return list(self.read_bands)

    def scene_predictor(self) -> Predictor:
        """A :class:`~geofm.inference.predictor.Predictor` of scene tiles read with
        :attr:`read_bands`: the other bands are filled with NaN, then the graph runs.

        Raises:
            OnnxModelError: The model predicts one value per image, not maps.
        """
        if self.metadata.task not in PIXELWISE_TASKS:
            raise OnnxModelError(
                f"'{self.path}' is a {self.metadata.task} model (one prediction per image); "
                f"streamed prediction writes maps of {' or '.join(PIXELWISE_TASKS)} models."
            )
        expand = None if len(self.read_bands) == len(self.bands) else self.expand_bands
        return Predictor(self, preprocess=expand, kind=self.kind)

    def expand_bands(self, image: torch.Tensor) -> torch.Tensor:
        """``(N, len(read_bands), h, w)`` tiles to ``(N, C_file, h, w)``, NaN in the bands
        not read (the graph's band selection drops them)."""
        full = image.new_full((image.shape[0], len(self.bands), *image.shape[2:]), math.nan)
        full[:, [b - 1 for b in self.read_bands]] = image.float()
        return full

    # ------------------------------------------------------------------ forward
    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """``(N, K, h, w)`` logits for raw ``(N, C_file, h, w)`` tiles."""
        if image.ndim != 4 or image.shape[1] != len(self.bands):
            raise ValueError(
                f"'{self.path}' takes (N, {len(self.bands)}, h, w) raw tiles of the bands "
                f"{self.bands}, got shape {tuple(image.shape)}."
            )
        if self.fixed_size is not None and tuple(image.shape[-2:]) != self.fixed_size:
            self.check_tile_size(tuple(image.shape[-2:]))  # type: ignore[arg-type]
        array = np.ascontiguousarray(image.detach().to("cpu", torch.float32).numpy())
        (logits,) = self.session.run([self.metadata.output_name], {self.metadata.input_name: array})
        out = torch.from_numpy(logits)
        if out.ndim == 3:  # a (N, h, w) regression map
            out = out[:, None]
        classes = self.metadata.num_classes
        if classes is not None and self.metadata.task == "segmentation" and out.shape[1] != classes:
            raise OnnxModelError(
                f"'{self.path}' returned {out.shape[1]} channels but output.num_classes of "
                f"{self.metadata.path} is {classes}."
            )
        return out


def as_onnx_model(model: Any, providers: Sequence[str] | None = None) -> OnnxRuntimeModel:
    """``model`` as an :class:`OnnxRuntimeModel`: one already, or the path of an ONNX file."""
    if isinstance(model, OnnxRuntimeModel):
        return model
    if isinstance(model, (str, Path)):
        return OnnxRuntimeModel(model, providers=providers)
    raise TypeError(
        f"engine='onnxruntime' takes the path of an exported .onnx file or an "
        f"OnnxRuntimeModel, not {type(model).__name__}."
    )
