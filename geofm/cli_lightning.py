"""LightningCLI behind ``geofm fit|validate|test|predict`` (imported only for those commands).

Defaults a user gets without a word in the config, all under the run directory
(``trainer.default_root_dir``, ``runs/<config name>`` by default):

- ``checkpoints/``: ``best-*.ckpt`` (lowest ``val/loss``; detection: highest ``val/map``) and
  ``last.ckpt``, in one place for every invocation so that ``--ckpt_path last`` resumes;
- ``config.yaml``: the resolved config of the latest fit;
- ``logs/version_N/``: ``metrics.csv``, the invocation's config, and TensorBoard events when
  tensorboard is installed (a new version per invocation, so validate never erases fit logs);
- ``.geofm.lock`` while a fit runs (:mod:`geofm.locks`), so two fits never share the folder.

A config that lists its own ``ModelCheckpoint`` callbacks (TerraTorch's
``StateDictAwareModelCheckpoint`` included) replaces the default one; they write to the same
``checkpoints/`` unless they say otherwise, and one of them writes ``last.ckpt``
(:func:`geofm.callbacks.arrange_checkpoint_callbacks`). ``fast_dev_run`` writes no checkpoint.
TerraTorch class paths (``terratorch.tasks.X``) are read as geofm's (:mod:`geofm.compat`).

Nothing fails silently: config errors name the key path and the closest valid names
(:func:`geofm.errors.explain_argument_error`); checkpoints are written atomically and a bad one
is named (:mod:`geofm.checkpoint_io`); ``last``/``best`` that name no file, ``predict`` without
weights or without an output folder are errors; a resume whose config disagrees with the
checkpoint's hyper-parameters says which value applies (the checkpoint's).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities import rank_zero_warn

from geofm.callbacks import arrange_checkpoint_callbacks
from geofm.checkpoint_io import AtomicCheckpointIO, load_checkpoint_file
from geofm.compat.terratorch import TerratorchAliasError, is_alias_path, resolve_class_path, terratorch_aliases
from geofm.errors import CheckpointNotFoundError, ConfigError, explain_argument_error, one_line
from geofm.locks import RunLock

__all__ = [
    "GeofmCLI",
    "best_checkpoint",
    "compute_statistics_from_config",
    "fit_parser",
    "import_components",
    "run_lightning_cli",
]

log = logging.getLogger(__name__)


def import_components() -> None:
    """Import tasks, datamodules and callbacks so that short class names resolve in configs."""
    import geofm.callbacks  # noqa: F401
    import geofm.data.datamodules  # noqa: F401
    import geofm.tasks.classification  # noqa: F401
    import geofm.tasks.detection  # noqa: F401
    import geofm.tasks.mae  # noqa: F401
    import geofm.tasks.embedding  # noqa: F401
    import geofm.tasks.regression  # noqa: F401
    import geofm.tasks.segmentation  # noqa: F401


class SaveConfigBesideCheckpoints(SaveConfigCallback):
    """Also save a fit's resolved config as ``<run dir>/config.yaml``."""

    def save_config(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage == "fit":
            path = Path(trainer.default_root_dir) / "config.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            self.parser.save(self.config, str(path), skip_none=False, overwrite=True, multifile=False)


class GeofmCLI(LightningCLI):
    """LightningCLI with geofm's defaults and the ``--predict_output_dir`` option."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--predict_output_dir",
            "--predict-output-dir",
            type=str | None,
            default=None,
            help="Folder for predicted GeoTIFFs (detection: GeoJSON/GeoPackage), one per input.",
        )
        parser.add_argument(
            "--streaming",
            type=dict | None,
            default=None,
            help=(
                "Predict whole scenes of any size in bounded memory instead of whole files: "
                "settings of geofm.inference.predict_scene, e.g. "
                "'{tile_size: 512, overlap: 64, batch_size: 8, resume: true, overviews: true}'. "
                "Needs --predict_output_dir."
            ),
        )
        parser.add_argument(
            "--custom_modules",
            "--custom-modules",
            type=str | list[str] | None,
            default=None,
            help="Folder(s) of user modules imported before the config is parsed.",
        )
        parser.add_argument(
            "--custom_modules_path",
            "--custom-modules-path",
            type=str | None,
            default=None,
            help="TerraTorch's name for --custom_modules (one folder).",
        )
        parser.add_argument(
            "--allow_untrained",
            "--allow-untrained",
            action="store_true",
            help=(
                "Run validate/test/predict with the model's initial weights when there is no "
                "checkpoint (no --ckpt_path, or last/best not found). Off: that is an error."
            ),
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse ``args`` (geofm always passes its argv, so Lightning's warning about ``args``
        and ``sys.argv`` both being set does not apply); errors name the key path."""
        if isinstance(args, list):
            _check_config_files(_config_files(args))
        try:
            if isinstance(args, (dict, Namespace)):
                self.config = parser.parse_object(args)
            else:
                self.config = parser.parse_args(args)
        except argparse.ArgumentError as exc:
            raise ConfigError(self._explain(str(exc), args)) from exc

    def _explain(self, message: str, args: Any) -> str:
        """One line for a jsonargparse error: the key path and the closest accepted names."""
        parser = self.parser
        if isinstance(args, list) and args and args[0] in getattr(self, "_subcommand_parsers", {}):
            parser = self._subcommand_parsers[args[0]]
        keys = [a.dest for a in parser._actions if a.dest and not a.dest.endswith(".help")]
        return explain_argument_error(message, keys, _class_names())

    def instantiate_classes(self) -> None:
        """Build model, data and trainer; a failed build names the config section it came from."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        _check_optional_dependencies(config)
        try:
            super().instantiate_classes()
        except Exception as exc:
            text = str(exc)
            if "Given value" not in text and "Does not validate" not in text:
                raise  # not jsonargparse's wrapper: the error is already the component's own
            # jsonargparse wraps the component's own error with a dump of the parsed config;
            # report the component's error, prefixed with the section it came from.
            cause = exc.__cause__
            config = self.config[self.subcommand] if self.subcommand else self.config
            key = "model"
            for section, class_path in _class_paths(config):
                if f"class_path='{class_path}'" in text:
                    key = f"{section} ({class_path.rsplit('.', 1)[-1]})"
                    break
            detail = one_line(cause) if cause is not None else explain_argument_error(text)
            raise ConfigError(f"{key}: {detail}") from (cause or exc)

    def _parse_ckpt_path(self) -> None:
        """Resolve ``--ckpt_path last|best`` to a file of the run directory, check that the file
        reads, and take the model's hyper-parameters from it (as Lightning does for a path).

        Where the config or command line disagree with the checkpoint's hyper-parameters, the
        checkpoint's apply (its optimizer state is restored too): a warning names each key, the
        checkpoint's value and the ignored one, and the saved ``config.yaml`` records the truth.
        """
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        ckpt_path = config.get("ckpt_path")
        if not ckpt_path:
            return
        resolved = self._resolve_checkpoint(ckpt_path)
        if resolved is None or not Path(resolved).is_file():
            return  # `last`/`best` with no file (checked when the command runs) or a remote URL
        config["ckpt_path"] = resolved
        checkpoint = load_checkpoint_file(resolved)
        hparams = dict(checkpoint.get("hyper_parameters") or {})
        hparams.pop("_instantiator", None)
        if not hparams:
            return
        self._warn_hparam_changes(subcommand, resolved, config.get("model"), hparams)
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        try:
            self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
        except argparse.ArgumentError as exc:
            raise ConfigError(
                f"The hyper-parameters saved in checkpoint '{resolved}' do not fit this version's "
                f"model: {self._explain(str(exc), [subcommand])}"
            ) from exc

    @staticmethod
    def _warn_hparam_changes(subcommand: str, ckpt_path: str, model: Any, hparams: dict[str, Any]) -> None:
        if not isinstance(model, Namespace):
            return
        changes = []
        class_path = hparams.get("_class_path")
        if class_path and model.get("class_path") and class_path != model.get("class_path"):
            changes.append(f"model.class_path: {class_path} (the config says {model.get('class_path')})")
        init_args = model.get("init_args") or Namespace()
        for key, value in hparams.items():
            if key.startswith("_") or key not in init_args:
                continue
            given = init_args.get(key)
            if _plain(given) != _plain(value):
                changes.append(f"model.init_args.{key}: {value!r} (the config says {given!r})")
        if not changes:
            return
        verb = "Resuming from" if subcommand == "fit" else "Using"
        rank_zero_warn(
            f"{verb} '{ckpt_path}': the checkpoint's hyper-parameters apply, not the config's: "
            + "; ".join(changes)
            + ". The saved config.yaml records the checkpoint's values."
            + (" To train with other values, start a new run (another trainer.default_root_dir)."
               if subcommand == "fit" else ""),
            category=UserWarning,
        )

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> Any:
        root = Path(config.get("default_root_dir") or self._default_run_dir())
        config["default_root_dir"] = str(root)
        if config.get("logger") in (None, True):
            csv_logger = CSVLogger(root, name="logs")
            loggers: list[Any] = [csv_logger]
            if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
                loggers.append(TensorBoardLogger(root, name="logs", version=csv_logger.version))
            config["logger"] = loggers
        user_callbacks = list(config.get("callbacks") or [])
        fast_dev_run = bool(config.get("fast_dev_run"))
        # fast_dev_run is a smoke test: Lightning suppresses checkpoints, except the last.ckpt
        # that ModelCheckpoint writes when training ends; geofm's default is not even added.
        arrange_checkpoint_callbacks(user_callbacks + callbacks, root / "checkpoints", fast_dev_run)
        if fast_dev_run and not any(isinstance(cb, ModelCheckpoint) for cb in user_callbacks + callbacks):
            config["enable_checkpointing"] = False  # nor Lightning's own default callback
        if config.get("enable_checkpointing", True) is not False and not fast_dev_run and not any(
            isinstance(cb, ModelCheckpoint) for cb in user_callbacks + callbacks
        ):
            # Tasks without a validation loss (detection: val/map) name their own monitor.
            monitor, mode = getattr(self.model, "checkpoint_monitor", ("val/loss", "min"))
            callbacks.append(
                ModelCheckpoint(
                    dirpath=root / "checkpoints",
                    filename="best-{epoch}-{step}",
                    monitor=monitor,
                    mode=mode,
                    save_last=True,
                )
            )
        plugins = config.get("plugins")
        plugins = list(plugins) if isinstance(plugins, list) else ([] if plugins is None else [plugins])
        strategy = config.get("strategy", "auto")
        # Lightning stages a checkpoint in the system temp folder and moves it over the target,
        # a non-atomic copy across filesystems: write beside it instead (DeepSpeed and XLA
        # bring their own checkpoint IO).
        if not any(isinstance(p, CheckpointIO) for p in plugins) and isinstance(strategy, str) and not any(
            name in strategy for name in ("deepspeed", "xla")
        ):
            config["plugins"] = [*plugins, AtomicCheckpointIO()]
        return super()._instantiate_trainer(config, callbacks)

    def _default_run_dir(self) -> Path:
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        configs = config.get("config") or []
        name = Path(str(configs[-1])).stem if configs else "run"
        return Path("runs") / name

    def _run_dir(self) -> Path:
        """The run directory (``trainer.default_root_dir``, else ``runs/<config name>``)."""
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        trainer = config.get("trainer") or {}
        return Path(trainer.get("default_root_dir") or self._default_run_dir())

    def _run_subcommand(self, subcommand: str) -> None:
        self._check_checkpoint(subcommand)
        if subcommand == "predict":
            self._check_predict_output()
        if subcommand == "fit":
            with self._run_lock():
                self._run_subcommand_unlocked(subcommand)
        else:
            self._run_subcommand_unlocked(subcommand)

    @contextlib.contextmanager
    def _run_lock(self) -> Iterator[None]:
        """Hold ``<run dir>/.geofm.lock`` while fitting (global rank 0 only: under DDP the other
        processes re-run this command with their rank in the environment)."""
        if _launch_rank() != 0:
            yield
            return
        with RunLock(self.trainer.default_root_dir, purpose="geofm fit"):
            yield

    def _check_checkpoint(self, subcommand: str) -> None:
        """``last``/``best`` that name no file, and predict without weights, are errors."""
        config = self.config[subcommand]
        ckpt_path = self.config_init[subcommand].get("ckpt_path")
        allow = bool(config.get("allow_untrained"))
        folder = Path(self.trainer.default_root_dir) / "checkpoints"
        if ckpt_path in ("last", "best"):
            found = self._lightning_last() if ckpt_path == "last" else None
            if found:
                self.config_init[subcommand]["ckpt_path"] = found
                return
            if subcommand == "fit" and ckpt_path == "last":
                log.info("No last.ckpt in %s: training starts from the beginning.", folder)
                self.config_init[subcommand]["ckpt_path"] = None
                return
            wanted = "last.ckpt" if ckpt_path == "last" else "best-*.ckpt"
            if allow and subcommand != "fit":
                rank_zero_warn(f"No {wanted} in {folder}: --allow-untrained, so the model's initial weights are used.")
                self.config_init[subcommand]["ckpt_path"] = None
                return
            raise CheckpointNotFoundError(
                f"--ckpt_path {ckpt_path}: no {wanted} in {folder} (the run directory's checkpoints; "
                f"{_listing(folder)}). Run geofm fit first, set trainer.default_root_dir to the run "
                "that has it, or pass a checkpoint file"
                + (", or --allow-untrained to use the untrained model." if subcommand != "fit" else ".")
            )
        # A model whose weights need no checkpoint (an EmbeddingTask's backbone) says so.
        needs = getattr(self.model, "needs_checkpoint", True)
        if ckpt_path is None and subcommand == "predict" and not allow and needs:
            raise ConfigError(
                "geofm predict has no --ckpt_path: it would write predictions of an untrained model. "
                f"Pass --ckpt_path FILE, or last or best (looked up in {folder}; {_listing(folder)}), "
                "or --allow-untrained to predict with the model's initial weights."
            )

    def _lightning_last(self) -> str | None:
        """The newest ``last`` checkpoint of the trainer's own ModelCheckpoint callbacks."""
        found: set[str] = set()
        for callback in self.trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint):
                found |= {str(p) for p in callback._find_last_checkpoints(self.trainer)}
        existing = [p for p in found if Path(p).is_file()]
        return max(existing, key=lambda p: Path(p).stat().st_mtime) if existing else None

    def _check_predict_output(self) -> None:
        config = self.config["predict"]
        if config.get("predict_output_dir"):
            return
        if any(isinstance(cb, BasePredictionWriter) for cb in self.trainer.callbacks):
            return
        raise ConfigError(
            "geofm predict needs --predict_output_dir DIR (or a prediction-writer callback in "
            "trainer.callbacks): without one the predictions are computed and thrown away."
        )

    def _run_subcommand_unlocked(self, subcommand: str) -> None:
        config = self.config[subcommand]
        if subcommand == "predict" and config.get("streaming") is not None:
            if not config.get("predict_output_dir"):
                raise ValueError("--streaming writes its outputs to --predict_output_dir: set it too.")
            from geofm.inference.task_scenes import predict_task_scenes

            # A task that streams scenes its own way (EmbeddingTask) brings its function.
            stream = getattr(self.model, "stream_scenes", None)
            (stream or functools.partial(predict_task_scenes, self.model))(
                self.datamodule,
                self.config_init[subcommand].get("ckpt_path"),
                config["predict_output_dir"],
                dict(config["streaming"]),
                device=self.trainer.strategy.root_device,  # what --trainer.accelerator chose
            )
            return
        super()._run_subcommand(subcommand)

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        # A checkpoint is data: it must never run code (Lightning would default to False).
        if "weights_only" in self._subcommand_method_arguments[subcommand]:
            if kwargs.get("weights_only") is None:
                kwargs["weights_only"] = True
        return kwargs

    def _resolve_checkpoint(self, ckpt_path: str | None) -> str | None:
        """``last`` and ``best`` name files of the run directory's ``checkpoints/``.

        Returns:
            The file; ``None`` for ``last``/``best`` when the run directory has none; other
            values as they are.

        Raises:
            CheckpointNotFoundError: A local path that names no file.
        """
        folder = self._run_dir() / "checkpoints"
        if ckpt_path == "last":
            last = folder / "last.ckpt"
            return str(last) if last.is_file() else None
        if ckpt_path == "best":
            try:
                return str(best_checkpoint(folder))
            except FileNotFoundError:
                return None
        if ckpt_path and "://" not in ckpt_path and ckpt_path != "hpc" and not ckpt_path.startswith("registry"):
            if not Path(ckpt_path).is_file():
                raise CheckpointNotFoundError(
                    f"--ckpt_path '{ckpt_path}' does not exist (the run directory {folder.parent} has "
                    f"{_listing(folder)})."
                )
        return ckpt_path

    def before_predict(self) -> None:
        out_dir = self.config[self.subcommand].get("predict_output_dir")
        if out_dir:
            # Written to disk as they come: keeping every prediction in memory too would grow
            # with the number of inputs.
            self.config_init[self.subcommand]["return_predictions"] = False
            if getattr(self.model, "model_task", None) == "object_detection":
                from geofm.inference.vector_writer import VectorPredictionWriter

                fmt = self.model.hparams.get("prediction_format", "geojson")
                self.trainer.callbacks.append(VectorPredictionWriter(out_dir, fmt))
                return
            from geofm.inference.prediction_writer import GeoTiffPredictionWriter

            # A task with outputs of its own kind (EmbeddingTask) brings its writer.
            writer = getattr(self.model, "prediction_writer", GeoTiffPredictionWriter)
            self.trainer.callbacks.append(writer(out_dir))


