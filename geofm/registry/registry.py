"""A registry of named constructors, with scopes, a parent chain and lazily imported modules.

A :class:`Registry` maps names to callables (classes or builder functions). It is made as in
TerraTorch, ``Registry(Net=Net, make_net=make_net)``, or as in OpenMMLab, with a name, a
``parent``, a ``scope`` and ``locations``. Registries form a tree: each child has a ``scope``
and is reachable from any registry of the tree as ``"scope.Name"``. An unscoped lookup searches
the registry, then its ancestors. Modules listed in ``locations`` are imported on the first
lookup or iteration, so registering components costs nothing until someone asks for one.

Scopes are never guessed: an unknown scope in ``"scope.Name"``, in a config's ``_scope_`` or in
:func:`default_scope` raises :class:`~geofm.registry.errors.UnknownScopeError`, which lists the
known scopes.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from geofm.registry.errors import UnknownNameError, UnknownScopeError, close_names
from geofm.registry.locations import LazyLocations

__all__ = ["Registry", "default_scope", "current_default_scope", "known_scopes", "build_from_cfg"]

log = logging.getLogger(__name__)

_DEFAULT_SCOPE: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "geofm_default_scope", default=None
)
# Every live registry, so that default_scope() can refuse a scope that none of them has.
_ALL_REGISTRIES: weakref.WeakSet[Registry] = weakref.WeakSet()
# (registry id, scope) pairs already warned about, so the fallback is logged once, not per lookup.
_WARNED_FALLBACKS: set[tuple[int, str]] = set()


def known_scopes() -> list[str]:
    """The scopes of every registry that exists now, sorted."""
    return sorted({reg.scope for reg in list(_ALL_REGISTRIES) if reg.scope})


def default_scope(scope: str | None) -> contextlib.AbstractContextManager[None]:
    """Resolve unscoped names in the registry of ``scope`` (then its ancestors) inside the block.

    A registry tree without ``scope`` resolves names as usual and logs a warning once: a default
    scope usually concerns one kind of component, while a build touches several registries.

    Example:
        >>> with default_scope("mylab"):
        ...     BACKBONE.build("MyNet")  # found in the "mylab" child registry first

    Raises:
        UnknownScopeError: when no registry has ``scope`` (raised by this call, before the
            block).
    """
    if scope is not None and scope not in known_scopes():
        raise UnknownScopeError(scope, "", known_scopes())
    return _scope_block(scope)


@contextlib.contextmanager
def _scope_block(scope: str | None) -> Iterator[None]:
    token = _DEFAULT_SCOPE.set(scope)
    try:
        yield
    finally:
        _DEFAULT_SCOPE.reset(token)


def current_default_scope() -> str | None:
    """The scope set by the innermost :func:`default_scope` block, if any."""
    return _DEFAULT_SCOPE.get()


def _register_usage(got: object) -> str:
    alias = repr(got) if isinstance(got, str) else "'alias'"
    return (
        f"register() takes a callable (a class or a function), got {got!r}. Use it as a "
        f"decorator, @REG.register, and give another name with REG.register(name={alias})(obj)."
    )


class Registry:
    """Named constructors, behaving as a set of names.

    Both ``Registry(a=make_a, B=B)`` (TerraTorch: the keywords are the entries) and
    ``Registry("backbone", parent=..., scope=..., locations=[...])`` (OpenMMLab) work; the
    options are keyword-only, so every other keyword is an entry.

    Args:
        name: What the registry holds ("backbone", "decoder"...), used in error messages.
        parent: Registry whose names this one falls back to.
        scope: Name of this registry in the tree, for ``"scope.Name"`` lookups. Required for
            a child registry.
        locations: Modules imported the first time the registry is searched or iterated,
            where components register themselves.
        **elements: Initial entries, name -> callable. (An entry called ``name``, ``parent``,
            ``scope`` or ``locations`` goes through ``register(name=...)`` instead.)

    Raises:
        TypeError: when an element is not callable or ``name`` is not a string.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        parent: Registry | None = None,
        scope: str | None = None,
        locations: Iterable[str] = (),
        **elements: Callable[..., Any],
    ):
        if name is not None and not isinstance(name, str):
            raise TypeError(
                f"Registry name must be a string, got {name!r}; to add an entry called 'name', "
                "use REG.register(name='name')(obj)."
            )
        name = name or "unnamed"
        if parent is not None and not scope:
            raise ValueError(f"Registry '{name}' has a parent, so it needs a scope.")
        if scope and "." in scope:
            raise ValueError(f"Scope '{scope}' of registry '{name}' must not contain a dot.")
        self.name = name
        self.scope = scope
        self.parent = parent
        self._locations = LazyLocations(locations)
        self.locations = self._locations.modules
        self.children: dict[str, Registry] = {}
        self._entries: dict[str, Callable[..., Any]] = {}
        for key, obj in elements.items():
            if not callable(obj):
                raise TypeError(f"Registry element '{key}' must be callable, got {obj!r}.")
            self._add(obj, key, force=False)
        if parent is not None:
            if scope in parent.children:
                raise KeyError(f"Scope '{scope}' already exists under registry '{parent.name}'.")
            parent.children[scope] = self  # type: ignore[index]
        _ALL_REGISTRIES.add(self)

    # ------------------------------------------------------------------ set behaviour
    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            return self._lookup(name) is not None
        except UnknownScopeError:
            return False  # membership answers; get() and build() explain

    def __iter__(self) -> Iterator[str]:
        self._locations.ensure_imported()
        return iter(list(self._entries))

    def __len__(self) -> int:
        self._locations.ensure_imported()
        return len(self._entries)

    def __getitem__(self, name: str) -> Callable[..., Any]:
        """The constructor registered as ``name``, as in TerraTorch (same as :meth:`get`)."""
        return self.get(name)

    def __repr__(self) -> str:
        scope = f", scope={self.scope!r}" if self.scope else ""
        shown = sorted(self._entries) if self._locations.imported else ["<not imported yet>"]
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

    def _tree(self) -> Iterator[Registry]:
        stack = [self.root]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(node.children.values())

    def find_scope(self, scope: str) -> Registry | None:
        """The registry of the tree (this one's whole tree) whose scope is ``scope``."""
        return next((node for node in self._tree() if node.scope == scope), None)

    def scopes(self) -> list[str]:
        """The scopes of this registry's tree, sorted."""
        return sorted({node.scope for node in self._tree() if node.scope})

    def _ancestry(self) -> Iterator[Registry]:
        node: Registry | None = self
        while node is not None:
            yield node
            node = node.parent

    # ------------------------------------------------------------------ lookup
    def _get_local(self, name: str) -> Callable[..., Any] | None:
        self._locations.ensure_imported()
        return self._entries.get(name)

    def _search(self, name: str) -> Callable[..., Any] | None:
        for node in self._ancestry():
            found = node._get_local(name)
            if found is not None:
                return found
        return None

    def _default_start(self) -> Registry:
        scope = current_default_scope()
        if scope is None or scope == self.scope:
            return self
        found = self.find_scope(scope)
        if found is not None:
            return found
        if scope not in known_scopes():
            raise UnknownScopeError(scope, self.name, self.scopes())
        key = (id(self), scope)
        if key not in _WARNED_FALLBACKS:
            _WARNED_FALLBACKS.add(key)
            log.warning(
                "Default scope '%s' is not a scope of the %s registry tree (scopes: %s); "
                "its names are looked up from '%s'.", scope, self.name, self.scopes(),
                self.scope or self.name,
            )
        return self

    def _lookup(self, name: str) -> Callable[..., Any] | None:
        """The constructor for ``name`` or None; an unknown scope raises UnknownScopeError."""
        if "." in name:
            scope, _, short = name.partition(".")
            scoped = self.find_scope(scope)
            if scoped is None:
                raise UnknownScopeError(scope, self.name, self.scopes(), name=name)
            return scoped._search(short)
        return self._default_start()._search(name)

    def get(self, name: str) -> Callable[..., Any]:
        """The constructor registered as ``name`` (``"scope.Name"`` allowed).

        Raises:
            UnknownNameError: when no registry in the search path knows the name.
            UnknownScopeError: when the scope of ``"scope.Name"`` is not in this tree.
        """
        found = self._lookup(name)
        if found is None:
            known = {n for node in self._ancestry() for n in node}
            raise UnknownNameError(name, self.name, close_names(name.rpartition(".")[2], known))
        return found

    # ------------------------------------------------------------------ registration
    def register(
        self,
        obj: Callable[..., Any] | None = None,
        /,
        *extra: Any,
        name: str | list[str] | tuple[str, ...] | None = None,
        force: bool = False,
        module: Callable[..., Any] | None = None,
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
            REG.register(name="alias_of_d")(D)
            REG.register(name=["e1", "e2"], module=E)  # OpenMMLab's form

        Args:
            obj: The class or function (``@REG.register`` / ``REG.register(obj)``).
            name: Name(s) to register under; the object's ``__name__`` by default.
            force: Replace an entry already registered under the name.
            *extra: Refused: ``register("alias", obj)`` is written ``register(name="alias")(obj)``.
            module: The object, OpenMMLab style (with ``name=``).

        Returns:
            The object when given, otherwise a decorator that registers and returns it.

        Raises:
            TypeError: when the registered object is not callable (a string included: names
                go in ``name=``).
            KeyError: when the name is taken and ``force`` is false.
        """
        if extra or (obj is not None and not callable(obj)):
            # ``register("alias", obj)`` (accepted before) lands here too, with the fix.
            raise TypeError(_register_usage(obj))
        if obj is not None:
            if module is not None:
                raise TypeError("register(obj, module=...) is ambiguous; pass the object once.")
            return self._add(obj, name, force)
        if module is not None:
            return self._add(module, name, force)

        def decorator(target: Callable[..., Any]) -> Callable[..., Any]:
            return self._add(target, name, force)

        return decorator

    def _add(self, obj: Any, name: str | list[str] | tuple[str, ...] | None, force: bool) -> Any:
        if not callable(obj):
            raise TypeError(_register_usage(obj))
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

    ``registry`` is anything with ``name`` and ``get(name)``: a :class:`Registry` or a
    :class:`~geofm.registry.MultiSourceRegistry`. A ``_scope_`` key must be a scope that
    ``registry.scopes()`` lists (every live registry's scopes when it has no ``scopes``); it is
    the default scope while the component is built, so nested builds see it too.

    Raises:
        UnknownScopeError: when ``_scope_`` is not a known scope.
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
    if scope is not None:
        scopes = getattr(registry, "scopes", None)
        known = scopes() if callable(scopes) else known_scopes()
        if scope not in known:
            raise UnknownScopeError(scope, registry.name, known)
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
