"""The onnxruntime engine writes the torch engine's GeoTIFFs, from an exported file alone.

The ONNX files come from ``tests/inference/onnx_export.py``, a stand-in for ``geofm export``
that follows the exported file's contract (raw file bands in, logits out, preprocessing
inside, ``<file>.json`` beside it).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from geofm.cli import main  # noqa: E402
from geofm.cli_onnx import pop_engine  # noqa: E402
from geofm.errors import GeofmError  # noqa: E402
from geofm.inference.onnx_engine import OnnxModelError, OnnxRuntimeModel  # noqa: E402
from geofm.inference.predictor import Predictor  # noqa: E402
from geofm.inference.streaming import predict_scene  # noqa: E402
from geofm.models.preprocess import Preprocess  # noqa: E402
from tests.inference.helpers import PositionModel, write_raster  # noqa: E402
from tests.inference.onnx_export import export_onnx  # noqa: E402

FILE_BANDS = ["B02", "B03", "B04", "B08"]
SEG_BANDS = ["B04", "B02", "B03"]  # file bands 3, 1, 2
REG_BANDS = ["B08", "B03"]  # file bands 4, 2
SETTINGS = {"block_size": 16, "progress": False, "num_workers": 0}
TILE = {"tile_size": 32, "overlap": 8}


def _indexes(names: list[str]) -> list[int]:
    return [FILE_BANDS.index(n) + 1 for n in names]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A segmentation and a regression model, each exported with its preprocessing, and a
    fixed-size export of the segmentation model."""
    folder = tmp_path_factory.mktemp("onnx")
    seg = PositionModel(in_chans=3, classes=4, seed=1).eval()
    seg_pre = Preprocess(mean=[450.0] * 3, std=[250.0] * 3, constant_scale=1.0)
    reg = PositionModel(in_chans=2, classes=1, seed=2).eval()
    reg_pre = Preprocess(mean=[5.0, 4.0], std=[3.0, 2.0], constant_scale=0.01, no_data_replace=0)
    common = {"bands": FILE_BANDS, "nodata": 0}
    return {
        "seg": (seg, seg_pre),
        "reg": (reg, reg_pre),
        "seg_path": export_onnx(
            folder / "seg.onnx", seg, seg_pre, model_bands=SEG_BANDS, num_classes=4,
            tile={"size": 32, "overlap": 8}, **common,
        ),
        "reg_path": export_onnx(
            folder / "reg.onnx", reg, reg_pre, model_bands=REG_BANDS, task="regression",
            activation="none", num_classes=1, **common,
        ),
        "fixed_path": export_onnx(
            folder / "fixed.onnx", seg, seg_pre, model_bands=SEG_BANDS, num_classes=4,
            fixed_size=(32, 32), **common,
        ),
    }


def _scene(path: Path, nodata: int | None = 0, bands: int = 4) -> np.ndarray:
    """A 4-band scene with nodata holes, and a patch where the model bands of the
    segmentation model are nodata but B08 is not (the output is nodata there too)."""
    data = write_raster(path, 70, 90, bands=bands, nodata=nodata)
    if bands == 4:
        with rasterio.open(path, "r+") as dst:
            data[:3, 50:58, 10:20] = 0
            dst.write(data)
    return data


