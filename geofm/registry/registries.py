"""The registries geofm users build from.

Native registries (``GEOFM_*``) accept registrations and import their component modules on
first use. The combined registries (``BACKBONE_REGISTRY``...) search ours first, then the
external sources, each reachable by its prefix (``timm_resnet18``, ``smp_Unet``).
"""

from __future__ import annotations

from typing import Any

from geofm.registry.multi_source import MultiSourceRegistry
from geofm.registry.registry import Registry
from geofm.registry.sources.mmseg import (
    MmsegDecoderSource,
    mmseg_available,
    mmseg_missing_error,
)
from geofm.registry.sources.smp import SmpDecoderSource
from geofm.registry.sources.timm import TimmBackboneSource

__all__ = [
    "GEOFM_BACKBONE_REGISTRY",
    "GEOFM_DECODER_REGISTRY",
    "GEOFM_NECK_REGISTRY",
    "BACKBONE_REGISTRY",
    "DECODER_REGISTRY",
    "NECK_REGISTRY",
    "MODEL_FACTORY_REGISTRY",
    "registry_summary",
]

GEOFM_BACKBONE_REGISTRY = Registry(
    "backbone", scope="geofm", locations=["geofm.models.backbones"]
)
GEOFM_DECODER_REGISTRY = Registry("decoder", scope="geofm", locations=["geofm.models.decoders"])
GEOFM_NECK_REGISTRY = Registry("neck", scope="geofm", locations=["geofm.models.necks"])

BACKBONE_REGISTRY = MultiSourceRegistry(
    "backbone", {"geofm": GEOFM_BACKBONE_REGISTRY, "timm": TimmBackboneSource()}
)
DECODER_REGISTRY = MultiSourceRegistry(
    "decoder", {"geofm": GEOFM_DECODER_REGISTRY, "smp": SmpDecoderSource()}
)
if mmseg_available():
    DECODER_REGISTRY.register_source("mmseg", MmsegDecoderSource())
else:
    DECODER_REGISTRY.register_unavailable_source("mmseg", mmseg_missing_error())
NECK_REGISTRY = MultiSourceRegistry("neck", {"geofm": GEOFM_NECK_REGISTRY})
MODEL_FACTORY_REGISTRY = Registry(
    "model factory", scope="geofm", locations=["geofm.models.factories"]
)

_KINDS: dict[str, MultiSourceRegistry | Registry] = {
    "backbone": BACKBONE_REGISTRY,
    "decoder": DECODER_REGISTRY,
    "neck": NECK_REGISTRY,
    "factory": MODEL_FACTORY_REGISTRY,
}


def registry_summary(kinds: list[str] | None = None) -> dict[str, Any]:
    """Every registry, source and entry name, as JSON-able data.

    Args:
        kinds: Subset of ``"backbone"``, ``"decoder"``, ``"neck"``, ``"factory"``; all by default.

    Returns:
        ``{kind: {source prefix: [names, sorted]}}``; a plain registry appears as one
        source named after its scope.
    """
    unknown = sorted(set(kinds or ()) - set(_KINDS))
    if unknown:
        raise KeyError(f"Unknown registry kind(s) {unknown}; choose from {sorted(_KINDS)}.")
    summary: dict[str, Any] = {}
    for kind in kinds or list(_KINDS):
        registry = _KINDS[kind]
        if isinstance(registry, MultiSourceRegistry):
            summary[kind] = {prefix: sorted(source) for prefix, source in registry.items()}
        else:
            summary[kind] = {registry.scope or kind: sorted(registry)}
    return summary
