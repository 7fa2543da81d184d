"""Model components: backbones, necks, decoders, heads, and the models that compose them.

Light on import: the public names below load their modules on first access (PEP 562), so
``import geofm.models`` (and the zoo modules under it) import neither torch models nor timm.
As in TerraTorch: ``from geofm.models import EncoderDecoderFactory, PixelWiseModel``.
"""

from __future__ import annotations

from geofm._lazy import lazy_exports

# public name -> module that defines it
_LAZY: dict[str, str] = {
    "EncoderDecoderFactory": "geofm.models.factories.encoder_decoder",
    "PixelWiseModel": "geofm.models.pixel_wise_model",
    "ScalarOutputModel": "geofm.models.scalar_output_model",
    "Model": "geofm.models.model",
    "ModelOutput": "geofm.models.model",
    "AuxiliaryHead": "geofm.models.model",
    "PrithviMAE": "geofm.models.mae.model",
    "PrithviMAEFactory": "geofm.models.factories.mae",
}

__all__ = list(_LAZY)

__getattr__, __dir__ = lazy_exports(globals(), _LAZY)
