"""Callbacks a config can name by class name (``class_path: StateDictAwareModelCheckpoint``).

:class:`StateDictAwareModelCheckpoint` is TerraTorch's checkpoint callback under the same name
(``terratorch.cli_tools.StateDictAwareModelCheckpoint`` and ``terratorch.callbacks...`` read as
this class). A config that lists any ``ModelCheckpoint`` replaces geofm's default one; the CLI
puts those without a ``dirpath`` in the run directory's ``checkpoints/`` and lets exactly one
of them write ``last.ckpt`` (:func:`arrange_checkpoint_callbacks`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback, ModelCheckpoint

__all__ = ["StateDictAwareModelCheckpoint", "arrange_checkpoint_callbacks"]

log = logging.getLogger(__name__)


class StateDictAwareModelCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` that can run beside a weights-only twin.

    Lightning refuses two stateful callbacks with the same state key; TerraTorch configs pair a
    full checkpoint with a ``save_weights_only`` one on the same monitor, so the key includes
    ``save_weights_only``. Under ``fast_dev_run`` nothing is written, ``last.ckpt`` included
    (Lightning's ``on_train_end`` would write it).

    Args:
        save_best_only: TerraTorch's spelling of ``save_top_k=1``.
        Every other argument is Lightning's ``ModelCheckpoint``'s.
    """

    def __init__(
        self,
        dirpath: str | Path | None = None,
        filename: str | None = None,
        monitor: str | None = None,
        verbose: bool = False,
        save_last: bool | None = None,
        save_top_k: int = 1,
        save_best_only: bool = False,
        mode: str = "min",
        save_weights_only: bool = False,
        auto_insert_metric_name: bool = True,
        every_n_train_steps: int | None = None,
        train_time_interval: timedelta | None = None,
        every_n_epochs: int | None = None,
        save_on_train_epoch_end: bool | None = None,
        enable_version_counter: bool = True,
    ) -> None:
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            monitor=monitor,
            verbose=verbose,
            save_last=save_last,
            save_top_k=1 if save_best_only else save_top_k,
            save_weights_only=save_weights_only,
            mode=mode,
            auto_insert_metric_name=auto_insert_metric_name,
            every_n_train_steps=every_n_train_steps,
            train_time_interval=train_time_interval,
            every_n_epochs=every_n_epochs,
            save_on_train_epoch_end=save_on_train_epoch_end,
            enable_version_counter=enable_version_counter,
        )

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            monitor=self.monitor,
            mode=self.mode,
            every_n_train_steps=self._every_n_train_steps,
            every_n_epochs=self._every_n_epochs,
            train_time_interval=self._train_time_interval,
            save_weights_only=self.save_weights_only,
        )

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.fast_dev_run:
            return  # Lightning's own saves skip fast_dev_run; its last-at-end does not
        super().on_train_end(trainer, pl_module)


def arrange_checkpoint_callbacks(callbacks: Sequence[Callback], folder: Path, fast_dev_run: bool) -> None:
    """Fit the configured ``ModelCheckpoint`` callbacks to geofm's run directory, in place.

    - those without ``dirpath`` write to ``folder`` (``<run dir>/checkpoints``), where
      ``--ckpt_path last|best`` look;
    - exactly one writes ``last.ckpt``: the first full (not weights-only) one that asks for
      it (else the first that asks), else the first full one that leaves ``save_last`` unset;
      ``save_last: false`` everywhere is respected. Two writers would overwrite each other;
    - under ``fast_dev_run`` none writes ``last.ckpt`` (Lightning writes it at the end of
      training even then).

    Args:
        callbacks: The trainer's callbacks (others are left alone).
        folder: The run directory's ``checkpoints/`` folder.
        fast_dev_run: The trainer's ``fast_dev_run`` setting.
    """
    checkpoints = [cb for cb in callbacks if isinstance(cb, ModelCheckpoint)]
    for callback in checkpoints:
        if callback.dirpath is None:
            callback.dirpath = str(folder)
    if fast_dev_run:
        for callback in checkpoints:
            callback.save_last = False
        return
    asking = [cb for cb in checkpoints if cb.save_last]
    writer = next((cb for cb in asking if not cb.save_weights_only), asking[0] if asking else None)
    if writer is None:
        writer = next((cb for cb in checkpoints if cb.save_last is None and not cb.save_weights_only), None)
        if writer is not None:
            writer.save_last = True
            log.info("%s writes last.ckpt (for --ckpt_path last).", type(writer).__name__)
    for callback in checkpoints:
        if callback is not writer and callback.save_last:
            log.warning(
                "Only one checkpoint callback writes last.ckpt: %s(filename=%r) does not.",
                type(callback).__name__,
                callback.filename,
            )
            callback.save_last = False
