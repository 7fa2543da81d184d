"""What every Prithvi backbone, ViT or Swin, shares: variant functions, the pretrained-config
table, one weights resolver, one key report, one out_indices rule, extra_inputs and
pretrained_stats, and a forward that refuses unknown inputs.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import torch

from geofm.models.backbones import checkpoints, prithvi_swin, prithvi_vit
from geofm.models.backbones.out_indices import check_out_indices
from geofm.models.backbones.pretrained import (
    PRETRAINED_CONFIGS,
    PRITHVI_BANDS,
    PretrainedConfig,
)
from geofm.registry import BACKBONE_REGISTRY, GEOFM_BACKBONE_REGISTRY

VIT = list(prithvi_vit.VARIANTS)  # every registered ViT variant
SWIN = ["prithvi_swin_B", "prithvi_swin_L"]
SMALL_SWIN = {"depths": (1, 1, 2, 1), "embed_dim": 16, "num_heads": (1, 2, 4, 8)}
V1_MEAN = [775.0, 1081.0, 1229.0, 2497.0, 2204.0, 1611.0]
V1_STD = [1282.0, 1270.0, 1399.0, 1368.0, 1292.0, 1155.0]
V2_MEAN = [1087.0, 1342.0, 1433.0, 2734.0, 1958.0, 1363.0]
V2_STD = [2248.0, 2179.0, 2178.0, 1850.0, 1242.0, 1049.0]


def build(name: str, **kwargs: object) -> torch.nn.Module:
    """Tiny ViTs and shrunk Swins for real, the big ViTs on the meta device."""
    if name in SWIN:
        return BACKBONE_REGISTRY.build(name, **SMALL_SWIN, **kwargs)
    if "tiny" in name:
        return BACKBONE_REGISTRY.build(name, **kwargs)
    with torch.device("meta"):
        return BACKBONE_REGISTRY.build(name, **kwargs)


def tiny_vit(**kwargs: object) -> torch.nn.Module:
    return BACKBONE_REGISTRY.build("prithvi_eo_tiny", img_size=32, **kwargs)


def small_swin(**kwargs: object) -> torch.nn.Module:
    return BACKBONE_REGISTRY.build("prithvi_swin_B", **SMALL_SWIN, **kwargs)


def generic(message: str, *names: str) -> str:
    """``message`` with the names that differ between backbones replaced by ``<>``."""
    for name in sorted(names, key=len, reverse=True):  # a file name may contain the model's
        message = message.replace(name, "<>")
    return message


# ------------------------------------------------------------------------------ variant functions
@pytest.mark.parametrize("name", VIT + SWIN)
def test_every_variant_is_a_plain_registered_function(name: str) -> None:
    module = prithvi_swin if name in SWIN else prithvi_vit
    function = getattr(module, name)
    assert GEOFM_BACKBONE_REGISTRY.get(name) is function
    assert f"def {name}(" in inspect.getsource(function)
    assert function.__name__ == name and function.__doc__
    parameters = list(inspect.signature(function).parameters)
    assert parameters[:3] == ["pretrained", "ckpt_path", "bands"]
    assert name in PRETRAINED_CONFIGS


def test_one_band_list_and_every_config_is_consistent() -> None:
    assert PRITHVI_BANDS == ("BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2")
    assert set(PRETRAINED_CONFIGS) == set(VIT + SWIN)
    for name, cfg in PRETRAINED_CONFIGS.items():
        assert cfg.bands == PRITHVI_BANDS, name
        assert (cfg.img_size, cfg.num_frames) == (224, 1), name  # the files' pos_embed grid
    assert PRETRAINED_CONFIGS["prithvi_eo_v2_600_tl"].hub_repo == (
        "ibm-nasa-geospatial/Prithvi-EO-2.0-600M-TL"
    )
    with pytest.raises(ValueError, match="mean has 2 values for 6 bands"):
        PretrainedConfig(None, None, mean=(1.0, 2.0), std=(1.0, 2.0))
    with pytest.raises(ValueError, match="both hub_repo and hub_file"):
        PretrainedConfig("owner/repo", None)
    with pytest.raises(AttributeError):
        PRETRAINED_CONFIGS["prithvi_eo_v2_300"].hub_file = "other.pt"  # type: ignore[misc]


# ------------------------------------------------------------------------------ weights
def test_pretrained_without_official_weights_same_error(monkeypatch: pytest.MonkeyPatch) -> None:
    messages = []
    for name in ("prithvi_eo_tiny", "prithvi_swin_B"):
        with pytest.raises(ValueError, match="no official pretrained weights") as info:
            build(name, pretrained=True)
        messages.append(generic(str(info.value), name))
        assert "ckpt_path" in str(info.value)
    assert messages[0] == messages[1]


def test_pretrained_missing_from_cache_same_error_then_loads_from_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "hf"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    # No public Swin file is known: give the Swin one, to show that it takes the ViT's path.
    swin_cfg = PretrainedConfig("someone/Prithvi-Swin-B", "prithvi_swin_B.pt")
    monkeypatch.setitem(PRETRAINED_CONFIGS, "prithvi_swin_B", swin_cfg)
    vit_cfg = PRETRAINED_CONFIGS["prithvi_eo_v2_tiny_tl"]
    messages = []
    for name, cfg in (("prithvi_eo_v2_tiny_tl", vit_cfg), ("prithvi_swin_B", swin_cfg)):
        with pytest.raises(FileNotFoundError) as info:
            build(name, pretrained=True)
        message = str(info.value)
        assert cfg.hub_file in message and cfg.hub_repo in message and "ckpt_path" in message
        messages.append(generic(message, name, cfg.hub_repo, cfg.hub_file))
    assert messages[0] == messages[1]

    source = small_swin()
    snapshot = cache / "models--someone--Prithvi-Swin-B" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    torch.save(source.state_dict(), snapshot / "prithvi_swin_B.pt")
    loaded = small_swin(pretrained=True)
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


@pytest.mark.parametrize("make", [tiny_vit, small_swin], ids=["vit", "swin"])
def test_ckpt_path_loads_whatever_pretrained_says(make, tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = make()
    torch.save(source.state_dict(), tmp_path / "w.pt")
    torch.manual_seed(1)
    for pretrained in (False, True):
        loaded = make(ckpt_path=tmp_path / "w.pt", pretrained=pretrained)
        for key, value in source.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        make(ckpt_path=tmp_path / "absent.pt")


def test_one_key_report_for_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    report = checkpoints.check_state_dict

    def spy(*args, **kwargs):
        calls.append(args[3])
        return report(*args, **kwargs)

    monkeypatch.setattr(checkpoints, "check_state_dict", spy)
    vit_state = tiny_vit().state_dict()
    swin_state = small_swin().model.state_dict()
    bad = {
        "vit": (tiny_vit, vit_state | {"blocks.0.attn.bogus": torch.zeros(2)}),
        "swin": (small_swin, swin_state | {"layers.0.blocks.0.attn.bogus": torch.zeros(2)}),
    }
    messages = {}
    for kind, (make, state) in bad.items():
        torch.save(state, tmp_path / f"{kind}.pt")
        with pytest.raises(ValueError) as info:
            make(ckpt_path=tmp_path / f"{kind}.pt")
        messages[kind] = str(info.value)
    assert calls == [
        "Prithvi ViT (embed_dim=256, depth=4)",
        "Swin (embed_dim=16, depths=[1, 1, 2, 1])",
    ]
    pattern = (
        r"ckpt_path='.*/{kind}\.pt' does not fit this {model}: unexpected keys: {key}\. "
        r"Check that the variant and its arguments match the checkpoint\."
    )
    assert re.fullmatch(
        pattern.format(kind="vit", model=r"Prithvi ViT \(.*\)", key=r"blocks\.0\.attn\.bogus"),
        messages["vit"],
    )
    assert re.fullmatch(
        pattern.format(kind="swin", model=r"Swin \(.*\)", key=r"layers\.0\.blocks\.0\.attn\.bogus"),
        messages["swin"],
    )


def test_key_report_lists_every_kind_in_model_order() -> None:
    expected = {"a": torch.zeros(2), "b": torch.zeros(3), "c": torch.zeros(1)}
    state = {"x": torch.zeros(1), "b": torch.zeros(4)}
    with pytest.raises(ValueError) as info:
        checkpoints.check_state_dict(expected, state, "file", "Net (d=2)")
    assert str(info.value) == (
        "file does not fit this Net (d=2): missing keys: a, c; unexpected keys: x; shape "
        "mismatches: b: checkpoint (4,), model (3,). Check that the variant and its arguments "
        "match the checkpoint."
    )
    checkpoints.check_state_dict(expected, dict(expected), "file", "Net")  # fits: no error


# ------------------------------------------------------------------------------ out_indices
@pytest.mark.parametrize(
    ("indices", "match"),
    [
        (
            [4],
            r"out_indices \[4\] are out of range for 4 <>s: valid indices are 0\.\.3, or -4\.\.-1",
        ),
        ([-5, 0], r"out_indices \[-5\] are out of range"),
        ([1, -3], r"select the <>s \[1\] more than once"),
        ([], "non-empty list"),
        (2, "non-empty list"),
    ],
)
def test_one_out_indices_rule_for_vit_and_swin(indices, match: str) -> None:
    messages = []
    for make, unit in ((tiny_vit, "block"), (small_swin, "stage")):
        with pytest.raises(ValueError) as info:
            make(out_indices=indices)
        messages.append(generic(str(info.value), unit))
    assert messages[0] == messages[1]
    assert re.search(match, messages[0]), messages[0]


def test_out_indices_keep_the_order_given_and_allow_negatives() -> None:
    assert check_out_indices([3, -4, -2], 4) == [3, 0, 2]
    assert check_out_indices(None, 3) == [0, 1, 2]
    vit, swin = tiny_vit(out_indices=[-1, 1]), small_swin(out_indices=[-1, 1])
    assert vit.out_indices == swin.out_indices == [3, 1]
    assert swin.out_channels == [128, 32]
    features = swin(torch.randn(1, 6, 64, 64))
    assert [f.shape[1] for f in features] == [128, 32]


# ------------------------------------------------------------------------------ attributes
@pytest.mark.parametrize("name", VIT + SWIN)
def test_extra_inputs_and_pretrained_stats(name: str) -> None:
    model = build(name)
    tl = name.endswith("_tl")
    assert model.extra_inputs == (("temporal_coords", "location_coords") if tl else ())
    if name in SWIN:
        assert model.pretrained_stats is None  # no statistics published for the Swin weights
        return
    v1 = name == "prithvi_eo_v1_100"
    assert model.pretrained_stats == {
        "bands": list(PRITHVI_BANDS),
        "mean": V1_MEAN if v1 else V2_MEAN,
        "std": V1_STD if v1 else V2_STD,
    }


def test_pretrained_stats_follow_the_bands() -> None:
    reordered = BACKBONE_REGISTRY.build("prithvi_eo_v2_tiny_tl", bands=["swir_2", "RED", "blue"])
    assert reordered.pretrained_stats == {
        "bands": ["SWIR_2", "RED", "BLUE"],
        "mean": [1363.0, 1433.0, 1087.0],
        "std": [1049.0, 2178.0, 2248.0],
    }
    for bands in (["RED", "RED_EDGE_1"], ["RED", 7]):  # a band without pretraining statistics
        assert BACKBONE_REGISTRY.build("prithvi_eo_tiny", bands=bands).pretrained_stats is None
    # A checkpoint with its own bands has its own normalisation, not the official one.
    custom = BACKBONE_REGISTRY.build(
        "prithvi_eo_tiny", bands=["RED"], pretrained_bands=["RED", "NIR_NARROW"]
    )
    assert custom.pretrained_stats is None
    # A model built directly, or from bands given as a count, knows no statistics.
    direct = prithvi_vit.PrithviViT(in_chans=3, embed_dim=64, depth=1, num_heads=1)
    assert direct.pretrained_stats is None
    assert PRETRAINED_CONFIGS["prithvi_eo_v1_100"].stats([]) is None


# ------------------------------------------------------------------------------ forward inputs
@pytest.mark.parametrize("make", [tiny_vit, small_swin], ids=["vit", "swin"])
def test_unknown_keyword_is_a_type_error(make) -> None:
    model = make().eval()
    with pytest.raises(TypeError, match="temporal_coord"):
        model(torch.randn(1, 6, 64, 64), temporal_coord=torch.zeros(1, 1, 2))


def test_coordinates_change_the_tl_output_and_scale_zero_removes_them() -> None:
    torch.manual_seed(0)
    model = BACKBONE_REGISTRY.build("prithvi_eo_v2_tiny_tl", img_size=32, num_frames=2).eval()
    x = torch.randn(2, 6, 2, 32, 32)
    temporal = torch.tensor([[[2020.0, 10.0], [2020.0, 50.0]]] * 2)
    location = torch.tensor([[10.0, 20.0]] * 2)
    with torch.no_grad():
        plain = model(x)[-1]
        both = model(x, temporal_coords=temporal, location_coords=location)[-1]
        later = model(x, temporal_coords=temporal + 1, location_coords=location)[-1]
        moved = model(x, temporal_coords=temporal, location_coords=location + 1)[-1]
    assert not torch.allclose(plain, both)
    assert not torch.allclose(both, later)
    assert not torch.allclose(both, moved)
    # The codes are multiplied by the scale: at 0, coordinates add nothing.
    model.temporal_embed_enc.scale.zero_()
    model.location_embed_enc.scale.zero_()
    with torch.no_grad():
        silent = model(x, temporal_coords=temporal, location_coords=location)[-1]
    torch.testing.assert_close(silent, plain, atol=0, rtol=0)


def test_coordinate_shapes_are_checked() -> None:
    model = BACKBONE_REGISTRY.build("prithvi_eo_v2_tiny_tl", img_size=32, num_frames=2)
    x = torch.randn(1, 6, 2, 32, 32)
    expected = r"temporal_coords must have shape \(B, T, 2\) = \(1, 2, 2\)"
    with pytest.raises(ValueError, match=expected):
        model(x, temporal_coords=torch.zeros(1, 3, 2))
    with pytest.raises(ValueError, match=r"location_coords must have shape \(B, 2\) = \(1, 2\)"):
        model(x, location_coords=torch.zeros(1, 2, 2))
    with pytest.raises(TypeError, match=r"temporal_coords must be a tensor \(B, T, 2\)"):
        model(x, temporal_coords=[[2020, 1], [2020, 2]])
