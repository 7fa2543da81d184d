"""TerraTorch's albumentations transform lists: mapped to kornia, run per sample on CPU, dropped."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from geofm.data import GenericNonGeoSegmentationDataModule
from geofm.data.albumentations_compat import (
    FlattenTemporalIntoChannels,
    UnflattenTemporalFromChannels,
    build_transforms,
)
from geofm.data.transforms import RandomSquareSymmetry, build_augmentation
from geofm.errors import ConfigError
from tests.data.fixtures import IMAGE_NODATA, LABEL_NODATA, write_tif
from tests.data.test_transforms import encoded_batch
from tests.test_cli import folders  # noqa: F401 - the fixture is used by name


def alb(name: str, **init_args) -> dict:
    """A list entry as YAML gives it."""
    entry: dict = {"class_path": f"albumentations.{name}"}
    if init_args:
        entry["init_args"] = init_args
    return entry


def device_only(spec, key="train_transform", mask_fill=None):
    on_cpu, on_device = build_transforms(spec, key, mask_fill)
    assert on_cpu is None, f"{spec} should run on the device"
    return on_device


def symmetries(square: torch.Tensor) -> list[torch.Tensor]:
    """The 8 images of ``square`` ``(..., N, N)`` under the symmetries of the square."""
    out = []
    for t in (square, square.transpose(-2, -1)):
        out += [torch.rot90(t, k, dims=(-2, -1)) for k in range(4)]
    return out


# ---------------------------------------------------------------- mapped to the device
@pytest.mark.parametrize(
    ("name", "expected_p", "kornia_type"),
    [
        ("HorizontalFlip", 0.5, "RandomHorizontalFlip"),
        ("VerticalFlip", 0.5, "RandomVerticalFlip"),
        ("Flip", 0.5, "RandomSquareSymmetry"),  # albumentations 1.4 only
        ("RandomRotate90", 0.5, "RandomSquareSymmetry"),  # albumentations 1.4.10 (TerraTorch's)
        ("D4", 1.0, "RandomSquareSymmetry"),
        ("SquareSymmetry", 1.0, "RandomSquareSymmetry"),
        ("Transpose", 0.5, "RandomSquareSymmetry"),
    ],
)
def test_default_probabilities_are_albumentations(name, expected_p, kornia_type):
    (module,) = device_only([alb(name)]).sequential.children()
    assert type(module).__name__ == kornia_type and module.p == expected_p
    (module,) = device_only([alb(name, p=0.2)]).sequential.children()
    assert module.p == 0.2
    (module,) = device_only([alb(name, always_apply=True)]).sequential.children()
    assert module.p == 1.0


@pytest.mark.parametrize(
    "entry",
    [
        alb("RandomCrop", height=8, width=8),
        alb("CenterCrop", height=8, width=8),
        alb("Resize", height=8, width=8),
        alb("RandomResizedCrop", size=[8, 8]),
    ],
)
def test_size_transforms_apply_always_by_default(entry):
    (module,) = device_only([entry]).sequential.children()
    assert module.p == 1.0


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("HorizontalFlip", lambda x: x.flip(-1)),
        ("VerticalFlip", lambda x: x.flip(-2)),
        ("Transpose", lambda x: x.transpose(-2, -1)),
    ],
)
def test_p1_moves_image_mask_and_nodata_alike(name, expected):
    batch = encoded_batch(6)
    want = {k: expected(batch[k]) for k in ("image", "mask", "nodata_mask")}
    out = device_only([alb(name, p=1.0)])(batch)
    for key, value in want.items():
        assert torch.equal(out[key], value), key
    assert out["mask"].dtype == torch.int64 and out["nodata_mask"].dtype == torch.bool


@pytest.mark.parametrize("temporal", [None, 3])
def test_d4_draws_the_8_symmetries_evenly_and_masks_follow(temporal):
    torch.manual_seed(0)
    n = 800
    square = torch.arange(16).view(4, 4)  # every pixel distinct: the symmetry is readable
    mask = square.expand(n, 4, 4).clone()
    image = mask[:, None].float() * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)
    if temporal:
        image = torch.stack([image + 100 * t for t in range(temporal)], dim=2)
    nodata = torch.zeros(n, 4, 4, dtype=torch.bool)
    nodata[:, 0, 1] = True
    out = device_only([alb("D4")])({"image": image, "mask": mask, "nodata_mask": nodata})
    options = [s.flatten().tolist() for s in symmetries(square)]
    counts = [0] * 8
    for i in range(n):
        which = options.index(out["mask"][i].flatten().tolist())  # only square symmetries
        counts[which] += 1
        frames = out["image"][i] if temporal else out["image"][i][:, None]
        for band in range(3):
            for t in range(frames.shape[1]):
                expected = out["mask"][i].float() * (band + 1) + 100 * t
                assert torch.equal(frames[band, t], expected)
        assert torch.equal(out["nodata_mask"][i], symmetries(nodata[0])[which])
    assert all(abs(c / n - 1 / 8) < 0.04 for c in counts), counts


def test_flip_draws_horizontal_vertical_or_both_on_any_shape():
    """albumentations 1.4's Flip: one of the three flips, evenly; no turn of a non-square chip."""
    torch.manual_seed(2)
    n = 600
    chip = torch.arange(12).view(3, 4)  # not square: no transposition may be drawn
    out = device_only([alb("Flip", p=1.0)])({"image": chip.expand(n, 1, 3, 4).float(), "mask": chip.expand(n, 3, 4)})
    options = [chip.flip(-1), chip.flip(-2), chip.flip(-1).flip(-2)]
    counts = [0, 0, 0]
    for image, mask in zip(out["image"], out["mask"]):
        which = [torch.equal(mask, o) for o in options].index(True)
        counts[which] += 1
        assert torch.equal(image[0].long(), mask)
    assert all(abs(c / n - 1 / 3) < 0.06 for c in counts), counts


