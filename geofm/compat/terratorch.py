"""TerraTorch class paths and imports, read as geofm's while geofm's command runs.

A TerraTorch config names classes by TerraTorch's module paths
(``terratorch.tasks.SemanticSegmentationTask``, ``terratorch.datamodules.Generic...``), and a
TerraTorch custom module registers its components with ``from terratorch.registry import
TERRATORCH_BACKBONE_REGISTRY``. Both reach Python's import system (jsonargparse imports a
``class_path`` with ``__import__``), so the one place to map them is an import hook: while
:func:`terratorch_aliases` is active, a meta-path finder answers ``import terratorch...`` with
alias modules whose attributes are geofm's objects. The same hook maps the module paths that a
plain prefix swap produces (``geofm.datamodules.X``, ``geofm.datasets.X``) onto
``geofm.data.datamodules`` / ``geofm.data.datasets``.

Each alias is logged once (``terratorch.tasks.SemanticSegmentationTask read as
geofm.tasks.SemanticSegmentationTask``); a name geofm lacks raises
:class:`TerratorchAliasError`, naming it and the closest geofm class. Outside the context (plain
``import geofm`` in a user's script) nothing is installed, and an installed TerraTorch that is
already imported is left alone.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.abc
import importlib.machinery
import logging
import sys
import threading
import types
from collections.abc import Iterator, Sequence
from typing import Any

from geofm.errors import GeofmError

__all__ = [
    "ALIAS_PREFIXES",
    "TerratorchAliasError",
    "activate",
    "deactivate",
    "is_alias_path",
    "resolve_class_path",
    "terratorch_aliases",
]

log = logging.getLogger(__name__)

# alias module -> geofm modules searched for its names, in order. A submodule not listed here
# (``terratorch.tasks.segmentation_tasks``) searches its geofm namesake, then its parent's list.
_MODULES: dict[str, tuple[str, ...]] = {
    "terratorch": ("geofm",),
    "terratorch.tasks": ("geofm.tasks",),
    "terratorch.datamodules": ("geofm.data.datamodules",),
    "terratorch.datasets": ("geofm.data.datasets",),
    "terratorch.datasets.transforms": ("geofm.data.transforms", "geofm.data.albumentations_compat"),
    "terratorch.models": ("geofm.models", "geofm.models.factories"),
    "terratorch.models.backbones": ("geofm.models.backbones",),
    "terratorch.models.necks": ("geofm.models.necks",),
    "terratorch.models.decoders": ("geofm.models.decoders",),
    "terratorch.models.heads": ("geofm.models.heads",),
    "terratorch.models.model": ("geofm.models.model",),
    "terratorch.models.encoder_decoder_factory": ("geofm.models.factories.encoder_decoder",),
    "terratorch.registry": ("geofm.registry",),
    "terratorch.callbacks": ("geofm.callbacks",),
    "terratorch.cli_tools": ("geofm.callbacks", "geofm.inference.prediction_writer"),
    # What ``terratorch.`` -> ``geofm.`` makes of TerraTorch's layout.
    "geofm.datamodules": ("geofm.data.datamodules",),
    "geofm.datasets": ("geofm.data.datasets",),
    "geofm.datasets.transforms": ("geofm.data.transforms", "geofm.data.albumentations_compat"),
    "geofm.cli_tools": ("geofm.callbacks", "geofm.inference.prediction_writer"),
}

# Names that differ between the two: TerraTorch's name -> geofm's.
_NAMES: dict[str, str] = {
    "TERRATORCH_BACKBONE_REGISTRY": "GEOFM_BACKBONE_REGISTRY",
    "TERRATORCH_DECODER_REGISTRY": "GEOFM_DECODER_REGISTRY",
    "TERRATORCH_NECK_REGISTRY": "GEOFM_NECK_REGISTRY",
}

# TerraTorch names without a namesake, and what does the job in geofm.
_REPLACEMENTS: dict[str, str] = {
    "PrithviModelFactory": "geofm.models.EncoderDecoderFactory",
    "CustomWriter": "geofm.inference.prediction_writer.GeoTiffPredictionWriter (or --predict_output_dir)",
}

ALIAS_PREFIXES: tuple[str, ...] = ("terratorch",) + tuple(m for m in _MODULES if m.startswith("geofm."))

_lock = threading.RLock()
_depth = 0
_logged: set[str] = set()


class TerratorchAliasError(GeofmError, AttributeError):
    """A TerraTorch (or prefix-swapped) path that names nothing in geofm."""


def is_alias_path(path: str) -> bool:
    """Whether ``path`` (a module or class path) is read through the aliases."""
    return any(path == p or path.startswith(p + ".") for p in ALIAS_PREFIXES)


def _targets(module: str) -> tuple[str, ...]:
    """The geofm modules an alias module searches, most specific first."""
    if module in _MODULES:
        return _MODULES[module]
    parent, _, leaf = module.rpartition(".")
    if not parent or not is_alias_path(parent):
        return ()
    inherited = _targets(parent)
    return tuple(f"{t}.{leaf}" for t in inherited) + inherited


def _import(module: str) -> types.ModuleType | None:
    """``module``, or ``None`` when geofm has no such module (its own import errors propagate)."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name is not None and (module == err.name or module.startswith(err.name + ".")):
            return None
        raise


