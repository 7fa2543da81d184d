"""Base class of the read-only sources backed by an external library (a model zoo).

The zoo modules themselves live in :mod:`geofm.models.zoo`; this base is generic, so it stays
in the registry package.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

from geofm.registry.errors import UnknownNameError, close_names

__all__ = ["ExternalSource"]


class ExternalSource:
    """A read-only source whose names come from a library imported on first use.

    Subclasses implement :meth:`_names` (all names, computed once), :meth:`_knows`
    (a cheap membership test) and :meth:`_build`.
    """

    #: What the source holds, for error messages ("timm backbone").
    name = "external"

    def __init__(self) -> None:
        self._name_cache: tuple[str, ...] | None = None

    def _names(self) -> tuple[str, ...]:
        raise NotImplementedError

    def _knows(self, name: str) -> bool:
        return name in self.names

    def _build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    @property
    def names(self) -> tuple[str, ...]:
        if self._name_cache is None:
            self._name_cache = tuple(self._names())
        return self._name_cache

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._knows(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def get(self, name: str) -> Callable[..., Any]:
        """A builder for ``name``: calling it is the same as ``build(name, ...)``."""
        if name not in self:
            raise UnknownNameError(name, self.name, close_names(name, self.names))
        return functools.partial(self._build, name)

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.get(name)(*args, **kwargs)

    def register(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"The {self.name} source is read-only; register into a geofm registry.")
