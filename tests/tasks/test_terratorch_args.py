"""TerraTorch's task arguments do what they do in TerraTorch, or fail naming geofm's equivalent:
tiled_inference_parameters (+ its stage flags), lr_overrides, aux_heads, plot_on_val as bool."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch
from torch import nn

import geofm.inference
from geofm.inference import tiled_forward
from geofm.models.model import AuxiliaryHead, Model, ModelOutput
from geofm.tasks import ClassificationTask, SemanticSegmentationTask
from geofm.tasks import plotting
from geofm.tasks.terratorch_args import tiled_from_terratorch

from .helpers import DictDataModule, TinyClassifier, TinyPixelModel, collate, make_samples, trainer
from .test_plotting import FigureLogger
from tests.test_cli import folders  # noqa: F401 - the fixture is used by name


class PointwiseModel(Model):
    """1x1 convolutions only: tiles give exactly the whole-image result."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Conv2d(4, 8, 1)
        self.decoder = nn.Identity()
        self.head = nn.Conv2d(8, 3, 1)

    def forward(self, x: torch.Tensor, **kwargs: Any) -> ModelOutput:
        return ModelOutput(self.head(torch.relu(self.encoder(x))))


# ---------------------------------------------------------------- tiled_inference_parameters
def test_tiled_parameters_map_onto_tiled_forward_with_terratorch_defaults(caplog):
    got = tiled_from_terratorch({"h_crop": 16, "w_crop": 12, "h_stride": 12, "w_stride": 8})
    # delta: TerraTorch's default 8 is lowered to half the overlap, as TerraTorch does.
    assert got == {"tile_size": (16, 12), "stride": (12, 8), "batch_size": 16, "window": "hann", "margin": 2}
    assert tiled_from_terratorch({"crop": 32, "stride": 16, "delta": 3, "blend_overlaps": False, "batch_size": 4}) == {
        "tile_size": (32, 32), "stride": (16, 16), "batch_size": 4, "window": "uniform", "margin": 3,
    }
    defaults = tiled_from_terratorch({})
    assert defaults["tile_size"] == (224, 224) and defaults["stride"] == (192, 192) and defaults["margin"] == 8
    with caplog.at_level(logging.WARNING, logger="geofm.tasks.terratorch_args"):
        lowered = tiled_from_terratorch({"crop": 16, "stride": 12, "delta": 5, "out_channels": 3})
    assert lowered["margin"] == 2
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "delta=5" in messages and "out_channels is ignored" in messages


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"h_crops": 16}, r"tiled_inference_parameters\.h_crops: unknown key \(did you mean 'h_crop'\?\)\. Accepted: h_crop, w_crop"),
        ({"average_patches": False}, r"tiled_inference_parameters\.average_patches=False: geofm always averages"),
        ({"padding": False}, r"tiled_inference_parameters\.padding=False: .*reflection"),
        ({"padding": "constant"}, r"padding='constant'"),
        ({"verbose": True}, r"tiled_inference_parameters\.verbose=True"),
        ({"h_crop": 16, "w_crop": 16, "h_stride": 20, "w_stride": 8}, r"tiled_inference_parameters\.h_stride is larger than the tile \(h_crop=16\)"),
        ({"crop": 64}, r"TerraTorch's default stride \(192\) is larger than the tile"),
        ({"inference_parameters": {}}, r"deprecated dataclass"),
        ({"delta": -1}, r"delta=-1 must be an integer >= 0"),
    ],
)
def test_tiled_parameters_errors_name_the_key(params, message):
    with pytest.raises(ValueError, match=message):
        tiled_from_terratorch(params)


