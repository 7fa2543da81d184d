"""Necks: the channel-list contract over every registered neck, values, chaining and errors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from geofm.models.necks import (
    AddBottleneckLayer,
    AggregateTokens,
    InterpolateToPyramidal,
    LearnedInterpolateToPyramidal,
    MaxpoolToPyramidal,
    Neck,
    PermuteDims,
    ReshapeTokensToImage,
    SelectIndices,
)
from geofm.registry import (
    BACKBONE_REGISTRY,
    GEOFM_NECK_REGISTRY,
    NECK_REGISTRY,
    UnknownNameError,
)

B = 2


@dataclass
class Case:
    """One neck, its inputs and the channels it must report."""

    kwargs: dict[str, Any]
    channel_list: list[int]
    make_features: Callable[[], list[torch.Tensor]]
    expected_channels: list[int]
    expected_sizes: list[tuple[int, ...]]  # spatial size (or () for vectors) of each output
    image_size: tuple[int, int] | None = None


def maps(channels: list[int], size: tuple[int, int] = (8, 8)) -> list[torch.Tensor]:
    return [torch.randn(B, c, *size) for c in channels]


def tokens(n_features: int, width: int, grid: tuple[int, int], steps: int = 1, cls: bool = True):
    n = steps * grid[0] * grid[1] + int(cls)
    return [torch.randn(B, n, width) for _ in range(n_features)]


# One case per registered neck: the parametrized contract test fails for a neck without one.
CASES: dict[str, Case] = {
    "SelectIndices": Case(
        {"indices": [0, -1]}, [4, 6, 8], lambda: maps([4, 6, 8]), [4, 8], [(8, 8), (8, 8)]
    ),
    "PermuteDims": Case(
        {"new_order": [0, 3, 1, 2]},
        [5, 7],
        lambda: [torch.randn(B, 6, 4, 5), torch.randn(B, 6, 4, 7)],  # channels last
        [5, 7],
        [(6, 4), (6, 4)],
    ),
    "InterpolateToPyramidal": Case(
        {"scale_factor": 2},
        [4, 4, 4],
        lambda: maps([4, 4, 4], (4, 4)),
        [4, 4, 4],
        [(16, 16), (8, 8), (4, 4)],
    ),
    "MaxpoolToPyramidal": Case(
        {"kernel_size": 2},
        [3, 3, 3],
        lambda: maps([3, 3, 3], (16, 16)),
        [3, 3, 3],
        [(16, 16), (8, 8), (4, 4)],
    ),
    "ReshapeTokensToImage": Case(
        {"effective_time_dim": 2},
        [2 * 6, 2 * 6],
        lambda: tokens(2, 6, (3, 5), steps=2),
        [12, 12],
        [(3, 5), (3, 5)],
        image_size=(48, 80),
    ),
    "AddBottleneckLayer": Case(
        {}, [4, 8], lambda: [torch.randn(B, 4, 8, 8), torch.randn(B, 8, 4, 4)], [4, 8, 4],
        [(8, 8), (4, 4), (4, 4)],
    ),
    "LearnedInterpolateToPyramidal": Case(
        {}, [8, 8, 8, 8], lambda: maps([8, 8, 8, 8], (4, 4)), [2, 4, 8, 8],
        [(16, 16), (8, 8), (4, 4), (2, 2)],
    ),
    "AggregateTokens": Case(
        {"pooling": "mean", "indices": [-1]},
        [6, 6],
        lambda: tokens(2, 6, (3, 3)),
        [6],
        [()],
    ),
}


def test_every_registered_neck_has_a_case():
    assert set(GEOFM_NECK_REGISTRY) == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_output_matches_process_channel_list(name: str):
    case = CASES[name]
    neck = NECK_REGISTRY.build(name, case.channel_list, **case.kwargs)
    assert isinstance(neck, Neck)
    reported = neck.process_channel_list(case.channel_list)
    assert reported == case.expected_channels
    out = neck(case.make_features(), image_size=case.image_size or (64, 64))
    assert isinstance(out, list)
    assert len(out) == len(reported)
    for x, channels, size in zip(out, reported, case.expected_sizes, strict=True):
        assert x.shape[0] == B
        assert x.shape[1] == channels
        assert tuple(x.shape[2:]) == size


@pytest.mark.parametrize("name", sorted(CASES))
def test_registered_under_prefix_and_config_dict(name: str):
    case = CASES[name]
    by_prefix = NECK_REGISTRY.build(f"geofm_{name}", case.channel_list, **case.kwargs)
    by_cfg = NECK_REGISTRY.build({"type": name, **case.kwargs}, case.channel_list)
    assert type(by_prefix) is type(by_cfg) is GEOFM_NECK_REGISTRY.get(name)


def test_unknown_neck_suggests_close_names():
    with pytest.raises(UnknownNameError, match="SelectIndices"):
        NECK_REGISTRY.build("SelectIndex", [4], indices=[0])


# ---------------------------------------------------------------------- SelectIndices / Permute
def test_select_indices_negative_and_order():
    feats = maps([4, 6, 8])
    neck = SelectIndices([4, 6, 8], indices=[-1, 0])
    out = neck(feats)
    assert out[0] is feats[2] and out[1] is feats[0]
    assert neck.process_channel_list([4, 6, 8]) == [8, 4]


def test_select_indices_out_of_range():
    with pytest.raises(IndexError, match=r"\[3\].*valid indices are -3..2"):
        SelectIndices([4, 6, 8], indices=[0, 3])
    neck = SelectIndices([4, 6, 8], indices=[2])
    with pytest.raises(IndexError, match="feature list of length 2"):
        neck(maps([4, 6]))
    with pytest.raises(ValueError, match="non-empty list"):
        SelectIndices([4], indices=[])


def test_permute_dims_values_and_errors():
    x = torch.randn(B, 3, 4, 5)
    (out,) = PermuteDims([5], new_order=[0, 3, 1, 2])([x])
    assert out.is_contiguous()
    assert torch.equal(out, x.permute(0, 3, 1, 2))
    with pytest.raises(ValueError, match=r"permutation.*\[0, 1, 1\]"):
        PermuteDims([5], new_order=[0, 1, 1])
    with pytest.raises(ValueError, match=r"shape \(2, 3, 4\)"):
        PermuteDims([5], new_order=[0, 3, 1, 2])([torch.randn(2, 3, 4)])


# ---------------------------------------------------------------------- pyramids
def test_interpolate_to_pyramidal_values():
    feats = maps([2, 2, 2, 2], (3, 5))
    out = InterpolateToPyramidal([2] * 4, scale_factor=2)(feats)
    assert [tuple(x.shape[2:]) for x in out] == [(24, 40), (12, 20), (6, 10), (3, 5)]
    # Nearest upsampling by 8 repeats every input pixel in an 8x8 block.
    assert torch.equal(out[0][..., ::8, ::8], feats[0])
    assert torch.equal(out[3], feats[3])
    bilinear = InterpolateToPyramidal([2, 2], interpolation_mode="bilinear")(feats[:2])
    assert not torch.equal(bilinear[0][..., ::2, ::2], feats[0])  # really interpolated


def test_interpolate_to_pyramidal_terratorch_mode_name_and_errors():
    assert InterpolateToPyramidal([2], mode="bilinear").interpolation_mode == "bilinear"
    with pytest.raises(ValueError, match=r"unknown interpolation_mode 'cubic'.*bicubic"):
        InterpolateToPyramidal([2], interpolation_mode="cubic")
    with pytest.raises(ValueError, match="scale_factor must be a positive number"):
        InterpolateToPyramidal([2], scale_factor=0)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        InterpolateToPyramidal([2])([torch.randn(2, 5, 4)])


def test_maxpool_to_pyramidal_values():
    feats = maps([2, 2, 2], (8, 8))
    out = MaxpoolToPyramidal([2, 2, 2], kernel_size=2)(feats)
    assert torch.equal(out[0], feats[0])
    blocks = feats[1].reshape(B, 2, 4, 2, 4, 2).amax(dim=(3, 5))  # hand 2x2 max
    assert torch.equal(out[1], blocks)
    assert torch.equal(out[2], feats[2].reshape(B, 2, 2, 4, 2, 4).amax(dim=(3, 5)))
    with pytest.raises(ValueError, match="kernel_size must be a positive int, got 0"):
        MaxpoolToPyramidal([2], kernel_size=0)


def test_learned_interpolate_to_pyramidal():
    feats = maps([16, 8, 6, 4], (4, 6))
    neck = LearnedInterpolateToPyramidal([16, 8, 6, 4])
    out = neck(feats)
    assert [tuple(x.shape[1:]) for x in out] == [(4, 16, 24), (4, 8, 12), (6, 4, 6), (4, 2, 3)]
    assert torch.equal(out[2], feats[2])
    assert torch.equal(out[3], F.max_pool2d(feats[3], 2))
    # TerraTorch's submodule names, so that its fine-tuned checkpoints load.
    assert {"fpn1.0.weight", "fpn1.3.weight", "fpn2.0.weight"} <= set(neck.state_dict())
    sum(x.sum() for x in out[:2]).backward()
    assert all(p.grad is not None for p in neck.parameters())
    with pytest.raises(ValueError, match=r"exactly 4 features.*\[8, 8, 8\]"):
        LearnedInterpolateToPyramidal([8, 8, 8])
    with pytest.raises(ValueError, match="exactly 4 features, got 3"):
        neck(feats[:3])


def test_add_bottleneck_layer():
    feats = [torch.randn(B, 4, 8, 8), torch.randn(B, 10, 4, 4)]
    neck = AddBottleneckLayer([4, 10])
    out = neck(feats)
    assert len(feats) == 2  # the caller's list is not modified
    assert out[0] is feats[0] and out[1] is feats[1]
    assert out[2].shape == (B, 5, 4, 4)
    assert (out[2] >= 0).all()  # ends with ReLU
    kinds = [type(m).__name__ for m in neck.bottleneck]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU"]
    assert neck.bottleneck[0].kernel_size == (3, 3)
    with pytest.raises(ValueError, match="at least 2"):
        AddBottleneckLayer([4, 1])


# ---------------------------------------------------------------------- tokens
def coded_tokens(steps: int, hg: int, wg: int, width: int, cls: bool = True) -> torch.Tensor:
    """Tokens whose value encodes (b, t, r, c, e), in (time, row, column) order."""
    b, t, r, c, e = torch.meshgrid(
        torch.arange(B), torch.arange(steps), torch.arange(hg), torch.arange(wg),
        torch.arange(width), indexing="ij",
    )
    code = (b * 10**8 + t * 10**6 + r * 10**4 + c * 10**2 + e).double()
    x = code.reshape(B, steps * hg * wg, width)
    if cls:
        x = torch.cat([torch.full((B, 1, width), -1.0, dtype=x.dtype), x], dim=1)
    return x


def test_reshape_tokens_places_token_t_r_c_channel_e():
    steps, hg, wg, width = 2, 14, 20, 3  # non-square grid, 16 px patches
    x = coded_tokens(steps, hg, wg, width)
    neck = ReshapeTokensToImage([steps * width], effective_time_dim=steps)
    (out,) = neck([x], image_size=(hg * 16, wg * 16))
    assert out.shape == (B, steps * width, hg, wg)
    for b, t, r, c, e in [(0, 0, 0, 0, 0), (1, 1, 13, 19, 2), (0, 1, 5, 17, 1), (1, 0, 9, 2, 0)]:
        expected = b * 10**8 + t * 10**6 + r * 10**4 + c * 10**2 + e
        assert out[b, t * width + e, r, c].item() == expected
    assert (out >= 0).all()  # the class token (-1) was removed


def test_reshape_tokens_square_without_image_size_and_explicit_h():
    x = coded_tokens(1, 4, 4, 5, cls=False)
    (out,) = ReshapeTokensToImage([5], remove_cls_token=False)([x])
    assert out.shape == (B, 5, 4, 4)
    assert torch.equal(out, x.reshape(B, 4, 4, 5).permute(0, 3, 1, 2))
    (tall,) = ReshapeTokensToImage([5], remove_cls_token=False, h=8)([x])
    assert tall.shape == (B, 5, 8, 2)


def test_reshape_tokens_errors():
    x = coded_tokens(1, 14, 20, 3)
    neck = ReshapeTokensToImage([3])
    with pytest.raises(ValueError, match=r"280 tokens.*not a square.*image_size"):
        neck([x])
    with pytest.raises(ValueError, match="not a positive multiple of effective_time_dim=3"):
        ReshapeTokensToImage([9], effective_time_dim=3)([x], image_size=(224, 320))
    with pytest.raises(ValueError, match=r"aspect ratio of image_size=\(224, 224\)"):
        neck([coded_tokens(1, 14, 20, 3)[:, :-1]], image_size=(224, 224))
    with pytest.raises(ValueError, match=r"\(B, N, D\) tokens"):
        neck([torch.randn(B, 3, 4, 4)])
    with pytest.raises(ValueError, match="effective_time_dim must be a positive int"):
        ReshapeTokensToImage([3], effective_time_dim=0)


def test_aggregate_tokens_poolings():
    x = torch.randn(B, 1 + 9, 6)
    mean, = AggregateTokens([6], pooling="mean")([x])
    assert torch.allclose(mean, x[:, 1:].sum(dim=1) / 9)
    with_cls, = AggregateTokens([6], pooling="mean", drop_cls_token=False)([x])
    assert torch.allclose(with_cls, x.sum(dim=1) / 10)
    cls, = AggregateTokens([6], pooling="cls")([x])
    assert torch.equal(cls, x[:, 0])
    mx, = AggregateTokens([6], pooling="max")([x])
    assert torch.equal(mx, x[:, 1:].max(dim=1).values)
    mn, = AggregateTokens([6], pooling="min")([x])
    assert torch.equal(mn, x[:, 1:].min(dim=1).values)


def test_aggregate_tokens_indices_maps_and_time_steps():
    feats = [torch.randn(B, 5, 6), torch.randn(B, 5, 4)]
    neck = AggregateTokens([6, 4], indices=[-1])
    assert neck.process_channel_list([6, 4]) == [4]
    (out,) = neck(feats)
    assert torch.allclose(out, feats[1][:, 1:].mean(dim=1))
    m = torch.randn(B, 3, 4, 5)
    (pooled,) = AggregateTokens([3], pooling="max")([m])
    assert torch.equal(pooled, m.flatten(2).max(dim=2).values)
    # Two time steps of 4 tokens, width 3: the channel list says 6 = T * D.
    t = torch.randn(B, 1 + 2 * 4, 3)
    (per_step,) = AggregateTokens([6])([t])
    expected = torch.cat([t[:, 1:5].mean(dim=1), t[:, 5:9].mean(dim=1)], dim=1)
    assert torch.allclose(per_step, expected)


def test_aggregate_tokens_errors():
    with pytest.raises(ValueError, match=r"unknown pooling 'avg'.*'mean', 'max', 'min', 'cls'"):
        AggregateTokens([6], pooling="avg")
    with pytest.raises(ValueError, match="pooling='cls' needs tokens"):
        AggregateTokens([3], pooling="cls")([torch.randn(B, 3, 4, 4)])
    with pytest.raises(ValueError, match="width 4, which does not divide"):
        AggregateTokens([6])([torch.randn(B, 5, 4)])
    with pytest.raises(ValueError, match="built for 2 features"):
        AggregateTokens([6, 6])([torch.randn(B, 5, 6)])
    with pytest.raises(IndexError, match="out of range"):
        AggregateTokens([6, 6], indices=[2])


def test_channel_list_validation():
    with pytest.raises(ValueError, match="non-empty list of positive ints"):
        SelectIndices([], indices=[0])
    with pytest.raises(TypeError, match="channel_list must be a list of ints"):
        MaxpoolToPyramidal(64)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- chains and backbones
def build_chain(
    specs: list[dict[str, Any]], channel_list: list[int]
) -> tuple[list[Neck], list[int]]:
    """Chain necks the way the factory does: each gets the previous one's channel list."""
    necks = []
    for spec in specs:
        kwargs = {k: v for k, v in spec.items() if k != "name"}
        neck = NECK_REGISTRY.build(spec["name"], channel_list, **kwargs)
        channel_list = neck.process_channel_list(channel_list)
        necks.append(neck)
    return necks, channel_list


