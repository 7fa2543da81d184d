"""DeepLabV3's atrous spatial pyramid pooling, ending in a segmentation or regression conv."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from geofm.models.decoders.blocks import (
    as_channel_list,
    check_features,
    conv_norm_act,
    positive_int,
    resolve_index,
)
from geofm.registry import GEOFM_DECODER_REGISTRY

__all__ = ["ASPPSegmentationHead", "ASPPRegressionHead"]


class _ASPPHead(nn.Module):
    """ASPP (Chen et al., 2017) on one feature, then dropout and a 1x1 conv to the outputs.

    Branches: a 1x1 conv for dilation 1, a 3x3 atrous conv for every other dilation, and a
    global-pooling branch; their concatenation is fused by a 3x3 conv.
    """

    includes_head = True

    def __init__(
        self,
        embed_dim: Sequence[int],
        num_classes: int,
        dilations: Sequence[int],
        channels: int,
        in_index: int,
        dropout: float,
        align_corners: bool,
    ):
        super().__init__()
        name = type(self).__name__
        self.embed_dim = as_channel_list(embed_dim, name)
        self.in_index = resolve_index(in_index, self.embed_dim, "in_index", name)
        positive_int(num_classes, "num_classes", name)
        positive_int(channels, "channels", name)
        if not dilations:
            raise ValueError(f"{name}: dilations={dilations!r} needs at least one rate.")
        for rate in dilations:
            positive_int(rate, "dilations entry", name)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{name}: dropout={dropout!r} must be in [0, 1).")
        in_channels = self.embed_dim[self.in_index]
        self.align_corners = align_corners
        self.branches = nn.ModuleList(
            conv_norm_act(in_channels, channels, kernel_size=1 if rate == 1 else 3, dilation=rate)
            for rate in dilations
        )
        # One value per channel and sample after global pooling: no BatchNorm there, so that
        # training at batch size 1 works.
        self.image_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), conv_norm_act(in_channels, channels, kernel_size=1, norm=False)
        )
        self.bottleneck = conv_norm_act((len(dilations) + 1) * channels, channels)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)
        self.out_channels: int = num_classes

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Decode ``features[in_index]`` ``(B, C, H, W)``.

        Returns:
            ``(B, num_classes, H, W)``.
        """
        check_features(features, self.embed_dim, type(self).__name__)
        x = features[self.in_index]
        pooled = F.interpolate(
            self.image_pool(x), size=x.shape[-2:], mode="bilinear", align_corners=self.align_corners
        )
        fused = self.bottleneck(torch.cat([pooled, *(branch(x) for branch in self.branches)], 1))
        return self.classifier(self.dropout(fused))


@GEOFM_DECODER_REGISTRY.register
class ASPPSegmentationHead(_ASPPHead):
    """ASPP decoder with a per-pixel classifier (DeepLabV3 head).

    Args:
        embed_dim: Channels of each feature received, finest first.
        num_classes: Number of classes (output channels).
        dilations: Atrous rates of the branches (1 gives a 1x1 conv).
        channels: Channels of each branch and of the fused map.
        in_index: Which feature to decode; ``-1`` is the last.
        dropout: Dropout2d probability before the classifier.
        align_corners: ``align_corners`` of the pooled branch's upsampling.

    Attributes:
        out_channels: ``num_classes``.
    """

    def __init__(
        self,
        embed_dim: Sequence[int],
        num_classes: int,
        dilations: Sequence[int] = (1, 6, 12, 18),
        channels: int = 256,
        in_index: int = -1,
        dropout: float = 0.1,
        align_corners: bool = False,
    ):
        super().__init__(
            embed_dim, num_classes, dilations, channels, in_index, dropout, align_corners
        )


@GEOFM_DECODER_REGISTRY.register
class ASPPRegressionHead(_ASPPHead):
    """ASPP decoder with a per-pixel regression output (one channel by default).

    Args:
        embed_dim: Channels of each feature received, finest first.
        num_classes: Number of regressed values per pixel.
        dilations: Atrous rates of the branches (1 gives a 1x1 conv).
        channels: Channels of each branch and of the fused map.
        in_index: Which feature to decode; ``-1`` is the last.
        dropout: Dropout2d probability before the output conv.
        align_corners: ``align_corners`` of the pooled branch's upsampling.

    Attributes:
        out_channels: ``num_classes``.
    """

    def __init__(
        self,
        embed_dim: Sequence[int],
        num_classes: int = 1,
        dilations: Sequence[int] = (1, 6, 12, 18),
        channels: int = 256,
        in_index: int = -1,
        dropout: float = 0.1,
        align_corners: bool = False,
    ):
        super().__init__(
            embed_dim, num_classes, dilations, channels, in_index, dropout, align_corners
        )
