"""TerraTorch's PrithviModelFactory, SMPModelFactory and TimmModelFactory: the compositions they name."""

from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp
import timm
import torch

from geofm.models.model import ModelOutput
from geofm.models.pixel_wise_model import PixelWiseModel
from geofm.models.scalar_output_model import ScalarOutputModel
from geofm.registry import MODEL_FACTORY_REGISTRY

torch.manual_seed(0)


def build(factory: str, task: str, **kwargs):
    return MODEL_FACTORY_REGISTRY.build(factory).build_model(task, **kwargs)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", ["PrithviModelFactory", "SMPModelFactory", "TimmModelFactory"])
def test_registered(name):
    assert name in MODEL_FACTORY_REGISTRY


# ------------------------------------------------------------------------------ Prithvi
def prithvi(task="segmentation", **kwargs):
    args = {
        "backbone": "prithvi_eo_tiny",
        "decoder": "UperNetDecoder",
        "bands": ["BLUE", "GREEN", "RED", "NIR_NARROW"],
        "num_classes": 3,
        "pretrained": False,
        "decoder_channels": 16,
    }
    # None removes a default argument.
    return build("PrithviModelFactory", task, **{k: v for k, v in {**args, **kwargs}.items() if v is not None})


def test_prithvi_equals_encoder_decoder_composition():
    model = prithvi(in_channels=4, num_frames=2)
    reference = build(
        "EncoderDecoderFactory", "segmentation", backbone="prithvi_eo_tiny",
        decoder="UperNetDecoder", num_classes=3, decoder_channels=16,
        backbone_bands=["BLUE", "GREEN", "RED", "NIR_NARROW"], backbone_num_frames=2,
        necks=[{"name": "ReshapeTokensToImage", "effective_time_dim": 2}],
    )
    assert isinstance(model, PixelWiseModel)
    assert count(model) == count(reference)
    assert model.encoder.bands == ["BLUE", "GREEN", "RED", "NIR_NARROW"]
    assert model.encoder.num_frames == 2 and model.neck[0].effective_time_dim == 2
    out = model.eval()(torch.randn(1, 4, 2, 64, 64))
    assert isinstance(out, ModelOutput) and out.output.shape == (1, 3, 64, 64)


def test_prithvi_routes_head_decoder_and_backbone_keywords():
    model = prithvi("regression", num_classes=None, head_final_act="torch.nn.ReLU",
                    backbone_drop_path_rate=0.2)
    assert isinstance(model.head.final_act, torch.nn.ReLU)
    assert model.encoder.blocks[-1].drop_path1.drop_prob == pytest.approx(0.2)
    assert model.eval()(torch.randn(1, 4, 32, 32)).output.shape == (1, 32, 32)


def test_prithvi_classification_ignores_rescale_as_terratorch():
    model = prithvi("classification", decoder="IdentityDecoder", decoder_channels=None)
    assert isinstance(model, ScalarOutputModel)
    assert model.eval()(torch.randn(2, 4, 32, 32)).output.shape == (2, 3)


def test_prithvi_in_channels_defaults_to_bands_and_must_agree():
    assert prithvi().encoder.patch_embed.proj.in_channels == 4
    with pytest.raises(ValueError, match="in_chans=5"):
        prithvi(in_channels=5)


def test_prithvi_refuses_other_backbones_and_prepare_features():
    with pytest.raises(NotImplementedError, match="EncoderDecoderFactory with backbone: timm_resnet18"):
        prithvi(backbone="timm_resnet18")
    with pytest.raises(ValueError, match="necks"):
        prithvi(prepare_features_for_image_model=lambda x: x)
    with pytest.raises(ValueError, match="num_frames=1 and backbone_num_frames=2 disagree"):
        prithvi(backbone_num_frames=2)


def test_prithvi_swin_backbone():
    model = prithvi(backbone="prithvi_swin_B", decoder="FCNDecoder", backbone_depths=(1, 1, 1, 1),
                    backbone_window_size=8, backbone_drop_path_rate=0.3)
    assert model.encoder.model.patch_embed.proj.in_channels == 4
    assert len(model.neck) == 0  # maps already: nothing inserted
    assert model.eval()(torch.randn(1, 4, 64, 64)).output.shape == (1, 3, 64, 64)


