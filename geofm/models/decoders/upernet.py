"""UperNet: pyramid pooling on the coarsest feature, FPN over all, fused at the finest level."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from geofm.models.decoders.blocks import (
    AdaptiveAvgPool2d,
    as_channel_list,
    check_features,
    conv_norm_act,
    positive_int,
)
from geofm.registry import GEOFM_DECODER_REGISTRY

__all__ = ["UperNetDecoder"]

log = logging.getLogger(__name__)


class _PyramidPooling(nn.Module):
    """PSPNet's pooling pyramid: the input plus ``len(pool_scales)`` pooled, upsampled branches,
    fused by a 3x3 conv.

    Args:
        in_channels: Channels of the input.
        channels: Channels of each branch and of the output.
        pool_scales: Output size of each adaptive average pooling.
        align_corners: ``align_corners`` of the bilinear upsampling.
    """

    def __init__(
        self, in_channels: int, channels: int, pool_scales: Sequence[int], align_corners: bool
    ):
        super().__init__()
        self.align_corners = align_corners
        self.branches = nn.ModuleList(
            nn.Sequential(
                AdaptiveAvgPool2d(scale),
                # A 1x1 pooled map has one value per channel and sample: BatchNorm there breaks
                # training at batch size 1, so that branch goes without it.
                conv_norm_act(in_channels, channels, kernel_size=1, norm=scale > 1),
            )
            for scale in pool_scales
        )
        self.bottleneck = conv_norm_act(in_channels + len(pool_scales) * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W)`` to ``(B, channels, H, W)``."""
        size = x.shape[-2:]
        pooled = [
            F.interpolate(branch(x), size=size, mode="bilinear", align_corners=self.align_corners)
            for branch in self.branches
        ]
        return self.bottleneck(torch.cat([x, *pooled], dim=1))


def _rescale_modules(embed_dim: list[int]) -> tuple[nn.ModuleList, list[int]]:
    """Modules that turn 4 same-size ViT features into a x4, x2, x1, x0.5 pyramid.

    Each x2 step halves the channels (as ViTDet/BEiT do), which keeps the finest maps cheap.

    Returns:
        The 4 modules and the channels of the pyramid they produce.
    """
    c0, c1, c2, c3 = embed_dim
    half0, quarter0, half1 = max(1, c0 // 2), max(1, c0 // 4), max(1, c1 // 2)
    modules = nn.ModuleList(
        [
            nn.Sequential(
                nn.ConvTranspose2d(c0, half0, kernel_size=2, stride=2),
                nn.BatchNorm2d(half0),
                nn.GELU(),
                nn.ConvTranspose2d(half0, quarter0, kernel_size=2, stride=2),
            ),
            nn.ConvTranspose2d(c1, half1, kernel_size=2, stride=2),
            nn.Identity(),
            nn.MaxPool2d(kernel_size=2, stride=2),
        ]
    )
    return modules, [quarter0, half1, c2, c3]


@GEOFM_DECODER_REGISTRY.register
class UperNetDecoder(nn.Module):
    """UperNet decoder (Xiao et al., 2018): PPM on the last feature, FPN top-down over all.

    Every level is projected to ``channels``, merged top-down, smoothed by a 3x3 conv, resized
    to the finest level and fused by a 3x3 conv.

    Args:
        embed_dim: Channels of each feature received, finest first.
        pool_scales: Output sizes of the pyramid pooling branches.
        channels: Channels inside the decoder and of its output.
        align_corners: ``align_corners`` of every bilinear resize.
        scale_modules: First turn 4 same-size (ViT) features into a pyramid at x4, x2, x1 and
            x0.5 of their resolution (learned upsampling, identity, max pooling).

    Attributes:
        out_channels: ``channels``.
    """

    def __init__(
        self,
        embed_dim: Sequence[int],
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        channels: int = 256,
        align_corners: bool = True,
        scale_modules: bool = False,
    ):
        super().__init__()
        name = type(self).__name__
        self.embed_dim = as_channel_list(embed_dim, name)
        positive_int(channels, "channels", name)
        if not pool_scales:
            raise ValueError(f"{name}: pool_scales={pool_scales!r} needs at least one scale.")
        for scale in pool_scales:
            positive_int(scale, "pool_scales entry", name)
        self.align_corners = align_corners
        pyramid_channels = self.embed_dim
        self.rescale: nn.ModuleList | None = None
        if scale_modules:
            if len(self.embed_dim) != 4:
                raise ValueError(
                    f"{name}: scale_modules=True rescales exactly 4 features, but "
                    f"embed_dim={self.embed_dim} has {len(self.embed_dim)}; select 4 backbone "
                    "layers (out_indices) or set scale_modules=False."
                )
            self.rescale, pyramid_channels = _rescale_modules(self.embed_dim)
            log.debug("%s: scale_modules turn %s into %s", name, self.embed_dim, pyramid_channels)
        self.ppm = _PyramidPooling(pyramid_channels[-1], channels, pool_scales, align_corners)
        self.lateral_convs = nn.ModuleList(
            conv_norm_act(c, channels, kernel_size=1) for c in pyramid_channels[:-1]
        )
        self.fpn_convs = nn.ModuleList(
            conv_norm_act(channels, channels) for _ in pyramid_channels[:-1]
        )
        self.fpn_bottleneck = conv_norm_act(len(pyramid_channels) * channels, channels)
        self.out_channels: int = channels

    def _resize(self, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        if x.shape[-2:] == size:
            return x
        return F.interpolate(x, size=size, mode="bilinear", align_corners=self.align_corners)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Decode ``features`` (one ``(B, C_i, H_i, W_i)`` per level, finest first).

        Returns:
            ``(B, out_channels, H_0, W_0)`` at the finest level's resolution (4x the input
            features' with ``scale_modules``).
        """
        check_features(features, self.embed_dim, type(self).__name__)
        if self.rescale is not None:
            features = [module(f) for module, f in zip(self.rescale, features, strict=True)]
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, features, strict=False)]
        laterals.append(self.ppm(features[-1]))
        # Top-down pathway: each level receives the (upsampled) sum of those above it.
        for i in range(len(laterals) - 1, 0, -1):
            above = self._resize(laterals[i], laterals[i - 1].shape[-2:])
            laterals[i - 1] = laterals[i - 1] + above
        outs = [conv(lat) for conv, lat in zip(self.fpn_convs, laterals, strict=False)]
        outs.append(laterals[-1])
        size = outs[0].shape[-2:]
        return self.fpn_bottleneck(torch.cat([self._resize(o, size) for o in outs], dim=1))
