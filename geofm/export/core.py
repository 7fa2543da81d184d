"""``export_task``: a task to an ONNX file, a ``torch.export`` program or safetensors weights.

The steps, for every format:

1. build the :class:`~geofm.export.graph.ExportGraph` (nodata, band selection, the task's
   preprocessing, its model) and pick the example size: the tile size, rounded up to the
   model's size multiple (its patch size and coarsest stride);
2. trace it with ``torch.export``: batch, height and width dynamic (height and width as
   multiples of the size multiple, the sizes the model takes without padding); when that
   fails, or the traced program disagrees with the task at another size, trace again with the
   tile's height and width fixed (``input.fixed_size`` in the metadata, logged);
3. write the file under a temporary name, load it back (onnxruntime, ``torch.export.load``)
   and compare its logits with the task's on raw inputs with NaN and nodata pixels at two
   sizes; above the tolerance nothing is written and :class:`ExportCheckError` says by how
   much;
4. move the file and its metadata (``<file>.json``, see :mod:`geofm.export.metadata`) in place.

A task with LoRA is exported from a copy whose LoRA weights are merged into the backbone
(:func:`geofm.models.peft.merge_lora`): the file runs without peft, safetensors hold the
backbone's own names, and the checks compare the file with the unmerged task.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from geofm.data.band_selection import BandSpec
from geofm.export.errors import ExportCheckError, ExportError, blocking_operation, require
from geofm.export.graph import ExportGraph, InputBands, resolve_input_bands
from geofm.export.metadata import build_metadata

__all__ = ["FORMATS", "ExportFormat", "ExportResult", "export_task", "load_safetensors"]

log = logging.getLogger(__name__)

ExportFormat = Literal["onnx", "torch-export", "safetensors"]
FORMATS: tuple[str, ...] = ("onnx", "torch-export", "safetensors")
#: Largest side and batch the dynamic dimensions allow.
_MAX_SIDE = 16384
_MAX_BATCH = 4096
_DEFAULT_SIZE = 64


@dataclass
class ExportResult:
    """What :func:`export_task` wrote.

    Attributes:
        path: The exported file.
        metadata_path: ``<path>.json``.
        metadata: Its content.
        max_abs_diff: Largest difference between the file's logits and the task's.
        files: Every file written (the file, its metadata, ONNX external data).
        program: The traced ``torch.export`` program (``None`` for safetensors): pass the
            result as ``traced`` to write another format of the same export without tracing
            again.
    """

    path: Path
    metadata_path: Path
    metadata: dict[str, Any]
    max_abs_diff: float
    files: list[Path] = field(default_factory=list)
    program: Any = field(default=None, repr=False)


# ---------------------------------------------------------------------------- the task
def _model_band_count(task: Any, preprocess: nn.Module) -> int:
    """Bands the model takes: from the preprocessing's settings, else its first convolution."""
    count = getattr(preprocess, "num_bands", None)
    if count:
        return int(count)
    for module in task.model.modules():
        if isinstance(module, (nn.Conv2d, nn.Conv3d)):
            return int(module.in_channels)
    raise ExportError(
        "Cannot tell how many bands the model takes (no means/stds, band names or convolution): "
        "pass dataset_bands (in the config: data.init_args.dataset_bands)."
    )


def _single_preprocess(task: Any) -> nn.Module:
    """The task's preprocessing for one input tensor (refusing several modalities)."""
    from geofm.models.preprocess import MultiModalPreprocess

    preprocess = task.preprocess
    if isinstance(preprocess, MultiModalPreprocess):
        names = list(preprocess.keys())
        if len(names) > 1:
            raise ExportError(
                f"The model takes {len(names)} modalities ({names}); an exported file has one "
                "input image. Export a model of one modality."
            )
        return preprocess[names[0]]
    return preprocess


