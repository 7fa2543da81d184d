"""Windowed GeoTIFF output: a temporary file, checkpoints for resuming, rename when complete.

The output is written under a hidden temporary name beside the final path
(``.<name>.partial``) together with a JSON sidecar (``.<name>.partial.json``) that records
what produced it and how many rows are complete. Only a finished file is renamed to the final
path, so a failed or interrupted run never leaves a truncated output behind. A run started
again with ``resume=True`` continues after the recorded rows when the sidecar's fingerprint
(input, model, settings) matches; otherwise it starts over.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

__all__ = ["FINGERPRINT_TAG", "BackgroundWriter", "GeoTiffSink", "geotiff_profile"]

log = logging.getLogger(__name__)

# GeoTIFF metadata tag holding the fingerprint of a finished output (lets resume skip it).
FINGERPRINT_TAG = "GEOFM_FINGERPRINT"


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


class GeoTiffSink:
    """A tiled, compressed GeoTIFF written in full-width bands of rows, in order.

    Args:
        path: Final output path.
        width: Scene width in pixels.
        height: Scene height in pixels.
        fingerprint: JSON-able description of input, model and settings; checked on resume
            and stored in the finished file's tags.
        resume: Continue a matching partial output instead of starting over.
        checkpoint_seconds: Least time between two checkpoints (close, record rows, reopen);
            0 checkpoints after every band.

    Attributes:
        rows_done: Rows complete in the partial output (0 when starting over).
        temp: The temporary output path.
        sidecar: The JSON file that records the fingerprint and ``rows_done``.
    """

    def __init__(
        self,
        path: str | Path,
        width: int,
        height: int,
        fingerprint: dict[str, Any],
        resume: bool = False,
        checkpoint_seconds: float = 30.0,
    ):
        self.path = Path(path)
        self.width, self.height = width, height
        self.temp = self.path.with_name(f".{self.path.name}.partial")
        self.sidecar = self.path.with_name(f".{self.path.name}.partial.json")
        self.fingerprint = json.loads(json.dumps(fingerprint))  # tuples become lists, as on disk
        self.checkpoint_seconds = checkpoint_seconds
        self.rows_done = 0
        self._dataset: Any = None
        self._stage: np.ndarray | None = None  # one row of output blocks being filled
        self._staged = 0
        self._last_checkpoint = time.monotonic()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume:
            self.rows_done = self._resumable_rows()
        if self.rows_done == 0:
            self._discard_partial()
        self._rows_written = self.rows_done  # on disk (whole rows of blocks, or the end)

    @staticmethod
    def finished(path: str | Path, fingerprint: dict[str, Any]) -> bool:
        """Whether ``path`` is a finished output made with the same ``fingerprint``."""
        path = Path(path)
        if not path.is_file():
            return False
        try:
            with rasterio.open(path) as dst:
                tag = dst.tags().get(FINGERPRINT_TAG)
        except rasterio.errors.RasterioIOError:
            return False
        return tag is not None and json.loads(tag) == json.loads(json.dumps(fingerprint))

    def _resumable_rows(self) -> int:
        if not (self.temp.is_file() and self.sidecar.is_file()):
            return 0
        try:
            state = json.loads(self.sidecar.read_text())
        except (OSError, ValueError) as err:
            log.warning("Unreadable resume sidecar %s (%s); starting over.", self.sidecar, err)
            return 0
        if state.get("fingerprint") != self.fingerprint:
            log.info("%s was made with another input, model or settings; starting over.", self.temp)
            return 0
        try:
            with rasterio.open(self.temp, driver="GTiff") as dst:
                shape = (dst.width, dst.height)
        except rasterio.errors.RasterioIOError as err:
            log.warning("Partial output %s is unreadable (%s); starting over.", self.temp, err)
            return 0
        if shape != (self.width, self.height):
            log.info("Partial output %s has another size; starting over.", self.temp)
            return 0
        rows = int(state.get("rows_done", 0))
        log.info("Resuming %s after %d of %d rows.", self.path, rows, self.height)
        return rows

    def _discard_partial(self) -> None:
        for stale in (self.temp, self.sidecar):
            stale.unlink(missing_ok=True)

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
            self._dataset = rasterio.open(self.temp, "r+", driver="GTiff", sparse_ok=True)
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
            self._dataset = rasterio.open(
                self.temp, "w", **{**profile, "driver": "GTiff", "sparse_ok": True}
            )
            self._write_sidecar(0)
        block = int(profile.get("blockysize", 256))
        self._stage = np.empty((profile["count"], block, self.width), profile["dtype"])
        self._staged = 0

    def write(self, row: int, data: np.ndarray) -> None:
        """Add rows ``data`` ``(count, h, width)`` starting at scene row ``row``.

        Rows must come in order, in pieces of any height; each complete row of output blocks
        is written at once, so that every block is compressed a single time.
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
                self._dataset.write(self._stage[:, : self._staged], window=window)
                self._rows_written += self._staged
                self._staged = 0
        if time.monotonic() - self._last_checkpoint >= self.checkpoint_seconds:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Make the written rows durable (close and reopen) and record them in the sidecar."""
        if self._dataset is None or self._rows_written == self.rows_done:
            return
        self._dataset.close()
        self._dataset = None
        self._write_sidecar(self._rows_written)
        self._dataset = rasterio.open(self.temp, "r+", driver="GTiff", sparse_ok=True)
        self._last_checkpoint = time.monotonic()

    def _write_sidecar(self, rows: int) -> None:
        state = {"fingerprint": self.fingerprint, "rows_done": rows, "height": self.height}
        scratch = self.sidecar.with_name(self.sidecar.name + ".tmp")
        scratch.write_text(json.dumps(state, indent=1))
        os.replace(scratch, self.sidecar)
        self.rows_done = rows

    def close(self) -> None:
        """Checkpoint and close without finishing (what an interrupted run leaves)."""
        if self._dataset is None:
            return
        try:
            self.checkpoint()
        finally:
            if self._dataset is not None:
                self._dataset.close()
            self._dataset = None

    def finish(self, overviews: bool = False, resampling: Resampling = Resampling.nearest) -> Path:
        """Close, optionally add overviews, tag, and rename the complete file to its path."""
        if self._rows_written != self.height:
            raise RuntimeError(
                f"{self.temp} holds {self._rows_written} of {self.height} rows; it cannot be "
                "finished."
            )
        if self._dataset is None:
            self._dataset = rasterio.open(self.temp, "r+", driver="GTiff")
        dst, self._dataset = self._dataset, None
        try:
            if overviews:
                factors = _overview_factors(self.width, self.height)
                if factors:
                    dst.build_overviews(factors, resampling)
                    dst.update_tags(ns="rio_overview", resampling=resampling.name)
            dst.update_tags(**{FINGERPRINT_TAG: json.dumps(self.fingerprint, sort_keys=True)})
        finally:
            dst.close()
        os.replace(self.temp, self.path)
        self.sidecar.unlink(missing_ok=True)
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
        if self._error is not None:
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
