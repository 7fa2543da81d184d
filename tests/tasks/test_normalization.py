"""Normalisation on the device after the datamodule's batch augmentation; band checks."""

from __future__ import annotations

import logging

import pytest
import torch

from geofm.tasks import SemanticSegmentationTask

from .helpers import SIZE, DictDataModule, FixedOutputModel, TinyPixelModel, collate, make_samples, trainer

MEANS = [100.0, 200.0, 300.0, 400.0]
STDS = [10.0, 20.0, 30.0, 40.0]


def _expected(image: torch.Tensor, means=MEANS, stds=STDS) -> torch.Tensor:
    shape = (1, -1) + (1,) * (image.ndim - 2)
    return (image - torch.tensor(means).view(shape)) / torch.tensor(stds).view(shape)


def test_datamodule_means_and_stds_are_applied():
    samples = make_samples("segmentation", n=2)
    model = TinyPixelModel()
    task = SemanticSegmentationTask(model=model, num_classes=3)
    trainer(limit_val_batches=1).validate(task, datamodule=DictDataModule(samples, means=MEANS, stds=STDS))
    torch.testing.assert_close(model.seen[0], _expected(collate(samples)["image"]))


def test_task_means_override_the_datamodule():
    samples = make_samples("segmentation", n=2)
    model = TinyPixelModel()
    task = SemanticSegmentationTask(model=model, num_classes=3, means=[0.0] * 4, stds=[2.0] * 4)
    trainer(limit_val_batches=1).validate(task, datamodule=DictDataModule(samples, means=MEANS, stds=STDS))
    torch.testing.assert_close(model.seen[0], collate(samples)["image"] / 2)


class AugmentingDataModule(DictDataModule):
    """Doubles the image in its own on_after_batch_transfer (a stand-in for kornia augmentation)."""

    def on_after_batch_transfer(self, batch, dataloader_idx):
        return {**batch, "image": batch["image"] * 2}


def test_normalisation_follows_datamodule_augmentation():
    samples = make_samples("segmentation", n=2)
    model = TinyPixelModel()
    task = SemanticSegmentationTask(model=model, num_classes=3)
    dm = AugmentingDataModule(samples, means=MEANS, stds=STDS)
    trainer(limit_val_batches=1).validate(task, datamodule=dm)
    torch.testing.assert_close(model.seen[0], _expected(collate(samples)["image"] * 2))


def test_temporal_images_and_model_inputs():
    samples = make_samples("segmentation", n=2)
    for i, sample in enumerate(samples):
        sample["image"] = torch.rand(4, 3, SIZE, SIZE) * 500  # (C, T, H, W)
        sample["temporal_coords"] = torch.tensor([[2020.0, 1.0], [2020.0, 2.0], [2020.0, 3.0]]) + i
    model = FixedOutputModel([torch.randn(2, 3, SIZE, SIZE)])
    task = SemanticSegmentationTask(model=model, num_classes=3)
    trainer(limit_val_batches=1).validate(task, datamodule=DictDataModule(samples, means=MEANS, stds=STDS))
    image, kwargs = model.seen[0]
    torch.testing.assert_close(image, _expected(collate(samples)["image"]))
    assert image.shape == (2, 4, 3, SIZE, SIZE)
    torch.testing.assert_close(kwargs["temporal_coords"], collate(samples)["temporal_coords"])


def test_integer_images_become_float():
    samples = make_samples("segmentation", n=2)
    for sample in samples:
        sample["image"] = sample["image"].to(torch.int16)
    model = TinyPixelModel()
    task = SemanticSegmentationTask(model=model, num_classes=3)
    trainer(limit_val_batches=1).validate(task, datamodule=DictDataModule(samples))
    assert model.seen[0].dtype == torch.float32


def test_band_count_mismatches_are_clear():
    task = SemanticSegmentationTask(model=TinyPixelModel(), num_classes=3)
    with pytest.raises(ValueError, match="DictDataModule.means/stds has 3 values.*but the batch has 4 bands"):
        trainer().validate(task, datamodule=DictDataModule(make_samples("segmentation"), means=[0] * 3, stds=[1] * 3))
    with pytest.raises(ValueError, match="give both means and stds"):
        SemanticSegmentationTask(model=TinyPixelModel(), num_classes=3, means=[0.0] * 4)
    with pytest.raises(ValueError, match="stds must be positive"):
        SemanticSegmentationTask(model=TinyPixelModel(), num_classes=3, means=[0.0] * 4, stds=[1, 0, 1, 1])
    with pytest.raises(TypeError, match="dict batches with an 'image' key"):
        task.validation_step((torch.zeros(1, 4, SIZE, SIZE), torch.zeros(1, SIZE, SIZE)), 0)


def test_checkpoint_keeps_normalisation(tmp_path):
    task = SemanticSegmentationTask(model=TinyPixelModel(), num_classes=3)
    t = trainer(limit_train_batches=1, limit_val_batches=1)
    t.fit(task, datamodule=DictDataModule(make_samples("segmentation"), means=MEANS, stds=STDS))
    path = tmp_path / "task.ckpt"
    t.save_checkpoint(path)
    loaded = SemanticSegmentationTask.load_from_checkpoint(path, model=TinyPixelModel())
    torch.testing.assert_close(loaded.preprocess.mean, torch.tensor(MEANS))
    torch.testing.assert_close(loaded.preprocess.std, torch.tensor(STDS))
    assert loaded.hparams.num_classes == 3
    for name, value in task.model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[name], value)


def test_backbone_pretraining_statistics_are_the_default(caplog):
    """No means/stds anywhere: Prithvi's pretraining statistics for the chosen bands, logged."""
    from geofm.models.backbones.pretrained import PRETRAINED_CONFIGS

    bands = ["RED", "GREEN", "BLUE", "NIR_NARROW"]
    model_args = {
        "backbone": "prithvi_eo_tiny", "backbone_bands": bands, "backbone_img_size": SIZE,
        "necks": [{"name": "SelectIndices", "indices": [-1]}, {"name": "ReshapeTokensToImage"}],
        "decoder": "FCNDecoder", "decoder_channels": 8, "num_classes": 3,
    }
    task = SemanticSegmentationTask(model_args=model_args)
    with caplog.at_level(logging.INFO, logger="geofm.tasks.base"):
        trainer(limit_val_batches=1).validate(task, datamodule=DictDataModule(make_samples("segmentation", n=2)))
    cfg = PRETRAINED_CONFIGS["prithvi_eo_tiny"]
    expected = [cfg.mean[cfg.bands.index(b)] for b in bands]
    torch.testing.assert_close(task.preprocess.mean, torch.tensor(expected))
    assert [r for r in caplog.records if "pretraining statistics" in r.getMessage()]
    # Statistics from the datamodule win over the backbone's.
    task = SemanticSegmentationTask(model_args=model_args)
    trainer(limit_val_batches=1).validate(task, datamodule=DictDataModule(make_samples("segmentation", n=2), means=MEANS, stds=STDS))
    torch.testing.assert_close(task.preprocess.mean, torch.tensor(MEANS))
