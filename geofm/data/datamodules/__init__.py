"""LightningDataModules over folders of GeoTIFFs (the names TerraTorch users know).

Besides the generic datamodules: the benchmark datasets TerraTorch's examples name
(``Sen1Floods11NonGeoDataModule``, ``MultiTemporalCropClassificationDataModule``,
``FireScarsNonGeoDataModule``) and ``TorchGeoDataModule`` for any TorchGeo datamodule.
TerraTorch names geofm lacks on purpose (GEO-Bench's ``M...NonGeoDataModule``...) raise an
``AttributeError`` that says what to use instead (see :mod:`.unsupported`).
"""

from geofm.data.datamodules.base import GeoTiffDataModule
from geofm.data.datamodules.classification import GenericNonGeoClassificationDataModule
from geofm.data.datamodules.detection import GenericNonGeoDetectionDataModule
from geofm.data.datamodules.fire_scars import FireScarsNonGeoDataModule
from geofm.data.datamodules.multi_temporal_crop_classification import (
    MultiTemporalCropClassificationDataModule,
)
from geofm.data.datamodules.multimodal import GenericMultiModalDataModule
from geofm.data.datamodules.pixel_wise import GenericPixelWiseDataModule
from geofm.data.datamodules.regression import GenericNonGeoPixelwiseRegressionDataModule
from geofm.data.datamodules.segmentation import GenericNonGeoSegmentationDataModule
from geofm.data.datamodules.sen1floods11 import Sen1Floods11NonGeoDataModule
from geofm.data.datamodules.torchgeo_data_module import TorchGeoDataModule, TorchNonGeoDataModule
from geofm.data.datamodules.unlabeled import GenericUnlabeledDataModule
from geofm.data.datamodules.unsupported import unsupported_message

__all__ = [
    "GeoTiffDataModule",
    "GenericPixelWiseDataModule",
    "GenericNonGeoSegmentationDataModule",
    "GenericNonGeoPixelwiseRegressionDataModule",
    "GenericNonGeoClassificationDataModule",
    "GenericNonGeoDetectionDataModule",
    "GenericMultiModalDataModule",
    "GenericUnlabeledDataModule",
    "Sen1Floods11NonGeoDataModule",
    "MultiTemporalCropClassificationDataModule",
    "FireScarsNonGeoDataModule",
    "TorchGeoDataModule",
    "TorchNonGeoDataModule",
]


def __getattr__(name: str) -> object:
    message = unsupported_message(name)
    if message is not None:
        raise AttributeError(message, name=name, obj=__name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}", name=name, obj=__name__)