def _frames(task: Any, num_frames: int | None) -> int:
    """Time steps per input (1: ``(B, C, H, W)`` images)."""
    if num_frames is not None:
        return int(num_frames)
    encoder = getattr(task.model, "encoder", None)
    return int(getattr(encoder, "num_frames", 1) or 1)


def _tile(task: Any, tile_size: Any, tile_overlap: Any) -> tuple[tuple[int, int] | None, int | None]:
    """The tile ``(h, w)`` and overlap: given, else the task's ``tiled_inference``."""
    if tile_size is None:
        options = getattr(task, "_tiled", None) or {}
        tile_size = options.get("tile_size")
        if tile_overlap is None:
            tile_overlap = options.get("overlap")
    if tile_size is None:
        return None, None
    size = (int(tile_size), int(tile_size)) if np.isscalar(tile_size) else tuple(int(s) for s in tile_size)
    if len(size) != 2 or min(size) < 1:
        raise ExportError(f"tile_size={tile_size!r} must be a positive side or [height, width].")
    if tile_overlap is None:
        tile_overlap = min(size) // 8  # tiled_forward's default
    return size, int(tile_overlap) if np.isscalar(tile_overlap) else int(min(tile_overlap))


def _fixed_size_reason(task: Any) -> str | None:
    """Why a model is exported at a fixed size straight away, if it is.

    Swin's shifted-window attention masks are laid out for one size (timm keeps them as
    buffers), and tracing its window arithmetic with symbolic sizes takes minutes: a Swin is
    exported at the tile size. A module may also say so with ``export_fixed_size = True``.
    """
    for module in task.model.modules():
        if getattr(module, "export_fixed_size", False):
            return f"{type(module).__name__} says export_fixed_size"
        if type(module).__name__ in ("SwinTransformer", "SwinTransformerV2"):
            return f"{type(module).__name__}'s shifted-window masks are laid out for one size"
    return None


def _size_multiple(task: Any, channels: int, frames: int) -> int:
    """The side multiple the model takes without padding: its ``pad_multiple`` (patch size and
    declared strides), and the strides of the backbone's feature maps, measured on a 128 px
    input (for backbones that declare none)."""
    multiple = max(1, int(getattr(task.model, "pad_multiple", 1) or 1))
    encoder = getattr(task.model, "encoder", None)
    if encoder is None:
        return multiple
    side = 128
    shape = (1, channels, frames, side, side) if frames > 1 else (1, channels, side, side)
    try:
        with torch.no_grad():
            features = encoder(torch.zeros(shape))
    except Exception as exc:  # noqa: BLE001 - a hint only; the checks decide
        log.debug("Feature strides not measured: %s", exc)
        return multiple
    for feature in features if isinstance(features, (list, tuple)) else [features]:
        if isinstance(feature, torch.Tensor) and feature.ndim == 4 and 0 < feature.shape[-1] < side:
            stride = side // feature.shape[-1]
            if side % feature.shape[-1] == 0 and stride & (stride - 1) == 0:  # a power of two
                multiple = math.lcm(multiple, stride)
    return multiple


def _merged(task: Any) -> Any:
    """``task``, or for a task with LoRA a copy with the LoRA weights merged into the backbone."""
    from geofm.models.peft import has_lora, merge_lora

    if not has_lora(task.model):
        return task
    twin = copy.deepcopy(task)
    count = merge_lora(twin.model)
    log.info("Merged the LoRA weights of %d layers into the backbone for export.", count)
    return twin.eval()


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


