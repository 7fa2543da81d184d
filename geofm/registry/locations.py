"""Modules imported on first use, where components register themselves."""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Iterable

__all__ = ["LazyLocations"]


class LazyLocations:
    """Module names imported together, once, the first time a registry needs its contents.

    A failed import is raised again on every call (not turned into a misleading "unknown name"
    the second time); modules already imported are not re-run.

    Args:
        modules: Dotted module names, imported in this order.
    """

    def __init__(self, modules: Iterable[str] = ()):
        self.modules = tuple(modules)
        for module in self.modules:
            if not isinstance(module, str) or not module:
                raise TypeError(f"locations must be module names (str), got {module!r}.")
        self._imported = not self.modules
        self._importing = False
        self._lock = threading.RLock()

    @property
    def imported(self) -> bool:
        """Whether every module has been imported."""
        return self._imported

    def ensure_imported(self) -> None:
        """Import the modules unless done already (or under way in this thread)."""
        if self._imported:
            return
        with self._lock:
            # Other threads wait on the lock; a module that uses the registry while it is being
            # imported (same thread) sees what is registered so far instead of recursing.
            if self._imported or self._importing:
                return
            self._importing = True
            try:
                for module in self.modules:
                    if _initializing(module):
                        # That module is registering itself right now (it was imported
                        # directly): the ones after it load on the next call, so sources keep
                        # the order of ``modules``.
                        return
                    importlib.import_module(module)
                self._imported = True
            finally:
                self._importing = False

    def __repr__(self) -> str:
        return f"LazyLocations({list(self.modules)}, imported={self._imported})"


def _initializing(module: str) -> bool:
    """Whether ``module`` is part-way through its import."""
    spec = getattr(sys.modules.get(module), "__spec__", None)
    return bool(getattr(spec, "_initializing", False))
