"""Outputs under faults: a full disk, two runs into one output, a damaged finished output.

A full disk is real here: a child process runs with a small ``RLIMIT_FSIZE`` (no privileges
needed), so GDAL meets the same failed writes and seeks it meets on a full disk (``EFBIG``
instead of ``ENOSPC``), including the directory rewrite on close that GDAL only logs.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geofm.inference.streaming import predict_scene
from geofm.inference.tiling import plan_tiles
from geofm.inference.writer import GeoTiffSink, OutputLockedError, OutputWriteError
from tests.inference.helpers import PositionModel, preprocess, write_raster

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {
    "tile_size": 32,
    "overlap": 8,
    "block_size": 16,
    "batch_size": 4,
    "progress": False,
    "preprocess": preprocess,
    "checkpoint_seconds": 0,
}


def run_child(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with this checkout first on the path."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


# Imports first, then the file size limit: a write past it fails like one on a full disk.
FULL_DISK = """
import resource, signal, sys, json
from pathlib import Path
import numpy as np, torch
{imports}
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.RLIM_INFINITY))
try:
{body}
except Exception as err:
    print(json.dumps({{"type": type(err).__name__, "message": str(err)}}))
    sys.exit(3)
print(json.dumps({{"type": None}}))
"""


def full_disk_child(imports: str, body: str, limit: int) -> dict:
    code = FULL_DISK.format(
        imports=imports, body=textwrap.indent(textwrap.dedent(body), "    "), limit=limit
    )
    result = run_child(code)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, result.stderr[-3000:]
    return {"returncode": result.returncode, **json.loads(lines[-1])}


def test_full_disk_per_chip_raises_and_leaves_nothing(tmp_path: Path) -> None:
    # A 64 x 64 x 4 float32 chip of noise does not fit in 2 kB: GDAL fails when it flushes the
    # block and rewrites the directory on close, which it only logs.
    out = tmp_path / "preds"
    body = f"""
    writer = GeoTiffPredictionWriter({str(out)!r})
    writer.setup(None, None, "predict")
    prediction = {{
        "filename": ["chip_a.tif"],
        "probabilities": torch.rand(1, 4, 64, 64, generator=torch.Generator().manual_seed(0)),
        "width": torch.tensor([64]),
        "height": torch.tensor([64]),
        "crs": ["EPSG:32633"],
        "transform": [(10.0, 0.0, 500000.0, 0.0, -10.0, 4200000.0)],
    }}
    writer.write_on_batch_end(None, object(), prediction, None, None, 0, 0)
    """
    imports = "from geofm.inference.prediction_writer import GeoTiffPredictionWriter"
    out.mkdir()
    result = full_disk_child(imports, body, limit=2000)
    assert result["returncode"] == 3 and result["type"] == "OutputWriteError"
    message = result["message"]
    assert str(out / "chip_a_prob.tif") in message
    assert "may be full" in message and "--predict_output_dir" in message
    assert list(out.iterdir()) == []  # neither a final file nor a temporary one


def test_full_disk_mid_scene_raises_and_leaves_nothing(tmp_path: Path) -> None:
    write_raster(tmp_path / "scene.tif", 170, 300)
    out = tmp_path / "out" / "scene_pred.tif"
    body = f"""
    model = PositionModel()
    predict_scene(model, {str(tmp_path / "scene.tif")!r}, {str(out)!r},
                  output="probabilities", num_workers=1, **SETTINGS)
    """
    imports = (
        "from geofm.inference.streaming import predict_scene\n"
        "from tests.inference.helpers import PositionModel, preprocess\n"
        "from tests.inference.test_faults import SETTINGS"
    )
    result = full_disk_child(imports, body, limit=150_000)  # the output needs ~750 kB
    assert result["returncode"] == 3 and result["type"] == "OutputWriteError", result
    assert str(out) in result["message"] and "may be full" in result["message"]
    assert list(out.parent.iterdir()) == []  # no output, partial file, sidecar or lock


def test_gdal_failure_logged_on_close_is_an_error_and_no_checkpoint_records_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection: GDAL only logs ``TIFFRewriteDirectory`` on the third close."""
    write_raster(tmp_path / "scene.tif", 170, 300)
    closes, recorded = [0], []
    real_close = rasterio.io.DatasetWriter.close

    def failing_close(self) -> None:
        real_close(self)
        closes[0] += 1
        if closes[0] == 3:
            logging.getLogger("rasterio._env").info(
                "GDAL signalled an error: err_no=%r, msg=%r",
                1,
                "TIFFRewriteDirectory:Error fetching directory count",
            )

    real_sidecar = GeoTiffSink._write_sidecar

    def spy(self, rows: int) -> None:
        recorded.append(rows)
        real_sidecar(self, rows)

    monkeypatch.setattr(rasterio.io.DatasetWriter, "close", failing_close)
    monkeypatch.setattr(GeoTiffSink, "_write_sidecar", spy)
    out = tmp_path / "out.tif"
    with pytest.raises(OutputWriteError, match="TIFFRewriteDirectory") as info:
        predict_scene(PositionModel(), tmp_path / "scene.tif", out, num_workers=0, **SETTINGS)
    assert str(out) in str(info.value) and "free space" in str(info.value)
    # Two checkpoints verified (16 and 32 rows); the third close failed and was never recorded.
    assert recorded == [0, 16, 32]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif"]


