"""LoRA on backbones (geofm.models.peft): settings, what trains, merging, errors."""

from __future__ import annotations

import copy
import subprocess
import sys

import peft
import pytest
import torch

from geofm.models.factories.encoder_decoder import EncoderDecoderFactory
from geofm.models.peft import (
    SplitQKV,
    apply_lora,
    has_lora,
    lora_settings,
    merge_lora,
    parameter_summary,
)
from geofm.tasks.segmentation import SemanticSegmentationTask

BANDS = ["BLUE", "GREEN", "RED", "NIR_NARROW"]
SIZE = 32
VIT_ARGS = {
    "backbone": "prithvi_eo_tiny", "backbone_bands": BANDS, "backbone_img_size": SIZE,
    "necks": [{"name": "SelectIndices", "indices": [1, 3]}, {"name": "ReshapeTokensToImage"}],
    "decoder": "IdentityDecoder", "num_classes": 2,
}
LORA = {"method": "lora", "r": 8, "alpha": 16, "target_modules": ["qkv", "proj"]}


def vit_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    args = {k: v for k, v in VIT_ARGS.items() if k != "num_classes"}
    return EncoderDecoderFactory().build_model("segmentation", num_classes=2, **args)


def randomise_lora(module: torch.nn.Module, seed: int = 1) -> None:
    """LoRA B starts at zero (the update is zero); give it values so that merging matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if ".lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)


def test_trainable_count_matches_peft_and_is_at_most_ten_percent():
    model = vit_model()
    reference = copy.deepcopy(model.encoder)
    backbone = sum(p.numel() for p in reference.parameters())
    adapted = apply_lora(model, lora_settings(LORA))
    summary = parameter_summary(model)
    # peft's own count of the same LoRA on the same backbone, through its PeftModel
    peft_model = peft.get_peft_model(reference, peft.LoraConfig(r=8, lora_alpha=16, target_modules=["qkv", "proj"]))
    peft_trainable, _ = peft_model.get_nb_trainable_parameters()
    assert summary.lora == peft_trainable == summary.backbone_trainable
    outside = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("encoder."))
    assert summary.trainable == peft_trainable + outside
    assert summary.full == backbone + outside and summary.backbone == backbone
    assert summary.fraction <= 0.10 and summary.backbone_fraction <= 0.10
    # suffix rule: `proj` is the attention projection and the patch embedding
    assert "patch_embed.proj" in adapted and "blocks.0.attn.proj" in adapted and "blocks.3.attn.qkv" in adapted
    assert "%" in summary.describe() and "LoRA:" in summary.describe()


def test_rank_alpha_dropout_and_bias_take_effect():
    model = vit_model()
    apply_lora(model, lora_settings({**LORA, "r": 4, "alpha": 12, "dropout": 0.25, "bias": "lora_only"}))
    qkv = model.encoder.blocks[0].attn.qkv
    assert qkv.lora_A["default"].weight.shape == (4, 256) and qkv.scaling["default"] == 3.0
    assert isinstance(qkv.lora_dropout["default"], torch.nn.Dropout) and qkv.lora_dropout["default"].p == 0.25
    trainable = {n for n, p in model.encoder.named_parameters() if p.requires_grad and ".lora_" not in n}
    assert trainable and all(n.endswith("base_layer.bias") for n in trainable)  # targeted layers only
    everything = vit_model()
    apply_lora(everything, lora_settings({**LORA, "bias": "all"}))
    biases = {n for n, p in everything.encoder.named_parameters() if p.requires_grad and ".lora_" not in n}
    assert "blocks.0.mlp.fc1.bias" in biases and "blocks.0.norm1.bias" in biases
    assert lora_settings({"target_modules": ["qkv"], "r": 16}).alpha == 8.0  # peft's default


def test_regex_targets_whole_names():
    model = vit_model()
    adapted = apply_lora(model, lora_settings({**LORA, "target_modules": r"blocks\.[0-1]\.attn\.qkv"}))
    assert adapted == ["blocks.0.attn.qkv", "blocks.1.attn.qkv"]


def test_training_step_changes_only_lora_decoder_and_head():
    torch.manual_seed(0)
    task = SemanticSegmentationTask(model_args=VIT_ARGS, peft=LORA, lr=1e-2)
    before = {k: v.clone() for k, v in task.state_dict().items() if isinstance(v, torch.Tensor)}
    optimizer = task.configure_optimizers()
    task.train()
    batch = {"image": torch.rand(2, len(BANDS), SIZE, SIZE), "mask": torch.randint(0, 2, (2, SIZE, SIZE))}
    for _ in range(2):  # LoRA A has no gradient while B is zero: B moves first, then A
        loss = task.training_step(batch, 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = task.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    encoder_changed = {k for k in changed if k.startswith("model.encoder.")}
    assert encoder_changed and all(".lora_" in k for k in encoder_changed)
    assert any(".lora_A." in k for k in encoder_changed) and any(".lora_B." in k for k in encoder_changed)
    assert any(k.startswith("model.head.") for k in changed)
    base = [k for k in before if k.startswith("model.encoder.") and ".lora_" not in k]
    assert base and all(torch.equal(before[k], after[k]) for k in base)


def test_merge_equals_unmerged_and_needs_no_peft():
    model = vit_model()
    plain_keys = set(model.state_dict())
    apply_lora(model, lora_settings(LORA))
    randomise_lora(model)
    model.eval()
    x = torch.rand(2, len(BANDS), SIZE, SIZE)
    with torch.no_grad():
        unmerged = model(x).output
    assert merge_lora(model) == 9
    with torch.no_grad():
        merged = model(x).output
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=0)
    assert not has_lora(model)
    assert set(model.state_dict()) == plain_keys


def test_unknown_target_is_an_error_listing_the_backbones_layers():
    model = vit_model()
    with pytest.raises(ValueError, match="query") as info:
        apply_lora(model, lora_settings({**LORA, "target_modules": ["qkv", "query"]}))
    assert "blocks.*.attn.qkv" in str(info.value) and "blocks.*.mlp.fc1" in str(info.value)
    with pytest.raises(ValueError, match="match no module"):
        apply_lora(vit_model(), lora_settings({**LORA, "target_modules": r"encoder\..*"}))


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({**LORA, "rank": 4}, r"unsupported LoRA settings \['rank'\]"),
        ({**LORA, "method": "ia3"}, "method='ia3'"),
        ({**LORA, "r": 0}, r"peft\.r=0"),
        ({**LORA, "bias": "some"}, "bias='some'"),
        ({**LORA, "dropout": False}, r"peft\.dropout=False"),
        ({"method": "lora", "r": 4}, "target_modules=None"),
        ({**LORA, "target_modules": "blocks[("}, "not a valid regular expression"),
        ({"method": "LORA", "peft_config_kwargs": {"target_modules": ["qkv"], "use_dora": True}}, r"peft_config_kwargs: unsupported LoRA settings \['use_dora'\]"),
        ({**LORA, "alpha": 8, "lora_alpha": 16}, "both lora_alpha and alpha"),
    ],
)
def test_bad_settings_name_the_key(spec, match):
    with pytest.raises(ValueError, match=match):
        lora_settings(spec)


def test_terratorch_peft_config_with_replace_qkv():
    torch.manual_seed(0)
    plain = SemanticSegmentationTask(model_args=VIT_ARGS).eval()
    terratorch = {
        "method": "LORA",
        "replace_qkv": "qkv",
        "peft_config_kwargs": {
            "target_modules": ["qkv.q_linear", "qkv.v_linear", "mlp.fc1", "mlp.fc2"],
            "lora_alpha": 16, "r": 4,
        },
    }
    torch.manual_seed(0)
    task = SemanticSegmentationTask(model_args={**VIT_ARGS, "peft_config": terratorch}).eval()
    assert (task.lora.r, task.lora.alpha, task.lora.replace_qkv) == (4, 16.0, "qkv")
    attn = task.model.encoder.blocks[0].attn
    assert isinstance(attn.qkv, SplitQKV)
    assert has_lora(attn.qkv.q_linear) and has_lora(attn.qkv.v_linear) and not has_lora(attn.qkv.k_linear)
    x = torch.rand(1, len(BANDS), SIZE, SIZE) * 1000
    with torch.no_grad():  # LoRA B is zero and the split is exact: the plain model's output
        torch.testing.assert_close(task(x).output, plain(x).output, atol=1e-5, rtol=0)
    randomise_lora(task.model)
    with torch.no_grad():
        unmerged = task(x).output
        merge_lora(task.model)
        merged = task(x).output
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=0)
    # the split qkv is fused back: the backbone's own names
    assert set(task.model.state_dict()) == set(plain.model.state_dict())


def test_task_refuses_two_lora_settings_and_freeze_backbone():
    with pytest.raises(ValueError, match="peft and model_args.peft_config both"):
        SemanticSegmentationTask(model_args={**VIT_ARGS, "peft_config": {"method": "LORA", "peft_config_kwargs": {"target_modules": ["qkv"]}}}, peft=LORA)
    with pytest.raises(ValueError, match="freeze_backbone"):
        SemanticSegmentationTask(model_args=VIT_ARGS, peft=LORA, freeze_backbone=True)


def test_resnet_convolutions_take_lora_and_batchnorm_stays_frozen():
    torch.manual_seed(0)
    args = {"backbone": "timm_resnet18", "backbone_in_chans": 4, "decoder": "smp_Unet",
            "decoder_decoder_channels": [32, 16, 16, 8, 8], "num_classes": 2}
    task = SemanticSegmentationTask(model_args=args, peft={"r": 4, "target_modules": ["conv1", "conv2"]}, lr=1e-2)
    adapted = [n for n, m in task.model.encoder.named_modules() if type(m).__name__ == "Conv2d" and ".lora_" not in n and n.endswith("base_layer")]
    assert len(adapted) == 17  # the stem and two convolutions in each of 8 basic blocks
    # timm zero-initialises each block's last BatchNorm scale (zero_init_last): with frozen
    # random weights no gradient would reach the blocks' adapters, so give them a scale.
    norms = [m for m in task.model.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for m in norms:
            m.weight.fill_(1.0)
    norm = norms[-1]
    stats = norm.running_mean.clone()
    optimizer = task.configure_optimizers()
    task.train()
    assert not norm.training  # frozen norm layers stay in eval mode across .train()
    batch = {"image": torch.rand(2, 4, 64, 64) * 100, "mask": torch.randint(0, 2, (2, 64, 64))}
    loss = task.training_step(batch, 0)
    loss.backward()
    optimizer.step()
    assert torch.equal(norm.running_mean, stats)
    lora_grads = [p.grad for n, p in task.model.encoder.named_parameters() if ".lora_B." in n]
    assert len(lora_grads) == 17 and all(g is not None for g in lora_grads)
    assert all(g.abs().sum() > 0 for g in lora_grads)  # gradients reach every adapter
    frozen = [p for n, p in task.model.encoder.named_parameters() if ".lora_" not in n]
    assert all(p.grad is None and not p.requires_grad for p in frozen)


def test_import_geofm_tasks_does_not_import_peft():
    code = "import sys, geofm, geofm.models.peft, geofm.tasks.peft_checkpoint; print('peft' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