def test_random_rotate90_only_turns():
    torch.manual_seed(1)
    square = torch.arange(16).view(4, 4)
    batch = {"image": square.expand(200, 1, 4, 4).float()}
    out = device_only([alb("RandomRotate90", p=1.0)])(batch)
    turns = {tuple(s.flatten().tolist()) for s in symmetries(square)[:4]}
    seen = {tuple(img[0].long().flatten().tolist()) for img in out["image"]}
    assert seen == turns  # all four turns, no mirror image


def test_square_symmetry_refuses_non_square_images():
    batch = {"image": torch.zeros(2, 3, 8, 6)}
    with pytest.raises(ValueError, match="needs square images; got 8 x 6"):
        device_only([alb("D4")])(batch)
    assert device_only([alb("HorizontalFlip", p=1)])(batch)["image"].shape == (2, 3, 8, 6)
    with pytest.raises(ValueError, match=r"elements=\[9\]"):
        RandomSquareSymmetry([9])


def test_random_crop_size_and_shared_geometry():
    torch.manual_seed(2)
    batch = encoded_batch(5, b=6, size=24)
    out = device_only([alb("RandomCrop", height=10, width=12)])(batch)
    assert out["image"].shape == (6, 5, 10, 12) and out["mask"].shape == (6, 10, 12)
    for band in range(5):  # every band still encodes the mask: one crop per sample
        torch.testing.assert_close(out["image"][:, band], out["mask"].float() * (band + 1))


def test_center_crop_is_the_middle():
    batch = encoded_batch(3, size=16)
    want = batch["mask"][:, 3:13, 2:14].clone()
    out = device_only([alb("CenterCrop", height=10, width=12)])(batch)
    assert torch.equal(out["mask"], want)