def run_chain(necks: list[Neck], feats: list[torch.Tensor], image_size: tuple[int, int]):
    for neck in necks:
        feats = neck(feats, image_size=image_size)
    return feats


def test_chain_on_synthetic_vit_tokens():
    depth, width, steps, grid, patch = 6, 8, 2, (2, 3), 16
    out_channels = [width * steps] * depth  # what a ViT backbone reports
    feats = tokens(depth, width, grid, steps=steps)
    image_size = (grid[0] * patch, grid[1] * patch)
    necks, channels = build_chain(
        [
            {"name": "SelectIndices", "indices": [1, 3, 4, -1]},
            {"name": "ReshapeTokensToImage", "effective_time_dim": steps},
            {"name": "LearnedInterpolateToPyramidal"},
        ],
        out_channels,
    )
    assert channels == [4, 8, 16, 16]
    out = run_chain(necks, feats, image_size)
    assert [x.shape[1] for x in out] == channels
    assert [tuple(x.shape[2:]) for x in out] == [(8, 12), (4, 6), (2, 3), (1, 1)]

    necks, channels = build_chain(
        [
            {"name": "ReshapeTokensToImage", "effective_time_dim": steps},
            {"name": "SelectIndices", "indices": [-3, -2, -1]},
            {"name": "InterpolateToPyramidal"},
        ],
        out_channels,
    )
    out = run_chain(necks, feats, image_size)
    assert [x.shape[1] for x in out] == channels == [16, 16, 16]
    assert [tuple(x.shape[2:]) for x in out] == [(8, 12), (4, 6), (2, 3)]

    necks, channels = build_chain([{"name": "AggregateTokens", "indices": [-1]}], out_channels)
    (pooled,) = run_chain(necks, feats, image_size)
    assert pooled.shape == (B, channels[0]) == (B, width * steps)


