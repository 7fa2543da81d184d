"""Seeded generators of tiny copies of the benchmark layouts the named datamodules read.

Each writes real GeoTIFFs (UTM grid, via :func:`tests.data.fixtures.write_tif`) in the folder
tree of the published dataset, and returns what it wrote so tests can check pixels:

- Sen1Floods11 v1.1: 13-band uint16 ``S2Hand`` chips, int16 ``LabelHand`` labels holding -1
  (one file tags -1 as nodata, the others do not), ``flood_*_data.txt`` split files;
- multi-temporal crop classification: 18-band chips (3 dates x 6 bands, date by date; band
  ``b`` of date ``t`` holds ``1000 * t + 10 * b`` plus the sample number) and uint8 masks
  ``0..13``;
- HLS burn scars: 6-band float32 chips and int16 masks ``-1, 0, 1`` in ``training/`` and
  ``validation/``;
- EuroSAT (TorchGeo's layout): 13-band chips in class folders and ``eurosat-*.txt`` splits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tests.data.fixtures import write_tif

#: Sample names per Sen1Floods11 split file. ``India_1`` and ``India_10`` catch substring
#: matching; ``Bolivia_5`` is in no split.
SEN1FLOODS11_SPLITS = {
    "train": ("Ghana_1", "Ghana_2", "India_10"),
    "valid": ("India_1",),
    "test": ("Spain_3", "Spain_30"),
}
CROP_SPLITS = {"training": ("chip_000_001", "chip_000_002"), "validation": ("chip_001_000",)}
FIRE_SPLITS = {
    "training": ("subsetted_512x512_HLS.S30.T10SEH.2018190.v1.4", "subsetted_512x512_HLS.S30.T10SFG.2019201.v1.4"),
    "validation": ("subsetted_512x512_HLS.S30.T11SKA.2020233.v1.4",),
}


@dataclass
class Layout:
    """A generated layout: its root and the arrays written, by sample name."""

    root: Path
    images: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)


def _origin(i: int) -> tuple[float, float]:
    return (440280.0 + 10_000 * i, 3159720.0)


def make_sen1floods11(root: Path, size: int = 32, seed: int = 0) -> Layout:
    """``root/v1.1/...`` as in the Sen1Floods11 release (see the module docstring)."""
    rng = np.random.default_rng(seed)
    hand = root / "v1.1" / "data" / "flood_events" / "HandLabeled"
    splits = root / "v1.1" / "splits" / "flood_handlabeled"
    splits.mkdir(parents=True)
    layout = Layout(root)
    names = [n for group in SEN1FLOODS11_SPLITS.values() for n in group] + ["Bolivia_5"]
    for i, name in enumerate(names):
        image = (100 * i + 10 * np.arange(13)[:, None, None] + rng.integers(0, 5, (13, size, size)))
        image = image.astype(np.uint16)
        label = rng.integers(0, 2, (size, size)).astype(np.int16)
        label[0, :3] = -1
        # Sen1Floods11 marks no data with -1; whether the file says so must not matter.
        nodata = -1 if name == "Ghana_1" else None
        write_tif(hand / "S2Hand" / f"{name}_S2Hand.tif", image, origin=_origin(i))
        write_tif(hand / "LabelHand" / f"{name}_LabelHand.tif", label, nodata=nodata, origin=_origin(i))
        # The S1 chips of the release sit in their own folder; one here must be ignored.
        write_tif(hand / "S1Hand" / f"{name}_S1Hand.tif", image[:2], origin=_origin(i))
        layout.images[name], layout.labels[name] = image, label
    for split, group in SEN1FLOODS11_SPLITS.items():
        (splits / f"flood_{split}_data.txt").write_text("".join(f"{n}\n" for n in group))
    return layout


def make_crop(root: Path, size: int = 16, seed: int = 0) -> Layout:
    """``root/{training,validation}_chips/`` and ``{training,validation}_data.txt``."""
    rng = np.random.default_rng(seed)
    layout = Layout(root)
    i = 0
    for prefix, group in CROP_SPLITS.items():
        folder = root / f"{prefix}_chips"
        # A chip in the folder but not in the split file must not be read.
        for name in (*group, f"chip_9{i}9_999"):
            dates = np.arange(3)[:, None, None, None]
            bands = np.arange(6)[None, :, None, None]
            image = 1000 * dates + 10 * bands + i + rng.uniform(0, 1, (3, 6, size, size))
            image = image.reshape(18, size, size).astype(np.float32)  # date by date
            label = rng.integers(0, 14, (size, size)).astype(np.uint8)
            label[0, :2] = 0
            write_tif(folder / f"{name}_merged.tif", image, origin=_origin(i))
            write_tif(folder / f"{name}.mask.tif", label, origin=_origin(i))
            layout.images[name], layout.labels[name] = image, label
            i += 1
        (root / f"{prefix}_data.txt").write_text("\n".join(group) + "\n")
    return layout


def make_fire_scars(root: Path, size: int = 16, seed: int = 0) -> Layout:
    """``root/training/`` and ``root/validation/`` of the HLS burn scars release."""
    rng = np.random.default_rng(seed)
    layout = Layout(root)
    i = 0
    for folder, group in FIRE_SPLITS.items():
        for name in group:
            image = (0.01 * i + 0.1 * np.arange(6)[:, None, None] + rng.uniform(0, 0.01, (6, size, size)))
            image = image.astype(np.float32)
            label = rng.integers(0, 2, (size, size)).astype(np.int16)
            label[-1, -3:] = -1
            write_tif(root / folder / f"{name}_merged.tif", image, origin=_origin(i))
            write_tif(root / folder / f"{name}.mask.tif", label, origin=_origin(i))
            layout.images[name], layout.labels[name] = image, label
            i += 1
    return layout


def make_eurosat(
    root: Path,
    per_split: Mapping[str, int] | None = None,
    classes: Sequence[str] = ("AnnualCrop", "Forest"),
    size: int = 32,
    seed: int = 0,
) -> Layout:
    """TorchGeo's EuroSAT layout: ``root/ds/images/.../tif/<Class>/<Class>_<i>.tif`` (13 bands)
    and ``root/eurosat-{train,val,test}.txt`` (file names with ``.jpg``, as released)."""
    rng = np.random.default_rng(seed)
    per_split = per_split or {"train": 4, "val": 2, "test": 2}
    tif = root / "ds" / "images" / "remote_sensing" / "otherDatasets" / "sentinel_2" / "tif"
    layout = Layout(root)
    i = 0
    for split, count in per_split.items():
        lines = []
        for k in range(count):
            cls = classes[k % len(classes)]
            name = f"{cls}_{i}"
            image = (1000 + 100 * np.arange(13)[:, None, None] + rng.integers(0, 50, (13, size, size)))
            write_tif(tif / cls / f"{name}.tif", image.astype(np.uint16), origin=_origin(i))
            layout.images[name] = image.astype(np.uint16)
            lines.append(f"{name}.jpg")
            i += 1
        (root / f"eurosat-{split}.txt").write_text("\n".join(lines) + "\n")
    return layout
