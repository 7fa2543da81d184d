"""Streamed prediction of scenes written in tmp_path, checked against ``tiled_forward``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from geofm.inference.in_memory import tiled_forward
from geofm.inference.reader import RasterTileSource
from geofm.inference.streaming import default_tile_size, predict_scene
from geofm.inference.tiling import plan_tiles
from tests.inference.helpers import PositionModel, preprocess, write_raster

SETTINGS = {"tile_size": 32, "overlap": 8, "block_size": 16, "progress": False}


def reference(
    model: PositionModel,
    data: np.ndarray,
    activation: str = "softmax",
    tile_size: int | tuple[int, int] = 32,
    overlap: int | tuple[int, int] = 8,
) -> np.ndarray:
    """The in-memory computation of the same blending, ``(K, H, W)``."""
    act = {"softmax": lambda y: torch.softmax(y, 1), "none": lambda y: y}[activation]
    image = torch.from_numpy(data.astype(np.float32))[None]
    with torch.no_grad():
        out = tiled_forward(lambda x: act(model(preprocess(x))), image, tile_size, overlap=overlap)
    return out[0].numpy()


def read(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as src:
        return src.read(), dict(src.profile)


@pytest.mark.parametrize(
    ("height", "width", "tile_size", "overlap"),
    [
        (20, 27, 32, 8),  # smaller than a tile
        (32, 32, 32, 8),  # exactly a tile
        (170, 300, 32, 8),  # many tiles
        (150, 110, (32, 24), (22, 10)),  # rectangular; rows covered by three grid rows
    ],
)
def test_stream_equals_in_memory_blending(
    tmp_path: Path,
    height: int,
    width: int,
    tile_size: int | tuple[int, int],
    overlap: int | tuple[int, int],
) -> None:
    data = write_raster(tmp_path / "scene.tif", height, width)
    model = PositionModel()
    valid = data.any(axis=0)
    expected = reference(model, data, tile_size=tile_size, overlap=overlap)
    settings = {**SETTINGS, "tile_size": tile_size, "overlap": overlap}

    classes = predict_scene(
        model,
        tmp_path / "scene.tif",
        tmp_path / "classes.tif",
        preprocess=preprocess,
        batch_size=3,
        num_workers=2,
        **settings,
    )
    probs = predict_scene(
        model,
        tmp_path / "scene.tif",
        tmp_path / "probs.tif",
        output="probabilities",
        preprocess=preprocess,
        **settings,
    )

    cls, cls_profile = read(classes)
    assert cls.dtype == np.uint8 and cls.shape == (1, height, width)
    np.testing.assert_array_equal(cls[0][valid], expected.argmax(0)[valid])
    assert cls_profile["nodata"] == 255
    assert (cls[0][~valid] == 255).all()
    assert (~valid).sum() > 0

    prob, prob_profile = read(probs)
    assert prob.dtype == np.float32 and prob.shape == (4, height, width)
    np.testing.assert_allclose(prob[:, valid], expected[:, valid], atol=1e-5, rtol=0)
    assert np.isnan(prob[:, ~valid]).all() and np.isnan(prob_profile["nodata"])


def test_dataset_mask_marks_nodata(tmp_path: Path) -> None:
    # No nodata value, but a GDAL mask band: masked pixels become nodata in the output.
    path = tmp_path / "scene.tif"
    data = write_raster(path, 40, 50, holes=False, nodata=None)
    mask = np.full((40, 50), 255, np.uint8)
    mask[5:15, 10:30] = 0
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "r+") as dst:
        dst.write_mask(mask)
    model = PositionModel()
    out = predict_scene(model, path, tmp_path / "out.tif", preprocess=preprocess, **SETTINGS)
    classes = read(out)[0][0]
    np.testing.assert_array_equal(classes == 255, mask == 0)
    np.testing.assert_array_equal(classes[mask > 0], reference(model, data).argmax(0)[mask > 0])


def test_output_grid_equals_input_grid_and_is_tiled_compressed(tmp_path: Path) -> None:
    write_raster(tmp_path / "scene.tif", 170, 300)
    out = predict_scene(
        PositionModel(), tmp_path / "scene.tif", tmp_path / "out.tif", tile_size=32, progress=False
    )
    with rasterio.open(tmp_path / "scene.tif") as src, rasterio.open(out) as dst:
        assert (dst.crs, dst.transform, dst.width, dst.height) == (
            src.crs,
            src.transform,
            src.width,
            src.height,
        )
        assert dst.profile["tiled"] and dst.block_shapes[0] == (256, 256)
        assert dst.compression.name == "deflate"
        assert dst.overviews(1) == []


def test_batch_size_and_workers_do_not_change_the_result(tmp_path: Path) -> None:
    data = write_raster(tmp_path / "scene.tif", 90, 130, seed=3)
    model = PositionModel(seed=1)

    def run(kind: str, batch_size: int, workers: int) -> np.ndarray:
        path = predict_scene(
            model,
            tmp_path / "scene.tif",
            tmp_path / f"{kind}{batch_size}{workers}.tif",
            output=kind,
            preprocess=preprocess,
            batch_size=batch_size,
            num_workers=workers,
            **SETTINGS,
        )
        return read(path)[0]

    np.testing.assert_array_equal(run("class", 1, 0), run("class", 5, 3))
    # CPU conv kernels round differently for different batch sizes: values agree to float
    # precision (class maps exactly); for one batch size, worker counts give identical bits.
    valid = data.any(axis=0)
    probs = run("probabilities", 4, 0)
    np.testing.assert_allclose(
        run("probabilities", 1, 2)[:, valid], probs[:, valid], atol=1e-6, rtol=0
    )
    np.testing.assert_array_equal(run("probabilities", 4, 3), probs)


def test_regression_binary_and_many_classes(tmp_path: Path) -> None:
    data = write_raster(tmp_path / "scene.tif", 40, 50, holes=False, nodata=None)
    single = PositionModel(classes=1)
    path = predict_scene(
        single,
        tmp_path / "scene.tif",
        tmp_path / "reg.tif",
        output="regression",
        preprocess=preprocess,
        **SETTINGS,
    )
    values, profile = read(path)
    assert values.dtype == np.float32 and values.shape == (1, 40, 50)
    np.testing.assert_allclose(values, reference(single, data, "none"), atol=1e-5)

    binary = predict_scene(
        single, tmp_path / "scene.tif", tmp_path / "bin.tif", preprocess=preprocess, **SETTINGS
    )
    sigmoid = 1 / (1 + np.exp(-reference(single, data, "none")))
    np.testing.assert_array_equal(read(binary)[0][0], (sigmoid[0] >= 0.5).astype(np.uint8))

    many = predict_scene(
        PositionModel(classes=300),
        tmp_path / "scene.tif",
        tmp_path / "many.tif",
        preprocess=preprocess,
        **SETTINGS,
    )
    classes, profile = read(many)
    assert classes.dtype == np.int16 and profile["nodata"] == -1
    assert classes.max() > 255

    with pytest.raises(ValueError, match="one output channel"):
        predict_scene(
            PositionModel(classes=2),
            tmp_path / "scene.tif",
            tmp_path / "x.tif",
            output="regression",
            **SETTINGS,
        )


def test_band_selection_reads_the_named_bands(tmp_path: Path) -> None:
    data = write_raster(tmp_path / "scene.tif", 24, 24, bands=4, holes=False, nodata=None)
    model = PositionModel(in_chans=2)
    path = predict_scene(
        model,
        tmp_path / "scene.tif",
        tmp_path / "out.tif",
        bands=[4, 2],
        output="probabilities",
        preprocess=preprocess,
        **SETTINGS,
    )
    np.testing.assert_allclose(read(path)[0], reference(model, data[[3, 1]]), atol=1e-5)
    with pytest.raises(ValueError, match=r"1-based indexes in \[1, 4\]"):
        RasterTileSource(tmp_path / "scene.tif", bands=[0, 5])


def test_reader_pads_by_reflection(tmp_path: Path) -> None:
    data = write_raster(tmp_path / "scene.tif", 20, 27, holes=False, nodata=None)
    padded = np.pad(data, ((0, 0), (40, 40), (40, 40)), mode="reflect").astype(np.float32)
    with RasterTileSource(tmp_path / "scene.tif", num_workers=1) as source:
        grid = plan_tiles(20, 27, 16, overlap=6)
        for tile in grid:
            got = source.submit(tile, grid.shape[1]).result()
            rows = slice(tile.row + 40, tile.row + 40 + 16)
            cols = slice(tile.col + 40, tile.col + 40 + 16)
            np.testing.assert_array_equal(got.image, padded[:, rows, cols])
            assert got.valid is None


def test_overviews(tmp_path: Path) -> None:
    write_raster(tmp_path / "scene.tif", 170, 300)
    path = predict_scene(
        PositionModel(), tmp_path / "scene.tif", tmp_path / "out.tif", overviews=True, **SETTINGS
    )
    with rasterio.open(path) as dst:
        assert dst.overviews(1) == [2]
        assert dst.tags(ns="rio_overview")["resampling"] == "mode"


def test_default_tile_size_comes_from_the_model() -> None:
    model = PositionModel()
    assert default_tile_size(model) == 512
    model.conv.img_size = (224, 224)
    assert default_tile_size(model) == 224
    model.conv.img_size = (3, 64, 96)
    assert default_tile_size(model) == (64, 96)


def test_errors_name_the_setting(tmp_path: Path) -> None:
    write_raster(tmp_path / "scene.tif", 20, 20)
    with pytest.raises(ValueError, match="output='masks'"):
        predict_scene(PositionModel(), tmp_path / "scene.tif", tmp_path / "o.tif", output="masks")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="block_size=100"):
        predict_scene(PositionModel(), tmp_path / "scene.tif", tmp_path / "o.tif", block_size=100)
    with pytest.raises(FileNotFoundError, match=r"missing\.tif"):
        predict_scene(PositionModel(), tmp_path / "missing.tif", tmp_path / "o.tif")