# ---------------------------------------------------------------------------- inputs
def _raw_input(
    graph: ExportGraph, bands: InputBands, frames: int, batch: int, size: tuple[int, int], seed: int
) -> torch.Tensor:
    """Raw file values ``(B, C_file * T, H, W)`` around the task's statistics, with NaN, ±inf
    and nodata pixels in every band."""
    generator = torch.Generator().manual_seed(seed)
    channels = len(bands.file_bands)
    x = torch.rand((batch, frames, channels, *size), generator=generator) * 2 - 1
    preprocess = graph.preprocess
    mean = getattr(preprocess, "mean", torch.empty(0))
    if mean.numel():
        scale = float(getattr(preprocess, "constant_scale", 1.0)) or 1.0
        positions = bands.indexes if bands.indexes is not None else range(channels)
        centre = torch.zeros(channels)
        spread = torch.ones(channels)
        for position, m, s in zip(positions, mean.tolist(), graph.preprocess.std.tolist(), strict=False):
            centre[position], spread[position] = m / scale, 2 * s / scale
        x = x * spread.view(1, 1, -1, 1, 1) + centre.view(1, 1, -1, 1, 1)
    flat = x.view(-1)
    picks = torch.randperm(flat.numel(), generator=generator)[: max(4, flat.numel() // 50)]
    quarter = len(picks) // 4
    flat[picks[:quarter]] = float("nan")
    flat[picks[quarter : quarter + 2]] = float("inf")
    flat[picks[quarter + 2 : quarter + 4]] = float("-inf")
    if graph.nodata is not None and not math.isnan(graph.nodata):
        flat[picks[quarter + 4 : 2 * quarter + 4]] = graph.nodata
    return x.reshape(batch, frames * channels, *size)


def _eager_logits(task: Any, bands: InputBands, frames: int, nodata: float | None, raw: torch.Tensor) -> torch.Tensor:
    """The task's own logits for raw file values, read as geofm's readers read them."""
    x = raw.clone()
    if nodata is not None and not math.isnan(nodata):
        x[x == torch.tensor(nodata, dtype=torch.float32)] = float("nan")
    batch, _, height, width = x.shape
    x = x.reshape(batch, frames, len(bands.file_bands), height, width)
    if bands.indexes is not None:
        x = x[:, :, list(bands.indexes)]
    x = x.permute(0, 2, 1, 3, 4) if frames > 1 else x[:, 0]
    with torch.no_grad():
        return task.predictor.logits(x.contiguous()).float()


# ---------------------------------------------------------------------------- tracing
def _trace(module: nn.Module, example: torch.Tensor, multiple: int, dynamic: bool) -> Any:
    from torch.export import Dim

    if dynamic:
        batch = Dim("batch", min=1, max=_MAX_BATCH)
        if multiple > 1:
            height = multiple * Dim("height_blocks", min=1, max=_MAX_SIDE // multiple)
            width = multiple * Dim("width_blocks", min=1, max=_MAX_SIDE // multiple)
        else:
            height = Dim("height", min=2, max=_MAX_SIDE)
            width = Dim("width", min=2, max=_MAX_SIDE)
        shapes = {"image": {0: batch, 2: height, 3: width}}
    else:
        shapes = {"image": {0: Dim("batch", min=1, max=_MAX_BATCH)}}
    with torch.no_grad():
        return torch.export.export(module, (example,), dynamic_shapes=shapes, strict=False)


@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    """The ONNX exporter's INFO logs (every rewrite rule it applies) at WARNING, and its
    progress lines off stdout."""
    loggers = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir", "torch.onnx")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _write_onnx(program: Any, example: torch.Tensor, path: Path, opset: int, metadata: dict[str, Any], pixel_wise: bool) -> None:
    try:
        import onnx_ir as ir
    except ImportError:  # onnxscript before onnx_ir was its own package
        from onnxscript import ir

    try:
        with _quiet_exporters():
            onnx_program = torch.onnx.export(
                program,
                (example,),
                dynamo=True,
                opset_version=opset,
                input_names=["image"],
                output_names=["logits"],
                optimize=True,
                verbose=False,
            )
    except Exception as exc:  # noqa: BLE001 - named in the ExportError
        raise blocking_operation(exc, "onnx", "onnx", program) from exc
    graph = onnx_program.model.graph
    fixed = metadata["input"]["fixed_size"]
    names = ["batch", None, "height", "width"]
    if fixed is None:
        _rename_dims(graph.inputs[0], names, ir)
        if pixel_wise:
            _rename_dims(graph.outputs[0], names, ir)
        else:
            _rename_dims(graph.outputs[0], ["batch", None], ir)
    else:
        _rename_dims(graph.inputs[0], ["batch"], ir)
        _rename_dims(graph.outputs[0], ["batch"], ir)
    onnx_program.model.metadata_props["geofm"] = json.dumps(metadata)
    onnx_program.save(str(path))


def _rename_dims(value: Any, names: Sequence[str | None], ir: Any) -> None:
    dims = list(value.shape.dims)
    for i, name in enumerate(names):
        if name is not None and i < len(dims) and not isinstance(dims[i], int):
            dims[i] = ir.SymbolicDim(name)
    value.shape = ir.Shape(dims)


def _runner(format: str, path: Path) -> Any:
    """A function raw ``(B, C, H, W)`` tensor -> logits tensor, running the written file."""
    if format == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda x: torch.from_numpy(session.run(["logits"], {"image": x.numpy()})[0])
    with open(path, "rb") as handle:  # a file object: any suffix, not only .pt2
        module = torch.export.load(handle).module()
    return lambda x: module(x).detach()


# ---------------------------------------------------------------------------- checks
def _check(
    run: Any,
    task: Any,
    graph: ExportGraph,
    bands: InputBands,
    frames: int,
    sizes: Sequence[tuple[int, int]],
    seed: int,
) -> float:
    """Largest absolute difference between ``run`` and the task over ``sizes``.

    Raises:
        ExportCheckError: the file fails on an input (message names the size).
    """
    worst = 0.0
    for i, size in enumerate(sizes):
        raw = _raw_input(graph, bands, frames, 1 + i % 2, size, seed + i)
        expected = _eager_logits(task, bands, frames, graph.nodata, raw)
        try:
            got = run(raw)
        except Exception as exc:  # noqa: BLE001 - reported with the size
            raise ExportCheckError(
                f"The exported model fails on a {tuple(raw.shape)} input: {type(exc).__name__}: "
                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            ) from exc
        if tuple(got.shape) != tuple(expected.shape):
            raise ExportCheckError(
                f"The exported model gives logits of shape {tuple(got.shape)} for a "
                f"{tuple(raw.shape)} input; the task gives {tuple(expected.shape)}."
            )
        if not bool(torch.isfinite(got).all()):
            raise ExportCheckError(
                f"The exported model gives non-finite logits for a {tuple(raw.shape)} input."
            )
        worst = max(worst, float((got.float() - expected).abs().max()))
    return worst


# ---------------------------------------------------------------------------- safetensors
def _save_safetensors(task: Any, path: Path, metadata: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    extra: dict[str, str] = {}
    for name, value in task.state_dict().items():
        if not name.startswith(("model.", "preprocess.")):
            continue
        if isinstance(value, torch.Tensor):
            tensors[name] = value.detach().cpu().contiguous().clone()
        else:  # the preprocessing's settings (_extra_state): plain data, as JSON
            extra[name] = json.dumps(value)
    save_file(tensors, str(path), metadata={"geofm_extra_state": json.dumps(extra), "geofm": json.dumps(metadata)})


def load_safetensors(task: Any, path: str | Path, strict: bool = True) -> None:
    """Load weights that :func:`export_task` wrote as safetensors into ``task``.

    ``task`` must be built from the same config (same model and bands).

    Raises:
        ExportError: the file's tensors do not fit the task's (missing or unexpected names).
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
    state: dict[str, Any] = dict(tensors)
    for name, value in json.loads(meta.get("geofm_extra_state", "{}")).items():
        state[name] = json.loads(value)
    # The statistics' length comes from the file (Preprocess takes their shape when loading).
    result = task.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k.startswith(("model.", "preprocess."))]
    if strict and (missing or result.unexpected_keys):
        from geofm.models.peft import has_lora

        hint = (
            " The file holds LoRA merged into the backbone (geofm export merges it): build the "
            "task without peft / model_args.peft_config to load it."
            if has_lora(task.model) else ""
        )
        raise ExportError(
            f"'{path}' does not fit this task: missing {missing[:5]}, unexpected "
            f"{list(result.unexpected_keys)[:5]}. Build the task from the config it was exported from.{hint}"
        )


# ---------------------------------------------------------------------------- the door
def export_task(
    task: Any,
    path: str | Path,
    format: ExportFormat = "onnx",
    *,
    dataset_bands: Sequence[BandSpec] | None = None,
    output_bands: Sequence[BandSpec] | None = None,
    nodata: float | None = None,
    tile_size: int | Sequence[int] | None = None,
    tile_overlap: int | None = None,
    num_frames: int | None = None,
    dynamic: bool = True,
    opset: int = 18,
    tolerance: float = 1e-4,
    config_text: str | None = None,
    seed: int = 0,
    traced: ExportResult | None = None,
) -> ExportResult:
    """Export a task's preprocessing and model (see :mod:`geofm.export` for the contract).

    The task is put in eval mode and moved to the CPU.

    Args:
        task: A geofm task (its ``preprocess``, ``model`` and ``predictor``).
        path: The file to write (``model.onnx``, ``model.pt2``, ``model.safetensors``); its
            metadata goes to ``<path>.json``.
        format: ``"onnx"``, ``"torch-export"`` or ``"safetensors"`` (weights only).
        dataset_bands: Every band of the input files, in file order (the datamodule's
            ``dataset_bands``); ``None`` when the files hold just the model's bands.
        output_bands: The model's bands among them (the datamodule's ``output_bands``);
            default: the band numbers the task was trained on.
        nodata: The files' nodata value: pixels equal to it are nodata (like NaN and ±inf).
        tile_size: Tile side (or ``[h, w]``) the model predicts on; default: the task's
            ``tiled_inference``. Sets the example size and, when the model cannot take any
            size, the fixed size.
        tile_overlap: Overlap of neighbouring tiles, recorded in the metadata.
        num_frames: Time steps per file for multi-temporal models (default: the backbone's).
        dynamic: Try dynamic height and width first (batch is always dynamic).
        opset: ONNX opset (17 or more).
        tolerance: Largest accepted difference between the file's logits and the task's.
        config_text: The resolved config, hashed into the metadata (``config_sha256``).
        seed: Seed of the random check inputs.
        traced: The result of an earlier ``onnx`` or ``torch-export`` export of this task with
            the same settings: its traced program is written in ``format`` (and checked)
            without tracing again.

    Returns:
        The written paths, the metadata and the measured difference.

    Raises:
        ExportError: the task cannot be exported (the message names the blocking operation).
        ExportCheckError: the exported model disagrees with the task.
        MissingDependencyError: onnx, onnxruntime or onnxscript is missing for ``"onnx"``.
    """
    if format not in FORMATS:
        raise ExportError(f"format={format!r} is not an export format; choose one of {list(FORMATS)}.")
    if format == "onnx":
        require("onnx", "onnxruntime", "onnxscript", format="onnx")
        if opset < 17:
            raise ExportError(f"opset={opset}: exports need ONNX opset 17 or newer.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = tuple(getattr(task.predictor, "extra_inputs", ()))
    if extra and format != "safetensors":
        raise ExportError(
            f"The model takes {', '.join(extra)} besides the image; an exported file has one input "
            "(the image). Export a backbone without coordinate encodings (not a *_tl variant)."
        )
    was_training = task.training
    task.cpu().eval()
    try:
        return _export(
            task, path, format, dataset_bands, output_bands, nodata, tile_size, tile_overlap,
            num_frames, dynamic, opset, tolerance, config_text, seed, traced,
        )
    finally:
        task.train(was_training)


def _export(
    task: Any, path: Path, format: str, dataset_bands: Any, output_bands: Any, nodata: Any,
    tile_size: Any, tile_overlap: Any, num_frames: Any, dynamic: bool, opset: int,
    tolerance: float, config_text: str | None, seed: int, traced: ExportResult | None,
) -> ExportResult:
    source = _merged(task)  # what is written; ``task`` is what the file is checked against
    preprocess = _single_preprocess(source)
    bands = resolve_input_bands(
        _model_band_count(task, preprocess),
        dataset_bands,
        output_bands,
        trained_indexes=getattr(preprocess, "band_indexes", None),
        trained_names=getattr(preprocess, "bands", None),
    )
    frames = _frames(task, num_frames)
    graph = ExportGraph(preprocess, source.model, bands.indexes, nodata, frames, len(bands.file_bands)).eval()
    tile, overlap = _tile(task, tile_size, tile_overlap)
    multiple = _size_multiple(task, len(bands.model_bands), frames)
    # Traced at a size of at least 2 multiples (and 64 pixels), so that no feature map is a
    # single pixel (PyTorch specialises sizes of 1); checked at the tile size and another.
    floor = _round_up(max(2 * multiple, _DEFAULT_SIZE), multiple)
    first = (_round_up(tile[0], multiple), _round_up(tile[1], multiple)) if tile else (floor, floor)
    example_size = (max(first[0], floor), max(first[1], floor))
    step = multiple * max(1, 16 // multiple)
    second = (example_size[0] + step, example_size[1] + 2 * step)

    def metadata(fixed: tuple[int, int] | None, sizes: Sequence[tuple[int, int]], diff: float) -> dict[str, Any]:
        return build_metadata(
            task, format=format, bands=bands, frames=frames, nodata=nodata, fixed_size=fixed,
            size_multiple=multiple if fixed is None else None, tile=tile, overlap=overlap,
            config_text=config_text, check_sizes=sizes, max_abs_diff=diff, opset=opset if format == "onnx" else None,
            preprocess=preprocess,
        )

    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        staged = staging / path.name
        if format == "safetensors":
            sizes = [first, second]
            _save_safetensors(source, staged, metadata(None, sizes, 0.0))
            diff = _check_safetensors(source, task, staged, graph, bands, frames, sizes, seed)
            meta = metadata(None, sizes, diff)
            program = None
        else:
            if traced is not None and traced.program is None:
                raise ExportError("traced= needs the result of an onnx or torch-export export.")
            reason = None if traced is not None else _fixed_size_reason(task)
            if dynamic and reason:
                log.warning("%s: exporting with a fixed height and width.", reason)
            meta, diff, program = _export_graph(
                task, graph, bands, frames, format, staged, example_size, [first, second],
                multiple, tile, dynamic and not reason, opset, tolerance, seed, metadata, traced,
            )
        log.info("Exported %s: max abs difference to the task's logits %.3g (sizes %s).", format, diff, meta["check"]["sizes"])
        if not diff <= tolerance:
            raise ExportCheckError(
                f"The exported model's logits differ from the task's by up to {diff:.3g} (tolerance "
                f"{tolerance:g}) at sizes {meta['check']['sizes']}; nothing was written."
            )
        (staging / f"{path.name}.json").write_text(json.dumps(meta, indent=2) + "\n")
        written = []
        for item in sorted(staging.iterdir()):
            target = path.parent / item.name
            os.replace(item, target)
            written.append(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(path, path.parent / f"{path.name}.json", meta, diff, written, program)


def _export_graph(
    task: Any, graph: ExportGraph, bands: InputBands, frames: int, format: str, staged: Path,
    example_size: tuple[int, int], check_sizes: list[tuple[int, int]], multiple: int,
    tile: tuple[int, int] | None, dynamic: bool, opset: int, tolerance: float, seed: int,
    metadata: Any, traced: ExportResult | None,
) -> tuple[dict[str, Any], float, Any]:
    """Trace, write and check; dynamic height and width first, then fixed."""
    attempts: list[tuple[tuple[int, int] | None, list[tuple[int, int]]]] = []
    if traced is not None:
        fixed_size = traced.metadata["input"]["fixed_size"]
        sizes = [tuple(size) for size in traced.metadata["check"]["sizes"]]
        attempts.append((None if fixed_size is None else tuple(fixed_size), sizes))
    else:
        if dynamic:
            attempts.append((None, check_sizes))
        fixed_size = tile or example_size
        attempts.append((fixed_size, [fixed_size, fixed_size]))
    failure: Exception | None = None
    for fixed, sizes in attempts:
        example = _raw_input(graph, bands, frames, 2, fixed or example_size, seed)
        try:
            try:
                if traced is not None:
                    program = traced.program
                else:
                    program = _trace(graph, example, multiple, dynamic=fixed is None)
            except Exception as exc:  # noqa: BLE001 - named in the ExportError
                raise blocking_operation(exc, format, "torch.export") from exc
            meta = metadata(fixed, sizes, 0.0)
            if format == "onnx":
                _write_onnx(program, example, staged, opset, meta, pixel_wise=_pixel_wise(task))
            else:
                _save_program(program, staged, meta)
            diff = _check(_runner(format, staged), task, graph, bands, frames, sizes, seed)
            if fixed is None and not diff <= tolerance:
                raise ExportCheckError(f"dynamic-size export differs by {diff:.3g} at sizes {sizes}")
        except ExportError as exc:
            if fixed is not None or traced is not None or not getattr(exc, "size_related", True):
                if failure is not None:
                    log.info("Dynamic-size export failed first: %s", failure)
                raise
            failure = exc
            log.info("Dynamic height/width export did not work (%s); exporting with a fixed size.", exc)
            continue
        if fixed is not None and traced is None:
            log.warning(
                "Exported with a fixed input size %s x %s (dynamic batch only)%s; the metadata "
                "says so (input.fixed_size).",
                fixed[0], fixed[1], f": {failure}" if failure else "",
            )
        meta = metadata(fixed, sizes, diff)
        if format == "onnx":  # the metadata inside the file, with the measured difference
            _set_onnx_metadata(staged, meta)
        else:
            _save_program(program, staged, meta)
        return meta, diff, program
    raise AssertionError("unreachable")  # pragma: no cover


def _save_program(program: Any, path: Path, meta: dict[str, Any]) -> None:
    """``torch.export.save`` with the metadata as ``geofm.json`` inside, whatever the suffix."""
    with open(path, "wb") as handle:
        torch.export.save(program, handle, extra_files={"geofm.json": json.dumps(meta)})


def _set_onnx_metadata(path: Path, meta: dict[str, Any]) -> None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == "geofm":
            prop.value = json.dumps(meta)
    onnx.save(model, str(path))


def _pixel_wise(task: Any) -> bool:
    return getattr(task, "model_task", None) in ("segmentation", "regression")


def _check_safetensors(
    written: Any, task: Any, staged: Path, graph: ExportGraph, bands: InputBands, frames: int,
    sizes: Sequence[tuple[int, int]], seed: int,
) -> float:
    """Load the written weights into a copy of the task they were ``written`` from and
    compare its logits with ``task``'s."""
    twin = copy.deepcopy(written)
    for parameter in twin.parameters():
        with torch.no_grad():
            parameter.add_(1.0)  # the file must restore every weight
    load_safetensors(twin, staged)
    twin.eval()
    return _check(lambda x: _eager_logits(twin, bands, frames, graph.nodata, x), task, graph, bands, frames, sizes, seed)
