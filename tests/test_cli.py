"""The geofm command end to end on generated GeoTIFF folders."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import yaml

from geofm.cli import main as geofm
from geofm.cli_lightning import run_lightning_cli
from tests.data.fixtures import IMAGE_NODATA, LABEL_NODATA, make_pixel_folder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_data")
    train = make_pixel_folder(root / "train", names=("t_1", "t_2", "t_3", "t_4"), size=32, seed=1)
    val = make_pixel_folder(root / "val", names=("v_1", "v_2", "v_3", "v_4"), size=32, seed=2)
    return root, train, val


def write_config(tmp_path: Path, folders, **model_args) -> Path:
    root, train, val = folders
    config = {
        "trainer": {
            "accelerator": "cpu",
            "max_epochs": 2,
            "log_every_n_steps": 1,
            "enable_progress_bar": False,
            "default_root_dir": str(tmp_path / "run"),
        },
        "model": {
            "class_path": "SemanticSegmentationTask",
            "init_args": {
                "model_args": {
                    "backbone": "timm_resnet18",
                    "backbone_in_chans": 6,
                    "backbone_out_indices": [0, 1, 2],
                    "decoder": "smp_Unet",
                    "decoder_encoder_depth": 3,
                    "decoder_decoder_channels": [16, 8, 8],
                    "num_classes": 3,
                    **model_args,
                },
                "ignore_index": 255,
                "lr": 1e-3,
            },
        },
        "data": {
            "class_path": "GenericNonGeoSegmentationDataModule",
            "init_args": {
                "batch_size": 2,
                "train_data_root": str(train.image_root),
                "train_label_data_root": str(train.label_root),
                "val_data_root": str(val.image_root),
                "val_label_data_root": str(val.label_root),
                "test_data_root": str(val.image_root),
                "test_label_data_root": str(val.label_root),
                "predict_data_root": str(val.image_root),
                "img_grep": "*_img.tif",
                "label_grep": "lbl_*.tif",
                "no_data_replace": 0,
                "num_classes": 3,
            },
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_fit_validate_test_predict(tmp_path, folders):
    config = write_config(tmp_path, folders)
    run = tmp_path / "run"
    assert geofm(["fit", "-c", str(config)]) == 0
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "checkpoints").glob("best-*.ckpt"))
    assert (run / "config.yaml").is_file() and (run / "logs" / "version_0" / "metrics.csv").is_file()
    with (run / "logs" / "version_0" / "metrics.csv").open() as handle:
        columns = next(csv.reader(handle))
    assert {"val/loss", "val/mIoU", "train/loss_epoch"} <= set(columns)

    last = str(run / "checkpoints" / "last.ckpt")
    validated = run_lightning_cli(["validate", "-c", str(config), "--ckpt_path", last])
    val_metrics = {k: float(v) for k, v in validated.trainer.callback_metrics.items()}
    tested = run_lightning_cli(["test", "-c", str(config), "--ckpt_path", last])
    # The checkpoint's own class maps on the same files, scored with numpy: the logged metrics
    # must be these values (the test split is the validation folder).
    task = validated.model.eval()
    predicted = validated.trainer.predict(task, dataloaders=validated.datamodule.val_dataloader())
    _, _, val = folders
    pred, true = [], []
    for batch in predicted:
        for filename, classes in zip(batch["filename"], batch["prediction"]):
            pred.append(classes.numpy())
            true.append(val.labels[Path(filename).name.removesuffix("_img.tif")])
    pred, true = np.stack(pred), np.stack(true).astype(np.int64)
    assert len(pred) == len(val.names)
    scored = true != 255  # ignore_index (the labels' nodata)
    ious = []
    for c in range(3):
        inter = ((pred == c) & (true == c) & scored).sum()
        union = (((pred == c) | (true == c)) & scored).sum()
        if union:
            ious.append(inter / union)
    expected = {"mIoU": np.mean(ious), "Pixel_Accuracy": (pred == true)[scored].mean()}
    for key, value in expected.items():
        assert val_metrics[f"val/{key}"] == pytest.approx(value, abs=1e-5), key
        assert float(tested.trainer.callback_metrics[f"test/{key}"]) == pytest.approx(value, abs=1e-5), key

    # Prediction needs only the predict root and the checkpoint.
    out = tmp_path / "predictions"
    _, _, val = folders
    geofm([
        "predict", "-c", str(config), "--ckpt_path", last, "--predict_output_dir", str(out),
        "--data.init_args.train_data_root", "null", "--data.init_args.val_data_root", "null",
        "--data.init_args.test_data_root", "null",
    ])
    for name in val.names:
        source = val.image_root / f"{name}_img.tif"
        target = out / f"{name}_img_pred.tif"
        with rasterio.open(source) as src, rasterio.open(target) as dst:
            assert (dst.crs, dst.transform, dst.width, dst.height) == (src.crs, src.transform, src.width, src.height)
            assert dst.dtypes[0] == "uint8" and dst.nodata == 255
            assert dst.compression is not None  # (32 px files are a single block)
            classes = dst.read(1)
            nodata = (src.read() == IMAGE_NODATA).any(axis=0)
        assert nodata.any() and (classes[nodata] == 255).all()
        assert set(np.unique(classes[~nodata])) <= {0, 1, 2}
    assert not list(out.glob(".*partial*"))


def test_streamed_predict(tmp_path, folders):
    config = write_config(tmp_path, folders)
    geofm(["fit", "-c", str(config), "--trainer.max_epochs", "1"])
    out = tmp_path / "streamed"
    geofm([
        "predict", "-c", str(config), "--ckpt_path", "last", "--predict_output_dir", str(out),
        "--streaming", "{tile_size: 16, overlap: 4, batch_size: 3, num_workers: 1, progress: false}",
    ])
    _, _, val = folders
    for name in val.names:
        with rasterio.open(val.image_root / f"{name}_img.tif") as src, rasterio.open(out / f"{name}_img_pred.tif") as dst:
            assert (dst.crs, dst.transform, dst.width, dst.height) == (src.crs, src.transform, src.width, src.height)
            classes = dst.read(1)
            nodata = (src.read() == IMAGE_NODATA).any(axis=0)
            assert (classes[nodata] == dst.nodata).all()
            assert set(np.unique(classes[~nodata])) <= {0, 1, 2}


def test_resume_continues_at_next_epoch(tmp_path, folders):
    config = write_config(tmp_path, folders)
    first = run_lightning_cli(["fit", "-c", str(config), "--trainer.max_epochs", "1"])
    assert first.trainer.global_step == 2  # 4 samples, batch 2
    resumed = run_lightning_cli(["fit", "-c", str(config), "--trainer.max_epochs", "2", "--ckpt_path", "last"])
    assert resumed.trainer.global_step == 4 and resumed.trainer.current_epoch == 2
    # The second invocation logs to its own version; it trained epoch 1 only.
    with (tmp_path / "run" / "logs" / "version_1" / "metrics.csv").open() as handle:
        epochs = {int(row["epoch"]) for row in csv.DictReader(handle) if row.get("train/loss_epoch")}
    assert epochs == {1}


def test_compute_statistics(tmp_path, folders):
    config = write_config(tmp_path, folders)
    out = tmp_path / "stats.yaml"
    assert geofm(["compute-statistics", "-c", str(config), "-o", str(out)]) == 0
    stats = yaml.safe_load(out.read_text())
    _, train, _ = folders
    stacked = np.stack([train.images[n] for n in train.names]).astype(np.float64)
    valid = stacked != IMAGE_NODATA
    for band in range(6):
        values = stacked[:, band][valid[:, band]]
        assert stats["means"][band] == pytest.approx(values.mean(), rel=1e-6)
        assert stats["stds"][band] == pytest.approx(values.std(), rel=1e-4)


def test_registry_list_text():
    out = subprocess.run(
        [sys.executable, "-m", "geofm.cli", "registry", "list", "backbone", "--filter", "prithvi_eo_v2"],
        capture_output=True, text=True, check=True, cwd=REPO,
    )
    assert "geofm_prithvi_eo_v2_300" in out.stdout and "timm_" not in out.stdout.replace("(0)", "")


@pytest.mark.parametrize(
    ("override", "error", "cause", "message"),
    [
        # Model builds fail inside jsonargparse's instantiation, which raises a ValueError
        # whose text and __cause__ carry geofm's own error.
        (["--model.init_args.model_args.backbone", "timm_resnet1800"], ValueError, KeyError,
         "'timm_resnet1800' is not in the backbone registry. Did you mean: 'timm_resnet18'"),
        (["--model.init_args.model_args.decoder_unused_thing", "3"], ValueError, TypeError,
         "smp_Unet got arguments it does not take: ['unused_thing']"),
        (["--model.init_args.model_args.bogus", "3"], ValueError, ValueError,
         "EncoderDecoderFactory got arguments it does not use: ['bogus']"),
        # The datamodule's own error, raised as it is.
        (["--data.init_args.train_data_root", "/nonexistent/geofm"], FileNotFoundError, None,
         "train_data_root='/nonexistent/geofm' does not exist"),
        # Caught by the band check at the first batch, before any optimizer step.
        (["--model.init_args.model_args.backbone_in_chans", "4"], ValueError, None,
         "model_args.backbone_in_chans=4 but the batch has 6 bands"),
    ],
    ids=["unknown-backbone", "unused-decoder-arg", "unprefixed-arg", "missing-root", "band-mismatch"],
)
def test_bad_configs_fail_before_training(tmp_path, folders, override, error, cause, message):
    config = write_config(tmp_path, folders)
    with pytest.raises(error) as info:
        run_lightning_cli(["fit", "-c", str(config), *override])
    assert message in str(info.value)
    if cause is not None:
        assert isinstance(info.value.__cause__, cause) and message in str(info.value.__cause__)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("example", sorted((REPO / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_build_and_run_a_forward_step(example):
    """Each example builds through the CLI and its model predicts on an input of its bands."""
    cli = run_lightning_cli(["-c", str(example), "--trainer.logger", "false"], run=False)
    bands = cli.datamodule.selection.num_bands
    assert bands, f"{example.name}: the data section does not say how many bands an image has"
    model_args = yaml.safe_load(example.read_text())["model"]["init_args"]["model_args"]
    size = 64  # small, a multiple of every patch size and of ResNet's 32
    shape: tuple[int, ...] = (2, bands, size, size)
    if cli.datamodule.expand_temporal_dimension:
        shape = (2, bands, model_args["backbone_num_frames"], size, size)
    model = cli.model.model.eval()
    with torch.no_grad():
        out = model(torch.randn(shape))
    if type(cli.model).__name__ == "ObjectDetectionTask":  # detections, one dict per image
        assert len(out) == 2 and all(d["boxes"].shape[1:] == (4,) for d in out)
        assert all(torch.isfinite(d["scores"]).all() for d in out)
        return
    out = out["pooled"] if isinstance(out, dict) else out.output  # an embedder: its vectors
    patch = getattr(getattr(model, "encoder", None), "patch_size", 16)  # Prithvi's is (t, p, p)
    patch = tuple(patch) if isinstance(patch, (tuple, list)) else (1, patch, patch)
    expected = {
        "SemanticSegmentationTask": (2, model_args.get("num_classes"), size, size),
        "PixelwiseRegressionTask": (2, size, size),
        "ClassificationTask": (2, model_args.get("num_classes")),
        # MAE: every patch's t * p * p * C values
        "MAEPretrainingTask": (2, (size // patch[1]) ** 2, patch[0] * patch[1] * patch[2] * bands),
        "EmbeddingTask": (2, getattr(model, "encoder", model).out_channels[-1]),
    }[type(cli.model).__name__]
    assert tuple(out.shape) == expected
    assert torch.isfinite(out).all()


@pytest.mark.slow
def test_ddp_on_cpu(tmp_path, folders):
    config = write_config(tmp_path, folders)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run(
        [sys.executable, "-m", "geofm.cli", "fit", "-c", str(config), "--trainer.strategy", "ddp",
         "--trainer.devices", "2", "--trainer.max_epochs", "1"],
        check=True, cwd=tmp_path, env=env, capture_output=True, timeout=600,
    )
    run = tmp_path / "run"
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert len(checkpoints) == 2 and "last.ckpt" in checkpoints  # one best, one last: rank 0 only
    with (run / "logs" / "version_0" / "metrics.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("val/mIoU")]
    ddp_miou = float(rows[-1]["val/mIoU"])
    # Each process saw half the validation set; synchronised metrics equal one process on all of it.
    single = run_lightning_cli(["validate", "-c", str(config), "--ckpt_path", str(run / "checkpoints" / "last.ckpt")])
    assert ddp_miou == pytest.approx(float(single.trainer.callback_metrics["val/mIoU"]), abs=1e-5)


# ---------------------------------------------------------------------------- nothing silent (issue 11)
@pytest.fixture(scope="module")
def fitted(tmp_path_factory, folders):
    """One epoch of fit; tests copy its run directory before changing anything."""
    root = tmp_path_factory.mktemp("fitted")
    config = write_config(root, folders)
    assert geofm(["fit", "-c", str(config), "--trainer.max_epochs", "1"]) == 0
    return root / "run"


def copy_run(fitted: Path, tmp_path: Path, folders) -> Path:
    import shutil

    shutil.copytree(fitted, tmp_path / "run")
    return write_config(tmp_path, folders)


def run_geofm(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "geofm.cli", *args], capture_output=True, text=True, cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), **env}, timeout=300,
    )


def test_config_error_is_one_line_without_traceback(tmp_path, folders):
    config = yaml.safe_load(write_config(tmp_path, folders).read_text())
    config["model"]["init_args"]["lrr"] = 0.5  # a typo of lr
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    out = run_geofm(["fit", "-c", str(bad)], tmp_path)
    last = out.stderr.strip().splitlines()[-1]
    assert out.returncode == 2, out.stderr
    assert last.startswith("geofm: error: model.init_args.lrr:") and "Did you mean: 'lr'" in last
    assert "Traceback" not in out.stderr and "Namespace(" not in out.stderr and "Given value" not in out.stderr
    # --debug (or GEOFM_DEBUG=1) shows the traceback, and still ends with the one line.
    for args, env in ((["fit", "--debug", "-c", str(bad)], {}), (["fit", "-c", str(bad)], {"GEOFM_DEBUG": "1"})):
        out = run_geofm(args, tmp_path, **env)
        assert out.returncode == 2 and "Traceback" in out.stderr
        assert out.stderr.strip().splitlines()[-1] == last
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (["--trainer.max_epochz", "3"], "geofm: error: trainer.max_epochz: unknown option. Did you mean: 'trainer.max_epochs'"),
        (["--trainer.max_epochs", "abc"], "geofm: error: trainer.max_epochs: expected int, got 'abc'"),
        (["--model", "SemanticSegmentationTsk"], "geofm: error: model: unknown class 'SemanticSegmentationTsk'. Did you mean: 'SemanticSegmentationTask'"),
        (["--model.init_args.model_args.backbone", "timm_resnet1800"],
         "geofm: error: model (SemanticSegmentationTask): 'timm_resnet1800' is not in the backbone registry. Did you mean: 'timm_resnet18'"),
    ],
    ids=["unknown-trainer-key", "bad-type", "unknown-class", "unknown-backbone"],
)
def test_config_errors_name_the_key(tmp_path, folders, capsys, override, expected):
    config = write_config(tmp_path, folders)
    assert geofm(["fit", "-c", str(config), *override]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith(expected)
    assert "Traceback" not in err and "Namespace(" not in err


def test_predict_refuses_untrained_weights(tmp_path, folders, capsys):
    config = write_config(tmp_path, folders)
    out = tmp_path / "predictions"
    for ckpt in ([], ["--ckpt_path", "last"], ["--ckpt_path", "best"]):
        assert geofm(["predict", "-c", str(config), "--predict_output_dir", str(out), *ckpt]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert str(tmp_path / "run" / "checkpoints") in err and "--allow-untrained" in err, err
        assert not list(out.glob("*.tif"))
    # Asked for: the model's initial weights, with a warning for the missing `last`.
    with pytest.warns(UserWarning, match="allow-untrained"):
        assert geofm(["predict", "-c", str(config), "--predict_output_dir", str(out), "--ckpt_path", "last",
                      "--allow-untrained"]) == 0
    assert len(list(out.glob("*_pred.tif"))) == 4


def test_validate_with_missing_last_checkpoint_fails(tmp_path, folders, capsys):
    config = write_config(tmp_path, folders)
    assert geofm(["validate", "-c", str(config), "--ckpt_path", "last"]) == 2
    assert "no last.ckpt in " + str(tmp_path / "run" / "checkpoints") in capsys.readouterr().err


def test_predict_without_output_dir_fails(tmp_path, folders, fitted, capsys):
    config = copy_run(fitted, tmp_path, folders)
    assert geofm(["predict", "-c", str(config), "--ckpt_path", "last"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("geofm: error:") and "--predict_output_dir" in err


@pytest.mark.parametrize("command", ["validate", "predict-streaming", "predict"])
def test_truncated_checkpoint_is_named(tmp_path, folders, fitted, capsys, command):
    config = copy_run(fitted, tmp_path, folders)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    args = {
        "validate": ["validate", "--ckpt_path", str(last)],
        "predict": ["predict", "--ckpt_path", "last", "--predict_output_dir", str(tmp_path / "out")],
        "predict-streaming": ["predict", "--ckpt_path", "last", "--predict_output_dir", str(tmp_path / "out"),
                              "--streaming", "{tile_size: 16, overlap: 4}"],
    }[command]
    assert geofm([args[0], "-c", str(config), *args[1:]]) == 2
    err = capsys.readouterr().err
    assert f"Checkpoint '{last}'" in err and "truncated or corrupt" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.tif"))


def test_load_task_checkpoint_names_a_truncated_file(tmp_path, fitted):
    from geofm.errors import CheckpointError
    from geofm.inference.task_scenes import load_task_checkpoint

    bad = tmp_path / "half.ckpt"
    data = (fitted / "checkpoints" / "last.ckpt").read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"half\.ckpt.*truncated or corrupt"):
        load_task_checkpoint(torch.nn.Module(), bad)


def test_resume_with_changed_lr_says_which_applies(tmp_path, folders, fitted):
    config = copy_run(fitted, tmp_path, folders)
    with pytest.warns(UserWarning, match=r"model\.init_args\.lr: 0\.001 \(the config says 0\.5\)"):
        cli = run_lightning_cli([
            "fit", "-c", str(config), "--ckpt_path", "last", "--model.init_args.lr", "0.5", "--trainer.max_epochs", "2",
        ])
    # The checkpoint's value is what trained, and what the run records.
    assert cli.trainer.current_epoch == 2
    assert all(group["lr"] == pytest.approx(1e-3) for group in cli.trainer.optimizers[0].param_groups)
    assert cli.model.hparams.lr == pytest.approx(1e-3)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["model"]["init_args"]["lr"] == pytest.approx(1e-3)
    assert saved["ckpt_path"] == str(tmp_path / "run" / "checkpoints" / "last.ckpt")


def test_second_fit_in_a_locked_run_directory_fails(tmp_path, folders, capsys):
    import json
    import socket

    config = write_config(tmp_path, folders)
    lock = tmp_path / "run" / ".geofm.lock"
    lock.parent.mkdir()
    # A live holder: this very process.
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "now", "command": "geofm fit"}))
    assert geofm(["fit", "-c", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"pid {os.getpid()}" in err and str(lock) in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_fit_takes_and_releases_the_lock(tmp_path, folders, monkeypatch):
    from geofm import locks

    config = write_config(tmp_path, folders)
    seen = []
    original = locks.RunLock.acquire

    def acquire(self):
        original(self)
        seen.append(json_holder(self.path))

    monkeypatch.setattr(locks.RunLock, "acquire", acquire)
    assert geofm(["fit", "-c", str(config), "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "0"]) == 0
    assert seen and seen[0]["pid"] == os.getpid()
    assert not (tmp_path / "run" / ".geofm.lock").exists()


def json_holder(path: Path) -> dict:
    import json

    return json.loads(path.read_text())


def test_cli_installs_atomic_checkpoint_io(tmp_path, folders):
    from geofm.checkpoint_io import AtomicCheckpointIO

    cli = run_lightning_cli(["-c", str(write_config(tmp_path, folders))], run=False)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_no_lightning_args_warning(tmp_path, folders, monkeypatch):
    import warnings

    monkeypatch.setattr(sys, "argv", ["geofm", "fit", "-c", "x.yaml"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_lightning_cli(["-c", str(write_config(tmp_path, folders)), "--trainer.logger", "false"], run=False)
    assert not [w for w in caught if "args parameter is intended" in str(w.message)]


def test_batch_limits_are_counts_when_integers(tmp_path, folders):
    """`--trainer.limit_train_batches 1` is one batch, not 1.0 (the whole epoch)."""
    config = write_config(tmp_path, folders)
    cli = run_lightning_cli([
        "fit", "-c", str(config), "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "0.5",
    ])
    assert cli.trainer.num_training_batches == 1  # 4 samples in batches of 2 would give 2
    assert cli.trainer.limit_val_batches == 0.5 and cli.trainer.num_val_batches == [1]


# ---------------------------------------------------------------------------- TerraTorch configs (issue 13)
def test_fast_dev_run_writes_no_checkpoint(tmp_path, folders):
    """A smoke test must not leave a last.ckpt (GBs for a large backbone), nor add the default
    checkpoint callback; a configured ModelCheckpoint asking for last.ckpt writes none either."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    config = write_config(tmp_path, folders)
    cli = run_lightning_cli(["fit", "-c", str(config), "--trainer.fast_dev_run", "true"])
    assert not any(isinstance(cb, ModelCheckpoint) for cb in cli.trainer.callbacks)
    assert not list((tmp_path / "run").rglob("*.ckpt"))
    run_lightning_cli([
        "fit", "-c", str(config), "--trainer.fast_dev_run", "true",
        "--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.save_last", "true",
    ])
    assert not list((tmp_path / "run").rglob("*.ckpt"))
