"""segmentation_models_pytorch as a decoder zoo: each architecture's decoder, on any backbone.

Registers :class:`SmpDecoderSource` in ``DECODER_REGISTRY`` under the prefix ``smp``
(``smp_Unet``, ``smp_FPN``...). smp itself is imported only when a name is looked up or built.
"""

from __future__ import annotations

import contextlib
import importlib
import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from geofm.registry import DECODER_REGISTRY
from geofm.registry.external import ExternalSource

__all__ = ["SmpDecoder", "SmpDecoderSource"]


class _ChannelsOnlyEncoder(nn.Module):
    """What an smp architecture reads from its encoder while building the decoder.

    smp encoders return ``depth + 1`` feature maps, the first at the input's resolution. We
    stand in for that first level with zero channels (no smp decoder reads its channels).
    """

    def __init__(self, channel_list: list[int], output_stride: int):
        super().__init__()
        self.out_channels = [0, *channel_list]
        self.output_stride = output_stride
        self.output_strides = [2**i for i in range(len(self.out_channels))]
        self.has_prefix_tokens = False
        self.name = "geofm"

    def make_dilated(self, output_stride: int) -> None:
        """Record the coarsest stride the architecture wants (DeepLab asks for 8 or 16).

        A backbone cannot be dilated after the fact, so :class:`SmpDecoder` resizes the deeper
        levels up to this stride instead, which gives the decoder the shapes it was built for.
        """
        self.output_stride = output_stride


@contextlib.contextmanager
def _encoder_replaced(arch_class: type, encoder: nn.Module) -> Iterator[None]:
    # smp architectures call the module-level ``get_encoder`` of their own module; swapping it
    # lets smp build its decoder exactly as it would for one of its encoders.
    module = importlib.import_module(arch_class.__module__)
    original = module.get_encoder

    def get_encoder(
        name: Any = None,
        in_channels: int = 3,
        depth: int = 5,
        weights: Any = None,
        output_stride: int | None = None,
        **unexpected: Any,
    ) -> nn.Module:
        # smp hands the architecture's unknown keywords to its encoder: here they are errors.
        if unexpected:
            raise TypeError(
                f"smp_{arch_class.__name__} got arguments it does not take: {sorted(unexpected)}."
            )
        if output_stride is not None and output_stride < encoder.output_stride:
            encoder.make_dilated(output_stride)
        return encoder

    module.get_encoder = get_encoder
    try:
        yield
    finally:
        module.get_encoder = original


class SmpDecoder(nn.Module):
    """Decoder of the smp architecture ``arch`` built on the channels of ``channel_list``.

    Args:
        channel_list: Channels of the features the decoder receives, finest first. smp's
            encoders give five levels at strides 2..32; backbones with fewer levels should set
            ``encoder_depth`` (and the matching ``decoder_channels``).
        arch: smp architecture class name (``"Unet"``, ``"FPN"``, ``"DeepLabV3Plus"``...).
        **kwargs: The architecture's own arguments (``decoder_channels``,
            ``decoder_use_norm``, ``encoder_depth``...), as in ``smp.<arch>(...)``.

    Attributes:
        out_channels: Channels of the decoder's output.
    """

    def __init__(self, channel_list: list[int], arch: str, **kwargs: Any):
        super().__init__()
        import segmentation_models_pytorch as smp

        arch_class = smp.MODEL_ARCHITECTURES_MAPPING.get(arch.lower())
        if arch_class is None:
            raise KeyError(
                f"Unknown smp architecture '{arch}'; choose from "
                f"{sorted(a.__name__ for a in smp.MODEL_ARCHITECTURES_MAPPING.values())}."
            )
        if not hasattr(importlib.import_module(arch_class.__module__), "get_encoder"):
            raise ValueError(
                f"smp_{arch_class.__name__} builds its own encoder and cannot decode another "
                "backbone's features; choose another smp architecture."
            )
        fixed = sorted({"classes", "encoder_name", "encoder_weights", "in_channels"} & set(kwargs))
        if fixed:
            raise ValueError(f"smp_{arch_class.__name__}: {fixed} are set by geofm, not by the config.")
        depth = kwargs.setdefault("encoder_depth", len(channel_list))
        if depth != len(channel_list):
            raise ValueError(
                f"smp_{arch}: encoder_depth={depth} but the backbone gives "
                f"{len(channel_list)} feature levels ({channel_list})."
            )
        default_channels = _default_decoder_channels(arch_class)
        if isinstance(default_channels, tuple) and len(default_channels) > depth:
            # Unet-like decoders need one channel count per level.
            kwargs.setdefault("decoder_channels", default_channels[:depth])
        encoder = _ChannelsOnlyEncoder(list(channel_list), output_stride=2**depth)
        with _encoder_replaced(arch_class, encoder):
            model = arch_class(encoder_weights=None, classes=1, **kwargs)
        self.arch = arch_class.__name__
        self.decoder = model.decoder
        self.out_channels: int = _first_conv(model.segmentation_head).in_channels
        # Levels deeper than this are resized up to it (see _ChannelsOnlyEncoder.make_dilated).
        self.dilated_levels = max(0, depth - int(math.log2(encoder.output_stride)))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Decode ``features`` (one ``(B, C_i, H_i, W_i)`` per level, finest first).

        Returns:
            ``(B, out_channels, H', W')``; the model resizes it to the input's size.
        """
        if self.dilated_levels:
            keep = len(features) - self.dilated_levels
            size = features[keep - 1].shape[-2:]
            features = features[:keep] + [
                F.interpolate(f, size=size, mode="bilinear", align_corners=False)
                for f in features[keep:]
            ]
        first = features[0]
        # The input-resolution level smp decoders expect: no channels, so no memory.
        placeholder = first.new_empty(first.shape[0], 0, first.shape[-2] * 2, first.shape[-1] * 2)
        return self.decoder([placeholder, *features])


def _default_decoder_channels(arch_class: type) -> Any:
    import inspect

    param = inspect.signature(arch_class.__init__).parameters.get("decoder_channels")
    return None if param is None else param.default


def _first_conv(module: nn.Module) -> nn.Conv2d:
    return next(m for m in module.modules() if isinstance(m, nn.Conv2d))


class SmpDecoderSource(ExternalSource):
    """smp decoders (``DECODER_REGISTRY.build("smp_Unet", [64, 128, 256, 512])``).

    Names are smp's architecture class names (``Unet``, ``FPN``, ``DeepLabV3Plus``...).
    """

    name = "smp decoder"

    def _names(self) -> tuple[str, ...]:
        import segmentation_models_pytorch as smp

        # Architectures tied to one encoder family (DPT builds its own timm ViT) are left out:
        # only those that take their encoder from smp's ``get_encoder`` accept our backbones.
        return tuple(
            arch.__name__
            for arch in smp.MODEL_ARCHITECTURES_MAPPING.values()
            if hasattr(importlib.import_module(arch.__module__), "get_encoder")
        )

    def _build(self, name: str, *args: Any, **kwargs: Any) -> SmpDecoder:
        return SmpDecoder(*args, arch=name, **kwargs)


DECODER_REGISTRY.register_source("smp", SmpDecoderSource())
