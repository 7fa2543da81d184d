"""Windowed GeoTIFF output: a temporary file, checkpoints for resuming, rename when complete.

The output is written under a hidden temporary name that is unique to the writing process
(``.<name>.<pid>-<token>.partial``) beside the final path. Only a file that closed without a
GDAL error and reads back is renamed to the final path, so a failed, interrupted or
disk-full run never leaves a truncated output behind; a write that fails removes its
temporary file and raises :class:`OutputWriteError`, which names the output and says what to
change.

An exclusive sink (streamed scenes) also holds ``<name>.lock`` beside the output while it
writes, so two runs never write one output, and keeps a JSON sidecar
(``.<name>.partial.json``) that records what produced the partial file, its name and how many
rows are complete. The sidecar is updated only after the rows it records were flushed and
read back. A run started again with ``resume=True`` takes over the partial file of a previous
run when the sidecar's fingerprint (input, model, settings) matches; otherwise it starts over.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import queue
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from geofm.locks import OutputLock, OutputLockedError, pid_alive

__all__ = [
    "FINGERPRINT_TAG",
    "BackgroundWriter",
    "GeoTiffSink",
    "OutputLock",
    "OutputLockedError",
    "OutputWriteError",
    "geotiff_profile",
    "verify_geotiff",
]

log = logging.getLogger(__name__)

# GeoTIFF metadata tag holding the fingerprint of a finished output (lets resume skip it).
FINGERPRINT_TAG = "GEOFM_FINGERPRINT"


class OutputWriteError(OSError):
    """Writing an output failed (disk full, quota, I/O error); its temporary file is removed."""


def geotiff_profile(
    width: int,
    height: int,
    count: int,
    dtype: np.dtype,
    crs: Any,
    transform: Any,
    nodata: float | int,
    block: int = 256,
    compress: str = "deflate",
) -> dict[str, Any]:
    """The creation profile of every geofm output: tiled, compressed, BigTIFF when needed."""
    dtype = np.dtype(dtype)
    return {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
        "compress": compress,
        "predictor": 3 if dtype.kind == "f" else 2,
        "interleave": "pixel",
        "BIGTIFF": "IF_SAFER",
    }


class _GdalFailures(logging.Filter):
    """Collects, per thread, the GDAL failures that rasterio only logs.

    GDAL reports a failed directory rewrite or block flush on close (``TIFFRewriteDirectory``,
    ``TIFFWriteDirectorySec``, ``_tiffWriteProc``) through its error handler only; rasterio
    turns those into INFO records of ``rasterio._env``/``rasterio._err`` and ``close()``
    returns normally. While a thread captures, those loggers pass INFO records to this
    filter, which keeps the thread's failures and lets through only what the loggers'
    own levels would have let through.
    """

    _LOGGERS = ("rasterio._env", "rasterio._err")

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._threads: dict[int, list[str]] = {}
        self._saved: dict[str, tuple[int, int]] = {}  # name: (own level, effective level)

    def filter(self, record: logging.LogRecord) -> bool:
        found = self._threads.get(record.thread or 0)
        if found is not None:
            if str(record.msg).startswith("GDAL signalled an error") and len(record.args or ()) == 2:
                found.append(str(record.args[1]))  # (err_no, msg): keep GDAL's message
            elif record.levelno >= logging.ERROR:
                found.append(record.getMessage())
        effective = self._saved.get(record.name, (0, logging.NOTSET))[1]
        return record.levelno >= effective

    @contextlib.contextmanager
    def capture(self) -> Iterator[list[str]]:
        """Collect this thread's GDAL failures into the yielded list (inside a GDAL env)."""
        ident = threading.get_ident()
        found: list[str] = []
        with self._lock:
            if not self._threads:
                for name in self._LOGGERS:
                    logger = logging.getLogger(name)
                    self._saved[name] = (logger.level, logger.getEffectiveLevel())
                    logger.setLevel(min(logger.getEffectiveLevel(), logging.INFO))
                    logger.addFilter(self)
            self._threads[ident] = found
        try:
            # rasterio routes GDAL's errors to Python logging only inside an Env.
            with rasterio.Env():
                yield found
        finally:
            with self._lock:
                del self._threads[ident]
                if not self._threads:
                    for name in self._LOGGERS:
                        logger = logging.getLogger(name)
                        logger.removeFilter(self)
                        logger.setLevel(self._saved.pop(name)[0])


