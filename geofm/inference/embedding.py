"""Embeddings of chips and of whole scenes: GeoParquet rows and GeoTIFF patch grids.

**Chips** (:func:`embed_chips`): every file is one input, read whole; one GeoParquet row per
chip (its footprint in its CRS, the pooled vector, the file, its date). GeoParquet holds one
CRS per geometry column, so chips in several CRSs go to one file per CRS,
``<name>_EPSG_<code>.parquet`` (never reprojected: the footprints stay exact). With a grid
output, each chip also gets ``<chip>_emb.tif`` (``D`` bands on its patch grid) and
``patches.parquet`` rows (one per patch, ``row``/``col`` on the patch grid).

**Scenes** (:func:`embed_scene`): streamed through the same reader as scene prediction
(:class:`~geofm.inference.reader.RasterTileSource`), tiles read per window in bounded memory.
Tiles are aligned to the patch grid: tile size and overlap are multiples of the feature
stride ``p`` (the ViT patch, the CNN stage's stride), offsets start at the scene's origin, so
a tile's patches are the scene's patches. Features are **not blended**: each patch of the
grid takes the values of the one tile that owns it, the tile whose centre is nearest (the
overlap is split at its middle). Away from tile edges a patch therefore equals what the
same pixels give as a chip alone, as far as the receptive field stays inside the tile (a
ViT attends to the whole tile: equal when the chip is the tile). Outputs, in ``output_dir``:

- ``<scene>_tiles.parquet`` (``pooled``): one row per tile, its pooled vector over the whole
  tile, ``row``/``col`` its top-left pixel, geometry the tile's footprint inside the scene;
- ``<scene>_emb.tif`` (``grid``): ``D`` float32 bands on the patch grid, whose
  transform is the scene's scaled by ``p`` and whose size is ``ceil(H / p) x ceil(W / p)``
  (the last patch row and column reach past the scene by less than a patch; their pixels
  there are reflected); NaN where a patch has no valid pixel;
- ``<scene>_patches.parquet`` (``grid`` with ``patch_rows``): one row per valid patch.

Memory holds the tiles in flight and one row of tiles' patch rows; it grows with the scene's
width, never its area. Every file is written under a temporary name and renamed when
complete. ``resume=True`` continues an interrupted run with the same input, model and settings:
the GeoTIFF resumes as streamed predictions do (:class:`~geofm.inference.writer.GeoTiffSink`,
its lock and sidecar) and the GeoParquet rows of each finished row of tiles are kept as part
files; a scene whose outputs are all finished with those settings is skipped.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geofm.inference.chip_rows import ChipRows, crs_tag
from geofm.inference.geoparquet import GeoParquetWriter, footprints, read_fingerprint
from geofm.inference.predictor import Predictor, repeat_extra
from geofm.inference.reader import RasterTileSource, TileData
from geofm.inference.streaming import _file_identity, list_scenes, model_fingerprint
from geofm.inference.tiling import Tile, TileGrid, resolve_tile_args
from geofm.inference.writer import GeoTiffSink, geotiff_profile
from geofm.locks import OutputLock

__all__ = [
    "EMBEDDING_OUTPUTS",
    "as_embedding_predictor",
    "embed_chips",
    "embed_scene",
    "embed_scenes",
    "expected_bands",
    "feature_stride",
    "file_date",
    "file_inputs",
    "owned_ranges",
    "plan_patch_tiles",
]

log = logging.getLogger(__name__)

EMBEDDING_OUTPUTS = ("pooled", "grid", "both")


# ---------------------------------------------------------------------------- model
def as_embedding_predictor(model: Any) -> Predictor:
    """A :class:`Predictor` whose model returns ``{"output": grid, "pooled": vectors}``.

    Accepts an :class:`~geofm.tasks.embedding.EmbeddingTask` (its predictor), a ``Predictor``
    or an :class:`~geofm.models.embedder.Embedder` (no preprocessing).
    """
    predictor = getattr(model, "predictor", model)
    if isinstance(predictor, Predictor):
        return predictor
    if isinstance(model, nn.Module):
        return Predictor(model, None, "values")
    raise TypeError(
        f"Embedding needs an EmbeddingTask, a Predictor or an Embedder, got {type(model).__name__}."
    )


def _run(
    predictor: Predictor, batch: torch.Tensor, extra: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.inference_mode():
        out = predictor.outputs(batch, **repeat_extra(extra, batch.shape[0]))
    if not isinstance(out, dict) or "pooled" not in out:
        raise TypeError(
            f"{type(predictor.model).__name__} returned {type(out).__name__}; embedding needs an "
            "Embedder (a dict with 'output' and 'pooled')."
        )
    return out["output"].float(), out["pooled"].float()


def expected_bands(predictor: Predictor) -> tuple[int, str] | None:
    """The band count the model takes and what says so (its statistics, its first layer)."""
    preprocess = predictor.preprocess
    if getattr(preprocess, "has_statistics", False):
        return int(preprocess.num_bands), f"{preprocess.source} has {preprocess.num_bands} bands"
    root = getattr(predictor.model, "encoder", predictor.model)
    if isinstance(root, nn.Module):
        for module in root.modules():
            if isinstance(module, nn.modules.conv._ConvNd):
                channels = module.in_channels
                return channels, f"the model's first layer takes {channels} bands"
    return None


def check_bands(predictor: Predictor, path: Path, count: int, bands: list[int] | None) -> None:
    """Raise when ``path`` gives the model another number of bands than it takes (names the
    file, the bands read and what fixes the count)."""
    expected = expected_bands(predictor)
    given = len(bands) if bands is not None else count
    if expected is not None and expected[0] != given:
        read = f"bands {bands}" if bands is not None else f"all {count} bands"
        raise ValueError(
            f"'{path}' gives the model {given} bands ({read}) but {expected[1]}: select the "
            "model's bands (bands= 1-based, --bands, or data.init_args.output_bands)."
        )


def feature_stride(
    predictor: Predictor, bands: int, tile: tuple[int, int], device: torch.device,
    extra: dict[str, torch.Tensor] | None = None,
) -> tuple[int, int]:
    """Pixels per grid cell of the model's features ``(p_h, p_w)``, from one probe forward of a
    ``tile``-sized input.

    Raises:
        ValueError: the tile is not a multiple of the stride (names both).
    """
    probe = torch.zeros((1, bands, *tile), device=device)
    grid, _ = _run(predictor, probe, extra or {})
    h, w = grid.shape[-2:]
    strides = (tile[0] // h, tile[1] // w)
    if strides[0] * h != tile[0] or strides[1] * w != tile[1]:
        raise ValueError(
            f"tile_size {tile} gives a {h} x {w} feature grid, not a whole number of pixels per "
            f"cell: use a tile size that is a multiple of the feature stride (about {strides})."
        )
    return strides


# ---------------------------------------------------------------------------- plan
def _aligned_offsets(n: int, tile: int, stride: int, patch: int) -> tuple[int, ...]:
    extent = -(-n // patch) * patch  # the scene rounded up to whole patches
    if extent <= tile:
        return (0,)
    offsets = list(range(0, extent - tile, stride))
    return tuple([*offsets, extent - tile])


def plan_patch_tiles(
    height: int,
    width: int,
    tile_size: int | tuple[int, int],
    overlap: int | tuple[int, int] | None,
    patch: tuple[int, int],
) -> TileGrid:
    """Tiles aligned to a patch grid: offsets are multiples of ``patch`` from the scene's origin.

    The scene is covered rounded up to whole patches; tiles step by ``tile - overlap`` and
    the last one ends at that rounded edge (pixels past the scene are reflected by the reader).

    Raises:
        ValueError: tile size or overlap is not a multiple of the patch size.
    """
    if overlap is None:
        overlap = 0
    tile, stride = resolve_tile_args(tile_size, overlap, None)
    for t, s, p, axis in zip(tile, stride, patch, ("height", "width"), strict=True):
        if t % p or s % p:
            raise ValueError(
                f"tile_size {t} and overlap {t - s} along {axis} must be multiples of the "
                f"feature stride {p}, so that tiles share the scene's patch grid."
            )
    return TileGrid(
        height=height,
        width=width,
        tile_size=tile,
        stride=stride,
        row_offsets=_aligned_offsets(height, tile[0], stride[0], patch[0]),
        col_offsets=_aligned_offsets(width, tile[1], stride[1], patch[1]),
    )


def owned_ranges(
    offsets: Sequence[int], tile: int, patch: int, cells: int
) -> list[tuple[int, int]]:
    """The grid cells each tile owns along an axis: ``[(start, stop)]`` in patch units.

    Neighbouring tiles split their overlap at its middle, so each cell comes from the tile
    whose centre is nearest; the first tile owns from 0, the last to ``cells``.
    """
    starts = [o // patch for o in offsets]
    t = tile // patch
    bounds = [0] + [(starts[i + 1] + starts[i] + t) // 2 for i in range(len(starts) - 1)] + [cells]
    return [(bounds[i], bounds[i + 1]) for i in range(len(starts))]


# ---------------------------------------------------------------------------- metadata
def file_date(path: str | Path, pattern: str | None = None) -> dt.date | None:
    """The acquisition date of a file: the first date ``pattern`` finds in its name (see
    :mod:`geofm.data.coords`); without a pattern, the first default pattern that finds one,
    else its GeoTIFF date tags; ``None`` when there is none.

    Raises:
        DateError: ``pattern`` is given and the name holds no date it reads (names the file).
    """
    from geofm.data.coords import DEFAULT_DATE_PATTERNS, DatePattern, find_dates

    path = Path(path)
    if pattern is not None:
        found = find_dates([path], pattern)[0]
        dates = found[0] if found else []
    else:  # file by file, quietly: chips of one folder may name dates differently
        searches = (DatePattern(c).search(path.name) for c in DEFAULT_DATE_PATTERNS)
        dates = next((d for d in searches if d), [])
        if not dates:
            found = find_dates([path], "tags")[0]
            dates = found[0] if found else []
    if not dates:
        return None
    year, doy = dates[0]
    return dt.date(int(year), 1, 1) + dt.timedelta(days=int(doy) - 1)


def file_inputs(
    wanted: Sequence[str], date_pattern: str | None = None
) -> Callable[[Path], dict[str, torch.Tensor]] | None:
    """A function giving a file's ``temporal_coords`` ``(1, 1, 2)`` and ``location_coords``
    ``(1, 2)`` (those in ``wanted``, the model's extra inputs), or ``None`` when it takes none.

    Dates come from :func:`file_date`, locations from the file's CRS and transform
    (:mod:`geofm.data.coords`); a file without them gets no such input.
    """
    if not wanted:
        return None
    import rasterio

    from geofm.data.coords import location_coords

    def inputs(path: Path) -> dict[str, torch.Tensor]:
        found: dict[str, torch.Tensor] = {}
        date = file_date(path, date_pattern)
        if "temporal_coords" in wanted and date is not None:
            coords = np.asarray([[date.year, date.timetuple().tm_yday]], dtype=np.float32)
            found["temporal_coords"] = torch.from_numpy(coords)[None]
        if "location_coords" in wanted:
            with rasterio.open(path) as src:
                location = location_coords(src.crs, src.transform, src.height, src.width)
            if location is not None:
                found["location_coords"] = torch.from_numpy(location)[None]
        return found

    return inputs


def _check_outputs(output: str) -> None:
    if output not in EMBEDDING_OUTPUTS:
        raise ValueError(f"output={output!r}; choose one of {list(EMBEDDING_OUTPUTS)}.")


def _tile_valid(data: TileData, height: int, width: int) -> np.ndarray:
    """``(tile_h, tile_w)`` bool: valid pixels of the tile inside the scene."""
    tile = data.tile
    full = np.zeros((tile.height, tile.width), dtype=bool)
    r0, r1, c0, c1 = tile.inside(height, width)
    inside = (slice(r0 - tile.row, r1 - tile.row), slice(c0 - tile.col, c1 - tile.col))
    full[inside] = True if data.valid is None else data.valid
    return full


def _patch_valid(valid: np.ndarray, patch: tuple[int, int]) -> np.ndarray:
    """``(h, w)`` bool: patches with at least one valid pixel."""
    h, w = valid.shape[0] // patch[0], valid.shape[1] // patch[1]
    return valid[: h * patch[0], : w * patch[1]].reshape(h, patch[0], w, patch[1]).any(axis=(1, 3))


# ---------------------------------------------------------------------------- chips
def embed_chips(
    model: Any,
    inputs: str | Path | Sequence[str | Path],
    output_dir: str | Path,
    *,
    output: str = "pooled",
    bands: list[int] | None = None,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    date_pattern: str | None = None,
    chip_inputs: Callable[[Path], dict[str, torch.Tensor]] | None = None,
    name: str = "embeddings",
    resume: bool = False,
) -> list[Path]:
    """Embed every chip of a folder (or list) whole; write GeoParquet rows (and grids).

    Args:
        model: An :class:`~geofm.tasks.embedding.EmbeddingTask` (its preprocessing and
            embedder), a ``Predictor`` or an ``Embedder``.
        inputs: A folder of GeoTIFF/VRT chips, one file or a list.
        output_dir: Where ``<name>.parquet`` (one per CRS when the chips have several:
            ``<name>_EPSG_<code>.parquet``), and with a grid output ``<chip>_emb.tif`` and
            ``patches.parquet``, go.
        output: ``"pooled"``, ``"grid"`` or ``"both"``.
        bands: 1-based band indexes read from every chip, in model order; all by default.
        batch_size: Chips per forward pass (consecutive chips of one size share a batch).
        device: Where the model runs.
        date_pattern: How dates are read from file names (:mod:`geofm.data.coords`); the
            default patterns, then the tags, by default.
        chip_inputs: A chip's extra model inputs (``temporal_coords``...) from its path.
        name: Stem of the pooled GeoParquet file(s).
        resume: Skip the run when every output is already finished with these settings.

    Returns:
        The files written (or found finished).

    Raises:
        FileNotFoundError: no chips where ``inputs`` points.
        ValueError: a chip with fewer bands than ``bands`` asks for, or chips whose band
            counts differ (names the file).
    """
    _check_outputs(output)
    import rasterio

    predictor = as_embedding_predictor(model)
    device = torch.device(device)
    files = list_scenes(inputs)
    output_dir = Path(output_dir)
    headers = []
    for path in files:
        with rasterio.open(path) as src:
            headers.append((src.crs, src.transform, src.height, src.width, src.count))
    counts = {h[4] for h in headers}
    if bands is None and len(counts) > 1:
        first = headers[0][4]
        odd = next(p for p, h in zip(files, headers, strict=True) if h[4] != first)
        raise ValueError(
            f"Chips have different band counts: '{files[0]}' has {first}, '{odd}' has "
            f"{headers[files.index(odd)][4]}; give bands (1-based) to select the same bands."
        )
    for path, header in zip(files, headers, strict=True):
        check_bands(predictor, path, header[4], bands)
    stems = [p.stem for p in files]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates and output != "pooled":
        raise ValueError(
            f"Chips {duplicates} share a name; their grids in {output_dir} would collide."
        )
    tags = [crs_tag(h[0]) for h in headers]
    pooled, grid = output in ("pooled", "both"), output in ("grid", "both")
    fingerprint = {
        "inputs": [_file_identity(p) for p in files],
        "bands": bands,
        "model": model_fingerprint(predictor),
        "output": output,
        "date_pattern": date_pattern,
    }
    kinds = ([name] if pooled else []) + (["patches"] if grid else [])
    crss = sorted(set(tags))
    targets = [output_dir / ChipRows.file_name(n, tags, t) for n in kinds for t in crss]
    if grid:
        targets += [output_dir / f"{p.stem}_emb.tif" for p in files]
    if resume and all(_finished(t, fingerprint) for t in targets):
        log.info("Chip embeddings in %s are complete with these settings; skipping.", output_dir)
        return targets
    for module in (predictor.model, predictor.preprocess):
        if isinstance(module, nn.Module):
            module.to(device).eval()
    rows = ChipRows(output_dir, pooled, grid, name=name, fingerprint=fingerprint)
    if grid:  # the model's stride, from a size every common patch and stride divides
        channels = len(bands) if bands is not None else headers[0][4]
        rows.stride = feature_stride(predictor, channels, (224, 224), device)
    pending: list[tuple[Path, Any, TileData]] = []

    def flush() -> None:
        if not pending:
            return
        image = torch.from_numpy(np.stack([d.image for _, _, d in pending])).to(device)
        extra: dict[str, torch.Tensor] = {}
        if chip_inputs is not None:  # each chip's own (1, ...) inputs, stacked
            per_chip = [chip_inputs(p) for p, _, _ in pending]
            extra = {k: torch.cat([c[k] for c in per_chip]) for k in per_chip[0]}
        grids, vectors = _forward_batch(predictor, image, extra, device)
        grids, vectors = grids.cpu().numpy(), vectors.cpu().numpy()
        for i, (path, header, data) in enumerate(pending):
            crs, transform, height, width, _ = header
            rows.add(path, crs, transform, height, width, vectors[i], grids[i], data.valid,
                     file_date(path, date_pattern))
        pending.clear()

    try:
        for path, header in zip(files, headers, strict=True):
            height, width = header[2], header[3]
            with RasterTileSource(path, bands, num_workers=0, cache_rows=height) as source:
                data = source.read(Tile(0, 0, 0, 0, 0, height, width))
            other_size = pending and pending[0][2].image.shape != data.image.shape
            if other_size or len(pending) == batch_size:
                flush()
            pending.append((path, header, data))
        flush()
        return rows.finish()
    finally:
        rows.close()


def _forward_batch(
    predictor: Predictor, image: torch.Tensor, extra: dict[str, torch.Tensor], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    extra = {k: v.to(device) for k, v in extra.items()}
    with torch.inference_mode():
        out = predictor.outputs(image, **extra)
    return out["output"].float(), out["pooled"].float()


def _finished(path: Path, fingerprint: dict[str, Any]) -> bool:
    expected = json.loads(json.dumps(fingerprint))
    if path.suffix == ".tif":
        return GeoTiffSink.finished(path, fingerprint)
    return read_fingerprint(path) == expected


# ---------------------------------------------------------------------------- scenes
def embed_scene(
    model: Any,
    input_path: str | Path,
    output_dir: str | Path,
    *,
    output: str = "pooled",
    patch_rows: bool = False,
    bands: list[int] | None = None,
    extra_inputs: dict[str, torch.Tensor] | None = None,
    tile_size: int | tuple[int, int] = 224,
    overlap: int | tuple[int, int] | None = None,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    num_workers: int = 2,
    resume: bool = False,
    block_size: int = 64,
    input_nodata: float | None = None,
    date_pattern: str | None = None,
    model_id: str | None = None,
    checkpoint_seconds: float = 30.0,
    progress: bool = True,
) -> dict[str, Path]:
    """Embed one scene tile by tile, streamed (see the module docstring for the outputs).

    Args:
        model: An :class:`~geofm.tasks.embedding.EmbeddingTask`, a ``Predictor`` or an
            ``Embedder``.
        input_path: The scene (any raster rasterio reads).
        output_dir: Where ``<scene>_tiles.parquet``, ``<scene>_emb.tif`` and
            ``<scene>_patches.parquet`` go.
        output: ``"pooled"`` (tile rows), ``"grid"`` (the GeoTIFF) or ``"both"``.
        patch_rows: With a grid: also one GeoParquet row per patch.
        bands: 1-based band indexes read, in model order; all by default.
        extra_inputs: The scene's model inputs, each ``(1, ...)``, repeated for every tile.
        tile_size: Tile side or ``(h, w)``: a multiple of the feature stride.
        overlap: Pixels shared by neighbouring tiles, a multiple of the feature stride;
            0 by default.
        batch_size: Tiles per forward pass.
        device: Where preprocessing and the model run.
        num_workers: Reader threads.
        resume: Continue an interrupted run with the same settings; skip a finished scene.
        block_size: GeoTIFF block side on the patch grid (multiple of 16); rows are made
            durable a block row at a time.
        input_nodata: A raw value read as nodata in every band.
        date_pattern: How the date is read from the file name (default patterns, then tags).
        model_id: Identifies the model for resume instead of hashing its weights.
        checkpoint_seconds: Least time between resume checkpoints of the GeoTIFF.
        progress: Show a progress bar.

    Returns:
        ``{"tiles": ..., "grid": ..., "patches": ...}``: the files written, by kind.
    """
    _check_outputs(output)
    if patch_rows and output == "pooled":
        raise ValueError(
            "patch_rows writes one row per patch of the grid: use output 'grid' or 'both'."
        )
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be at least 1.")
    if block_size < 16 or block_size % 16:
        raise ValueError(
            f"block_size={block_size} must be a positive multiple of 16 (GeoTIFF tiles)."
        )
    predictor = as_embedding_predictor(model)
    device = torch.device(device)
    for module in (predictor.model, predictor.preprocess):
        if isinstance(module, nn.Module):
            module.to(device).eval()
    input_path, output_dir = Path(input_path), Path(output_dir)
    stem = input_path.stem
    paths = {}
    if output in ("pooled", "both"):
        paths["tiles"] = output_dir / f"{stem}_tiles.parquet"
    if output in ("grid", "both"):
        paths["grid"] = output_dir / f"{stem}_emb.tif"
        if patch_rows:
            paths["patches"] = output_dir / f"{stem}_patches.parquet"
    tile = resolve_tile_args(tile_size, overlap if overlap is not None else 0, None)[0]
    extra = {k: v.to(device) for k, v in (extra_inputs or {}).items()}
    source = RasterTileSource(input_path, bands, num_workers, None, tile[0], nodata=input_nodata)
    with source:
        check_bands(predictor, input_path, len(source.bands), bands)
        patch = feature_stride(predictor, len(source.bands), tile, device, extra)
        grid = plan_patch_tiles(source.height, source.width, tile_size, overlap, patch)
        source.set_grid(grid)
        fingerprint = {
            "input": _file_identity(source.path),
            "bands": source.bands,
            "model": model_id or model_fingerprint(predictor),
            "extra_inputs": {k: v.tolist() for k, v in (extra_inputs or {}).items()},
            "tile_size": grid.tile_size,
            "stride": grid.stride,
            "output": output,
            "patch_rows": patch_rows,
            "block_size": block_size,
            "input_nodata": repr(input_nodata),
            "date_pattern": date_pattern,
        }
        if resume and all(_finished(p, fingerprint) for p in paths.values()):
            log.info("Embeddings of %s are complete with these settings; skipping.", input_path)
            return paths
        run = _SceneEmbedding(predictor, source, grid, patch, paths, fingerprint, extra, device)
        return run.run(
            resume=resume,
            batch_size=batch_size,
            block_size=block_size,
            date=file_date(input_path, date_pattern),
            checkpoint_seconds=checkpoint_seconds,
            progress=progress,
        )


class _SceneEmbedding:
    """The state of one scene's streamed embedding (see :func:`embed_scene`)."""

    def __init__(
        self,
        predictor: Predictor,
        source: RasterTileSource,
        grid: TileGrid,
        patch: tuple[int, int],
        paths: dict[str, Path],
        fingerprint: dict[str, Any],
        extra: dict[str, torch.Tensor],
        device: torch.device,
    ):
        self.predictor, self.source, self.grid, self.patch = predictor, source, grid, patch
        self.paths, self.fingerprint, self.extra, self.device = paths, fingerprint, extra, device
        self.cells = (-(-grid.height // patch[0]), -(-grid.width // patch[1]))
        self.own_rows = owned_ranges(grid.row_offsets, grid.tile_size[0], patch[0], self.cells[0])
        self.own_cols = owned_ranges(grid.col_offsets, grid.tile_size[1], patch[1], self.cells[1])
        self.transform = source.transform
        self.patch_transform = source.transform @ source.transform.scale(patch[1], patch[0])
        # GeoParquet rows of finished rows of tiles, kept for resume until the files are merged.
        self.parts = next(iter(paths.values())).with_name(f".{source.path.stem}_embed.parts")
        self.sink: GeoTiffSink | None = None
        self._sink_open = False
        self.locks: list[OutputLock] = []

    # ------------------------------------------------------------------ resume state
    def _parts_done(self, resume: bool) -> int:
        """Rows of tiles whose GeoParquet parts a matching earlier run finished (0: start over)."""
        kinds = [k for k in ("tiles", "patches") if k in self.paths]
        state_file = self.parts / "state.json"
        state = None
        if resume and state_file.is_file():
            try:
                state = json.loads(state_file.read_text())
            except (OSError, ValueError):
                state = None
        if state != json.loads(json.dumps(self.fingerprint)):
            shutil.rmtree(self.parts, ignore_errors=True)
            self.parts.mkdir(parents=True, exist_ok=True)
            scratch = state_file.with_name("state.json.tmp")
            scratch.write_text(json.dumps(self.fingerprint))
            scratch.replace(state_file)
            return 0
        done = 0
        while done < self.grid.shape[0] and all(self._part(k, done).is_file() for k in kinds):
            done += 1
        return done

    def _part(self, kind: str, grid_row: int) -> Path:
        return self.parts / f"{kind}_{grid_row:06d}.parquet"

    # ------------------------------------------------------------------ run
    def run(
        self,
        *,
        resume: bool,
        batch_size: int,
        block_size: int,
        date: dt.date | None,
        checkpoint_seconds: float,
        progress: bool,
    ) -> dict[str, Path]:
        """Embed every row of tiles not already done, then finish the outputs."""
        from tqdm.auto import tqdm

        try:
            for kind in ("tiles", "patches"):
                if kind in self.paths:  # one writer per output: a second run stops here
                    lock = OutputLock(self.paths[kind])
                    lock.acquire()
                    self.locks.append(lock)
            rows_total = self.grid.shape[0]
            rows_parts = "tiles" in self.paths or "patches" in self.paths
            start = self._parts_done(resume) if rows_parts else rows_total
            if "grid" in self.paths:
                self.sink = GeoTiffSink(
                    self.paths["grid"], self.cells[1], self.cells[0], self.fingerprint,
                    resume=resume, checkpoint_seconds=checkpoint_seconds,
                )
                done = self.sink.rows_done
                tif_row = next(
                    (i for i, (_, stop) in enumerate(self.own_rows) if stop > done), rows_total
                )
                start = min(start, tif_row)
            self.date, self.block = date, block_size
            self.tif_next = self.sink.rows_done if self.sink is not None else 0
            tiles = list(self.grid)
            cols = self.grid.shape[1]
            first = start * cols
            prefetch = batch_size + 2 * max(self.source.num_workers, 1)
            pending: deque = deque()
            bar = tqdm(total=len(tiles), initial=first, unit="tile", desc=self.source.path.name,
                       disable=not progress, dynamic_ncols=True)
            started = time.perf_counter()
            try:
                next_submit, batch = first, []
                self._row_state: dict[str, Any] = {}
                for index in range(first, len(tiles)):
                    while next_submit < len(tiles) and len(pending) < prefetch:
                        pending.append(self.source.submit(tiles[next_submit], cols))
                        next_submit += 1
                    batch.append(pending.popleft().result())
                    if len(batch) == batch_size or index == len(tiles) - 1:
                        self._consume(batch)
                        bar.update(len(batch))
                        batch = []
            finally:
                bar.close()
                for future in pending:
                    future.cancel()
            seconds = time.perf_counter() - started
            log.info("%s: %d tiles in %.1f s.", self.source.path, len(tiles) - first, seconds)
            return self._finish()
        finally:
            if self.sink is not None:
                self.sink.close()  # after finish: only releases the lock
            for lock in self.locks:
                lock.release()

    def _consume(self, batch: list[TileData]) -> None:
        image = torch.from_numpy(np.stack([t.image for t in batch])).to(self.device)
        grids, pooled = _run(self.predictor, image, self.extra)
        grids, pooled = grids.cpu().numpy(), pooled.cpu().numpy()
        for data, values, vector in zip(batch, grids, pooled, strict=True):
            self._add(data, values, vector)

    def _add(self, data: TileData, values: np.ndarray, vector: np.ndarray) -> None:
        tile = data.tile
        state = self._row_state
        if not state:
            r0, r1 = self.own_rows[tile.grid_row]
            state.update(tiles=[], strip=None, valid=np.zeros((r1 - r0, self.cells[1]), dtype=bool))
            if "grid" in self.paths:
                shape = (values.shape[0], r1 - r0, self.cells[1])
                state["strip"] = np.full(shape, np.nan, dtype=np.float32)
        valid = _tile_valid(data, self.grid.height, self.grid.width)
        if valid.any():
            state["tiles"].append((tile, vector))
        if state["strip"] is not None:
            r0, r1 = self.own_rows[tile.grid_row]
            c0, c1 = self.own_cols[tile.grid_col]
            top, left = tile.row // self.patch[0], tile.col // self.patch[1]
            cells = np.s_[r0 - top : r1 - top, c0 - left : c1 - left]
            patch_valid = _patch_valid(valid, self.patch)[cells]
            mine = values[(slice(None), *cells)]
            state["strip"][:, :, c0:c1] = np.where(patch_valid, mine, np.nan)
            state["valid"][:, c0:c1] = patch_valid
        if tile.grid_col == self.grid.shape[1] - 1:
            self._end_row(tile.grid_row, vector.shape[0])

    def _end_row(self, grid_row: int, dim: int) -> None:
        """Write a finished row of tiles: its GeoParquet parts, then its GeoTIFF rows."""
        state, self._row_state = self._row_state, {}
        crs, name = self.source.crs, str(self.source.path)
        if "tiles" in self.paths:
            part_path = self._part("tiles", grid_row)
            with GeoParquetWriter(part_path, crs, dim, grid_columns=True) as part:
                if state["tiles"]:
                    size = (self.grid.height, self.grid.width)
                    inside = [t.inside(*size) for t, _ in state["tiles"]]
                    r0, r1, c0, c1 = (np.array(v) for v in zip(*inside, strict=True))
                    part.write(
                        footprints(self.transform, r0, c0, r1 - r0, c1 - c0),
                        np.stack([v for _, v in state["tiles"]]),
                        name, self.date,
                        np.array([t.row for t, _ in state["tiles"]]),
                        np.array([t.col for t, _ in state["tiles"]]),
                    )
        top = self.own_rows[grid_row][0]
        if "patches" in self.paths:
            rows, cols = np.nonzero(state["valid"])
            part_path = self._part("patches", grid_row)
            with GeoParquetWriter(part_path, crs, dim, grid_columns=True) as part:
                if rows.size:
                    ones = np.ones_like(rows)
                    part.write(
                        footprints(self.patch_transform, rows + top, cols, ones, ones),
                        state["strip"][:, rows, cols].T,
                        name, self.date, rows + top, cols,
                    )
        if self.sink is not None:
            strip = state["strip"]
            if not self._sink_open:  # the first rows: open with the model's channel count
                self._sink_open = True
                self.sink.open(geotiff_profile(
                    self.cells[1], self.cells[0], strip.shape[0], np.dtype("float32"), crs,
                    self.patch_transform, float("nan"), block=self.block,
                ))
            skip = self.tif_next - top  # rows a resumed GeoTIFF already holds
            if skip < strip.shape[1]:
                self.sink.write(self.tif_next, strip[:, max(skip, 0):])
                self.tif_next = top + strip.shape[1]

    def _finish(self) -> dict[str, Path]:
        """Merge the parts into the final GeoParquet files and finish the GeoTIFF."""
        crs, rows = self.source.crs, self.grid.shape[0]
        for kind in ("tiles", "patches"):
            if kind not in self.paths:
                continue
            dim = _part_dim(self._part(kind, 0))
            out = GeoParquetWriter(
                self.paths[kind], crs, dim, grid_columns=True, fingerprint=self.fingerprint
            )
            with out:
                for grid_row in range(rows):
                    out.append_file(self._part(kind, grid_row))
        if self.sink is not None:
            self.sink.finish()
        shutil.rmtree(self.parts, ignore_errors=True)
        return dict(self.paths)


def _part_dim(part: Path) -> int:
    from geofm.inference.geoparquet import vector_modules

    _, pq, _ = vector_modules()
    return int(pq.read_schema(part).field("embedding").type.list_size)


def embed_scenes(
    model: Any,
    inputs: str | Path | Sequence[str | Path],
    output_dir: str | Path,
    *,
    rank: int = 0,
    world_size: int = 1,
    scene_inputs: Callable[[Path], dict[str, torch.Tensor]] | None = None,
    **kwargs: Any,
) -> list[dict[str, Path]]:
    """Embed several scenes (a folder, one file or a list) with :func:`embed_scene`, this
    process's share of them under data parallelism.

    Args:
        model: As in :func:`embed_scene`.
        inputs: A folder of scenes, one scene, or a list of scenes.
        output_dir: Where each scene's outputs go.
        rank: This process's rank; scene ``i`` (in sorted order) goes to rank ``i % world_size``.
        world_size: Number of processes sharing the scenes.
        scene_inputs: A scene's ``extra_inputs`` (its dates and location) from its path.
        **kwargs: Settings of :func:`embed_scene`.

    Returns:
        The outputs of this rank's scenes.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank={rank} and world_size={world_size}: need 0 <= rank < world_size.")
    scenes = list_scenes(inputs)
    stems = [s.stem for s in scenes]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise ValueError(
            f"Scenes {duplicates} share a name; their outputs in {output_dir} would collide."
        )
    predictor = as_embedding_predictor(model)
    if kwargs.get("model_id") is None and scenes:
        kwargs["model_id"] = model_fingerprint(predictor)  # hash the weights once
    return [
        embed_scene(
            predictor, scene, output_dir,
            extra_inputs=scene_inputs(scene) if scene_inputs is not None else None,
            **kwargs,
        )
        for scene in scenes[rank::world_size]
    ]
