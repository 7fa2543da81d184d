"""geofm's user-facing errors and the one-line report the ``geofm`` command ends with.

A :class:`GeofmError` (or a ``ValueError``/``KeyError``/``TypeError``... that geofm, Lightning or
jsonargparse raised on purpose with a ``raise`` statement, or an ``OSError`` naming a file) is
the user's to fix: the command prints ``geofm: error: <message>`` on one line and exits 2,
without a traceback unless ``--debug`` or ``GEOFM_DEBUG=1``. Anything else is unexpected: its
traceback is printed and the last line still says what failed (exit 1).
"""

from __future__ import annotations

import linecache
import os
import re
import sys
import traceback
from collections.abc import Iterable
from typing import TextIO

__all__ = [
    "CheckpointError",
    "CheckpointNotFoundError",
    "ConfigError",
    "GeofmError",
    "debug_requested",
    "explain_argument_error",
    "is_user_error",
    "one_line",
    "report",
]

# Packages whose deliberate raises of these types are about what the user wrote.
_USER_ERROR_TYPES = (ValueError, KeyError, TypeError, NotImplementedError, IndexError)
_USER_ERROR_PACKAGES = ("geofm", "lightning", "jsonargparse")


class GeofmError(Exception):
    """Base of geofm's own user-facing errors: the message says what to change."""

    def __str__(self) -> str:
        # KeyError-like subclasses would otherwise print their argument quoted.
        return str(self.args[0]) if self.args else ""


class ConfigError(GeofmError, ValueError):
    """A config key or command-line option that cannot be used, named by its key path."""


class CheckpointError(GeofmError, ValueError):
    """A checkpoint that is truncated, corrupt or not a Lightning checkpoint."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A checkpoint path (or ``last``/``best``) that names no file."""


