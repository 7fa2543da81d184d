"""Dict images through SemanticSegmentationTask: per-modality preprocessing, checks, predict."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from torch import nn

from geofm.inference.prediction_writer import GeoTiffPredictionWriter
from geofm.models.model import Model, ModelOutput
from geofm.models.preprocess import MultiModalPreprocess
from geofm.tasks.segmentation import SemanticSegmentationTask
from tests.data.fixtures import IMAGE_NODATA
from tests.data.test_multimodal import MultiModalFolder, datamodule, make_multimodal_folder
from tests.tasks.helpers import TinyPixelModel, trainer

# TerraMind's S2L2A pretraining statistics (zoo spec) and made-up S1GRD ones.
S2_MEAN = [1390.458, 1503.317, 1718.197, 1853.91, 2199.1, 2779.975, 2987.011, 3083.234, 3132.22, 3162.988, 2424.884, 1857.648]
S2_STD = [2106.761, 2141.107, 2038.973, 2134.138, 2085.321, 1889.926, 1820.257, 1871.918, 1753.829, 1797.379, 1434.261, 1334.311]
S1_MEAN, S1_STD = [-12.599, -20.293], [5.195, 5.890]


class StandInBackbone(nn.Module):
    """Declares modalities and per-modality pretraining statistics, as TerraMind does."""

    modalities = ("S2L2A", "S1GRD")

    def __init__(self) -> None:
        super().__init__()
        self.pretrained_stats: dict[str, Any] = {
            "S2L2A": {"bands": [f"B{i}" for i in range(12)], "mean": S2_MEAN, "std": S2_STD},
            "S1GRD": {"bands": ["VV", "VH"], "mean": S1_MEAN, "std": S1_STD},
        }
        self.embed = nn.ModuleDict({"S2L2A": nn.Conv2d(12, 4, 1), "S1GRD": nn.Conv2d(2, 4, 1)})


class StandInMultiModalModel(Model):
    """Takes ``{modality: (B, C_m, H, W)}``, sums per-modality embeddings, 1x1 head."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.encoder = StandInBackbone()
        self.head = nn.Conv2d(4, num_classes, 1)
        self.seen: list[dict[str, torch.Tensor]] = []

    def forward(self, x: dict[str, torch.Tensor], **kwargs: Any) -> ModelOutput:
        assert isinstance(x, dict), type(x)
        self.seen.append({k: v.detach().clone() for k, v in x.items()})
        features = sum(self.encoder.embed[k](v) for k, v in x.items())
        return ModelOutput(self.head(features))


@pytest.fixture
def folder(tmp_path: Path) -> MultiModalFolder:
    return make_multimodal_folder(tmp_path / "data")


def expected_input(folder: MultiModalFolder, filename: str, modality: str, mean, std) -> torch.Tensor:
    name = Path(filename).name.removesuffix("_S2L2A.tif")
    raw = torch.from_numpy((folder.s2 if modality == "S2L2A" else folder.s1)[name]).double()
    m = torch.tensor(mean, dtype=torch.float64)[:, None, None]
    s = torch.tensor(std, dtype=torch.float64)[:, None, None]
    filled = torch.where(raw == IMAGE_NODATA, m, raw)  # nodata takes the band mean: 0 after
    return ((filled - m) / s).float()


def test_one_training_step_sees_per_modality_normalised_values(folder, caplog):
    # S1GRD statistics from the datamodule; S2L2A from the backbone's pretraining statistics.
    dm = datamodule(folder, means={"S1GRD": [-18.0, -18.0]}, stds={"S1GRD": [2.0, 4.0]}, batch_size=2)
    model = StandInMultiModalModel()
    task = SemanticSegmentationTask(model=model, num_classes=3)
    assert isinstance(task.preprocess, MultiModalPreprocess)
    with caplog.at_level(logging.INFO, logger="geofm.tasks.base"):
        trainer(limit_train_batches=1, limit_val_batches=0).fit(task, datamodule=dm)
    logged = [r.getMessage() for r in caplog.records if "pretraining statistics" in r.getMessage()]
    assert len(logged) == 1 and "'S2L2A'" in logged[0]  # once, for the modality without stats

    seen = model.seen[0]
    assert set(seen) == {"S2L2A", "S1GRD"}
    assert seen["S2L2A"].shape == (2, 12, 16, 16) and seen["S1GRD"].shape == (2, 2, 16, 16)
    # Which files the shuffled batch held: the model saw them in dataset order of the batch.
    files = [dm.train_dataset.reference_files[i] for i in range(len(dm.train_dataset))]
    for b in range(2):
        matches = [
            f for f in files
            if torch.allclose(seen["S1GRD"][b], expected_input(folder, str(f), "S1GRD", [-18.0, -18.0], [2.0, 4.0]))
        ]
        assert len(matches) == 1
        f = str(matches[0])
        torch.testing.assert_close(seen["S2L2A"][b], expected_input(folder, f, "S2L2A", S2_MEAN, S2_STD))
        # Exact numbers: S1 (-18 - x) / 2 for VV; a nodata S2 pixel is exactly 0.
        name = Path(f).name.removesuffix("_S2L2A.tif")
        vv = float(folder.s1[name][0, 0, 0])
        assert seen["S1GRD"][b, 0, 0, 0].item() == pytest.approx((vv + 18.0) / 2.0, abs=1e-6)
        r, c = np.argwhere(folder.s2[name][0] == IMAGE_NODATA)[0]
        assert seen["S2L2A"][b, :, r, c].abs().max().item() == 0.0
    assert task.preprocess["S2L2A"].source.startswith("the backbone's pretraining statistics")
    assert task.preprocess["S1GRD"].source == "GenericMultiModalDataModule.means/stds['S1GRD']"


