"""``geofm embed -c examples/embed_prithvi_hls.yaml`` on generated 10-band HLS-like files."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
from affine import Affine

from geofm.cli import main


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "embed_prithvi_hls.yaml"
# The example's 300M backbone, swapped for the tiny one: same bands, patch and tokens.
TINY = ["--model.init_args.model_args", "{backbone: prithvi_eo_tiny}"]


def _hls(path: Path, size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    data = rng.uniform(0, 4000, (10, size, size)).astype(np.float32)
    data[1:7, :16, :16] = -9999  # a nodata patch in the model's bands
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 10, "dtype": "float32",
               "crs": "EPSG:32614", "transform": Affine(30.0, 0, 440_000.0, 0, -30.0, 3_160_000.0),
               "nodata": -9999}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def test_embed_example_chips_and_scenes(tmp_path, capsys):
    chips = tmp_path / "chips"
    chips.mkdir()
    for i, day in enumerate(("2021200", "2021216")):
        _hls(chips / f"HLS.S30.T14SMJ.{day}T170000.v2.0.tif", 64, i)
    out = tmp_path / "out"
    assert main(["embed", "-c", str(EXAMPLE), "--input", str(chips), "-o", str(out), *TINY]) == 0
    rows = gpd.read_parquet(out / "embeddings.parquet")
    assert len(rows) == 2 and {len(v) for v in rows["embedding"]} == {256}
    assert [str(d) for d in rows["date"]] == ["2021-07-19", "2021-08-04"]
    patches = gpd.read_parquet(out / "patches.parquet")
    assert len(patches) == 2 * 16 - 2  # each chip's nodata patch left out
    assert "patches.parquet" in capsys.readouterr().out

    scenes = tmp_path / "scenes"
    scenes.mkdir()
    _hls(scenes / "HLS.S30.T14SMJ.2021232T170000.v2.0.tif", 96, 5)
    args = ["embed", "-c", str(EXAMPLE), "--input", str(scenes), "-o", str(out), "--scenes",
            "--tile-size", "64", "--overlap", "32", "--patch-rows", *TINY]
    assert main(args) == 0
    stem = "HLS.S30.T14SMJ.2021232T170000.v2.0"
    tiles = gpd.read_parquet(out / f"{stem}_tiles.parquet")
    assert len(tiles) == 4  # offsets 0 and 32 on each axis
    with rasterio.open(out / f"{stem}_emb.tif") as grid:
        assert (grid.count, grid.height, grid.width) == (256, 6, 6)
    stamp = (out / f"{stem}_emb.tif").stat().st_mtime_ns
    assert main([*args, "--resume"]) == 0  # finished with these settings: skipped
    assert (out / f"{stem}_emb.tif").stat().st_mtime_ns == stamp


def test_embed_errors_are_one_line(tmp_path, capsys):
    assert main(["embed", "-c", str(EXAMPLE), "--input", str(tmp_path / "nope"), *TINY]) == 2
    assert "nope" in capsys.readouterr().err
    chips = tmp_path / "chips"
    chips.mkdir()
    _hls(chips / "a.tif", 32, 0)
    args = ["embed", "-c", str(EXAMPLE), "--input", str(chips), *TINY]
    assert main([*args, "--tile-size", "64"]) == 2
    assert "--tile-size applies to --scenes" in capsys.readouterr().err
    assert main([*args, "--model.init_args.pooling", "median"]) == 2
    assert "median" in capsys.readouterr().err


def test_geofm_predict_writes_what_geofm_embed_writes(tmp_path):
    """The Lightning route (predict_step + the task's writer) and geofm embed agree; no
    --ckpt_path is needed (the backbone holds the weights)."""
    chips = tmp_path / "chips"
    chips.mkdir()
    for i, day in enumerate(("2021200", "2021216")):
        _hls(chips / f"HLS.S30.T14SMJ.{day}T170000.v2.0.tif", 64, i)
    embed = ["embed", "-c", str(EXAMPLE), "--input", str(chips), "-o", str(tmp_path / "embed")]
    assert main([*embed, *TINY]) == 0
    assert main([
        "predict", "-c", str(EXAMPLE), *TINY, "--data.init_args.predict_data_root", str(chips),
        "--predict_output_dir", str(tmp_path / "predict"), "--trainer.accelerator", "cpu",
        "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(tmp_path / "run"),
    ]) == 0
    for name in ("embeddings.parquet", "patches.parquet"):
        a = gpd.read_parquet(tmp_path / "embed" / name)
        b = gpd.read_parquet(tmp_path / "predict" / name)
        assert len(a) == len(b) and a.crs == b.crs
        np.testing.assert_allclose(np.stack(a["embedding"]), np.stack(b["embedding"]), atol=1e-5)
        assert a.geometry.geom_equals(b.geometry).all() and (a["date"] == b["date"]).all()


def test_geofm_predict_streaming_writes_what_geofm_embed_scenes_writes(tmp_path):
    """``geofm predict --streaming`` with an EmbeddingTask streams the predict scenes through
    the same route as ``geofm embed --scenes``: same tile rows, same patch grid."""
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    stem = "HLS.S30.T14SMJ.2021232T170000.v2.0"
    _hls(scenes / f"{stem}.tif", 96, 5)
    assert main([
        "embed", "-c", str(EXAMPLE), "--input", str(scenes), "-o", str(tmp_path / "embed"),
        "--scenes", "--tile-size", "64", "--overlap", "32", *TINY,
    ]) == 0
    assert main([
        "predict", "-c", str(EXAMPLE), *TINY, "--data.init_args.predict_data_root", str(scenes),
        "--predict_output_dir", str(tmp_path / "predict"), "--trainer.accelerator", "cpu",
        "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path / "run"),
        "--streaming", "{tile_size: 64, overlap: 32}",
    ]) == 0
    a = gpd.read_parquet(tmp_path / "embed" / f"{stem}_tiles.parquet")
    b = gpd.read_parquet(tmp_path / "predict" / f"{stem}_tiles.parquet")
    assert len(a) == len(b) == 4 and a.crs == b.crs
    assert a.geometry.geom_equals(b.geometry).all()
    np.testing.assert_allclose(np.stack(a["embedding"]), np.stack(b["embedding"]), atol=1e-5)
    with rasterio.open(tmp_path / "embed" / f"{stem}_emb.tif") as x, \
            rasterio.open(tmp_path / "predict" / f"{stem}_emb.tif") as y:
        assert x.transform == y.transform and x.crs == y.crs and x.count == y.count
        np.testing.assert_allclose(x.read(), y.read(), atol=1e-5)
