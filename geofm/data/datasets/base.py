"""The part every GeoTIFF dataset shares: a list of image files, band selection, reading, and
the per-sample transform run last in ``__getitem__``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from geofm.data.band_selection import BandSelection, BandSpec, select_bands
from geofm.data.coords import find_dates, location_coords, temporal_coords
from geofm.data.raster import read_grid, read_image

__all__ = ["GeoTiffDataset", "SampleDataset"]

log = logging.getLogger(__name__)


class SampleDataset(Dataset[dict[str, Any]]):
    """A dataset of sample dicts whose ``transform``, when set, runs on each sample it returns.

    Subclasses implement :meth:`read_sample`. A datamodule sets ``transform`` to the per-sample
    part of its ``*_transform`` setting (albumentations transforms that have no kornia
    counterpart, see :mod:`geofm.data.albumentations_compat`), so it runs on the CPU in the
    DataLoader's workers, before collation; batch augmentation runs later, on the device.
    """

    #: Called on every sample ``__getitem__`` returns; ``None`` returns samples as read.
    transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    def read_sample(self, index: int) -> dict[str, Any]:
        """Sample ``index`` as read from its files, before ``transform``."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.read_sample(index)
        return sample if self.transform is None else self.transform(sample)


class GeoTiffDataset(SampleDataset):
    """Images read from GeoTIFF files; subclasses add labels.

    A sample is a dict:

    - ``image``: ``(C, H, W)`` or, with ``expand_temporal_dimension``, ``(C, T, H, W)`` float32
      raw values with NaN where a band is nodata (the task's
      :class:`~geofm.models.preprocess.Preprocess` scales, fills and normalises them);
    - ``nodata_mask``: ``(H, W)`` bool, True where any selected band was nodata (or not finite);
    - ``temporal_coords``: ``(T, 2)`` float32 ``(year, day of year)`` per time step, when the
      file names (or tags) give dates (see :mod:`geofm.data.coords`);
    - ``location_coords``: ``(2,)`` float32 ``(latitude, longitude)`` of the image centre, when
      the file has a CRS;
    - ``filename``: the image path as a string;
    - ``crs`` (WKT str or None), ``transform`` (6-tuple), ``height``, ``width``: the image grid.

    Args:
        image_files: The images, in sample order.
        dataset_bands: The file's bands in file order (see :mod:`geofm.data.band_selection`).
        output_bands: Bands to return, in order.
        expand_temporal_dimension: Files stack ``T`` frames of ``len(dataset_bands)`` bands.
        date_pattern: How to read acquisition dates (see :mod:`geofm.data.coords`); ``None``
            tries the common file-name patterns and gives no ``temporal_coords`` when none
            fits every file.
        band_keys: Names of the settings that gave ``dataset_bands`` and ``output_bands``, for
            messages (``("predict_dataset_bands", "predict_output_bands")``).
    """

    def __init__(
        self,
        image_files: Sequence[Path],
        *,
        dataset_bands: Sequence[BandSpec] | None = None,
        output_bands: Sequence[BandSpec] | None = None,
        expand_temporal_dimension: bool = False,
        date_pattern: str | None = None,
        band_keys: tuple[str, str] = ("dataset_bands", "output_bands"),
    ):
        super().__init__()
        dataset_key, self.bands_key = band_keys
        self.selection: BandSelection = select_bands(
            dataset_bands, output_bands, dataset_key=dataset_key, output_key=self.bands_key
        )
        if expand_temporal_dimension and self.selection.dataset_count is None:
            raise ValueError(
                f"expand_temporal_dimension=True needs {dataset_key}: the bands of "
                "one time step, in file order (e.g. [[1, 6]] for 6 unnamed bands)."
            )
        self.image_files = [Path(p) for p in image_files]
        self.expand_temporal_dimension = expand_temporal_dimension
        # File names are known now, so a pattern that misses a file fails before training.
        self.dates, self.date_pattern = find_dates(self.image_files, date_pattern)

    @property
    def band_names(self) -> tuple[str, ...] | None:
        """Names of the output bands (``band_<n>`` for unnamed ones), when known."""
        return self.selection.names

    def __len__(self) -> int:
        return len(self.image_files)

    def read_image_array(self, index: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """The image of sample ``index`` as arrays.

        Returns:
            ``image`` ``(C, H, W)`` / ``(C, T, H, W)`` raw float32 (NaN at nodata), ``nodata``
            bool of the same shape, and the metadata keys of a sample (``filename``, ``crs``,
            ``transform``, ...).
        """
        path = self.image_files[index]
        image, nodata, grid = read_image(
            path,
            self.selection,
            expand_temporal_dimension=self.expand_temporal_dimension,
            bands_key=self.bands_key,
        )
        return image, nodata, {"filename": str(path), **grid.as_metadata()}

    def load_image(self, index: int) -> dict[str, Any]:
        """The image part of a sample (every key but the label)."""
        image, nodata, meta = self.read_image_array(index)
        pixel_nodata = nodata.reshape(-1, *nodata.shape[-2:]).any(axis=0)
        sample: dict[str, Any] = {
            "image": torch.from_numpy(image),
            "nodata_mask": torch.from_numpy(pixel_nodata),
        }
        frames = image.shape[1] if image.ndim == 4 else 1
        coords = self.coordinates(index, meta, frames)
        sample.update({key: torch.from_numpy(value) for key, value in coords.items()})
        return {**sample, **meta}

    def coordinates(
        self, index: int, grid: dict[str, Any] | None = None, frames: int = 1
    ) -> dict[str, np.ndarray]:
        """``temporal_coords`` ``(T, 2)`` and ``location_coords`` ``(2,)`` of sample ``index``.

        Args:
            index: Sample index.
            grid: The sample's ``crs``/``transform``/``height``/``width``; read from the file's
                header when not given.
            frames: Time steps of the image.

        Returns:
            The keys that can be derived: dates need ``self.dates``, locations a CRS.
        """
        path = self.image_files[index]
        coords: dict[str, np.ndarray] = {}
        if self.dates is not None:
            coords["temporal_coords"] = temporal_coords(self.dates[index], frames, path, self.date_pattern)
        if grid is None:
            grid = read_grid(path).as_metadata()
        location = location_coords(grid["crs"], grid["transform"], grid["height"], grid["width"])
        if location is not None:
            coords["location_coords"] = location
        return coords

    def read_sample(self, index: int) -> dict[str, Any]:
        """Sample ``index`` as read (images only here; subclasses add labels)."""
        return self.load_image(index)
