"""Seeded generators of tiny GeoTIFF folders for the data tests (real CRS and transforms).

Every image encodes where it came from, so tests can check a pixel against the file: band
``b`` (0-based) of sample ``s`` at row ``r``, column ``c`` holds ``1000 * s + 10 * b`` plus a
seeded random value in ``[0, 5)``; a few pixels hold the nodata value instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

CRS = "EPSG:32614"
PIXEL = 30.0
IMAGE_NODATA = -9999.0
LABEL_NODATA = 255


def write_tif(
    path: Path,
    array: np.ndarray,
    *,
    nodata: float | None = None,
    origin: tuple[float, float] = (440280.0, 3159720.0),
    crs: str = CRS,
) -> Path:
    """Write ``array`` ``(C, H, W)`` or ``(H, W)`` as a GeoTIFF with a UTM grid."""
    array = array[None] if array.ndim == 2 else array
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "height": array.shape[1],
        "width": array.shape[2],
        "count": array.shape[0],
        "dtype": array.dtype.name,
        "crs": crs,
        "transform": Affine(PIXEL, 0.0, origin[0], 0.0, -PIXEL, origin[1]),
        "nodata": nodata,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)
    return path


@dataclass
class PixelFolder:
    """What a generated pixel-wise folder holds, for checking what the datasets return."""

    image_root: Path
    label_root: Path
    names: list[str]
    images: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (C, H, W) as written
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (H, W) as written
    origins: dict[str, tuple[float, float]] = field(default_factory=dict)


def make_image(
    rng: np.random.Generator, sample: int, bands: int, size: int, nodata_pixels: int
) -> np.ndarray:
    """``(bands, size, size)`` float32 encoding ``sample`` and band, with nodata pixels."""
    base = 1000.0 * sample + 10.0 * np.arange(bands, dtype=np.float32)[:, None, None]
    image = (base + rng.uniform(0, 5, (bands, size, size))).astype(np.float32)
    for _ in range(nodata_pixels):
        r, c = rng.integers(0, size, 2)
        image[:, r, c] = IMAGE_NODATA
    return image


def make_pixel_folder(
    root: Path,
    names: Sequence[str] = ("a_1", "a_2", "a_10", "b_3"),
    *,
    bands: int = 6,
    size: int = 32,
    num_classes: int = 3,
    image_pattern: str = "{}_img.tif",
    label_pattern: str = "lbl_{}.tif",
    separate_labels: bool = True,
    label_dtype: str = "uint8",
    label_nodata: float | None = LABEL_NODATA,
    seed: int = 0,
) -> PixelFolder:
    """Images and labels named so that the two folders sort in different orders.

    ``a_1_img.tif`` sorts after ``a_10_img.tif``, while ``lbl_a_1.tif`` sorts before
    ``lbl_a_10.tif``: pairing by sort position would mix them up.
    """
    rng = np.random.default_rng(seed)
    image_root = root / "images"
    label_root = root / "labels" if separate_labels else image_root
    folder = PixelFolder(image_root, label_root, list(names))
    for s, name in enumerate(names):
        image = make_image(rng, s, bands, size, nodata_pixels=3)
        if np.issubdtype(np.dtype(label_dtype), np.floating):
            label = rng.normal(s, 1.0, (size, size)).astype(label_dtype)
        else:
            label = rng.integers(0, num_classes, (size, size)).astype(label_dtype)
        if label_nodata is not None:
            label[0, :4] = label_nodata
        origin = (440280.0 + 10_000 * s, 3159720.0)
        write_tif(
            image_root / image_pattern.format(name), image, nodata=IMAGE_NODATA, origin=origin
        )
        write_tif(
            label_root / label_pattern.format(name), label, nodata=label_nodata, origin=origin
        )
        folder.images[name] = image
        folder.labels[name] = label
        folder.origins[name] = origin
    return folder


def make_class_folder(
    root: Path,
    classes: Sequence[str] = ("forest", "urban", "water"),
    per_class: int = 2,
    *,
    bands: int = 4,
    size: int = 16,
    seed: int = 0,
) -> dict[str, tuple[str, np.ndarray]]:
    """``root/<class>/<class>_<i>.tif``; returns file stem -> (class, image)."""
    rng = np.random.default_rng(seed)
    out = {}
    s = 0
    for cls in classes:
        for i in range(per_class):
            image = make_image(rng, s, bands, size, nodata_pixels=1)
            write_tif(root / cls / f"{cls}_{i}.tif", image, nodata=IMAGE_NODATA)
            out[f"{cls}_{i}"] = (cls, image)
            s += 1
    return out
