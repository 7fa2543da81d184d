"""DOFA backbones: official file layout loaded unchanged, features as the spec computes them,
wavelengths from band names, weights resolution, and composition into trained models."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from geofm.models.backbones import dofa  # noqa: E402  (registers the variants)
from geofm.models.backbones.dofa import (  # noqa: E402
    DOFA_PRETRAINED_CONFIGS,
    DOFA_WAVELENGTHS,
    VARIANTS,
    band_wavelengths,
)
from geofm.registry import BACKBONE_REGISTRY, GEOFM_BACKBONE_REGISTRY, MODEL_FACTORY_REGISTRY  # noqa: E402
from geofm.registry.errors import MissingDependencyError  # noqa: E402

from tests.models.backbones.spec_files import REPO, ZOO_LAYOUTS  # noqa: E402
# The spec's key/shape table, when the shared folder is beside the checkout (or its worktrees).
LAYOUTS = ZOO_LAYOUTS
# The spec's worked case: 8 bands, optical and SAR, four blocks.
BANDS = ["BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2", "VV", "VH"]
WAVES = [0.49, 0.56, 0.665, 0.864, 1.61, 2.20, 5.405, 5.405]
NAMES = list(VARIANTS)


def torchgeo_model(name: str, seed: int = 0, img_size: int = 224) -> torch.nn.Module:
    """TorchGeo's DOFA with random weights, and random pos_embed / cls_token (torchgeo leaves
    them at zero, which would hide a loader that does not take them from the file)."""
    from torchgeo.models import dofa as tg

    torch.manual_seed(seed)
    model = getattr(tg, name)(img_size=img_size)
    with torch.no_grad():
        model.pos_embed.normal_(std=0.5)
        model.cls_token.normal_(std=0.5)
    return model.eval()


def official_layout(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The file layout of torchgeo/dofa: the state dict without the classifier."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith(("fc_norm.", "head."))}


@pytest.fixture(scope="module")
def small_file(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    source = torchgeo_model("dofa_small_patch16_224")
    path = tmp_path_factory.mktemp("dofa") / "dofa_small.pth"
    torch.save(official_layout(source), path)
    return path, source


# ------------------------------------------------------------------------------ reference
def sincos(dim: int, positions: torch.Tensor) -> torch.Tensor:
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float32) / (dim / 2))
    angles = positions[:, None] * omega[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def post_norm_layer(s: dict[str, torch.Tensor], p: str, x: torch.Tensor, heads: int = 4) -> torch.Tensor:
    """One post-norm nn.TransformerEncoderLayer (GELU, no dropout) on an unbatched sequence."""
    n, d = x.shape
    q, k, v = F.linear(x, s[p + "self_attn.in_proj_weight"], s[p + "self_attn.in_proj_bias"]).chunk(3, -1)
    q, k, v = (t.reshape(n, heads, d // heads).transpose(0, 1) for t in (q, k, v))
    attn = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(d // heads), -1) @ v
    attn = F.linear(attn.transpose(0, 1).reshape(n, d), s[p + "self_attn.out_proj.weight"], s[p + "self_attn.out_proj.bias"])
    x = F.layer_norm(x + attn, (d,), s[p + "norm1.weight"], s[p + "norm1.bias"], 1e-5)
    ff = F.linear(F.gelu(F.linear(x, s[p + "linear1.weight"], s[p + "linear1.bias"])), s[p + "linear2.weight"], s[p + "linear2.bias"])
    return F.layer_norm(x + ff, (d,), s[p + "norm2.weight"], s[p + "norm2.bias"], 1e-5)


def reference_features(source: torch.nn.Module, x: torch.Tensor, waves: list[float], indices: list[int]) -> list[torch.Tensor]:
    """The spec's DOFA forward, written out from the state dict; only the blocks are torchgeo's."""
    s = source.state_dict()
    d = s["cls_token"].shape[-1]
    c = len(waves)
    code = sincos(128, torch.tensor(waves) * 1000)
    e = code + F.relu(F.linear(F.relu(F.linear(code, s["patch_embed.fclayer.w1.weight"], s["patch_embed.fclayer.w1.bias"])),
                               s["patch_embed.fclayer.w2.weight"], s["patch_embed.fclayer.w2.bias"]))
    g = "patch_embed.weight_generator."
    seq = torch.cat([s[g + "weight_tokens"], e, s[g + "bias_token"]])
    out = post_norm_layer(s, g + "transformer_encoder.layers.0.", seq)
    kernel = F.linear(out[128 : 128 + c] + e, s[g + "fc_weight.weight"], s[g + "fc_weight.bias"])
    kernel = kernel.reshape(c, 16, 16, d).permute(3, 0, 1, 2) * 0.01
    bias = F.linear(out[-1], s[g + "fc_bias.weight"], s[g + "fc_bias.bias"]) * 0.01
    tokens = F.conv2d(x, kernel, bias, stride=16, padding=1).flatten(2).transpose(1, 2)
    tokens = tokens + s["pos_embed"][:, 1:]
    hidden = torch.cat([(s["cls_token"] + s["pos_embed"][:, :1]).expand(len(x), -1, -1), tokens], 1)
    features = []
    for block in source.blocks:
        hidden = block(hidden)
        features.append(hidden)
    return [features[i] for i in indices]


# ------------------------------------------------------------------------------ official layout
def test_small_file_in_official_layout_loads_unchanged_and_matches_the_spec(small_file) -> None:
    path, source = small_file
    if LAYOUTS.is_file():  # the fixture is the official layout: every key and shape
        layout = json.loads(LAYOUTS.read_text())["dofa_small_patch16_224"]["official_checkpoint_state_dict"]
        saved = torch.load(path, weights_only=True)
        assert {k: list(v.shape) for k, v in saved.items()} == layout
    backbone = BACKBONE_REGISTRY.build(
        "dofa_small_patch16_224", pretrained=True, ckpt_path=path, model_bands=BANDS, out_indices=[3, 5, 7, 11]
    ).eval()
    assert backbone.out_channels == [384] * 4
    assert torch.equal(backbone.dofa_model.pos_embed, source.pos_embed)
    torch.manual_seed(1)
    x = torch.randn(1, 8, 224, 224)
    with torch.no_grad():
        features = backbone(x)
        expected = reference_features(source, x, WAVES, [3, 5, 7, 11])
        pooled = source.forward_features(x, WAVES)  # torchgeo's own path: pooled last block
    assert isinstance(features, list) and [f.shape for f in features] == [(1, 197, 384)] * 4
    for got, want in zip(features, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    # Same block outputs as torchgeo's forward, whose 12th block feeds its pooled vector.
    last = backbone.dofa_model.blocks[11](backbone.dofa_model.blocks[10](backbone.dofa_model.blocks[9](
        backbone.dofa_model.blocks[8](features[2]))))  # blocks 8..11 after the output of block 7
    torch.testing.assert_close(last, features[3], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(source.fc_norm(features[3][:, 1:].mean(1)), pooled, atol=1e-4, rtol=1e-4)


def test_base_file_loads_and_matches_the_spec(tmp_path: Path) -> None:
    source = torchgeo_model("dofa_base_patch16_224", seed=3)
    torch.save(official_layout(source), tmp_path / "base.pth")
    backbone = dofa.dofa_base_patch16_224(ckpt_path=tmp_path / "base.pth", model_bands=BANDS[:6]).eval()
    assert backbone.out_indices == [11] and backbone.out_channels == [768]  # default: the last block
    x = torch.randn(1, 6, 224, 224)
    with torch.no_grad():
        (features,) = backbone(x)
        (expected,) = reference_features(source, x, WAVES[:6], [11])
    assert features.shape == (1, 197, 768)
    torch.testing.assert_close(features, expected, atol=1e-4, rtol=1e-4)


def test_large_shapes_and_parameter_count_on_meta() -> None:
    with torch.device("meta"):
        backbone = dofa.dofa_large_patch16_224(model_bands=BANDS, out_indices=[5, 11, 17, 23])
        features = backbone(torch.empty(2, 8, 224, 224))
    assert backbone.out_channels == [1024] * 4
    assert [tuple(f.shape) for f in features] == [(2, 197, 1024)] * 4
    d, depth = 1024, 24
    blocks = depth * (12 * d * d + 13 * d)
    generator = 128 * 128 + 128 + (3 * 128 * 128 + 3 * 128) + (128 * 128 + 128) + 2 * (128 * 2048) + 2048 + 128 + 4 * 128
    generator += 128 * 256 * d + 256 * d + 128 * d + d  # fc_weight, fc_bias
    fclayer = 2 * (128 * 128 + 128)
    classifier = 2 * d + 45 * d + 45  # fc_norm and torchgeo's default 45-class head
    expected = blocks + generator + fclayer + d + 197 * d + classifier
    assert sum(p.numel() for p in backbone.parameters()) == expected


# ------------------------------------------------------------------------------ wavelengths
def test_wavelengths_from_names_prefixes_and_enums() -> None:
    from geofm.data.bands import HLSBands

    assert band_wavelengths(BANDS) == WAVES
    assert band_wavelengths(["HLSBands.RED", "Sentinel1Bands.VV", HLSBands.SWIR_1, "b8a", "B04"]) == [
        0.665, 5.405, 1.61, 0.864, 0.665,
    ]
    assert DOFA_WAVELENGTHS["COASTAL_AEROSOL"] == 0.44 and DOFA_WAVELENGTHS["THERMAL_INFRARED_12"] == 12.0
    assert DOFA_WAVELENGTHS["CIRRUS"] == 1.373 and DOFA_WAVELENGTHS["VV-VH"] == 5.405
    backbone = dofa.dofa_small_patch16_224(model_bands=["S2.RED", "NIR_BROAD"], img_size=32)
    assert backbone.wavelengths == [0.665, 0.832] and backbone.bands == ["S2.RED", "NIR_BROAD"]
    assert dofa.dofa_small_patch16_224(bands=["RED"], img_size=32).wavelengths == [0.665]


def test_unknown_band_names_it_and_the_known_names() -> None:
    with pytest.raises(ValueError, match="PANCHROMATIC") as info:
        dofa.dofa_small_patch16_224(model_bands=["RED", "PANCHROMATIC"])
    message = str(info.value)
    assert "model_bands[1]" in message and "COASTAL_AEROSOL" in message and "wavelengths=" in message
    with pytest.raises(ValueError, match="no known wavelength"):
        band_wavelengths([7])
    with pytest.raises(ValueError, match="model_bands=.*or wavelengths="):
        dofa.dofa_small_patch16_224()
    with pytest.raises(ValueError, match="disagree"):
        dofa.dofa_small_patch16_224(model_bands=["RED"], bands=["BLUE"])


def test_explicit_wavelengths_drive_the_kernel(small_file) -> None:
    path, _ = small_file
    named = dofa.dofa_small_patch16_224(ckpt_path=path, model_bands=["RED", "NIR_NARROW"], img_size=224).eval()
    explicit = dofa.dofa_small_patch16_224(ckpt_path=path, wavelengths=[0.665, 0.864]).eval()
    shifted = dofa.dofa_small_patch16_224(ckpt_path=path, wavelengths=[0.665, 1.2]).eval()
    assert explicit.wavelengths == [0.665, 0.864] and explicit.bands == []
    x = torch.randn(1, 2, 224, 224)
    with torch.no_grad():
        a, b, c = named(x)[0], explicit(x)[0], shifted(x)[0]
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)  # another wavelength, another kernel
    with pytest.raises(ValueError, match="3 wavelengths for 2 bands"):
        dofa.dofa_small_patch16_224(model_bands=["RED", "BLUE"], wavelengths=[0.6, 0.5, 0.4])
    with pytest.raises(ValueError, match="positive numbers"):
        dofa.dofa_small_patch16_224(wavelengths=[0.6, -1.0])
    with pytest.raises(ValueError, match="C = 2 channels"):
        named(torch.randn(1, 3, 224, 224))


# ------------------------------------------------------------------------------ out_indices
def test_out_indices_and_out_channels(small_file) -> None:
    path, _ = small_file
    x = torch.randn(1, 2, 224, 224)
    outputs = {}
    for indices in (None, [-1], [11], [0, -1], [11, 0]):
        backbone = dofa.dofa_small_patch16_224(ckpt_path=path, model_bands=["RED", "GREEN"], out_indices=indices).eval()
        assert backbone.out_channels == [384] * (1 if indices is None else len(indices))
        with torch.no_grad():
            outputs[str(indices)] = backbone(x)
    assert torch.equal(outputs["None"][0], outputs["[-1]"][0])
    assert torch.equal(outputs["[-1]"][0], outputs["[11]"][0])
    assert torch.equal(outputs["[0, -1]"][0], outputs["[11, 0]"][1])  # in the order asked
    assert not torch.equal(outputs["[0, -1]"][0], outputs["[0, -1]"][1])
    with pytest.raises(ValueError, match="out of range for 12 blocks"):
        dofa.dofa_small_patch16_224(model_bands=["RED"], out_indices=[12])
    backbone = dofa.dofa_small_patch16_224(model_bands=["RED"])
    assert backbone.extra_inputs == () and backbone.pretrained_stats is None


# ------------------------------------------------------------------------------ weights
def test_registered_functions_and_weight_facts() -> None:
    from torchgeo.models import DOFABase16_Weights, DOFALarge16_Weights

    for name in NAMES:
        function = getattr(dofa, name)
        assert GEOFM_BACKBONE_REGISTRY.get(name) is function and function.__name__ == name
    for name, weights in (("dofa_base_patch16_224", DOFABase16_Weights), ("dofa_large_patch16_224", DOFALarge16_Weights)):
        cfg = DOFA_PRETRAINED_CONFIGS[name]
        assert cfg.hub_repo == "torchgeo/dofa" and "hf.co/torchgeo/dofa/" in weights.DOFA_MAE.url
        assert weights.DOFA_MAE.url.rsplit("/", 1)[-1] == cfg.hub_file
    assert DOFA_PRETRAINED_CONFIGS["dofa_small_patch16_224"].hub_file is None


def test_pretrained_without_a_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    with pytest.raises(ValueError, match="no official pretrained weights.*ckpt_path"):
        dofa.dofa_small_patch16_224(pretrained=True, model_bands=["RED"])
    for name in ("dofa_base_patch16_224", "dofa_large_patch16_224"):
        cfg = DOFA_PRETRAINED_CONFIGS[name]
        with pytest.raises(FileNotFoundError) as info:
            BACKBONE_REGISTRY.build(name, pretrained=True, model_bands=["RED"])
        message = str(info.value)
        assert cfg.hub_file in message and "torchgeo/dofa" in message and "ckpt_path" in message
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        dofa.dofa_small_patch16_224(ckpt_path=tmp_path / "absent.pth", model_bands=["RED"])
    with pytest.raises(TypeError, match="ckpt_data is ckpt_path"):
        dofa.dofa_small_patch16_224(ckpt_data="x.pth", model_bands=["RED"])


@pytest.mark.parametrize("cache", ["torch_hub", "huggingface"])
def test_pretrained_loads_from_the_local_caches(small_file, cache: str, tmp_path: Path, monkeypatch) -> None:
    path, source = small_file
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    cfg = dofa.PretrainedConfig("torchgeo/dofa", "dofa_small-test.pth", bands=())
    monkeypatch.setitem(DOFA_PRETRAINED_CONFIGS, "dofa_small_patch16_224", cfg)
    folder = tmp_path / "torch" / "checkpoints" if cache == "torch_hub" else (
        tmp_path / "hf" / "models--torchgeo--dofa" / "snapshots" / "b8db318b")
    folder.mkdir(parents=True)
    (folder / "dofa_small-test.pth").write_bytes(path.read_bytes())
    backbone = dofa.dofa_small_patch16_224(pretrained=True, model_bands=["RED"])
    for key, value in official_layout(source).items():
        assert torch.equal(backbone.dofa_model.state_dict()[key], value), key


def test_one_key_report_and_allowed_classifier_keys(small_file, tmp_path: Path) -> None:
    path, source = small_file
    state = official_layout(source)
    broken = {k: v for k, v in state.items() if k != "blocks.3.attn.qkv.weight"}
    broken["decoder.extra"] = torch.zeros(1)
    broken["pos_embed"] = torch.zeros(1, 197, 192)
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(ValueError) as info:
        dofa.dofa_small_patch16_224(ckpt_path=tmp_path / "broken.pth", model_bands=["RED"])
    message = str(info.value)
    assert "missing keys: blocks.3.attn.qkv.weight" in message
    assert "unexpected keys: decoder.extra" in message
    assert "pos_embed: checkpoint (1, 197, 192), model (1, 197, 384)" in message
    # A full torchgeo state dict (with its classifier) and a Lightning-wrapped TerraTorch
    # model (keys model.encoder.dofa_model.*) load as well.
    torch.save(source.state_dict(), tmp_path / "full.pth")
    torch.save({"state_dict": {f"model.encoder.dofa_model.{k}": v for k, v in state.items()}}, tmp_path / "l.ckpt")
    for file in ("full.pth", "l.ckpt"):
        backbone = dofa.dofa_small_patch16_224(ckpt_path=tmp_path / file, model_bands=["RED"])
        assert torch.equal(backbone.dofa_model.blocks[3].attn.qkv.weight, source.blocks[3].attn.qkv.weight)


def test_other_img_size_resizes_the_file_pos_embed(small_file) -> None:
    path, source = small_file
    backbone = dofa.dofa_small_patch16_224(ckpt_path=path, model_bands=["RED"], img_size=112).eval()
    pos = backbone.dofa_model.pos_embed
    assert pos.shape == (1, 1 + 49, 384)
    assert torch.equal(pos[:, :1], source.pos_embed[:, :1])  # class-token entry kept
    # Bilinear, align_corners=False, halving: each new entry averages a 2x2 block of the file's.
    grid = source.pos_embed[0, 1:].reshape(14, 14, 384).permute(2, 0, 1)
    pooled = F.avg_pool2d(grid[None], 2)[0].flatten(1).T
    torch.testing.assert_close(pos[0, 1:], pooled)
    x = torch.randn(1, 1, 112, 112)
    at_224 = dofa.dofa_small_patch16_224(ckpt_path=path, model_bands=["RED"]).eval()
    with torch.no_grad():
        built_for_112 = backbone(x)[0]
        resized_in_forward = at_224(x)[0]  # another input size: the same resize, at run time
        assert at_224(torch.randn(1, 1, 96, 160))[0].shape == (1, 1 + 6 * 10, 384)
    assert built_for_112.shape == (1, 50, 384)
    torch.testing.assert_close(resized_in_forward, built_for_112)


def test_missing_torchgeo_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchgeo.models", None)  # import now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'geofm\[torchgeo\]'"):
        dofa.dofa_small_patch16_224(model_bands=["RED"])


# ------------------------------------------------------------------------------ compositions
PYRAMID = [
    {"name": "SelectIndices", "indices": [0, 1, 2, 3]},
    {"name": "ReshapeTokensToImage"},
    {"name": "LearnedInterpolateToPyramidal"},
]
CASES = {
    "upernet": ("UperNetDecoder", PYRAMID, {"decoder_channels": 16}),
    "unet": ("UNetDecoder", PYRAMID, {"decoder_channels": [32, 16, 16, 8]}),
    "fcn": ("FCNDecoder", [{"name": "SelectIndices", "indices": [-1]}, {"name": "ReshapeTokensToImage"}], {"decoder_channels": 16}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_composes_with_decoders(case: str) -> None:
    decoder, necks, args = CASES[case]
    torch.manual_seed(0)
    model = MODEL_FACTORY_REGISTRY.build("EncoderDecoderFactory").build_model(
        "segmentation", "dofa_small_patch16_224", decoder, num_classes=3, necks=necks,
        backbone_model_bands=["BLUE", "GREEN", "RED", "NIR_NARROW"], backbone_img_size=64,
        backbone_out_indices=[2, 5, 8, 11], **args,
    )
    out = model(torch.randn(2, 4, 64, 64)).output
    assert out.shape == (2, 3, 64, 64)
    out.mean().backward()
    assert model.encoder.dofa_model.patch_embed.fclayer.w1.weight.grad.abs().sum() > 0


def test_trains_a_step_in_a_segmentation_task() -> None:
    from tests.tasks.helpers import DictDataModule, make_samples, trainer

    from geofm.tasks import SemanticSegmentationTask

    torch.manual_seed(0)
    task = SemanticSegmentationTask(
        model_args={
            "backbone": "dofa_small_patch16_224",
            "backbone_model_bands": ["BLUE", "GREEN", "RED", "NIR_NARROW"],
            "backbone_img_size": 32,
            "backbone_out_indices": [2, 5, 8, 11],
            "necks": PYRAMID,
            "decoder": "UperNetDecoder",
            "decoder_channels": 16,
            "num_classes": 3,
        },
        num_classes=3,
        lr=1e-3,
    )
    dm = DictDataModule(make_samples("segmentation", n=2), means=[500.0] * 4, stds=[290.0] * 4)
    before = task.model.encoder.dofa_model.blocks[0].attn.qkv.weight.detach().clone()
    trainer(limit_train_batches=1, limit_val_batches=0).fit(task, datamodule=dm)
    assert not torch.equal(before, task.model.encoder.dofa_model.blocks[0].attn.qkv.weight)


def test_example_config_builds_and_runs() -> None:
    config = yaml.safe_load((REPO / "examples" / "dofa_upernet_segmentation.yaml").read_text())
    init = config["model"]["init_args"]
    args = init["model_args"]
    assert args["backbone"] == "dofa_base_patch16_224" and args["backbone_pretrained"] is False
    bands = args["backbone_model_bands"]
    assert bands == config["data"]["init_args"]["dataset_bands"]
    assert band_wavelengths(bands)[:4] == [0.44, 0.49, 0.56, 0.665]  # Sentinel-2 names resolve
    from geofm.tasks import SemanticSegmentationTask

    task = SemanticSegmentationTask(model_args=args, loss=init["loss"], ignore_index=init["ignore_index"]).eval()
    with torch.no_grad():
        out = task.model(torch.randn(1, len(bands), 224, 224)).output
    assert out.shape == (1, args["num_classes"], 224, 224)
