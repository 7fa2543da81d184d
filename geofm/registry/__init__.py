"""Registries: named constructors for backbones, necks, decoders and model factories."""

from geofm.registry.errors import MissingDependencyError, UnknownNameError
from geofm.registry.multi_source import MultiSourceRegistry
from geofm.registry.registries import (
    BACKBONE_REGISTRY,
    DECODER_REGISTRY,
    GEOFM_BACKBONE_REGISTRY,
    GEOFM_DECODER_REGISTRY,
    GEOFM_NECK_REGISTRY,
    MODEL_FACTORY_REGISTRY,
    NECK_REGISTRY,
    registry_summary,
)
from geofm.registry.registry import Registry, build_from_cfg, current_default_scope, default_scope

__all__ = [
    "Registry",
    "MultiSourceRegistry",
    "UnknownNameError",
    "MissingDependencyError",
    "build_from_cfg",
    "default_scope",
    "current_default_scope",
    "registry_summary",
    "BACKBONE_REGISTRY",
    "DECODER_REGISTRY",
    "NECK_REGISTRY",
    "MODEL_FACTORY_REGISTRY",
    "GEOFM_BACKBONE_REGISTRY",
    "GEOFM_DECODER_REGISTRY",
    "GEOFM_NECK_REGISTRY",
]
