"""An mmsegmentation decode head on any backbone's features (needs ``geofm[mmseg]``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["MmsegDecoder"]


class MmsegDecoder(nn.Module):
    """mmseg's decode head ``head`` (``UPerHead``, ``FCNHead``, ``SegformerHead``...).

    mmseg heads end in their own classifier, so this decoder includes the head.

    Args:
        channel_list: Channels of the features, finest first.
        head: Name of the head in mmseg's ``MODELS`` registry.
        num_classes: Output channels (classes; 1 for regression).
        channels: Width of the head's inner layers.
        in_index: Which features the head reads (all by default).
        **kwargs: Other arguments of the mmseg head (``pool_scales``, ``dropout_ratio``...).
    """

    includes_head = True

    def __init__(
        self,
        channel_list: list[int],
        head: str,
        num_classes: int,
        channels: int = 256,
        in_index: int | list[int] | None = None,
        **kwargs: Any,
    ):
        super().__init__()
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules

        register_all_modules(init_default_scope=False)
        if in_index is None:
            in_index = list(range(len(channel_list)))
        in_channels = [channel_list[i] for i in in_index] if isinstance(in_index, list) else channel_list[in_index]
        config = {
            "type": head,
            "in_channels": in_channels,
            "in_index": in_index,
            "channels": channels,
            "num_classes": num_classes,
            **kwargs,
        }
        if isinstance(in_index, list) and "input_transform" not in kwargs and head not in ("UPerHead", "SegformerHead"):
            config["input_transform"] = "resize_concat"
        self.head = MODELS.build(config)
        self.out_channels = num_classes

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Logits ``(B, num_classes, H', W')`` from ``features``."""
        return self.head(list(features))
