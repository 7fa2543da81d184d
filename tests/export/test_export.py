"""geofm.export: the exported files keep the contract, agree with the task, fail loudly.

Each factory composition is exported to ONNX and to ``torch.export`` with a band selection
(4 of a 7-band file, reordered), a nodata value, ``constant_scale`` and normalisation, and its
logits are checked against the task's (export_task does this at two sizes and refuses above
1e-4; the tests check it again with their own inputs).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from geofm.cli import main as geofm
from geofm.export import ExportCheckError, ExportError, MissingDependencyError, export_task, load_safetensors
from geofm.models.model import ModelOutput
from geofm.tasks.classification import ClassificationTask
from geofm.tasks.regression import PixelwiseRegressionTask
from geofm.tasks.segmentation import SemanticSegmentationTask

REPO = Path(__file__).resolve().parents[2]
FILE_BANDS = ["COASTAL_AEROSOL", "BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2"]
MODEL_BANDS = ["RED", "GREEN", "BLUE", "NIR_NARROW"]  # file positions 3, 2, 1, 4
NODATA = -9999.0
MEANS = [900.0, 1100.0, 1000.0, 2500.0]
STDS = [400.0, 350.0, 300.0, 900.0]
SIZE = 64

VIT = {"backbone": "prithvi_eo_tiny", "backbone_bands": MODEL_BANDS, "backbone_img_size": SIZE}
NECKS = [{"name": "SelectIndices", "indices": [0, 1, 2, 3]}, {"name": "ReshapeTokensToImage"}]
COMPOSITIONS = {
    "prithvi_upernet": (SemanticSegmentationTask, {
        **VIT, "necks": [*NECKS, {"name": "LearnedInterpolateToPyramidal"}],
        "decoder": "UperNetDecoder", "decoder_channels": 16, "num_classes": 3,
    }),
    "prithvi_unet": (SemanticSegmentationTask, {
        **VIT, "necks": [*NECKS, {"name": "InterpolateToPyramidal"}],
        "decoder": "UNetDecoder", "decoder_channels": [32, 16, 8, 8], "num_classes": 3,
    }),
    "resnet18_smp_unet": (SemanticSegmentationTask, {
        "backbone": "timm_resnet18", "backbone_in_chans": 4, "decoder": "smp_Unet",
        "decoder_decoder_channels": [32, 16, 16, 8, 8], "num_classes": 3,
    }),
    "swin_upernet": (SemanticSegmentationTask, {
        "backbone": "prithvi_swin_B", "backbone_bands": MODEL_BANDS, "backbone_embed_dim": 16,
        "backbone_depths": [1, 1, 1, 1], "backbone_num_heads": [1, 1, 2, 2],
        "backbone_window_size": 4, "backbone_img_size": SIZE,
        "decoder": "UperNetDecoder", "decoder_channels": 16, "num_classes": 3,
    }),
    "prithvi_classification": (ClassificationTask, {
        **VIT, "necks": [{"name": "AggregateTokens", "pooling": "mean", "indices": [-1]}],
        "decoder": "IdentityDecoder", "head_dim_list": [16], "num_classes": 5,
    }),
}


def build(name: str, seed: int = 0) -> nn.Module:
    """The composition's task, its preprocessing as a datamodule would set it."""
    torch.manual_seed(seed)
    cls, model_args = COMPOSITIONS[name]
    task = cls(model_args=model_args, class_names=[f"c{i}" for i in range(model_args["num_classes"])])
    task.preprocess.configure(
        mean=[m * 1e-4 for m in MEANS], std=[s * 1e-4 for s in STDS], constant_scale=1e-4,
        bands=MODEL_BANDS, band_indexes=[4, 3, 2, 5],
    )
    return task.eval()