def _listing(folder: Path) -> str:
    """What a checkpoints folder holds, for messages."""
    names = sorted(p.name for p in folder.glob("*.ckpt")) if folder.is_dir() else []
    if not names:
        return "no checkpoints" if folder.is_dir() else f"no {folder.name}/ folder"
    return "checkpoints: " + ", ".join(names[:6]) + (" ..." if len(names) > 6 else "")


def _plain(value: Any) -> Any:
    """Namespaces as dicts, tuples as lists: the forms a checkpoint's hyper-parameters take."""
    if isinstance(value, Namespace):
        value = value.as_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _launch_rank() -> int:
    """This process's global rank from the launcher's environment (0 when not launched)."""
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if re.fullmatch(r"\d+", os.environ.get(key, "")):
            return int(os.environ[key])
    return 0


def _class_names() -> list[str]:
    """Names of the tasks and datamodules a config can name by ``class_path``."""
    names: set[str] = set()
    stack: list[type] = [LightningModule, LightningDataModule]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            if sub.__module__.startswith("geofm"):
                names.add(sub.__name__)
            stack.append(sub)
    return sorted(names)


def _config_files(argv: list[str]) -> list[Path]:
    """The ``-c``/``--config`` files of a command line."""
    files = []
    for i, arg in enumerate(argv):
        if arg in ("-c", "--config") and i + 1 < len(argv):
            files.append(Path(argv[i + 1]))
        elif arg.startswith("--config="):
            files.append(Path(arg.split("=", 1)[1]))
    return [f for f in files if f.is_file()]