def test_tiled_parameters_tile_predict_only_unless_flags_ask(monkeypatch):
    calls = []

    def spy(fn, image, **options):
        calls.append(options)
        return tiled_forward(fn, image, **options)

    monkeypatch.setattr(geofm.inference, "tiled_forward", spy)
    params = {"h_crop": 16, "w_crop": 16, "h_stride": 12, "w_stride": 12, "delta": 2, "batch_size": 3}
    dm = DictDataModule(make_samples("segmentation", n=2))
    model = PointwiseModel()
    whole = SemanticSegmentationTask(model=model, num_classes=3, output_on_inference="probabilities")
    task = SemanticSegmentationTask(
        model=model, num_classes=3, output_on_inference="probabilities", tiled_inference_parameters=params
    )
    trainer(limit_val_batches=1).validate(task, datamodule=dm)
    trainer(limit_test_batches=1).test(task, datamodule=dm)
    assert calls == []  # TerraTorch validates and tests on whole images by default
    got = trainer(limit_predict_batches=1).predict(task, datamodule=dm)[0]["probabilities"]
    assert calls == [{"extra": {}, "tile_size": (16, 16), "stride": (12, 12), "batch_size": 3, "window": "hann", "margin": 2}]
    expected = trainer(limit_predict_batches=1).predict(whole, datamodule=dm)[0]["probabilities"]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)

    both = SemanticSegmentationTask(
        model=model, num_classes=3, tiled_inference_parameters=params,
        tiled_inference_on_validation=True, tiled_inference_on_testing=True,
    )
    calls.clear()
    trainer(limit_val_batches=1).validate(both, datamodule=dm)
    trainer(limit_test_batches=1).test(both, datamodule=dm)
    assert len(calls) == 2