def test_resize_keeps_classes_and_matches_opencv_on_the_image():
    import albumentations

    batch = encoded_batch(4, b=2, size=32)
    image, mask = batch["image"].clone(), batch["mask"].clone()
    out = device_only([alb("Resize", height=16, width=16)])(batch)
    assert out["mask"].dtype == torch.int64
    # Nearest neighbour at pixel centres: exactly the classes of every other pixel.
    assert torch.equal(out["mask"], mask[:, 1::2, 1::2])
    up = device_only([alb("Resize", height=48, width=40)])(encoded_batch(4, b=2, size=32))
    assert up["mask"].shape == (2, 48, 40)
    assert set(up["mask"].unique().tolist()) <= set(mask.unique().tolist())
    # The image is resampled as OpenCV's INTER_LINEAR (albumentations' default).
    hwc = image[0].permute(1, 2, 0).numpy()
    want = albumentations.Resize(48, 40)(image=hwc)["image"]
    np.testing.assert_allclose(up["image"][0].permute(1, 2, 0).numpy(), want, atol=1e-4)


def test_random_resized_crop_arguments():
    torch.manual_seed(3)
    batch = encoded_batch(3, b=4, size=32)
    mask = batch["mask"].clone()
    # The whole image (scale 1, ratio 1) resized: the same as Resize.
    whole = alb("RandomResizedCrop", size=[16, 16], scale=[1.0, 1.0], ratio=[1.0, 1.0])
    out = device_only([whole])(batch)
    assert torch.equal(out["mask"], mask[:, 1::2, 1::2])
    # albumentations 1.4's height/width form, and a random crop: sizes and classes.
    out = device_only([alb("RandomResizedCrop", height=12, width=20, scale=[0.2, 0.5])])(
        encoded_batch(3, b=4, size=32)
    )
    assert out["image"].shape == (4, 3, 12, 20)
    assert set(out["mask"].unique().tolist()) <= set(mask.unique().tolist())


def test_kornia_configs_are_unchanged_and_mix_with_mapped_entries():
    batch = encoded_batch(3, b=8)
    flipped = batch["mask"].flip(-2)
    spec = [
        {"class_path": "kornia.augmentation.RandomVerticalFlip", "init_args": {"p": 1.0}},
        "RandomHorizontalFlip",  # bare names are kornia's (p=0.5)
        alb("HorizontalFlip", p=1.0),
        {"class_path": "RandomHorizontalFlip", "init_args": {"p": 1.0}},
    ]
    torch.manual_seed(0)
    aug = build_augmentation(spec, "train_transform")
    assert len(list(aug.sequential.children())) == 4
    out = aug(batch)
    # The two certain horizontal flips cancel: each sample is flipped vertically, and
    # horizontally too where the bare entry drew a flip.
    mirrored = [torch.equal(out["mask"][i], flipped[i].flip(-1)) for i in range(8)]
    for i in range(8):
        assert mirrored[i] or torch.equal(out["mask"][i], flipped[i])
    assert 0 < sum(mirrored) < 8


# ---------------------------------------------------------------- dropped
@pytest.mark.parametrize(
    "entry",
    [
        {"class_path": "ToTensorV2"},
        {"class_path": "albumentations.pytorch.ToTensorV2"},
        {"class_path": "albumentations.pytorch.transforms.ToTensorV2"},
        {"class_path": "terratorch.datasets.transforms.FlattenTemporalIntoChannels"},
        {"class_path": "geofm.datasets.transforms.FlattenTemporalIntoChannels"},
        {
            "class_path": "terratorch.datasets.transforms.UnflattenTemporalFromChannels",
            "init_args": {"n_timesteps": 3},
        },
        FlattenTemporalIntoChannels(),  # what jsonargparse builds while TerraTorch is aliased
        UnflattenTemporalFromChannels(n_timesteps=3),
    ],
)
def test_dropped_with_one_info_line(entry, caplog):
    caplog.set_level(logging.INFO, logger="geofm.data.albumentations_compat")
    on_cpu, on_device = build_transforms([alb("VerticalFlip", p=1.0), entry], "train_transform")
    assert on_cpu is None and len(list(on_device.sequential.children())) == 1
    lines = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("train_transform[1]: ")
    name = entry["class_path"] if isinstance(entry, dict) else type(entry).__name__
    assert name in lines[0]
    assert "tensors already" in lines[0] or "folds time into channels" in lines[0]
    assert build_transforms([entry], "val_transform") == (None, None)


