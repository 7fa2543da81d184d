"""One checkpoint, one scene: per-chip prediction, in-memory tiling and streaming agree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from lightning.pytorch import Trainer
from torch import nn

from geofm.data import GenericNonGeoSegmentationDataModule
from geofm.inference.in_memory import tiled_forward
from geofm.inference.task_scenes import predict_task_scenes
from geofm.models.model import Model, ModelOutput
from geofm.tasks import SemanticSegmentationTask
from tests.inference.helpers import PositionModel, write_raster

TILING = {"tile_size": 32, "overlap": 8}


class CoordinateModel(Model):
    """A position-dependent model (seams would show) whose output moves with the coordinates."""

    extra_inputs = ("temporal_coords", "location_coords")

    def __init__(self) -> None:
        super().__init__()
        self.encoder = PositionModel(in_chans=3, classes=4, seed=int(torch.randint(0, 1000, ())))
        self.coords = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, temporal_coords=None, location_coords=None) -> ModelOutput:
        features = torch.cat([temporal_coords[:, 0] / 1000, location_coords / 100], dim=1)
        return ModelOutput(self.encoder(x) + self.coords(features)[:, :, None, None])


def _scene(folder: Path) -> np.ndarray:
    folder.mkdir()
    data = write_raster(folder / "scene_20200518_img.tif", 70, 90)
    profile = {"driver": "GTiff", "width": 90, "height": 70, "count": 1, "dtype": "uint8"}
    with rasterio.open(folder / "scene_20200518_lbl.tif", "w", **profile) as dst:
        dst.write((data[1:2] % 4).astype(np.uint8))
    return data


def _datamodule(folder: Path, **kwargs: Any) -> GenericNonGeoSegmentationDataModule:
    return GenericNonGeoSegmentationDataModule(
        batch_size=1,
        train_data_root=folder,
        predict_data_root=folder,
        img_grep="*_img.tif",
        label_grep="*_lbl.tif",
        dataset_bands=[1, 2, 3],
        constant_scale=0.01,
        no_data_replace=0,
        **kwargs,
    )


def _task() -> SemanticSegmentationTask:
    return SemanticSegmentationTask(
        model=CoordinateModel(),
        num_classes=4,
        tiled_inference=TILING,
        output_on_inference=["prediction", "probabilities"],
    )


def test_per_chip_in_memory_and_streaming_agree(tmp_path):
    data = _scene(tmp_path / "scenes")
    trainer = Trainer(
        max_epochs=1, limit_train_batches=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, accelerator="cpu",
    )
    trained = _task()
    trainer.fit(trained, datamodule=_datamodule(tmp_path / "scenes", means=[5.0] * 3, stds=[3.0] * 3))
    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    valid = data.any(axis=0)

    # 1. Per-chip prediction through Lightning (tiled in memory inside predict_step). The
    #    predict datamodule's other means must not matter: the checkpoint's preprocessing wins.
    predict_dm = _datamodule(tmp_path / "scenes", means=[1.0] * 3, stds=[1.0] * 3)
    per_chip = Trainer(logger=False, enable_progress_bar=False, accelerator="cpu").predict(
        _task(), datamodule=predict_dm, ckpt_path=ckpt
    )[0]
    probabilities = per_chip["probabilities"][0].numpy()

    # 2. The tiler called directly on the raw scene, with the sample's coordinates.
    predict_dm.setup("predict")
    sample = predict_dm.predict_dataset[0]
    extra = {k: sample[k][None] for k in ("temporal_coords", "location_coords")}
    with torch.no_grad():
        in_memory = tiled_forward(trained.predictor, sample["image"][None], **TILING, extra=extra)
    np.testing.assert_allclose(in_memory[0].numpy(), probabilities, atol=1e-5)

    # 3. Streaming, from a fresh task and datamodule.
    settings = {**TILING, "progress": False, "num_workers": 0}
    out = tmp_path / "out"
    (probs_path,) = predict_task_scenes(
        _task(), _datamodule(tmp_path / "scenes"), ckpt, out / "p", {**settings, "output": "probabilities"}
    )
    (class_path,) = predict_task_scenes(_task(), _datamodule(tmp_path / "scenes"), ckpt, out / "c", settings)
    with rasterio.open(probs_path) as src:
        streamed = src.read()
    with rasterio.open(class_path) as src:
        classes = src.read(1)
    np.testing.assert_allclose(streamed[:, valid], probabilities[:, valid], atol=1e-5)
    np.testing.assert_array_equal(classes[valid], per_chip["prediction"][0].numpy()[valid])
    assert (classes[~valid] == 255).all()


def test_coordinates_change_the_prediction(tmp_path):
    _scene(tmp_path / "scenes")
    dm = _datamodule(tmp_path / "scenes")
    dm.setup("predict")
    sample = dm.predict_dataset[0]
    task = _task()
    task.configure_preprocess(dm)
    extra = {k: sample[k][None] for k in ("temporal_coords", "location_coords")}
    with torch.no_grad():
        base = task.predictor(sample["image"][None], **extra)
        later = task.predictor(
            sample["image"][None], **{**extra, "temporal_coords": extra["temporal_coords"] + 1000}
        )
    assert not torch.allclose(base, later)