HOLD_LOCK = """
import sys
from geofm.inference.writer import OutputLock
lock = OutputLock({out!r})
lock.acquire()
print("held", flush=True)
sys.stdin.read()
"""


def test_second_run_into_one_output_names_the_holder_then_takes_over_a_stale_lock(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out.tif"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK.format(out=str(out))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputLockedError) as info:
            GeoTiffSink(out, 8, 8, {"test": 1})
        message = str(info.value)
        assert f"pid {holder.pid}" in message and str(out) + ".lock" in message
        assert "delete" in message
    finally:
        holder.kill()
        holder.wait()
    # The holder died without releasing: its lock is stale and is taken over with a warning.
    with caplog.at_level(logging.WARNING, logger="geofm.inference.writer"):
        sink = GeoTiffSink(out, 8, 8, {"test": 1})
    assert "stale lock" in caplog.text and str(holder.pid) in caplog.text
    assert json.loads(Path(f"{out}.lock").read_text())["pid"] == os.getpid()
    sink.close()
    assert not Path(f"{out}.lock").exists()


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def test_resume_takes_over_the_partial_output_of_a_dead_run(tmp_path: Path) -> None:
    write_raster(tmp_path / "scene.tif", 170, 300)
    model = PositionModel()
    out = tmp_path / "out.tif"
    model.fail_after = 12
    with pytest.raises(RuntimeError, match="simulated failure"):
        predict_scene(model, tmp_path / "scene.tif", out, **SETTINGS)
    model.fail_after, model.tiles_seen = None, 0
    # As if that run had been killed: its lock is still there, naming a process now gone.
    lock = {"pid": dead_pid(), "host": socket.gethostname(), "started": "then", "token": "x"}
    Path(f"{out}.lock").write_text(json.dumps(lock))

    predict_scene(model, tmp_path / "scene.tif", out, resume=True, **SETTINGS)
    all_tiles = len(plan_tiles(170, 300, 32, overlap=8))
    assert 0 < model.tiles_seen < all_tiles  # continued, not started over
    fresh = predict_scene(model, tmp_path / "scene.tif", tmp_path / "fresh.tif", **SETTINGS)
    np.testing.assert_array_equal(read(out), read(fresh))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.tif", "out.tif", "scene.tif"]


@pytest.mark.parametrize("damage", ["truncate", "corrupt"])
def test_resume_redoes_a_finished_output_that_does_not_read(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    write_raster(tmp_path / "scene.tif", 170, 300)
    model = PositionModel()
    out = predict_scene(model, tmp_path / "scene.tif", tmp_path / "out.tif", **SETTINGS)
    good = read(out)
    data = bytearray(out.read_bytes())
    if damage == "truncate":
        out.write_bytes(bytes(data[: len(data) // 2]))
    else:  # the header (at the end) still reads, a block in the middle does not
        with rasterio.open(out) as src:
            offset = int(src.get_tag_item("BLOCK_OFFSET_5_5", "TIFF", bidx=1))
            length = int(src.get_tag_item("BLOCK_SIZE_5_5", "TIFF", bidx=1))
        data[offset : offset + length] = np.random.default_rng(0).bytes(length)
        out.write_bytes(bytes(data))
        with rasterio.open(out) as src:
            assert "GEOFM_FINGERPRINT" in src.tags()
    model.tiles_seen = 0
    with caplog.at_level(logging.WARNING):
        predict_scene(model, tmp_path / "scene.tif", out, resume=True, **SETTINGS)
    assert model.tiles_seen == len(plan_tiles(170, 300, 32, overlap=8))
    assert str(out) in caplog.text and "making it again" in caplog.text
    np.testing.assert_array_equal(read(out), good)
