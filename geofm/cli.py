"""The ``geofm`` command.

``geofm fit|validate|test|predict -c config.yaml`` run Lightning through LightningCLI, so every
LightningCLI option works (``--trainer.max_epochs 3``, ``--model.init_args.lr 1e-4``,
``--print_config``). ``geofm predict --engine onnxruntime --model model.onnx
--streaming.input scenes/ --streaming.output_dir out/`` predicts with an exported file alone,
without LightningCLI (:mod:`geofm.cli_onnx`). ``geofm compute-statistics``, ``geofm
check-config``, ``geofm export``, ``geofm embed`` and ``geofm registry list`` are geofm's own.

TerraTorch configs run as they are: while the command runs, ``terratorch.*`` class paths and
imports are read as geofm's (:mod:`geofm.compat.terratorch`), and ``custom_modules_path`` is
``custom_modules``.

A user-facing error ends the command with one line, ``geofm: error: <message>``, and exit
status 2; ``--debug`` (anywhere on the command line) or ``GEOFM_DEBUG=1`` prints its traceback
too. Unexpected errors keep their traceback and end with the same kind of line (exit 1).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import logging
import os
import sys
from pathlib import Path

__all__ = ["main", "import_custom_modules"]

log = logging.getLogger(__name__)

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


# ---------------------------------------------------------------------------- custom modules
def import_custom_modules(path: str | Path) -> list[str]:
    """Import a user's folder (a package or a folder of modules) so its components register.

    Args:
        path: A folder with ``.py`` files, or a single ``.py`` file.

    Returns:
        The module names imported.
    """
    if not str(path).strip():
        raise ValueError("--custom-modules needs a folder or a .py file.")
    path = Path(path).expanduser().resolve()
    if not path.exists():
        # errno and filename: a user error, printed as one line naming the folder.
        raise FileNotFoundError(errno.ENOENT, "custom_modules (or custom_modules_path) does not exist", str(path))
    parent = str(path.parent)
    if parent not in sys.path:
        sys.path.insert(0, parent)
    if path.is_file():
        names = [path.stem]
    elif (path / "__init__.py").is_file():
        names = [path.name] + [f"{path.name}.{p.stem}" for p in sorted(path.glob("*.py")) if p.stem != "__init__"]
    else:
        sys.path.insert(0, str(path))
        names = [p.stem for p in sorted(path.glob("*.py"))]
    for name in names:
        importlib.import_module(name)
    log.info("Imported custom modules from %s: %s", path, names)
    return names


def _custom_modules_from_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """Pull ``--custom-modules PATH`` out of argv, and find ``custom_modules`` in configs."""
    paths: list[str] = []
    rest: list[str] = []
    args = iter(argv)
    configs: list[str] = []
    for arg in args:
        if arg in _CUSTOM_OPTIONS:
            paths.append(next(args, ""))
        elif arg.startswith(tuple(f"{option}=" for option in _CUSTOM_OPTIONS)):
            paths.append(arg.split("=", 1)[1])
        else:
            if arg in ("-c", "--config"):
                config = next(args, "")
                configs.append(config)
                rest += [arg, config]
                continue
            rest.append(arg)
    for config in configs:
        paths += _custom_modules_key(config)
    if not paths and os.environ.get("TERRATORCH_CUSTOM_MODULE_PATH"):
        paths.append(os.environ["TERRATORCH_CUSTOM_MODULE_PATH"])  # TerraTorch's fallback
    return paths, rest


_CUSTOM_OPTIONS = ("--custom-modules", "--custom_modules", "--custom-modules-path", "--custom_modules_path")


def _custom_modules_key(config: str) -> list[str]:
    """The ``custom_modules`` (geofm) and ``custom_modules_path`` (TerraTorch) of a config file."""
    import yaml

    path = Path(config)
    if not path.is_file():
        return []
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        return []  # the parser reports the syntax error, with its line
    if not isinstance(data, dict):
        return []
    found = []
    for key in ("custom_modules", "custom_modules_path"):
        value = data.get(key)
        for v in value if isinstance(value, list) else ([] if value is None else [value]):
            found.append(_relative_to(path, str(v), cwd_first=key == "custom_modules_path"))
    return found


def _relative_to(config: Path, value: str, cwd_first: bool) -> str:
    """A relative path of a config: beside the config file (geofm's rule), or from the working
    folder when that exists and the config's folder has none (TerraTorch's rule)."""
    if Path(value).expanduser().is_absolute():
        return value
    beside = (config.parent / value).resolve()
    if cwd_first and not beside.exists() and Path(value).exists():
        return str(Path(value).resolve())
    return str(beside)


# ---------------------------------------------------------------------------- geofm's own commands
def _registry_list(args: argparse.Namespace) -> int:
    from geofm.registry import registry_summary

    summary = registry_summary([args.kind] if args.kind else None)
    if args.filter:
        needle = args.filter.lower()
        summary = {
            kind: {src: [n for n in names if needle in n.lower()] for src, names in sources.items()}
            for kind, sources in summary.items()
        }
    details = _backbone_details(summary.get("backbone", {}))
    if args.json:
        if details:
            summary["backbone_details"] = details
        print(json.dumps(summary, indent=2))
        return 0
    for kind, sources in summary.items():
        for source, names in sources.items():
            print(f"{kind} [{source}] ({len(names)})")
            for name in names:
                full = f"{source}_{name}" if kind != "factory" else name
                info = details.get(full) if kind == "backbone" else None
                if info is None:
                    print(f"  {full}")
                else:
                    print(f"  {full}  [{info['family']}] bands: {info['bands']}; pretraining: {info['pretraining']}")
    return 0


def _backbone_details(sources: dict[str, list[str]]) -> dict[str, dict[str, str]]:
    """Family, bands and pretraining of the zoo's backbones (geofm's and TorchGeo's)."""
    from dataclasses import asdict

    from geofm.models.catalog import describe

    details = {}
    for source in ("geofm", "torchgeo"):
        for name in sources.get(source, []):
            info = describe(f"{source}_{name}")
            if info is not None:
                details[f"{source}_{name}"] = {k: v for k, v in asdict(info).items() if k != "name"}
    return details


