"""Embeddings of chips (GeoParquet rows, grid GeoTIFFs) and the helpers scenes share.

**Chips** (:func:`embed_chips`): every file is one input, read whole; one GeoParquet row per
chip (its footprint in its CRS, the pooled vector, the file, its date). GeoParquet holds one
CRS per geometry column, so chips in several CRSs go to one file per CRS,
``<name>_EPSG_<code>.parquet`` (never reprojected: the footprints stay exact). With a grid
output, each chip also gets ``<chip>_emb.tif`` (``D`` bands on its patch grid) and
``patches.parquet`` rows (one per patch, ``row``/``col`` on the patch grid).

**Scenes**, streamed tile by tile on the patch grid, are in
:mod:`geofm.inference.embedding_scenes`; both share the model helpers here.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geofm.inference.chip_rows import ChipRows, crs_tag, patch_valid
from geofm.inference.geoparquet import read_fingerprint
from geofm.inference.predictor import Predictor, repeat_extra
from geofm.inference.reader import RasterTileSource, TileData
from geofm.inference.streaming import _file_identity, list_scenes, model_fingerprint
from geofm.inference.tiling import Tile
from geofm.inference.writer import GeoTiffSink

__all__ = [
    "EMBEDDING_OUTPUTS",
    "as_embedding_predictor",
    "embed_chips",
    "expected_bands",
    "feature_stride",
    "file_date",
    "file_inputs",
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
                # An Affine unpacks to 9 values; location_coords takes the 6 GDAL-order ones.
                affine = tuple(src.transform)[:6]
                location = location_coords(src.crs, affine, src.height, src.width)
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
    """``(h, w)`` bool: the whole patches of ``valid`` with at least one valid pixel."""
    return patch_valid(valid, (valid.shape[0] // patch[0], valid.shape[1] // patch[1]), patch)


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
    pending: list[tuple[Path, Any, TileData, dict[str, torch.Tensor]]] = []

    def flush() -> None:
        if not pending:
            return
        image = torch.from_numpy(np.stack([d.image for _, _, d, _ in pending])).to(device)
        # Each chip's own (1, ...) inputs, stacked (a batch's chips have the same keys).
        extra = {k: torch.cat([c[k] for *_, c in pending]).to(device) for k in pending[0][3]}
        grids, vectors = _run(predictor, image, extra)
        grids, vectors = grids.cpu().numpy(), vectors.cpu().numpy()
        for i, (path, header, data, _) in enumerate(pending):
            crs, transform, height, width, _ = header
            rows.add(path, crs, transform, height, width, vectors[i], grids[i], data.valid,
                     file_date(path, date_pattern))
        pending.clear()

    try:
        for path, header in zip(files, headers, strict=True):
            height, width = header[2], header[3]
            with RasterTileSource(path, bands, num_workers=0, cache_rows=height) as source:
                data = source.read(Tile(0, 0, 0, 0, 0, height, width))
            extra = chip_inputs(path) if chip_inputs is not None else {}
            # A chip without a date (or location) must not share a batch with chips that have
            # one: their inputs could not be stacked, or would be dropped.
            other = pending and (
                pending[0][2].image.shape != data.image.shape or set(pending[0][3]) != set(extra)
            )
            if other or len(pending) == batch_size:
                flush()
            pending.append((path, header, data, extra))
        flush()
        return rows.finish()
    finally:
        rows.close()


def _finished(path: Path, fingerprint: dict[str, Any]) -> bool:
    expected = json.loads(json.dumps(fingerprint))
    if path.suffix == ".tif":
        return GeoTiffSink.finished(path, fingerprint)
    return read_fingerprint(path) == expected
