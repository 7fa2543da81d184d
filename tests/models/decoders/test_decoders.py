"""geofm's own decoders: one contract suite over every registered decoder, then targeted checks."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import nn

from geofm.registry import BACKBONE_REGISTRY, DECODER_REGISTRY, GEOFM_DECODER_REGISTRY

# A 4-level pyramid (strides 4..32 of a 128 px image) and 4 same-size ViT-style maps.
PYRAMID = {"channels": [8, 16, 24, 32], "sizes": [32, 16, 8, 4]}
VIT = {"channels": [16, 16, 16, 16], "sizes": [16, 16, 16, 16]}
INPUTS = {"pyramid": PYRAMID, "vit": VIT}


@dataclass(frozen=True)
class Case:
    """How to build and feed one decoder in the contract suite."""

    name: str
    inputs: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    # Indices of the features the decoder reads; None means "unknown, at least one".
    used: tuple[int, ...] | None = None
    variant: str = ""

    @property
    def id(self) -> str:
        return f"{self.name}-{self.variant}" if self.variant else self.name


CASES = [
    Case("FCNDecoder", "vit", {"channels": 8, "num_convs": 2}, used=(3,)),
    Case("UperNetDecoder", "pyramid", {"channels": 16}, used=(0, 1, 2, 3)),
    Case(
        "UperNetDecoder",
        "vit",
        {"channels": 16, "scale_modules": True},
        used=(0, 1, 2, 3),
        variant="scale_modules",
    ),
    Case("UNetDecoder", "pyramid", {"channels": [16, 16, 8, 8]}, used=(0, 1, 2, 3)),
    Case("IdentityDecoder", "vit", {}, used=(3,)),
    Case("LinearDecoder", "vit", {"num_classes": 3, "upsampling_size": 4}, used=(3,)),
    Case(
        "LinearDecoder",
        "vit",
        {"num_classes": 3, "upsampling_size": 4, "mode": "bilinear", "in_index": 1},
        used=(1,),
        variant="bilinear",
    ),
    Case("MLPDecoder", "vit", {"channels": 8, "out_dim": 6}, used=(3,)),
    Case("ASPPSegmentationHead", "pyramid", {"num_classes": 3, "channels": 8}, used=(3,)),
    Case("ASPPRegressionHead", "pyramid", {"channels": 8, "in_index": 2}, used=(2,)),
]


def all_cases() -> list[Case]:
    """The explicit cases plus a default one for any registered decoder they do not cover."""
    covered = {case.name for case in CASES}
    extra = [Case(name, "pyramid") for name in sorted(GEOFM_DECODER_REGISTRY) if name not in covered]
    return CASES + extra


def make_features(kind: str, batch: int = 2) -> list[torch.Tensor]:
    spec = INPUTS[kind]
    return [
        torch.randn(batch, c, s, s, requires_grad=True)
        for c, s in zip(spec["channels"], spec["sizes"], strict=True)
    ]


def build(case: Case) -> tuple[nn.Module, int | None]:
    """Build the decoder of ``case`` through the registry; also return the expected classes."""
    cls = GEOFM_DECODER_REGISTRY.get(case.name)
    kwargs = dict(case.kwargs)
    expected_classes = None
    if getattr(cls, "includes_head", False):
        default = inspect.signature(cls).parameters["num_classes"].default
        if "num_classes" not in kwargs and default is inspect.Parameter.empty:
            kwargs["num_classes"] = 3
        expected_classes = kwargs.get("num_classes", default)
    decoder = DECODER_REGISTRY.build(case.name, INPUTS[case.inputs]["channels"], **kwargs)
    return decoder, expected_classes


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_every_geofm_decoder_is_covered():
    names = set(GEOFM_DECODER_REGISTRY)
    expected = {
        "FCNDecoder",
        "UperNetDecoder",
        "UNetDecoder",
        "IdentityDecoder",
        "LinearDecoder",
        "MLPDecoder",
        "ASPPSegmentationHead",
        "ASPPRegressionHead",
    }
    assert expected <= names
    assert names <= {case.name for case in all_cases()}


@pytest.mark.parametrize("case", all_cases(), ids=lambda c: c.id)
def test_decoder_contract(case: Case):
    decoder, expected_classes = build(case)
    assert isinstance(decoder.out_channels, int)
    if expected_classes is not None:
        assert decoder.out_channels == expected_classes

    # Train mode, batch of 2: shape, channels, and gradients to every feature read.
    decoder.train()
    features = make_features(case.inputs)
    out = decoder(features)
    assert out.ndim == 4
    assert out.shape[:2] == (2, decoder.out_channels)
    # A random projection: a plain sum can have zero gradient right after a BatchNorm.
    (out * torch.randn_like(out)).sum().backward()
    used = case.used if case.used is not None else range(len(features))
    for i, feature in enumerate(features):
        if i in used:
            assert feature.grad is not None, f"feature {i} got no gradient"
            if case.used is not None:
                assert feature.grad.abs().sum() > 0, f"feature {i} got a zero gradient"
        else:
            assert feature.grad is None, f"feature {i} is not supposed to be read"
    if case.used is None:
        assert any(f.grad is not None and f.grad.abs().sum() > 0 for f in features)
    # Parameters that never get a gradient break DDP (find_unused_parameters) and waste memory.
    unused = [n for n, p in decoder.named_parameters() if p.grad is None]
    assert not unused, f"parameters without gradient: {unused}"

    # Eval mode: same shape, finite, deterministic (dropout off, running BatchNorm stats).
    decoder.eval()
    with torch.no_grad():
        eval_features = [f.detach() for f in features]
        first = decoder(eval_features)
        second = decoder(eval_features)
    assert first.shape == out.shape
    assert torch.isfinite(first).all()
    torch.testing.assert_close(first, second)


@pytest.mark.parametrize("case", all_cases(), ids=lambda c: c.id)
def test_decoder_trains_at_batch_size_one(case: Case):
    # Global-pooling branches reduce to one value per channel: BatchNorm there fails at batch 1.
    decoder, _ = build(case)
    decoder.train()
    out = decoder([f.detach() for f in make_features(case.inputs, batch=1)])
    assert out.shape[:2] == (1, decoder.out_channels)


def test_prefixed_name_builds_ours():
    decoder = DECODER_REGISTRY.build("geofm_IdentityDecoder", [4, 8])
    assert type(decoder).__name__ == "IdentityDecoder"


def test_identity_returns_the_exact_tensor():
    decoder = DECODER_REGISTRY.build("IdentityDecoder", [4, 8, 12], out_index=1)
    features = [torch.randn(2, c, 4, 4) for c in (4, 8, 12)]
    assert decoder(features) is features[1]
    assert decoder.out_channels == 8


@pytest.mark.parametrize(("num_convs", "factor"), [(4, 16), (2, 4)])
def test_fcn_upsamples_by_two_per_block(num_convs: int, factor: int):
    decoder = DECODER_REGISTRY.build("FCNDecoder", [16, 16], channels=8, num_convs=num_convs)
    out = decoder([torch.randn(2, 16, 4, 4), torch.randn(2, 16, 4, 5)])
    assert out.shape == (2, 8, 4 * factor, 5 * factor)


def test_upernet_output_at_the_finest_resolution():
    decoder = DECODER_REGISTRY.build("UperNetDecoder", PYRAMID["channels"], channels=16)
    out = decoder(make_features("pyramid"))
    assert out.shape == (2, 16, 32, 32)


def test_upernet_scale_modules_make_a_x4_pyramid():
    decoder = DECODER_REGISTRY.build(
        "UperNetDecoder", [16, 16, 16, 16], channels=8, scale_modules=True
    )
    out = decoder([torch.randn(2, 16, 8, 8) for _ in range(4)])
    assert out.shape == (2, 8, 32, 32)


def test_upernet_scale_modules_need_four_features():
    with pytest.raises(ValueError, match=r"scale_modules=True.*\[16, 16, 16\]"):
        DECODER_REGISTRY.build("UperNetDecoder", [16, 16, 16], scale_modules=True)


def test_unet_output_at_twice_the_finest_resolution():
    decoder = DECODER_REGISTRY.build("UNetDecoder", PYRAMID["channels"], channels=[16, 16, 8, 4])
    out = decoder(make_features("pyramid"))
    assert out.shape == (2, 4, 64, 64)
    assert decoder.out_channels == 4


def test_unet_needs_one_channel_count_per_feature():
    with pytest.raises(ValueError, match=r"channels=\[16, 8\].*4 features"):
        DECODER_REGISTRY.build("UNetDecoder", PYRAMID["channels"], channels=[16, 8])


def test_linear_decoder_pixel_shuffle_is_local():
    decoder = DECODER_REGISTRY.build("LinearDecoder", [8], num_classes=2, upsampling_size=4)
    x = torch.randn(1, 8, 5, 5)
    out = decoder([x])
    assert out.shape == (1, 2, 20, 20)
    # Changing one input pixel changes exactly its own 4x4 output patch.
    x2 = x.clone()
    x2[0, :, 2, 3] += 1.0
    changed = (decoder([x2]) - out).abs().sum(dim=(0, 1)) > 0
    expected = torch.zeros(20, 20, dtype=torch.bool)
    expected[8:12, 12:16] = True
    assert torch.equal(changed, expected)


def test_linear_decoder_bilinear_and_bad_mode():
    decoder = DECODER_REGISTRY.build(
        "LinearDecoder", [8], num_classes=2, upsampling_size=3, mode="bilinear"
    )
    assert decoder([torch.randn(2, 8, 5, 5)]).shape == (2, 2, 15, 15)
    with pytest.raises(ValueError, match="mode='nearest'"):
        DECODER_REGISTRY.build("LinearDecoder", [8], num_classes=2, mode="nearest")


def test_aspp_regression_gives_one_channel():
    decoder = DECODER_REGISTRY.build("ASPPRegressionHead", [8, 16], channels=8)
    out = decoder([torch.randn(2, 8, 16, 16), torch.randn(2, 16, 8, 8)])
    assert decoder.out_channels == 1
    assert out.shape == (2, 1, 8, 8)


def test_aspp_segmentation_branches_follow_dilations():
    decoder = DECODER_REGISTRY.build(
        "ASPPSegmentationHead", [16], num_classes=5, channels=8, dilations=(1, 2, 4)
    )
    convs = [next(m for m in b.modules() if isinstance(m, nn.Conv2d)) for b in decoder.branches]
    assert [(c.kernel_size, c.dilation) for c in convs] == [
        ((1, 1), (1, 1)),
        ((3, 3), (2, 2)),
        ((3, 3), (4, 4)),
    ]
    assert decoder([torch.randn(2, 16, 6, 6)]).shape == (2, 5, 6, 6)


def test_mlp_on_pooled_vectors_matches_per_pixel():
    decoder = DECODER_REGISTRY.build("MLPDecoder", [16, 32], channels=8, out_dim=5).eval()
    pooled = torch.randn(3, 32)
    out = decoder([torch.randn(3, 16), pooled])
    assert out.shape == (3, 5)
    as_map = decoder([torch.randn(3, 16, 1, 1), pooled[:, :, None, None]])
    torch.testing.assert_close(as_map[:, :, 0, 0], out)


def test_mlp_activation_by_name():
    decoder = DECODER_REGISTRY.build("MLPDecoder", [16], activation="gelu")
    assert any(isinstance(m, nn.GELU) for m in decoder.modules())
    with pytest.raises(ValueError, match="activation='Relu2'.*GELU"):
        DECODER_REGISTRY.build("MLPDecoder", [16], activation="Relu2")


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("FCNDecoder", {"in_index": 4}, "in_index=4"),
        ("IdentityDecoder", {"out_index": -5}, "out_index=-5"),
        ("ASPPSegmentationHead", {"num_classes": 2, "in_index": 7}, "in_index=7"),
        ("FCNDecoder", {"num_convs": 0}, "num_convs=0"),
    ],
)
def test_bad_arguments_name_the_value(name: str, kwargs: dict[str, Any], match: str):
    with pytest.raises(ValueError, match=match):
        DECODER_REGISTRY.build(name, [8, 8, 8, 8], **kwargs)


def test_embed_dim_must_be_a_list():
    with pytest.raises(ValueError, match="embed_dim=768"):
        DECODER_REGISTRY.build("IdentityDecoder", 768)


def test_feature_count_and_channel_mismatches_are_reported():
    decoder = DECODER_REGISTRY.build("UperNetDecoder", [8, 16], channels=8)
    with pytest.raises(ValueError, match="built for 2 features.*got 3"):
        decoder([torch.randn(1, 8, 8, 8), torch.randn(1, 16, 4, 4), torch.randn(1, 16, 2, 2)])
    with pytest.raises(ValueError, match=r"embed_dim=\[8, 16\] but got \[8, 12\]"):
        decoder([torch.randn(1, 8, 8, 8), torch.randn(1, 12, 4, 4)])


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    return BACKBONE_REGISTRY.build("timm_resnet18", in_chans=3)


@pytest.mark.parametrize(
    ("name", "kwargs", "size"),
    [
        ("UperNetDecoder", {"channels": 16}, 32),
        ("UNetDecoder", {"channels": [32, 16, 16, 8, 8]}, 64),
        ("ASPPSegmentationHead", {"num_classes": 3, "channels": 16}, 2),
        ("ASPPRegressionHead", {"channels": 16}, 2),
    ],
)
def test_pyramid_decoders_on_resnet18_features(
    resnet18: nn.Module, name: str, kwargs: dict[str, Any], size: int
):
    decoder = DECODER_REGISTRY.build(name, resnet18.out_channels, **kwargs)
    resnet18.zero_grad()
    out = decoder(resnet18(torch.randn(2, 3, 64, 64)))
    assert out.shape == (2, decoder.out_channels, size, size)
    (out * torch.randn_like(out)).sum().backward()
    stem = next(p for p in resnet18.parameters())
    assert stem.grad is not None and stem.grad.abs().sum() > 0
