"""The part every GeoTIFF dataset shares: a list of image files, band selection, reading."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from geofm.data.band_selection import BandSelection, BandSpec, select_bands
from geofm.data.raster import read_image

__all__ = ["GeoTiffDataset"]

log = logging.getLogger(__name__)


class GeoTiffDataset(Dataset[dict[str, Any]]):
    """Images read from GeoTIFF files; subclasses add labels.

    A sample is a dict:

    - ``image``: ``(C, H, W)`` or, with ``expand_temporal_dimension``, ``(C, T, H, W)`` float32,
      already multiplied by ``constant_scale`` and with nodata replaced (when
      ``no_data_replace`` is set), but not normalised;
    - ``nodata_mask``: ``(H, W)`` bool, True where any selected band was nodata (or NaN);
    - ``filename``: the image path as a string;
    - ``crs`` (WKT str or None), ``transform`` (6-tuple), ``height``, ``width``: the image grid.

    Args:
        image_files: The images, in sample order.
        dataset_bands: The file's bands in file order (see :mod:`geofm.data.band_selection`).
        output_bands: Bands to return, in order.
        constant_scale: Factor applied to pixel values when reading.
        no_data_replace: Value for nodata pixels; ``None`` keeps them.
        expand_temporal_dimension: Files stack ``T`` frames of ``len(dataset_bands)`` bands.
        band_keys: Names of the settings that gave ``dataset_bands`` and ``output_bands``, for
            messages (``("predict_dataset_bands", "predict_output_bands")``).
    """

    def __init__(
        self,
        image_files: Sequence[Path],
        *,
        dataset_bands: Sequence[BandSpec] | None = None,
        output_bands: Sequence[BandSpec] | None = None,
        constant_scale: float = 1.0,
        no_data_replace: float | None = None,
        expand_temporal_dimension: bool = False,
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
        self.constant_scale = float(constant_scale)
        self.no_data_replace = no_data_replace
        self.expand_temporal_dimension = expand_temporal_dimension

    @property
    def band_names(self) -> tuple[str, ...] | None:
        """Names of the output bands (``band_<n>`` for unnamed ones), when known."""
        return self.selection.names

    def __len__(self) -> int:
        return len(self.image_files)

    def read_image_array(
        self, index: int, replace_nodata: bool = True
    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """The image of sample ``index`` as arrays.

        Args:
            index: Sample index.
            replace_nodata: Write ``no_data_replace`` into nodata pixels; statistics read with
                ``False`` and use the returned mask instead.

        Returns:
            ``image`` ``(C, H, W)`` / ``(C, T, H, W)`` float32, ``nodata`` bool of the same shape,
            and the metadata keys of a sample (``filename``, ``crs``, ``transform``, ...).
        """
        path = self.image_files[index]
        image, nodata, grid = read_image(
            path,
            self.selection,
            expand_temporal_dimension=self.expand_temporal_dimension,
            constant_scale=self.constant_scale,
            no_data_replace=self.no_data_replace if replace_nodata else None,
            bands_key=self.bands_key,
        )
        return image, nodata, {"filename": str(path), **grid.as_metadata()}

    def load_image(self, index: int) -> dict[str, Any]:
        """The image part of a sample (every key but the label)."""
        image, nodata, meta = self.read_image_array(index)
        pixel_nodata = nodata.reshape(-1, *nodata.shape[-2:]).any(axis=0)
        return {
            "image": torch.from_numpy(image),
            "nodata_mask": torch.from_numpy(pixel_nodata),
            **meta,
        }

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.load_image(index)
