"""Lock files that keep two processes out of one run directory or one output.

A lock is a small JSON file (holder pid, host, start time, a token, and what it does) created
with ``O_CREAT | O_EXCL``, which is atomic on local and NFSv3+ filesystems. A lock left by a
process that no longer runs on this host is stale and is taken over with a warning; a lock
from another host cannot be checked from here, so the error says how to remove it.

- :class:`RunLock`: ``<run dir>/.geofm.lock``, held by ``geofm fit``;
- :class:`OutputLock`: ``<output>.lock``, held while a streamed scene is written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from geofm.errors import GeofmError

__all__ = [
    "LOCK_NAME",
    "FileLock",
    "LockedError",
    "OutputLock",
    "OutputLockedError",
    "RunLock",
    "RunLockedError",
    "pid_alive",
]

log = logging.getLogger(__name__)

LOCK_NAME = ".geofm.lock"


class LockedError(GeofmError, RuntimeError):
    """Another live process holds the lock."""


class RunLockedError(LockedError):
    """The run directory is locked by another live process."""


class OutputLockedError(LockedError):
    """The output is being written by another live process."""


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a zombie counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    except OSError:
        return True  # cannot tell: assume alive rather than break its lock
    try:  # a zombie has exited; only its parent has not reaped it yet
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


class FileLock:
    """An exclusive lock file, for the duration of a ``with`` block or acquire/release.

    Args:
        path: The lock file.
        purpose: What the holder does, written into the lock.
    """

    #: Raised when a live process holds the lock.
    error: type[LockedError] = LockedError

    def __init__(self, path: str | Path, purpose: str = "geofm") -> None:
        self.path = Path(path)
        self.info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:500],
            "purpose": purpose,
            "token": secrets.token_hex(8),
        }
        self.held = False

    def read_holder(self) -> dict[str, Any] | None:
        """The holder's record; ``None`` without a lock, ``{}`` when it is unreadable."""
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # being written by its creator, or damaged

    def _stale(self, holder: dict[str, Any]) -> bool:
        if not holder:  # unreadable: stale once nobody could still be writing it
            try:
                return time.time() - self.path.stat().st_mtime > 60
            except FileNotFoundError:
                return True
        pid = holder.get("pid")
        return holder.get("host") == self.info["host"] and isinstance(pid, int) and not pid_alive(pid)

    def acquire(self) -> None:
        """Take the lock, taking over a stale one.

        Raises:
            LockedError: A live process, or one on another host, holds it.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self.read_holder()
                if holder is None:
                    continue  # released meanwhile
                if not self._stale(holder):
                    raise self.error(self.held_message(holder)) from None
                log.warning(
                    "Taking over the stale lock %s: its holder (pid %s on %s, started %s) is no "
                    "longer running.",
                    self.path,
                    holder.get("pid", "?"),
                    holder.get("host", "?"),
                    holder.get("started", "?"),
                )
                self._remove_stale(holder)
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump(self.info, handle)
            self.held = True
            return
        raise self.error(self.held_message(self.read_holder() or {}))

    def _remove_stale(self, holder: dict[str, Any]) -> None:
        # Move it aside first: the rename is atomic, so of two processes taking over the same
        # stale lock only one removes it, and a fresh lock moved by mistake is put back.
        aside = self.path.with_name(f"{self.path.name}.stale-{self.info['token']}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        try:
            moved = json.loads(aside.read_text())
        except (OSError, ValueError):
            moved = {}
        if moved and moved != holder:
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)
        aside.unlink(missing_ok=True)

    def held_message(self, holder: dict[str, Any]) -> str:
        """The error when ``holder`` holds the lock."""
        return f"{self.path} is held by {_who(holder)}. {_remedy(holder, self.path)}"

    def release(self) -> None:
        """Remove the lock if this process still holds it."""
        if not self.held:
            return
        self.held = False
        holder = self.read_holder()
        if holder and holder.get("token") == self.info["token"]:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _who(holder: dict[str, Any]) -> str:
    if not holder:
        return "a process that left an unreadable lock"
    command = f" ({holder['command']})" if holder.get("command") else ""
    return (
        f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started "
        f"{holder.get('started', '?')}{command}"
    )


def _remedy(holder: dict[str, Any], path: Path) -> str:
    if holder.get("host") == socket.gethostname():
        return f"Wait for it to finish or stop it; delete {path} only if no such process runs."
    return f"If that process is no longer running, delete the lock file {path} and run again."


class RunLock(FileLock):
    """``<folder>/.geofm.lock``: one ``geofm fit`` per run directory.

    Args:
        folder: The run directory (created if missing).
        purpose: What the holder does (``"geofm fit"``).
    """

    error = RunLockedError

    def __init__(self, folder: str | Path, purpose: str = "geofm") -> None:
        super().__init__(Path(folder) / LOCK_NAME, purpose)

    def held_message(self, holder: dict[str, Any]) -> str:
        return (
            f"The run directory {self.path.parent} is in use by {_who(holder)}: two runs in one "
            "folder would mix their checkpoints. Give this run another "
            f"trainer.default_root_dir, or: {_remedy(holder, self.path)}"
        )


class OutputLock(FileLock):
    """``<output>.lock``: one writer per output file.

    Args:
        output: The output the lock protects.
    """

    error = OutputLockedError

    def __init__(self, output: str | Path) -> None:
        self.output = Path(output)
        super().__init__(self.output.with_name(self.output.name + ".lock"), "writing " + self.output.name)

    def held_message(self, holder: dict[str, Any]) -> str:
        return (
            f"{self.output} is being written by another run ({_who(holder)}; lock file "
            f"{self.path}). Write to another output, or: {_remedy(holder, self.path)}"
        )
