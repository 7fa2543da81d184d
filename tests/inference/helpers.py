"""Helpers of the inference tests: small georeferenced rasters and deterministic models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import torch
from affine import Affine
from torch import nn

CRS = "EPSG:32633"


def write_raster(
    path: Path,
    height: int,
    width: int,
    bands: int = 3,
    seed: int = 0,
    holes: bool = True,
    nodata: int | None = 0,
    block: int = 16,
) -> np.ndarray:
    """Write a uint16 GeoTIFF with a real CRS/transform; returns its ``(bands, H, W)`` data.

    With ``holes``, a rectangle where every band is nodata and a patch where only the first
    band is (which stays valid).
    """
    rng = np.random.default_rng(seed)
    data = rng.integers(1, 1000, (bands, height, width)).astype(np.uint16)
    if holes:
        data[
            :,
            height // 4 : height // 4 + max(2, height // 5),
            width // 3 : width // 3 + max(2, width // 6),
        ] = 0
        data[0, height // 2 : height // 2 + 3, width // 2 : width // 2 + 3] = 0
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": bands,
        "dtype": "uint16",
        "crs": CRS,
        "transform": Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_200_000.0),
        "nodata": nodata,
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return data


class PositionModel(nn.Module):
    """A fixed 3x3 conv plus a term that depends on where a pixel sits in its tile.

    Tiles placed or blended at the wrong offset change the result, so comparisons with the
    in-memory computation catch offset and blending bugs. ``fail_after`` (not part of the
    weights, so resume still recognises the model) makes the n-th call raise.
    """

    def __init__(self, in_chans: int = 3, classes: int = 4, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(in_chans, classes, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=gen))
            self.conv.bias.copy_(torch.randn(classes, generator=gen))
        self.calls = 0
        self.tiles_seen = 0
        self.fail_after: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.tiles_seen += x.shape[0]
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("simulated failure in the model")
        h, w = x.shape[-2:]
        rows = torch.arange(h, dtype=x.dtype, device=x.device)[:, None] / h
        cols = torch.arange(w, dtype=x.dtype, device=x.device)[None, :] / w
        k = torch.arange(1, self.conv.out_channels + 1, dtype=x.dtype, device=x.device)
        position = k[:, None, None] * (rows - cols)
        return self.conv(x) + position


def preprocess(x: torch.Tensor) -> torch.Tensor:
    """Scale raw uint16-range values to about [0, 1]; nodata (read as NaN) becomes 0."""
    return torch.nan_to_num(x, nan=0.0) / 1000.0
