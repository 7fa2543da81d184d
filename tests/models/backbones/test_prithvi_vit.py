"""Prithvi ViT backbones: registry, sizes, forward pass against a plain re-implementation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from geofm.models.backbones.prithvi_vit import VARIANTS, PrithviViT, build_prithvi_vit
from geofm.registry import BACKBONE_REGISTRY, GEOFM_BACKBONE_REGISTRY
from tests.models.backbones.test_prithvi_pos_embed import spec_code, spec_pos_embed

NAMES = [
    "prithvi_eo_tiny",
    "prithvi_eo_v1_100",
    "prithvi_eo_v2_tiny_tl",
    "prithvi_eo_v2_100_tl",
    "prithvi_eo_v2_300",
    "prithvi_eo_v2_300_tl",
    "prithvi_eo_v2_600",
    "prithvi_eo_v2_600_tl",
]
PARAMETERS = {
    "prithvi_eo_tiny": 3_553_280,
    "prithvi_eo_v1_100": 86_237_184,
    "prithvi_eo_v2_tiny_tl": 5_634_048,
    "prithvi_eo_v2_100_tl": 86_237_184,
    "prithvi_eo_v2_300": 303_886_336,
    "prithvi_eo_v2_300_tl": 303_886_336,
    "prithvi_eo_v2_600": 631_188_480,
    "prithvi_eo_v2_600_tl": 631_188_480,
}
TINY = {"prithvi_eo_tiny", "prithvi_eo_v2_tiny_tl"}


def build(name: str, **kwargs: object) -> PrithviViT:
    """Tiny variants for real, the others on the meta device (shapes only, no memory)."""
    if name in TINY:
        return BACKBONE_REGISTRY.build(name, **kwargs)
    with torch.device("meta"):
        return BACKBONE_REGISTRY.build(name, **kwargs)


def reference_features(
    state: dict[str, torch.Tensor], x: torch.Tensor, heads: int
) -> list[torch.Tensor]:
    """The spec's encoder in plain tensor algebra, from a state dict; ``x`` is (B, C, T, H, W)."""
    weight = state["patch_embed.proj.weight"]
    dim = weight.shape[0]
    tokens = F.conv3d(x, weight, state["patch_embed.proj.bias"], stride=weight.shape[2:])
    batch, _, t, h, w = tokens.shape
    tokens = tokens.reshape(batch, dim, t * h * w).transpose(1, 2)
    pos = spec_pos_embed(dim, (t, h, w)).to(torch.float32)
    hidden = torch.cat([(state["cls_token"] + pos[:1]).expand(batch, -1, -1), tokens + pos[1:]], 1)
    head_dim = dim // heads
    outputs = []
    depth = sum(k.endswith("norm1.weight") for k in state)
    for i in range(depth):
        p = {
            k.split(f"blocks.{i}.", 1)[1]: v
            for k, v in state.items()
            if k.startswith(f"blocks.{i}.")
        }
        y = F.layer_norm(hidden, (dim,), p["norm1.weight"], p["norm1.bias"], eps=1e-5)
        qkv = y @ p["attn.qkv.weight"].T + p["attn.qkv.bias"]
        q, k, v = qkv.reshape(batch, -1, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-1, -2) / math.sqrt(head_dim)).softmax(-1)
        y = (attn @ v).transpose(1, 2).reshape(batch, -1, dim)
        hidden = hidden + y @ p["attn.proj.weight"].T + p["attn.proj.bias"]
        y = F.layer_norm(hidden, (dim,), p["norm2.weight"], p["norm2.bias"], eps=1e-5)
        y = F.gelu(y @ p["mlp.fc1.weight"].T + p["mlp.fc1.bias"])
        hidden = hidden + y @ p["mlp.fc2.weight"].T + p["mlp.fc2.bias"]
        outputs.append(hidden)
    outputs[-1] = F.layer_norm(hidden, (dim,), state["norm.weight"], state["norm.bias"], eps=1e-5)
    return outputs


# ------------------------------------------------------------------------------ registry, sizes
def test_all_variants_registered() -> None:
    for name in NAMES:
        assert name in BACKBONE_REGISTRY
        assert name in GEOFM_BACKBONE_REGISTRY
    assert set(NAMES) == set(VARIANTS)


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_and_attributes(name: str) -> None:
    model = build(name, pretrained=False)
    assert sum(p.numel() for p in model.parameters()) == PARAMETERS[name]
    variant = VARIANTS[name]
    assert model.embed_dim == variant.embed_dim
    assert model.patch_size == variant.patch_size
    assert model.num_frames == 1
    assert model.img_size == (224, 224)
    assert model.out_channels == [variant.embed_dim] * variant.depth
    assert model.bands == ["BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2"]
    assert (model.temporal_embed_enc is not None) == name.endswith("_tl")
    assert (model.location_embed_enc is not None) == name.endswith("_tl")


