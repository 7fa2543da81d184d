"""Temporary output, resume after an interruption, and several scenes split across ranks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geofm.inference.streaming import list_scenes, model_fingerprint, predict_scene, predict_scenes
from geofm.inference.tiling import plan_tiles
from tests.inference.helpers import PositionModel, preprocess, write_raster

SETTINGS = {
    "tile_size": 32,
    "overlap": 8,
    "block_size": 16,
    "batch_size": 4,
    "progress": False,
    "preprocess": preprocess,
    "checkpoint_seconds": 0,
}


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def interrupted_run(tmp_path: Path, model: PositionModel, **kwargs) -> Path:
    """Run until the model fails on its 13th call; returns the final path (which must not exist)."""
    out = tmp_path / "out.tif"
    model.fail_after = 12
    with pytest.raises(RuntimeError, match="simulated failure"):
        predict_scene(model, tmp_path / "scene.tif", out, **{**SETTINGS, **kwargs})
    model.fail_after, model.tiles_seen = None, 0
    return out


def test_failed_run_leaves_no_final_file_and_resume_completes_it(tmp_path: Path) -> None:
    write_raster(tmp_path / "scene.tif", 170, 300)
    model = PositionModel()
    out = interrupted_run(tmp_path, model)
    assert not out.exists()
    sidecar = tmp_path / ".out.tif.partial.json"
    state = json.loads(sidecar.read_text())
    partial = tmp_path / state["partial"]  # named after the process that wrote it
    assert partial.is_file() and not (tmp_path / "out.tif.lock").exists()
    rows_done = state["rows_done"]
    assert 0 < rows_done < 170 and rows_done % 16 == 0

    predict_scene(model, tmp_path / "scene.tif", out, resume=True, **SETTINGS)
    resumed_tiles = model.tiles_seen
    model.tiles_seen = 0
    fresh = predict_scene(model, tmp_path / "scene.tif", tmp_path / "fresh.tif", **SETTINGS)
    assert 0 < resumed_tiles < model.tiles_seen == len(plan_tiles(170, 300, 32, overlap=8))
    np.testing.assert_array_equal(read(out), read(fresh))
    assert not sidecar.exists() and not list(tmp_path.glob(".out.tif*partial"))
    assert not (tmp_path / "out.tif.lock").exists()

    model.tiles_seen = 0  # finished with the same settings: nothing to do
    predict_scene(model, tmp_path / "scene.tif", out, resume=True, **SETTINGS)
    assert model.tiles_seen == 0


def test_resume_with_other_settings_or_weights_starts_over(tmp_path: Path) -> None:
    write_raster(tmp_path / "scene.tif", 170, 300)
    model = PositionModel()
    out = interrupted_run(tmp_path, model)
    all_tiles = len(plan_tiles(170, 300, 32, overlap=4))
    predict_scene(model, tmp_path / "scene.tif", out, resume=True, **{**SETTINGS, "overlap": 4})
    assert model.tiles_seen == all_tiles
    fresh = predict_scene(
        model, tmp_path / "scene.tif", tmp_path / "fresh.tif", **{**SETTINGS, "overlap": 4}
    )
    np.testing.assert_array_equal(read(out), read(fresh))

    other = PositionModel(seed=5)  # same finished file, other weights: computed again
    predict_scene(other, tmp_path / "scene.tif", out, resume=True, **{**SETTINGS, "overlap": 4})
    assert other.tiles_seen == all_tiles


def test_without_resume_a_partial_output_is_discarded(tmp_path: Path) -> None:
    write_raster(tmp_path / "scene.tif", 170, 300)
    model = PositionModel()
    out = interrupted_run(tmp_path, model, output="probabilities")
    predict_scene(model, tmp_path / "scene.tif", out, output="probabilities", **SETTINGS)
    assert model.tiles_seen == len(plan_tiles(170, 300, 32, overlap=8))
    assert not (tmp_path / ".out.tif.partial.json").exists()


def test_scenes_are_split_across_ranks(tmp_path: Path) -> None:
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    for i, name in enumerate(["c.tif", "a.tif", "b.tiff"]):
        write_raster(scenes / name, 20, 24, seed=i)
    (scenes / "notes.txt").write_text("not a scene")
    assert [p.name for p in list_scenes(scenes)] == ["a.tif", "b.tiff", "c.tif"]

    model = PositionModel()
    rank0 = predict_scenes(model, scenes, tmp_path / "out", rank=0, world_size=2, **SETTINGS)
    rank1 = predict_scenes(model, scenes, tmp_path / "out", rank=1, world_size=2, **SETTINGS)
    assert [p.name for p in rank0] == ["a_pred.tif", "c_pred.tif"]
    assert [p.name for p in rank1] == ["b_pred.tif"]
    assert all(p.is_file() for p in rank0 + rank1)

    listed = predict_scenes(model, [scenes / "b.tiff"], tmp_path / "single", suffix="", **SETTINGS)
    np.testing.assert_array_equal(read(listed[0]), read(rank1[0]))

    with pytest.raises(ValueError, match="rank=2"):
        predict_scenes(model, scenes, tmp_path / "out", rank=2, world_size=2)
    with pytest.raises(FileNotFoundError, match=r"No \.tif"):
        predict_scenes(model, tmp_path / "out" / "..", tmp_path / "x")
    with pytest.raises(FileNotFoundError, match=r"nothere\.tif"):
        list_scenes([scenes / "nothere.tif"])


def test_fingerprint_sees_the_weights_behind_a_wrapping_function() -> None:
    def wrap(module: PositionModel):
        def model(tiles):
            return module(tiles)

        return model

    same = model_fingerprint(wrap(PositionModel(seed=0)))
    assert same == model_fingerprint(wrap(PositionModel(seed=0)))
    assert same != model_fingerprint(wrap(PositionModel(seed=1)))
    assert model_fingerprint(PositionModel(seed=0)) != model_fingerprint(PositionModel(seed=1))
    bound = PositionModel(seed=2).forward
    assert model_fingerprint(bound) != model_fingerprint(PositionModel(seed=3).forward)