def test_terratorch_paths_resolve_through_the_cli_aliases():
    from geofm.compat.terratorch import resolve_class_path, terratorch_aliases

    with terratorch_aliases():
        for prefix in ("terratorch.datasets.transforms", "geofm.datasets.transforms"):
            path = resolve_class_path(f"{prefix}.UnflattenTemporalFromChannels")
            assert path == "geofm.data.albumentations_compat.UnflattenTemporalFromChannels"


def test_other_terratorch_transforms_are_named_errors():
    entry = {"class_path": "terratorch.datasets.transforms.SelectBands"}
    with pytest.raises(
        ConfigError,
        match=r"train_transform\[0\]: terratorch.datasets.transforms.SelectBands has no geofm",
    ):
        build_transforms([entry], "train_transform")


# ---------------------------------------------------------------- per sample on the CPU
def test_unmappable_entries_run_on_the_cpu_and_keep_the_order(caplog):
    caplog.set_level(logging.INFO, logger="geofm.data.albumentations_compat")
    spec = [
        alb("HorizontalFlip", p=1.0),
        alb("ChannelDropout", p=0.0),  # no kornia counterpart: it and all before go to the CPU
        alb("RandomCrop", height=8, width=8),
    ]
    on_cpu, on_device = build_transforms(spec, "train_transform")
    assert repr(on_cpu) == "AlbumentationsSampleTransform(HorizontalFlip, ChannelDropout)"
    assert [type(m).__name__ for m in on_device.sequential.children()] == ["RandomCrop"]
    assert any("per sample on the CPU" in r.getMessage() for r in caplog.records)
    # Arguments beyond the mapping: albumentations runs it, as written.
    on_cpu, on_device = build_transforms([alb("RandomCrop", height=8, width=8, pad_if_needed=True)])
    assert on_device is None and repr(on_cpu) == "AlbumentationsSampleTransform(RandomCrop)"
    on_cpu, _ = build_transforms([alb("Resize", height=8, width=8, interpolation=4)])
    assert on_cpu is not None


def test_cpu_sample_transform_on_temporal_and_multimodal_images():
    on_cpu, _ = build_transforms([alb("HorizontalFlip", p=1.0), alb("ChannelDropout", p=0.0)])
    image = torch.rand(2, 3, 8, 8)  # (C, T, H, W)
    mask = torch.randint(0, 3, (8, 8))
    nodata = torch.rand(8, 8) > 0.7
    out = on_cpu({"image": image, "mask": mask, "nodata_mask": nodata, "filename": "a.tif"})
    assert torch.equal(out["image"], image.flip(-1)) and out["filename"] == "a.tif"
    assert torch.equal(out["mask"], mask.flip(-1)) and out["mask"].dtype == torch.int64
    assert torch.equal(out["nodata_mask"], nodata.flip(-1))
    images = {"S2L2A": torch.rand(4, 8, 8), "S1GRD": torch.rand(2, 8, 8)}
    out = on_cpu({"image": dict(images), "mask": mask})
    assert list(out["image"]) == ["S2L2A", "S1GRD"]
    for m, value in images.items():
        assert torch.equal(out["image"][m], value.flip(-1))


def test_cpu_pixels_from_outside_are_nodata_and_mask_fill():
    on_cpu, _ = build_transforms(
        [alb("Rotate", limit=[45, 45], p=1.0, border_mode=0)], mask_fill=-1
    )
    mask = torch.ones(16, 16, dtype=torch.int64)
    out = on_cpu({"image": torch.ones(3, 16, 16), "mask": mask, "nodata_mask": mask == 0})
    assert out["mask"][0, 0] == -1 and out["nodata_mask"][0, 0]
    assert out["mask"][8, 8] == 1 and not out["nodata_mask"][8, 8]
    assert torch.equal(out["nodata_mask"], out["mask"] == -1)


def test_cpu_transforms_repeat_under_seed_everything():
    from lightning.pytorch import seed_everything

    on_cpu, _ = build_transforms([alb("CoarseDropout", p=1.0)])
    image = torch.rand(3, 32, 32)
    runs = []
    for _ in range(2):
        seed_everything(7, verbose=False)  # albumentations 2 through torch, 1.4 through random
        runs.append(on_cpu({"image": image.clone()})["image"])
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], image)


