"""The registries geofm users build from.

Native registries (``GEOFM_*``) accept registrations and import their component modules on
first use. The combined registries (``BACKBONE_REGISTRY``...) search ours first, then the
external model zoos, each reachable by its prefix (``timm_resnet18``, ``smp_Unet``). Each zoo
is one module of :mod:`geofm.models.zoo` that adds its source with ``register_source``; the
combined registries list those modules as ``locations``, so they are imported on the first
lookup and this package imports nothing else of geofm.
"""

from __future__ import annotations

from typing import Any

from geofm.registry.multi_source import MultiSourceRegistry
from geofm.registry.registry import Registry

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

GEOFM_BACKBONE_REGISTRY = Registry("backbone", scope="geofm", locations=["geofm.models.backbones"])
GEOFM_DECODER_REGISTRY = Registry("decoder", scope="geofm", locations=["geofm.models.decoders"])
GEOFM_NECK_REGISTRY = Registry("neck", scope="geofm", locations=["geofm.models.necks"])

# Search order: geofm first, then the zoos in the order of their locations.
BACKBONE_REGISTRY = MultiSourceRegistry(
    "backbone", geofm=GEOFM_BACKBONE_REGISTRY, locations=["geofm.models.zoo.timm", "geofm.models.zoo.torchgeo"]
)
DECODER_REGISTRY = MultiSourceRegistry(
    "decoder",
    geofm=GEOFM_DECODER_REGISTRY,
    locations=["geofm.models.zoo.smp", "geofm.models.zoo.mmseg"],
)
NECK_REGISTRY = MultiSourceRegistry("neck", geofm=GEOFM_NECK_REGISTRY)
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
