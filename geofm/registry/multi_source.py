"""A registry made of several sources, each reached by a name prefix."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

from geofm.registry.errors import MissingDependencyError, UnknownNameError, UnknownScopeError, close_names
from geofm.registry.locations import LazyLocations
from geofm.registry.registry import build_from_cfg

__all__ = ["MultiSourceRegistry", "Source"]


@runtime_checkable
class Source(Protocol):
    """What a source must offer: set behaviour plus ``get`` and ``build``."""

    def __contains__(self, name: object) -> bool: ...
    def __iter__(self) -> Iterator[str]: ...
    def __len__(self) -> int: ...
    def get(self, name: str) -> Callable[..., Any]: ...
    def build(self, name: str, *args: Any, **kwargs: Any) -> Any: ...


class MultiSourceRegistry:
    """Prefix → source mapping that behaves as one set of (prefixed) names.

    ``"timm_resnet18"`` goes straight to the ``timm`` source; ``"resnet18"`` is searched in the
    sources in the order they were added (ours first). Building tries the next source only when
    a source does not know the name: errors raised inside a constructor reach the caller as
    they are.

    Made as in TerraTorch, ``MultiSourceRegistry(geofm=ours, timm=timm_source)``, or with a
    display name first, ``MultiSourceRegistry("backbone", {"geofm": ours})``. Sources that live
    in modules of their own (an external model zoo) are added by those modules with
    :meth:`register_source`; list the modules in ``locations`` and they are imported on first
    use, so the registry knows them without importing them (or their library) up front.

    Args:
        name: What the registry holds, for error messages.
        sources: Prefix → source mapping, searched first, in its order.
        locations: Modules imported on the first lookup, iteration or :meth:`register_source`,
            in this order; each adds its source(s) with :meth:`register_source`.
        **more_sources: Further sources, prefix=source, searched after ``sources``.
    """

    def __init__(
        self,
        name: str | None = None,
        sources: Mapping[str, Source] | None = None,
        *,
        locations: Iterable[str] = (),
        **more_sources: Source,
    ):
        if name is not None and not isinstance(name, str):
            raise TypeError(
                f"MultiSourceRegistry's display name must be a string, got {name!r}; give "
                "sources as keywords (MultiSourceRegistry(timm=..., smp=...)) or as a mapping "
                "after the name."
            )
        self.name = name or "unnamed"
        self._sources: OrderedDict[str, Source] = OrderedDict()
        self._unavailable: dict[str, MissingDependencyError] = {}
        for prefix, source in {**(sources or {}), **more_sources}.items():
            self._add_source(prefix, source)
        # Set after the initial sources so that adding them does not import the locations.
        self._locations = LazyLocations(locations)
        self.locations = self._locations.modules

    # ------------------------------------------------------------------ sources
    def _add_source(self, prefix: str, source: Source) -> None:
        if not isinstance(prefix, str) or not prefix:
            raise TypeError(f"Source prefixes must be non-empty strings, got {prefix!r}.")
        if prefix in self._sources:
            raise KeyError(f"The {self.name} registry already has a source '{prefix}'.")
        if "_" in prefix:
            raise ValueError(f"Source prefix '{prefix}' must not contain '_'.")
        if not (hasattr(source, "__contains__") and callable(getattr(source, "build", None))):
            raise TypeError(
                f"Source '{prefix}' of the {self.name} registry must support `name in source` "
                f"and source.build(name, ...) (a Registry, for instance), got {source!r}."
            )
        self._sources[prefix] = source
        self._unavailable.pop(prefix, None)

    def register_source(self, prefix: str, registry: Source) -> None:
        """Add a source reached by ``prefix + "_"``; it is searched after those already added.

        The ``locations`` are imported first, so their sources keep their place in the search
        order whichever module is imported first.
        """
        self._locations.ensure_imported()
        self._add_source(prefix, registry)

    def register_unavailable_source(self, prefix: str, error: MissingDependencyError) -> None:
        """Reserve ``prefix`` for a source whose package is missing: its names raise ``error``."""
        self._locations.ensure_imported()
        if prefix not in self._sources:
            self._unavailable[prefix] = error

    def keys(self) -> list[str]:
        """The prefixes of the sources, in search order."""
        self._locations.ensure_imported()
        return list(self._sources)

    def items(self) -> list[tuple[str, Source]]:
        """``(prefix, source)`` pairs, in search order."""
        self._locations.ensure_imported()
        return list(self._sources.items())

    def __getitem__(self, prefix: str) -> Source:
        self._locations.ensure_imported()
        try:
            return self._sources[prefix]
        except KeyError:
            raise UnknownNameError(prefix, f"{self.name} sources", list(self._sources)) from None

    def scopes(self) -> list[str]:
        """The scopes of the sources that have some (their registry trees), sorted."""
        found: set[str] = set()
        for source in self._sources.values():
            scopes = getattr(source, "scopes", None)
            if callable(scopes):
                found.update(scopes())
        return sorted(found)

    # ------------------------------------------------------------------ set behaviour
    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.find_registry(name) is not None

    def __iter__(self) -> Iterator[str]:
        for prefix, source in self.items():
            for name in source:
                yield f"{prefix}_{name}"

    def __len__(self) -> int:
        return sum(len(source) for _, source in self.items())

    def __repr__(self) -> str:
        pending = "" if self._locations.imported else f", locations={list(self.locations)}"
        return f"MultiSourceRegistry(name={self.name!r}, sources={list(self._sources)}{pending})"

    # ------------------------------------------------------------------ lookup
    def _split(self, name: str) -> tuple[str | None, str]:
        prefix, sep, rest = name.partition("_")
        if sep and rest:
            if prefix in self._unavailable:
                raise self._unavailable[prefix]
            if prefix in self._sources:
                return prefix, rest
        return None, name

    def _resolve(self, name: str) -> tuple[Source, str] | None:
        self._locations.ensure_imported()
        prefix, short = self._split(name)
        if prefix is not None:
            source = self._sources[prefix]
            return (source, short) if short in source else None
        for source in self._sources.values():
            if name in source:
                return source, name
        return None

    def find_registry(self, name: str) -> Source | None:
        """The source that would build ``name``, or None when no source knows it."""
        try:
            found = self._resolve(name)
        except MissingDependencyError:
            return None  # a missing optional source knows nothing; build() says how to install it
        return None if found is None else found[0]

    def _unknown(self, name: str) -> UnknownNameError:
        prefix, short = self._split(name)
        if prefix is not None:
            known: list[str] = list(self._sources[prefix])
            suggestions = [f"{prefix}_{s}" for s in close_names(short, known)]
        else:
            # Unprefixed names get unprefixed suggestions from every source.
            known = [n for source in self._sources.values() for n in source]
            suggestions = close_names(name, known)
        if "." in short:
            # "lab.MyNet" with no source knowing scope "lab": say which scopes exist.
            scope, _, rest = short.partition(".")
            source = self._sources[prefix] if prefix is not None else self
            scopes = getattr(source, "scopes", None)
            known_scopes = scopes() if callable(scopes) else []
            if scope not in known_scopes:
                near = close_names(rest, known) if rest else []
                if prefix is not None:
                    near = [f"{prefix}_{s}" for s in near]
                return UnknownScopeError(scope, self.name, known_scopes, name=name, suggestions=near or None)
        return UnknownNameError(name, self.name, suggestions)

    def get(self, name: str) -> Callable[..., Any]:
        """The constructor behind ``name`` (prefixed or not)."""
        found = self._resolve(name)
        if found is None:
            raise self._unknown(name)
        source, short = found
        return source.get(short)

    def build(
        self,
        cfg: str | Mapping[str, Any],
        *args: Any,
        default_args: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Build from a (prefixed) name or a config dict with a ``type`` key."""
        if not isinstance(cfg, str):
            return build_from_cfg(cfg, self, *args, default_args=default_args, **kwargs)
        found = self._resolve(cfg)
        if found is None:
            raise self._unknown(cfg)
        source, short = found
        return source.build(short, *args, **{**(default_args or {}), **kwargs})

    def register(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"The {self.name} registry combines read-only sources; register into its native "
            f"source instead (e.g. GEOFM_{self.name.upper()}_REGISTRY.register)."
        )