def test_none_arguments_are_dropped() -> None:
    model = build("prithvi_eo_v2_600", num_frames=None, img_size=None, bands=None, drop_path=None)
    assert model.grid_size == (1, 16, 16)
    assert model.pos_embed.shape == (1, 257, 1280)


def test_builder_arguments() -> None:
    model = build(
        "prithvi_eo_v2_300_tl",
        num_frames=3,
        img_size=(160, 96),
        bands=["RED", "NIR_NARROW"],
        out_indices=[5, 11, 17, 23],
        coords_encoding=["time"],
        coords_scale_learn=True,
        drop_path=0.2,
    )
    assert model.grid_size == (3, 10, 6)
    assert model.patch_embed.proj.weight.shape == (1024, 2, 1, 16, 16)
    assert model.out_channels == [3 * 1024] * 4
    assert model.location_embed_enc is None
    assert isinstance(model.temporal_embed_enc.scale, torch.nn.Parameter)
    assert model.blocks[-1].drop_path1.drop_prob == pytest.approx(0.2)
    assert isinstance(model.blocks[0].drop_path1, torch.nn.Identity)


def test_bad_arguments_name_the_problem() -> None:
    with pytest.raises(ValueError, match=r"in_chans=3 .* but bands has 2 entries"):
        BACKBONE_REGISTRY.build("prithvi_eo_tiny", in_chans=3, bands=["RED", "GREEN"])
    with pytest.raises(ValueError, match="RDE"):
        BACKBONE_REGISTRY.build("prithvi_eo_tiny", bands=["RDE"])
    with pytest.raises(ValueError, match="out of range"):
        BACKBONE_REGISTRY.build("prithvi_eo_tiny", out_indices=[4])
    with pytest.raises(ValueError, match="coords_encoding"):
        BACKBONE_REGISTRY.build("prithvi_eo_tiny", coords_encoding=["season"])
    with pytest.raises(ValueError, match="multiples of the patch size"):
        BACKBONE_REGISTRY.build("prithvi_eo_tiny", img_size=40)
    with pytest.raises(ValueError, match="Unknown Prithvi ViT variant"):
        build_prithvi_vit("prithvi_eo_v3")


