"""``GenericNonGeoSegmentationDataModule``: GeoTIFF folders for semantic segmentation."""

from __future__ import annotations

from typing import Any

from geofm.data.datamodules.pixel_wise import GenericPixelWiseDataModule
from geofm.data.datasets.pixel_wise import GenericNonGeoSegmentationDataset

__all__ = ["GenericNonGeoSegmentationDataModule"]


class GenericNonGeoSegmentationDataModule(GenericPixelWiseDataModule):
    """Segmentation batches from GeoTIFF folders; ``mask`` is ``(B, H, W)`` int64.

    Configured like TerraTorch's datamodule of the same name::

        data:
          class_path: geofm.data.GenericNonGeoSegmentationDataModule
          init_args:
            batch_size: 8
            train_data_root: data/train/images
            train_label_data_root: data/train/labels
            img_grep: "*_S2Hand.tif"
            label_grep: "*_LabelHand.tif"
            dataset_bands: [COASTAL, BLUE, GREEN, RED, [5, 13]]
            output_bands: [BLUE, GREEN, RED]
            means: statistics.yaml
            stds: statistics.yaml
            no_data_replace: 0
            no_label_replace: -1
            num_classes: 2

    Args:
        num_classes: Number of classes. When given, labels are checked as they are read: a
            value outside ``[0, num_classes)`` that is not ``no_label_replace`` raises an error
            naming the label file (see
            :class:`~geofm.data.datasets.pixel_wise.GenericNonGeoSegmentationDataset`).
        reduce_zero_label: Subtract 1 from every label, for label files whose classes start at
            1 (class 0 becomes -1: ignore it with ``ignore_index=-1``). Nodata pixels are not
            shifted; they get ``no_label_replace``.
        **kwargs: Settings of
            :class:`~geofm.data.datamodules.pixel_wise.GenericPixelWiseDataModule` and
            :class:`~geofm.data.datamodules.base.GeoTiffDataModule`.
    """

    dataset_class = GenericNonGeoSegmentationDataset

    def __init__(
        self,
        num_classes: int | None = None,
        reduce_zero_label: bool = False,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.reduce_zero_label = reduce_zero_label

    def dataset_kwargs(self, split: str) -> dict[str, Any]:
        """``num_classes`` and ``reduce_zero_label`` for the dataset."""
        return {"num_classes": self.num_classes, "reduce_zero_label": self.reduce_zero_label}
