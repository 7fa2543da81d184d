"""LightningDataModules over folders of GeoTIFFs (the names TerraTorch users know)."""

from geofm.data.datamodules.base import GeoTiffDataModule
from geofm.data.datamodules.classification import GenericNonGeoClassificationDataModule
from geofm.data.datamodules.multimodal import GenericMultiModalDataModule
from geofm.data.datamodules.pixel_wise import GenericPixelWiseDataModule
from geofm.data.datamodules.regression import GenericNonGeoPixelwiseRegressionDataModule
from geofm.data.datamodules.segmentation import GenericNonGeoSegmentationDataModule

__all__ = [
    "GeoTiffDataModule",
    "GenericPixelWiseDataModule",
    "GenericNonGeoSegmentationDataModule",
    "GenericNonGeoPixelwiseRegressionDataModule",
    "GenericNonGeoClassificationDataModule",
    "GenericMultiModalDataModule",
]