def _compute_statistics(args: argparse.Namespace) -> int:
    from geofm.cli_lightning import compute_statistics_from_config

    out = compute_statistics_from_config(args.config, args.output, extra_args=args.overrides)
    print(f"Statistics written to {out}")
    return 0


def _check_config(args: argparse.Namespace) -> int:
    from geofm.cli_check import check_config

    for config in args.configs:
        for path in _custom_modules_key(config):
            import_custom_modules(path)
    problems = check_config(args.configs)
    for problem in problems:
        sys.stderr.write(f"geofm: error: {problem}\n")
    if problems:
        return 2
    print("ok")
    return 0


def _export(args: argparse.Namespace) -> int:
    from geofm.errors import ConfigError
    from geofm.export.config import export_from_config

    if args.ckpt_path is None and not args.allow_untrained:
        raise ConfigError(
            "geofm export needs --ckpt_path (a checkpoint file, or last/best of the config's run "
            "directory); --allow-untrained exports the config's initial weights."
        )
    output = args.output or _default_export_path(args.config, args.format)
    tile = args.tile_size
    result = export_from_config(
        args.config,
        args.ckpt_path,
        output,
        args.format,
        overrides=args.overrides,
        nodata=args.nodata,
        tile_size=tile[0] if tile and len(tile) == 1 else tile,
        tile_overlap=args.tile_overlap,
        opset=args.opset,
        tolerance=args.tolerance,
        dynamic=not args.fixed_size,
    )
    meta = result.metadata
    fixed = meta["input"]["fixed_size"]
    size = (
        f"fixed size {fixed[0]}x{fixed[1]}"
        if fixed
        else f"any size (multiples of {meta['input']['size_multiple']})"
    )
    print(f"Exported {result.path} ({meta['format']}, {size}, dynamic batch)")
    print(f"Metadata: {result.metadata_path}")
    sizes = ", ".join(f"{h}x{w}" for h, w in meta["check"]["sizes"])
    print(f"Check: max abs difference to the task's logits {result.max_abs_diff:.3g} at {sizes}")
    return 0


