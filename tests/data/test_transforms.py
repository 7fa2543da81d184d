"""Batch augmentation: the same geometry for image and masks, any band count, temporal images."""

from __future__ import annotations

import kornia.augmentation as K
import pytest
import torch

from geofm.data.collate import collate_samples
from geofm.data.transforms import BatchAugmentation, build_augmentation


def encoded_batch(bands: int, temporal: int | None = None, b: int = 4, size: int = 16) -> dict:
    """A batch whose image bands equal the mask times a band factor: geometry is checkable."""
    g = torch.Generator().manual_seed(0)
    mask = torch.randint(0, 5, (b, size, size), generator=g)
    factors = torch.arange(1, bands + 1, dtype=torch.float32).view(1, bands, 1, 1)
    image = mask[:, None].float() * factors
    if temporal:
        image = torch.stack([image + 100 * t for t in range(temporal)], dim=2)
    nodata = torch.zeros(b, size, size, dtype=torch.bool)
    nodata[:, 0, :3] = True
    return {
        "image": image,
        "mask": mask,
        "nodata_mask": nodata,
        "filename": [f"f{i}" for i in range(b)],
    }


@pytest.mark.parametrize("bands", [6, 13])
def test_flip_p1_moves_image_and_mask_alike(bands):
    batch = encoded_batch(bands)
    expected_image = batch["image"].flip(-1)
    expected_mask = batch["mask"].flip(-1)
    expected_nodata = batch["nodata_mask"].flip(-1)
    aug = build_augmentation([K.RandomHorizontalFlip(p=1.0)])
    out = aug(batch)
    assert torch.equal(out["image"], expected_image)
    assert torch.equal(out["mask"], expected_mask) and out["mask"].dtype == torch.int64
    assert torch.equal(out["nodata_mask"], expected_nodata)
    assert out["filename"] == ["f0", "f1", "f2", "f3"]


@pytest.mark.parametrize(("bands", "temporal"), [(6, None), (13, None), (6, 3)])
def test_random_geometry_per_sample_is_shared(bands, temporal):
    torch.manual_seed(3)
    batch = encoded_batch(bands, temporal, b=8)
    aug = build_augmentation(
        [
            {"class_path": "kornia.augmentation.RandomHorizontalFlip", "init_args": {"p": 0.5}},
            "RandomVerticalFlip",
            {"class_path": "RandomRotation90", "init_args": {"times": [0, 3], "p": 1.0}},
            {"class_path": "kornia.augmentation.RandomCrop", "init_args": {"size": [10, 10]}},
        ]
    )
    original = batch["mask"].clone()
    out = aug(batch)
    image, mask = out["image"], out["mask"]
    expected_shape = (8, bands, temporal, 10, 10) if temporal else (8, bands, 10, 10)
    assert image.shape == expected_shape and mask.shape == (8, 10, 10)
    frames = image if temporal else image[:, :, None]
    for t in range(frames.shape[2]):
        for band in range(bands):
            # Every band and frame still encodes the mask pixel by pixel: same geometry.
            expected = mask.float() * (band + 1) + 100 * t
            torch.testing.assert_close(frames[:, band, t], expected, atol=1e-3, rtol=0)
    # Samples got different geometries (not one transform for the whole batch).
    assert len({tuple(m.flatten().tolist()) for m in mask}) > 1
    assert not torch.equal(mask, original[:, :10, :10])


def test_rotation_fills_outside_pixels():
    batch = encoded_batch(6, b=2, size=32)
    batch["mask"] = batch["mask"] + 1  # no zero class inside the image
    aug = BatchAugmentation([K.RandomRotation(degrees=(45.0, 45.0), p=1.0)], mask_fill=-1)
    out = aug(batch)
    corner = out["mask"][:, 0, 0]
    assert (corner == -1).all() and out["nodata_mask"][:, 0, 0].all()
    assert set(out["mask"].unique().tolist()) <= {-1, 1, 2, 3, 4, 5}


def test_regression_mask_and_image_only_batches():
    batch = encoded_batch(3, b=2)
    batch["mask"] = batch["mask"].float() / 2
    out = build_augmentation(K.RandomVerticalFlip(p=1.0))(dict(batch))
    assert out["mask"].dtype == torch.float32 and torch.equal(out["mask"], batch["mask"].flip(-2))
    image_only = {"image": batch["image"].clone(), "label": torch.tensor([0, 1])}
    out = build_augmentation([K.RandomVerticalFlip(p=1.0)])(image_only)
    assert torch.equal(out["image"], batch["image"].flip(-2)) and out["label"].tolist() == [0, 1]


def test_mask_shape_must_match_image():
    batch = encoded_batch(3, b=2)
    batch["mask"] = batch["mask"][:, :8]
    with pytest.raises(ValueError, match=r"batch\['mask'\] has shape \(2, 8, 16\)"):
        build_augmentation([K.RandomVerticalFlip(p=1.0)])(batch)


def test_build_errors():
    assert build_augmentation(None) is None and build_augmentation([]) is None
    with pytest.raises(ValueError, match=r"train_transform\[0\]: 'NoSuchAug' is not a class of"):
        build_augmentation(["NoSuchAug"], "train_transform")
    with pytest.raises(ValueError, match="has no 'class_path'"):
        build_augmentation([{"init_args": {}}])


def test_collate_keeps_metadata_as_lists():
    samples = [
        {
            "image": torch.zeros(2, 4, 4),
            "transform": (30.0, 0.0, 1.0, 0.0, -30.0, 2.0),
            "crs": "WKT",
        },
        {"image": torch.ones(2, 4, 4), "transform": (10.0, 0.0, 5.0, 0.0, -10.0, 6.0), "crs": None},
    ]
    batch = collate_samples(samples)
    assert batch["image"].shape == (2, 2, 4, 4)
    assert batch["transform"][1] == (10.0, 0.0, 5.0, 0.0, -10.0, 6.0) and batch["crs"] == [
        "WKT",
        None,
    ]
    samples[1]["image"] = torch.ones(2, 5, 4)
    samples[1]["filename"] = samples[0]["filename"] = "x.tif"
    with pytest.raises(ValueError, match=r"Cannot batch 'image' tensors of different shapes"):
        collate_samples(samples)
