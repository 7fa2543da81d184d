"""``geofm predict --engine onnxruntime``: streamed prediction with an exported ONNX file.

::

    geofm predict --engine onnxruntime --model model.onnx \\
        --streaming.input scenes/ --streaming.output_dir out/ [--streaming.tile_size 512 ...]

No config, checkpoint or LightningCLI: the file holds the weights and the preprocessing, and
its metadata (``model.onnx.json``) the bands, activation and tile. Every scene of
``streaming.input`` (a folder, a file, or a YAML list of files) becomes
``<output_dir>/<scene>_pred.tif``, written by
:func:`~geofm.inference.streaming.predict_scenes` exactly as the torch engine writes it.

Settings are those of :func:`~geofm.inference.streaming.predict_scene`, one per
``--streaming.KEY VALUE`` (values read as YAML; a key without a value is ``true``) or all in
``--streaming '{tile_size: 512, overlap: 64}'``, as in the torch engine's ``--streaming``.
``--predict_output_dir`` is ``--streaming.output_dir``. Under ``torchrun`` (``RANK`` and
``WORLD_SIZE`` set) each process takes its share of the scenes.
"""

from __future__ import annotations

import argparse
import inspect
import os
from typing import Any

import yaml

from geofm.errors import ConfigError

__all__ = ["ENGINES", "pop_engine", "predict_onnx"]

#: Values of ``geofm predict --engine``.
ENGINES = ("torch", "onnxruntime")

# predict_scene's arguments that are not settings here: the CLI or the file provides them,
# or they belong to the torch engine.
_NOT_SETTINGS = {
    "model", "input_path", "output_path", "engine", "bands", "preprocess", "extra_inputs",
    "device", "model_id",
}
_PREFIX = "--streaming."


def pop_engine(argv: list[str]) -> tuple[str | None, list[str]]:
    """``--engine NAME`` (or ``--engine=NAME``) taken out of ``argv``.

    Raises:
        ConfigError: an engine other than :data:`ENGINES`, or none after ``--engine``.
    """
    engine, rest = None, []
    args = iter(argv)
    for arg in args:
        if arg == "--engine":
            engine = next(args, "")
        elif arg.startswith("--engine="):
            engine = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    if engine is not None and engine not in ENGINES:
        raise ConfigError(f"--engine {engine!r}: choose one of {list(ENGINES)}.")
    return engine, rest


def _settings_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geofm predict --engine onnxruntime",
        description="Predict whole scenes with an exported ONNX file (no config, no checkpoint).",
        epilog="Settings of geofm.inference.predict_scene: --streaming.KEY VALUE (YAML values), "
        f"KEY one of {', '.join(sorted(_setting_names()))}.",
    )
    parser.add_argument(
        "--model", required=True, help="the exported .onnx file; its metadata <file>.json beside it"
    )
    parser.add_argument(
        "--providers",
        help="onnxruntime execution providers, comma-separated, in order of preference "
        "(default: CUDAExecutionProvider when available, then CPUExecutionProvider)",
    )
    parser.add_argument("--threads", type=int, help="CPU threads of onnxruntime (default: its own)")
    parser.add_argument(
        "--streaming",
        type=_yaml_dict,
        default={},
        help="settings as one YAML dict: '{input: scenes/, output_dir: out/, tile_size: 512}'",
    )
    parser.add_argument(
        "--predict_output_dir", "--predict-output-dir", help="the same as --streaming.output_dir"
    )
    return parser


def _setting_names() -> set[str]:
    from geofm.inference.streaming import predict_scene

    names = set(inspect.signature(predict_scene).parameters) - _NOT_SETTINGS
    return names | {"input", "output_dir", "suffix"}  # suffix: predict_scenes' output names


def _yaml_dict(text: str) -> dict[str, Any]:
    value = yaml.safe_load(text)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a YAML dict such as '{{tile_size: 512}}', got {text!r}")
    return value


def _dotted_settings(argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    """``--streaming.KEY VALUE`` pairs (``--streaming.KEY=VALUE``; a bare key is ``true``)
    taken out of ``argv``."""
    settings: dict[str, Any] = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith(_PREFIX):
            rest.append(arg)
            i += 1
            continue
        key, sep, text = arg[len(_PREFIX) :].partition("=")
        if not sep:
            if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                text = argv[i + 1]
                i += 1
            else:
                text = "true"
        i += 1
        # Paths stay text ("2020" is a folder name, not a number); lists are YAML.
        is_path = key in ("input", "output_dir") and not text.lstrip().startswith("[")
        settings[key.replace("-", "_")] = text if is_path else yaml.safe_load(text)
    return settings, rest


def predict_onnx(argv: list[str]) -> int:
    """Run ``geofm predict --engine onnxruntime`` with ``argv`` (after ``predict``; the
    ``--engine`` option already taken out).

    Returns:
        0 once every scene of this process is written.

    Raises:
        ConfigError: a torch-engine option (``-c``, ``--ckpt_path``), an unknown setting, or
            no input or output folder.
    """
    from geofm.registry.errors import close_names

    dotted, rest = _dotted_settings(argv)
    torch_options = [a for a in rest if a.split("=", 1)[0] in ("-c", "--config", "--ckpt_path", "--ckpt-path")]
    if torch_options:
        raise ConfigError(
            f"{torch_options[0].split('=', 1)[0]}: geofm predict --engine onnxruntime runs the "
            "exported file alone (it holds the weights and the preprocessing); drop the config "
            "and checkpoint, or use --engine torch."
        )
    args = _settings_parser().parse_args(rest)  # argparse's one-line error, exit 2
    settings = {**args.streaming, **dotted}
    known = _setting_names()
    for key in settings:
        if key not in known:
            close = close_names(key, sorted(known), n=3)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ConfigError(
                f"--streaming.{key}: unknown setting.{hint} Settings: {', '.join(sorted(known))}."
            )
    scenes = settings.pop("input", None)
    output_dir = settings.pop("output_dir", None) or args.predict_output_dir
    if not scenes or not output_dir:
        raise ConfigError(
            "geofm predict --engine onnxruntime needs --streaming.input (a folder of scenes, a "
            "scene, or a list) and --streaming.output_dir (or --predict_output_dir)."
        )

    from geofm.inference.onnx_engine import OnnxRuntimeModel
    from geofm.inference.streaming import predict_scenes

    providers = [p.strip() for p in args.providers.split(",") if p.strip()] if args.providers else None
    model = OnnxRuntimeModel(args.model, providers=providers, threads=args.threads)
    written = predict_scenes(
        model,
        scenes,
        output_dir,
        engine="onnxruntime",
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        **settings,
    )
    print(f"{len(written)} prediction(s) in {output_dir} ({model.providers[0]}).")
    return 0
