"""``MultiTemporalCropClassificationDataModule``: HLS crop-type chips, three dates, 13 classes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from geofm.data.band_selection import BandSpec
from geofm.data.datamodules.benchmark import (
    BenchmarkSegmentationDataModule,
    SplitFiles,
    band_statistics,
    fill_defaults,
)
from geofm.data.transforms import AugmentationSpec

__all__ = [
    "MultiTemporalCropClassificationDataModule",
    "CROP_BANDS",
    "CROP_CLASSES",
    "CROP_TIME_STEPS",
]

#: The six HLS bands of one date, in file order.
CROP_BANDS = ("BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2")
#: Dates stacked in each image file.
CROP_TIME_STEPS = 3
#: Class names in index order (after ``reduce_zero_label``; file value 0 is no data).
CROP_CLASSES = (
    "Natural Vegetation",
    "Forest",
    "Corn",
    "Soybeans",
    "Wetlands",
    "Developed / Barren",
    "Open Water",
    "Winter Wheat",
    "Alfalfa",
    "Fallow / Idle Cropland",
    "Cotton",
    "Sorghum",
    "Other",
)

# Statistics of the training chips in digital numbers, TerraTorch's (the same for every date).
_MEANS = dict(
    zip(
        CROP_BANDS,
        (494.905781, 815.239594, 924.335066, 2968.881459, 2634.621962, 1739.579917),
        strict=True,
    )
)
_STDS = dict(
    zip(
        CROP_BANDS,
        (284.925432, 357.84876, 575.566823, 896.601013, 951.900334, 921.407808),
        strict=True,
    )
)

# Folder and split-file prefix per split; test and predict read the validation chips, as
# TerraTorch does (the release has no test split).
_PREFIXES = {
    "train": "training",
    "val": "validation",
    "test": "validation",
    "predict": "validation",
}

TransformSetting = Sequence[AugmentationSpec] | AugmentationSpec | None


class MultiTemporalCropClassificationDataModule(BenchmarkSegmentationDataModule):
    """NASA/IBM multi-temporal crop classification: HLS chips of 3 dates x 6 bands, 13 classes.

    Reads the layout of the ``ibm-nasa-geospatial/multi-temporal-crop-classification``
    release, as TerraTorch's datamodule of the same name does::

        data_root/
          training_chips/
            chip_<row>_<col>_merged.tif     18 bands: 6 bands of date 1, then date 2, then date 3
            chip_<row>_<col>.mask.tif       0 no data, 1..13 classes
          validation_chips/
            ...
          training_data.txt                 one chip name a line (chip_000_000)
          validation_data.txt

    The image files hold the dates one after the other (bands 1-6 are the first date), as the
    release documents. TerraTorch reshapes them band-major (``(channels time)``); geofm reads
    them date by date, so ``image[:, :, t]`` is date ``t``. Test and predict read the validation
    chips.

    Batches: ``image`` ``(B, C, 3, H, W)`` float32 raw reflectance digital numbers (normalised by
    the task with the means/stds, which default to TerraTorch's statistics of the selected
    bands), ``mask`` ``(B, H, W)`` int64 classes ``0..12`` with -1 where the file holds 0 (no
    data, with ``reduce_zero_label``) or its nodata value; set the task's ``ignore_index: -1``.
    With ``expand_temporal_dimension=False`` the image is ``(B, 3 * C, H, W)``, date by date.

    Args:
        data_root: The folder of the release.
        batch_size: Samples per batch.
        num_workers: DataLoader worker processes.
        bands: Bands of each date given to the model: names of :data:`CROP_BANDS` or 1-based
            numbers within a date.
        train_transform: Batch augmentations for training (see :mod:`geofm.data.transforms`).
        val_transform: The same for validation.
        test_transform: The same for testing.
        predict_transform: Accepted for TerraTorch configs; not applied.
        drop_last: Drop the last incomplete training batch.
        no_data_replace: Value for image nodata pixels.
        no_label_replace: Value for label nodata pixels.
        expand_temporal_dimension: Give images a time axis ``(C, T, H, W)``; ``False`` gives
            the three dates' bands along channels.
        reduce_zero_label: Subtract 1 from the labels (file value 0, no data, becomes -1).
        use_metadata: Accepted for TerraTorch configs. ``location_coords`` come from the files'
            CRS; the dates of ``chips_df.csv`` are not read, so there are no
            ``temporal_coords``.
        metadata_file_name: TerraTorch's dates file. geofm does not read it, so only the
            default (``chips_df.csv``) is taken; another name is an error.
        num_classes: Number of classes (labels are checked against it).
        **kwargs: Other settings of
            :class:`~geofm.data.datamodules.segmentation.GenericNonGeoSegmentationDataModule`
            (``means``/``stds`` replace the defaults unless ``None``; ``constant_scale``...).

    Raises:
        LayoutError: at ``setup``, when a path of the layout is missing (the message names it).
    """

    LAYOUT = (
        ("training_chips/chip_<row>_<col>_merged.tif", "18-band images, 3 dates x 6 bands"),
        ("training_chips/chip_<row>_<col>.mask.tif", "labels"),
        ("validation_chips/ (the same)", "validation, test and predict chips"),
        ("training_data.txt, validation_data.txt", "chip names, one a line"),
    )
    IMG_GREP = "*_merged.tif"
    LABEL_GREP = "*.mask.tif"
    METADATA_NOTE = (
        "the dates in chips_df.csv are not read: batches have no temporal_coords "
        "(location_coords come from the files' CRS)."
    )

    def __init__(
        self,
        data_root: str | Path,
        batch_size: int = 4,
        num_workers: int = 0,
        bands: Sequence[BandSpec] = CROP_BANDS,
        train_transform: TransformSetting = None,
        val_transform: TransformSetting = None,
        test_transform: TransformSetting = None,
        predict_transform: Any = None,
        drop_last: bool = True,
        no_data_replace: float | None = 0,
        no_label_replace: int | None = -1,
        expand_temporal_dimension: bool = True,
        reduce_zero_label: bool = True,
        use_metadata: bool = False,
        metadata_file_name: str = "chips_df.csv",
        num_classes: int | None = len(CROP_CLASSES),
        **kwargs: Any,
    ):
        owner = type(self).__name__
        if metadata_file_name != "chips_df.csv":
            raise ValueError(
                f"{owner}: metadata_file_name={metadata_file_name!r}: geofm does not read the "
                "crop metadata file (no temporal_coords come from it); remove the setting."
            )
        names = self.selected_names(CROP_BANDS, bands, owner)
        means = band_statistics(_MEANS, names, owner)
        stds = band_statistics(_STDS, names, owner)
        if expand_temporal_dimension:
            file_bands: list[BandSpec] = list(CROP_BANDS)
            model_bands: list[BandSpec] = list(names)
        else:  # every date's bands along channels, date by date
            steps = range(1, CROP_TIME_STEPS + 1)
            file_bands = [f"{b}_T{t}" for t in steps for b in CROP_BANDS]
            model_bands = [f"{b}_T{t}" for t in steps for b in names]
            means, stds = means * CROP_TIME_STEPS, stds * CROP_TIME_STEPS
        fill_defaults(kwargs, means=means, stds=stds, rgb_indices=self.rgb_positions(names))
        root = Path(data_root)
        layout = {
            split: SplitFiles(
                images=root / f"{prefix}_chips",
                labels=root / f"{prefix}_chips",
                split=root / f"{prefix}_data.txt",
            )
            for split, prefix in _PREFIXES.items()
        }
        super().__init__(
            data_root,
            layout,
            file_bands,
            model_bands,
            use_metadata=use_metadata,
            predict_transform=predict_transform,
            batch_size=batch_size,
            num_workers=num_workers,
            train_transform=train_transform,
            val_transform=val_transform,
            test_transform=test_transform,
            drop_last=drop_last,
            no_data_replace=no_data_replace,
            no_label_replace=no_label_replace,
            expand_temporal_dimension=expand_temporal_dimension,
            reduce_zero_label=reduce_zero_label,
            num_classes=num_classes,
            **kwargs,
        )
