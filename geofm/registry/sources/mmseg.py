"""mmsegmentation as a decoder source, present only when mmsegmentation imports.

mmseg decode heads end in their own classifier, so the whole source has ``includes_head``.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from geofm.registry.errors import MissingDependencyError
from geofm.registry.sources.lazy import ExternalSource

__all__ = ["MmsegDecoderSource", "mmseg_available", "mmseg_missing_error"]


def mmseg_available() -> bool:
    """Whether mmsegmentation can be imported (checked without importing it)."""
    return importlib.util.find_spec("mmseg") is not None


def mmseg_missing_error() -> MissingDependencyError:
    return MissingDependencyError("An 'mmseg_' decoder", "mmsegmentation", "mmseg")


class MmsegDecoderSource(ExternalSource):
    """mmseg decode heads (``UPerHead``, ``FCNHead``, ``SegformerHead``...) by class name."""

    name = "mmseg decoder"
    includes_head = True

    def _names(self) -> tuple[str, ...]:
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules

        register_all_modules(init_default_scope=False)
        return tuple(name for name in MODELS.module_dict if name.endswith("Head"))

    def _build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        from geofm.models.decoders.mmseg_decoder import MmsegDecoder

        return MmsegDecoder(*args, head=name, **kwargs)
