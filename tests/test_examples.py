"""Example configs train on generated data shaped as they describe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import torch
from affine import Affine

from geofm.cli_lightning import run_lightning_cli
from geofm.models.backbones.prithvi_vit import PrithviViT

REPO = Path(__file__).resolve().parents[1]
DATES = ("20200105", "20200321", "20200617")


def _write(path: Path, data: np.ndarray) -> None:
    profile = {
        "driver": "GTiff", "width": data.shape[-1], "height": data.shape[-2], "count": data.shape[0],
        "dtype": data.dtype.name, "crs": "EPSG:32615",
        "transform": Affine(30.0, 0.0, 400_000.0, 0.0, -30.0, 4_600_000.0),
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def test_multitemporal_example_trains_with_coordinates(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        folder = tmp_path / split
        folder.mkdir()
        for i in range(2):
            stem = f"chip{i}_{'_'.join(DATES)}"  # one date per time step, in order
            _write(folder / f"{stem}_merged.tif", rng.integers(100, 3000, (18, 32, 32)).astype(np.int16))
            _write(folder / f"{stem}.mask.tif", rng.integers(0, 13, (1, 32, 32)).astype(np.int16))
    seen: list[dict] = []
    forward = PrithviViT.forward

    def spy(self, x, temporal_coords=None, location_coords=None):
        seen.append({"x": tuple(x.shape), "time": temporal_coords, "location": location_coords})
        return forward(self, x, temporal_coords=temporal_coords, location_coords=location_coords)

    monkeypatch.setattr(PrithviViT, "forward", spy)
    run_lightning_cli([
        "fit", "-c", str(REPO / "examples" / "multitemporal_prithvi_segmentation.yaml"),
        "--data.init_args.train_data_root", str(tmp_path / "train"),
        "--data.init_args.val_data_root", str(tmp_path / "val"),
        "--data.init_args.batch_size", "2",
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
        "--trainer.limit_val_batches", "1", "--trainer.num_sanity_val_steps", "0",
        "--trainer.accelerator", "cpu", "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(tmp_path / "run"),
    ])
    assert seen, "the backbone never ran"
    first = seen[0]
    assert first["x"] == (2, 6, 3, 32, 32)
    years_days = [[2020.0, 5.0], [2020.0, 81.0], [2020.0, 169.0]]
    torch.testing.assert_close(first["time"][0].cpu(), torch.tensor(years_days))
    assert first["location"].shape == (2, 2)
    assert 40 < float(first["location"][0, 0]) < 43  # UTM 15N, 4,600 km north: about 41.5 N
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
