"""Prithvi Swin backbones: architecture, feature shapes, weight loading, band adaptation, training.

Full-size models are built on the meta device (no memory, no compute); forward passes and weight
files use the same builders shrunk through keyword overrides.
"""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from geofm.data.bands import HLSBands
from geofm.models.backbones.pretrained import PRITHVI_BANDS as PRETRAINED_BANDS
from geofm.models.backbones.prithvi_swin import PrithviSwin, prithvi_swin_B, prithvi_swin_L
from geofm.registry import BACKBONE_REGISTRY, GEOFM_BACKBONE_REGISTRY

SMALL = {"depths": (1, 1, 2, 1), "embed_dim": 16, "num_heads": (1, 2, 4, 8)}
SMALL_CHANNELS = [16, 32, 64, 128]


def small(seed: int = 0, **kwargs) -> PrithviSwin:
    """A reduced Prithvi Swin-B (about 0.36M parameters) with a fixed initialisation."""
    torch.manual_seed(seed)
    return prithvi_swin_B(**{**SMALL, **kwargs})


def assert_same_parameters(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


# ---------------------------------------------------------------------------------- architecture
@pytest.mark.parametrize(
    ("builder", "embed", "heads", "params_m"),
    [(prithvi_swin_B, 128, (4, 8, 16, 32), 86.7), (prithvi_swin_L, 192, (6, 12, 24, 48), 195.0)],
)
def test_full_size_architecture_on_meta(builder, embed, heads, params_m):
    model = builder(device="meta")
    channels = [embed, 2 * embed, 4 * embed, 8 * embed]
    assert model.out_channels == channels
    assert model.strides == [4, 8, 16, 32]
    swin = model.model
    assert swin.patch_embed.proj.weight.shape == (embed, 6, 4, 4)
    assert [len(stage.blocks) for stage in swin.layers] == [2, 2, 18, 2]
    assert [stage.blocks[0].attn.num_heads for stage in swin.layers] == list(heads)
    assert swin.layers[0].blocks[0].window_size == (7, 7)
    assert swin.layers[0].blocks[1].shift_size == (3, 3)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == pytest.approx(params_m * 1e6, rel=0.01)

    features = model(torch.empty(2, 6, 224, 224, device="meta"))
    assert [tuple(f.shape) for f in features] == [
        (2, c, 224 // s, 224 // s) for c, s in zip(channels, [4, 8, 16, 32])
    ]


def test_registry_builds_by_name_and_drops_none():
    assert "prithvi_swin_B" in GEOFM_BACKBONE_REGISTRY
    assert "prithvi_swin_L" in BACKBONE_REGISTRY
    model = BACKBONE_REGISTRY.build(
        "prithvi_swin_B", pretrained=False, device="meta", img_size=None, drop_path_rate=None,
        window_size=None, out_indices=None, bands=None,
    )
    assert isinstance(model, PrithviSwin)
    assert model.out_channels == [128, 256, 512, 1024]
    assert model.bands == list(PRETRAINED_BANDS)
    config_built = BACKBONE_REGISTRY.build({"type": "prithvi_swin_L", "device": "meta"})
    assert config_built.out_channels == [192, 384, 768, 1536]


# ---------------------------------------------------------------------------------- forward
@pytest.mark.parametrize("size", [(64, 64), (96, 160)])
def test_feature_shapes_for_sizes_other_than_img_size(size):
    model = small().eval()
    h, w = size
    with torch.no_grad():
        features = model(torch.randn(2, 6, h, w))
    assert [tuple(f.shape) for f in features] == [
        (2, c, h // s, w // s) for c, s in zip(SMALL_CHANNELS, [4, 8, 16, 32])
    ]
    assert all(torch.isfinite(f).all() for f in features)


def test_single_frame_is_squeezed_and_keywords_are_refused():
    model = small().eval()
    x = torch.randn(1, 6, 64, 64)
    with torch.no_grad():
        plain = model(x)
        framed = model(x.unsqueeze(2))
    for a, b in zip(plain, framed, strict=True):
        assert torch.equal(a, b)
    # No coordinate encoding: coordinates are an error, not silently dropped.
    with pytest.raises(TypeError, match="temporal_coords"):
        model(x, temporal_coords=torch.zeros(1, 1, 2))


def test_several_frames_or_wrong_band_count_fail_clearly():
    model = small()
    with pytest.raises(ValueError, match="3 frames"):
        model(torch.randn(1, 6, 3, 64, 64))
    with pytest.raises(ValueError, match=r"\(B, 6, H, W\)"):
        model(torch.randn(1, 4, 64, 64))


def test_out_indices_select_and_prune_stages():
    model = small(out_indices=[3, 1])  # returned in the order given, as for the ViT
    assert model.out_channels == [128, 32]
    assert model.strides == [32, 8]
    features = model(torch.randn(1, 6, 64, 64))
    assert [f.shape[1] for f in features] == [128, 32]

    early = small(out_indices=[0, -3])
    assert early.out_channels == [16, 32]
    assert len(early.model.layers) == 2  # stages after the last requested one are dropped
    with pytest.raises(ValueError, match=r"out_indices \[4\]"):
        small(out_indices=[0, 4])


def test_bands_set_input_channels_and_bad_bands_fail():
    model = small(bands=["red", HLSBands.NIR_NARROW, 7])
    assert model.bands == ["RED", "NIR_NARROW", 7]
    assert model.model.patch_embed.proj.weight.shape[1] == 3
    with pytest.raises(ValueError, match="NDVI"):
        small(bands=["RED", "NDVI"])  # unnamed bands are integers
    with pytest.raises(ValueError, match="in_chans=4"):
        small(bands=["RED"], in_chans=4)
    with pytest.raises(ValueError, match="more than once"):
        small(bands=["RED", "red"])


# ---------------------------------------------------------------------------------- weights
def test_pretrained_without_ckpt_path_fails_clearly():
    with pytest.raises(ValueError, match="no official pretrained weights") as info:
        prithvi_swin_L(pretrained=True, device="meta")
    assert "ckpt_path" in str(info.value)
    assert "prithvi_swin_L" in str(info.value)


def test_missing_ckpt_file_is_named(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        small(ckpt_path=missing)


@pytest.mark.parametrize("layout", ["backbone.pt", "timm.safetensors", "lightning.ckpt"])
def test_weights_round_trip(tmp_path, layout):
    source = small(seed=1)
    target_path = tmp_path / layout
    if layout == "backbone.pt":
        torch.save(source.state_dict(), target_path)  # keys "model.patch_embed..."
    elif layout == "timm.safetensors":
        save_file(source.model.state_dict(), str(target_path))  # bare timm keys
    else:
        # A task checkpoint: backbone under a deeper prefix, plus a decoder and optimizer state.
        state = {f"model.encoder.{k}": v for k, v in source.state_dict().items()}
        state["model.decoder.conv.weight"] = torch.randn(3, 3)
        torch.save({"state_dict": state, "epoch": 3, "optimizer_states": []}, target_path)

    loaded = small(seed=2, ckpt_path=target_path)
    assert_same_parameters(source, loaded)
    x = torch.randn(1, 6, 64, 64)
    with torch.no_grad():
        for a, b in zip(source.eval()(x), loaded.eval()(x), strict=True):
            assert torch.equal(a, b)


def test_microsoft_simmim_layout_is_converted(tmp_path):
    """Original Swin layout: downsample at the end of the previous stage, under ``encoder.``."""
    source = small(seed=3)
    state = {}
    for key, value in source.model.state_dict().items():
        if ".downsample." in key:
            stage = int(key.split(".")[1])
            key = key.replace(f"layers.{stage}.downsample", f"layers.{stage - 1}.downsample")
        state[f"encoder.{key}"] = value
    state["encoder.mask_token"] = torch.zeros(1, 1, 16)
    state["decoder.0.weight"] = torch.randn(8, 8)
    torch.save({"model": state}, tmp_path / "simmim.pth")

    loaded = small(seed=4, ckpt_path=tmp_path / "simmim.pth")
    assert_same_parameters(source, loaded)


# timm's table interpolation trips two torch performance/deprecation warnings; not ours.
@pytest.mark.filterwarnings("ignore::UserWarning:timm.layers.interpolate")
def test_checkpoint_of_another_window_size_loads_with_resized_bias_tables(tmp_path):
    source = small(seed=10)  # window 7: (2 * 7 - 1) ** 2 relative positions
    torch.save(source.state_dict(), tmp_path / "w7.pt")
    loaded = small(window_size=4, ckpt_path=tmp_path / "w7.pt")
    block = loaded.model.layers[0].blocks[0]
    assert block.window_size == (4, 4)
    assert block.attn.relative_position_bias_table.shape == (7 * 7, 1)
    fc1 = "layers.0.blocks.0.mlp.fc1.weight"
    assert torch.equal(loaded.model.state_dict()[fc1], source.model.state_dict()[fc1])
    assert [f.shape[1] for f in loaded(torch.randn(1, 6, 64, 64))] == SMALL_CHANNELS


def test_band_subset_and_order_copy_matching_first_layer_slices(tmp_path, caplog):
    source = small(seed=5)  # the six pretrained HLS bands
    torch.save(source.state_dict(), tmp_path / "w.pt")
    fresh = small(seed=6, bands=["NIR_NARROW", "red", 7])
    fresh_ndvi = fresh.model.patch_embed.proj.weight[:, 2].detach().clone()

    with caplog.at_level(logging.INFO, logger="geofm.models.backbones.prithvi_swin"):
        loaded = small(seed=6, bands=["NIR_NARROW", "red", 7], ckpt_path=tmp_path / "w.pt")

    src = source.model.patch_embed.proj.weight
    dst = loaded.model.patch_embed.proj.weight
    assert dst.shape == (16, 3, 4, 4)
    assert torch.equal(dst[:, 0], src[:, PRETRAINED_BANDS.index("NIR_NARROW")])
    assert torch.equal(dst[:, 1], src[:, PRETRAINED_BANDS.index("RED")])
    assert torch.equal(dst[:, 2], fresh_ndvi)  # new band keeps the model's own initialisation
    assert not any(torch.equal(dst[:, 2], src[:, j]) for j in range(6))
    # Every other tensor comes from the checkpoint unchanged.
    assert torch.equal(loaded.model.patch_embed.proj.bias, source.model.patch_embed.proj.bias)
    fc1 = "layers.2.blocks.1.mlp.fc1.weight"
    assert torch.equal(loaded.model.state_dict()[fc1], source.model.state_dict()[fc1])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("[7]" in m for m in warnings)


def test_checkpoint_with_custom_bands(tmp_path):
    source = small(seed=7, bands=["RED", "NIR_NARROW"])
    torch.save(source.state_dict(), tmp_path / "two_bands.pt")

    loaded = small(
        bands=["NIR_NARROW"], pretrained_bands=["RED", "NIR_NARROW"],
        ckpt_path=tmp_path / "two_bands.pt",
    )
    assert torch.equal(
        loaded.model.patch_embed.proj.weight[:, 0], source.model.patch_embed.proj.weight[:, 1]
    )
    with pytest.raises(ValueError, match="pretrained_bands lists 6"):
        small(ckpt_path=tmp_path / "two_bands.pt")


def test_bad_missing_or_misshaped_keys_are_listed(tmp_path):
    state = small(seed=8).model.state_dict()

    extra = {**state, "layers.0.blocks.0.attn.bogus": torch.zeros(2)}
    torch.save(extra, tmp_path / "extra.pt")
    with pytest.raises(ValueError, match=r"unexpected keys: layers\.0\.blocks\.0\.attn\.bogus"):
        small(ckpt_path=tmp_path / "extra.pt")

    short = {k: v for k, v in state.items() if k != "layers.1.blocks.0.mlp.fc2.bias"}
    torch.save(short, tmp_path / "short.pt")
    with pytest.raises(ValueError, match=r"missing keys: layers\.1\.blocks\.0\.mlp\.fc2\.bias"):
        small(ckpt_path=tmp_path / "short.pt")

    with pytest.raises(ValueError, match="shape mismatches"):
        small(embed_dim=32, ckpt_path=tmp_path / "extra.pt")


def test_files_without_swin_weights_fail_clearly(tmp_path):
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="no Swin patch embedding"):
        small(ckpt_path=tmp_path / "other.pt")
    torch.save({"patch_embed.projection.weight": torch.zeros(1)}, tmp_path / "mmseg.pt")
    with pytest.raises(ValueError, match="MMSegmentation"):
        small(ckpt_path=tmp_path / "mmseg.pt")
    torch.save(nn.Linear(2, 2), tmp_path / "module.pt")
    with pytest.raises(ValueError, match="module.pt"):
        small(ckpt_path=tmp_path / "module.pt")


# ---------------------------------------------------------------------------------- training
def test_a_few_training_steps_reduce_the_loss():
    torch.manual_seed(0)
    backbone = small(seed=0, drop_path_rate=0.0)
    head = nn.Conv2d(backbone.out_channels[0], 2, kernel_size=1)
    x = torch.randn(4, 6, 64, 64)
    # A task at the resolution of the first feature map (stride 4) that the input determines:
    # is a patch brighter in NIR than in red?
    target = (nn.functional.avg_pool2d(x[:, 3:4] - x[:, 2:3], 4) > 0).squeeze(1).long()
    params = [*backbone.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=3e-3)

    losses = []
    for _ in range(10):
        loss = nn.functional.cross_entropy(head(backbone(x)[0]), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
    assert backbone.model.patch_embed.proj.weight.grad.abs().sum() > 0
