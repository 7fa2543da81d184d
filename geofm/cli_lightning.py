"""LightningCLI behind ``geofm fit|validate|test|predict`` (imported only for those commands).

Defaults a user gets without a word in the config, all under the run directory
(``trainer.default_root_dir``, ``runs/<config name>`` by default):

- ``checkpoints/``: ``best-*.ckpt`` (lowest ``val/loss``) and ``last.ckpt``, in one place for
  every invocation so that ``--ckpt_path last`` resumes;
- ``config.yaml``: the resolved config of the latest fit;
- ``logs/version_N/``: ``metrics.csv``, the invocation's config, and TensorBoard events when
  tensorboard is installed (a new version per invocation, so validate never erases fit logs).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

__all__ = [
    "GeofmCLI",
    "best_checkpoint",
    "compute_statistics_from_config",
    "import_components",
    "run_lightning_cli",
]

log = logging.getLogger(__name__)


def import_components() -> None:
    """Import tasks and datamodules so that short class names resolve in configs."""
    import geofm.data.datamodules  # noqa: F401
    import geofm.tasks.classification  # noqa: F401
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
            help="Folder for predicted GeoTIFFs (one per input, named after it).",
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
        if config.get("enable_checkpointing", True) is not False and not any(
            isinstance(cb, ModelCheckpoint) for cb in user_callbacks + callbacks
        ):
            callbacks.append(
                ModelCheckpoint(
                    dirpath=root / "checkpoints",
                    filename="best-{epoch}-{step}",
                    monitor="val/loss",
                    mode="min",
                    save_last=True,
                )
            )
        return super()._instantiate_trainer(config, callbacks)

    def _default_run_dir(self) -> Path:
        config = self.config[self.subcommand] if self.subcommand else self.config
        configs = config.get("config") or []
        name = Path(str(configs[-1])).stem if configs else "run"
        return Path("runs") / name

    def _run_subcommand(self, subcommand: str) -> None:
        config = self.config[subcommand]
        if subcommand == "predict" and config.get("streaming") is not None:
            if not config.get("predict_output_dir"):
                raise ValueError("--streaming writes GeoTIFFs: set --predict_output_dir too.")
            from geofm.inference.task_scenes import predict_task_scenes

            predict_task_scenes(
                self.model,
                self.datamodule,
                self._resolve_checkpoint(config.get("ckpt_path")),
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
        """``last`` and ``best`` name files of the run directory's ``checkpoints/``."""
        folder = Path(self.trainer.default_root_dir) / "checkpoints"
        if ckpt_path == "last":
            return str(folder / "last.ckpt")
        if ckpt_path == "best":
            return str(best_checkpoint(folder))
        return ckpt_path

    def before_predict(self) -> None:
        out_dir = self.config[self.subcommand].get("predict_output_dir")
        if out_dir:
            # Written to disk as they come: keeping every prediction in memory too would grow
            # with the number of inputs.
            self.config_init[self.subcommand]["return_predictions"] = False
            from geofm.inference.prediction_writer import GeoTiffPredictionWriter

            self.trainer.callbacks.append(GeoTiffPredictionWriter(out_dir))


def best_checkpoint(folder: str | Path) -> Path:
    """The newest ``best-*.ckpt`` that the default checkpoint callback wrote in ``folder``."""
    best = sorted(Path(folder).glob("best-*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not best:
        raise FileNotFoundError(f"No best-*.ckpt in {folder}: did validation run during fit?")
    return best[-1]


def run_lightning_cli(argv: list[str], run: bool = True) -> GeofmCLI:
    """Run ``geofm <fit|validate|test|predict> ...``.

    With ``run=False``, ``argv`` has no subcommand: the config is parsed and the task and
    datamodule are built, nothing runs (used to check configs).
    """
    import_components()
    return GeofmCLI(
        model_class=LightningModule,
        datamodule_class=LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_callback=SaveConfigBesideCheckpoints,
        save_config_kwargs={"overwrite": True},
        args=argv,
        run=run,
    )


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