_GDAL_FAILURES = _GdalFailures()


def _free_space(folder: Path) -> str:
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "unknown space"
    return f"{free / 2**20:.1f} MB"


def _write_error(path: Path, step: str, detail: str) -> OutputWriteError:
    return OutputWriteError(
        f"Could not write {path} ({step}): {detail.rstrip('.')}. The disk holding {path.parent} may be full "
        f"({_free_space(path.parent)} free now) or failing: free space there or write to "
        "another folder (--predict_output_dir). The incomplete file was removed; nothing was "
        f"written under {path.name}."
    )


def verify_geotiff(path: str | Path, rows: int | None = None, full: bool = False) -> str | None:
    """Why ``path`` is not a complete, readable GeoTIFF (its first ``rows`` rows), or ``None``.

    Checks that the header opens, that no block of those rows lies past the end of the file
    (a truncated file) and that the last row of blocks decompresses (every row with
    ``full``). Reading the last blocks only keeps checkpoints cheap on large scenes; blocks
    that failed to write are caught when they are written (see :class:`GeoTiffSink`).

    Args:
        path: The GeoTIFF.
        rows: Rows that must be complete; all by default.
        full: Decompress every block of those rows, one row of blocks at a time.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with _GDAL_FAILURES.capture() as failures, rasterio.open(path, driver="GTiff") as src:
            rows = src.height if rows is None else min(rows, src.height)
            if rows <= 0:
                return None
            block_h, block_w = src.block_shapes[0]
            pixel = (src.interleaving is None) or src.interleaving.name == "pixel"
            for band in [1] if pixel else range(1, src.count + 1):
                for y in range((rows - 1) // block_h + 1):
                    for x in range(-(-src.width // block_w)):
                        offset = src.get_tag_item(f"BLOCK_OFFSET_{x}_{y}", "TIFF", bidx=band)
                        length = src.get_tag_item(f"BLOCK_SIZE_{x}_{y}", "TIFF", bidx=band)
                        if offset and int(offset) + int(length or 0) > size:
                            return (
                                f"block {x},{y} of band {band} ends past the end of the file "
                                f"({size} bytes): the file is truncated"
                            )
            last = (rows - 1) // block_h * block_h
            for top in range(0 if full else last, rows, block_h):
                src.read(window=Window(0, top, src.width, min(block_h, rows - top)))
        if failures:
            return failures[-1]
    except Exception as err:  # rasterio and GDAL raise several unrelated types
        return f"{type(err).__name__}: {err}"
    return None


class GeoTiffSink:
    """A tiled, compressed GeoTIFF written in full-width bands of rows, in order.

    Args:
        path: Final output path.
        width: Scene width in pixels.
        height: Scene height in pixels.
        fingerprint: JSON-able description of input, model and settings; checked on resume
            and stored in the finished file's tags.
        resume: Continue a matching partial output instead of starting over.
        checkpoint_seconds: Least time between two checkpoints (close, verify, record rows,
            reopen); 0 checkpoints after every band.
        exclusive: Hold ``<path>.lock`` while writing and keep a resume sidecar (streamed
            scenes). ``False`` for files written whole by processes that may each write the
            same output (per-chip prediction under DDP): no lock, no resume, and an
            interrupted write leaves nothing behind.

    Attributes:
        rows_done: Rows complete (flushed and verified) in the partial output.
        temp: The temporary output path, unique to this process.
        sidecar: The JSON file that records the fingerprint, the partial file and
            ``rows_done``.
        lock: The output's lock (``None`` when not ``exclusive``).
    """

    def __init__(
        self,
        path: str | Path,
        width: int,
        height: int,
        fingerprint: dict[str, Any],
        resume: bool = False,
        checkpoint_seconds: float = 30.0,
        exclusive: bool = True,
    ):
        self.path = Path(path)
        self.width, self.height = width, height
        # Unique per process: two runs never write into one temporary file.
        self.temp = self.path.with_name(
            f".{self.path.name}.{os.getpid()}-{secrets.token_hex(4)}.partial"
        )
        self.sidecar = self.path.with_name(f".{self.path.name}.partial.json")
        self.fingerprint = json.loads(json.dumps(fingerprint))  # tuples become lists, as on disk
        self.checkpoint_seconds = checkpoint_seconds
        self.exclusive = exclusive
        self.rows_done = 0
        self.failed = False
        self._dataset: Any = None
        self._stage: np.ndarray | None = None  # one row of output blocks being filled
        self._staged = 0
        self._last_checkpoint = time.monotonic()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = OutputLock(self.path) if exclusive else None
        if self.lock is not None:
            self.lock.acquire()
            try:
                if resume:
                    self.rows_done = self._take_over_partial()
                if self.rows_done == 0:
                    self._discard_partials()
            except BaseException:
                self.lock.release()
                raise
        self._rows_written = self.rows_done  # on disk (whole rows of blocks, or the end)

    def __enter__(self) -> GeoTiffSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def finished(path: str | Path, fingerprint: dict[str, Any]) -> bool:
        """Whether ``path`` is a finished, readable output made with the same ``fingerprint``.

        A file with the fingerprint that does not read back (truncated, damaged) is logged
        and reported unfinished, so that it is made again.
        """
        path = Path(path)
        if not path.is_file():
            return False
        try:
            with rasterio.open(path) as dst:
                tag = dst.tags().get(FINGERPRINT_TAG)
        except Exception:  # unreadable header: not a finished output
            log.warning("%s exists but does not open as a GeoTIFF; making it again.", path)
            return False
        if tag is None or json.loads(tag) != json.loads(json.dumps(fingerprint)):
            return False
        problem = verify_geotiff(path, full=True)  # read it all: it will not be made again
        if problem is not None:
            log.warning("%s is marked finished but does not read (%s); making it again.", path, problem)
            return False
        return True

    def _state(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.sidecar.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            log.warning("Unreadable resume sidecar %s (%s); starting over.", self.sidecar, err)
            return None

    def _take_over_partial(self) -> int:
        """Rename a previous run's matching partial file to this run's name; its rows."""
        state = self._state()
        if state is None or "partial" not in state:
            return 0
        previous = self.path.with_name(state["partial"])
        if not previous.is_file():
            return 0
        if state.get("fingerprint") != self.fingerprint:
            log.info("%s was made with another input, model or settings; starting over.", previous)
            return 0
        rows = int(state.get("rows_done", 0))
        try:
            with rasterio.open(previous, driver="GTiff") as dst:
                shape = (dst.width, dst.height)
        except Exception as err:
            log.warning("Partial output %s is unreadable (%s); starting over.", previous, err)
            return 0
        if shape != (self.width, self.height):
            log.info("Partial output %s has another size; starting over.", previous)
            return 0
        problem = verify_geotiff(previous, rows)
        if problem is not None:
            log.warning("Partial output %s does not read (%s); starting over.", previous, problem)
            return 0
        os.replace(previous, self.temp)
        self._write_sidecar(rows)  # now names this run's file
        log.info("Resuming %s after %d of %d rows.", self.path, rows, self.height)
        return rows

    def _discard_partials(self) -> None:
        """Remove what earlier runs left: the sidecar's partial file, and partial files of
        processes no longer running (this process holds the lock)."""
        state = self._state() or {}
        stale = [self.sidecar, self.path.with_name(f".{self.path.name}.partial")]  # old name
        if "partial" in state:
            stale.append(self.path.with_name(state["partial"]))
        prefix = f".{self.path.name}."
        for leftover in self.path.parent.glob(f"{glob.escape(prefix)}*.partial"):
            pid = leftover.name[len(prefix) :].split("-", 1)[0]
            if pid.isdigit() and not pid_alive(int(pid)):
                stale.append(leftover)
        for path in stale:
            path.unlink(missing_ok=True)

    def open(self, profile: dict[str, Any]) -> None:
        """Create the temporary file with ``profile``, or reopen the partial one.

        Args:
            profile: rasterio creation profile (grid, dtype, count, nodata, ``blockysize``,
                compression); its size must be the sink's.
        """
        if (profile["width"], profile["height"]) != (self.width, self.height):
            raise ValueError(
                f"Profile of {profile['width']} x {profile['height']} for a sink of "
                f"{self.width} x {self.height}."
            )
        if self.rows_done:
            self._reopen()
            found = (self._dataset.count, self._dataset.dtypes[0])
            wanted = (profile["count"], np.dtype(profile["dtype"]).name)
            if found != wanted:
                self._dataset.close()
                self._dataset = None
                raise RuntimeError(
                    f"Partial output {self.temp} has {found[0]} band(s) of {found[1]}, the model "
                    f"now gives {wanted[0]} of {wanted[1]}; run again with resume=False."
                )
        else:
            with self._checked("creating the file"):
                self._dataset = rasterio.open(
                    self.temp, "w", **{**profile, "driver": "GTiff", "sparse_ok": True}
                )
            if self.exclusive:
                self._write_sidecar(0)
        block = int(profile.get("blockysize", 256))
        self._stage = np.empty((profile["count"], block, self.width), profile["dtype"])
        self._staged = 0

    @contextlib.contextmanager
    def _checked(self, step: str) -> Iterator[None]:
        """Run a GDAL step; on an exception or a failure GDAL only logged, remove the
        temporary file and raise :class:`OutputWriteError`."""
        failures: list[str] = []
        try:
            with _GDAL_FAILURES.capture() as failures:
                yield
        except OutputWriteError:
            raise
        except Exception as err:  # rasterio, GDAL (CPLE_*) and the OS raise unrelated types
            # rasterio's "See previous exception" message: GDAL's own reasons say more.
            detail = "; ".join(dict.fromkeys([*failures, f"{type(err).__name__}: {err}"]))
            self._abort()
            raise _write_error(self.path, step, detail) from err
        if failures:
            self._abort()
            raise _write_error(self.path, step, "; ".join(dict.fromkeys(failures)))

    def _reopen(self) -> None:
        with self._checked("reopening the partial file"):
            self._dataset = rasterio.open(self.temp, "r+", driver="GTiff", sparse_ok=True)

    def _close_checked(self, step: str) -> None:
        dst, self._dataset = self._dataset, None
        if dst is not None:
            with self._checked(step):
                dst.close()

    def _verify(self, rows: int, step: str) -> None:
        """Flush the temporary file to disk and read it back, or abort."""
        try:
            with open(self.temp, "rb+") as handle:
                os.fsync(handle.fileno())  # quota and network-disk errors surface here
        except OSError as err:
            self._abort()
            raise _write_error(self.path, step, f"{type(err).__name__}: {err}") from err
        problem = verify_geotiff(self.temp, rows)
        if problem is not None:
            self._abort()
            raise _write_error(self.path, step, f"the written file does not read back ({problem})")

    def _abort(self) -> None:
        """Drop the temporary file, the sidecar and the lock after a failed write."""
        self.failed = True
        dst, self._dataset = self._dataset, None
        if dst is not None:
            with contextlib.suppress(Exception):
                dst.close()
        self.temp.unlink(missing_ok=True)
        if self.exclusive:
            self.sidecar.unlink(missing_ok=True)
        if self.lock is not None:
            self.lock.release()

    def write(self, row: int, data: np.ndarray) -> None:
        """Add rows ``data`` ``(count, h, width)`` starting at scene row ``row``.

        Rows must come in order, in pieces of any height; each complete row of output blocks
        is written at once, so that every block is compressed a single time.

        Raises:
            OutputWriteError: GDAL could not write (disk full...); the temporary file is gone.
        """
        if self._dataset is None or self._stage is None:
            raise RuntimeError(f"{self.temp} is not open; call open(profile) first.")
        expected = self._rows_written + self._staged
        if row != expected:
            raise RuntimeError(f"Rows must come in order: expected row {expected}, got {row}.")
        block = self._stage.shape[1]
        done = 0
        while done < data.shape[1]:
            n = min(block - self._staged, data.shape[1] - done)
            self._stage[:, self._staged : self._staged + n] = data[:, done : done + n]
            self._staged += n
            done += n
            if self._staged == block or self._rows_written + self._staged == self.height:
                window = Window(0, self._rows_written, self.width, self._staged)
                with self._checked(f"writing rows {self._rows_written}-{self._rows_written + self._staged}"):
                    self._dataset.write(self._stage[:, : self._staged], window=window)
                self._rows_written += self._staged
                self._staged = 0
        if time.monotonic() - self._last_checkpoint >= self.checkpoint_seconds:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Make the written rows durable: close, verify, record them in the sidecar, reopen.

        The sidecar is written only after the rows it records were flushed and read back, so
        resume never trusts rows a full disk swallowed.
        """
        if self._dataset is None or self._rows_written == self.rows_done or not self.exclusive:
            return
        step = f"saving rows up to {self._rows_written}"
        self._close_checked(step)
        self._verify(self._rows_written, step)
        self._write_sidecar(self._rows_written)
        self._reopen()
        self._last_checkpoint = time.monotonic()

    def _write_sidecar(self, rows: int) -> None:
        state = {
            "fingerprint": self.fingerprint,
            "rows_done": rows,
            "height": self.height,
            "partial": self.temp.name,
        }
        scratch = self.sidecar.with_name(f"{self.sidecar.name}.{os.getpid()}.tmp")
        try:
            scratch.write_text(json.dumps(state, indent=1))
            os.replace(scratch, self.sidecar)
        except OSError as err:
            scratch.unlink(missing_ok=True)
            self._abort()
            raise _write_error(self.path, "recording progress", f"{self.sidecar}: {err}") from err
        self.rows_done = rows

    def close(self) -> None:
        """Checkpoint and close without finishing (what an interrupted run leaves), then
        release the lock. A non-exclusive sink removes its temporary file instead."""
        try:
            if self._dataset is not None:
                if self.exclusive:
                    self.checkpoint()
                    self._close_checked("closing the partial file")
                else:
                    self._abort()
        finally:
            if self.lock is not None:
                self.lock.release()

    def finish(self, overviews: bool = False, resampling: Resampling = Resampling.nearest) -> Path:
        """Close, optionally add overviews, tag, verify, and rename the complete file to its path.

        Raises:
            OutputWriteError: Writing, closing or reading back failed; nothing is left under
                the final name or the temporary one.
        """
        if self._rows_written != self.height:
            raise RuntimeError(
                f"{self.temp} holds {self._rows_written} of {self.height} rows; it cannot be "
                "finished."
            )
        if self._dataset is None:
            self._reopen()
        with self._checked("adding overviews and tags"):
            if overviews:
                factors = _overview_factors(self.width, self.height)
                if factors:
                    self._dataset.build_overviews(factors, resampling)
                    self._dataset.update_tags(ns="rio_overview", resampling=resampling.name)
            self._dataset.update_tags(
                **{FINGERPRINT_TAG: json.dumps(self.fingerprint, sort_keys=True)}
            )
        self._close_checked("closing the file")
        self._verify(self.height, "checking the finished file")
        os.replace(self.temp, self.path)
        if self.exclusive:
            self.sidecar.unlink(missing_ok=True)
        if self.lock is not None:
            self.lock.release()
        log.info("Wrote %s", self.path)
        return self.path


