"""A registry of named constructors, with scopes, a parent chain and lazily imported modules.

A :class:`Registry` maps names to callables (classes or builder functions). Registries form a
tree: each child has a ``scope`` and is reachable from any registry of the tree as
``"scope.Name"``. An unscoped lookup searches the registry, then its ancestors. Modules listed
in ``locations`` are imported on the first lookup or iteration, so registering components costs
nothing until someone asks for one.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from geofm.registry.errors import UnknownNameError, close_names

__all__ = ["Registry", "default_scope", "current_default_scope", "build_from_cfg"]

_DEFAULT_SCOPE: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "geofm_default_scope", default=None
)


@contextlib.contextmanager
def default_scope(scope: str | None) -> Iterator[None]:
    """Resolve unscoped names in the registry of ``scope`` (then its ancestors) inside the block.

    Example:
        >>> with default_scope("mylab"):
        ...     BACKBONE.build("MyNet")  # found in the "mylab" child registry first
    """
    token = _DEFAULT_SCOPE.set(scope)
    try:
        yield
    finally:
        _DEFAULT_SCOPE.reset(token)


def current_default_scope() -> str | None:
    """The scope set by the innermost :func:`default_scope` block, if any."""
    return _DEFAULT_SCOPE.get()


class Registry:
    """Named constructors, behaving as a set of names.

    Args:
        name: What the registry holds ("backbone", "decoder"...), used in error messages.
        parent: Registry whose names this one falls back to.
        scope: Name of this registry in the tree, for ``"scope.Name"`` lookups. Required for
            a child registry.
        locations: Modules imported the first time the registry is searched or iterated,
            where components register themselves.
    """

    def __init__(
        self,
        name: str,
        parent: Registry | None = None,
        scope: str | None = None,
        locations: list[str] | tuple[str, ...] = (),
    ):
        if parent is not None and not scope:
            raise ValueError(f"Registry '{name}' has a parent, so it needs a scope.")
        if scope and "." in scope:
            raise ValueError(f"Scope '{scope}' of registry '{name}' must not contain a dot.")
        self.name = name
        self.scope = scope
        self.parent = parent
        self.locations = tuple(locations)
        self.children: dict[str, Registry] = {}
        self._entries: dict[str, Callable[..., Any]] = {}
        self._imported = not self.locations
        self._importing = False
        self._import_lock = threading.RLock()
        if parent is not None:
            if scope in parent.children:
                raise KeyError(f"Scope '{scope}' already exists under registry '{parent.name}'.")
            parent.children[scope] = self

    # ------------------------------------------------------------------ set behaviour
    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return self._lookup(name) is not None

    def __iter__(self) -> Iterator[str]:
        self._import_locations()
        return iter(list(self._entries))

    def __len__(self) -> int:
        self._import_locations()
        return len(self._entries)

    def __repr__(self) -> str:
        scope = f", scope={self.scope!r}" if self.scope else ""
        shown = sorted(self._entries) if self._imported else ["<not imported yet>"]
        return f"Registry(name={self.name!r}{scope}, entries={shown})"

    def keys(self) -> list[str]:
        """Names registered here (not in ancestors)."""
        return list(self)

    # ------------------------------------------------------------------ tree
    @property
    def root(self) -> Registry:
        node = self
        while node.parent is not None:
            node = node.parent
        return node

    def find_scope(self, scope: str) -> Registry | None:
        """The registry of the tree (this one's whole tree) whose scope is ``scope``."""
        stack = [self.root]
        while stack:
            node = stack.pop()
            if node.scope == scope:
                return node
            stack.extend(node.children.values())
        return None

    def _ancestry(self) -> Iterator[Registry]:
        node: Registry | None = self
        while node is not None:
            yield node
            node = node.parent

    # ------------------------------------------------------------------ lookup
    def _import_locations(self) -> None:
        if self._imported:
            return
        with self._import_lock:
            # Other threads wait on the lock; a location that looks names up while it is being
            # imported (same thread) sees what is registered so far instead of recursing.
            if self._imported or self._importing:
                return
            self._importing = True
            try:
                for module in self.locations:
                    importlib.import_module(module)
                self._imported = True
            finally:
                self._importing = False

    def _get_local(self, name: str) -> Callable[..., Any] | None:
        self._import_locations()
        return self._entries.get(name)

    def _lookup(self, name: str) -> Callable[..., Any] | None:
        if "." in name:
            scope, _, short = name.partition(".")
            scoped = self.find_scope(scope)
            if scoped is not None:
                for node in scoped._ancestry():
                    found = node._get_local(short)
                    if found is not None:
                        return found
                return None
        start: Registry = self
        scope = current_default_scope()
        if scope is not None and scope != self.scope:
            start = self.find_scope(scope) or self
        for node in start._ancestry():
            found = node._get_local(name)
            if found is not None:
                return found
        return None

    def get(self, name: str) -> Callable[..., Any]:
        """The constructor registered as ``name`` (``"scope.Name"`` allowed).

        Raises:
            UnknownNameError: when no registry in the search path knows the name.
        """
        found = self._lookup(name)
        if found is None:
            known = {n for node in self._ancestry() for n in node}
            raise UnknownNameError(name, self.name, close_names(name.rpartition(".")[2], known))
        return found

    # ------------------------------------------------------------------ registration
    def register(
        self,
        name: str | list[str] | Callable[..., Any] | None = None,
        module: Callable[..., Any] | None = None,
        force: bool = False,
    ) -> Any:
        """Register a callable, as a decorator or a plain call.

        All of these work::

            @REG.register
            class A: ...

            @REG.register()
            class B: ...

            @REG.register(name="alias", force=True)
            class C: ...

            REG.register(D)
            REG.register("alias_of_d", D)

        Raises:
            TypeError: when the registered object is not callable.
            KeyError: when the name is taken and ``force`` is false.
        """
        if name is not None and not isinstance(name, (str, list, tuple)):
            # ``@REG.register`` or ``REG.register(obj)``: the first argument is the object.
            if module is not None:
                raise TypeError("register(obj, module=...) is ambiguous; pass name= as a str.")
            return self._add(name, None, force)
        if module is not None:
            return self._add(module, name, force)

        def decorator(obj: Callable[..., Any]) -> Callable[..., Any]:
            return self._add(obj, name, force)

        return decorator

    def _add(self, obj: Any, name: str | list[str] | tuple[str, ...] | None, force: bool) -> Any:
        if not callable(obj):
            raise TypeError(f"Only callables can be registered in '{self.name}', got {obj!r}.")
        names = [obj.__name__] if name is None else [name] if isinstance(name, str) else list(name)
        for key in names:
            if not isinstance(key, str) or not key:
                raise TypeError(f"Registry names must be non-empty strings, got {key!r}.")
            if not force and key in self._entries and self._entries[key] is not obj:
                raise KeyError(
                    f"'{key}' is already registered in '{self.name}' "
                    f"(by {self._entries[key]!r}); pass force=True to replace it."
                )
            self._entries[key] = obj
        return obj

    # ------------------------------------------------------------------ building
    def build(
        self,
        cfg: str | Mapping[str, Any],
        *args: Any,
        default_args: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Build a component from a name or a config dict.

        Args:
            cfg: A registered name, or a dict with a ``type`` key (a name or a callable),
                an optional ``_scope_`` key and the constructor's keyword arguments.
            *args: Positional arguments for the constructor.
            default_args: Keyword arguments used where ``cfg`` does not set them.
            **kwargs: Keyword arguments for the constructor.
        """
        if isinstance(cfg, str):
            return self.get(cfg)(*args, **{**(default_args or {}), **kwargs})
        return build_from_cfg(cfg, self, *args, default_args=default_args, **kwargs)


def build_from_cfg(
    cfg: Mapping[str, Any],
    registry: Any,
    *args: Any,
    default_args: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> Any:
    """Build ``cfg["type"]`` from ``registry`` with the other keys as keyword arguments.

    ``registry`` is anything with ``get(name)``: a :class:`Registry` or a
    :class:`~geofm.registry.MultiSourceRegistry`.
    """
    if not isinstance(cfg, Mapping):
        raise TypeError(f"A config to build must be a name or a dict, got {type(cfg).__name__}.")
    params = dict(cfg)
    scope = params.pop("_scope_", None)
    if "type" not in params:
        raise KeyError(
            f"A config dict for the {registry.name} registry needs a 'type' key; got keys "
            f"{sorted(params)}."
        )
    obj_type = params.pop("type")
    for key, value in (default_args or {}).items():
        params.setdefault(key, value)
    params.update(kwargs)
    with default_scope(scope) if scope is not None else contextlib.nullcontext():
        if isinstance(obj_type, str):
            constructor = registry.get(obj_type)
        elif callable(obj_type):
            constructor = obj_type
        else:
            raise TypeError(f"'type' must be a name or a callable, got {obj_type!r}.")
        return constructor(*args, **params)
