"""Per-pixel MLP decoder, for feature maps and for pooled (classification) features."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from geofm.models.decoders.blocks import (
    activation_layer,
    as_channel_list,
    check_features,
    positive_int,
    resolve_index,
)
from geofm.registry import GEOFM_DECODER_REGISTRY

__all__ = ["MLPDecoder"]


@GEOFM_DECODER_REGISTRY.register
class MLPDecoder(nn.Module):
    """Two-layer MLP (linear, activation, linear, activation) applied to every pixel.

    On a ``(B, C, H, W)`` map this is a pair of 1x1 convs; on a ``(B, C)`` vector (features
    already pooled for classification) it is a plain MLP.

    Args:
        embed_dim: Channels of each feature received, finest first.
        channels: Hidden width.
        out_dim: Output channels.
        activation: Name of a ``torch.nn`` activation (``"ReLU"``, ``"GELU"``, ``"SiLU"``...).
        out_index: Which feature to decode; ``-1`` is the last.

    Attributes:
        out_channels: ``out_dim``.
    """

    def __init__(
        self,
        embed_dim: Sequence[int],
        channels: int = 100,
        out_dim: int = 100,
        activation: str = "ReLU",
        out_index: int = -1,
    ):
        super().__init__()
        name = type(self).__name__
        self.embed_dim = as_channel_list(embed_dim, name)
        self.out_index = resolve_index(out_index, self.embed_dim, "out_index", name)
        positive_int(channels, "channels", name)
        positive_int(out_dim, "out_dim", name)
        act = activation_layer(activation, name)
        self.mlp = nn.Sequential(
            nn.Linear(self.embed_dim[self.out_index], channels),
            act(),
            nn.Linear(channels, out_dim),
            act(),
        )
        self.out_channels: int = out_dim

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Decode ``features[out_index]``, ``(B, C, H, W)`` or ``(B, C)``.

        Returns:
            ``(B, out_channels, H, W)`` or ``(B, out_channels)``, following the input.

        Raises:
            ValueError: when the feature is neither 2-D nor 4-D.
        """
        check_features(features, self.embed_dim, type(self).__name__)
        x = features[self.out_index]
        if x.ndim == 2:
            return self.mlp(x)
        if x.ndim == 4:
            # Linear layers act on the last dimension: move channels there and back.
            return self.mlp(x.movedim(1, -1)).movedim(-1, 1)
        raise ValueError(
            f"{type(self).__name__} takes (B, C, H, W) or (B, C) features; got shape "
            f"{tuple(x.shape)}."
        )
