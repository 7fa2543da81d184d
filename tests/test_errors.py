"""geofm's one-line errors, atomic checkpoint writes and the run-directory lock."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys

import pytest
import torch

from geofm.checkpoint_io import AtomicCheckpointIO, load_checkpoint_file
from geofm.errors import CheckpointError, ConfigError, explain_argument_error, is_user_error, report
from geofm.locks import LOCK_NAME, RunLock, RunLockedError

JSONARGPARSE_UNKNOWN_INIT_ARG = """Parser key "model":
  Does not validate against any of the Union subtypes
  Subtypes: [<class 'lightning.pytorch.core.module.LightningModule'>, <class 'NoneType'>]
  Errors:
    - Problem with given class_path 'geofm.SemanticSegmentationTask':
        Option 'lrr' is not accepted
    - Expected a <class 'NoneType'>
  Given value type: <class 'dict'>
  Given value: {'class_path': 'SemanticSegmentationTask', 'init_args': {'lrr': 3}}"""


def test_explain_argument_error_drops_the_dump_and_suggests():
    text = explain_argument_error(JSONARGPARSE_UNKNOWN_INIT_ARG)
    assert text == "model.init_args.lrr: SemanticSegmentationTask has no argument 'lrr'. Did you mean: 'lr'?"
    keys = ["trainer.max_epochs", "trainer.min_epochs", "model", "data"]
    assert explain_argument_error("Group 'trainer' does not accept option 'max_epochz'", keys).startswith(
        "trainer.max_epochz: 'trainer' has no option 'max_epochz'. Did you mean: 'max_epochs'"
    )
    assert explain_argument_error("Option 'modle' is not accepted", keys) == "modle: unknown option. Did you mean: 'model'?"


def test_report_is_one_line_for_user_errors_and_keeps_tracebacks_of_bugs():
    from geofm.cli import import_custom_modules

    try:
        import_custom_modules("")  # a ValueError that geofm raises on purpose
    except ValueError as exc:
        user = exc
    out = io.StringIO()
    assert report(user, stream=out) == 2
    assert out.getvalue() == "geofm: error: --custom-modules needs a folder or a .py file.\n"
    out = io.StringIO()
    assert report(user, debug=True, stream=out) == 2
    assert "Traceback" in out.getvalue() and out.getvalue().splitlines()[-1].startswith("geofm: error:")
    # A bug (not a deliberate raise) keeps its traceback, and still ends with one line.
    try:
        {}["missing"]
    except KeyError as exc:
        bug = exc
    assert not is_user_error(bug)
    out = io.StringIO()
    assert report(bug, stream=out) == 1
    assert "Traceback" in out.getvalue() and out.getvalue().splitlines()[-1].startswith("geofm: error: unexpected KeyError")
    assert is_user_error(ConfigError("x")) and is_user_error(FileNotFoundError(2, "No such file", "/a.tif"))


def test_atomic_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    io_plugin = AtomicCheckpointIO()
    target = tmp_path / "checkpoints" / "last.ckpt"
    io_plugin.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 1}, target)
    good = target.read_bytes()
    written_in = []
    real_save = torch.save

    def half_then_fail(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        written_in.extend(p.name for p in target.parent.iterdir() if p.name != "last.ckpt")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        io_plugin.save_checkpoint({"state_dict": {"w": torch.zeros(1000)}, "epoch": 2}, target)
    # Staged beside the target (not in /tmp, from where a move across filesystems is a copy).
    assert len(written_in) == 1 and written_in[0].startswith(".last.ckpt.") and written_in[0].endswith(".tmp")
    assert target.read_bytes() == good
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]  # no stray temp file
    monkeypatch.undo()
    assert io_plugin.load_checkpoint(target)["epoch"] == 1


def test_load_names_a_truncated_checkpoint(tmp_path):
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"w": torch.ones(100)}}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"model\.ckpt.*truncated or corrupt"):
        load_checkpoint_file(path)
    with pytest.raises(CheckpointError, match=r"model\.ckpt.*truncated or corrupt"):
        AtomicCheckpointIO().load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="absent.ckpt"):
        load_checkpoint_file(tmp_path / "absent.ckpt")


def test_lock_is_exclusive_and_released(tmp_path):
    with RunLock(tmp_path, purpose="geofm fit"):
        holder = json.loads((tmp_path / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(RunLockedError) as info:
            RunLock(tmp_path).acquire()
        assert f"pid {os.getpid()}" in str(info.value) and str(tmp_path / LOCK_NAME) in str(info.value)
    assert not (tmp_path / LOCK_NAME).exists()


def test_lock_held_by_another_process(tmp_path):
    code = (
        "import sys, time; sys.path.insert(0, sys.argv[2]); from geofm.locks import RunLock; "
        "lock = RunLock(sys.argv[1]); lock.acquire(); print('locked', flush=True); time.sleep(60)"
    )
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path), repo], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    # Its holder died without releasing it: a stale lock, taken over.
    lock = RunLock(tmp_path)
    lock.acquire()
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()


def test_stale_lock_is_taken_over_with_a_warning(tmp_path, caplog):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": "then"}))
    with caplog.at_level(logging.WARNING, logger="geofm.locks"), RunLock(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert f"stale lock {tmp_path / LOCK_NAME}" in caplog.text and f"pid {pid}" in caplog.text


def test_lock_from_another_host_is_not_broken(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "then"}))
    with pytest.raises(RunLockedError, match="delete the lock file"):
        RunLock(tmp_path).acquire()
    assert (tmp_path / LOCK_NAME).exists()
