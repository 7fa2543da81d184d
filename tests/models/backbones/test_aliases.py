"""TerraTorch's backbone keywords on Prithvi ViT and Swin: each one changes what its geofm name does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from geofm.registry import BACKBONE_REGISTRY, MODEL_FACTORY_REGISTRY

# A small Swin: the aliases do not depend on depth, and 18 blocks cost seconds to build.
SMALL_SWIN = {"depths": (1, 1, 1, 1), "img_size": 64}


def vit(**kwargs):
    return BACKBONE_REGISTRY.build("prithvi_eo_tiny", **kwargs)


def swin(**kwargs):
    return BACKBONE_REGISTRY.build("prithvi_swin_B", **SMALL_SWIN, **kwargs)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------ Prithvi ViT
@pytest.mark.parametrize("alias", ["in_channels", "in_chans"])
def test_vit_in_channels_sets_the_patch_embedding(alias, caplog):
    model = vit(**{alias: 4})
    assert model.patch_embed.proj.in_channels == 4
    assert model.bands == ["BLUE", "GREEN", "RED", "NIR_NARROW"]  # the first pretrained bands
    assert "first 4 pretrained bands" in caplog.text
    assert model(torch.randn(1, 4, 32, 32))[-1].shape == (1, 5, 256)


def test_vit_in_channels_agreeing_with_bands_is_fine():
    model = vit(in_channels=2, bands=["RED", "NIR_NARROW"])
    assert model.bands == ["RED", "NIR_NARROW"] and model.patch_embed.proj.in_channels == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"in_channels": 3, "bands": ["RED", "GREEN"]}, "in_chans=3 .* but bands has 2"),
        ({"in_channels": 8}, "more than the 6 pretrained bands"),
        ({"in_channels": 4, "in_chans": 5}, "in_channels=4 .* in_chans=5 disagree"),
        ({"model_bands": ["RED"], "bands": ["GREEN"]}, "model_bands=.* bands=.* disagree"),
        ({"drop_path_rate": 0.1, "drop_path": 0.2}, "drop_path_rate=0.1 .* drop_path=0.2 disagree"),
        ({"pretrained_cfg_overlay": {"file": "a.pt"}, "ckpt_path": "b.pt"}, "disagree; give ckpt_path"),
        ({"pretrained_cfg_overlay": {"url": "https://x"}}, r"\{file: <path>\} only"),
    ],
)
def test_vit_conflicts_and_bad_values_are_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        vit(**kwargs)


def test_vit_alias_equal_to_its_geofm_name_is_accepted():
    model = vit(model_bands=["RED", "GREEN"], bands=("RED", "GREEN"), drop_path_rate=0.1, drop_path=0.1)
    assert model.bands == ["RED", "GREEN"]


def test_vit_model_bands_is_bands():
    model = vit(model_bands=["SWIR_1", "RED"])
    assert model.bands == ["SWIR_1", "RED"] and model.patch_embed.proj.in_channels == 2


def test_vit_drop_path_rate_sets_the_blocks_drop_path():
    model = vit(drop_path_rate=0.3)
    assert model.blocks[-1].drop_path1.drop_prob == pytest.approx(0.3)
    assert model.blocks[-1].drop_path2.drop_prob == pytest.approx(0.3)
    assert isinstance(vit().blocks[-1].drop_path1, torch.nn.Identity)


@pytest.mark.parametrize("patch_size", [8, [8, 8], [1, 8, 8]])
def test_vit_patch_size_sets_the_patch_embedding(patch_size):
    model = vit(patch_size=patch_size)
    assert model.patch_embed.proj.kernel_size == (1, 8, 8)
    assert model(torch.randn(1, 6, 32, 32))[-1].shape == (1, 1 + 16, 256)


def test_vit_pretrained_cfg_overlay_file_is_loaded(tmp_path: Path):
    torch.manual_seed(1)
    source = vit()
    path = tmp_path / "tiny.pt"
    torch.save(source.state_dict(), path)
    torch.manual_seed(2)
    loaded = vit(pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    assert_same_weights(source, loaded)


def test_vit_pretrained_cfg_overlay_missing_file_names_it(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        vit(pretrained_cfg_overlay={"file": str(tmp_path / "missing.pt")})


@pytest.mark.parametrize("name", ["window_size", "pretrain_img_size"])
def test_vit_keywords_without_effect_warn(name, caplog):
    model = vit(**{name: 8})
    assert f"{name}=8 has no effect" in caplog.text
    assert model.patch_embed.proj.kernel_size == (1, 16, 16)


def test_vit_none_aliases_are_dropped():
    model = vit(in_channels=None, drop_path_rate=None, model_bands=None, pretrained_cfg_overlay=None)
    assert model.patch_embed.proj.in_channels == 6


def test_vit_unknown_keyword_lists_the_aliases():
    with pytest.raises(TypeError, match=r"\['vit_adapter'\].*TerraTorch's names"):
        vit(vit_adapter=True)


def test_vit_build_function_takes_the_aliases():
    from geofm.models.backbones.prithvi_vit import build_prithvi_vit

    model = build_prithvi_vit("prithvi_eo_tiny", in_channels=3, num_frames=2)
    assert model.patch_embed.proj.in_channels == 3 and model.num_frames == 2


def test_vit_aliases_through_the_factory():
    model = MODEL_FACTORY_REGISTRY.build("EncoderDecoderFactory").build_model(
        "segmentation", "prithvi_eo_tiny", "FCNDecoder", num_classes=2,
        backbone_in_channels=4, backbone_drop_path_rate=0.1, backbone_num_frames=1,
    )
    assert model.encoder.patch_embed.proj.in_channels == 4
    assert model(torch.randn(1, 4, 32, 32)).output.shape == (1, 2, 32, 32)


# ------------------------------------------------------------------------------ Prithvi Swin
@pytest.mark.parametrize("alias", ["in_channels", "in_chans"])
def test_swin_in_channels_sets_the_patch_embedding(alias):
    model = swin(**{alias: 4})
    assert model.model.patch_embed.proj.in_channels == 4
    assert model.bands == ["BLUE", "GREEN", "RED", "NIR_NARROW"]
    assert [f.shape[1] for f in model(torch.randn(1, 4, 64, 64))] == [128, 256, 512, 1024]


def test_swin_window_and_drop_path_reach_the_blocks():
    model = swin(window_size=8, drop_path=0.3)
    assert model.model.layers[0].blocks[0].window_size == (8, 8)
    assert model.model.layers[-1].blocks[-1].drop_path1.drop_prob == pytest.approx(0.3)
    assert swin(drop_path_rate=0.2).model.layers[-1].blocks[-1].drop_path1.drop_prob == pytest.approx(0.2)


def test_swin_model_bands_is_bands():
    model = swin(model_bands=["RED", "NIR_NARROW"])
    assert model.bands == ["RED", "NIR_NARROW"] and model.in_chans == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"drop_path": 0.1, "drop_path_rate": 0.2}, "drop_path=0.1 .* drop_path_rate=0.2 disagree"),
        ({"model_bands": ["RED"], "bands": ["GREEN"]}, "disagree"),
        ({"in_channels": 3, "bands": ["RED", "GREEN"]}, "in_chans=3 .* but bands has 2"),
    ],
)
def test_swin_conflicts_are_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        swin(**kwargs)


def test_swin_pretrained_cfg_overlay_file_is_loaded(tmp_path: Path):
    torch.manual_seed(1)
    source = swin()
    path = tmp_path / "swin.pt"
    torch.save(source.state_dict(), path)
    torch.manual_seed(2)
    loaded = swin(pretrained_cfg_overlay={"file": str(path)})
    assert_same_weights(source, loaded)