def _walk_class_paths(value: Any, key: str) -> Iterator[tuple[str, str]]:
    """``(key path, class_path)`` of every ``class_path`` in a config (dicts, lists, Namespaces)."""
    if isinstance(value, Namespace):
        value = value.as_dict()
    if isinstance(value, dict):
        class_path = value.get("class_path")
        if isinstance(class_path, str):
            yield key, class_path
        for name, item in value.items():
            yield from _walk_class_paths(item, f"{key}.{name}" if key else str(name))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _walk_class_paths(item, f"{key}[{i}]")


def _class_paths(config: Any) -> list[tuple[str, str]]:
    """Sections with a class, the model and data first (as failed builds are named)."""
    found = list(_walk_class_paths(config, ""))
    return sorted(found, key=lambda kv: (kv[0].split(".")[0] not in ("model", "data"), kv[0]))


def _check_config_files(files: list[Path]) -> None:
    """TerraTorch class paths that geofm lacks fail here, before jsonargparse's error dump."""
    for file in files:
        try:
            data = yaml.safe_load(file.read_text())
        except yaml.YAMLError:
            return  # jsonargparse reports the file's syntax error
        for key, class_path in _walk_class_paths(data, ""):
            if is_alias_path(class_path):
                try:
                    resolve_class_path(class_path)
                except TerratorchAliasError as exc:
                    raise ConfigError(f"{key}.class_path: {exc}") from exc


