"""Embeddings of whole scenes, streamed: GeoParquet rows and a GeoTIFF on the patch grid.

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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geofm.inference.embedding import (
    _check_outputs,
    _finished,
    _patch_valid,
    _run,
    _tile_valid,
    as_embedding_predictor,
    check_bands,
    feature_stride,
    file_date,
)
from geofm.inference.geoparquet import GeoParquetWriter, footprints
from geofm.inference.predictor import Predictor
from geofm.inference.reader import RasterTileSource, TileData
from geofm.inference.streaming import (
    _file_identity,
    list_scenes,
    model_fingerprint,
    read_batches,
)
from geofm.inference.tiling import TileGrid, resolve_tile_args
from geofm.inference.writer import GeoTiffSink, geotiff_profile
from geofm.locks import OutputLock

__all__ = ["embed_scene", "embed_scenes", "owned_ranges", "plan_patch_tiles"]

log = logging.getLogger(__name__)


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
            bar = tqdm(total=len(tiles), initial=first, unit="tile", desc=self.source.path.name,
                       disable=not progress, dynamic_ncols=True)
            started = time.perf_counter()
            self._row_state: dict[str, Any] = {}
            batches = read_batches(self.source, tiles, first, cols, batch_size)
            try:
                for batch in batches:
                    self._consume(batch)
                    bar.update(len(batch))
            finally:
                batches.close()  # cancels the reads still in flight
                bar.close()
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
