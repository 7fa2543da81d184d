"""``FireScarsNonGeoDataModule``: the HLS burn scars chips (6 bands, burned or not)."""

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

__all__ = ["FireScarsNonGeoDataModule", "FIRE_SCARS_BANDS"]

#: The six HLS bands of the ``*_merged.tif`` files, in file order.
FIRE_SCARS_BANDS = ("BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2")

# Statistics of the training chips in reflectance, TerraTorch's.
_MEANS = dict(
    zip(
        FIRE_SCARS_BANDS,
        (0.033349706741586264, 0.05701185520536176, 0.05889748132001316, 0.2323245113436119,
         0.1972854853760658, 0.11944914225186566),
        strict=True,
    )
)
_STDS = dict(
    zip(
        FIRE_SCARS_BANDS,
        (0.02269135568823774, 0.026807560223070237, 0.04004109844362779, 0.07791732423672691,
         0.08708738838140137, 0.07241979477437814),
        strict=True,
    )
)

# Folder per split; test and predict read the validation chips, as TerraTorch does.
_FOLDERS = {"train": "training", "val": "validation", "test": "validation", "predict": "validation"}

TransformSetting = Sequence[AugmentationSpec] | AugmentationSpec | None


class FireScarsNonGeoDataModule(BenchmarkSegmentationDataModule):
    """HLS burn scars: 6-band HLS chips, 2 classes (the ``hls_burn_scars`` dataset).

    Reads the layout of the ``ibm-nasa-geospatial/hls_burn_scars`` release, as TerraTorch's
    datamodule of the same name does (TerraTorch's examples also read it with
    ``GenericNonGeoSegmentationDataModule``, which works here too)::

        data_root/
          training/
            subsetted_512x512_HLS.S30.<tile>.<yyyyddd>.v1.4_merged.tif   6 bands, reflectance
            subsetted_512x512_HLS.S30.<tile>.<yyyyddd>.v1.4.mask.tif     1 burned, 0 not, -1 no data
          validation/
            ...

    There are no split files: a split is every chip of its folder. Test and predict read the
    validation chips.

    Batches: ``image`` ``(B, C, H, W)`` float32 reflectance (normalised by the task with the
    means/stds, which default to TerraTorch's statistics of the selected bands), ``mask``
    ``(B, H, W)`` int64 with -1 where the label is -1 or the label file's nodata; set the
    task's ``ignore_index: -1``.

    Args:
        data_root: The folder of the release.
        batch_size: Samples per batch.
        num_workers: DataLoader worker processes.
        bands: Bands given to the model, in order: names of :data:`FIRE_SCARS_BANDS` or
            1-based band numbers.
        train_transform: Batch augmentations for training (see :mod:`geofm.data.transforms`).
        val_transform: The same for validation.
        test_transform: The same for testing.
        predict_transform: Only entries that do nothing (``ToTensorV2``); see
            :class:`~geofm.data.datamodules.benchmark.BenchmarkSegmentationDataModule`.
        drop_last: Drop the last incomplete training batch.
        no_data_replace: Value for image nodata pixels.
        no_label_replace: Value for label nodata pixels.
        use_metadata: Accepted for TerraTorch configs: ``location_coords`` come from the files'
            CRS and ``temporal_coords`` from the dates in the file names when geofm's date
            patterns find them (set ``date_pattern`` otherwise).
        num_classes: Number of classes (labels are checked against it).
        **kwargs: Other settings of
            :class:`~geofm.data.datamodules.segmentation.GenericNonGeoSegmentationDataModule`
            (``means``/``stds`` replace the defaults unless ``None``; ``date_pattern``...).

    Raises:
        LayoutError: at ``setup``, when a path of the layout is missing (the message names it).
    """

    LAYOUT = (
        ("training/<name>_merged.tif", "6-band images"),
        ("training/<name>.mask.tif", "labels"),
        ("validation/ (the same)", "validation, test and predict chips"),
    )
    IMG_GREP = "*_merged.tif"
    LABEL_GREP = "*.mask.tif"

    def __init__(
        self,
        data_root: str | Path,
        batch_size: int = 4,
        num_workers: int = 0,
        bands: Sequence[BandSpec] = FIRE_SCARS_BANDS,
        train_transform: TransformSetting = None,
        val_transform: TransformSetting = None,
        test_transform: TransformSetting = None,
        predict_transform: Any = None,
        drop_last: bool = True,
        no_data_replace: float | None = 0,
        no_label_replace: int | None = -1,
        use_metadata: bool = False,
        num_classes: int | None = 2,
        **kwargs: Any,
    ):
        owner = type(self).__name__
        names = self.selected_names(FIRE_SCARS_BANDS, bands, owner)
        fill_defaults(
            kwargs,
            means=band_statistics(_MEANS, names, owner),
            stds=band_statistics(_STDS, names, owner),
            rgb_indices=self.rgb_positions(names),
        )
        root = Path(data_root)
        layout = {
            split: SplitFiles(images=root / folder, labels=root / folder)
            for split, folder in _FOLDERS.items()
        }
        super().__init__(
            data_root,
            layout,
            FIRE_SCARS_BANDS,
            list(bands),
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
            num_classes=num_classes,
            **kwargs,
        )
