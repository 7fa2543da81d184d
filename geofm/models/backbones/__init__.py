"""Backbones; each module registers its models in ``GEOFM_BACKBONE_REGISTRY`` when imported."""

from geofm.models.backbones import dofa  # noqa: F401
from geofm.models.backbones import prithvi_swin  # noqa: F401
from geofm.models.backbones import prithvi_vit  # noqa: F401
from geofm.models.backbones import terramind  # noqa: F401
