"""Every example config trains one step on a tiny folder shaped as its data section describes.

For each ``examples/*.yaml`` the test reads the data section (datamodule class, band list,
``expand_temporal_dimension``, file patterns, ``num_classes``), writes a few GeoTIFFs with those
bands, frames and classes (classification: one folder per class; no labels for
``GenericUnlabeledDataModule``, MAE pretraining), points every data root of
the config at them and runs ``geofm fit`` in-process for one training and one validation batch.
Only the data roots, the batch size and the trainer's length change; the model and the rest of
the config are the example's. The multi-temporal example has its own test, which also checks
the dates and locations the backbone receives (tests/test_examples.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import yaml
from affine import Affine

from geofm.cli_lightning import run_lightning_cli
from geofm.data.band_selection import expand_band_list

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
#: Examples another test trains (with more checks than this one).
TRAINED_ELSEWHERE = {
    "multitemporal_prithvi_segmentation.yaml": "tests/test_examples.py",
    # EmbeddingTask predicts only; geofm embed runs this config there.
    "embed_prithvi_hls.yaml": "tests/inference/test_embedding_cli.py",
}
SIZE = 64  # a multiple of Prithvi's patch (16) and of a ResNet's stride (32)
SAMPLES = 2  # per pixel-wise split: one batch of two (BatchNorm needs two values per channel)


def _write(path: Path, data: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff", "width": data.shape[-1], "height": data.shape[-2],
        "count": data.shape[0], "dtype": data.dtype.name, "crs": "EPSG:32615",
        "transform": Affine(30.0, 0.0, 400_000.0, 0.0, -30.0, 4_600_000.0),
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def _write_objects(path: Path, data: dict[str, Any], rng: np.random.Generator) -> None:
    """A vector label file of two boxes in the images' CRS, classes from the config."""
    import geopandas
    import shapely

    path.parent.mkdir(parents=True, exist_ok=True)
    grid = Affine(30.0, 0.0, 400_000.0, 0.0, -30.0, 4_600_000.0)
    corners = [rng.integers(0, SIZE // 2, 2) for _ in range(2)]
    boxes = [shapely.box(*(grid @ (c, r + 20)), *(grid @ (c + 20, r))) for c, r in corners]
    names = data.get("class_names") or [0]
    columns = {data["class_column"]: [names[i % len(names)] for i in range(2)]} if data.get(
        "class_column"
    ) else {}
    geopandas.GeoDataFrame(columns, geometry=boxes, crs="EPSG:32615").to_file(path)


def _file_name(grep: str, stem: str) -> str:
    """A file name that the glob ``grep`` matches (``*_merged.tif`` -> ``<stem>_merged.tif``)."""
    if grep.count("*") != 1 or any(c in grep for c in "?["):
        raise AssertionError(f"the test writes files for one-'*' patterns only, not {grep!r}")
    return grep.replace("*", stem)


def _image_bands(data: dict[str, Any], model_args: dict[str, Any]) -> int:
    """Bands of one file: the described bands, times the frames when files stack dates."""
    bands = len(expand_band_list(data["dataset_bands"], "dataset_bands"))
    if data.get("expand_temporal_dimension"):
        bands *= int(model_args.get("backbone_num_frames", 1))
    return bands


def _generate(example: Path, root: Path) -> tuple[list[str], int]:
    """Write the example's splits under ``root``.

    Returns:
        The ``--data.init_args`` overrides of the data roots, and the files per split (the
        batch size that makes each split one batch).
    """
    config = yaml.safe_load(example.read_text())
    data = config["data"]["init_args"]
    model_args = config["model"]["init_args"]["model_args"]
    assert data.get("dataset_bands"), f"{example.name}: data.init_args.dataset_bands is not set"
    bands = _image_bands(data, model_args)
    num_classes = data.get("num_classes") or model_args.get("num_classes")
    kind = config["data"]["class_path"].rsplit(".", 1)[-1]
    rng = np.random.default_rng(0)
    overrides: list[str] = []
    per_split = num_classes if kind == "GenericNonGeoClassificationDataModule" else SAMPLES
    labelled = kind != "GenericUnlabeledDataModule"  # MAE pretraining reads images only
    splits = [key.removesuffix("_data_root") for key in data if key.endswith("_data_root")]
    splits = [s for s in splits if not s.endswith("_label")]
    for split in splits:
        image_root = root / split / "images"
        overrides += [f"--data.init_args.{split}_data_root", str(image_root)]
        if kind == "GenericNonGeoClassificationDataModule":
            for c in range(num_classes):  # root/<class>/*.tif, every class present
                image = rng.integers(100, 3000, (bands, SIZE, SIZE)).astype(np.int16)
                _write(image_root / f"class_{c}" / f"sample_{c}.tif", image)
            continue
        label_root = image_root
        if f"{split}_label_data_root" in data:
            label_root = root / split / "labels"
            overrides += [f"--data.init_args.{split}_label_data_root", str(label_root)]
        for i in range(SAMPLES):
            stem = f"chip{i}"
            image = rng.integers(100, 3000, (bands, SIZE, SIZE)).astype(np.int16)
            _write(image_root / _file_name(data.get("img_grep", "*"), stem), image)
            if kind == "GenericNonGeoDetectionDataModule":
                _write_objects(label_root / _file_name(data["label_grep"], stem), data, rng)
                continue
            if not labelled:
                continue
            if kind == "GenericNonGeoSegmentationDataModule":
                label = rng.integers(0, num_classes, (1, SIZE, SIZE)).astype(np.int16)
            else:  # pixel-wise regression: non-negative targets
                label = rng.uniform(0, 100, (1, SIZE, SIZE)).astype(np.float32)
            _write(label_root / _file_name(data.get("label_grep", "*"), stem), label)
    return overrides, per_split


@pytest.mark.parametrize(
    "example", [e for e in EXAMPLES if e.name not in TRAINED_ELSEWHERE], ids=lambda p: p.name
)
def test_example_trains_one_step(example, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths of the config (runs/...) land here
    overrides, batch_size = _generate(example, tmp_path / "data")
    cli = run_lightning_cli([
        "fit", "-c", str(example), *overrides,
        "--data.init_args.batch_size", str(batch_size), "--data.init_args.num_workers", "0",
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
        "--trainer.limit_val_batches", "1", "--trainer.num_sanity_val_steps", "0",
        "--trainer.check_val_every_n_epoch", "1",
        "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.logger", "false",
        "--trainer.enable_checkpointing", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--trainer.default_root_dir", str(tmp_path / "run"),
    ])
    trainer = cli.trainer
    assert trainer.global_step == 1, f"{example.name}: {trainer.global_step} optimizer steps"
    metrics = trainer.callback_metrics
    assert "train/loss_epoch" in metrics and np.isfinite(float(metrics["train/loss_epoch"]))
    # Detection has no validation loss (torchvision's detectors give none in eval mode).
    monitor = getattr(cli.model, "checkpoint_monitor", ("val/loss", "min"))[0]
    assert monitor in metrics and np.isfinite(float(metrics[monitor]))
