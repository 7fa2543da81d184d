"""mmsegmentation as a decoder zoo: its decode heads on any backbone (needs ``geofm[mmseg]``).

Registers :class:`MmsegDecoderSource` in ``DECODER_REGISTRY`` under the prefix ``mmseg`` when
mmsegmentation is installed; otherwise the prefix is reserved, so ``mmseg_UPerHead`` says how
to install it instead of "unknown name". mmseg heads end in their own classifier, so the whole
source has ``includes_head``.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
from torch import nn

from geofm.registry import DECODER_REGISTRY
from geofm.registry.errors import MissingDependencyError
from geofm.registry.external import ExternalSource

__all__ = ["MmsegDecoder", "MmsegDecoderSource", "mmseg_available", "mmseg_missing_error"]


def mmseg_available() -> bool:
    """Whether mmsegmentation can be imported (checked without importing it)."""
    return importlib.util.find_spec("mmseg") is not None


def mmseg_missing_error() -> MissingDependencyError:
    """The error an ``mmseg_`` name raises when mmsegmentation is not installed."""
    return MissingDependencyError("An 'mmseg_' decoder", "mmsegmentation", "mmseg")


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


class MmsegDecoderSource(ExternalSource):
    """mmseg decode heads (``UPerHead``, ``FCNHead``, ``SegformerHead``...) by class name."""

    name = "mmseg decoder"
    includes_head = True

    def _names(self) -> tuple[str, ...]:
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules

        register_all_modules(init_default_scope=False)
        return tuple(name for name in MODELS.module_dict if name.endswith("Head"))

    def _build(self, name: str, *args: Any, **kwargs: Any) -> MmsegDecoder:
        return MmsegDecoder(*args, head=name, **kwargs)


if mmseg_available():
    DECODER_REGISTRY.register_source("mmseg", MmsegDecoderSource())
else:
    DECODER_REGISTRY.register_unavailable_source("mmseg", mmseg_missing_error())