def _read(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    with rasterio.open(path) as src:
        return src.read(), dict(src.profile)


def _variant(source: Path, folder: Path, change: Any) -> Path:
    """A copy of an exported file whose metadata ``change(metadata)`` edits."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / source.name
    shutil.copy(source, target)
    metadata = json.loads(Path(f"{source}.json").read_text())
    change(metadata)
    Path(f"{target}.json").write_text(json.dumps(metadata))
    return target


def _assert_same_profile(a: dict[str, Any], b: dict[str, Any]) -> None:
    for key in ("crs", "transform", "width", "height", "count", "dtype", "blockxsize"):
        assert a[key] == b[key], key
    assert a["nodata"] == b["nodata"] or (np.isnan(a["nodata"]) and np.isnan(b["nodata"]))


def test_segmentation_matches_torch_engine(tmp_path, exported):
    data = _scene(tmp_path / "scene.tif")
    model, pre = exported["seg"]
    torch_engine = Predictor(model, pre, "probabilities")
    for output in ("probabilities", "class"):
        eager = predict_scene(
            torch_engine, tmp_path / "scene.tif", tmp_path / f"torch_{output}.tif",
            bands=_indexes(SEG_BANDS), output=output, **TILE, **SETTINGS,
        )
        # Tile size and overlap come from the metadata; class maps are the default output.
        onnx = predict_scene(
            exported["seg_path"], tmp_path / "scene.tif", tmp_path / f"onnx_{output}.tif",
            engine="onnxruntime", **({"output": output} if output != "class" else {}), **SETTINGS,
        )
        (expected, expected_profile), (got, profile) = _read(eager), _read(onnx)
        _assert_same_profile(expected_profile, profile)
        if output == "probabilities":
            np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
            np.testing.assert_allclose(got, expected, atol=1e-4, equal_nan=True)
        else:
            np.testing.assert_array_equal(got, expected)
    # Nodata where every model band is: the holes, and the patch where only B08 has data.
    model_nodata = (data[[2, 0, 1]] == 0).all(axis=0)
    assert model_nodata[50:58, 10:20].all() and not (data[3, 50:58, 10:20] == 0).any()
    np.testing.assert_array_equal(got[0] == 255, model_nodata)


def test_regression_matches_torch_engine(tmp_path, exported):
    _scene(tmp_path / "scene.tif")
    model, pre = exported["reg"]
    eager = predict_scene(
        Predictor(model, pre, "values"), tmp_path / "scene.tif", tmp_path / "torch.tif",
        bands=_indexes(REG_BANDS), **TILE, **SETTINGS,
    )
    onnx = predict_scene(
        exported["reg_path"], tmp_path / "scene.tif", tmp_path / "onnx.tif",
        engine="onnxruntime", **TILE, **SETTINGS,
    )
    (expected, expected_profile), (got, profile) = _read(eager), _read(onnx)
    _assert_same_profile(expected_profile, profile)
    assert profile["dtype"] == "float32" and profile["count"] == 1
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, atol=1e-4, equal_nan=True)


def test_metadata_nodata_marks_pixels_of_a_file_without_nodata(tmp_path, exported):
    """input.nodata (0) is nodata even where the file declares none, as input_nodata=0 makes
    it for the torch engine."""
    data = _scene(tmp_path / "scene.tif", nodata=None)
    model, pre = exported["seg"]
    eager = predict_scene(
        Predictor(model, pre), tmp_path / "scene.tif", tmp_path / "torch.tif",
        bands=_indexes(SEG_BANDS), input_nodata=0, **TILE, **SETTINGS,
    )
    onnx = predict_scene(
        exported["seg_path"], tmp_path / "scene.tif", tmp_path / "onnx.tif",
        engine="onnxruntime", **SETTINGS,
    )
    expected, got = _read(eager)[0], _read(onnx)[0]
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got[0] == 255, (data[[2, 0, 1]] == 0).all(axis=0))


def test_fixed_size_export(tmp_path, exported):
    _scene(tmp_path / "scene.tif")
    model = OnnxRuntimeModel(exported["fixed_path"])
    assert model.fixed_size == (32, 32) and model.input_size == (32, 32)
    reference = predict_scene(
        exported["seg_path"], tmp_path / "scene.tif", tmp_path / "dynamic.tif",
        engine="onnxruntime", **TILE, **SETTINGS,
    )
    # The tile size defaults to the fixed size; an OnnxRuntimeModel selects its engine.
    fixed = predict_scene(model, tmp_path / "scene.tif", tmp_path / "fixed.tif", overlap=8, **SETTINGS)
    np.testing.assert_array_equal(_read(fixed)[0], _read(reference)[0])
    with pytest.raises(OnnxModelError, match=r"tile_size 48 x 48 .* only 32 x 32"):
        predict_scene(
            model, tmp_path / "scene.tif", tmp_path / "bad.tif", engine="onnxruntime",
            tile_size=48, **SETTINGS,
        )
    assert not (tmp_path / "bad.tif").exists()


def test_cli_end_to_end(tmp_path, exported, capsys):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    _scene(scenes / "a.tif")
    _scene(scenes / "b.tif", nodata=None)
    out = tmp_path / "out"
    code = main([
        "predict", "--engine", "onnxruntime", "--model", str(exported["seg_path"]),
        "--streaming.input", str(scenes), "--streaming.output_dir", str(out),
        "--streaming.num_workers", "1", "--streaming.progress", "false",
        "--streaming", "{block_size: 16, output: probabilities}",
    ])
    assert code == 0, capsys.readouterr().err
    assert "2 prediction(s)" in capsys.readouterr().out
    for name in ("a", "b"):
        expected = predict_scene(
            exported["seg_path"], scenes / f"{name}.tif", tmp_path / f"{name}.tif",
            engine="onnxruntime", output="probabilities", **SETTINGS,
        )
        np.testing.assert_array_equal(_read(out / f"{name}_pred.tif")[0], _read(expected)[0])


def test_resume_skips_a_finished_output(tmp_path, exported, caplog):
    _scene(tmp_path / "scene.tif")
    args = (exported["seg_path"], tmp_path / "scene.tif", tmp_path / "out.tif")
    predict_scene(*args, engine="onnxruntime", resume=True, **SETTINGS)
    with caplog.at_level("INFO", logger="geofm.inference.streaming"):
        predict_scene(*args, engine="onnxruntime", resume=True, **SETTINGS)
    assert "already complete" in caplog.text


# ---------------------------------------------------------------------------- errors
def test_missing_metadata_names_the_expected_file(tmp_path, exported, capsys):
    model = tmp_path / "alone.onnx"
    shutil.copy(exported["seg_path"], model)
    with pytest.raises(OnnxModelError, match=r"expected '.*alone\.onnx\.json'"):
        OnnxRuntimeModel(model)
    _scene(tmp_path / "scene.tif")
    code = main([
        "predict", "--engine", "onnxruntime", "--model", str(model),
        "--streaming.input", str(tmp_path / "scene.tif"), "--streaming.output_dir", str(tmp_path / "out"),
    ])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"{model}.json" in err[0]


def test_band_count_mismatch_names_scene_and_bands(tmp_path, exported):
    _scene(tmp_path / "three.tif", bands=3)
    with pytest.raises(OnnxModelError, match=r"three\.tif' has 3 bands .* takes 4: \['B02', 'B03', 'B04', 'B08'\]"):
        predict_scene(
            exported["seg_path"], tmp_path / "three.tif", tmp_path / "out.tif",
            engine="onnxruntime", **SETTINGS,
        )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m["output"].pop("activation"), r"'output\.activation' is missing"),
        (lambda m: m.update(task="classification"), r"classification model .* streamed prediction writes maps"),
        (lambda m: m["output"].update(activation="none"), r"activation is 'none' for a segmentation model"),
        (lambda m: m["input"].update(name="pixels"), r"has inputs \['image'\], not 'pixels'"),
        (lambda m: m["input"].update(fixed_size=[64, 64]), None),  # a dynamic graph: tiles must be 64
        (lambda m: m.update(format="torch.export"), r"format is 'torch\.export'"),
    ],
)
def test_metadata_errors(tmp_path, exported, change, message):
    _scene(tmp_path / "scene.tif")
    model = _variant(exported["seg_path"], tmp_path / "model", change)
    run = lambda **kw: predict_scene(  # noqa: E731
        model, tmp_path / "scene.tif", tmp_path / "out.tif", engine="onnxruntime", **SETTINGS, **kw
    )
    if message is None:  # input.fixed_size binds a dynamic graph too
        with pytest.raises(OnnxModelError, match="only 64 x 64"):
            run(tile_size=32)
        return
    with pytest.raises(OnnxModelError, match=message):
        run()


def test_optional_metadata_keys_may_be_missing(tmp_path, exported):
    drop = ("output.class_colors", "output.class_names", "output.num_classes", "tile",
            "config_sha256", "check", "input.fixed_size", "input.nodata", "input.model_bands")

    def change(metadata: dict[str, Any]) -> None:
        for key in drop:
            *parents, last = key.split(".")
            section = metadata
            for part in parents:
                section = section[part]
            section.pop(last)

    model = OnnxRuntimeModel(_variant(exported["seg_path"], tmp_path / "model", change))
    assert model.read_bands == [1, 2, 3, 4] and model.input_size is None and model.nodata is None


def test_engine_settings_that_belong_to_torch(tmp_path, exported):
    _scene(tmp_path / "scene.tif")
    with pytest.raises(ValueError, match="bands applies to the torch engine"):
        predict_scene(
            exported["seg_path"], tmp_path / "scene.tif", tmp_path / "out.tif",
            engine="onnxruntime", bands=[1, 2, 3], **SETTINGS,
        )
    with pytest.raises(ValueError, match="engine='tensorrt'"):
        predict_scene(exported["seg_path"], tmp_path / "scene.tif", tmp_path / "o.tif", engine="tensorrt")


def test_unknown_provider_lists_the_available_ones(exported):
    with pytest.raises(OnnxModelError, match="CPUExecutionProvider"):
        OnnxRuntimeModel(exported["seg_path"], providers=["NopeExecutionProvider"])


def test_missing_onnxruntime_says_what_to_install(exported, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(GeofmError, match=r"pip install 'geofm\[onnx\]'"):
        OnnxRuntimeModel(exported["seg_path"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-c", "config.yaml"], "-c: geofm predict --engine onnxruntime runs the exported file alone"),
        (["--streaming.tile_sise", "32"], "--streaming.tile_sise: unknown setting. Did you mean: tile_size?"),
        ([], "needs --streaming.input"),
        (["--engine", "tensorrt"], "--engine 'tensorrt': choose one of"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, exported, capsys, args, message):
    code = main([
        "predict", "--engine", "onnxruntime", "--model", str(exported["seg_path"]),
        *(["--streaming.output_dir", str(tmp_path)] if args else []), *args,
    ])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err


def test_pop_engine_leaves_the_torch_command_as_it_was():
    assert pop_engine(["-c", "x.yaml", "--engine=torch", "--ckpt_path", "last"]) == (
        "torch", ["-c", "x.yaml", "--ckpt_path", "last"]
    )
    assert pop_engine(["-c", "x.yaml"]) == (None, ["-c", "x.yaml"])


def test_a_geofm_export_file_matches_the_task_on_a_scene(tmp_path):
    """The real exporter's file (band selection, nodata, preprocessing inside) through the
    onnxruntime engine equals the task's own streamed prediction."""
    from geofm.export import export_task
    from tests.export.test_export import FILE_BANDS as EXPORT_BANDS
    from tests.export.test_export import build

    task = build("resnet18_smp_unet")
    result = export_task(task, tmp_path / "m.onnx", dataset_bands=EXPORT_BANDS, nodata=0, tile_size=64, tile_overlap=16)
    assert result.metadata["input"]["size_multiple"] == 32
    write_raster(tmp_path / "scene.tif", 100, 130, bands=len(EXPORT_BANDS), nodata=0)
    eager = predict_scene(task.predictor, tmp_path / "scene.tif", tmp_path / "eager.tif", bands=[4, 3, 2, 5],
                          output="probabilities", tile_size=64, overlap=16, **SETTINGS)
    onnx = predict_scene(result.path, tmp_path / "scene.tif", tmp_path / "onnx.tif", engine="onnxruntime",
                         output="probabilities", **SETTINGS)
    (expected, expected_profile), (got, profile) = _read(eager), _read(onnx)
    _assert_same_profile(expected_profile, profile)
    valid = ~np.isnan(expected)
    assert np.array_equal(valid, ~np.isnan(got))
    np.testing.assert_allclose(got[valid], expected[valid], atol=1e-4)
    with pytest.raises(OnnxModelError, match="multiples of 32 x 32"):
        predict_scene(result.path, tmp_path / "scene.tif", tmp_path / "bad.tif", engine="onnxruntime",
                      tile_size=48, overlap=8, **SETTINGS)
