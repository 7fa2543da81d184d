"""PEP 562 lazy re-exports, so that importing a package does not import its heavy modules.

Example, in a package's ``__init__.py``::

    _LAZY = {"SemanticSegmentationTask": "geofm.tasks.segmentation"}
    __all__ = list(_LAZY)
    __getattr__, __dir__ = lazy_exports(globals(), _LAZY)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    namespace: dict[str, Any], exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module-level ``__getattr__`` and ``__dir__`` that import each public name on first use.

    Args:
        namespace: The package's ``globals()``; a name, once imported, is stored there, so
            later accesses skip ``__getattr__``.
        exports: Public name -> the module that defines it.

    Returns:
        ``(__getattr__, __dir__)``; ``__dir__`` lists the package's ``__all__`` (``exports``
        when it has none).
    """
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:  # noqa: N807 (the PEP 562 hook)
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:  # noqa: N807 (the PEP 562 hook)
        return sorted(namespace.get("__all__", exports))

    return __getattr__, __dir__
