"""One resolver for the dotted paths configs name classes by (``"torch.nn.ReLU"``).

Optimizers, schedulers, augmentations and head activations are all written as a bare name
looked up in a default module (``"AdamW"`` in ``torch.optim``) or as a full dotted path
(``"mypkg.module.MyClass"``); :func:`import_object` resolves both, with one kind of error.
"""

from __future__ import annotations

import importlib
from typing import Any

from geofm.registry.errors import close_names

__all__ = ["import_object"]


def _public_names(module: Any) -> list[str]:
    return [n for n in dir(module) if not n.startswith("_")]


def _did_you_mean(names: list[str]) -> str:
    return f" (did you mean {', '.join(repr(n) for n in names)}?)" if names else ""


def import_object(
    path: str,
    default_module: str | None = None,
    what: str | None = None,
    kind: str = "class",
) -> Any:
    """The object a dotted path names, or a bare name of ``default_module``.

    ``"pkg.module.Name"`` imports the longest importable module prefix and follows the rest
    as attributes (so ``"pkg.module.Outer.Inner"`` works too); ``"Name"`` is looked up in
    ``default_module``.

    Args:
        path: What the user wrote.
        default_module: Module searched for bare names (``"torch.optim"``); without one, bare
            names are refused.
        what: How errors name the value, e.g. ``"optimizer='AdamX'"``; ``repr(path)`` by default.
        kind: What is expected, for errors (``"class"``, ``"function"``).

    Returns:
        The object (any type: callers check that it is what they need).

    Raises:
        ValueError: naming ``what``, why the path does not resolve, close names and a form
            that would work.
    """
    what = what or repr(path)
    if not isinstance(path, str) or not path.strip("."):
        raise ValueError(f"{what} is not a {kind} name or a dotted path such as 'package.module.Name'.")
    if "." not in path:
        if default_module is None:
            raise ValueError(
                f"{what} is not a dotted path; give the full path of the {kind}, such as "
                f"'package.module.{path}'."
            )
        module = importlib.import_module(default_module)
        if hasattr(module, path):
            return getattr(module, path)
        hint = close_names(path, _public_names(module), n=3)
        example = f"{default_module}.{hint[0]}" if hint else f"package.module.{path}"
        raise ValueError(
            f"{what} is not a {kind} of {default_module}{_did_you_mean(hint)}; give "
            f"a {kind} name from there or a full path such as '{example}'."
        )
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            # Only "this prefix is not a module" means: try a shorter one. A module that exists
            # but fails on its own missing dependency is reported as it is.
            if err.name is not None and (module_name == err.name or module_name.startswith(err.name + ".")):
                continue
            raise ValueError(f"{what} cannot be imported: importing '{module_name}' failed ({err}).") from err
        except ImportError as err:
            raise ValueError(f"{what} cannot be imported: importing '{module_name}' failed ({err}).") from err
        for depth, attribute in enumerate(parts[cut:], start=cut):
            if not hasattr(obj, attribute):
                owner = ".".join(parts[:depth])
                hint = close_names(attribute, _public_names(obj), n=3)
                raise ValueError(
                    f"{what} cannot be imported: '{owner}' has no attribute '{attribute}'"
                    f"{_did_you_mean([f'{owner}.{h}' for h in hint])}."
                )
            obj = getattr(obj, attribute)
        return obj
    raise ValueError(
        f"{what} cannot be imported: no module '{parts[0]}' (is the package installed?); give "
        f"the full path of the {kind}, such as 'package.module.Name'."
    )
