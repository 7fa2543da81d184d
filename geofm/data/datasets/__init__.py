"""Generic GeoTIFF datasets: pixel-wise (segmentation, regression) and classification."""

from geofm.data.datasets.base import GeoTiffDataset
from geofm.data.datasets.classification import GenericNonGeoClassificationDataset, find_classes
from geofm.data.datasets.multimodal import (
    GenericMultimodalDataset,
    GenericMultimodalPixelwiseRegressionDataset,
    GenericMultimodalSegmentationDataset,
)
from geofm.data.datasets.pixel_wise import (
    GenericNonGeoPixelwiseRegressionDataset,
    GenericNonGeoSegmentationDataset,
    GenericPixelWiseDataset,
)

__all__ = [
    "GeoTiffDataset",
    "GenericPixelWiseDataset",
    "GenericNonGeoSegmentationDataset",
    "GenericNonGeoPixelwiseRegressionDataset",
    "GenericNonGeoClassificationDataset",
    "GenericMultimodalDataset",
    "GenericMultimodalSegmentationDataset",
    "GenericMultimodalPixelwiseRegressionDataset",
    "find_classes",
]
