"""Checkpoints and exports of LoRA tasks: the trained part plus a reference to the base file."""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pytest
import torch

from geofm.export import ExportError, export_task, load_safetensors
from geofm.inference.task_scenes import load_task_checkpoint
from geofm.models.factories.encoder_decoder import EncoderDecoderFactory
from geofm.tasks.peft_checkpoint import CHECKPOINT_KEY
from geofm.tasks.segmentation import SemanticSegmentationTask
from tests.tasks.helpers import DictDataModule, make_samples, trainer

BANDS = ["BLUE", "GREEN", "RED", "NIR_NARROW"]
SIZE = 32
LORA = {"method": "lora", "r": 4, "alpha": 8, "target_modules": ["attn.qkv", "attn.proj"]}


def model_args(base_file=None) -> dict:
    args = {
        "backbone": "prithvi_eo_tiny", "backbone_bands": BANDS, "backbone_img_size": SIZE,
        "necks": [{"name": "SelectIndices", "indices": [1, 3]}, {"name": "ReshapeTokensToImage"}],
        "decoder": "IdentityDecoder", "num_classes": 2,
    }
    if base_file is not None:
        args["backbone_ckpt_path"] = str(base_file)
    return args


@pytest.fixture(scope="module")
def base_file(tmp_path_factory):
    """A Prithvi tiny weight file on the six HLS bands (the task takes four of them)."""
    torch.manual_seed(123)
    backbone = EncoderDecoderFactory._build_backbone("prithvi_eo_tiny", {"img_size": SIZE})
    path = tmp_path_factory.mktemp("base") / "prithvi_tiny.pt"
    torch.save(backbone.state_dict(), path)
    return path


def datamodule() -> DictDataModule:
    return DictDataModule(make_samples("segmentation", n=4, bands=4, num_classes=2), means=[500.0] * 4, stds=[300.0] * 4)


def fit(task, tmp_path, steps: int = 2):
    run = trainer(max_steps=steps, default_root_dir=str(tmp_path))
    run.fit(task, datamodule=datamodule())
    path = tmp_path / "lora.ckpt"
    run.save_checkpoint(path)
    return run, path


@pytest.fixture(scope="module")
def trained(base_file, tmp_path_factory):
    """A LoRA task fitted two steps on a referenced base file, and its checkpoint."""
    tmp_path = tmp_path_factory.mktemp("trained")
    torch.manual_seed(0)
    task = SemanticSegmentationTask(model_args=model_args(base_file), peft=LORA, lr=1e-2)
    _, path = fit(task, tmp_path)
    return task.eval(), path


def logits(task, x):
    with torch.no_grad():
        return task.predictor.logits(x)


def test_checkpoint_keeps_only_the_trained_part_and_the_base_reference(trained, base_file):
    task, path = trained
    checkpoint = torch.load(path, weights_only=True)
    state = checkpoint["state_dict"]
    encoder_keys = [k for k in state if k.startswith("model.encoder.")]
    # LoRA weights, and the first layer (channels of bands outside the file start random)
    assert encoder_keys and all(".lora_" in k or k.startswith("model.encoder.patch_embed.proj.") for k in encoder_keys)
    assert any(k.startswith("model.head.") for k in state) and "preprocess.mean" in state
    record = checkpoint[CHECKPOINT_KEY]
    assert record["base"]["sha256"] == hashlib.sha256(base_file.read_bytes()).hexdigest()
    assert record["base"]["file"] == str(base_file) and record["base"]["backbone"] == "prithvi_eo_tiny"
    assert "model.encoder.blocks.0.attn.qkv.base_layer.weight" in record["base_keys"]
    assert record["settings"]["r"] == 4
    left_out = set(task.state_dict()) - set(state)
    assert left_out == set(record["base_keys"])
    assert task.peft_summary.fraction < 0.10  # counted at fit start


def test_checkpoint_reloads_to_identical_predictions(trained, base_file):
    task, path = trained
    torch.manual_seed(99)  # another random initialisation: everything must come from files
    fresh = SemanticSegmentationTask(model_args=model_args(base_file), peft=LORA).eval()
    x = torch.rand(2, 4, SIZE, SIZE) * 1000
    assert not torch.allclose(logits(fresh, x), logits(task, x))
    load_task_checkpoint(fresh, path)
    torch.testing.assert_close(logits(fresh, x), logits(task, x), atol=0, rtol=0)