def test_kornia_entry_before_a_cpu_only_one_asks_to_reorder():
    with pytest.raises(
        ConfigError,
        match=r"train_transform\[0\]: kornia.augmentation.RandomVerticalFlip runs on the device.*"
        r"train_transform\[2\]: albumentations.GaussNoise.*Move kornia.augmentation."
        r"RandomVerticalFlip after albumentations.GaussNoise",
    ):
        build_transforms(
            [
                {"class_path": "kornia.augmentation.RandomVerticalFlip"},
                alb("HorizontalFlip"),
                alb("GaussNoise"),
            ],
            "train_transform",
        )


def test_missing_albumentations_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "albumentations", None)  # import albumentations fails
    # Mapped transforms need no albumentations.
    assert build_transforms([alb("D4"), {"class_path": "ToTensorV2"}], "train_transform")[0] is None
    with pytest.raises(ConfigError) as info:
        build_transforms([alb("D4"), alb("GridDropout")], "train_transform")
    message = str(info.value)
    assert message.startswith("train_transform[1]: albumentations.GridDropout runs per sample")
    assert "pip install albumentations" in message and "geofm[albumentations]" in message
    assert "\n" not in message


def test_albumentations_argument_errors_name_the_entry():
    with pytest.raises(ConfigError, match=r"test_transform\[0\]: albumentations.GridDropout"):
        build_transforms([alb("GridDropout", ratio=7.0)], "test_transform")
    with pytest.raises(ValueError, match=r"test_transform\[0\]: 'albumentations.NoSuchThing'"):
        build_transforms([alb("NoSuchThing"), alb("GridDropout")], "test_transform")


# ---------------------------------------------------------------- in a datamodule
def encoded_folder(root: Path, names=("a", "b", "c", "d"), bands: int = 4, size: int = 24) -> Path:
    """Images whose band ``b`` is ``(label + 1) * (b + 1)``, so geometry can be checked."""
    rng = np.random.default_rng(0)
    for name in names:
        label = rng.integers(0, 3, (size, size)).astype(np.uint8)
        image = ((label + 1)[None] * np.arange(1, bands + 1)[:, None, None]).astype(np.float32)
        image[:, 2, 5] = IMAGE_NODATA  # a nodata pixel
        write_tif(root / "images" / f"{name}_img.tif", image, nodata=IMAGE_NODATA)
        write_tif(root / "labels" / f"{name}_lbl.tif", label, nodata=LABEL_NODATA)
    return root


def test_datamodule_with_a_terratorch_transform_list(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    root = encoded_folder(tmp_path)
    train_transform = [  # as YAML gives it
        {"class_path": "albumentations.ChannelDropout", "init_args": {"p": 1.0}},
        {"class_path": "albumentations.D4"},
        {"class_path": "albumentations.HorizontalFlip", "init_args": {"p": 0.5}},
        {"class_path": "albumentations.RandomCrop", "init_args": {"height": 16, "width": 16}},
        {"class_path": "ToTensorV2"},
    ]
    dm = GenericNonGeoSegmentationDataModule(
        batch_size=4,
        train_data_root=root / "images",
        train_label_data_root=root / "labels",
        img_grep="*_img.tif",
        label_grep="*_lbl.tif",
        num_classes=3,
        train_transform=train_transform,
        val_transform=[{"class_path": "albumentations.pytorch.ToTensorV2"}],
        persistent_workers=False,
    )
    assert dm.sample_transforms["val"] is None and dm.augmentations["val"] is None
    assert any("ToTensorV2 dropped" in r.getMessage() for r in caplog.records)
    torch.manual_seed(0)
    dm.setup("fit")
    assert dm.train_dataset.transform is dm.sample_transforms["train"]
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 4, 24, 24)  # the CPU part ran; no crop yet
    out = dm.augment(batch, "train")
    image, mask, nodata = out["image"], out["mask"], out["nodata_mask"]
    assert image.shape == (4, 4, 16, 16) and mask.shape == (4, 16, 16)
    assert mask.dtype == torch.int64
    for i in range(4):
        dropped = [b for b in range(4) if (image[i, b] == 0).all()]
        assert len(dropped) == 1  # ChannelDropout, per sample on the CPU
        for b in set(range(4)) - set(dropped):
            kept = image[i, b]
            # The device geometry moved every kept band, the mask and the nodata mask alike.
            assert torch.equal(torch.isnan(kept), nodata[i])
            want = (mask[i].float() + 1) * (b + 1)
            assert torch.equal(kept[~nodata[i]], want[~nodata[i]])
    # The same list with the CPU-only entry removed runs wholly on the device.
    dm2 = GenericNonGeoSegmentationDataModule(
        train_data_root=root / "images", train_transform=train_transform[1:]
    )
    assert dm2.sample_transforms["train"] is None and dm2.augmentations["train"] is not None


