"""Tiled forward pass over images already in memory (validation, test, small scenes)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch

from geofm.inference.predictor import output_tensor
from geofm.inference.tiling import (
    Tile,
    TileGrid,
    WindowKind,
    blend_weights,
    plan_tiles,
    reflect_indices,
)

__all__ = ["tiled_forward", "weigh_tiles"]

log = logging.getLogger(__name__)


def weigh_tiles(
    outputs: torch.Tensor,
    weights: torch.Tensor,
    tile_size: tuple[int, int],
    inplace: bool = False,
) -> torch.Tensor:
    """Tile outputs multiplied by the blend weights, in float32.

    Args:
        outputs: ``(N, K, h, w)`` model outputs for ``N`` tiles.
        weights: ``(h, w)`` float32 blend weights on the outputs' device.
        tile_size: The planned ``(h, w)``, checked against the outputs.
        inplace: Multiply float32 ``outputs`` in place (same values, no new tensor).

    Returns:
        ``(N, K, h, w)`` float32.
    """
    if tuple(outputs.shape[-2:]) != tuple(tile_size):
        raise ValueError(
            f"The model returned tiles of {tuple(outputs.shape[-2:])} pixels for inputs of "
            f"{tuple(tile_size)}; tiled inference needs outputs at the input's resolution "
            "(upsample inside the model)."
        )
    if inplace and outputs.dtype == torch.float32:
        return outputs.mul_(weights)
    return outputs.float() * weights


def _gather_tile(image: torch.Tensor, row: int, col: int, size: tuple[int, int]) -> torch.Tensor:
    height, width = image.shape[-2:]
    if row >= 0 and col >= 0 and row + size[0] <= height and col + size[1] <= width:
        return image[..., row : row + size[0], col : col + size[1]]
    rows = torch.from_numpy(reflect_indices(row, size[0], height)).to(image.device)
    cols = torch.from_numpy(reflect_indices(col, size[1], width)).to(image.device)
    return image.index_select(-2, rows).index_select(-1, cols)


def _tile_batch(
    image: torch.Tensor | Mapping[str, torch.Tensor],
    chunk: list[tuple[Tile, int]],
    size: tuple[int, int],
) -> torch.Tensor | dict[str, torch.Tensor]:
    """The tiles of ``chunk`` (tile, image index) stacked; a dict image gives a dict of stacks."""
    if isinstance(image, Mapping):
        return {key: _tile_batch(value, chunk, size) for key, value in image.items()}
    return torch.stack([_gather_tile(image[b], t.row, t.col, size) for t, b in chunk])


def _reference(image: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The tensor that gives batch size, grid and device: the image, or a dict's first modality,
    once every modality is checked to share them."""
    tensors = dict(image) if isinstance(image, Mapping) else {"image": image}
    if not tensors:
        raise ValueError("tiled_forward got an empty dict of modalities.")
    for key, value in tensors.items():
        if value.ndim < 4:
            raise ValueError(
                f"tiled_forward needs a batch (B, C, H, W) or (B, C, T, H, W); got {key} of shape "
                f"{tuple(value.shape)} (add a batch axis with [None])."
            )
    first_key, first = next(iter(tensors.items()))
    for key, value in tensors.items():
        if value.shape[0] != first.shape[0] or value.shape[-2:] != first.shape[-2:]:
            raise ValueError(
                f"tiled_forward cuts every modality on one grid, but {key} is "
                f"{tuple(value.shape)} and {first_key} is {tuple(first.shape)}: give the "
                "modalities the same batch size, height and width."
            )
    return first


def tiled_forward(
    fn: Callable[..., Any],
    image: torch.Tensor | Mapping[str, torch.Tensor],
    tile_size: int | tuple[int, int],
    overlap: int | tuple[int, int] | None = None,
    stride: int | tuple[int, int] | None = None,
    *,
    extra: Mapping[str, torch.Tensor] | None = None,
    batch_size: int = 8,
    window: WindowKind = "hann",
    margin: int = 0,
) -> torch.Tensor:
    """Run ``fn`` over overlapping tiles of ``image`` and blend the outputs.

    Tiles follow :func:`~geofm.inference.tiling.plan_tiles` (borders padded by reflection),
    outputs are weighted by the separable blend window, summed in plan order (so the result is
    bitwise reproducible) and divided by the summed weights. The streaming engine computes
    the same thing scene by scene without holding the scene in memory.

    Args:
        fn: Maps ``(N, C, h, w)`` (or ``(N, C, T, h, w)``) tiles, and the tiles' ``extra``
            inputs as keywords, to ``(N, K, h, w)`` outputs (a
            :class:`~geofm.inference.predictor.Predictor` gives probabilities or values; a
            ``ModelOutput`` is accepted).
        image: ``(B, C, H, W)`` or ``(B, C, T, H, W)``; any size, also smaller than a tile. Or a
            multimodal ``{modality: (B, C_m, H, W)}``, every modality on the same grid: each
            tile cuts every modality alike and ``fn`` receives a dict of tiles.
        tile_size: Tile side or ``(h, w)``.
        overlap: Pixels shared by neighbouring tiles (default ``tile_size // 8``).
        stride: Step between tiles; give overlap or stride, not both.
        extra: Per-image inputs with a leading ``B`` axis (``temporal_coords`` ``(B, T, 2)``,
            ``location_coords`` ``(B, 2)``); each tile gets its image's row.
        batch_size: Tiles per call of ``fn``.
        window: Blend window, ``"hann"`` or ``"uniform"``.
        margin: Pixels of each tile edge whose outputs count only where no tile's inside
            covers the pixel (TerraTorch's ``delta``; see
            :func:`~geofm.inference.tiling.blend_window`). The streaming route has no margin.

    Returns:
        ``(B, K, H, W)`` float32 blended outputs on ``image``'s device.
    """
    reference = _reference(image)
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be at least 1.")
    height, width = reference.shape[-2:]
    grid = plan_tiles(height, width, tile_size, overlap, stride)
    weights = torch.from_numpy(blend_weights(grid.tile_size, window, margin)).to(reference.device)
    jobs = [(tile, b) for tile in grid for b in range(reference.shape[0])]
    acc: torch.Tensor | None = None
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        batch = _tile_batch(image, chunk, grid.tile_size)
        index = torch.tensor([b for _, b in chunk], device=reference.device)
        inputs = {key: value.index_select(0, index.to(value.device)) for key, value in (extra or {}).items()}
        weighted = weigh_tiles(output_tensor(fn(batch, **inputs)), weights, grid.tile_size)
        if acc is None:
            acc = weighted.new_zeros(reference.shape[0], weighted.shape[1], height, width)
        for (tile, b), out in zip(chunk, weighted, strict=True):
            r0, r1, c0, c1 = tile.inside(height, width)
            acc[b, :, r0:r1, c0:c1] += out[
                :, r0 - tile.row : r1 - tile.row, c0 - tile.col : c1 - tile.col
            ]
    assert acc is not None  # a plan always has at least one tile
    return acc / _weight_total(grid, window, acc.device, margin)


def _weight_total(
    grid: TileGrid, window: WindowKind, device: torch.device, margin: int = 0
) -> torch.Tensor:
    rows, cols = grid.weight_sums(window, margin)
    return torch.from_numpy(rows[:, None] * cols[None, :]).to(device)
