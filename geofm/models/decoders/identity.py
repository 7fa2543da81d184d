"""A decoder that hands one backbone feature straight to the head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from geofm.models.decoders.blocks import as_channel_list, check_features, resolve_index
from geofm.registry import GEOFM_DECODER_REGISTRY

__all__ = ["IdentityDecoder"]


@GEOFM_DECODER_REGISTRY.register
class IdentityDecoder(nn.Module):
    """Return the feature at ``out_index`` unchanged (typical for classification heads).

    Args:
        embed_dim: Channels of each feature received, finest first.
        out_index: Which feature to return; ``-1`` is the last.

    Attributes:
        out_channels: ``embed_dim[out_index]``.
    """

    def __init__(self, embed_dim: Sequence[int], out_index: int = -1):
        super().__init__()
        self.embed_dim = as_channel_list(embed_dim, type(self).__name__)
        self.out_index = resolve_index(out_index, self.embed_dim, "out_index", type(self).__name__)
        self.out_channels: int = self.embed_dim[self.out_index]

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Return ``features[out_index]`` as is: ``(B, out_channels, H, W)`` or ``(B, C)``."""
        check_features(features, self.embed_dim, type(self).__name__)
        return features[self.out_index]
