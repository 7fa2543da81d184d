"""Embeddings: chips and streamed scenes agree, GeoParquet/GeoTIFF outputs, resume, errors."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from geofm.inference.embedding import embed_chips
from geofm.inference.embedding_scenes import embed_scene, owned_ranges, plan_patch_tiles
from geofm.tasks.embedding import EmbeddingTask


TRANSFORM = Affine(30.0, 0.0, 600_000.0, 0.0, -30.0, 3_300_000.0)


def write(path: Path, data: np.ndarray, crs: str = "EPSG:32614", transform: Affine = TRANSFORM,
          nodata: float | None = None) -> Path:
    profile = {
        "driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
        "dtype": data.dtype.name, "crs": crs, "transform": transform, "nodata": nodata,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def scene_data(bands: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(100, 3000, (bands, height, width)).astype(np.float32)


def vit_task(**kwargs) -> EmbeddingTask:
    torch.manual_seed(0)
    args = {"backbone": "prithvi_eo_tiny", "backbone_img_size": 64}
    task = EmbeddingTask(model_args=args, **kwargs)
    task.configure_preprocess(None)  # the backbone's pretraining statistics
    return task


def cnn_task(out_index: int, **kwargs) -> EmbeddingTask:
    torch.manual_seed(0)
    args = {
        "backbone": "timm_resnet18", "backbone_in_chans": 3, "backbone_out_indices": [out_index]
    }
    task = EmbeddingTask(model_args=args, **kwargs)
    task.configure_preprocess(None)
    return task


def read_grid(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def test_chip_alone_equals_its_tile_in_a_scene_vit(tmp_path):
    """A ViT chip that is exactly one tile of the scene: same pooled vector, same patches
    over the part of the grid that tile owns."""
    data = scene_data(6, 160, 128)
    scene = write(tmp_path / "scene.tif", data)
    task = vit_task(output="both")
    out = embed_scene(task, scene, tmp_path / "out", output="both", tile_size=64, overlap=32,
                      num_workers=0, progress=False, batch_size=3)
    grid = plan_patch_tiles(160, 128, 64, 32, (16, 16))
    assert grid.row_offsets == (0, 32, 64, 96) and grid.col_offsets == (0, 32, 64)
    row, col = 32, 32  # an inner tile
    (tmp_path / "chips").mkdir()
    write(tmp_path / "chips" / "chip.tif", data[:, row:row + 64, col:col + 64],
          transform=TRANSFORM @ Affine.translation(col, row))
    chip_out = embed_chips(
        task, tmp_path / "chips", tmp_path / "chip_out", output="both", batch_size=1
    )
    chip_rows = gpd.read_parquet(tmp_path / "chip_out" / "embeddings.parquet")
    tiles = gpd.read_parquet(out["tiles"])
    assert len(tiles) == len(grid)
    mine = tiles[(tiles["row"] == row) & (tiles["col"] == col)]
    np.testing.assert_allclose(np.stack(mine["embedding"])[0], chip_rows["embedding"][0], atol=1e-5)
    # The tile at (32, 32) owns patch rows [3, 5) and columns [3, 5) of the scene's grid.
    rows = owned_ranges(grid.row_offsets, 64, 16, 10)[1]
    cols = owned_ranges(grid.col_offsets, 64, 16, 8)[1]
    assert rows == (3, 5) and cols == (3, 5)
    scene_grid = read_grid(out["grid"])
    chip_grid = read_grid(tmp_path / "chip_out" / "chip_emb.tif")
    np.testing.assert_allclose(
        scene_grid[:, rows[0]:rows[1], cols[0]:cols[1]],
        chip_grid[:, rows[0] - 2:rows[1] - 2, cols[0] - 2:cols[1] - 2],
        atol=1e-5,
    )
    assert [p.name for p in chip_out] == ["chip_emb.tif", "embeddings.parquet", "patches.parquet"]


def test_cnn_patches_away_from_edges_match_a_chip_anywhere(tmp_path):
    """A shallow CNN level (stride 2, receptive field 7 px): a chip cut anywhere on the patch
    grid gives the scene's features away from its own edges and the tiles' edges."""
    data = scene_data(3, 96, 96, seed=1)
    scene = write(tmp_path / "scene.tif", data)
    task = cnn_task(0, output="grid")
    out = embed_scene(task, scene, tmp_path / "out", output="grid", tile_size=48, overlap=16,
                      num_workers=1, progress=False)
    scene_grid = read_grid(out["grid"])
    assert scene_grid.shape == (64, 48, 48)
    (tmp_path / "chips").mkdir()
    row, col = 20, 38  # not a tile offset; even, so on the stride-2 grid
    write(tmp_path / "chips" / "c.tif", data[:, row:row + 40, col:col + 40],
          transform=TRANSFORM @ Affine.translation(col, row))
    embed_chips(task, tmp_path / "chips", tmp_path / "chip_out", output="grid")
    chip_grid = read_grid(tmp_path / "chip_out" / "c_emb.tif")
    assert chip_grid.shape == (64, 20, 20)
    # Cells 2 or more from the chip's edges; the scene's cells there come from tiles whose
    # own edges are 2 or more cells away too (overlap 16 px: 4 cells on each side of a cut).
    inner = np.s_[:, 2:-2, 2:-2]
    r0, c0 = row // 2, col // 2
    same_place = scene_grid[:, r0:r0 + 20, c0:c0 + 20]
    np.testing.assert_allclose(same_place[inner], chip_grid[inner], atol=1e-5)
    # ...and near the chip's edge the zero padding makes them differ: the check can fail.
    assert not np.allclose(scene_grid[:, r0, c0:c0 + 20], chip_grid[:, 0], atol=1e-5)


def test_geoparquet_and_grid_describe_the_chips(tmp_path):
    folder = tmp_path / "chips"
    folder.mkdir()
    data = scene_data(6, 64, 48)
    data[:, :16, :16] = -9999  # one patch of nodata
    write(folder / "a_2021-03-04.tif", data, nodata=-9999)
    write(folder / "b_2021-03-05.tif", scene_data(6, 64, 48, seed=3),
          transform=TRANSFORM @ Affine.translation(100, 0), nodata=-9999)
    task = vit_task(output="both")
    embed_chips(task, folder, tmp_path / "out", output="both", batch_size=2)
    rows = gpd.read_parquet(tmp_path / "out" / "embeddings.parquet")
    assert len(rows) == 2 and rows.crs.to_epsg() == 32614
    assert rows["date"].tolist() == [dt.date(2021, 3, 4), dt.date(2021, 3, 5)]
    assert {len(v) for v in rows["embedding"]} == {task.model.encoder.out_channels[-1]}
    names = ["a_2021-03-04.tif", "b_2021-03-05.tif"]
    for (_, row), name in zip(rows.iterrows(), names, strict=True):
        with rasterio.open(folder / name) as src:
            assert row.geometry.bounds == pytest.approx(tuple(src.bounds))
        assert Path(row["source"]).name == name
    with rasterio.open(tmp_path / "out" / "a_2021-03-04_emb.tif") as grid:
        assert grid.count == 256 and (grid.height, grid.width) == (4, 3)
        assert grid.transform == TRANSFORM @ Affine.scale(16)
        assert grid.crs.to_epsg() == 32614
        values = grid.read()
    assert np.isnan(values[:, 0, 0]).all() and np.isfinite(values[:, 1:, :]).all()
    patches = gpd.read_parquet(tmp_path / "out" / "patches.parquet")
    assert len(patches) == 2 * 12 - 1  # the nodata patch has no row
    first = patches[(patches["row"] == 1) & (patches["col"] == 2)].iloc[0]
    np.testing.assert_allclose(first["embedding"], values[:, 1, 2], atol=1e-6)
    x0, y1 = TRANSFORM * (2 * 16, 1 * 16)
    assert first.geometry.bounds == pytest.approx((x0, y1 - 16 * 30, x0 + 16 * 30, y1))


def test_chips_in_two_crs_go_to_one_file_per_crs(tmp_path):
    folder = tmp_path / "chips"
    folder.mkdir()
    write(folder / "a.tif", scene_data(6, 32, 32))
    write(folder / "b.tif", scene_data(6, 32, 32, seed=2), crs="EPSG:32615")
    written = embed_chips(vit_task(), folder, tmp_path / "out")
    assert sorted(p.name for p in written) == [
        "embeddings_EPSG_32614.parquet", "embeddings_EPSG_32615.parquet"
    ]
    for code in (32614, 32615):
        rows = gpd.read_parquet(tmp_path / "out" / f"embeddings_EPSG_{code}.parquet")
        assert len(rows) == 1 and rows.crs.to_epsg() == code
    written = embed_chips(vit_task(), folder, tmp_path / "out2", output="grid")
    assert sorted(p.name for p in written) == [
        "a_emb.tif", "b_emb.tif", "patches_EPSG_32614.parquet", "patches_EPSG_32615.parquet"
    ]
    for code in (32614, 32615):
        patches = gpd.read_parquet(tmp_path / "out2" / f"patches_EPSG_{code}.parquet")
        assert patches.crs.to_epsg() == code


class _Counter:
    """Counts backbone forwards; raises after ``stop_after`` of them when set."""

    def __init__(self, module: torch.nn.Module, stop_after: int | None = None):
        self.calls, self.stop_after = 0, stop_after
        self.handle = module.register_forward_hook(self)

    def __call__(self, *args) -> None:
        self.calls += 1
        if self.stop_after is not None and self.calls > self.stop_after:
            raise KeyboardInterrupt("stopped by the test")


def test_resume_skips_finished_scene_and_continues_a_partial_one(tmp_path):
    scene = write(tmp_path / "scene.tif", scene_data(3, 128, 128, seed=4))
    task = cnn_task(1, output="both")  # stride 4: a 32 x 32 grid
    settings = {
        "output": "both", "patch_rows": True, "tile_size": 32, "overlap": 0, "batch_size": 1,
        "num_workers": 0, "progress": False, "block_size": 16, "checkpoint_seconds": 0,
    }
    full = embed_scene(task, scene, tmp_path / "full", **settings)
    counter = _Counter(task.model.encoder)
    again = embed_scene(task, scene, tmp_path / "full", resume=True, **settings)
    assert again == full and counter.calls == 1  # the stride probe only: nothing recomputed
    counter.handle.remove()

    # 16 tiles, 4 per row (8 grid rows each); stop in the third row of tiles.
    counter = _Counter(task.model.encoder, stop_after=1 + 10)
    with pytest.raises(KeyboardInterrupt):
        embed_scene(task, scene, tmp_path / "part", **settings)
    counter.handle.remove()
    finals = ("scene_emb.tif", "scene_tiles.parquet", "scene_patches.parquet")
    assert not any((tmp_path / "part" / name).exists() for name in finals)
    counter = _Counter(task.model.encoder)
    resumed = embed_scene(task, scene, tmp_path / "part", resume=True, **settings)
    counter.handle.remove()
    assert counter.calls == 1 + 8  # the probe, then the last two rows of tiles
    np.testing.assert_array_equal(read_grid(resumed["grid"]), read_grid(full["grid"]))
    for kind in ("tiles", "patches"):
        a, b = gpd.read_parquet(resumed[kind]), gpd.read_parquet(full[kind])
        assert len(a) == len(b)
        np.testing.assert_array_equal(np.stack(a["embedding"]), np.stack(b["embedding"]))
    left = sorted(p.name for p in (tmp_path / "part").iterdir())
    assert left == sorted(p.name for p in full.values())  # no parts, sidecars or locks


def test_bad_inputs_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="pooling='median'"):
        EmbeddingTask(model_args={"backbone": "timm_resnet18"}, pooling="median")
    with pytest.raises(ValueError, match="output='map'"):
        EmbeddingTask(model_args={"backbone": "timm_resnet18"}, output="map")
    with pytest.raises(ValueError, match="decoders and heads"):
        EmbeddingTask(model_args={"backbone": "timm_resnet18", "decoder": "UperNetDecoder"})
    task = vit_task()
    with pytest.raises(FileNotFoundError, match="missing"):
        embed_chips(task, tmp_path / "missing", tmp_path / "out")
    folder = tmp_path / "chips"
    folder.mkdir()
    write(folder / "a.tif", scene_data(6, 32, 32))
    write(folder / "b.tif", scene_data(3, 32, 32))
    with pytest.raises(ValueError, match="different band counts.*b.tif"):
        embed_chips(task, folder, tmp_path / "out")
    with pytest.raises(ValueError, match=r"b.tif' gives the model 3 bands .* has 6 bands"):
        embed_chips(task, folder / "b.tif", tmp_path / "out")
    with pytest.raises(ValueError, match=r"a.tif' gives the model 2 bands \(bands \[1, 2\]\)"):
        embed_scene(
            task, folder / "a.tif", tmp_path / "out", bands=[1, 2], tile_size=32, progress=False
        )
    with pytest.raises(ValueError, match="multiples of the feature stride 16"):
        embed_scene(
            task, folder / "a.tif", tmp_path / "out", tile_size=64, overlap=8, progress=False
        )
    with pytest.raises(ValueError, match="class token"):
        embed_chips(cnn_task(1, pooling="cls"), tmp_path / "chips" / "b.tif", tmp_path / "out")
    write(tmp_path / "odd.tif", scene_data(6, 40, 48))
    with pytest.raises(ValueError, match=r"odd.tif' \(40 x 48 pixels\) gives a 2 x 3 feature grid"):
        embed_chips(task, tmp_path / "odd.tif", tmp_path / "out", output="grid")
    assert not (tmp_path / "out" / "odd_emb.tif").exists()
    with pytest.raises(ValueError, match="predicts only"):
        task.setup("fit")


def test_task_predict_step_and_encoder_from_a_segmentation_checkpoint(tmp_path):
    from geofm.tasks import SemanticSegmentationTask

    torch.manual_seed(1)
    seg = SemanticSegmentationTask(
        model_args={
            "backbone": "timm_resnet18", "backbone_in_chans": 3, "decoder": "smp_Unet",
            "num_classes": 2,
        },
        means=[1.0, 2.0, 3.0], stds=[2.0, 2.0, 2.0],
    )
    ckpt = tmp_path / "seg.ckpt"
    torch.save({"state_dict": seg.state_dict(), "hyper_parameters": dict(seg.hparams)}, ckpt)
    task = EmbeddingTask(ckpt_path=str(ckpt), output="both", pooling="max")
    task.configure_preprocess(None)
    image = torch.rand(2, 3, 64, 64) * 10
    seg.eval()
    task.eval()
    with torch.inference_mode():  # as Lightning predicts
        out = task.predict_step({"image": image, "filename": ["a", "b"]}, 0)
    assert out["filename"] == ["a", "b"]
    assert out["embedding"].shape == (2, 512) and out["grid"].shape == (2, 512, 2, 2)
    with torch.no_grad():
        expected = seg.model.encoder(seg.preprocess(image))[-1]
    np.testing.assert_allclose(out["grid"], expected, atol=1e-5)
    np.testing.assert_allclose(out["embedding"], expected.amax(dim=(2, 3)), atol=1e-5)
    with pytest.raises(ValueError, match="keep only model_args.necks"):
        EmbeddingTask(ckpt_path=str(ckpt), model_args={"backbone": "timm_resnet50"})
    with pytest.raises(ValueError, match="means/stds would be ignored"):
        EmbeddingTask(ckpt_path=str(ckpt), means=[0.0, 0.0, 0.0], stds=[1.0, 1.0, 1.0])


def test_layer_necks_and_pooling_choose_what_is_embedded():
    from geofm.models.embedder import build_embedder

    x = torch.rand(2, 3, 64, 64)
    last = build_embedder("timm_resnet18", backbone_in_chans=3).eval()
    earlier = build_embedder("timm_resnet18", layer=-2, backbone_in_chans=3).eval()
    with torch.no_grad():
        assert last(x)["output"].shape == (2, 512, 2, 2)
        assert earlier(x)["output"].shape == (2, 256, 4, 4)
    # Prithvi tokens folded here equal the ReshapeTokensToImage neck's maps; cls differs from mean.
    neck = {"name": "ReshapeTokensToImage", "remove_cls_token": True, "effective_time_dim": 1}
    models = {}
    variants = (("fold", None, "mean"), ("neck", [neck], "mean"), ("cls", None, "cls"))
    for name, necks, pooling in variants:
        torch.manual_seed(0)
        model = build_embedder("prithvi_eo_tiny", necks, pooling=pooling, backbone_img_size=32)
        models[name] = model.eval()
    x = torch.rand(2, 6, 32, 32)
    with torch.no_grad():
        out = {name: model(x) for name, model in models.items()}
        tokens = models["cls"].encoder(x)[-1]
    np.testing.assert_allclose(out["fold"]["output"], out["neck"]["output"], atol=1e-6)
    mean = out["fold"]["output"].mean(dim=(2, 3))
    np.testing.assert_allclose(out["fold"]["pooled"], mean, atol=1e-6)
    np.testing.assert_allclose(out["cls"]["pooled"], tokens[:, 0], atol=1e-6)
    assert not torch.allclose(out["cls"]["pooled"], out["fold"]["pooled"], atol=1e-3)


def test_scene_settings_take_effect(tmp_path):
    data = scene_data(6, 64, 64, seed=6).round()
    data[:, 16:32, 32:48] = 7.0  # one patch of the value given as input_nodata
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    write(scenes / "a.tif", data)
    write(scenes / "b.tif", scene_data(6, 64, 64, seed=7))
    task = vit_task(output="grid")
    out = embed_scene(task, scenes / "a.tif", tmp_path / "out", output="grid", patch_rows=True,
                      tile_size=32, input_nodata=7.0, progress=False, num_workers=0)
    with rasterio.open(out["grid"]) as grid:
        assert grid.dtypes[0] == "float32"
        values = grid.read()
    others = np.delete(values.reshape(256, -1), 1 * 4 + 2, axis=1)  # every patch but (1, 2)
    assert np.isnan(values[:, 1, 2]).all() and np.isfinite(others).all()
    assert len(gpd.read_parquet(out["patches"])) == 15
    from geofm.inference.embedding_scenes import embed_scenes

    mine = embed_scenes(task, scenes, tmp_path / "ranks", rank=1, world_size=2, output="pooled",
                        tile_size=32, progress=False, num_workers=0)
    assert [p.name for r in mine for p in r.values()] == ["b_tiles.parquet"]
    assert sorted(p.name for p in (tmp_path / "ranks").iterdir()) == ["b_tiles.parquet"]


def test_chips_with_and_without_a_date_share_no_batch(tmp_path):
    """A time-coded model: a chip whose name has no date is embedded without temporal_coords,
    and its dated neighbours keep theirs (the batch is split, not crashed or stripped)."""
    torch.manual_seed(0)
    task = EmbeddingTask(
        model_args={"backbone": "prithvi_eo_v2_tiny_tl", "backbone_img_size": 32}
    )
    task.configure_preprocess(None)
    assert "temporal_coords" in task.predictor.extra_inputs
    folder = tmp_path / "chips"
    folder.mkdir()
    data = scene_data(6, 32, 32)
    for name in ("a_2020-05-01.tif", "b_nodate.tif", "c_2021-07-01.tif"):
        write(folder / name, data)
    from geofm.inference.embedding import file_inputs

    inputs = file_inputs(task.predictor.extra_inputs)
    embed_chips(task, folder, tmp_path / "out", batch_size=3, chip_inputs=inputs)
    rows = gpd.read_parquet(tmp_path / "out" / "embeddings.parquet").sort_values("source")
    vectors = np.stack(rows["embedding"])
    for name in ("a_2020-05-01.tif", "b_nodate.tif", "c_2021-07-01.tif"):
        alone = tmp_path / name
        (alone / "in").mkdir(parents=True)
        write(alone / "in" / name, data)
        embed_chips(task, alone / "in", alone / "out", batch_size=1, chip_inputs=inputs)
        single = np.stack(gpd.read_parquet(alone / "out" / "embeddings.parquet")["embedding"])
        index = [Path(s).name for s in rows["source"]].index(name)
        np.testing.assert_allclose(vectors[index], single[0], atol=1e-5)
    # Same pixels, other dates: the time code changes the vectors.
    assert not np.allclose(vectors[0], vectors[1], atol=1e-5)
    assert not np.allclose(vectors[0], vectors[2], atol=1e-5)
