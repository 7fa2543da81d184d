"""Embeddings of the real imagery in ../shared/data: an HLS chip and a Landsat 8 scene."""

from __future__ import annotations

import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.windows
import torch

from geofm.inference.embedding import embed_chips
from geofm.inference.embedding_scenes import embed_scene, plan_patch_tiles
from geofm.tasks.embedding import EmbeddingTask


REPO = Path(__file__).resolve().parents[2]
# ../shared beside the checkout, or one level up (a worktree in a folder of worktrees).
_CANDIDATES = [p / "shared" / "data" for p in (REPO.parent, REPO.parent.parent)]
DATA = next((p for p in _CANDIDATES if p.is_dir()), _CANDIDATES[0])
HLS = DATA / "hls_chip" / "hls_chip_10band.tif"
LANDSAT = DATA / "landsat8_scene" / "LC08_L1TP_224078_20200518_20200518_01_RT.TIF"


def _need(path: Path) -> None:
    if not path.is_file():
        pytest.fail(f"real data not found at {path}: check out ../shared beside the repository")


def test_hls_chip_with_prithvi_tiny_six_of_ten_bands(tmp_path):
    _need(HLS)
    torch.manual_seed(0)
    task = EmbeddingTask(model_args={"backbone": "prithvi_eo_tiny"}, output="both")
    task.configure_preprocess(None)
    embed_chips(task, HLS, tmp_path, output="both", bands=[2, 3, 4, 5, 6, 7])
    rows = gpd.read_parquet(tmp_path / "embeddings.parquet")
    with rasterio.open(HLS) as src:
        bounds, crs, transform = tuple(src.bounds), src.crs, src.transform
    assert len(rows) == 1 and rows.crs.to_epsg() == crs.to_epsg() == 32614
    assert rows.geometry[0].bounds == pytest.approx(bounds)
    vector = np.asarray(rows["embedding"][0])
    assert vector.shape == (256,) and np.isfinite(vector).all()
    with rasterio.open(tmp_path / f"{HLS.stem}_emb.tif") as grid:
        assert (grid.count, grid.height, grid.width) == (256, 14, 14)
        assert grid.transform == transform @ transform.scale(16)
        values = grid.read()
    # The pooled vector is the mean of the patch tokens of the whole chip.
    np.testing.assert_allclose(np.nanmean(values, axis=(1, 2)), vector, rtol=1e-4, atol=1e-4)


def test_landsat_scene_streamed_with_resnet18(tmp_path):
    _need(LANDSAT)
    torch.manual_seed(0)
    # Stage 2 of ResNet-18 (stride 8, 128 channels) keeps the test short on two CPU cores.
    task = EmbeddingTask(
        model_args={
            "backbone": "timm_resnet18", "backbone_in_chans": 3, "backbone_out_indices": [2]
        },
        output="both",
    )
    task.configure_preprocess(None)
    # A 640 x 600 crop of the scene (same name, so the same date) keeps the run to seconds;
    # benchmarks/bench_embed.py streams the whole scene.
    scene = tmp_path / LANDSAT.name
    with rasterio.open(LANDSAT) as src:
        window = rasterio.windows.Window(700, 600, 600, 640)
        profile = {**src.profile, "width": 600, "height": 640}
        profile["transform"] = src.window_transform(window)
        with rasterio.open(scene, "w", **profile) as dst:
            dst.write(src.read(window=window))
    out = embed_scene(task, scene, tmp_path / "out", output="both", tile_size=256, overlap=64,
                      batch_size=4, num_workers=2, progress=False)
    with rasterio.open(scene) as src:
        height, width, crs = src.height, src.width, src.crs
        transform, bounds = src.transform, src.bounds
    with rasterio.open(out["grid"]) as grid:
        cells = (math.ceil(height / 8), math.ceil(width / 8))
        assert (grid.count, grid.height, grid.width) == (128, *cells)
        assert grid.crs == crs and grid.transform == transform @ transform.scale(8)
        sample = grid.read(1)
    assert np.isfinite(sample).mean() > 0.5
    tiles = gpd.read_parquet(out["tiles"])
    plan = plan_patch_tiles(height, width, 256, 64, (8, 8))
    assert 0 < len(tiles) <= len(plan)
    assert tiles.crs.to_epsg() == crs.to_epsg()
    left, bottom, right, top = tiles.total_bounds
    assert left >= bounds.left - 1e-6 and right <= bounds.right + 1e-6
    assert bottom >= bounds.bottom - 1e-6 and top <= bounds.top + 1e-6
    assert str(tiles["date"].iloc[0]) == "2020-05-18"
