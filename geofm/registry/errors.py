"""Errors raised by registries."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable
from typing import Any

__all__ = ["UnknownNameError", "UnknownScopeError", "MissingDependencyError", "close_names"]


def close_names(name: str, known: Iterable[str], n: int = 5) -> list[str]:
    """Up to ``n`` names of ``known`` that look like ``name``, closest first.

    Case is ignored when comparing (``"Relu"`` finds ``"ReLU"``); exact matches come first.
    """
    by_lower: dict[str, list[str]] = {}
    for candidate in known:
        by_lower.setdefault(candidate.lower(), []).append(candidate)
    matches = difflib.get_close_matches(name.lower(), list(by_lower), n=n, cutoff=0.6)
    return [original for match in matches for original in by_lower[match]][:n]


class UnknownNameError(KeyError):
    """A name that no registry in the search path knows.

    A ``KeyError`` so that ``except KeyError`` keeps working, with a readable message
    (``KeyError`` would otherwise print its argument quoted).
    """

    def __init__(self, name: str, registry: str, suggestions: list[str] | None = None):
        self.name = name
        self.registry = registry
        self.suggestions = list(suggestions or [])
        super().__init__(name)

    def __str__(self) -> str:
        msg = f"'{self.name}' is not in the {self.registry} registry."
        if self.suggestions:
            msg += " Did you mean: " + ", ".join(repr(s) for s in self.suggestions) + "?"
        return msg


class UnknownScopeError(UnknownNameError):
    """A scope (``_scope_``, ``default_scope(...)``, ``"scope.Name"``) that no registry has.

    An :class:`UnknownNameError` (so a ``KeyError``): a scoped name with an unknown scope is an
    unknown name too. The message lists the scopes that would work.

    Args:
        scope: The scope the user wrote.
        registry: The registry (tree) searched; empty when every registry was searched.
        known: The scopes that exist there.
        name: The full name the scope came from (``"lab.MyNet"``), if any.
    """

    def __init__(
        self,
        scope: str,
        registry: str,
        known: Iterable[str],
        name: str | None = None,
        suggestions: list[str] | None = None,
    ):
        self.scope = scope
        self.known = sorted(known)
        self.full_name = name
        if suggestions is None:
            suggestions = close_names(scope, self.known, n=3)
        super().__init__(name or scope, registry, suggestions)

    def __str__(self) -> str:
        where = f"the {self.registry} registry tree" if self.registry else "any registry"
        if self.full_name:
            subject = f"'{self.full_name}' names scope '{self.scope}', which"
        else:
            subject = f"'{self.scope}'"
        known = ", ".join(repr(s) for s in self.known) or "none"
        msg = f"{subject} is not a scope of {where}; known scopes: {known}."
        if self.suggestions:
            msg += " Did you mean: " + ", ".join(repr(s) for s in self.suggestions) + "?"
        return msg


class MissingDependencyError(ImportError):
    """An optional dependency that a requested component needs is not installed."""

    def __init__(self, what: str, package: str, extra: str):
        self.package = package
        super().__init__(
            f"{what} needs the optional package '{package}', which is not installed. "
            f"Install it with: pip install 'geofm[{extra}]'"
        )


def import_optional(what: str, extra: str, *modules: str) -> tuple[Any, ...]:
    """Import ``modules`` of an optional extra, in order.

    Raises:
        MissingDependencyError: naming ``what`` needs them, the missing package and
            ``pip install 'geofm[<extra>]'``.
    """
    try:
        return tuple(importlib.import_module(name) for name in modules)
    except ImportError as err:
        raise MissingDependencyError(what, err.name or modules[0], extra) from err