# class name -> the optional package it needs (Lightning raises a bare ModuleNotFoundError).
_OPTIONAL: dict[str, str] = {
    "RichProgressBar": "rich",
    "RichModelSummary": "rich",
    "WandbLogger": "wandb",
    "MLFlowLogger": "mlflow",
    "CometLogger": "comet_ml",
    "NeptuneLogger": "neptune",
}


def _check_optional_dependencies(config: Any) -> None:
    """A callback or logger whose package is missing: name the key and the pip command."""
    trainer = config.get("trainer") if isinstance(config, Namespace) else None
    for key, class_path in _walk_class_paths(trainer, "trainer") if trainer is not None else ():
        name = class_path.rsplit(".", 1)[-1]
        package = _OPTIONAL.get(name)
        if package and importlib.util.find_spec(package) is None:
            raise ConfigError(
                f"{key}: {name} needs the '{package}' package, which is not installed: "
                f"pip install {package} (or remove {name} from the config)."
            )


def best_checkpoint(folder: str | Path) -> Path:
    """The newest ``best-*.ckpt`` that the default checkpoint callback wrote in ``folder``."""
    best = sorted(Path(folder).glob("best-*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not best:
        raise FileNotFoundError(f"No best-*.ckpt in {folder}: did validation run during fit?")
    return best[-1]


class GeofmTrainer(Trainer):
    """Lightning's ``Trainer`` whose batch limits read ``1`` as one batch.

    Lightning declares ``limit_*_batches`` as ``float | int``, so the config parser turns
    ``--trainer.limit_train_batches 1`` into ``1.0``, the whole epoch, and ``3`` into ``3.0``,
    which Lightning rejects. Declared ``int | float`` here, integers stay batch counts and
    floats stay fractions, as Lightning documents them. Every other argument is Lightning's.
    """

    def __init__(
        self,
        *,
        limit_train_batches: int | float | None = None,
        limit_val_batches: int | float | None = None,
        limit_test_batches: int | float | None = None,
        limit_predict_batches: int | float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            limit_train_batches=limit_train_batches,
            limit_val_batches=limit_val_batches,
            limit_test_batches=limit_test_batches,
            limit_predict_batches=limit_predict_batches,
            **kwargs,
        )


def run_lightning_cli(argv: list[str], run: bool = True) -> GeofmCLI:
    """Run ``geofm <fit|validate|test|predict> ...``.

    With ``run=False``, ``argv`` has no subcommand: the config is parsed and the task and
    datamodule are built, nothing runs (used to check configs).
    """
    import_components()
    with terratorch_aliases():
        return GeofmCLI(args=argv, run=run, **_cli_kwargs())


def _cli_kwargs() -> dict[str, Any]:
    # Errors raise (and geofm.cli prints one line) instead of jsonargparse's usage dump + exit.
    quiet = {"exit_on_error": False}
    return {
        "model_class": LightningModule,
        "datamodule_class": LightningDataModule,
        "trainer_class": GeofmTrainer,
        "subclass_mode_model": True,
        "subclass_mode_data": True,
        "seed_everything_default": 0,
        "save_config_callback": SaveConfigBesideCheckpoints,
        "save_config_kwargs": {"overwrite": True},
        "parser_kwargs": {**quiet, **{command: dict(quiet) for command in ("fit", "validate", "test", "predict")}},
    }


class _ParserReady(Exception):
    """Carries the parser out of LightningCLI's constructor, which would go on to parse."""

    def __init__(self, parser: LightningArgumentParser) -> None:
        super().__init__("parser ready")
        self.parser = parser


class _ParserOnlyCLI(GeofmCLI):
    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        raise _ParserReady(self._subcommand_parsers["fit"])


def fit_parser() -> LightningArgumentParser:
    """The parser of ``geofm fit`` (every key a fit config may hold), nothing parsed or built."""
    import_components()
    try:
        _ParserOnlyCLI(args=[], run=True, **_cli_kwargs())
    except _ParserReady as ready:
        return ready.parser
    raise RuntimeError("LightningCLI did not reach parse_arguments")  # pragma: no cover


def compute_statistics_from_config(
    config: str | Path, output: str | Path | None = None, extra_args: list[str] | None = None
) -> Path:
    """Compute per-band statistics of the training split of the config's datamodule.

    Args:
        config: A fit config with a ``data`` section.
        output: Where to write them (default ``statistics.yaml`` beside the config).
        extra_args: ``--data.init_args.X value`` overrides.

    Returns:
        The written file, loadable as the datamodule's ``means``/``stds`` file.
    """
    from jsonargparse import ArgumentParser

    from geofm.data.statistics import compute_statistics, write_statistics

    import_components()
    config = Path(config)
    if not config.is_file():
        raise FileNotFoundError(f"Config file '{config}' does not exist.")
    data = (yaml.safe_load(config.read_text()) or {}).get("data")
    if data is None:
        raise KeyError(f"Config '{config}' has no 'data' section to compute statistics for.")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningDataModule, "data")
    cfg = parser.parse_object({"data": data})
    if extra_args:
        cfg = parser.parse_args(extra_args, namespace=cfg)
    datamodule = parser.instantiate_classes(cfg).data
    stats = compute_statistics(datamodule)
    out = Path(output) if output else config.with_name("statistics.yaml")
    write_statistics(stats, out)
    return out
