"""timm as a backbone source: every timm architecture, built features-only."""

from __future__ import annotations

from typing import Any

from geofm.registry.sources.lazy import ExternalSource

__all__ = ["TimmBackboneSource"]


class TimmBackboneSource(ExternalSource):
    """timm models as backbones (``BACKBONE_REGISTRY.build("timm_resnet18", in_chans=6)``).

    Membership asks timm's own registry (a dict lookup); the full name list is computed once,
    only when someone iterates.
    """

    name = "timm backbone"

    def _names(self) -> tuple[str, ...]:
        import timm

        return tuple(timm.list_models())

    def _knows(self, name: str) -> bool:
        import timm

        return timm.is_model(name)

    def _build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        from geofm.models.backbones.timm_backbone import TimmBackbone

        return TimmBackbone(name, *args, **kwargs)