def test_checkpoint_round_trip_keeps_per_modality_statistics(folder, tmp_path):
    dm = datamodule(folder, means={"S1GRD": [-18.0, -18.0]}, stds={"S1GRD": [2.0, 4.0]},
                    dataset_bands={"S1GRD": ["VV", "VH"]})
    task = SemanticSegmentationTask(model=StandInMultiModalModel(), num_classes=3)
    t = trainer(limit_train_batches=1, limit_val_batches=1)
    t.fit(task, datamodule=dm)
    path = tmp_path / "task.ckpt"
    t.save_checkpoint(path)
    state = torch.load(path, weights_only=True)["state_dict"]
    assert "preprocess.S1GRD.mean" in state and "preprocess.mean" not in state
    loaded = SemanticSegmentationTask.load_from_checkpoint(path, model=StandInMultiModalModel())
    torch.testing.assert_close(loaded.preprocess["S1GRD"].mean, torch.tensor([-18.0, -18.0]))
    torch.testing.assert_close(loaded.preprocess["S1GRD"].std, torch.tensor([2.0, 4.0]))
    torch.testing.assert_close(loaded.preprocess["S2L2A"].mean, torch.tensor(S2_MEAN))
    assert loaded.preprocess["S1GRD"].bands == ["VV", "VH"]

    # Predicting with other S1 bands than trained is refused, naming the modality.
    swapped = datamodule(folder, dataset_bands={"S1GRD": ["VV", "VH"]}, output_bands={"S1GRD": ["VH", "VV"]})
    with pytest.raises(ValueError, match=r"bands of modality 'S1GRD' \['VV', 'VH'\].*\['VH', 'VV'\]"):
        trainer().predict(SemanticSegmentationTask(model=StandInMultiModalModel(), num_classes=3),
                          datamodule=swapped, ckpt_path=path)


def test_predict_writes_on_the_first_modality_grid(folder, tmp_path):
    dm = datamodule(folder, batch_size=2)
    task = SemanticSegmentationTask(model=StandInMultiModalModel(), num_classes=3)
    out = tmp_path / "predictions"
    t = trainer(callbacks=[GeoTiffPredictionWriter(out)], limit_predict_batches=None)
    t.predict(task, datamodule=dm, return_predictions=False)
    written = sorted(p.name for p in out.glob("*_pred.tif"))
    assert written == sorted(f"{n}_S2L2A_pred.tif" for n in folder.s2)
    with rasterio.open(out / "a_10_S2L2A_pred.tif") as src, rasterio.open(folder.root / "S2L2A" / "a_10_S2L2A.tif") as ref:
        assert src.transform == ref.transform and src.crs == ref.crs
        assert (src.height, src.width) == (ref.height, ref.width)
        prediction = src.read(1)
        # nodata where any modality was nodata
        nodata = (folder.s2["a_10"] == IMAGE_NODATA).any(axis=0)
        assert src.nodata is not None and (prediction[nodata] == src.nodata).all()


def test_tiled_inference_cuts_every_modality_alike(folder):
    """A pointwise model: tiles of every modality cut on one grid give the whole-image result;
    each tile reaches the model as a dict of tiles of the planned size."""
    model = StandInMultiModalModel()
    whole = SemanticSegmentationTask(model=model, num_classes=3, output_on_inference="probabilities")
    tiled = SemanticSegmentationTask(model=model, num_classes=3, output_on_inference="probabilities",
                                     tiled_inference={"tile_size": 8, "overlap": 2})
    expected = trainer().predict(whole, datamodule=datamodule(folder))
    model.seen.clear()
    got = trainer().predict(tiled, datamodule=datamodule(folder))
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a["probabilities"], b["probabilities"], atol=1e-5, rtol=1e-5)
    assert model.seen and all(set(x) == {"S2L2A", "S1GRD"} for x in model.seen)
    assert {tuple(v.shape[-2:]) for x in model.seen for v in x.values()} == {(8, 8)}
    trainer().validate(tiled, datamodule=datamodule(folder))  # validation tiles too


def test_tiled_forward_refuses_modalities_on_other_grids():
    from geofm.inference import tiled_forward

    image = {"S2L2A": torch.zeros(1, 12, 16, 16), "S1GRD": torch.zeros(1, 2, 8, 8)}
    with pytest.raises(ValueError, match=r"one grid, but S1GRD is \(1, 2, 8, 8\)"):
        tiled_forward(lambda x: x["S2L2A"], image, tile_size=8)