def test_another_base_file_is_refused_naming_both(trained, base_file, tmp_path):
    _, path = trained
    other = tmp_path / "other.pt"
    state = torch.load(base_file, weights_only=True)
    state["blocks.0.attn.qkv.weight"] = state["blocks.0.attn.qkv.weight"] + 1
    torch.save(state, other)
    task = SemanticSegmentationTask(model_args=model_args(other), peft=LORA)
    with pytest.raises(ValueError) as info:
        load_task_checkpoint(task, path)
    message = str(info.value)
    assert str(base_file) in message and str(other) in message
    assert hashlib.sha256(other.read_bytes()).hexdigest() in message
    without = SemanticSegmentationTask(model_args=model_args(), peft=LORA)
    with pytest.raises(ValueError, match="built without a weight file"):
        load_task_checkpoint(without, path)


def test_changed_base_weights_are_refused_even_at_the_same_address(trained, base_file):
    # The trained task's own tensors were fingerprinted (and cached) when it saved; a write
    # through .data keeps their address and version, so only a fresh hash sees the change.
    task, path = trained
    weight = task.model.encoder.blocks[0].attn.qkv.base_layer.weight
    weight.data.add_(1.0)
    try:
        with pytest.raises(ValueError, match="differ from those the checkpoint"):
            load_task_checkpoint(task, path)
    finally:
        weight.data.sub_(1.0)


def test_resume_continues_with_the_optimizer_state(trained, base_file, tmp_path):
    _, path = trained
    saved = torch.load(path, weights_only=True)
    task = SemanticSegmentationTask(model_args=model_args(base_file), peft=LORA, lr=1e-2)
    run = trainer(max_steps=3, max_epochs=5, default_root_dir=str(tmp_path))
    run.fit(task, datamodule=datamodule(), ckpt_path=path)
    assert run.global_step == 3
    state = run.optimizers[0].state_dict()["state"]
    assert len(state) == len(saved["optimizer_states"][0]["state"])  # one entry per trainable tensor
    steps = {int(v["step"]) for v in state.values()}
    assert steps == {3}  # two steps restored, one more taken


def test_random_backbone_keeps_its_base_in_the_checkpoint(tmp_path, caplog):
    torch.manual_seed(0)
    task = SemanticSegmentationTask(model_args=model_args(), peft=LORA)
    with caplog.at_level(logging.INFO):
        _, path = fit(task, tmp_path, steps=1)
    # printed at fit start: the count, and that the base goes into the checkpoints
    summary = task.peft_summary
    assert f"({100 * summary.fraction:.2f} % of full fine-tuning)" in caplog.text
    assert "checkpoints keep them too" in caplog.text
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint[CHECKPOINT_KEY]["base"] is None and not checkpoint[CHECKPOINT_KEY]["base_keys"]
    assert set(checkpoint["state_dict"]) == set(task.state_dict())
    torch.manual_seed(5)
    fresh = SemanticSegmentationTask(model_args=model_args(), peft=LORA).eval()
    load_task_checkpoint(fresh, path)
    x = torch.rand(1, 4, SIZE, SIZE) * 1000
    torch.testing.assert_close(logits(fresh, x), logits(task.eval(), x), atol=0, rtol=0)


def test_export_merges_lora(trained, base_file, tmp_path):
    task, _ = trained
    task = SemanticSegmentationTask(model_args=model_args(base_file), peft=LORA)
    task.load_state_dict(trained[0].state_dict())
    with torch.no_grad():  # LoRA B values that change the output, so that merging matters
        for name, p in task.named_parameters():
            if ".lora_B." in name:
                p.copy_(torch.randn_like(p) * 0.05)
    task.eval()
    result = export_task(task, tmp_path / "model.onnx", "onnx", tile_size=SIZE, dynamic=False)
    assert result.max_abs_diff <= 1e-4  # the merged file against the unmerged task
    import onnx
    import onnxruntime as ort

    names = [init.name for init in onnx.load(str(result.path)).graph.initializer]
    assert not any("lora" in n for n in names)
    x = torch.rand(1, 4, SIZE, SIZE) * 1000
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"image": x.numpy()})[0]
    np.testing.assert_allclose(got, logits(task, x).numpy(), atol=1e-4)
    # safetensors: merged weights under the backbone's own names, loadable without peft
    weights = export_task(task, tmp_path / "model.safetensors", "safetensors")
    plain = SemanticSegmentationTask(model_args=model_args()).eval()
    load_safetensors(plain, weights.path)
    torch.testing.assert_close(logits(plain, x), logits(task, x), atol=1e-5, rtol=0)
    with pytest.raises(ExportError, match="build the task without peft"):
        load_safetensors(SemanticSegmentationTask(model_args=model_args(), peft=LORA), weights.path)