def test_delta_crops_tile_borders():
    """With TerraTorch's delta, a tile's outputs within delta of its edge are not used where
    another tile's inside covers the pixel."""
    delta = 3

    def border_marker(tiles: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(tiles.shape[0], 1, *tiles.shape[-2:])
        out[..., :delta, :] = out[..., -delta:, :] = 1.0
        out[..., :, :delta] = out[..., :, -delta:] = 1.0
        return out

    image = torch.zeros(1, 1, 40, 40)
    options = tiled_from_terratorch({"crop": 16, "stride": 10, "delta": delta})
    cropped = tiled_forward(border_marker, image, **options)
    assert cropped.max() < 1e-3  # every pixel lies inside some tile
    plain = tiled_forward(border_marker, image, **{**options, "margin": 0})
    assert plain.max() > 1e-3  # without delta the borders do count


def test_tiled_parameters_conflicts():
    model = PointwiseModel()
    with pytest.raises(ValueError, match=r"tiled_inference_parameters and tiled_inference both set"):
        SemanticSegmentationTask(model=model, num_classes=3, tiled_inference={"tile_size": 16},
                                 tiled_inference_parameters={"crop": 16, "stride": 16})
    with pytest.raises(ValueError, match=r"tiled_inference_on_validation applies to tiled_inference_parameters"):
        SemanticSegmentationTask(model=model, num_classes=3, tiled_inference_on_validation=True)
    with pytest.raises(ValueError, match=r"does not support tiled_inference_parameters"):
        ClassificationTask(model=TinyClassifier(), num_classes=3, tiled_inference_parameters={"crop": 16})


# ---------------------------------------------------------------- lr_overrides
def _lr_by_parameter(task) -> dict[str, float]:
    optimizer = task.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    by_id = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    return {name: by_id[id(p)] for name, p in task.model.named_parameters()}


def test_lr_overrides_give_the_rate_to_parameters_whose_name_contains_the_key():
    task = SemanticSegmentationTask(model=TinyPixelModel(), num_classes=3, lr=1e-3,
                                    lr_overrides={"encoder": 1e-5, "model.head": 1e-4})
    lrs = _lr_by_parameter(task)
    assert {n for n, lr in lrs.items() if lr == 1e-5} == {n for n in lrs if n.startswith("encoder.")}
    assert {n for n, lr in lrs.items() if lr == 1e-4} == {"head.weight", "head.bias"}
    assert {n for n, lr in lrs.items() if lr == 1e-3} == {n for n in lrs if n.startswith("decoder.")}
    # A substring in the middle of names, as TerraTorch matches: every bias.
    lrs = _lr_by_parameter(SemanticSegmentationTask(model=TinyPixelModel(), num_classes=3, lr_overrides={"bias": 0.5}))
    assert {n for n, lr in lrs.items() if lr == 0.5} == {n for n in lrs if n.endswith("bias")}


def test_lr_overrides_errors():
    task = SemanticSegmentationTask(model=TinyPixelModel(), num_classes=3, lr_overrides={"backbone": 1e-5})
    with pytest.raises(ValueError, match=r"lr_overrides\.backbone: no trainable parameter name contains 'backbone' \(names look like \['model\.encoder"):
        task.configure_optimizers()
    with pytest.raises(ValueError, match=r"lr_overrides and param_groups both"):
        SemanticSegmentationTask(model=TinyPixelModel(), num_classes=3, lr_overrides={"encoder": 1e-5},
                                 param_groups=[{"pattern": "head.*", "lr": 1e-4}])


# ---------------------------------------------------------------- aux_heads
FACTORY_ARGS = {"backbone": "timm_resnet18", "backbone_pretrained": False, "decoder": "smp_Unet",
                "backbone_in_chans": 4, "decoder_decoder_channels": [32, 16, 16, 8, 8]}


def test_aux_heads_are_built_and_weighted_by_aux_loss():
    heads = [{"name": "aux", "decoder": "smp_FPN", "decoder_args": {"decoder_decoder_segmentation_channels": 32}},
             AuxiliaryHead("deep", "smp_PSPNet", {"decoder_psp_out_channels": 8})]
    task = SemanticSegmentationTask(model_args=FACTORY_ARGS, num_classes=3, aux_heads=heads,
                                    aux_loss={"aux": 0.4, "deep": 0.2})
    assert set(task.model.aux_heads) == {"aux", "deep"}
    assert task.hparams.aux_heads[1] == {"name": "deep", "decoder": "smp_PSPNet",
                                         "decoder_args": {"decoder_psp_out_channels": 8}}  # plain, for checkpoints
    batch = collate(make_samples("segmentation", n=2))
    task.train()
    torch.manual_seed(0)
    with pytest.warns(UserWarning):  # self.log without a trainer
        loss = task.training_step(batch, 0)
    torch.manual_seed(0)  # the same forward (dropout draws) again
    with torch.no_grad():
        out = task(batch["image"])
    ce = torch.nn.functional.cross_entropy
    target = batch["mask"]
    expected = (ce(out.output, target) + 0.4 * ce(out.auxiliary_heads["aux"], target)
                + 0.2 * ce(out.auxiliary_heads["deep"], target))
    torch.testing.assert_close(loss.detach(), expected)


def test_aux_heads_conflicts():
    with pytest.raises(ValueError, match=r"aux_heads is built by the model factory, but a ready model"):
        SemanticSegmentationTask(model=TinyPixelModel(), num_classes=3, aux_heads=[{"name": "a", "decoder": "smp_FPN"}])
    with pytest.raises(ValueError, match=r"aux_heads and model_args\.aux_decoders both"):
        SemanticSegmentationTask(model_args={**FACTORY_ARGS, "aux_decoders": [{"name": "b", "decoder": "smp_FPN"}]},
                                 num_classes=3, aux_heads=[{"name": "a", "decoder": "smp_FPN"}])
    with pytest.raises(ValueError, match=r"aux_heads\[0\] needs 'name' and 'decoder'"):
        SemanticSegmentationTask(model_args=FACTORY_ARGS, num_classes=3, aux_heads=[{"decoder": "smp_FPN"}])


# ---------------------------------------------------------------- plot_on_val
@pytest.mark.parametrize(("plot_on_val", "epochs"), [(True, [0, 1, 2]), (2, [0, 2]), (False, []), (0, [])])
def test_plot_on_val_is_an_epoch_period_of_ten_batches(plot_on_val, epochs):
    logger = FigureLogger()
    task = SemanticSegmentationTask(model=TinyPixelModel(), num_classes=3, plot_on_val=plot_on_val)
    dm = DictDataModule(make_samples("segmentation", n=24), batch_size=2)  # 12 validation batches
    trainer(logger=logger, max_epochs=3, limit_train_batches=1, limit_val_batches=12).fit(task, datamodule=dm)
    steps = sorted({step for _, _, step in logger.figures})
    assert steps == [e + 1 for e in epochs]  # one training batch per epoch before validating
    for step in steps:  # TerraTorch plots the first 10 batches of a plotting epoch
        tags = [tag for tag, _, s in logger.figures if s == step]
        assert tags == [f"val/sample_{i}" for i in range(10)]


def test_plot_on_val_rejects_negative():
    with pytest.raises(ValueError, match=r"plot_on_val=-1 must be true/false or a number of epochs"):
        SemanticSegmentationTask(model=TinyPixelModel(), num_classes=3, plot_on_val=-1)


@pytest.fixture(autouse=True)
def _fast_plots(monkeypatch, request):
    """Figures are checked by tag, not drawn, in the plot_on_val tests."""
    if "plot_on_val_is" in request.node.name:
        monkeypatch.setattr(plotting, "plot_sample", lambda *a, **k: object())
    yield



# ---------------------------------------------------------------- a TerraTorch config, end to end
def test_terratorch_config_with_these_names_trains(tmp_path, folders):  # noqa: F811
    import yaml

    from geofm.cli_lightning import run_lightning_cli
    from tests.test_cli import write_config

    config = yaml.safe_load(write_config(tmp_path, folders).read_text())
    config["model"]["class_path"] = "terratorch.tasks.SemanticSegmentationTask"
    config["trainer"].update({"max_epochs": 1, "limit_train_batches": 1, "limit_val_batches": 1})
    model = config["model"]["init_args"]
    model["model_args"]["backbone_pretrained"] = False
    model.update({
        "aux_heads": [{"name": "aux", "decoder": "smp_Unet",
                       "decoder_args": {"decoder_encoder_depth": 3, "decoder_decoder_channels": [8, 8, 8]}}],
        "aux_loss": {"aux": 0.5},
        "lr_overrides": {"encoder": 1e-5},
        "plot_on_val": True,
        "tiled_inference_parameters": {"h_crop": 16, "w_crop": 16, "h_stride": 12, "w_stride": 12,
                                       "average_patches": True, "delta": 2},
        "tiled_inference_on_validation": True,
    })
    means = tmp_path / "means.txt"
    means.write_text("\n".join(["100.0"] * 6))
    stds = tmp_path / "stds.txt"
    stds.write_text("\n".join(["50.0"] * 6))
    config["data"]["class_path"] = "terratorch.datamodules.GenericNonGeoSegmentationDataModule"
    config["data"]["init_args"].update({
        "dataset_bands": [[0, 5]], "output_bands": [[0, 5]], "means": str(means), "stds": str(stds),
        "allow_substring_split_file": True, "check_stackability": True, "rgb_indices": [2, 1, 0],
        "reduce_zero_label": False, "expand_temporal_dimension": False, "no_label_replace": 255,
        "constant_scale": 1.0,
    })
    path = tmp_path / "terratorch.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    from geofm.cli import main as geofm

    assert geofm(["check-config", str(path)]) == 0  # every name is known to the parser
    cli = run_lightning_cli(["fit", "-c", str(path)])
    task, dm = cli.model, cli.datamodule
    assert set(task.model.aux_heads) == {"aux"}
    assert task._tiled == {"tile_size": (16, 16), "stride": (12, 12), "batch_size": 16, "window": "hann", "margin": 2}
    assert task._tiled_stages == {"val", "predict"}
    assert dm.means == [100.0] * 6 and dm.rgb_indices == [2, 1, 0]
    optimizer = cli.trainer.optimizers[0]
    encoder = {id(p) for p in task.model.encoder.parameters()}
    for group in optimizer.param_groups:
        ids = {id(p) for p in group["params"]}
        assert ids <= encoder if group["lr"] == 1e-5 else not ids & encoder


# ---------------------------------------------------------------- output_most_probable, path_to_record_metrics
def test_output_most_probable_false_returns_probabilities():
    dm = DictDataModule(make_samples("segmentation", n=2))
    task = SemanticSegmentationTask(model=PointwiseModel(), num_classes=3, output_most_probable=False)
    out = trainer(limit_predict_batches=1).predict(task, datamodule=dm)[0]
    assert set(out) >= {"probabilities"} and "prediction" not in out
    torch.testing.assert_close(out["probabilities"].sum(1), torch.ones_like(out["probabilities"][:, 0]))
    default = SemanticSegmentationTask(model=PointwiseModel(), num_classes=3)
    assert "prediction" in trainer(limit_predict_batches=1).predict(default, datamodule=dm)[0]
    with pytest.raises(ValueError, match="output_most_probable: false and output_on_inference"):
        SemanticSegmentationTask(model=PointwiseModel(), num_classes=3, output_most_probable=False,
                                 output_on_inference="logits")


def test_path_to_record_metrics_writes_the_test_metrics(tmp_path):
    import csv

    dm = DictDataModule(make_samples("segmentation", n=4))
    task = SemanticSegmentationTask(model=PointwiseModel(), num_classes=3, path_to_record_metrics=str(tmp_path / "m"))
    logged = trainer().test(task, datamodule=dm)[0]
    rows = list(csv.reader((tmp_path / "m" / "metrics.csv").open()))
    assert rows[0] == ["Metric", "Value"]
    written = {name: float(value) for name, value in rows[1:]}
    assert written["test/mIoU"] == pytest.approx(logged["test/mIoU"])
    assert set(written) == {k for k in logged if k != "test/loss"}
    assert not [p for p in (tmp_path / "m").iterdir() if p.name != "metrics.csv"]  # no temporary file left
