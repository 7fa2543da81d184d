"""``GenericNonGeoPixelwiseRegressionDataModule``: GeoTIFF folders for pixel-wise regression."""

from __future__ import annotations

from geofm.data.datamodules.pixel_wise import GenericPixelWiseDataModule
from geofm.data.datasets.pixel_wise import GenericNonGeoPixelwiseRegressionDataset

__all__ = ["GenericNonGeoPixelwiseRegressionDataModule"]


class GenericNonGeoPixelwiseRegressionDataModule(GenericPixelWiseDataModule):
    """Pixel-wise regression batches from GeoTIFF folders; ``mask`` is ``(B, H, W)`` float32.

    Label nodata pixels become ``no_label_replace``, or NaN when it is not set (the regression
    task skips NaN targets); pixels an augmentation brings in from outside the image too.

    Args:
        **kwargs: Settings of
            :class:`~geofm.data.datamodules.pixel_wise.GenericPixelWiseDataModule` and
            :class:`~geofm.data.datamodules.base.GeoTiffDataModule`.
    """

    dataset_class = GenericNonGeoPixelwiseRegressionDataset

    @staticmethod
    def _mask_fill(no_label_replace: float | None) -> float | None:
        return float("nan") if no_label_replace is None else no_label_replace
