"""Every neck and decoder composed through the factory, as a user would write them."""

from __future__ import annotations

import pytest
import torch

from geofm.registry import GEOFM_DECODER_REGISTRY, GEOFM_NECK_REGISTRY, MODEL_FACTORY_REGISTRY

CNN = {"backbone": "timm_resnet18", "backbone_in_chans": 6}
VIT = {
    "backbone": "timm_vit_tiny_patch16_224",
    "backbone_in_chans": 6,
    "backbone_img_size": 64,
    "backbone_dynamic_img_size": True,
    "backbone_out_indices": [2, 5, 8, 11],
}
PYRAMID = [{"name": "SelectIndices", "indices": [1, 2, 3, 4]}]
UP = [{"name": "InterpolateToPyramidal"}]

# (id, backbone args, necks, decoder, decoder args, task)
CASES = [
    ("cnn-fcn", CNN, None, "FCNDecoder", {"decoder_channels": 16}, "segmentation"),
    ("cnn-upernet", CNN, PYRAMID, "UperNetDecoder", {"decoder_channels": 16}, "segmentation"),
    ("cnn-unet", CNN, None, "UNetDecoder", {"decoder_channels": [64, 32, 16, 16, 8]}, "segmentation"),
    ("cnn-identity", CNN, None, "IdentityDecoder", {}, "regression"),
    ("cnn-linear", CNN, None, "LinearDecoder", {"decoder_upsampling_size": 4}, "segmentation"),
    ("cnn-mlp", CNN, None, "MLPDecoder", {"decoder_channels": 16, "decoder_out_dim": 8}, "classification"),
    ("cnn-aspp-seg", CNN, None, "ASPPSegmentationHead", {"decoder_channels": 16}, "segmentation"),
    ("cnn-aspp-reg", CNN, None, "ASPPRegressionHead", {"decoder_channels": 16}, "regression"),
    ("cnn-bottleneck-upernet", CNN, PYRAMID + [{"name": "AddBottleneckLayer"}], "UperNetDecoder", {"decoder_channels": 16}, "segmentation"),
    ("cnn-maxpool-upernet", CNN, [{"name": "SelectIndices", "indices": [1]}, {"name": "MaxpoolToPyramidal"}], "UperNetDecoder", {"decoder_channels": 16}, "segmentation"),
    ("cnn-permute-identity", CNN, [{"name": "PermuteDims", "new_order": [0, 1, 3, 2]}, {"name": "PermuteDims", "new_order": [0, 1, 3, 2]}], "IdentityDecoder", {}, "regression"),
    ("cnn-aggregate-mlp", CNN, [{"name": "AggregateTokens", "indices": [-1]}], "MLPDecoder", {"decoder_channels": 16, "decoder_out_dim": 8}, "classification"),
    ("cnn-smp-unet", CNN, None, "smp_Unet", {"decoder_decoder_channels": [64, 32, 16, 16, 8]}, "segmentation"),
    ("vit-fcn", VIT, None, "FCNDecoder", {"decoder_channels": 16}, "segmentation"),
    ("vit-upernet", VIT, UP, "UperNetDecoder", {"decoder_channels": 16}, "segmentation"),
    ("vit-upernet-scale", VIT, None, "UperNetDecoder", {"decoder_channels": 16, "decoder_scale_modules": True}, "regression"),
    ("vit-maxpool-upernet", VIT, [{"name": "SelectIndices", "indices": [-3, -2, -1]}, {"name": "MaxpoolToPyramidal"}], "UperNetDecoder", {"decoder_channels": 16}, "segmentation"),
    ("vit-learned-unet", VIT, [{"name": "LearnedInterpolateToPyramidal"}], "UNetDecoder", {"decoder_channels": [32, 16, 16, 8]}, "segmentation"),
    ("vit-up-unet", VIT, UP, "UNetDecoder", {"decoder_channels": [32, 16, 16, 8]}, "regression"),
    ("vit-identity", VIT, None, "IdentityDecoder", {}, "classification"),
    ("vit-linear", VIT, None, "LinearDecoder", {"decoder_upsampling_size": 16}, "segmentation"),
    ("vit-mlp", VIT, None, "MLPDecoder", {"decoder_channels": 16, "decoder_out_dim": 8}, "regression"),
    ("vit-aspp", VIT, [{"name": "SelectIndices", "indices": [-1]}], "ASPPSegmentationHead", {"decoder_channels": 16}, "segmentation"),
    ("vit-aggregate", VIT, [{"name": "AggregateTokens", "indices": [-1], "pooling": "max"}], "IdentityDecoder", {}, "classification"),
    ("vit-smp-fpn", VIT, UP, "smp_FPN", {"decoder_encoder_depth": 4}, "segmentation"),
    ("vit-smp-deeplab", VIT, UP, "smp_DeepLabV3Plus", {"decoder_encoder_depth": 4}, "segmentation"),
    ("vit-smp-psp", VIT, None, "smp_PSPNet", {"decoder_encoder_depth": 4}, "segmentation"),
    ("cnn-smp-fpn", CNN, None, "smp_FPN", {}, "segmentation"),
    ("cnn-smp-deeplab", CNN, None, "smp_DeepLabV3Plus", {}, "segmentation"),
    ("cnn-smp-psp", CNN, None, "smp_PSPNet", {}, "classification"),
]


def expected_shape(task: str, size: int) -> tuple[int, ...]:
    return {"segmentation": (2, 3, size, size), "regression": (2, size, size), "classification": (2, 3)}[task]


@pytest.mark.parametrize(("backbone", "necks", "decoder", "decoder_args", "task"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_composition(backbone, necks, decoder, decoder_args, task):
    torch.manual_seed(0)
    factory = MODEL_FACTORY_REGISTRY.build("EncoderDecoderFactory")
    model = factory.build_model(
        task, num_classes=None if task == "regression" else 3, necks=necks, decoder=decoder, **backbone, **decoder_args
    )
    for size in (64, 70):
        out = model(torch.randn(2, 6, size, size)).output
        assert out.shape == expected_shape(task, size)
    out.float().mean().backward()
    first = next(p for p in model.encoder.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0


def test_every_neck_and_decoder_is_composed():
    necks_used = {n["name"] for c in CASES for n in (c[2] or [])}
    decoders_used = {c[3] for c in CASES}
    missing_necks = set(GEOFM_NECK_REGISTRY) - necks_used - {"ReshapeTokensToImage"}  # needs tokens: Prithvi tests
    assert not missing_necks, f"necks never composed: {missing_necks}"
    assert not set(GEOFM_DECODER_REGISTRY) - decoders_used - {n for n in GEOFM_DECODER_REGISTRY if n.startswith("_")}
