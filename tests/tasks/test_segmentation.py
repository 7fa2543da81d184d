"""SemanticSegmentationTask: train/validate/test/predict, metrics against numpy, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geofm.tasks import SemanticSegmentationTask

from .helpers import (
    SIZE,
    DictDataModule,
    FixedOutputModel,
    TinyPixelModel,
    make_samples,
    trainer,
)

NAMES = ["land", "water", "cloud"]


def test_fit_validate_test_predict_with_tiny_model(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    dm = DictDataModule(make_samples("segmentation", ignore_index=-1), means=[500.0] * 4, stds=[290.0] * 4)
    task = SemanticSegmentationTask(
        model=TinyPixelModel(), num_classes=3, ignore_index=-1, class_names=NAMES,
        loss={"ce": 1.0, "dice": 0.5}, output_on_inference=["prediction", "probabilities"],
    )
    before = [p.detach().clone() for p in task.model.parameters()]
    t = trainer(logger=CSVLogger(tmp_path))
    t.fit(task, datamodule=dm)
    assert any(not torch.equal(a, b) for a, b in zip(before, task.model.parameters())), "no training happened"
    metrics = t.callback_metrics
    for key in ("train/loss_epoch", "train/mIoU", "val/loss", "val/mIoU", "val/IoU_water", "val/F1",
                "val/Accuracy_macro", "val/Pixel_Accuracy"):
        assert key in metrics and math.isfinite(float(metrics[key])), key
    tested = t.test(task, datamodule=dm)[0]
    assert set(tested) >= {"test/loss", "test/mIoU", "test/IoU_land", "test/IoU_cloud"}
    predictions = t.predict(task, datamodule=dm)
    assert len(predictions) == 2
    first = predictions[0]
    assert first["prediction"].shape == (2, SIZE, SIZE) and first["prediction"].dtype == torch.int64
    assert first["probabilities"].shape == (2, 3, SIZE, SIZE)
    torch.testing.assert_close(first["probabilities"].sum(1), torch.ones(2, SIZE, SIZE))
    assert "logits" not in first and "image" not in first and "mask" not in first
    assert first["filename"] == ["chip_0.tif", "chip_1.tif"]
    assert first["crs"] == ["EPSG:32614"] * 2 and first["transform"][1][2] == 500960.0


def _hand_metrics(logits: np.ndarray, mask: np.ndarray, ignore: int, num_classes: int) -> dict[str, float]:
    pred = logits.argmax(1)
    valid = mask != ignore
    t, p = mask[valid], pred[valid]
    cm = np.zeros((num_classes, num_classes))
    np.add.at(cm, (t, p), 1)
    tp = np.diag(cm)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    union = tp + fp + fn
    iou = np.divide(tp, union, out=np.zeros_like(tp), where=union > 0)
    f1 = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros_like(tp), where=union > 0)
    recall = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=tp + fn > 0)
    present = union > 0
    shifted = logits - logits.max(1, keepdims=True)
    log_prob = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    b, h, w = np.nonzero(valid)
    ce = -log_prob[b, mask[valid], h, w].mean()
    return {
        "mIoU": iou[present].mean(),
        "F1": f1[present].mean(),
        "Accuracy_macro": recall[present].mean(),
        "Pixel_Accuracy": tp.sum() / valid.sum(),
        "loss": ce,
        **{f"IoU_{name}": iou[i] for i, name in enumerate(NAMES)},
    }


@pytest.mark.parametrize("absent_class", [False, True])
def test_logged_metrics_equal_numpy(absent_class):
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, SIZE, SIZE, generator=gen)
    samples = make_samples("segmentation", n=2, seed=3)
    mask = torch.stack([s["mask"] for s in samples])
    mask[0, :3, :5] = -1  # ignored pixels
    mask[1, 10, 10:20] = -1
    if absent_class:  # "cloud" neither in the mask nor predicted: mIoU averages the others
        mask[mask == 2] = 0
        logits[:, 2] = -10.0
    for sample, m in zip(samples, mask):
        sample["mask"] = m
    task = SemanticSegmentationTask(
        model=FixedOutputModel([logits]), num_classes=3, ignore_index=-1, class_names=NAMES
    )
    t = trainer(limit_val_batches=1)
    t.validate(task, datamodule=DictDataModule(samples, batch_size=2))
    expected = _hand_metrics(logits.numpy(), mask.numpy(), -1, 3)
    for key, value in expected.items():
        assert float(t.callback_metrics[f"val/{key}"]) == pytest.approx(value, rel=1e-5, abs=1e-6), key
    if absent_class:
        assert expected["IoU_cloud"] == 0.0 and expected["mIoU"] > expected["IoU_cloud"]


def test_ignored_pixels_change_nothing():
    samples = make_samples("segmentation", n=2, seed=5)
    samples[0]["mask"][:8] = 255
    logits = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    changed = logits.clone()
    changed[0, :, :8] = torch.randn(3, 8, SIZE) * 5  # other predictions only where ignored
    results = []
    for out in (logits, changed):
        task = SemanticSegmentationTask(model=FixedOutputModel([out]), num_classes=3, ignore_index=255)
        t = trainer(limit_val_batches=1)
        results.append(t.validate(task, datamodule=DictDataModule(samples))[0])
    assert results[0] == pytest.approx(results[1])


def test_aux_loss_adds_weighted_head_loss():
    samples = make_samples("segmentation", n=2)
    task = SemanticSegmentationTask(
        model=TinyPixelModel(aux=("deep",)), num_classes=3, aux_loss={"deep": 0.4}
    )
    from .helpers import collate

    batch = collate(samples)
    with pytest.warns(UserWarning):  # self.log without a trainer
        loss = task.training_step(batch, 0)
    out = task.model(batch["image"])
    target = batch["mask"]
    expected = torch.nn.functional.cross_entropy(out.output, target) + 0.4 * torch.nn.functional.cross_entropy(
        out.auxiliary_heads["deep"], target
    )
    torch.testing.assert_close(loss, expected)

    wrong = SemanticSegmentationTask(model=TinyPixelModel(aux=("deep",)), num_classes=3, aux_loss={"dep": 1.0})
    with pytest.raises(KeyError, match=r"\['dep'\].*\['deep'\]"):
        wrong.training_step(batch, 0)


@pytest.mark.filterwarnings("ignore:Found .* in eval mode")  # the frozen BatchNorm, on purpose
def test_freezing_keeps_parts_fixed():
    task = SemanticSegmentationTask(model=TinyPixelModel(), num_classes=3, freeze_backbone=True, freeze_head=True)
    task.train()
    assert not any(p.requires_grad for p in task.model.encoder.parameters())
    assert not any(p.requires_grad for p in task.model.head.parameters())
    assert all(p.requires_grad for p in task.model.decoder.parameters())
    assert not task.model.encoder[1].training  # BatchNorm statistics stay fixed
    encoder = [p.clone() for p in task.model.encoder.parameters()] + [task.model.encoder[1].running_mean.clone()]
    trainer().fit(task, datamodule=DictDataModule(make_samples("segmentation")))
    after = list(task.model.encoder.parameters()) + [task.model.encoder[1].running_mean]
    assert all(torch.equal(a, b) for a, b in zip(encoder, after))


def test_freeze_on_model_without_method_is_clear():
    with pytest.raises(TypeError, match="freeze_backbone=True.*freeze_encoder"):
        SemanticSegmentationTask(model=torch.nn.Conv2d(4, 3, 1), num_classes=3, freeze_backbone=True)


def test_bad_configuration_errors():
    with pytest.raises(ValueError, match="output_on_inference='mask'"):
        SemanticSegmentationTask(model=TinyPixelModel(), num_classes=3, output_on_inference="mask")
    with pytest.raises(ValueError, match="needs num_classes"):
        SemanticSegmentationTask(model=TinyPixelModel())
    with pytest.raises(ValueError, match="class_names has 2 names but num_classes=3"):
        SemanticSegmentationTask(model=TinyPixelModel(), num_classes=3, class_names=["a", "b"])
    with pytest.raises(ValueError, match="needs model_args"):
        SemanticSegmentationTask(num_classes=3)
    with pytest.raises(ValueError, match="lovasz.*class_weights"):
        SemanticSegmentationTask(model=TinyPixelModel(), num_classes=3, loss="lovasz", class_weights=[1, 2, 3])


def test_ready_model_band_mismatch_names_first_layer():
    task = SemanticSegmentationTask(model=TinyPixelModel(in_chans=4), num_classes=3)
    with pytest.raises(ValueError, match="first layer takes 4 bands.*but the batch has 6 bands"):
        trainer().fit(task, datamodule=DictDataModule(make_samples("segmentation", bands=6)))


FACTORY_ARGS = {"backbone": "timm_resnet18", "decoder": "smp_Unet", "backbone_in_chans": 4,
                "decoder_decoder_channels": [32, 16, 16, 8, 8]}


def test_factory_model_trains_and_checks_bands(tmp_path):
    task = SemanticSegmentationTask(model_args=FACTORY_ARGS, num_classes=3, ignore_index=-1)
    t = trainer(limit_train_batches=1, limit_val_batches=1)
    t.fit(task, datamodule=DictDataModule(make_samples("segmentation", ignore_index=-1)))
    assert math.isfinite(float(t.callback_metrics["val/mIoU"]))
    prediction = t.predict(task, datamodule=DictDataModule(make_samples("segmentation", n=2)))[0]
    assert prediction["prediction"].shape == (2, SIZE, SIZE)

    with pytest.raises(ValueError, match="model_args.backbone_in_chans=4 but the batch has 6 bands"):
        trainer().fit(task, datamodule=DictDataModule(make_samples("segmentation", bands=6)))

    # a checkpoint rebuilds the model from its hyperparameters alone
    path = tmp_path / "seg.ckpt"
    t.save_checkpoint(path)
    loaded = SemanticSegmentationTask.load_from_checkpoint(path)
    image = torch.rand(1, 4, SIZE, SIZE)
    task.eval()
    loaded.eval()
    torch.testing.assert_close(loaded(image).output, task(image).output)


def test_built_from_a_yaml_config():
    """What the CLI does: jsonargparse reads the task's signature (base arguments included)."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(SemanticSegmentationTask, "model")
    config = parser.parse_string(
        """
        model:
          model_args: {backbone: timm_resnet18, decoder: smp_Unet, backbone_in_chans: 4}
          num_classes: 3
          loss: {ce: 1.0, dice: 0.5}
          ignore_index: -1
          optimizer: SGD
          lr: 0.05
          param_groups: [{pattern: "encoder.*", lr: 0.001}]
          scheduler: CosineAnnealingLR
          scheduler_hparams: {T_max: 10, warmup_epochs: 2}
          freeze_decoder: true
          class_names: [land, water, cloud]
        """
    )
    task = parser.instantiate(config).model
    assert isinstance(task, SemanticSegmentationTask)
    assert task.hparams.lr == 0.05 and task.hparams.class_names == NAMES
    config = task.configure_optimizers()
    assert [group["lr"] for group in config["optimizer"].param_groups][0] == pytest.approx(0.001 * 0.01)
    assert not any(p.requires_grad for p in task.model.decoder.parameters())
