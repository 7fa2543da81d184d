"""GenericUnlabeledDataModule: image folders without labels (for MAE pretraining)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from geofm.data import GenericUnlabeledDataModule

from .fixtures import IMAGE_NODATA, write_tif


def test_images_only_with_split_file_nodata_and_band_selection(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(3):
        image = rng.uniform(0, 5000, (4, 16, 16)).astype(np.float32)
        image[:, 0, 0] = IMAGE_NODATA
        write_tif(tmp_path / "images" / f"scene_{i}.tif", image, nodata=IMAGE_NODATA)
    (tmp_path / "train.txt").write_text("scene_0\nscene_2\n")
    dm = GenericUnlabeledDataModule(
        batch_size=2,
        train_data_root=tmp_path / "images",
        train_split=tmp_path / "train.txt",
        dataset_bands=["BLUE", "GREEN", "RED", "NIR_NARROW"],
        output_bands=["RED", "NIR_NARROW"],
    )
    dm.setup("fit")
    assert [p.name for p in dm.train_dataset.image_files] == ["scene_0.tif", "scene_2.tif"]
    batch = next(iter(dm.train_dataloader()))
    assert "mask" not in batch
    assert batch["image"].shape == (2, 2, 16, 16)
    assert torch.isnan(batch["image"][:, :, 0, 0]).all() and batch["nodata_mask"][:, 0, 0].all()
    assert dm.val_dataloader() == []  # no val_data_root: training without validation


def test_label_settings_are_not_taken(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="label_grep"):
        GenericUnlabeledDataModule(train_data_root=tmp_path, label_grep="*_mask.tif")
