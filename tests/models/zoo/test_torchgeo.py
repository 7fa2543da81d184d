"""The torchgeo backbone source: generated names, official file layouts, features, composition.

Weight files are random tensors in the official layout (the reference implementation's own
state dict: timm's ResNet-50 / ViT-S with 13 inputs, torchvision's Swin-V2-T with TorchGeo's
9-channel first convolution), written to ``tmp_path``; nothing is downloaded.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from geofm.models.zoo.torchgeo import TorchGeoBackbone, weight_bands, weight_names  # noqa: E402
from geofm.registry import BACKBONE_REGISTRY, MODEL_FACTORY_REGISTRY  # noqa: E402

S2_ALL = ["COASTAL_AEROSOL", "BLUE", "GREEN", "RED", "RED_EDGE_1", "RED_EDGE_2", "RED_EDGE_3",
          "NIR_BROAD", "NIR_NARROW", "WATER_VAPOR", "CIRRUS", "SWIR_1", "SWIR_2"]
SATLAS_MS = ["RED", "GREEN", "BLUE", "RED_EDGE_1", "RED_EDGE_2", "RED_EDGE_3", "NIR_BROAD", "SWIR_1", "SWIR_2"]


def timm_reference(name: str, in_chans: int) -> torch.nn.Module:
    import timm

    torch.manual_seed(0)
    # num_classes=0: the official files carry no classifier (fc.* / head.*).
    return timm.create_model(name, in_chans=in_chans, num_classes=0).eval()


def swin_reference() -> torch.nn.Module:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.swin_v2_t()
    model.features[0][0] = torch.nn.Conv2d(9, 96, kernel_size=4, stride=4)
    return model.eval()


def save(model: torch.nn.Module, path) -> str:
    torch.save(model.state_dict(), path)
    return str(path)


def build(name: str, **kwargs) -> TorchGeoBackbone:
    return BACKBONE_REGISTRY.build(name, **kwargs).eval()


# ------------------------------------------------------------------------------ names
def test_terratorch_names_are_generated_from_the_enums():
    table = weight_names()
    expected = {
        "ssl4eos12_resnet50_sentinel2_all_moco": ("resnet50", "SENTINEL2_ALL_MOCO"),
        "ssl4eos12_vit_small_patch16_224_sentinel2_all_dino": ("vit_small_patch16_224", "SENTINEL2_ALL_DINO"),
        "satlas_swin_t_sentinel2_si_ms": ("swin_v2_t", "SENTINEL2_SI_MS_SATLAS"),
        "seco_resnet18_sentinel2_rgb_seco": ("resnet18", "SENTINEL2_RGB_SECO"),
        "fmow_resnet50_fmow_rgb_gassl": ("resnet50", "FMOW_RGB_GASSL"),
        "ssl4eol_vit_small_patch16_224_landsat_oli_sr_moco": ("vit_small_patch16_224", "LANDSAT_OLI_SR_MOCO"),
        "ssl4eol_resnet18_landsat_tm_toa_simclr": ("resnet18", "LANDSAT_TM_TOA_SIMCLR"),
        "satlas_resnet50_sentinel2_si_rgb_satlas": ("resnet50", "SENTINEL2_SI_RGB_SATLAS"),
        "satlas_resnet152_sentinel2_mi_ms": ("resnet152", "SENTINEL2_MI_MS_SATLAS"),
        "satlas_swin_b_naip_mi_rgb": ("swin_v2_b", "NAIP_RGB_MI_SATLAS"),
        "satlas_swin_b_landsat_mi_ms": ("swin_v2_b", "LANDSAT_MI_SATLAS"),
        "satlas_swin_b_sentinel1_si": ("swin_v2_b", "SENTINEL1_SI_SATLAS"),
        "resnet50": ("resnet50", None),
    }
    for name, entry in expected.items():
        assert table[name] == entry, name
    # Membership is by table, reachable with and without the prefix.
    assert "torchgeo_ssl4eos12_resnet50_sentinel2_all_moco" in BACKBONE_REGISTRY
    assert "satlas_swin_t_sentinel2_si_ms" in BACKBONE_REGISTRY
    assert "torchgeo_dofa_base_patch16_224" not in BACKBONE_REGISTRY  # not a wrapped family
    assert weight_names() is table  # built once


def test_weight_bands_name_sentinel_codes_and_leave_landsat_unnamed():
    from torchgeo.models import ResNet50_Weights, Swin_V2_T_Weights, ViTSmall16_Weights

    assert weight_bands(ResNet50_Weights.SENTINEL2_ALL_MOCO) == S2_ALL
    assert weight_bands(Swin_V2_T_Weights.SENTINEL2_SI_MS_SATLAS) == SATLAS_MS
    assert weight_bands(ResNet50_Weights.SENTINEL1_ALL_MOCO) == ["VV", "VH"]
    assert weight_bands(ViTSmall16_Weights.LANDSAT_OLI_SR_MOCO) == [None] * 7


# ------------------------------------------------------------------------------ official files
def test_resnet50_official_layout_matches_timm(tmp_path):
    ref = timm_reference("resnet50", 13)
    path = save(ref, tmp_path / "resnet50_sentinel2_all_moco-df8b932e.pth")
    backbone = build("ssl4eos12_resnet50_sentinel2_all_moco", pretrained=True, ckpt_path=path,
                     model_bands=S2_ALL, out_indices=[0, 1, 2, 3, 4])
    assert backbone.out_channels == [64, 256, 512, 1024, 2048]
    x = torch.randn(1, 13, 224, 224)
    with torch.no_grad():
        ours = backbone(x)
        theirs = ref.forward_intermediates(x, intermediates_only=True)
    assert isinstance(ours, list)
    assert [tuple(f.shape) for f in ours] == [(1, 64, 112, 112), (1, 256, 56, 56), (1, 512, 28, 28),
                                              (1, 1024, 14, 14), (1, 2048, 7, 7)]
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert backbone.pretrained_stats == {"bands": S2_ALL, "mean": [0.0] * 13, "std": [10000.0] * 13}
    # Default out_indices: the last stage only.
    assert build("ssl4eos12_resnet50_sentinel2_all_moco").out_channels == [2048]


def test_vit_small_official_layout_matches_timm(tmp_path):
    ref = timm_reference("vit_small_patch16_224", 13)
    assert {"norm.weight", "norm.bias"} <= set(ref.state_dict()) and "head.weight" not in ref.state_dict()
    path = save(ref, tmp_path / "vit_small_patch16_224_sentinel2_all_dino-36bcc127.pth")
    backbone = build("ssl4eos12_vit_small_patch16_224_sentinel2_all_dino", pretrained=True, ckpt_path=path)
    assert backbone.out_channels == [384] * 12
    x = torch.randn(1, 13, 224, 224)
    with torch.no_grad():
        ours = backbone(x)
        theirs = ref.forward_intermediates(x, intermediates_only=True)
    assert len(ours) == 12 and all(f.shape == (1, 384, 14, 14) for f in ours)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    # An explicit out_indices selects blocks, in the order given.
    picked = build("ssl4eos12_vit_small_patch16_224_sentinel2_all_dino", pretrained=True, ckpt_path=path,
                   out_indices=[-1, 3])
    with torch.no_grad():
        chosen = picked(x)
    torch.testing.assert_close(chosen[0], theirs[11], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(chosen[1], theirs[3], atol=1e-4, rtol=1e-4)


def test_swin_v2_t_official_layout_matches_torchvision(tmp_path):
    ref = swin_reference()
    keys = set(ref.state_dict())
    assert {"head.weight", "norm.weight", "features.1.0.attn.relative_position_index"} <= keys
    path = save(ref, tmp_path / "sentinel2_swint_si_ms-bc68e396.pth")
    backbone = build("satlas_swin_t_sentinel2_si_ms", pretrained=True, ckpt_path=path,
                     model_bands=SATLAS_MS, out_indices=[1, 3, 5, 7])
    assert backbone.out_channels == [96, 192, 384, 768]
    x = torch.randn(1, 9, 224, 224)
    with torch.no_grad():
        ours = backbone(x)
        theirs, h = [], x
        for layer in ref.features:
            h = layer(h)
            theirs.append(h)
    assert [tuple(f.shape) for f in ours] == [(1, 56, 56, 96), (1, 28, 28, 192), (1, 14, 14, 384), (1, 7, 7, 768)]
    for a, b in zip(ours, [theirs[i] for i in (1, 3, 5, 7)], strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert backbone.pretrained_stats["std"] == [255.0] * 3 + [8160.0] * 6
    assert backbone.pretrained_stats["mean"] == [0.0] * 9
    assert build("satlas_swin_t_sentinel2_si_ms").out_channels == [768]


# ------------------------------------------------------------------------------ loading rules
@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    ref = timm_reference("resnet18", 13)
    return ref, save(ref, tmp_path_factory.mktemp("w") / "resnet18_sentinel2_all_moco-59bfdff9.pth")


def test_model_bands_keep_the_right_slices(resnet18_file):
    ref, path = resnet18_file
    file_weight = ref.state_dict()["conv1.weight"]
    backbone = build("ssl4eos12_resnet18_sentinel2_all_moco", pretrained=True, ckpt_path=path,
                     model_bands=["NIR_NARROW", "B02", "RED", "THERMAL_INFRARED_1"])
    weight = backbone.model.conv1.weight.detach()
    assert weight.shape == (64, 4, 7, 7)
    torch.testing.assert_close(weight[:, 0], file_weight[:, 8])
    torch.testing.assert_close(weight[:, 1], file_weight[:, 1])  # B02 is BLUE
    torch.testing.assert_close(weight[:, 2], file_weight[:, 3])
    assert not any(torch.allclose(weight[:, 3], file_weight[:, i]) for i in range(13))  # new band
    assert backbone.pretrained_stats is None  # the new band has no statistics
    subset = build("ssl4eos12_resnet18_sentinel2_all_moco", bands=["RED", "GREEN", "BLUE"])
    assert subset.pretrained_stats == {"bands": ["RED", "GREEN", "BLUE"], "mean": [0.0] * 3, "std": [10000.0] * 3}


def test_weights_by_enum_or_name(resnet18_file):
    from torchgeo.models import ResNet18_Weights

    _, path = resnet18_file
    for weights in (ResNet18_Weights.SENTINEL2_ALL_MOCO, "ResNet18_Weights.SENTINEL2_ALL_MOCO", "SENTINEL2_ALL_MOCO"):
        backbone = build("torchgeo_resnet18", weights=weights, pretrained=True, ckpt_path=path)
        assert backbone.model.conv1.in_channels == 13 and backbone.pretrained_stats["bands"] == S2_ALL
    with pytest.raises(ValueError, match="not a member of ResNet18_Weights"):
        build("torchgeo_resnet18", weights="NOPE")
    with pytest.raises(ValueError, match="in_chans=4 but bands lists 3"):
        build("torchgeo_resnet18", weights="SENTINEL2_ALL_MOCO", bands=["RED", "GREEN", "BLUE"], in_chans=4)
    with pytest.raises(ValueError, match="needs weights="):
        build("torchgeo_resnet18", pretrained=True)
    plain = build("torchgeo_resnet18")
    assert plain.model.conv1.in_channels == 3 and plain.pretrained_stats is None


def test_key_report_allows_only_torchgeo_optional_keys(resnet18_file, tmp_path):
    ref, _ = resnet18_file
    state = dict(ref.state_dict())
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)  # allowed extra
    torch.save(state, tmp_path / "with_fc.pth")
    build("ssl4eos12_resnet18_sentinel2_all_moco", ckpt_path=tmp_path / "with_fc.pth")
    state["extra.weight"] = torch.zeros(3)
    del state["layer1.0.bn1.running_mean"]
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"missing keys: layer1.0.bn1.running_mean; unexpected keys: extra.weight"):
        build("ssl4eos12_resnet18_sentinel2_all_moco", ckpt_path=tmp_path / "bad.pth")


def test_weights_from_the_torch_hub_cache_or_a_clear_error(resnet18_file, tmp_path, monkeypatch):
    ref, _ = resnet18_file
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    name = "ssl4eos12_resnet18_sentinel2_all_moco"
    with pytest.raises(FileNotFoundError) as err:
        build(name, pretrained=True)
    message = str(err.value)
    for part in ("resnet18_sentinel2_all_moco-59bfdff9.pth", "https://hf.co/torchgeo/", "torchgeo/resnet18_sentinel2_all_moco",
                 "ckpt_path", str(tmp_path / "hub" / "checkpoints")):
        assert part in message, part
    cached = tmp_path / "hub" / "checkpoints" / "resnet18_sentinel2_all_moco-59bfdff9.pth"
    cached.parent.mkdir(parents=True)
    save(ref, cached)
    backbone = build(name, pretrained=True)
    torch.testing.assert_close(backbone.model.conv1.weight, ref.conv1.weight)


def test_missing_torchgeo_names_the_extra():
    code = (
        "import sys; sys.modules['torchgeo'] = None\n"
        "from geofm.registry import BACKBONE_REGISTRY\n"
        "from geofm.registry.errors import MissingDependencyError\n"
        "for name in ['torchgeo_resnet50', 'ssl4eos12_resnet50_sentinel2_all_moco', 'satlas_swin_t_sentinel2_si_ms']:\n"
        "    try:\n"
        "        BACKBONE_REGISTRY.build(name)\n"
        "    except MissingDependencyError as err:\n"
        "        assert \"pip install 'geofm[torchgeo]'\" in str(err), err\n"
        "    else:\n"
        "        raise SystemExit(name + ' built without torchgeo')\n"
        "assert 'timm_resnet18' in BACKBONE_REGISTRY\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=_root())
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def _root() -> str:
    from pathlib import Path

    import geofm

    return str(Path(geofm.__file__).parents[1])


# ------------------------------------------------------------------------------ composition
CASES = [
    ("ssl4eos12_resnet50_sentinel2_all_moco", 13, {"backbone_out_indices": [0, 1, 2, 3, 4]}, None,
     "UNetDecoder", {"decoder_channels": [64, 32, 16, 16, 8]}),
    ("ssl4eos12_vit_small_patch16_224_sentinel2_all_dino", 13, {"backbone_img_size": 64},
     [{"name": "SelectIndices", "indices": [3, 5, 7, 11]}, {"name": "LearnedInterpolateToPyramidal"}],
     "UperNetDecoder", {"decoder_channels": 16}),
    ("satlas_swin_t_sentinel2_si_ms", 9, {"backbone_out_indices": [1, 3, 5, 7]},
     [{"name": "PermuteDims", "new_order": [0, 3, 1, 2]}], "UperNetDecoder", {"decoder_channels": 16}),
    ("satlas_swin_t_sentinel2_si_ms", 9, {}, [{"name": "PermuteDims", "new_order": [0, 3, 1, 2]}],
     "FCNDecoder", {"decoder_channels": 16}),
]


@pytest.mark.parametrize(("backbone", "bands", "backbone_args", "necks", "decoder", "decoder_args"), CASES)
def test_composes_through_the_factory(backbone, bands, backbone_args, necks, decoder, decoder_args):
    model = MODEL_FACTORY_REGISTRY.build("EncoderDecoderFactory").build_model(
        "segmentation", backbone, decoder, num_classes=2, necks=necks, **backbone_args, **decoder_args
    ).eval()
    with torch.no_grad():
        out = model(torch.randn(1, bands, 64, 64)).output
    assert out.shape == (1, 2, 64, 64)


def test_trains_in_a_segmentation_task_with_the_weights_statistics():
    from geofm.tasks import SemanticSegmentationTask
    from tests.tasks.helpers import DictDataModule, make_samples, trainer

    model_args = {
        "backbone": "ssl4eos12_resnet18_sentinel2_all_moco", "backbone_out_indices": [0, 1, 2, 3, 4],
        "decoder": "UNetDecoder", "decoder_channels": [32, 16, 16, 8, 8], "num_classes": 3,
    }
    task = SemanticSegmentationTask(model_args=model_args, lr=1e-3)
    before = [p.detach().clone() for p in task.model.parameters()]
    trainer(limit_train_batches=1, limit_val_batches=1).fit(
        task, datamodule=DictDataModule(make_samples("segmentation", n=2, bands=13))
    )
    assert any(not torch.equal(a, b) for a, b in zip(before, task.model.parameters(), strict=True))
    torch.testing.assert_close(task.preprocess.std, torch.full((13,), 10000.0))