def _default_export_path(config: str, format: str) -> Path:
    suffix = {"onnx": ".onnx", "torch-export": ".pt2", "safetensors": ".safetensors"}[format]
    return Path(config).with_suffix(suffix)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geofm",
        description="Fine-tune geospatial foundation models. Lightning commands: "
        + ", ".join(LIGHTNING_COMMANDS)
        + " (geofm fit --help for their options).",
        epilog="--debug (or GEOFM_DEBUG=1) prints the traceback of an error.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in LIGHTNING_COMMANDS:
        extra = (
            "; --engine onnxruntime --model FILE predicts scenes with an exported ONNX file "
            "(geofm predict --engine onnxruntime --help)"
            if command == "predict"
            else ""
        )
        sub.add_parser(command, help=f"Lightning {command} (LightningCLI options){extra}", add_help=False)

    registry = sub.add_parser("registry", help="inspect the component registries")
    registry_sub = registry.add_subparsers(dest="action", required=True)
    listing = registry_sub.add_parser("list", help="list what can be built, from every source")
    listing.add_argument("kind", nargs="?", choices=["backbone", "decoder", "neck", "factory"])
    listing.add_argument("--filter", help="keep names containing this text (any case)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=_registry_list)

    stats = sub.add_parser(
        "compute-statistics",
        help="per-band means/stds (and class counts) of the training split, written to a file",
    )
    stats.add_argument("-c", "--config", required=True, help="the fit config (its data section is used)")
    stats.add_argument("-o", "--output", help="output file (default: statistics.yaml beside the config)")
    stats.epilog = "Any --data.init_args.NAME VALUE pairs after these override the config."
    stats.set_defaults(func=_compute_statistics)

    check = sub.add_parser(
        "check-config",
        help="list every unknown key of fit configs (with its line and the closest name); builds nothing",
    )
    check.add_argument("configs", nargs="+", help="YAML config file(s)")
    check.set_defaults(func=_check_config)

    export = sub.add_parser(
        "export",
        help="export a trained model with its preprocessing (ONNX, torch.export, safetensors)",
        description="Write the model of a fit config with a checkpoint's weights, its band "
        "selection, nodata handling and normalisation inside, and <output>.json beside it. "
        "The file is checked against the task on random inputs before it is written.",
    )
    export.add_argument("-c", "--config", required=True, help="the fit config (a run's config.yaml)")
    export.add_argument("--ckpt_path", "--ckpt-path", help="checkpoint file, or last/best of the run directory")
    export.add_argument(
        "--format", choices=["onnx", "torch-export", "safetensors"], default="onnx", help="default: onnx"
    )
    export.add_argument("-o", "--output", help="output file (default: the config's name with .onnx/.pt2/.safetensors)")
    export.add_argument("--nodata", type=float, help="the input files' nodata value (NaN and inf always are)")
    export.add_argument(
        "--tile-size", "--tile_size", type=int, nargs="+", metavar="SIDE",
        help="tile side (or height width) the model predicts on; default: the task's tiled_inference, "
        "else the first training image's size",
    )
    export.add_argument("--tile-overlap", "--tile_overlap", type=int, help="tile overlap, recorded in the metadata")
    export.add_argument(
        "--fixed-size", "--fixed_size", action="store_true",
        help="fix height and width to the tile size (batch stays dynamic); default: dynamic when "
        "the model allows",
    )
    export.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 17; default 18)")
    export.add_argument(
        "--tolerance", type=float, default=1e-4,
        help="largest accepted difference between the file's logits and the task's (default 1e-4)",
    )
    export.add_argument(
        "--allow-untrained", "--allow_untrained", action="store_true",
        help="export the config's initial weights when no --ckpt_path is given",
    )
    export.epilog = "Any --data.init_args.NAME VALUE / --model.init_args.NAME VALUE pairs after these override the config."
    export.set_defaults(func=_export)

    from geofm.cli_embed import add_embed_parser  # light: torch loads when it runs

    add_embed_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``geofm`` command.

    Args:
        argv: The arguments after ``geofm`` (``sys.argv[1:]`` by default).

    Returns:
        0 on success, 2 for an error in the user's input, 1 for an unexpected one (the error is
        printed, never raised).
    """
    from geofm.errors import debug_requested, report

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = [arg for arg in argv if arg != "--debug"]
    try:
        return _main(argv)
    except KeyboardInterrupt:
        sys.stderr.write("geofm: error: interrupted\n")
        return 130
    except Exception as exc:  # noqa: BLE001 - the command's last word, one line
        return report(exc, debug=debug)


def _main(argv: list[str]) -> int:
    from geofm.compat.terratorch import terratorch_aliases

    # TerraTorch class paths and `import terratorch...` in custom modules read as geofm's.
    with terratorch_aliases():
        return _run(argv)


def _run(argv: list[str]) -> int:
    custom, argv = _custom_modules_from_argv(argv)
    for path in custom:
        import_custom_modules(path)
    if argv and argv[0] == "predict":
        from geofm.cli_onnx import pop_engine, predict_onnx

        engine, rest = pop_engine(argv[1:])
        if engine == "onnxruntime":  # the exported file alone: no config, no LightningCLI
            return predict_onnx(rest)
        argv = ["predict", *rest]
    if argv and argv[0] in LIGHTNING_COMMANDS:
        from geofm.cli_lightning import run_lightning_cli

        run_lightning_cli(argv)
        return 0
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and args.command not in ("compute-statistics", "export", "embed"):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")  # argparse's one line, exit 2
    args.overrides = unknown
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

