"""Registries: named constructors for backbones, necks, decoders and model factories.

A leaf package: it imports nothing else of geofm. Components register themselves where they
are defined; the registries import those modules (``locations``) on first lookup.
"""

from geofm.registry.class_path import import_object
from geofm.registry.errors import MissingDependencyError, UnknownNameError, UnknownScopeError
from geofm.registry.external import ExternalSource
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
from geofm.registry.registry import (
    Registry,
    build_from_cfg,
    current_default_scope,
    default_scope,
    known_scopes,
)

__all__ = [
    "Registry",
    "MultiSourceRegistry",
    "ExternalSource",
    "UnknownNameError",
    "UnknownScopeError",
    "MissingDependencyError",
    "build_from_cfg",
    "default_scope",
    "current_default_scope",
    "known_scopes",
    "import_object",
    "registry_summary",
    "BACKBONE_REGISTRY",
    "DECODER_REGISTRY",
    "NECK_REGISTRY",
    "MODEL_FACTORY_REGISTRY",
    "GEOFM_BACKBONE_REGISTRY",
    "GEOFM_DECODER_REGISTRY",
    "GEOFM_NECK_REGISTRY",
]