def _public(module: types.ModuleType) -> list[str]:
    names = getattr(module, "__all__", None)
    return list(names) if names is not None else [n for n in dir(module) if not n.startswith("_")]


def _lookup(alias_module: str, name: str) -> tuple[Any, str]:
    """geofm's object for ``alias_module.name`` and its public geofm path.

    Raises:
        TerratorchAliasError: geofm has no such name; the message names the closest class.
    """
    wanted = _NAMES.get(name, name)
    searched: list[str] = []
    for target in _targets(alias_module):
        module = _import(target)
        if module is None:
            continue
        searched.append(target)
        if hasattr(module, wanted):
            return getattr(module, wanted), f"{target}.{wanted}"
    raise TerratorchAliasError(_missing_message(f"{alias_module}.{name}", name, searched))


def _missing_message(path: str, name: str, searched: Sequence[str]) -> str:
    if name in _REPLACEMENTS:
        return f"{path}: geofm has no {name}; use {_REPLACEMENTS[name]}."
    for target in searched:
        # A geofm package may explain names it leaves out on purpose (GEO-Bench datamodules).
        explain = getattr(_import(target), "unsupported_message", None)
        reason = explain(name) if callable(explain) else None
        if reason:
            return f"{path}: {reason}"
    candidates: dict[str, str] = {}
    for target in [*searched, *(t for ts in _MODULES.values() for t in ts)]:
        module = _import(target)
        if module is not None:
            for public in _public(module):
                candidates.setdefault(public, f"{target}.{public}")
    # Classes for a class name, other names (registries, functions) for the rest.
    pool = [n for n in candidates if n[:1].isupper() == name[:1].isupper()] or list(candidates)
    close = difflib.get_close_matches(name, pool, n=1, cutoff=0.0) if pool else []
    where = ", ".join(searched) if searched else "no geofm counterpart of this module"
    hint = f" The closest geofm name is {candidates[close[0]]}." if close else ""
    return f"{path}: geofm has no {name} (looked in {where}).{hint}"


def resolve_class_path(path: str) -> str:
    """geofm's path for a TerraTorch (or prefix-swapped) class path; other paths unchanged.

    Args:
        path: A ``class_path`` as written in a config.

    Returns:
        The geofm path, e.g. ``geofm.tasks.SemanticSegmentationTask`` for
        ``terratorch.tasks.SemanticSegmentationTask``.

    Raises:
        TerratorchAliasError: geofm has no such class (the message names the closest one).
    """
    if "." not in path or not is_alias_path(path):
        return path
    module, _, name = path.rpartition(".")
    return _lookup(module, name)[1]


class _AliasModule(types.ModuleType):
    """A ``terratorch...`` module whose attributes are geofm's objects (looked up on access)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        obj, geofm_path = _lookup(self.__name__, name)
        alias = f"{self.__name__}.{name}"
        if alias not in _logged:
            _logged.add(alias)
            log.info("%s read as %s", alias, geofm_path)
        self.__dict__[name] = obj  # later accesses skip the lookup
        return obj


class _AliasLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _AliasModule(spec.name)
        module.__path__ = []  # a package: its submodules import through the finder too
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        """Nothing to run: attributes are looked up on access."""


class _AliasFinder(importlib.abc.MetaPathFinder):
    """Claims ``terratorch`` and its submodules, and geofm's prefix-swap module paths."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if not is_alias_path(fullname):
            return None
        if fullname.split(".")[0] == "terratorch" and _real_terratorch_loaded():
            return None
        leaf = fullname.rpartition(".")[2]
        # `from terratorch.x import Name` tries a submodule `Name` when the attribute is
        # missing: only module-like names (lower case) or mapped ones are modules.
        if fullname not in _MODULES and not leaf.islower():
            return None
        if not _targets(fullname):
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(), is_package=True)


_finder = _AliasFinder()


def _real_terratorch_loaded() -> bool:
    module = sys.modules.get("terratorch")
    return module is not None and not isinstance(module, _AliasModule)


def activate() -> None:
    """Install the aliases (nested calls count; :func:`deactivate` undoes one each)."""
    global _depth
    with _lock:
        _depth += 1
        if _depth > 1:
            return
        if _real_terratorch_loaded():
            log.warning("TerraTorch itself is imported: terratorch.* class paths name its classes, not geofm's.")
        sys.meta_path.insert(0, _finder)


def deactivate() -> None:
    """Undo one :func:`activate`; the last one removes the finder and the alias modules."""
    global _depth
    with _lock:
        if _depth == 0:
            return
        _depth -= 1
        if _depth:
            return
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(_finder)
        for name, module in list(sys.modules.items()):
            if isinstance(module, _AliasModule):
                del sys.modules[name]
                parent, _, leaf = name.rpartition(".")
                # `import geofm.datamodules` also set the attribute on the real package.
                owner = sys.modules.get(parent)
                if owner is not None and owner.__dict__.get(leaf) is module:
                    delattr(owner, leaf)
        _logged.clear()


@contextlib.contextmanager
def terratorch_aliases() -> Iterator[None]:
    """Read TerraTorch class paths and imports as geofm's inside the ``with`` block."""
    activate()
    try:
        yield
    finally:
        deactivate()
