"""Linear decoder: a per-pixel linear classifier with learned or bilinear upsampling."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from geofm.models.decoders.blocks import (
    as_channel_list,
    check_features,
    positive_int,
    resolve_index,
)
from geofm.registry import GEOFM_DECODER_REGISTRY

__all__ = ["LinearDecoder"]

_MODES = ("pixel_shuffle", "bilinear")


@GEOFM_DECODER_REGISTRY.register
class LinearDecoder(nn.Module):
    """1x1 conv to ``num_classes`` and upsampling by ``upsampling_size`` (a linear probe).

    With ``mode="pixel_shuffle"`` the 1x1 conv gives ``num_classes * upsampling_size**2``
    channels that ``PixelShuffle`` rearranges: each input pixel gets its own learned
    ``upsampling_size x upsampling_size`` patch of logits (the same map as a transposed conv
    with kernel = stride = ``upsampling_size``). ``mode="bilinear"`` interpolates the logits.

    Args:
        embed_dim: Channels of each feature received, finest first.
        num_classes: Output channels (1 for regression).
        upsampling_size: Upsampling factor.
        in_index: Which feature to decode; ``-1`` is the last.
        mode: ``"pixel_shuffle"`` (learned) or ``"bilinear"``.

    Attributes:
        out_channels: ``num_classes``.
    """

    includes_head = True

    def __init__(
        self,
        embed_dim: Sequence[int],
        num_classes: int,
        upsampling_size: int = 8,
        in_index: int = -1,
        mode: Literal["pixel_shuffle", "bilinear"] = "pixel_shuffle",
    ):
        super().__init__()
        name = type(self).__name__
        self.embed_dim = as_channel_list(embed_dim, name)
        self.in_index = resolve_index(in_index, self.embed_dim, "in_index", name)
        positive_int(num_classes, "num_classes", name)
        self.upsampling_size = positive_int(upsampling_size, "upsampling_size", name)
        if mode not in _MODES:
            raise ValueError(f"{name}: unknown mode={mode!r}; choose from {list(_MODES)}.")
        self.mode = mode
        factor = upsampling_size**2 if mode == "pixel_shuffle" else 1
        self.conv = nn.Conv2d(self.embed_dim[self.in_index], num_classes * factor, kernel_size=1)
        self.shuffle = nn.PixelShuffle(upsampling_size) if mode == "pixel_shuffle" else None
        self.out_channels: int = num_classes

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Decode ``features[in_index]`` ``(B, C, H, W)``.

        Returns:
            ``(B, num_classes, H * upsampling_size, W * upsampling_size)``.
        """
        check_features(features, self.embed_dim, type(self).__name__)
        x = self.conv(features[self.in_index])
        if self.shuffle is not None:
            return self.shuffle(x)
        if self.upsampling_size == 1:
            return x
        return F.interpolate(
            x, scale_factor=self.upsampling_size, mode="bilinear", align_corners=False
        )
