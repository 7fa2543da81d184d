"""The real Sen1Floods11 chip through the segmentation datamodule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from geofm.models.preprocess import Preprocess

from geofm.data import GenericNonGeoSegmentationDataModule
from geofm.data.statistics import compute_statistics

CHIP = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "sen1floods11_sample"
S2_BANDS = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"]



@pytest.fixture(autouse=True)
def _chip_present() -> None:
    assert (CHIP / "Spain_7370579_S2Hand.tif").is_file(), (
        f"real Sen1Floods11 chip not found at {CHIP}: check out ../shared beside the repository"
    )


def test_sen1floods11_chip():
    dm = GenericNonGeoSegmentationDataModule(
        batch_size=1,
        test_data_root=CHIP,
        img_grep="*_S2Hand.tif",
        label_grep="*_LabelHand.tif",
        dataset_bands=S2_BANDS,
        output_bands=["B2", "B3", "B4", "B8A", "B11", "B12"],
        constant_scale=1e-4,
        no_data_replace=0,
        no_label_replace=-1,
        num_classes=2,
        test_transform=[
            {"class_path": "kornia.augmentation.RandomHorizontalFlip", "init_args": {"p": 1.0}}
        ],
    )
    dm.setup("test")
    assert dm.test_dataset.names == ["Spain_7370579"]  # the S1 file is neither image nor label
    batch = next(iter(dm.test_dataloader()))
    image, mask = batch["image"], batch["mask"]
    assert image.shape == (1, 6, 512, 512) and image.dtype == torch.float32
    assert mask.shape == (1, 512, 512) and mask.dtype == torch.int64
    with rasterio.open(CHIP / "Spain_7370579_S2Hand.tif") as src:
        b8a = src.read(9)
        assert batch["transform"][0] == tuple(src.transform)[:6]
    # Raw values from the dataset; the preprocessing the task takes from the datamodule scales.
    np.testing.assert_array_equal(image[0, 3].numpy(), b8a.astype(np.float32))
    scaled = Preprocess(**dm.preprocess_settings())(image)
    np.testing.assert_allclose(scaled[0, 3].numpy(), b8a.astype(np.float32) * np.float32(1e-4))
    counts = dict(zip(*np.unique(mask.numpy(), return_counts=True), strict=True))
    assert counts == {-1: 99, 0: 192_010, 1: 70_035}
    flipped = dm.augment({k: v for k, v in batch.items()}, "test")
    assert torch.equal(flipped["mask"], mask.flip(-1)) and torch.equal(
        flipped["image"], image.flip(-1)
    )
    stats = compute_statistics(dm.build_dataset("test"), progress=False, constant_scale=1e-4)
    assert stats.class_counts == {-1: 99, 0: 192_010, 1: 70_035}
    assert 0 < stats.means[0] < 1  # reflectance after constant_scale
