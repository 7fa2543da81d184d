"""Fully convolutional decoder for single-scale (ViT) features."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from geofm.models.decoders.blocks import (
    as_channel_list,
    check_features,
    conv_norm_act,
    positive_int,
    resolve_index,
)
from geofm.registry import GEOFM_DECODER_REGISTRY

__all__ = ["FCNDecoder"]


@GEOFM_DECODER_REGISTRY.register
class FCNDecoder(nn.Module):
    """Upsample one feature x2 per block, ``num_convs`` blocks (x16 with the default 4).

    Each block is a stride-2 ``ConvTranspose2d`` followed by a 3x3 conv, BatchNorm and ReLU.
    Meant for ViT features at 1/16 of the input resolution, which the default brings back to
    full resolution.

    Args:
        embed_dim: Channels of each feature received, finest first.
        channels: Channels of every block.
        num_convs: Number of x2 upsampling blocks.
        in_index: Which feature to decode; ``-1`` is the last.

    Attributes:
        out_channels: ``channels``.
    """

    def __init__(
        self,
        embed_dim: Sequence[int],
        channels: int = 256,
        num_convs: int = 4,
        in_index: int = -1,
    ):
        super().__init__()
        name = type(self).__name__
        self.embed_dim = as_channel_list(embed_dim, name)
        self.in_index = resolve_index(in_index, self.embed_dim, "in_index", name)
        positive_int(channels, "channels", name)
        positive_int(num_convs, "num_convs", name)
        blocks = []
        in_channels = self.embed_dim[self.in_index]
        for _ in range(num_convs):
            blocks.append(
                nn.Sequential(
                    # No bias: the BatchNorm after the following conv would cancel it.
                    nn.ConvTranspose2d(in_channels, channels, kernel_size=2, stride=2, bias=False),
                    conv_norm_act(channels, channels, kernel_size=3),
                )
            )
            in_channels = channels
        self.blocks = nn.Sequential(*blocks)
        self.out_channels: int = channels

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Decode ``features[in_index]`` ``(B, C, H, W)``.

        Returns:
            ``(B, out_channels, H * 2**num_convs, W * 2**num_convs)``.
        """
        check_features(features, self.embed_dim, type(self).__name__)
        return self.blocks(features[self.in_index])