def debug_requested(argv: list[str] | None = None) -> bool:
    """Whether ``--debug`` is in ``argv`` or ``GEOFM_DEBUG`` is set to a true value."""
    if argv is not None and "--debug" in argv:
        return True
    return os.environ.get("GEOFM_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def _raised_deliberately(exc: BaseException) -> bool:
    """Whether ``exc`` came from a ``raise`` statement in geofm, Lightning or jsonargparse."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = tb.tb_frame.f_code.co_filename
    parts = re.split(r"[\\/]", filename)
    if not any(package in parts for package in _USER_ERROR_PACKAGES):
        return False
    # A bug raises from a subscript or a call; a message meant for the user from `raise`.
    return linecache.getline(filename, tb.tb_lineno).lstrip().startswith("raise")


def _chain(exc: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is about the user's input (config, data, checkpoint) rather than a bug."""
    from argparse import ArgumentError

    for link in _chain(exc):
        if isinstance(link, (GeofmError, ArgumentError)):
            return True
        if isinstance(link, OSError) and link.filename is not None:
            return True  # names the file: missing, not readable, disk full...
        if type(link).__name__ == "MisconfigurationException":
            return True
        if isinstance(link, _USER_ERROR_TYPES) and _raised_deliberately(link):
            return True
    return False


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (the lines of a multi-line message joined)."""
    text = str(exc)
    if isinstance(exc, KeyError) and not isinstance(exc, GeofmError) and type(exc).__str__ is KeyError.__str__:
        text = str(exc.args[0]) if exc.args else ""  # KeyError quotes its argument
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.strerror}: '{exc.filename}'"
    text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return text or type(exc).__name__


def report(exc: BaseException, debug: bool = False, stream: TextIO | None = None) -> int:
    """Print the end of a failed command and return its exit status.

    Args:
        exc: What stopped the command.
        debug: Print the traceback of a user-facing error too.
        stream: Where to print (``sys.stderr`` by default).

    Returns:
        2 for a user-facing error, 1 for an unexpected one.
    """
    stream = stream or sys.stderr
    user = is_user_error(exc)
    if debug or not user:
        traceback.print_exception(exc, file=stream)
    if user:
        stream.write(f"geofm: error: {one_line(exc)}\n")
        return 2
    stream.write(
        f"geofm: error: unexpected {type(exc).__name__}: {one_line(exc)} "
        "(the traceback above says where; please report it if your input looks right)\n"
    )
    return 1


# ---------------------------------------------------------------------------- jsonargparse
_NOISE = (
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "Given value type:",
    "Given value:",
    "- Expected a <class 'NoneType'>",
)


def _suggest(name: str, known: Iterable[str]) -> str:
    from geofm.registry.errors import close_names

    close = close_names(name, sorted(set(known)), n=5)
    return f" Did you mean: {', '.join(repr(c) for c in close)}?" if close else ""


def _class_parameters(class_path: str) -> list[str]:
    """The keyword arguments a class's ``__init__`` accepts (empty when it cannot be imported)."""
    import inspect

    from geofm.registry import import_object

    try:
        cls = import_object(class_path)
    except Exception:  # noqa: BLE001 - suggestions are a courtesy; the message stands without
        return []
    names: list[str] = []
    # **kwargs passed to a parent's __init__ (as jsonargparse follows them): the parents' too.
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass.__module__.split(".")[0] in ("builtins", "torch", "lightning"):
            continue
        try:
            params = inspect.signature(klass.__init__).parameters
        except (TypeError, ValueError):
            continue
        names += [p for p in params if p not in ("self", "args", "kwargs") and p not in names]
    return names


def explain_argument_error(message: str, keys: Iterable[str] = (), classes: Iterable[str] = ()) -> str:
    """Rewrite a jsonargparse error as one line naming the key path and the closest valid names.

    jsonargparse appends the parsed value (``Given value: Namespace(...)``), the union's
    subtypes and ``Expected a <class 'NoneType'>`` to every error: noise that buries the cause.

    Args:
        message: The text of jsonargparse's ``ArgumentError``.
        keys: The option keys the parser accepts (``trainer.max_epochs``...), for suggestions.
        classes: Class names accepted as ``class_path`` (for unknown ones).

    Returns:
        ``<key path>: <what is wrong>. Did you mean: ...?``
    """
    keys = list(keys)
    lines = [line.strip() for line in message.strip().splitlines()]
    key = ""
    match = re.match(r'Parser key "([^"]+)":\s*(.*)', lines[0]) if lines else None
    if match:
        key = match.group(1)
        lines = [match.group(2), *lines[1:]]
    lines = [line for line in lines if line and not line.startswith(_NOISE)]
    text = " ".join(line.removeprefix("- ") for line in lines)
    # A class's own argument: "Problem with given class_path 'C': Parser key "lr": ..."
    if m := re.search(r"Problem with given class_path '[^']+': Parser key \"([^\"]+)\":\s*(.*)", text):
        key = f"{key}.init_args.{m.group(1)}" if key else m.group(1)
        text = m.group(2)

    # Unknown options, from the command line, a YAML section or a class's init_args.
    if m := re.match(r"unrecognized arguments: (\S+)", text):
        option = m.group(1).lstrip("-").split("=", 1)[0].replace("-", "_")
        return f"{option}: unknown option.{_suggest(option, keys)}"
    if m := re.search(r"Group '([^']+)' does not accept option '([^']+)'", text):
        group, option = m.groups()
        siblings = [k.removeprefix(group + ".") for k in keys if k.startswith(group + ".")]
        return f"{group}.{option}: '{group}' has no option '{option}'.{_suggest(option, siblings)}"
    if m := re.search(r"Problem with given class_path '([^']+)': Option '([^']+)' is not accepted", text):
        class_path, option = m.groups()
        path = f"{key}.init_args.{option}" if key else option
        accepted = _class_parameters(class_path)
        short = class_path.rsplit(".", 1)[-1]
        return f"{path}: {short} has no argument '{option}'.{_suggest(option, accepted)}"
    if m := re.search(r"Option '([^']+)' is not accepted", text):
        option = m.group(1)
        top = {k.split(".", 1)[0] for k in keys}
        path = f"{key}.{option}" if key else option
        return f"{path}: unknown option.{_suggest(option, top)}"
    if m := re.search(r"Expected a dot import path string: (\S+)", text):
        name = m.group(1)
        return f"{key or 'class_path'}: unknown class '{name}'.{_suggest(name, classes)}"
    if m := re.search(r"Import path (\S+) does not correspond to a subclass of (\S+)", text):
        return f"{key or 'class_path'}: {m.group(1)} is not a subclass of {m.group(2)}."
    expected = re.findall(r"Expected a <class '([^']+)'>", text)
    if expected:
        given = _given_value(message)
        return f"{key}: expected {' or '.join(expected)}" + (f", got {given}." if given else ".")
    return f"{key}: {text}" if key else text


def _given_value(message: str) -> str:
    """The ``Given value:`` of a jsonargparse message when it is short (never a Namespace dump)."""
    m = re.search(r"(?:Given|Got) value: (.*)", message)
    if not m:
        return ""
    value = m.group(1).strip()
    if len(value) > 60 or value.startswith(("Namespace(", "{", "NestedArg(")):
        return ""
    return repr(value)
