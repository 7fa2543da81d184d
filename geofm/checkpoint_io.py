"""Checkpoint (and other run) files: atomic writes on any local filesystem, reads that name a
bad file.

Lightning's ``TorchCheckpointIO`` writes through an fsspec transaction whose temporary file is
made by ``tempfile.mkstemp()`` in the system temp folder, then *moved* over the target: across
filesystems (``/tmp`` on tmpfs, the run directory on a network disk) the move is a copy, and a
crash during it leaves a truncated ``last.ckpt``. :class:`AtomicCheckpointIO` stages the
temporary file beside the target, fsyncs it and renames it over the target with
``os.replace``, which is atomic within one filesystem.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from geofm.errors import CheckpointError, CheckpointNotFoundError

__all__ = ["AtomicCheckpointIO", "atomic_torch_save", "atomic_write", "load_checkpoint_file"]


def _is_local(path: str | os.PathLike) -> bool:
    text = str(path)
    return "://" not in text or text.startswith("file://")


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Write a file through ``write(handle)`` so that it is either the old file or the new one.

    The data goes to a hidden temporary file in the target's folder, is flushed and fsynced,
    then renamed over the target; on any error the temporary file is removed.
    """
    path = Path(str(path).removeprefix("file://"))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)  # so that the rename itself survives a power cut


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` that leaves either the old file or the complete new one."""
    atomic_write(path, lambda handle: torch.save(obj, handle))


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not possible on every platform (Windows); the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint_file(
    path: str | os.PathLike,
    map_location: Any = "cpu",
    weights_only: bool | None = True,
) -> dict[str, Any]:
    """``torch.load`` a checkpoint; a missing, truncated or corrupt file is a
    :class:`~geofm.errors.CheckpointError` that names it.

    Args:
        path: The checkpoint file.
        map_location: As for ``torch.load``.
        weights_only: As for ``torch.load``; geofm always reads checkpoints as data.

    Returns:
        The checkpoint's dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"Checkpoint '{path}' does not exist.")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=weights_only)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc).lower() or "weights only" in str(exc).lower():
            raise CheckpointError(
                f"Checkpoint '{path}' holds objects other than tensors and plain values; geofm reads "
                "checkpoints with weights_only=True so that a file never runs code. Re-save its "
                "state_dict, or use a checkpoint written by geofm."
            ) from exc
        raise _corrupt(path, exc) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise _corrupt(path, exc) from exc
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"Checkpoint '{path}' holds a {type(checkpoint).__name__}, not a checkpoint dict.")
    return checkpoint


def _corrupt(path: Path, exc: BaseException) -> CheckpointError:
    size = path.stat().st_size if path.exists() else 0
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return CheckpointError(
        f"Checkpoint '{path}' ({size} bytes) is truncated or corrupt and cannot be read ({reason}). "
        "Copy it again, or use another checkpoint of the run (its checkpoints/ folder)."
    )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with atomic local writes and reads that name a bad file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local(path):
            # Remote stores (s3://, gs://...) keep Lightning's transaction, which uploads whole.
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(
        self,
        path: Any,
        map_location: Callable | Any = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        if not _is_local(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        return load_checkpoint_file(str(path).removeprefix("file://"), map_location, weights_only)
