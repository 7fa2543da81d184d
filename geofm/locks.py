"""A lock file that keeps two processes out of one folder (``geofm fit``'s run directory).

The lock is ``<folder>/.geofm.lock``, created with ``O_CREAT | O_EXCL`` (atomic on local and
NFSv3+ filesystems) and holding the holder's pid, host, start time and command as JSON. A lock
left by a process that no longer runs on this host is stale: it is taken over with a warning.
A lock from another host cannot be checked from here: the error says how to remove it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from geofm.errors import GeofmError

__all__ = ["LOCK_NAME", "RunLock", "RunLockedError"]

log = logging.getLogger(__name__)

LOCK_NAME = ".geofm.lock"


class RunLockedError(GeofmError, RuntimeError):
    """The folder is locked by another live process."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return True  # cannot tell: assume the holder is alive rather than break its lock
    return True


class RunLock:
    """Hold ``<folder>/.geofm.lock`` for the duration of a ``with`` block.

    Args:
        folder: The folder to lock (created if missing).
        purpose: What the holder does, written into the lock (``"geofm fit"``).

    Raises:
        RunLockedError: When a live process holds the lock; the message names it and the file.
    """

    def __init__(self, folder: str | Path, purpose: str = "geofm") -> None:
        self.path = Path(folder) / LOCK_NAME
        self.purpose = purpose
        self._content: str | None = None

    def read_holder(self) -> dict[str, Any] | None:
        """The current holder's record, or None when there is no (readable) lock."""
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # being written, or garbage: treated as held by an unknown process

    def acquire(self) -> None:
        """Take the lock, taking over a stale one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:500],
            "purpose": self.purpose,
        }
        content = json.dumps(record)
        for _ in range(3):  # a stale lock removed, then a new try
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                self._handle_existing()
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(content)
            self._content = content
            return
        raise RunLockedError(f"Could not take the lock {self.path}: another process keeps taking it.")

    def _handle_existing(self) -> None:
        holder = self.read_holder()
        if holder is None:
            return  # released meanwhile: try again
        pid, host = holder.get("pid"), holder.get("host")
        here = socket.gethostname()
        if isinstance(pid, int) and host == here and not _pid_alive(pid):
            log.warning(
                "Taking over the stale lock %s: its holder (pid %s on %s, started %s) is no longer running.",
                self.path, pid, host, holder.get("started", "?"),
            )
            # Remove it only if it is still the same stale lock (another process may have won).
            if self.read_holder() == holder:
                self.path.unlink(missing_ok=True)
            return
        who = (
            f"pid {pid} on {host}, started {holder.get('started', '?')} ({holder.get('command', '?')})"
            if holder
            else "a process that left an unreadable lock"
        )
        how = (
            "wait for it to finish or stop it"
            if host == here
            else "if that process is no longer running, delete the lock file"
        )
        raise RunLockedError(
            f"The run directory {self.path.parent} is in use by {who}: two runs in one folder would "
            f"mix their checkpoints. {how.capitalize()}, or give this run another "
            f"trainer.default_root_dir. Lock: {self.path}"
        )

    def release(self) -> None:
        """Remove the lock if it is still ours."""
        if self._content is None:
            return
        try:
            if self.path.read_text() == self._content:
                self.path.unlink()
        except FileNotFoundError:
            pass
        finally:
            self._content = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
