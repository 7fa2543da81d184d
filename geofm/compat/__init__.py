"""Compatibility with other toolkits' configs and custom modules (TerraTorch).

Light on import: nothing heavy is imported until an alias is looked up.
"""

from geofm.compat.terratorch import (
    TerratorchAliasError,
    activate,
    deactivate,
    resolve_class_path,
    terratorch_aliases,
)

__all__ = ["TerratorchAliasError", "activate", "deactivate", "resolve_class_path", "terratorch_aliases"]