@pytest.fixture(scope="module")
def resnet18():
    return BACKBONE_REGISTRY.build("timm_resnet18", in_chans=4).eval()


def test_chain_on_timm_resnet18(resnet18):
    with torch.no_grad():
        feats = resnet18(torch.randn(1, 4, 64, 64))
    assert [f.shape[1] for f in feats] == resnet18.out_channels
    necks, channels = build_chain(
        [{"name": "SelectIndices", "indices": [1, 2, 3, 4]}, {"name": "AddBottleneckLayer"}],
        resnet18.out_channels,
    )
    assert channels == [64, 128, 256, 512, 256]
    with torch.no_grad():
        out = run_chain([n.eval() for n in necks], feats, (64, 64))
    assert [x.shape[1] for x in out] == channels
    assert [x.shape[-1] for x in out] == [16, 8, 4, 2, 2]

    # Copies of one CNN level made into a pyramid by max pooling.
    necks, channels = build_chain(
        [{"name": "SelectIndices", "indices": [2, 2, 2]}, {"name": "MaxpoolToPyramidal"}],
        resnet18.out_channels,
    )
    out = run_chain(necks, feats, (64, 64))
    assert [x.shape[1] for x in out] == channels == [128, 128, 128]
    assert [tuple(x.shape[2:]) for x in out] == [(8, 8), (4, 4), (2, 2)]
