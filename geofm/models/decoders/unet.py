"""U-Net decoder over a feature pyramid, built on segmentation_models_pytorch's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from geofm.models.decoders.blocks import as_channel_list, check_features, positive_int
from geofm.registry import GEOFM_DECODER_REGISTRY

__all__ = ["UNetDecoder"]


@GEOFM_DECODER_REGISTRY.register
class UNetDecoder(nn.Module):
    """U-Net decoder: from the coarsest feature, upsample x2 and merge each finer skip.

    One block per feature: block ``i`` upsamples to the next finer feature, concatenates it and
    applies two 3x3 conv/norm/ReLU; the last block has no skip left and upsamples once more, so
    the output is at twice the finest feature's resolution (full resolution for a pyramid at
    strides 2..32, as in smp's Unet).

    Args:
        embed_dim: Channels of each feature received, finest first.
        channels: Output channels of each block, coarsest block first; one per feature.
        use_batchnorm: Norm of the blocks, as smp's ``decoder_use_norm`` (``"batchnorm"``,
            ``"layernorm"``, ``"instancenorm"``, ``"identity"``, ``True``/``False`` or a dict).
        attention_type: ``None`` or ``"scse"`` (smp's attention on the skips).

    Attributes:
        out_channels: ``channels[-1]``.
    """

    def __init__(
        self,
        embed_dim: Sequence[int],
        channels: Sequence[int],
        use_batchnorm: bool | str | dict[str, Any] = "batchnorm",
        attention_type: str | None = None,
    ):
        super().__init__()
        from segmentation_models_pytorch.base.initialization import initialize_decoder
        from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder

        name = type(self).__name__
        self.embed_dim = as_channel_list(embed_dim, name)
        channels = list(channels)
        if len(channels) != len(self.embed_dim):
            raise ValueError(
                f"{name}: channels={channels} has {len(channels)} entries but embed_dim="
                f"{self.embed_dim} has {len(self.embed_dim)} features; give one block channel "
                "count per feature, coarsest first."
            )
        for c in channels:
            positive_int(c, "channels entry", name)
        # smp drops its first (input-resolution) level; a zero-channel placeholder takes its
        # place, so every feature we get is used as a skip (see SmpDecoder).
        self.decoder = UnetDecoder(
            encoder_channels=[0, *self.embed_dim],
            decoder_channels=channels,
            n_blocks=len(channels),
            use_norm=use_batchnorm,
            attention_type=attention_type,
        )
        initialize_decoder(self.decoder)
        self.out_channels: int = channels[-1]

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Decode ``features`` (one ``(B, C_i, H_i, W_i)`` per level, finest first).

        Returns:
            ``(B, out_channels, 2 * H_0, 2 * W_0)``.
        """
        check_features(features, self.embed_dim, type(self).__name__)
        first = features[0]
        placeholder = first.new_empty(first.shape[0], 0, first.shape[-2] * 2, first.shape[-1] * 2)
        return self.decoder([placeholder, *features])