def test_batch_checks_name_the_modality():
    task = SemanticSegmentationTask(model=StandInMultiModalModel(), num_classes=3)
    task.configure_preprocess(None)  # backbone statistics
    unknown = {"image": {"S2L1C": torch.zeros(1, 13, 16, 16)}, "mask": torch.zeros(1, 16, 16, dtype=torch.long)}
    with pytest.raises(ValueError, match=r"modality 'S2L1C' but the model takes \['S2L2A', 'S1GRD'\]"):
        task.validation_step(unknown, 0)
    wrong = {"image": {"S1GRD": torch.zeros(1, 3, 16, 16)}, "mask": torch.zeros(1, 16, 16, dtype=torch.long)}
    with pytest.raises(ValueError, match=r"Modality 'S1GRD': .*2 values per band list but the batch has 3 bands"):
        task.validation_step(wrong, 0)
    # Names match as TerraMind matches them: case-insensitive, s1 == sen1.
    # The data's key is kept: the backbone matches names itself.
    x = {"untok_sen1grd@224": torch.tensor(S1_MEAN).view(1, 2, 1, 1)}
    out = task.preprocess(x)
    assert list(out) == ["untok_sen1grd@224"] and out["untok_sen1grd@224"].abs().max() < 1e-6
    assert task.predictor.logits({"S1GRD": torch.zeros(1, 2, 16, 16)}).shape == (1, 3, 16, 16)


def test_single_modality_model_refuses_dict_images(folder):
    task = SemanticSegmentationTask(model=TinyPixelModel(in_chans=12), num_classes=3)
    with pytest.raises(ValueError, match=r"gives modalities \['S2L2A', 'S1GRD'\] but the model declares none"):
        trainer().validate(task, datamodule=datamodule(folder))
    with pytest.raises(ValueError, match="declares no modalities"):
        task.validation_step({"image": {"S2L2A": torch.zeros(1, 12, 16, 16)}}, 0)
    with pytest.raises(ValueError, match="means/stds are given by modality"):
        SemanticSegmentationTask(model=TinyPixelModel(), num_classes=3, means={"S2L2A": [0.0]}, stds={"S2L2A": [1.0]})


def test_task_means_by_modality_win(folder):
    task = SemanticSegmentationTask(
        model=StandInMultiModalModel(), num_classes=3, means={"S1GRD": [0.0, 0.0]}, stds={"S1GRD": [1.0, 1.0]}
    )
    dm = datamodule(folder, means={"S1GRD": [-18.0, -18.0]}, stds={"S1GRD": [2.0, 4.0]})
    task.configure_preprocess(dm, "fit")
    torch.testing.assert_close(task.preprocess["S1GRD"].mean, torch.zeros(2))
    with pytest.raises(ValueError, match=r"give the task's means and stds as dicts by modality"):
        SemanticSegmentationTask(model=StandInMultiModalModel(), num_classes=3, means=[0.0], stds=[1.0])


def test_single_modality_datamodule_feeds_the_first_modality(tmp_path):
    """A bare tensor image is the model's first modality (as TerraMind takes it)."""
    from geofm.data.datamodules.segmentation import GenericNonGeoSegmentationDataModule

    folder = make_multimodal_folder(tmp_path / "data")
    dm = GenericNonGeoSegmentationDataModule(
        batch_size=2,
        train_data_root=folder.root / "S2L2A",
        train_label_data_root=folder.root / "labels",
        img_grep="*_S2L2A.tif",
        label_grep="*_label.tif",
        means=[0.0] * 12,
        stds=[2.0] * 12,
        num_classes=3,
    )
    task = SemanticSegmentationTask(model=StandInMultiModalModel(), num_classes=3)
    task.configure_preprocess(dm, "fit")
    torch.testing.assert_close(task.preprocess["S2L2A"].std, torch.full((12,), 2.0))
    torch.testing.assert_close(task.preprocess["S1GRD"].mean, torch.tensor(S1_MEAN))  # backbone's
    x = torch.full((1, 12, 4, 4), 6.0)
    torch.testing.assert_close(task.preprocess(x), torch.full((1, 12, 4, 4), 3.0))


def test_modalities_unknown_to_the_model_fail_at_setup(tmp_path):
    folder = make_multimodal_folder(tmp_path / "data")
    (folder.root / "S1GRD").rename(folder.root / "DEM")
    for f in (folder.root / "DEM").iterdir():
        f.rename(f.with_name(f.name.replace("S1GRD", "DEM")))
    dm = datamodule(folder, modalities=["S2L2A", "DEM"],
                    train_data_root={"S2L2A": str(folder.root / "S2L2A"), "DEM": str(folder.root / "DEM")},
                    val_data_root=None, predict_data_root=None,
                    image_grep={"S2L2A": "*_S2L2A.tif", "DEM": "*_DEM.tif"})
    task = SemanticSegmentationTask(model=StandInMultiModalModel(), num_classes=3)
    with pytest.raises(ValueError, match=r"gives modality 'DEM' but the model takes modalities \['S2L2A', 'S1GRD'\]"):
        trainer().fit(task, datamodule=dm)

