"""TerraTorch datamodule names geofm does not provide, and what to use instead.

Looking one of these names up (``geofm.data.datamodules.MEuroSATNonGeoDataModule``, or
``terratorch.datamodules.MEuroSATNonGeoDataModule`` in a config) raises an error with the
message of :data:`UNSUPPORTED`, instead of a bare "no such name".
"""

from __future__ import annotations

__all__ = ["UNSUPPORTED", "unsupported_message"]

_GEOBENCH = (
    "reads GEO-Bench, whose datasets are HDF5 files laid out for the `geobench` package; geofm "
    "does not read them yet, and TorchGeo (0.8) has no GEO-Bench reader either."
)
_TORCHGEO = (
    " TorchGeo has the source dataset: use geofm.data.datamodules.TorchGeoDataModule with "
    "cls: {cls} (its own files and splits, not GEO-Bench's subset)."
)
_EXPORT = " {lead} the samples to GeoTIFF folders and use geofm.data.datamodules.{generic}."

# TerraTorch GEO-Bench datamodule -> (TorchGeo datamodule with the source data, generic one).
_GEOBENCH_NAMES: dict[str, tuple[str | None, str]] = {
    "MEuroSATNonGeoDataModule": ("EuroSATDataModule", "GenericNonGeoClassificationDataModule"),
    "MBigEarthNonGeoDataModule": ("BigEarthNetDataModule", "GenericNonGeoClassificationDataModule"),
    "MSo2SatNonGeoDataModule": ("So2SatDataModule", "GenericNonGeoClassificationDataModule"),
    "MBrickKilnNonGeoDataModule": (None, "GenericNonGeoClassificationDataModule"),
    "MForestNetNonGeoDataModule": (None, "GenericNonGeoClassificationDataModule"),
    "MPv4gerNonGeoDataModule": (None, "GenericNonGeoClassificationDataModule"),
    "MPv4gerSegNonGeoDataModule": (None, "GenericNonGeoSegmentationDataModule"),
    "MBeninSmallHolderCashewsNonGeoDataModule": (None, "GenericNonGeoSegmentationDataModule"),
    "MNzCattleNonGeoDataModule": (None, "GenericNonGeoSegmentationDataModule"),
    "MNeonTreeNonGeoDataModule": (None, "GenericNonGeoSegmentationDataModule"),
    "MChesapeakeLandcoverNonGeoDataModule": (
        "ChesapeakeCVPRDataModule",
        "GenericNonGeoSegmentationDataModule",
    ),
    "MSACropTypeNonGeoDataModule": (
        "SouthAfricaCropTypeDataModule",
        "GenericNonGeoSegmentationDataModule",
    ),
    "GeobenchDataModule": (
        None,
        "GenericNonGeoClassificationDataModule or GenericNonGeoSegmentationDataModule",
    ),
    "GeoBenchV2ClassificationDataModule": (None, "GenericNonGeoClassificationDataModule"),
    "GeoBenchV2SegmentationDataModule": (None, "GenericNonGeoSegmentationDataModule"),
}


def _geobench_message(cls: str | None, generic: str) -> str:
    text = _GEOBENCH
    if cls is not None:
        text += _TORCHGEO.format(cls=cls)
    return text + _EXPORT.format(lead="Or export" if cls else "Export", generic=generic)


#: Unsupported TerraTorch datamodule name -> why, and what to use instead.
UNSUPPORTED: dict[str, str] = {
    **{name: _geobench_message(*alt) for name, alt in _GEOBENCH_NAMES.items()},
    "GeoBenchV2ObjectDetectionDataModule": _GEOBENCH
    + " For detection use geofm.data.datamodules.GenericNonGeoDetectionDataModule with COCO JSON"
    " (train_coco_file...) or vector label files, and ObjectDetectionTask.",
    "mVHR10DataModule": (
        "is GEO-Bench's VHR10 object-detection datamodule, whose files geofm does not read. "
        "Use geofm.data.datamodules.GenericNonGeoDetectionDataModule with the dataset's COCO "
        "JSON (train_coco_file, val_coco_file...) and ObjectDetectionTask."
    ),
    "BurnIntensityNonGeoDataModule": (
        "reads three dates from separate pre/, during/, post/ files with per-date statistics, "
        "which geofm does not support yet. Stack each sample's dates into one file (3 x 6 bands, "
        "date by date) and use geofm.data.datamodules.GenericNonGeoSegmentationDataModule with "
        "expand_temporal_dimension: true."
    ),
}


def unsupported_message(name: str) -> str | None:
    """Why TerraTorch's datamodule ``name`` is not in geofm and what to use, or ``None``."""
    reason = UNSUPPORTED.get(name)
    return f"TerraTorch's {name} {reason}" if reason is not None else None
