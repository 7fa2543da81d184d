"""MultiSourceRegistry and the registries geofm exposes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from geofm.registry import (
    BACKBONE_REGISTRY,
    DECODER_REGISTRY,
    MultiSourceRegistry,
    Registry,
    UnknownNameError,
    registry_summary,
)


def make_sources() -> tuple[MultiSourceRegistry, Registry, Registry]:
    ours = Registry("widget", scope="ours")
    theirs = Registry("widget", scope="theirs")
    ours.register(name="Both")(lambda **kw: ("ours", kw))
    theirs.register(name="Both")(lambda **kw: ("theirs", kw))
    theirs.register(name="OnlyTheirs")(lambda **kw: ("theirs-only", kw))
    return MultiSourceRegistry("widget", {"ours": ours, "theirs": theirs}), ours, theirs


def test_prefix_and_search_order():
    reg, ours, theirs = make_sources()
    assert reg.build("Both")[0] == "ours"  # ours first
    assert reg.build("theirs_Both")[0] == "theirs"  # prefix goes straight to the source
    assert reg.build("OnlyTheirs", a=1) == ("theirs-only", {"a": 1})
    assert reg.build({"type": "theirs_Both", "k": 2}) == ("theirs", {"k": 2})
    assert reg.build("theirs_Both", k=2, default_args={"k": 0, "j": 1}) == ("theirs", {"k": 2, "j": 1})
    assert reg.find_registry("OnlyTheirs") is theirs
    assert reg.find_registry("Both") is ours
    assert reg.find_registry("nothing") is None


def test_set_behaviour_and_sources():
    reg, ours, theirs = make_sources()
    assert sorted(reg) == ["ours_Both", "theirs_Both", "theirs_OnlyTheirs"]
    assert len(reg) == 3
    assert "OnlyTheirs" in reg and "ours_OnlyTheirs" not in reg
    assert reg.keys() == ["ours", "theirs"]
    assert reg["theirs"] is theirs
    extra = Registry("widget", scope="extra")
    extra.register(name="Extra")(lambda: "extra")
    reg.register_source("extra", extra)
    assert reg.build("Extra") == "extra" and reg.keys()[-1] == "extra"
    with pytest.raises(KeyError):
        reg.register_source("extra", extra)


def test_constructor_error_is_not_swallowed():
    ours = Registry("widget", scope="ours")
    theirs = Registry("widget", scope="theirs")

    @ours.register(name="Net")
    def failing(**kwargs):
        raise KeyError("bad key inside constructor")

    theirs.register(name="Net")(lambda **kw: "should not be reached")
    reg = MultiSourceRegistry("widget", {"ours": ours, "theirs": theirs})
    with pytest.raises(KeyError, match="bad key inside constructor"):
        reg.build("Net")


def test_unknown_names():
    reg, _, _ = make_sources()
    with pytest.raises(UnknownNameError, match="widget") as info:
        reg.build("OnlyTheir")
    assert "OnlyTheirs" in info.value.suggestions
    with pytest.raises(UnknownNameError) as info:
        reg.build("theirs_Bot")
    assert info.value.suggestions == ["theirs_Both"]
    with pytest.raises(TypeError, match="native"):
        reg.register(name="x")


def test_suggestions_for_prithvi_names():
    # The real backbone, registered by geofm.models.backbones.prithvi_vit on first lookup (a
    # stand-in registered here with force=True replaced it for every later test).
    with pytest.raises(UnknownNameError) as info:
        BACKBONE_REGISTRY.build("prithvi_eo_v2_30")
    assert "prithvi_eo_v2_300" in info.value.suggestions
    assert len(info.value.suggestions) <= 5


def test_timm_source_membership_is_cheap_and_builds_features():
    assert BACKBONE_REGISTRY.keys()[:2] == ["geofm", "timm"]
    assert "resnet50" in BACKBONE_REGISTRY
    assert "timm_resnet50" in BACKBONE_REGISTRY
    assert "timm_not_a_model" not in BACKBONE_REGISTRY
    fresh = type(BACKBONE_REGISTRY["timm"])()
    assert all(name in fresh for name in ["resnet50", "vit_small_patch16_224"] * 100)
    assert fresh._name_cache is None  # membership never listed all of timm
    backbone = BACKBONE_REGISTRY.build("timm_resnet18", pretrained=False, in_chans=6)
    features = backbone(torch.randn(2, 6, 64, 64))
    assert isinstance(features, list)
    assert [f.shape[1] for f in features] == backbone.out_channels == [64, 64, 128, 256, 512]
    assert [f.shape[-1] for f in features] == [32, 16, 8, 4, 2]


def test_timm_registration_refused():
    with pytest.raises(TypeError):
        BACKBONE_REGISTRY["timm"].register(lambda: None)


@pytest.mark.parametrize("arch", ["Unet", "FPN", "DeepLabV3Plus", "PSPNet", "UnetPlusPlus"])
def test_smp_decoders(arch):
    channels = [64, 64, 128, 256, 512]
    decoder = DECODER_REGISTRY.build(f"smp_{arch}", channels)
    features = [torch.randn(2, c, 64 // 2**i, 64 // 2**i) for i, c in enumerate(channels)]
    out = decoder(features)
    assert out.shape[:2] == (2, decoder.out_channels)


def test_smp_decoder_arguments_reach_smp():
    decoder = DECODER_REGISTRY.build(
        "smp_Unet", [16, 32, 64], decoder_channels=[48, 24, 12]
    )
    assert decoder.out_channels == 12
    out = decoder([torch.randn(2, c, 32 // 2**i, 32 // 2**i) for i, c in enumerate([16, 32, 64])])
    assert out.shape == (2, 12, 64, 64)
    assert set(DECODER_REGISTRY["smp"]) >= {"Unet", "FPN", "DeepLabV3Plus", "PSPNet"}


def test_mmseg_missing_gives_install_hint():
    if "mmseg" in DECODER_REGISTRY.keys():
        pytest.skip("mmsegmentation is installed")
    with pytest.raises(ImportError, match=r"pip install 'geofm\[mmseg\]'"):
        DECODER_REGISTRY.build("mmseg_UPerHead", [64])
    assert not any(name.startswith("mmseg_") for name in DECODER_REGISTRY)
    assert "mmseg_UPerHead" not in DECODER_REGISTRY  # membership answers, build explains


def test_summary_is_json():
    summary = registry_summary()
    assert set(summary) == {"backbone", "decoder", "neck", "factory"}
    assert "resnet18" in summary["backbone"]["timm"]
    assert "Unet" in summary["decoder"]["smp"]
    json.dumps(summary)
    with pytest.raises(KeyError):
        registry_summary(["nope"])


def test_import_geofm_is_light():
    code = (
        "import sys, geofm, geofm.registry\n"
        "geofm.BACKBONE_REGISTRY\n"
        "heavy = ['timm', 'segmentation_models_pytorch', 'lightning', 'rasterio']\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_registry_list_json():
    out = subprocess.run(
        [sys.executable, "-m", "geofm.cli", "registry", "list", "decoder", "--filter", "unet", "--json"],
        capture_output=True, text=True, check=True,
    )
    data = json.loads(out.stdout)
    assert data["decoder"]["smp"] == ["Unet", "UnetPlusPlus"]


def test_public_names_resolve():
    import geofm

    for name in geofm.__all__:
        assert getattr(geofm, name) is not None


def test_smp_decoder_refuses_what_it_cannot_honour():
    from geofm.models.decoders.smp_decoder import SmpDecoder

    with pytest.raises(ValueError, match="builds its own encoder"):
        SmpDecoder([64, 128], arch="DPT")
    with pytest.raises(ValueError, match="classes"):
        DECODER_REGISTRY.build("smp_Unet", [16, 32, 64], classes=3)
