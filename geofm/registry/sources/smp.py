"""segmentation_models_pytorch as a decoder source: each architecture's decoder by name."""

from __future__ import annotations

from typing import Any

from geofm.registry.sources.lazy import ExternalSource

__all__ = ["SmpDecoderSource"]


class SmpDecoderSource(ExternalSource):
    """smp decoders (``DECODER_REGISTRY.build("smp_Unet", [64, 128, 256, 512])``).

    Names are smp's architecture class names (``Unet``, ``FPN``, ``DeepLabV3Plus``...).
    """

    name = "smp decoder"

    def _names(self) -> tuple[str, ...]:
        import importlib

        import segmentation_models_pytorch as smp

        # Architectures tied to one encoder family (DPT builds its own timm ViT) are left out:
        # only those that take their encoder from smp's ``get_encoder`` accept our backbones.
        return tuple(
            arch.__name__
            for arch in smp.MODEL_ARCHITECTURES_MAPPING.values()
            if hasattr(importlib.import_module(arch.__module__), "get_encoder")
        )

    def _build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        from geofm.models.decoders.smp_decoder import SmpDecoder

        return SmpDecoder(*args, arch=name, **kwargs)
