"""Streamed tiled inference: scenes of any size, read on demand and written as they complete.

Per scene:

1. reader threads (one rasterio handle each) read reflect-padded tiles in plan order, a few
   batches ahead of the model;
2. the calling thread batches them and runs the
   :class:`~geofm.inference.predictor.Predictor` (preprocessing, model, softmax for
   ``class``/``probabilities``) on the device, the same function per-chip prediction and
   in-memory tiling use, then multiplies the outputs by the blend window;
3. a :class:`~geofm.inference.blending.BandBlender` sums the weighted tiles in plan order and,
   at the end of each grid row of tiles, converts the rows no later tile touches (divided by
   the summed weights; argmax or values; nodata where the input has none);
4. a writer thread writes those rows, a row of output blocks at a time, to a temporary
   GeoTIFF, which is renamed to the output path once complete (optionally with overviews).

Memory holds the tiles in flight, a tile-sized window of sums, the overlap rows carried from
one grid row of tiles to the next and one grid row of output values; it grows with the
scene's width, never with its area. The result equals
:func:`~geofm.inference.in_memory.tiled_forward` with the same plan and window applied to the
whole scene.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from geofm.data.raster import report_nonfinite
from geofm.inference.blending import BandBlender, OutputConverter, OutputKind, output_type
from geofm.inference.in_memory import weigh_tiles
from geofm.inference.onnx_engine import OnnxRuntimeModel, as_onnx_model
from geofm.inference.predictor import Predictor, repeat_extra
from geofm.inference.reader import RasterTileSource, TileData
from geofm.inference.tiling import (
    Tile,
    TileGrid,
    WindowKind,
    blend_weights,
    plan_tiles,
    resolve_tile_args,
)
from geofm.inference.writer import BackgroundWriter, GeoTiffSink, geotiff_profile

__all__ = [
    "Engine",
    "OutputKind",
    "default_tile_size",
    "list_scenes",
    "model_fingerprint",
    "predict_scene",
    "read_batches",
    "predict_scenes",
]

log = logging.getLogger(__name__)

_OUTPUT_KINDS = ("class", "probabilities", "regression")

#: What runs the model: ``"torch"`` (a module or callable) or ``"onnxruntime"`` (an exported
#: ONNX file, see :mod:`geofm.inference.onnx_engine`).
Engine = Literal["torch", "onnxruntime"]
_ENGINES = ("torch", "onnxruntime")
_SCENE_SUFFIXES = (".tif", ".tiff", ".vrt")


def default_tile_size(model: Any, fallback: int = 512) -> int | tuple[int, int]:
    """The input size a model declares (``img_size``, ``image_size``, ``input_size`` or a
    timm ``pretrained_cfg``), searched through its submodules; ``fallback`` when none does.
    """
    modules = model.modules() if isinstance(model, nn.Module) else [model]
    for module in modules:
        for name in ("img_size", "image_size", "input_size"):
            size = _as_size(getattr(module, name, None))
            if size is not None:
                return size
        cfg = getattr(module, "pretrained_cfg", None)
        if isinstance(cfg, dict):
            size = _as_size(cfg.get("input_size"))
            if size is not None:
                return size
    return fallback


def _as_size(value: Any) -> int | tuple[int, int] | None:
    if isinstance(value, int) and value > 0:
        return value
    if (
        isinstance(value, (tuple, list))
        and len(value) in (2, 3)
        and all(isinstance(v, int) for v in value)
    ):
        height, width = value[-2:]  # (C, H, W) in timm configs
        return height if height == width else (height, width)
    return None


def model_fingerprint(model: Any) -> str:
    """A digest of a model's parameters and buffers (names, shapes, dtypes, values).

    A plain callable (a function wrapping a module, a bound method, a ``functools.partial``)
    is identified by its qualified name and the weights of the modules it holds (closure
    variables, ``__self__``, partial arguments); other changes inside it are invisible to
    resume, so pass ``model_id`` to :func:`predict_scene` when they matter.
    """
    if isinstance(model, OnnxRuntimeModel):  # the exported file and its metadata
        return model.fingerprint
    if isinstance(model, Predictor):
        parts = [model.kind, model_fingerprint(model.model)]
        if model.preprocess is not None:
            parts.append(model_fingerprint(model.preprocess))
        return ":".join(parts)
    if isinstance(model, nn.Module):
        return _module_digest(model)
    modules = _held_modules(model)
    if not modules:
        log.warning(
            "Resume cannot check the weights behind %s (no nn.Module found in it); pass "
            "model_id to tell models apart.",
            _callable_name(model),
        )
    return ":".join([f"callable:{_callable_name(model)}", *map(_module_digest, modules)])


def _held_modules(fn: Any) -> list[nn.Module]:
    """The modules a callable holds: closure variables, bound ``self``, partial arguments."""
    candidates: list[Any] = [getattr(fn, "__self__", None)]
    candidates += [_cell_value(cell) for cell in getattr(fn, "__closure__", None) or ()]
    if isinstance(fn, functools.partial):
        candidates += [fn.func, *fn.args, *fn.keywords.values()]
    modules: list[nn.Module] = []
    for value in candidates:
        if isinstance(value, nn.Module) and all(value is not m for m in modules):
            modules.append(value)
    return modules


def _cell_value(cell: Any) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # a variable not yet assigned
        return None


def _module_digest(module: nn.Module) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(type(module).__qualname__.encode())
    for name, tensor in module.state_dict().items():
        if not isinstance(tensor, torch.Tensor):  # extra state: plain settings
            digest.update(f"{name}:{tensor!r}".encode())
            continue
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        if flat.numel():
            digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()


def predict_scene(
    model: Callable[..., Any] | str | Path,
    input_path: str | Path,
    output_path: str | Path,
    *,
    engine: Engine = "torch",
    output: OutputKind | None = None,
    bands: list[int] | None = None,
    preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
    extra_inputs: dict[str, torch.Tensor] | None = None,
    tile_size: int | tuple[int, int] | None = None,
    overlap: int | tuple[int, int] | None = None,
    stride: int | tuple[int, int] | None = None,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    num_workers: int = 2,
    resume: bool = False,
    overviews: bool = False,
    window: WindowKind = "hann",
    block_size: int = 256,
    compress: str = "deflate",
    nodata: float | int | None = None,
    input_nodata: float | None = None,
    model_id: str | None = None,
    gdal_cache_mb: int | None = None,
    checkpoint_seconds: float = 30.0,
    progress: bool = True,
) -> Path:
    """Predict one scene tile by tile and write the result as a GeoTIFF on the input's grid.

    Args:
        model: A :class:`~geofm.inference.predictor.Predictor` (raw tiles to probabilities
            or values), or a model mapping ``(N, C', h, w)`` float32 tiles (after
            ``preprocess``) to ``(N, K, h, w)`` logits or values (a ``ModelOutput`` is
            accepted), which is wrapped in one. Modules are moved to ``device`` and put in
            eval mode. With ``engine="onnxruntime"``: the path of an exported ``.onnx`` file
            (its metadata beside it) or an
            :class:`~geofm.inference.onnx_engine.OnnxRuntimeModel` (which selects that engine
            by itself).
        input_path: The scene (any raster rasterio reads).
        output_path: The GeoTIFF to write; appears only once complete.
        engine: ``"torch"``, or ``"onnxruntime"``: the exported file takes every band of the
            scene (its band count is checked), preprocesses inside its graph and runs on
            onnxruntime's providers; its metadata gives the activation, the default tile
            size and overlap, and ``input_nodata``. ``bands``, ``preprocess``,
            ``extra_inputs`` and ``device`` belong to the torch engine. Tiling, blending and
            writing are the same for both.
        output: ``"class"``: argmax of the blended softmax (sigmoid > 0.5 for one channel),
            uint8 (int16 beyond 255 classes); ``"probabilities"``: blended softmax (sigmoid),
            float32, one band per class; ``"regression"``: blended values, float32, ``K = 1``.
            By default ``"regression"`` for a predictor of values, else ``"class"``.
        bands: 1-based band indexes read from the input, in model order; all by default.
        preprocess: Applied on the device to each batch of raw float32 tiles ``(N, C, h, w)``
            (a :class:`~geofm.models.preprocess.Preprocess`, band arithmetic); identity by
            default. Not with a ``Predictor``, which has its own.
        extra_inputs: The scene's keyword inputs for the model, each ``(1, ...)``
            (``temporal_coords`` ``(1, T, 2)``, ``location_coords`` ``(1, 2)``), repeated
            for every tile.
        tile_size: Tile side or ``(h, w)``; by default the model's declared input size
            (:func:`default_tile_size`), else 512.
        overlap: Pixels shared by neighbouring tiles (default ``tile_size // 8``).
        stride: Step between tiles; give overlap or stride, not both.
        batch_size: Tiles per forward pass; does not change the result.
        device: Where preprocess and the model run.
        num_workers: Reader threads (0: read in this thread); does not change the result.
        resume: Continue a partial output left by an interrupted run with the same input,
            model and settings (and skip an output already finished with them).
        overviews: Add internal overviews (mode for classes, average for values).
        window: Blend window, ``"hann"`` (smooth, no seams) or ``"uniform"``.
        block_size: Output GeoTIFF block side, multiple of 16; rows are accumulated and
            written in bands of this height.
        compress: GeoTIFF compression (``"deflate"``, ``"lzw"``, ``"zstd"``...).
        nodata: Output nodata value; default 255 (uint8 classes), -1 (int16 classes) or NaN.
            Written where every selected input band is nodata or masked.
        input_nodata: A raw input value read as nodata in every band, besides each band's
            own nodata value.
        model_id: Identifies the model for resume instead of hashing its weights.
        gdal_cache_mb: GDAL block cache (MB) while reading; by default sized to hold a band
            of rows as tall as a tile plus one row of input blocks (see
            :class:`~geofm.inference.reader.RasterTileSource`).
        checkpoint_seconds: Least time between resume checkpoints of the partial output.
        progress: Show a progress bar with tiles per second.

    Returns:
        ``output_path``.
    """
    if output is not None and output not in _OUTPUT_KINDS:
        raise ValueError(f"output={output!r}; choose one of {_OUTPUT_KINDS}.")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be at least 1.")
    if block_size < 16 or block_size % 16:
        raise ValueError(
            f"block_size={block_size} must be a positive multiple of 16 (GeoTIFF tiles)."
        )
    device = torch.device(device)
    onnx_model = None
    if engine == "onnxruntime" or isinstance(model, OnnxRuntimeModel):
        torch_only = {"bands": bands, "preprocess": preprocess, "extra_inputs": extra_inputs}
        given = [name for name, value in torch_only.items() if value is not None]
        if given or device.type != "cpu":
            raise ValueError(
                f"{', '.join(given) or f'device={str(device)!r}'} applies to the torch engine: "
                "the onnxruntime engine reads every band of the scene, preprocesses inside "
                "the exported graph and runs on onnxruntime's providers."
            )
        onnx_model = as_onnx_model(model)
        model = onnx_model.scene_predictor()  # a model of maps
        bands = onnx_model.scene_bands(input_path)  # with the file's band count
        if tile_size is None and overlap is None and stride is None:
            overlap = onnx_model.overlap  # the metadata's tile, when it has one
        if input_nodata is None:
            input_nodata = onnx_model.nodata
        model_id = model_id or onnx_model.fingerprint
    elif engine != "torch":
        raise ValueError(f"engine={engine!r}; choose one of {_ENGINES}.")
    if isinstance(model, Predictor):
        if preprocess is not None:
            raise ValueError("A Predictor preprocesses itself; pass preprocess=None.")
        if output is not None and (model.kind == "values") != (output == "regression"):
            raise ValueError(
                f"output={output!r} does not fit a predictor of {model.kind}: use 'regression' "
                "for values, 'class' or 'probabilities' for probabilities."
            )
        predictor = model
    else:
        kind = "values" if output == "regression" else "probabilities"
        predictor = Predictor(model, preprocess, kind)
    if output is None:
        output = "regression" if predictor.kind == "values" else "class"
    for module in (predictor.model, predictor.preprocess):
        if isinstance(module, nn.Module):
            module.to(device).eval()
    if tile_size is None:
        tile_size = default_tile_size(predictor.model)
        log.info("Tile size %s (from the model's input size or the default).", tile_size)
    output_path = Path(output_path)
    tile = resolve_tile_args(tile_size, overlap, stride)[0]
    if onnx_model is not None:
        onnx_model.check_tile_size(tile)
    with RasterTileSource(
        input_path, bands, num_workers, gdal_cache_mb, tile[0], nodata=input_nodata
    ) as source:
        grid = plan_tiles(source.height, source.width, tile_size, overlap, stride)
        source.set_grid(grid)  # count non-finite input pixels once each
        fingerprint = {
            "input": _file_identity(source.path),
            "bands": source.bands,
            "model": model_id or model_fingerprint(predictor),
            "preprocess": _callable_name(predictor.preprocess),
            "extra_inputs": {k: v.tolist() for k, v in (extra_inputs or {}).items()},
            "output": output,
            "tile_size": grid.tile_size,
            "stride": grid.stride,
            "window": window,
            "block_size": block_size,
            "compress": compress,
            "nodata": repr(nodata),
            "input_nodata": repr(input_nodata),
            "overviews": overviews,
        }
        if resume and GeoTiffSink.finished(output_path, fingerprint):
            log.info("%s is already complete with these settings; skipping.", output_path)
            return output_path
        # Takes <output>.lock: a second run into the same output stops here with the holder.
        sink = GeoTiffSink(
            output_path,
            source.width,
            source.height,
            fingerprint,
            resume=resume,
            checkpoint_seconds=checkpoint_seconds,
        )
        if resume and GeoTiffSink.finished(output_path, fingerprint):  # finished meanwhile
            sink.close()
            log.info("%s is already complete with these settings; skipping.", output_path)
            return output_path
        settings = {
            "output": output,
            "extra_inputs": {k: v.to(device) for k, v in (extra_inputs or {}).items()},
            "batch_size": batch_size,
            "device": device,
            "window": window,
            "block_size": block_size,
            "compress": compress,
            "nodata": nodata,
            "overviews": overviews,
            "progress": progress,
        }
        try:
            engine = _SceneRun(predictor, source, grid, sink, settings)
        except BaseException:
            sink.close()
            raise
        return engine.run()


class _SceneRun:
    """The state of one scene's streamed prediction (see :func:`predict_scene`)."""

    def __init__(
        self,
        predictor: Predictor,
        source: RasterTileSource,
        grid: TileGrid,
        sink: GeoTiffSink,
        settings: dict[str, Any],
    ):
        self.predictor, self.source, self.grid, self.sink = predictor, source, grid, sink
        self.kind: OutputKind = settings["output"]
        self.extra_inputs: dict[str, torch.Tensor] = settings["extra_inputs"]
        self.batch_size: int = settings["batch_size"]
        self.device: torch.device = settings["device"]
        self.window: WindowKind = settings["window"]
        self.block: int = settings["block_size"]
        self.settings = settings
        self.weights = torch.from_numpy(blend_weights(grid.tile_size, self.window)).to(self.device)
        self.writer: BackgroundWriter | None = None
        self.blender: BandBlender | None = None
        self.nonfinite = [0, 0, 0]  # input pixels NaN or ±inf, of them ±inf, pixels counted

    def _start_output(self, channels: int) -> None:
        """Open the output and start the writer once the first batch gives the channels."""
        dtype, nodata, count = output_type(self.kind, channels, self.settings["nodata"])
        self.sink.open(
            geotiff_profile(
                self.grid.width,
                self.grid.height,
                count,
                dtype,
                self.source.crs,
                self.source.transform,
                nodata,
                block=self.block,
                compress=self.settings["compress"],
            )
        )
        convert = OutputConverter(self.grid, self.window, self.kind, dtype, nodata)
        self.blender = BandBlender(
            self.grid,
            channels,
            convert,
            count,
            dtype,
            self.source.has_mask,
            top=self.sink.rows_done,
        )
        self.writer = BackgroundWriter(self.sink)

    def _forward(self, tiles: list[TileData]) -> np.ndarray:
        batch = torch.from_numpy(np.stack([t.image for t in tiles]))
        if self.device.type == "cuda":
            batch = batch.pin_memory()
        batch = batch.to(self.device, non_blocking=True)
        with torch.inference_mode():
            outputs = self.predictor(batch, **repeat_extra(self.extra_inputs, batch.shape[0]))
            del batch  # free before the next allocation
            # Softmax and sigmoid made new tensors; a regression output may be the model's own.
            inplace = self.kind != "regression"
            weighted = weigh_tiles(outputs, self.weights, self.grid.tile_size, inplace=inplace)
        return weighted.cpu().numpy()

    def _consume(self, batch: list[TileData]) -> None:
        weighted = self._forward(batch)
        if self.writer is None:
            self._start_output(weighted.shape[1])
        assert self.blender is not None and self.writer is not None
        for data, out in zip(batch, weighted, strict=True):
            self.nonfinite[0] += data.nonfinite
            self.nonfinite[1] += data.infinite
            self.nonfinite[2] += data.counted
            rows = self.blender.add(data.tile, out, data.valid)
            if rows is not None:
                self.writer.put(*rows)

    def run(self) -> Path:
        """Predict every tile not already written, then finish the output file."""
        from tqdm.auto import tqdm

        tiles = list(self.grid)
        cols = self.grid.shape[1]
        if self.sink.rows_done >= self.grid.height:
            start = len(tiles)
        else:
            start = self.grid.first_grid_row_touching(self.sink.rows_done) * cols
        bar = tqdm(
            total=len(tiles),
            initial=start,
            unit="tile",
            desc=self.sink.path.name,
            disable=not self.settings["progress"],
            dynamic_ncols=True,
        )
        started, failed = time.perf_counter(), True
        batches = read_batches(self.source, tiles, start, cols, self.batch_size)
        try:
            for batch in batches:
                self._consume(batch)
                bar.update(len(batch))
            failed = False
        finally:
            batches.close()  # cancels the reads still in flight
            bar.close()
            self._stop_writer(failed)
        try:
            path = self.sink.finish(self.settings["overviews"], _overview_resampling(self.kind))
        except BaseException:
            self.sink.close()  # releases the lock; keeps a partial that can still resume
            raise
        log.info("%s: %d tiles in %.1f s.", path, len(tiles) - start, time.perf_counter() - started)
        report_nonfinite(self.source.path, *self.nonfinite)  # written as nodata
        return path

    def _stop_writer(self, failed: bool) -> None:
        try:
            if self.writer is not None:
                self.writer.stop()  # writes what is queued, so resume loses little
        except BaseException:
            failed = True
            raise
        finally:
            if failed:
                self.sink.close()
                if not self.sink.failed:  # a failed write removed the partial output
                    log.warning(
                        "Stopped before the end; the partial output %s is kept for "
                        "resume=True.",
                        self.sink.temp,
                    )


def read_batches(
    source: RasterTileSource, tiles: Sequence[Tile], start: int, cols: int, batch_size: int
) -> Iterator[list[TileData]]:
    """``tiles[start:]`` read on the source's threads, in order, in batches of ``batch_size``.

    Enough reads stay in flight to fill the next batch while the model runs this one. Close
    the generator when done early (an error): the reads still in flight are cancelled.

    Args:
        source: The scene's reader.
        tiles: Every tile of the scene's grid, in row-major order.
        start: Index of the first tile to read.
        cols: Tiles per row of the grid (the reader's cache needs it).
        batch_size: Tiles per batch; the last batch may be smaller.
    """
    prefetch = batch_size + 2 * max(source.num_workers, 1)
    pending: deque = deque()
    try:
        next_submit, batch = start, []
        for index in range(start, len(tiles)):
            while next_submit < len(tiles) and len(pending) < prefetch:
                pending.append(source.submit(tiles[next_submit], cols))
                next_submit += 1
            batch.append(pending.popleft().result())
            if len(batch) == batch_size or index == len(tiles) - 1:
                yield batch
                batch = []
    finally:
        for future in pending:
            future.cancel()


def _overview_resampling(kind: OutputKind) -> Any:
    from rasterio.enums import Resampling

    return Resampling.mode if kind == "class" else Resampling.average


def _file_identity(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _callable_name(fn: Any) -> str | None:
    if fn is None:
        return None
    return f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"


def list_scenes(inputs: str | Path | Sequence[str | Path]) -> list[Path]:
    """The scenes ``inputs`` names: a folder's GeoTIFF/VRT files (sorted), one file or a list."""
    if isinstance(inputs, (str, Path)):
        path = Path(inputs)
        if path.is_dir():
            scenes = sorted(
                p
                for p in path.iterdir()
                if p.suffix.lower() in _SCENE_SUFFIXES and not p.name.startswith(".")
            )
            if not scenes:
                raise FileNotFoundError(
                    f"No {'/'.join(_SCENE_SUFFIXES)} scenes in folder '{path}'."
                )
            return scenes
        inputs = [path]
    scenes = [Path(p) for p in inputs]
    missing = [str(p) for p in scenes if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"Input scene(s) not found: {missing}.")
    return scenes


def predict_scenes(
    model: Callable[..., Any] | str | Path,
    inputs: str | Path | Sequence[str | Path],
    output_dir: str | Path,
    *,
    rank: int = 0,
    world_size: int = 1,
    suffix: str = "_pred",
    scene_inputs: Callable[[Path], dict[str, torch.Tensor]] | None = None,
    **kwargs: Any,
) -> list[Path]:
    """Predict several scenes, this process's share of them under data parallelism.

    Args:
        model: As in :func:`predict_scene`.
        inputs: A folder of scenes, one scene, or a list of scenes.
        output_dir: Where ``<scene stem><suffix>.tif`` outputs go (created if needed).
        rank: This process's rank; scene ``i`` (in sorted order) goes to rank
            ``i % world_size``.
        world_size: Number of processes sharing the scenes.
        suffix: Appended to each scene's stem to name its output.
        scene_inputs: A scene's ``extra_inputs`` for :func:`predict_scene` (its dates and
            location), from its path.
        **kwargs: Settings of :func:`predict_scene`.

    Returns:
        The outputs this rank wrote (or found complete, with ``resume=True``).
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank={rank} and world_size={world_size}: need 0 <= rank < world_size.")
    scenes = list_scenes(inputs)
    output_dir = Path(output_dir)
    stems = [s.stem for s in scenes]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise ValueError(
            f"Scenes {duplicates} share a name; their outputs in {output_dir} would collide."
        )
    mine = scenes[rank::world_size]
    log.info("Rank %d/%d predicts %d of %d scenes.", rank, world_size, len(mine), len(scenes))
    if mine and kwargs.get("engine") == "onnxruntime":
        model = as_onnx_model(model)  # one session for every scene
    if mine and kwargs.get("model_id") is None:
        kwargs["model_id"] = model_fingerprint(model)  # hash the weights once, not per scene
    return [
        predict_scene(
            model,
            scene,
            output_dir / f"{scene.stem}{suffix}.tif",
            extra_inputs=scene_inputs(scene) if scene_inputs is not None else None,
            **kwargs,
        )
        for scene in mine
    ]