# ------------------------------------------------------------------------------ forward
@pytest.mark.parametrize("fused", [True, False])
def test_forward_matches_plain_reimplementation(fused: bool) -> None:
    torch.manual_seed(0)
    model = BACKBONE_REGISTRY.build(
        "prithvi_eo_v2_tiny_tl", img_size=32, num_frames=2, fused_attn=fused
    )
    with torch.no_grad():
        for param in model.parameters():  # non-trivial norms and biases
            param.add_(0.05 * torch.randn_like(param))
    model.eval()
    x = torch.randn(2, 6, 2, 32, 32)
    with torch.no_grad():
        out = model(x)
        expected = reference_features(model.state_dict(), x, heads=3)
    assert len(out) == 12
    for got, want in zip(out, expected, strict=True):
        assert got.shape == (2, 1 + 2 * 2 * 2, 192)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_fused_switch_changes_the_attention_path(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    sdpa = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(1)
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    model = BACKBONE_REGISTRY.build("prithvi_eo_tiny", img_size=32).eval()
    x = torch.randn(1, 6, 32, 32)
    with torch.no_grad():
        fused = model(x)
        assert len(calls) == 4 and model.fused_attn
        model.fused_attn = False
        unfused = model(x)
    assert len(calls) == 4 and not model.fused_attn
    for a, b in zip(fused, unfused, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_multitemporal_forward_with_coordinates() -> None:
    torch.manual_seed(0)
    model = BACKBONE_REGISTRY.build("prithvi_eo_v2_tiny_tl", img_size=32, num_frames=3).eval()
    assert model.out_channels == [3 * 192] * 12
    x = torch.randn(2, 6, 3, 32, 32)
    temporal = torch.tensor(
        [[[2020, 10], [2020, 100], [2021, 5]], [[2019, 300], [2020, 1], [2020, 2]]]
    )
    location = torch.tensor([[29.5, -98.0], [40.1, 3.2]])
    captured: list[torch.Tensor] = []
    model.blocks[0].register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    with torch.no_grad():
        plain = model(x)
        with_coords = model(x, temporal_coords=temporal, location_coords=location)
    assert [f.shape for f in with_coords] == [(2, 1 + 3 * 4, 192)] * 12
    assert not torch.allclose(plain[-1], with_coords[-1])
    # Block 0's input differs by the coordinate codes: year / day in 96 dims each, lat / lon
    # likewise, scale 1. Float32 coding of raw years is exact only to ~1e-4.
    delta = captured[1] - captured[0]
    assert torch.all(delta[:, 0] == 0)  # the class token gets no coordinate code
    for b in range(2):
        for t in range(3):
            year, day = temporal[b, t].tolist()
            lat, lon = location[b].tolist()
            code = torch.tensor(spec_code(96, year) + spec_code(96, day), dtype=torch.float32)
            code += torch.tensor(spec_code(96, lat) + spec_code(96, lon), dtype=torch.float32)
            frame = delta[b, 1 + 4 * t : 1 + 4 * (t + 1)]
            torch.testing.assert_close(frame, code.expand(4, -1), atol=5e-4, rtol=0)


def test_coordinates_without_encoding_are_an_error() -> None:
    model = build("prithvi_eo_v2_300", img_size=32)
    x = torch.empty(1, 6, 32, 32, device="meta")
    no_time = "prithvi_eo_v2_300 has no time encoding.*prithvi_eo_v2_300_tl"
    with pytest.raises(ValueError, match=no_time):
        model(x, temporal_coords=torch.zeros(1, 1, 2, device="meta"))
    with pytest.raises(ValueError, match="has no location encoding.*prithvi_eo_v2_300_tl"):
        model(x, location_coords=torch.zeros(1, 2, device="meta"))
    # A _tl variant built without one encoding says how to get it back.
    time_only = BACKBONE_REGISTRY.build(
        "prithvi_eo_v2_tiny_tl", img_size=32, coords_encoding=["time"]
    )
    assert time_only.extra_inputs == ("temporal_coords",)
    with pytest.raises(ValueError, match=r"coords_encoding=\['time'\]; rebuild"):
        time_only(torch.randn(1, 6, 32, 32), location_coords=torch.zeros(1, 2))


def test_single_frame_and_other_sizes() -> None:
    model = BACKBONE_REGISTRY.build(
        "prithvi_eo_v2_tiny_tl", img_size=32, out_indices=[2, -1]
    ).eval()
    assert model.out_channels == [192, 192]
    with torch.no_grad():
        four_d = model(
            torch.randn(2, 6, 48, 64), temporal_coords=torch.tensor([[2020, 1], [2021, 2]])
        )
        five_d = model(torch.randn(1, 6, 2, 64, 32))
    assert [f.shape for f in four_d] == [(2, 1 + 3 * 4, 192)] * 2
    assert [f.shape for f in five_d] == [(1, 1 + 2 * 4 * 2, 192)] * 2


def test_out_indices_select_blocks_and_norm_stays_on_the_last_block() -> None:
    torch.manual_seed(0)
    model = BACKBONE_REGISTRY.build("prithvi_eo_tiny", img_size=32).eval()
    some = BACKBONE_REGISTRY.build("prithvi_eo_tiny", img_size=32, out_indices=[3, 1]).eval()
    early = BACKBONE_REGISTRY.build("prithvi_eo_tiny", img_size=32, out_indices=[0, -2]).eval()
    some.load_state_dict(model.state_dict())
    early.load_state_dict(model.state_dict())
    assert some.out_channels == early.out_channels == [256, 256]
    x = torch.randn(1, 6, 32, 32)
    with torch.no_grad():
        full = model(x)
        selected, first_blocks = some(x), early(x)
        expected = reference_features(model.state_dict(), x.unsqueeze(2), heads=4)
    torch.testing.assert_close(selected[0], full[3], atol=0, rtol=0)
    torch.testing.assert_close(selected[1], full[1], atol=0, rtol=0)
    # Block 2's output is returned without the final norm when later blocks are not asked for.
    torch.testing.assert_close(first_blocks[1], expected[2], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(full[-1], expected[-1], atol=1e-4, rtol=1e-4)


def test_input_errors() -> None:
    model = BACKBONE_REGISTRY.build(
        "prithvi_eo_v2_tiny_tl", img_size=32, bands=["RED", "NIR_NARROW"]
    )
    with pytest.raises(ValueError, match="2 bands"):
        model(torch.randn(1, 6, 32, 32))
    with pytest.raises(ValueError, match="temporal_coords must have shape"):
        model(torch.randn(1, 2, 3, 32, 32), temporal_coords=torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="location_coords must have shape"):
        model(torch.randn(1, 2, 32, 32), location_coords=torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\) or \(B, C, T, H, W\)"):
        model(torch.randn(2, 32, 32))
    with pytest.raises(ValueError, match="smaller than one patch"):
        model(torch.randn(1, 2, 8, 8))


def test_gradients_flow_and_drop_path_is_stochastic_in_training() -> None:
    torch.manual_seed(0)
    model = BACKBONE_REGISTRY.build("prithvi_eo_tiny", img_size=32, drop_path=0.5).train()
    x = torch.randn(2, 6, 32, 32)
    a, b = model(x)[-1], model(x)[-1]
    assert not torch.allclose(a, b)
    a.sum().backward()
    assert model.patch_embed.proj.weight.grad is not None
    assert model.pos_embed.grad is None and not model.pos_embed.requires_grad