def _overview_factors(width: int, height: int, smallest: int = 256) -> list[int]:
    factors, factor = [], 2
    while max(width, height) / factor >= smallest / 2 and factor <= 2**12:
        factors.append(factor)
        factor *= 2
    return factors


class BackgroundWriter:
    """A thread that writes queued ``(row, data)`` pieces to a sink, in order.

    Args:
        sink: Where rows go (opened by the caller).
        max_pending: Bound of the queue; ``put`` blocks while the writer is behind, which
            keeps memory bounded.
    """

    _STOP = object()

    def __init__(self, sink: GeoTiffSink, max_pending: int = 2):
        self.sink = sink
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="geofm-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._STOP:
                return
            if self._error is not None:
                continue  # drain so that producers never block on a dead writer
            try:
                self.sink.write(*item)
            except BaseException as err:  # re-raised in the producer's thread
                self._error = err

    def _raise_if_failed(self) -> None:
        if self._error is None:
            return
        if isinstance(self._error, OutputWriteError):
            # Already names the output and the fix; keep it the last line the user reads.
            raise OutputWriteError(*self._error.args) from self._error
        raise RuntimeError(f"Writing {self.sink.temp} failed: {self._error}") from self._error

    def put(self, row: int, data: np.ndarray) -> None:
        """Queue rows (blocks while the queue is full); raises the writer's error, if any."""
        self._raise_if_failed()
        self._queue.put((row, data))

    def stop(self) -> None:
        """Write what is queued, then end the thread; raises the writer's error, if any."""
        self._queue.put(self._STOP)
        self._thread.join()
        self._raise_if_failed()