def raw_input(batch: int, height: int, width: int, seed: int = 1) -> torch.Tensor:
    """Raw 7-band file values with NaN, ±inf and nodata pixels (also in unselected bands)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(1500.0, 600.0, (batch, len(FILE_BANDS), height, width)).astype(np.float32)
    x[:, :, 3, 5] = NODATA  # a nodata pixel in every band
    x[:, 3, 7, 1] = NODATA  # in RED only
    x[:, 1, 2, 9] = np.nan
    x[:, 2, 4, 4] = np.inf
    x[:, 0] = NODATA  # an unselected band, all nodata: must not matter
    return torch.from_numpy(x)


def eager(task: nn.Module, raw: torch.Tensor) -> torch.Tensor:
    """The task's logits for ``raw``, read as geofm's readers read the file."""
    x = raw.clone()
    x[x == NODATA] = float("nan")
    with torch.no_grad():
        return task.predictor.logits(x[:, [3, 2, 1, 4]])


_EXPORTED: dict[tuple[str, str], tuple[nn.Module, object]] = {}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``(task, ExportResult)`` of a composition and format, exported once per module."""
    root = tmp_path_factory.mktemp("exported")

    def get(name: str, format: str):
        if (name, format) not in _EXPORTED:
            # One trace per composition: the second format writes the first one's program.
            earlier = next((r for (n, _), (t, r) in _EXPORTED.items() if n == name), None)
            task = _EXPORTED[name, "onnx" if format != "onnx" else "torch-export"][0] if earlier else build(name)
            suffix = {"onnx": ".onnx", "torch-export": ".pt2", "safetensors": ".safetensors"}[format]
            result = export_task(
                task, root / f"{name}{suffix}", format, dataset_bands=FILE_BANDS, nodata=NODATA,
                tile_size=SIZE, traced=earlier,
            )
            _EXPORTED[name, format] = (task, result)
        return _EXPORTED[name, format]

    yield get
    _EXPORTED.clear()


def run_file(path: Path, format: str, raw: torch.Tensor) -> torch.Tensor:
    if format == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == ["image"]
        assert [o.name for o in session.get_outputs()] == ["logits"]
        return torch.from_numpy(session.run(["logits"], {"image": raw.numpy()})[0])
    with open(path, "rb") as handle:
        return torch.export.load(handle).module()(raw).detach()


