"""The detection example end to end on the real flood chip: its water bodies are the objects.

The chip's label (water = 1) is vectorised into polygons in EPSG:4326, the chip is carved into
128 px GeoTIFF tiles with their own transforms, each tile gets the whole chip's GeoJSON (the
datamodule clips it to the tile), ``geofm fit`` runs the example for a few steps, and ``geofm
predict`` on the whole chip writes a vector file in the chip's CRS.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from geofm.cli_lightning import run_lightning_cli
from geofm.data.datamodules.detection import GenericNonGeoDetectionDataModule
from geofm.demo import CHIP as CHIP_NAME
from geofm.demo import STEM
from geofm.demo_detection import CONFIG, LABEL_GREP, detection_tiles

REPO = Path(__file__).resolve().parents[1]


def _chip_dir() -> Path:
    """``shared/data/sen1floods11_sample`` beside the checkout or beside its worktrees' folder."""
    for parent in (REPO.parent, REPO.parent.parent):
        path = parent / "shared" / "data" / CHIP_NAME
        if path.is_dir():
            return path
    return REPO.parent / "shared" / "data" / CHIP_NAME


CHIP = _chip_dir()


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    assert (CHIP / f"{STEM}_S2Hand.tif").is_file(), (
        f"real Sen1Floods11 chip not found at {CHIP}: check out ../shared beside the repository"
    )
    root = tmp_path_factory.mktemp("detection_tiles")
    return root, detection_tiles(CHIP, root, block=128, min_pixels=20)


def test_water_bodies_land_on_the_tiles(tiles):
    """Each tile's objects are the chip's water bodies clipped to it: their boxes cover water."""
    root, counts = tiles
    assert counts["objects"] > 20 and counts["train"] + counts["val"] == 16
    dm = GenericNonGeoDetectionDataModule(
        batch_size=1, train_data_root=root / "train", img_grep="*_S2Hand.tif",
        label_grep=LABEL_GREP, class_column="class", class_names=["water"], return_masks=True,
    )
    dm.setup("fit")
    seen, covered, water_pixels = 0, 0, 0
    for i in range(len(dm.train_dataset)):
        sample = dm.train_dataset[i]
        with rasterio.open(dm.train_dataset.image_files[i].with_name(
            dm.train_dataset.image_files[i].name.replace("_S2Hand", "_LabelHand")
        )) as src:
            water = src.read(1) == 1
        boxes = sample["boxes"].numpy()
        # Bodies of neighbouring tiles that only share an edge leave no box without area.
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert ((boxes[:, [0, 2]] >= 0) & (boxes[:, [0, 2]] <= 128)).all()
        assert ((boxes[:, [1, 3]] >= 0) & (boxes[:, [1, 3]] <= 128)).all()
        masks = sample["masks"].numpy().astype(bool)
        # Rasterised objects are the label's water pixels, never land.
        assert not (masks.any(0) & ~water).any()
        covered += int(masks.any(0).sum())
        water_pixels += int(water.sum())
        seen += len(boxes)
    assert seen > counts["objects"] / 2
    # Only the bodies under 20 pixels are left out.
    assert covered >= 0.9 * water_pixels


@pytest.mark.slow
def test_example_fits_and_predicts_vectors_on_the_real_chip(tiles, tmp_path, monkeypatch):
    root, _ = tiles
    monkeypatch.chdir(tmp_path)
    common = [
        "-c", str(CONFIG),
        "--data.init_args.train_data_root", str(root / "train"),
        "--data.init_args.val_data_root", str(root / "val"),
        "--data.init_args.predict_data_root", str(CHIP),
        "--data.init_args.batch_size", "2",
        "--trainer.accelerator", "cpu", "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.default_root_dir", str(tmp_path / "run"),
        # An untrained detector scores low: keep every detection, so that some are written.
        "--model.init_args.score_threshold", "0.0",
    ]
    cli = run_lightning_cli([
        "fit", *common, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
        "--trainer.limit_val_batches", "1", "--trainer.num_sanity_val_steps", "0",
        "--trainer.check_val_every_n_epoch", "1",
    ])
    metrics = cli.trainer.callback_metrics
    assert cli.trainer.global_step == 2
    assert np.isfinite(float(metrics["train/loss_epoch"]))
    assert "val/map" in metrics and np.isfinite(float(metrics["val/map"]))

    import geopandas as gpd
    out = tmp_path / "predictions"
    run_lightning_cli([
        "predict", *common, "--ckpt_path", str(tmp_path / "run" / "checkpoints" / "last.ckpt"),
        "--predict_output_dir", str(out),
    ])
    written = out / f"{STEM}_S2Hand_pred.geojson"
    assert written.is_file(), sorted(p.name for p in out.iterdir())
    frame = gpd.read_file(written)
    assert frame.crs.to_epsg() == 4326
    with rasterio.open(CHIP / f"{STEM}_S2Hand.tif") as src:
        left, bottom, right, top = src.bounds
    assert len(frame) > 0
    minx, miny, maxx, maxy = frame.total_bounds
    tol = 1e-9  # degrees
    assert left - tol <= minx and maxx <= right + tol
    assert bottom - tol <= miny and maxy <= top + tol