def test_datamodule_config_through_jsonargparse_with_terratorch_aliases(tmp_path):
    """A TerraTorch config's list as the geofm command parses it (aliases on)."""
    import lightning.pytorch as pl
    from jsonargparse import ArgumentParser

    from geofm.compat.terratorch import terratorch_aliases

    root = encoded_folder(tmp_path)
    config = tmp_path / "data.yaml"
    config.write_text(
        f"""
data:
  class_path: terratorch.datamodules.GenericNonGeoSegmentationDataModule
  init_args:
    batch_size: 2
    train_data_root: {root / "images"}
    train_label_data_root: {root / "labels"}
    img_grep: "*_img.tif"
    label_grep: "*_lbl.tif"
    train_transform:
      - class_path: terratorch.datasets.transforms.FlattenTemporalIntoChannels
      - class_path: albumentations.VerticalFlip
        init_args: {{p: 1.0}}
      - class_path: ToTensorV2
      - class_path: terratorch.datasets.transforms.UnflattenTemporalFromChannels
        init_args: {{n_timesteps: 1}}
"""
    )
    with terratorch_aliases():
        parser = ArgumentParser()
        parser.add_subclass_arguments(pl.LightningDataModule, "data")
        parser.add_argument("--config", action="config")
        dm = parser.instantiate(parser.parse_args([f"--config={config}"])).data
    assert dm.sample_transforms["train"] is None
    (module,) = dm.augmentations["train"].sequential.children()
    assert type(module).__name__ == "RandomVerticalFlip" and module.p == 1.0


def test_geofm_fit_runs_a_terratorch_transform_list(tmp_path, folders, caplog):  # noqa: F811
    """The whole route: the geofm command, TerraTorch's paths aliased, one training step."""
    import yaml

    from geofm.cli import main as geofm
    from tests.test_cli import write_config

    config = yaml.safe_load(write_config(tmp_path, folders).read_text())
    config["data"]["class_path"] = "terratorch.datamodules.GenericNonGeoSegmentationDataModule"
    config["data"]["init_args"]["train_transform"] = [
        {"class_path": "albumentations.CoarseDropout", "init_args": {"p": 0.5}},
        {"class_path": "albumentations.D4"},
        {"class_path": "albumentations.RandomCrop", "init_args": {"height": 16, "width": 16}},
        {"class_path": "albumentations.pytorch.transforms.ToTensorV2"},
        {"class_path": "terratorch.datasets.transforms.FlattenTemporalIntoChannels"},
        {
            "class_path": "terratorch.datasets.transforms.UnflattenTemporalFromChannels",
            "init_args": {"n_timesteps": 1},
        },
    ]
    config["data"]["init_args"]["val_transform"] = [{"class_path": "ToTensorV2"}]
    path = tmp_path / "terratorch.yaml"
    path.write_text(yaml.safe_dump(config))
    with caplog.at_level(logging.INFO, logger="geofm.data.albumentations_compat"):
        assert geofm(["fit", "-c", str(path), "--trainer.fast_dev_run", "true"]) == 0
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("train_transform[3]: ") and "dropped" in m for m in messages)
    assert any("CoarseDropout per sample on the CPU" in m for m in messages)