# ---------------------------------------------------------------------------- the contract
@pytest.mark.parametrize("format", ["onnx", "torch-export"])
@pytest.mark.parametrize("name", list(COMPOSITIONS))
def test_compositions_export_and_agree_with_the_task(exported, name, format):
    task, result = exported(name, format)
    meta = result.metadata
    (h1, w1), (h2, w2) = meta["check"]["sizes"]
    assert result.max_abs_diff <= 1e-4 and meta["check"]["max_abs_diff"] == result.max_abs_diff
    if name.startswith("swin"):  # shifted-window masks of one size: the tile size, fixed
        assert meta["input"]["fixed_size"] == [SIZE, SIZE] and meta["input"]["size_multiple"] is None
        raw = raw_input(3, SIZE, SIZE)
    else:
        assert meta["input"]["fixed_size"] is None, f"{name} exported with a fixed size"
        assert (h1, w1) == (SIZE, SIZE) and (h2, w2) != (h1, w1)
        # Our own inputs, at a third size (a multiple of the model's size multiple), batch 3.
        multiple = meta["input"]["size_multiple"]
        raw = raw_input(3, 3 * multiple * max(1, 32 // multiple), 2 * multiple * max(1, 32 // multiple))
    if format == "torch-export":
        return  # export_task ran the loaded .pt2 at two sizes; the ONNX file gets a third check
    got, expected = run_file(result.path, format, raw), eager(task, raw)
    assert got.shape == expected.shape
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_nodata_and_band_selection_are_inside_the_graph(exported):
    task, result = exported("resnet18_smp_unet", "onnx")
    raw = raw_input(1, SIZE, SIZE)
    got = run_file(result.path, "onnx", raw)
    torch.testing.assert_close(got, eager(task, raw), atol=1e-4, rtol=0)
    # The nodata pixels are filled as the task fills NaN: same logits as NaN there.
    as_nan = raw.clone()
    as_nan[as_nan == NODATA] = float("nan")
    torch.testing.assert_close(run_file(result.path, "onnx", as_nan), got, atol=1e-5, rtol=0)
    # Unselected bands do not matter.
    other = raw.clone()
    other[:, [0, 5, 6]] = 12345.0
    torch.testing.assert_close(run_file(result.path, "onnx", other), got, atol=1e-5, rtol=0)
    # A nodata value read as data would change the logits: the graph does compare with it.
    raw_zero = raw.clone()
    raw_zero[raw_zero == NODATA] = 0.0
    assert (run_file(result.path, "onnx", raw_zero) - got).abs().max() > 1e-3


def test_metadata(exported):
    task, result = exported("prithvi_upernet", "onnx")
    meta = json.loads(result.metadata_path.read_text())
    assert result.metadata_path == result.path.with_name(result.path.name + ".json")
    assert meta == result.metadata
    assert meta["format"] == "onnx" and meta["task"] == "segmentation" and meta["opset"] >= 17
    assert meta["geofm_version"]
    assert meta["input"] | {"preprocess": None} == {
        "name": "image", "layout": "BCHW", "dtype": "float32", "bands": FILE_BANDS,
        "model_bands": MODEL_BANDS, "frames": 1, "nodata": NODATA, "fixed_size": None,
        "size_multiple": 16, "preprocess": None,
    }
    assert meta["input"]["preprocess"]["constant_scale"] == pytest.approx(1e-4)
    assert meta["output"] == {
        "name": "logits", "layout": "BKHW", "activation": "softmax", "num_classes": 3,
        "channels": 3, "class_names": ["c0", "c1", "c2"], "class_colors": None,
    }
    assert meta["tile"] == {"size": [SIZE, SIZE], "overlap": SIZE // 8}
    assert meta["config_sha256"] is None  # no config given to export_task
    import onnx

    model = onnx.load(str(result.path))
    assert json.loads({p.key: p.value for p in model.metadata_props}["geofm"]) == meta
    assert model.opset_import[0].version >= 17
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", len(FILE_BANDS), "height", "width"]

    _, classified = exported("prithvi_classification", "torch-export")
    out = classified.metadata["output"]
    assert classified.metadata["task"] == "classification"
    assert (out["layout"], out["activation"], out["num_classes"]) == ("BK", "softmax", 5)
    assert classified.metadata["opset"] is None


def test_regression_metadata_and_safetensors_round_trip(tmp_path):
    args = {"backbone": "timm_resnet18", "backbone_in_chans": 4, "decoder": "smp_Unet",
            "decoder_decoder_channels": [16, 8, 8, 8, 8]}
    torch.manual_seed(0)
    task = PixelwiseRegressionTask(model_args=args).eval()
    task.preprocess.configure(mean=MEANS, std=STDS, bands=MODEL_BANDS, band_indexes=[4, 3, 2, 5])
    result = export_task(task, tmp_path / "w.safetensors", "safetensors", dataset_bands=FILE_BANDS, nodata=NODATA)
    meta = result.metadata
    assert (meta["format"], meta["task"]) == ("safetensors", "regression")
    assert (meta["output"]["activation"], meta["output"]["channels"], meta["output"]["num_classes"]) == ("none", 1, None)
    assert meta["tile"] is None and result.max_abs_diff == 0.0
    # The same config's task, other initial weights and no statistics: the file restores all.
    torch.manual_seed(1)
    fresh = PixelwiseRegressionTask(model_args=args).eval()
    load_safetensors(fresh, result.path)
    assert fresh.preprocess.bands == MODEL_BANDS and fresh.preprocess.band_indexes == [4, 3, 2, 5]
    raw = raw_input(2, SIZE, SIZE)
    assert torch.equal(eager(fresh, raw), eager(task, raw))
    assert eager(task, raw).shape == (2, 1, SIZE, SIZE)


def test_multitemporal_files_are_read_time_major(tmp_path):
    """A file of T x C bands (date 1's bands, then date 2's), as expand_temporal_dimension reads it."""
    torch.manual_seed(0)
    task = SemanticSegmentationTask(model_args={
        **VIT, "backbone_num_frames": 2,
        "necks": [{"name": "SelectIndices", "indices": [1, 3]}, {"name": "ReshapeTokensToImage", "effective_time_dim": 2}],
        "decoder": "FCNDecoder", "decoder_channels": 8, "num_classes": 2,
    }).eval()
    task.preprocess.configure(mean=MEANS, std=STDS, bands=MODEL_BANDS, band_indexes=[4, 3, 2, 5])
    result = export_task(task, tmp_path / "m.pt2", "torch-export", dataset_bands=FILE_BANDS, nodata=NODATA, tile_size=SIZE)
    meta = result.metadata["input"]
    assert meta["frames"] == 2 and meta["fixed_size"] is None and meta["layout"] == "BCHW"
    assert meta["bands"] == [f"{b}_t{t}" for t in (1, 2) for b in FILE_BANDS]
    raw = torch.cat([raw_input(2, SIZE, 80, seed=1), raw_input(2, SIZE, 80, seed=2)], dim=1)  # (B, T * C, H, W)
    x = raw.clone()
    x[x == NODATA] = float("nan")
    x = x.unflatten(1, (2, len(FILE_BANDS)))[:, :, [3, 2, 1, 4]].transpose(1, 2)  # (B, C, T, H, W)
    with torch.no_grad():
        expected = task.predictor.logits(x)
    torch.testing.assert_close(run_file(result.path, "torch-export", raw), expected, atol=1e-4, rtol=0)


def test_adaptive_pooling_exports_exactly_at_any_size(tmp_path):
    """ONNX lowers adaptive pooling to fixed windows; geofm's pooling (UperNet's pyramid) is
    exact at sizes that are not multiples of its output."""
    import onnxruntime as ort
    from torch.export import Dim

    from geofm.models.decoders.blocks import AdaptiveAvgPool2d

    pool = AdaptiveAvgPool2d(3)
    program = torch.export.export(
        pool, (torch.randn(2, 2, 12, 12),), dynamic_shapes=({2: Dim("h", min=3), 3: Dim("w", min=3)},)
    )
    torch.onnx.export(program, (torch.randn(2, 2, 12, 12),), tmp_path / "pool.onnx", dynamo=True, verbose=False)
    session = ort.InferenceSession(str(tmp_path / "pool.onnx"), providers=["CPUExecutionProvider"])
    for h, w in [(7, 9), (12, 12), (13, 5)]:
        x = torch.randn(2, 2, h, w)
        expected = nn.AdaptiveAvgPool2d(3)(x)
        torch.testing.assert_close(program.module()(x), expected)
        torch.testing.assert_close(torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]), expected)


def test_band_resolution_reads_numbers_and_identifiers_as_the_datamodule_does():
    from geofm.export.graph import resolve_input_bands

    # TerraTorch's identifiers: output_bands [[1, 3]] are the 2nd to 4th bands of the file.
    bands = resolve_input_bands(3, [[0, 5]], [[1, 3]])
    assert bands.indexes == (1, 2, 3) and bands.file_bands == tuple(f"band_{i}" for i in range(1, 7))
    # A checkpoint's band_indexes are 1-based numbers, never identifiers.
    assert resolve_input_bands(3, [[0, 5]], trained_indexes=[2, 3, 4]).indexes == (1, 2, 3)
    named = resolve_input_bands(2, FILE_BANDS, ["NIR_NARROW", "RED"])
    assert (named.indexes, named.model_bands) == ((4, 3), ("NIR_NARROW", "RED"))
    assert resolve_input_bands(7, FILE_BANDS).indexes is None  # every band, in order
    with pytest.raises(ValueError, match="dataset_bands"):
        resolve_input_bands(2, None, trained_indexes=[2, 3])  # a subset of unknown files
    with pytest.raises(ValueError, match="the model takes 4"):
        resolve_input_bands(4, FILE_BANDS, ["RED"])


# ---------------------------------------------------------------------------- failures
class Tiny(nn.Module):
    """A ready model: 1x1 conv, optionally through an operation ONNX lacks (SVD)."""

    def __init__(self, svd: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        self.svd = svd

    def forward(self, x: torch.Tensor) -> ModelOutput:
        y = self.conv(x)
        if self.svd:
            y = y + torch.linalg.svd(y)[1].mean()
        return ModelOutput(y)


def test_failed_check_writes_nothing(tmp_path, monkeypatch):
    import geofm.export.core as core

    task = SemanticSegmentationTask(model=Tiny(), num_classes=2)
    eager_logits = core._eager_logits
    monkeypatch.setattr(core, "_eager_logits", lambda *args: eager_logits(*args) + 1e-3)
    with pytest.raises(ExportCheckError, match=r"differ .* by up to 0\.001 .*nothing was written"):
        export_task(task, tmp_path / "model.pt2", "torch-export")
    assert list(tmp_path.iterdir()) == []  # no file, no metadata, no staging folder


def test_unsupported_operation_is_named(tmp_path):
    task = SemanticSegmentationTask(model=Tiny(svd=True), num_classes=2)
    with pytest.raises(ExportError, match=r"linalg_svd.*in model \(Tiny\)"):
        export_task(task, tmp_path / "model.onnx", "onnx")
    assert list(tmp_path.iterdir()) == []


def test_coordinate_inputs_are_refused(tmp_path):
    task = SemanticSegmentationTask(model_args={
        "backbone": "prithvi_eo_v2_tiny_tl", "backbone_pretrained": False, "backbone_num_frames": 1,
        "backbone_bands": MODEL_BANDS, "necks": NECKS, "decoder": "FCNDecoder", "decoder_channels": 8,
        "num_classes": 2,
    })
    with pytest.raises(ExportError, match="temporal_coords, location_coords besides the image"):
        export_task(task, tmp_path / "model.onnx", "torch-export")


def test_missing_onnx_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime raises ImportError
    task = SemanticSegmentationTask(model=Tiny(), num_classes=2)
    with pytest.raises(MissingDependencyError, match=r"needs onnxruntime.*pip install 'geofm\[onnx\]'"):
        export_task(task, tmp_path / "model.onnx", "onnx")


# ---------------------------------------------------------------------------- the command
def test_cli_exports_a_trained_checkpoint(tmp_path, capsys, monkeypatch):
    from tests.data.fixtures import make_pixel_folder
    from tests.test_cli import write_config

    root = tmp_path / "data"
    train = make_pixel_folder(root / "train", names=("t_1", "t_2"), size=32, seed=1)
    val = make_pixel_folder(root / "val", names=("v_1", "v_2"), size=32, seed=2)
    config = write_config(tmp_path, (root, train, val))
    assert geofm(["fit", "-c", str(config), "--trainer.max_epochs", "1"]) == 0
    out = tmp_path / "deploy" / "model.onnx"
    out.parent.mkdir()
    capsys.readouterr()
    code = geofm([
        "export", "-c", str(config), "--ckpt_path", "last", "--format", "onnx", "-o", str(out),
        "--nodata", str(NODATA),
    ])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.onnx", "model.onnx.json"]
    assert "max abs difference" in printed.out
    meta = json.loads((out.parent / "model.onnx.json").read_text())
    assert meta["input"]["bands"] == [f"band_{i}" for i in range(1, 7)] and meta["input"]["nodata"] == NODATA
    assert meta["tile"]["size"] == [32, 32]  # the training chips
    assert meta["config_sha256"] and meta["check"]["max_abs_diff"] <= 1e-4
    assert yaml.safe_load(config.read_text())["model"]["init_args"]["model_args"]["num_classes"] == 3
    assert meta["output"]["num_classes"] == 3

    # Errors are one line, exit status 2.
    assert geofm(["export", "-c", str(config), "-o", str(out)]) == 2
    assert "needs --ckpt_path" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    assert geofm(["export", "-c", str(config), "--ckpt_path", "last", "-o", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'geofm[onnx]'" in err[0]


# ---------------------------------------------------------------------------- examples
#: Examples whose export the suite runs (each a few seconds); the others hold 100M-300M
#: parameter backbones (Prithvi 300M, DOFA base, TerraMind base, two ResNet-50s).
SMALL_EXAMPLES = ["classification_prithvi.yaml", "sen1floods11_resnet_unet.yaml", "multitemporal_prithvi_segmentation.yaml"]


@pytest.mark.parametrize("example", SMALL_EXAMPLES)
def test_small_examples_export_or_say_why(example, tmp_path):
    from geofm.export import export_from_config

    path = REPO / "examples" / example
    if example.startswith("multitemporal"):  # Prithvi TL takes dates and locations: refused
        with pytest.raises(ExportError, match="temporal_coords"):
            export_from_config(path, None, tmp_path / "model.onnx", "onnx")
        return
    result = export_from_config(path, None, tmp_path / "model.onnx", "onnx", tile_size=64)
    assert result.max_abs_diff <= 1e-4 and result.metadata["input"]["fixed_size"] is None
    assert result.metadata["input"]["bands"] == yaml.safe_load(path.read_text())["data"]["init_args"]["dataset_bands"]
