"""Reading GeoTIFFs into batches: bands, datasets, datamodules, transforms, statistics.

``import geofm.data`` stays light: rasterio, lightning and kornia load when a name that needs
them is first used (PEP 562).
"""

from __future__ import annotations

from geofm._lazy import lazy_exports

# public name -> module that defines it
_LAZY: dict[str, str] = {
    "GenericNonGeoSegmentationDataModule": "geofm.data.datamodules.segmentation",
    "GenericNonGeoPixelwiseRegressionDataModule": "geofm.data.datamodules.regression",
    "GenericNonGeoClassificationDataModule": "geofm.data.datamodules.classification",
    "GenericMultiModalDataModule": "geofm.data.datamodules.multimodal",
    "GenericNonGeoDetectionDataModule": "geofm.data.datamodules.detection",
    "GenericNonGeoDetectionDataset": "geofm.data.datasets.detection",
    "read_vector_objects": "geofm.data.vector_labels",
    "CocoLabels": "geofm.data.coco_labels",
    "GenericUnlabeledDataModule": "geofm.data.datamodules.unlabeled",
    "GeoTiffDataModule": "geofm.data.datamodules.base",
    "Sen1Floods11NonGeoDataModule": "geofm.data.datamodules.sen1floods11",
    "MultiTemporalCropClassificationDataModule": "geofm.data.datamodules.multi_temporal_crop_classification",
    "FireScarsNonGeoDataModule": "geofm.data.datamodules.fire_scars",
    "TorchGeoDataModule": "geofm.data.datamodules.torchgeo_data_module",
    "GeoTiffDataset": "geofm.data.datasets.base",
    "GenericNonGeoSegmentationDataset": "geofm.data.datasets.pixel_wise",
    "GenericNonGeoPixelwiseRegressionDataset": "geofm.data.datasets.pixel_wise",
    "GenericNonGeoClassificationDataset": "geofm.data.datasets.classification",
    "GenericMultimodalDataset": "geofm.data.datasets.multimodal",
    "GenericMultimodalSegmentationDataset": "geofm.data.datasets.multimodal",
    "GenericMultimodalPixelwiseRegressionDataset": "geofm.data.datasets.multimodal",
    "BatchAugmentation": "geofm.data.transforms",
    "build_augmentation": "geofm.data.transforms",
    "RandomSquareSymmetry": "geofm.data.transforms",
    "build_transforms": "geofm.data.albumentations_compat",
    "collate_samples": "geofm.data.collate",
    "compute_statistics": "geofm.data.statistics",
    "write_statistics": "geofm.data.statistics",
    "load_statistics": "geofm.data.statistics",
    "DatasetStatistics": "geofm.data.statistics",
    "select_bands": "geofm.data.band_selection",
    "BandSelection": "geofm.data.band_selection",
    "read_image": "geofm.data.raster",
    "read_label": "geofm.data.raster",
    "HLSBands": "geofm.data.bands",
    "Sentinel2Bands": "geofm.data.bands",
    "Sentinel1Bands": "geofm.data.bands",
    "resolve_bands": "geofm.data.bands",
}

__all__ = list(_LAZY)

__getattr__, __dir__ = lazy_exports(globals(), _LAZY)