# ------------------------------------------------------------------------------ smp
@pytest.mark.parametrize(
    ("model", "encoder", "smp_kwargs"),
    [
        ("Unet", "resnet18", {}),
        ("FPN", "resnet18", {}),
        ("DeepLabV3Plus", "resnet18", {}),
        ("Unet", "resnet18", {"decoder_channels": (64, 32, 16)}),
    ],
)
def test_smp_equals_the_smp_model(model, encoder, smp_kwargs):
    depth = {"encoder_depth": 3} if "decoder_channels" in smp_kwargs else {}
    geofm_model = build(
        "SMPModelFactory", "segmentation", model=model, backbone=encoder, in_channels=6,
        num_classes=3, pretrained=False, **{f"smp_{k}": v for k, v in {**smp_kwargs, **depth}.items()},
    ).eval()
    reference = getattr(smp, model)(
        encoder_name=encoder, encoder_weights=None, in_channels=6, classes=3, **smp_kwargs, **depth
    ).eval()
    assert count(geofm_model) == count(reference)
    # Same modules, so the same weights give the same output.
    reference.load_state_dict(
        {k.replace("encoder.encoder.", "encoder.").replace("decoder.decoder.", "decoder.")
         .replace("decoder.head.", "segmentation_head."): v
         for k, v in geofm_model.state_dict().items()}
    )
    x = torch.randn(2, 6, 64, 64)
    with torch.no_grad():
        expected = reference(x)
        if expected.shape[-2:] != x.shape[-2:]:
            expected = torch.nn.functional.interpolate(expected, size=x.shape[-2:], mode="bilinear")
        got = geofm_model(x).output
    assert got.shape == expected.shape == (2, 3, 64, 64)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_smp_brief_example_and_padding():
    model = build("SMPModelFactory", "segmentation", model="Unet", backbone="resnet18",
                  in_channels=6, num_classes=3, pretrained=False).eval()
    reference = smp.Unet(encoder_name="resnet18", encoder_weights=None, in_channels=6, classes=3)
    assert count(model) == count(reference)
    assert model.pad_multiple == 32  # smp needs sides divisible by 32; geofm pads
    assert model(torch.randn(1, 6, 70, 50)).output.shape == (1, 3, 70, 50)


def test_smp_bands_give_the_channels_and_regression_relu():
    model = build("SMPModelFactory", "regression", model="Unet", backbone="resnet18",
                  bands=["RED", "GREEN", "BLUE", "NIR_NARROW"], pretrained=False,
                  regression_relu=True).eval()
    assert model.encoder.encoder.conv1.in_channels == 4
    out = model(torch.randn(2, 4, 64, 64)).output
    assert out.shape == (2, 64, 64) and (out >= 0).all()


def test_smp_timm_universal_encoder():
    model = build("SMPModelFactory", "segmentation", model="Unet", backbone="tu-resnet18",
                  in_channels=3, num_classes=2, pretrained=False)
    reference = smp.Unet(encoder_name="tu-resnet18", encoder_weights=None, classes=2)
    assert count(model) == count(reference)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"aux_classes": 2}, ValueError, r"\['aux_classes'\].*aux_decoders"),
        ({"backbone_out_channels": [1]}, ValueError, r"custom .*EncoderDecoderFactory"),
        ({"decoder_channels": 8}, ValueError, r"\['decoder_channels'\].*smp_"),
        ({"model": "Unett"}, ValueError, "not an smp architecture"),
        ({"backbone": "prithvi_eo_tiny"}, ValueError, "decoder: smp_Unet"),
        ({"prepare_features_for_image_model": abs}, ValueError, "necks"),
    ],
)
def test_smp_unsupported_arguments_name_the_geofm_way(kwargs, error, match):
    args = {"model": "Unet", "backbone": "resnet18", "in_channels": 3, "num_classes": 2,
            "pretrained": False, **kwargs}
    with pytest.raises(error, match=match):
        build("SMPModelFactory", "segmentation", **args)


def test_smp_classification_is_refused():
    with pytest.raises(NotImplementedError, match="TimmModelFactory"):
        build("SMPModelFactory", "classification", model="Unet", backbone="resnet18", pretrained=False)


# ------------------------------------------------------------------------------ timm
@pytest.mark.parametrize("backbone", ["resnet18", "vit_tiny_patch16_224"])
def test_timm_equals_the_timm_classifier(backbone):
    model = build("TimmModelFactory", "classification", backbone=backbone, in_channels=4,
                  num_classes=5, pretrained=False).eval()
    reference = timm.create_model(backbone, in_chans=4, num_classes=5).eval()
    assert isinstance(model, ScalarOutputModel)
    assert count(model) == count(reference)
    # The head is timm's classifier: same weights, same logits.
    model.head.layers[-1].load_state_dict(reference.get_classifier().state_dict())
    model.encoder.model.load_state_dict(
        {k: v for k, v in reference.state_dict().items()
         if not k.startswith(reference.default_cfg["classifier"])}
    )
    x = torch.randn(2, 4, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x).output, reference(x), rtol=1e-4, atol=1e-5)


def test_timm_backbone_keywords_reach_timm_and_others_are_errors():
    model = build("TimmModelFactory", "classification", backbone="resnet18", in_channels=3,
                  num_classes=2, pretrained=False, backbone_drop_rate=0.5)
    assert model.encoder.model.drop_rate == 0.5
    with pytest.raises(ValueError, match=r"\['drop_rate'\].*backbone_"):
        build("TimmModelFactory", "classification", backbone="resnet18", in_channels=3,
              num_classes=2, pretrained=False, drop_rate=0.5)
    with pytest.raises(ValueError, match="backbone_pretrained_cfg_overlay"):
        build("TimmModelFactory", "classification", backbone="resnet18", in_channels=3,
              num_classes=2, pretrained="ResNet18_Weights.SENTINEL2_ALL_MOCO")
    with pytest.raises(NotImplementedError, match="EncoderDecoderFactory with backbone: timm_resnet18"):
        build("TimmModelFactory", "segmentation", backbone="resnet18", in_channels=3,
              num_classes=2, pretrained=False)
