"""``Sen1Floods11NonGeoDataModule``: the hand-labelled Sentinel-2 chips of Sen1Floods11."""

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

__all__ = ["Sen1Floods11NonGeoDataModule", "SEN1FLOODS11_BANDS"]

#: The 13 Sentinel-2 L1C bands of the ``*_S2Hand.tif`` files, in file order.
SEN1FLOODS11_BANDS = (
    "COASTAL_AEROSOL",
    "BLUE",
    "GREEN",
    "RED",
    "RED_EDGE_1",
    "RED_EDGE_2",
    "RED_EDGE_3",
    "NIR_BROAD",
    "NIR_NARROW",
    "WATER_VAPOR",
    "CIRRUS",
    "SWIR_1",
    "SWIR_2",
)

# Statistics of the training chips in reflectance (digital numbers x 0.0001), TerraTorch's.
_MEANS = dict(
    zip(
        SEN1FLOODS11_BANDS,
        (0.16450718, 0.1412956, 0.13795798, 0.12353792, 0.1481099, 0.23991728, 0.28587557,
         0.26345379, 0.30902815, 0.04911151, 0.00652506, 0.2044958, 0.11912015),
        strict=True,
    )
)
_STDS = dict(
    zip(
        SEN1FLOODS11_BANDS,
        (0.06977374, 0.07406382, 0.07370365, 0.08692279, 0.07778555, 0.09105416, 0.10690993,
         0.10096586, 0.11798815, 0.03380113, 0.01463465, 0.09772074, 0.07659938),
        strict=True,
    )
)

_HAND = Path("data", "flood_events", "HandLabeled")
_SPLITS = Path("splits", "flood_handlabeled")
# Split file stem per split; predict reads the test split, as TerraTorch does.
_SPLIT_STEMS = {"train": "train", "val": "valid", "test": "test", "predict": "test"}

TransformSetting = Sequence[AugmentationSpec] | AugmentationSpec | None


class Sen1Floods11NonGeoDataModule(BenchmarkSegmentationDataModule):
    """Sen1Floods11 hand-labelled flood maps: 13-band Sentinel-2 chips, 2 classes.

    Reads the layout of the Sen1Floods11 v1.1 release, as TerraTorch's datamodule of the same
    name does (``data_root`` holds ``v1.1/``, or is that folder)::

        data_root/
          v1.1/
            data/flood_events/HandLabeled/
              S2Hand/<name>_S2Hand.tif          13 bands (L1C digital numbers), 512 x 512
              LabelHand/<name>_LabelHand.tif    0 dry, 1 water, -1 no data
            splits/flood_handlabeled/
              flood_train_data.txt              one sample name a line (Ghana_103272)
              flood_valid_data.txt
              flood_test_data.txt

    The split files list sample names, as TerraTorch's ``convert_sen1floods11_splits.py``
    writes them from the release's CSV files (first column, up to the second ``_``). Test and
    predict read ``flood_test_data.txt``.

    Batches: ``image`` ``(B, C, H, W)`` float32 raw digital numbers (the task scales them by
    ``constant_scale`` and normalises with the means/stds, which default to TerraTorch's
    Sen1Floods11 statistics of the selected bands), ``mask`` ``(B, H, W)`` int64 with -1 where
    the label is -1 or the label file's nodata (``no_label_replace``); set the task's
    ``ignore_index: -1``.

    Args:
        data_root: The folder that holds ``v1.1/`` (or the ``v1.1`` folder itself).
        batch_size: Samples per batch.
        num_workers: DataLoader worker processes.
        bands: Bands given to the model, in order: names of :data:`SEN1FLOODS11_BANDS` or
            1-based band numbers.
        train_transform: Batch augmentations for training (see :mod:`geofm.data.transforms`).
        val_transform: The same for validation.
        test_transform: The same for testing.
        predict_transform: Only entries that do nothing (``ToTensorV2``); see
            :class:`~geofm.data.datamodules.benchmark.BenchmarkSegmentationDataModule`.
        drop_last: Drop the last incomplete training batch.
        constant_scale: Factor from digital numbers to the units of the statistics.
        no_data_replace: Value (in scaled units) for image nodata pixels.
        no_label_replace: Value for label nodata pixels.
        use_metadata: Accepted for TerraTorch configs. ``location_coords`` come from the files'
            CRS; the acquisition dates of ``Sen1Floods11_Metadata.geojson`` are not read, so
            there are no ``temporal_coords``.
        num_classes: Number of classes (labels are checked against it).
        **kwargs: Other settings of
            :class:`~geofm.data.datamodules.segmentation.GenericNonGeoSegmentationDataModule`
            (``means``/``stds`` replace the defaults unless ``None``; ``rgb_indices``,
            ``pin_memory``...).

    Raises:
        LayoutError: at ``setup``, when a path of the layout is missing (the message names it).
    """

    LAYOUT = (
        ("v1.1/data/flood_events/HandLabeled/S2Hand/<name>_S2Hand.tif", "13-band images"),
        ("v1.1/data/flood_events/HandLabeled/LabelHand/<name>_LabelHand.tif", "labels"),
        (
            "v1.1/splits/flood_handlabeled/flood_{train,valid,test}_data.txt",
            "sample names, one a line",
        ),
    )
    IMG_GREP = "*_S2Hand.tif"
    LABEL_GREP = "*_LabelHand.tif"
    METADATA_NOTE = (
        "the dates in Sen1Floods11_Metadata.geojson are not read: batches have no "
        "temporal_coords (location_coords come from the files' CRS)."
    )

    def __init__(
        self,
        data_root: str | Path,
        batch_size: int = 4,
        num_workers: int = 0,
        bands: Sequence[BandSpec] = SEN1FLOODS11_BANDS,
        train_transform: TransformSetting = None,
        val_transform: TransformSetting = None,
        test_transform: TransformSetting = None,
        predict_transform: Any = None,
        drop_last: bool = True,
        constant_scale: float = 0.0001,
        no_data_replace: float | None = 0,
        no_label_replace: int | None = -1,
        use_metadata: bool = False,
        num_classes: int | None = 2,
        **kwargs: Any,
    ):
        owner = type(self).__name__
        names = self.selected_names(SEN1FLOODS11_BANDS, bands, owner)
        fill_defaults(
            kwargs,
            means=band_statistics(_MEANS, names, owner),
            stds=band_statistics(_STDS, names, owner),
            rgb_indices=self.rgb_positions(names),
        )
        base = _release_folder(Path(data_root))
        layout = {
            split: SplitFiles(
                images=base / _HAND / "S2Hand",
                labels=base / _HAND / "LabelHand",
                split=base / _SPLITS / f"flood_{stem}_data.txt",
            )
            for split, stem in _SPLIT_STEMS.items()
        }
        super().__init__(
            data_root,
            layout,
            SEN1FLOODS11_BANDS,
            list(bands),
            use_metadata=use_metadata,
            predict_transform=predict_transform,
            batch_size=batch_size,
            num_workers=num_workers,
            train_transform=train_transform,
            val_transform=val_transform,
            test_transform=test_transform,
            drop_last=drop_last,
            constant_scale=constant_scale,
            no_data_replace=no_data_replace,
            no_label_replace=no_label_replace,
            num_classes=num_classes,
            **kwargs,
        )


def _release_folder(root: Path) -> Path:
    """``root/v1.1``, or ``root`` when it is the release folder itself (holds ``data/``)."""
    if not (root / "v1.1").is_dir() and (root / _HAND).is_dir():
        return root
    return root / "v1.1"
