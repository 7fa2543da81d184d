"""Errors of :mod:`geofm.export`, and the message that names what blocked an exporter."""

from __future__ import annotations

import re
import traceback
from pathlib import Path
from typing import Any

from geofm.errors import GeofmError

__all__ = [
    "ExportCheckError",
    "ExportError",
    "MissingDependencyError",
    "blocking_operation",
    "require",
]


class ExportError(GeofmError, ValueError):
    """A task that cannot be exported in the format asked for; the message says why."""


class ExportCheckError(ExportError):
    """The exported model's outputs differ from the task's by more than the tolerance."""


class MissingDependencyError(GeofmError, ImportError):
    """An optional package the export format needs is not installed."""


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def require(*packages: str, format: str) -> None:
    """Import ``packages`` or raise one error that names them and the pip command.

    Raises:
        MissingDependencyError: a package is missing.
    """
    import importlib

    missing = []
    for package in packages:
        try:
            importlib.import_module(package)
        except ImportError:
            missing.append(package)
    if missing:
        raise MissingDependencyError(
            f"Exporting to {format} needs {', '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed: pip install 'geofm[onnx]'."
        )


# aten.foo.default, aten::foo, torch.ops.aten.foo, "operator foo"
_OP_PATTERNS = (
    re.compile(r"\b(?:torch\.ops\.)?(aten|prims|quantized)(?:\.|::)([A-Za-z_][\w]*)(?:\.(?!default\b)\w+)?"),
    re.compile(r"[Oo]perator[ :]+'?([A-Za-z_][\w.:]*)"),
)
_TORCH_PARTS = ("torch", "onnxscript", "onnx_ir", "onnx", "sympy", "einops", "contextlib", "functools")


def _ops_in(text: str) -> list[str]:
    found: list[str] = []
    for pattern in _OP_PATTERNS:
        for match in pattern.finditer(text):
            name = ".".join(g for g in match.groups() if g)
            if name not in found:
                found.append(name)
    return found


def _user_frame(exc: BaseException) -> str | None:
    """``file:line in function`` of the innermost frame outside torch and the exporters."""
    frames: list[traceback.FrameSummary] = []
    link: BaseException | None = exc
    seen: set[int] = set()
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        frames = traceback.extract_tb(link.__traceback__) + frames
        link = link.__cause__ or link.__context__
    for frame in reversed(frames):
        parts = Path(frame.filename).parts
        if "site-packages" in parts and any(p in _TORCH_PARTS for p in parts):
            continue
        if frame.filename.startswith("<") or "geofm/export" in frame.filename.replace("\\", "/"):
            continue
        return f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}"
    return None


def blocking_operation(exc: BaseException, format: str, stage: str, program: Any = None) -> ExportError:
    """An :class:`ExportError` that says which operation, and in which module, blocked ``stage``.

    Args:
        exc: What the exporter raised.
        format: The export format (``"onnx"``, ``"torch-export"``).
        stage: ``"torch.export"`` (tracing the model) or ``"onnx"`` (translating the graph).
        program: The ``ExportedProgram`` being translated, to find the module of the operation.
    """
    chain = _chain(exc)
    text = _ANSI.sub("", "\n".join(str(link) for link in chain))
    ops = _ops_in(text)
    where = _module_of(program, ops[0]) if program is not None and ops else None
    where = where or _user_frame(exc)
    root = chain[-1]
    lines = [line.strip() for line in _ANSI.sub("", str(root)).splitlines() if line.strip()]
    detail = lines[0] if lines else ""
    # torch.export's constraint violations list the guards that fixed a size: name the first.
    detail += next((f" {line}" for line in lines[1:] if line.startswith("- ")), "")
    if len(detail) > 500:
        detail = detail[:500] + "..."
    doing = "tracing the model (torch.export)" if stage == "torch.export" else "translating the graph to ONNX"
    parts = [f"Export to {format} failed while {doing}"]
    if ops:
        parts.append(f"blocked by operation {', '.join(ops[:3])}")
    if where:
        parts.append(f"in {where}")
    message = "; ".join(parts) + f": {type(root).__name__}" + (f": {detail}" if detail else "")
    error = ExportError(message)
    # An operation the ONNX translator lacks is missing at every input size.
    error.size_related = not (ops and stage == "onnx" and type(root).__name__ == "DispatchError")
    return error


def _module_of(program: Any, op: str) -> str | None:
    """``module.path (Class)`` of the first node of ``program`` that calls ``op``."""
    # The exporter decomposes the program first: aten.linalg_svd there is aten._linalg_svd here.
    name = op.split(".")[-1].lstrip("_")
    try:
        nodes = list(program.graph.nodes)
    except AttributeError:
        return None
    for node in nodes:
        target = str(getattr(node, "target", ""))
        if node.op == "call_function" and re.search(rf"\.{name}(\.|$)", target.replace("._", ".")):
            stack = node.meta.get("nn_module_stack") or {}
            if stack:
                path, kind = list(stack.values())[-1]
                kind = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
                return f"{path} ({kind.rsplit('.', 1)[-1]})"
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and all(link is not o for o in out):
        out.append(link)
        link = link.__cause__ or link.__context__
    return out
