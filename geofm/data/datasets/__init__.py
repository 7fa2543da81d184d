"""Generic GeoTIFF datasets: pixel-wise (segmentation, regression), classification, detection."""

from geofm.data.datasets.base import GeoTiffDataset
from geofm.data.datasets.classification import GenericNonGeoClassificationDataset, find_classes
from geofm.data.datasets.detection import GenericNonGeoDetectionDataset
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
    "GenericNonGeoDetectionDataset",
    "GenericMultimodalDataset",
    "GenericMultimodalSegmentationDataset",
    "GenericMultimodalPixelwiseRegressionDataset",
    "find_classes",
]
