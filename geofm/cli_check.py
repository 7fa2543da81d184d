"""``geofm check-config cfg.yaml``: every unknown key of a config at once, with its line.

jsonargparse stops at the first unknown key; a TerraTorch config carried over may hold several.
This walks the YAML (``yaml.compose`` keeps each key's line) against what ``geofm fit``
accepts: the parser's own keys for the top level and ``trainer``, and for every
``class_path`` section (model, data, optimizer, callbacks...) the arguments its class takes, as
jsonargparse resolves them (``**kwargs`` followed into the parents). Nothing is built.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Problem", "check_config"]

# Keys of a class section other than the class's own arguments.
_SUBCLASS_KEYS = ("class_path", "init_args", "dict_kwargs", "__path__")


@dataclass(frozen=True)
class Problem:
    """One unknown key (or class) of a config file."""

    file: Path
    line: int
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.key}: {self.message}"


def _suggest(name: str, known: list[str]) -> str:
    from geofm.registry.errors import close_names

    close = close_names(name, sorted(set(known)), n=3)
    return f" Did you mean: {', '.join(repr(c) for c in close)}?" if close else ""


def _bases() -> dict[str, Any]:
    """The base class of each class section, for short names (``class_path: EarlyStopping``)."""
    import torch
    from lightning.pytorch import LightningDataModule, LightningModule
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.cli import LRSchedulerTypeTuple
    from lightning.pytorch.loggers import Logger

    return {
        "model": LightningModule,
        "data": LightningDataModule,
        "optimizer": torch.optim.Optimizer,
        # LightningCLI's types, its own ReduceLROnPlateau first (torch's has the same name).
        "lr_scheduler": tuple(reversed(LRSchedulerTypeTuple)),
        "trainer.callbacks": Callback,
        "trainer.logger": Logger,
    }


class _Checker:
    def __init__(self, file: Path, parser: Any) -> None:
        self.file = file
        self.problems: list[Problem] = []
        self.dests = {a.dest for a in parser._actions if a.dest and not a.dest.endswith(".help")}
        self.bases = _bases()

    def report(self, node: yaml.Node, key: str, message: str) -> None:
        self.problems.append(Problem(self.file, node.start_mark.line + 1, key, message))

    def top(self, root: yaml.Node) -> None:
        if not isinstance(root, yaml.MappingNode):
            self.report(root, "<file>", "a config is a mapping of keys (trainer:, model:, data:...).")
            return
        top = sorted({d.split(".", 1)[0] for d in self.dests} - {"help", "print_config"})
        for key_node, value in root.value:
            key = str(key_node.value)
            if key not in top:
                self.report(key_node, key, f"unknown option.{_suggest(key, top)}")
            elif key == "trainer" and isinstance(value, yaml.MappingNode):
                self.trainer(value)
            elif key in self.bases:
                self.section(value, key, self.bases[key])

    def trainer(self, node: yaml.MappingNode) -> None:
        options = sorted(d.removeprefix("trainer.") for d in self.dests if d.startswith("trainer."))
        for key_node, value in node.value:
            key = str(key_node.value)
            path = f"trainer.{key}"
            if key not in options:
                self.report(key_node, path, f"'trainer' has no option '{key}'.{_suggest(key, options)}")
            elif path in self.bases:
                items = value.value if isinstance(value, yaml.SequenceNode) else [value]
                for i, item in enumerate(items):
                    where = f"{path}[{i}]" if isinstance(value, yaml.SequenceNode) else path
                    self.section(item, where, self.bases[path])

    def section(self, node: yaml.Node, key: str, base: Any) -> None:
        """A ``class_path`` section: the class must resolve and take every argument given."""
        if isinstance(node, yaml.ScalarNode):
            if node.value and node.value.lower() not in ("null", "~", "true", "false"):
                self.resolve(node, key, str(node.value), base)
            return
        if not isinstance(node, yaml.MappingNode):
            return
        entries = {str(k.value): (k, v) for k, v in node.value}
        if "class_path" not in entries:
            return  # init_args merged into a class given elsewhere (another file, the command line)
        class_node = entries["class_path"][1]
        cls = self.resolve(class_node, f"{key}.class_path", str(class_node.value), base)
        if cls is None:
            return
        accepted = _parameters(cls)
        arguments = [(k, v, key) for name, (k, v) in entries.items() if name not in _SUBCLASS_KEYS]
        init = entries.get("init_args")
        if init is not None and isinstance(init[1], yaml.MappingNode):
            arguments += [(k, v, f"{key}.init_args") for k, v in init[1].value]
        short = cls.__name__
        for key_node, value, prefix in arguments:
            name = str(key_node.value)
            if accepted is not None and name not in accepted:
                self.report(key_node, f"{prefix}.{name}", f"{short} has no argument '{name}'.{_suggest(name, accepted)}")
            elif isinstance(value, yaml.MappingNode) and any(str(k.value) == "class_path" for k, _ in value.value):
                self.section(value, f"{prefix}.{name}", object)

    def resolve(self, node: yaml.Node, key: str, class_path: str, base: Any) -> Any:
        """The class ``class_path`` names (``None`` and a problem when it names none)."""
        from jsonargparse._typehints import resolve_class_path_by_name
        from jsonargparse._util import import_object

        from geofm.compat.terratorch import TerratorchAliasError, is_alias_path, resolve_class_path

        try:
            if is_alias_path(class_path):
                class_path = resolve_class_path(class_path)
            if "." not in class_path and base is not object:
                class_path = resolve_class_path_by_name(base, class_path)
            return import_object(class_path)
        except TerratorchAliasError as exc:
            self.report(node, key, str(exc).split(": ", 1)[-1])
        except Exception as exc:  # noqa: BLE001 - any failure to import is the problem to report
            known = _subclass_names(base)
            self.report(node, key, f"unknown class '{class_path}' ({exc}).{_suggest(class_path.rsplit('.', 1)[-1], known)}")
        return None


def _subclass_names(base: Any) -> list[str]:
    names: set[str] = set()
    stack = list(base) if isinstance(base, tuple) else [base]
    while stack:
        cls = stack.pop()
        if cls is object:
            return []
        for sub in cls.__subclasses__():
            names.add(sub.__name__)
            stack.append(sub)
    return sorted(names)


def _parameters(cls: Any) -> list[str] | None:
    """The arguments jsonargparse accepts for ``cls`` (``None``: cannot tell, accept all)."""
    from jsonargparse._parameter_resolvers import get_signature_parameters

    try:
        params = get_signature_parameters(cls, None)
    except Exception:  # noqa: BLE001 - an unreadable signature leaves the check to fit itself
        return None
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params]


def check_config(files: list[str | Path]) -> list[Problem]:
    """Every unknown key and class of the config files (each file checked on its own).

    Args:
        files: YAML configs of ``geofm fit``.

    Returns:
        The problems, in file and line order (empty: the keys are all accepted).
    """
    from geofm.cli_lightning import fit_parser

    parser = fit_parser()
    problems: list[Problem] = []
    for file in map(Path, files):
        if not file.is_file():
            raise FileNotFoundError(2, "No such config file", str(file))
        checker = _Checker(file, parser)
        try:
            root = yaml.compose(file.read_text())
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else 1
            problems.append(Problem(file, line, "<yaml>", f"not valid YAML: {getattr(exc, 'problem', exc)}"))
            continue
        if root is not None:
            checker.top(root)
        problems += sorted(checker.problems, key=lambda p: p.line)
    return problems
