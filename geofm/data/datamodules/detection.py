"""``GenericNonGeoDetectionDataModule``: GeoTIFF chips with vector or COCO object labels."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from geofm.data.collate import collate_detection
from geofm.data.datamodules.base import TransformSetting
from geofm.data.datamodules.pixel_wise import GenericPixelWiseDataModule
from geofm.data.datasets.detection import GenericNonGeoDetectionDataset
from geofm.data.detection_transforms import build_detection_augmentation
from geofm.errors import ConfigError

__all__ = ["GenericNonGeoDetectionDataModule"]


class GenericNonGeoDetectionDataModule(GenericPixelWiseDataModule):
    """Object detection / instance segmentation batches from GeoTIFF chips and their objects.

    Labels come either from vector files in map coordinates, one per chip, paired with the
    images by common name like label rasters (reprojected to the chip's CRS, clipped to it and
    placed on its pixel grid as they are read; see :mod:`geofm.data.vector_labels`)::

        data:
          class_path: GenericNonGeoDetectionDataModule
          init_args:
            train_data_root: data/train/images
            train_label_data_root: data/train/labels
            img_grep: "*.tif"
            label_grep: "*.geojson"
            class_column: class
            class_names: [building, pool]

    or from one COCO JSON file per split, in pixel coordinates (``train_coco_file``...; see
    :mod:`geofm.data.coco_labels`).

    Batches: ``image`` ``(B, C, H, W)`` float32 raw values (NaN at nodata), ``nodata_mask``
    ``(B, H, W)``, and lists of length ``B``: ``boxes`` ``(N_i, 4)`` float32
    ``(x_min, y_min, x_max, y_max)`` pixels, ``labels`` ``(N_i,)`` int64 0-based classes,
    ``masks`` ``(N_i, H, W)`` uint8 (with ``return_masks``), ``filename``, ``crs``,
    ``transform``, ``height``, ``width``. Predict batches have no objects.

    Augmentation (``train_transform``...) takes flips, quarter turns and intensity
    augmentations, which move boxes and masks with the image exactly; other transforms are
    refused (see :mod:`geofm.data.detection_transforms`).

    Args:
        class_column: Attribute of the vector files holding each object's class; ``None``:
            every object is class 0 (one class).
        class_names: Class names in class order. Vector labels: ``class_column`` values are
            looked up among them (without, the values are 0-based class ids). COCO: must equal
            the file's categories in id order.
        num_classes: When given, an object of class ``>= num_classes`` is an error naming its
            file (the count of object classes, background not included).
        return_masks: Give each object's ``masks`` ``(N, H, W)`` (Mask R-CNN).
        train_coco_file: COCO JSON with the labels of the training images (instead of
            ``train_label_data_root`` / ``label_grep``).
        val_coco_file: The same for validation.
        test_coco_file: The same for testing.
        train_transform: Augmentation for training (see above).
        val_transform: The same for validation.
        test_transform: The same for testing.
        **kwargs: Settings of
            :class:`~geofm.data.datamodules.pixel_wise.GenericPixelWiseDataModule` and
            :class:`~geofm.data.datamodules.base.GeoTiffDataModule`; ``no_label_replace`` and
            ``mask_fill`` have no use here and are refused.
    """

    dataset_class = GenericNonGeoDetectionDataset
    collate_fn = staticmethod(collate_detection)

    def __init__(
        self,
        class_column: str | None = None,
        class_names: Sequence[str] | None = None,
        num_classes: int | None = None,
        return_masks: bool = False,
        train_coco_file: str | Path | None = None,
        val_coco_file: str | Path | None = None,
        test_coco_file: str | Path | None = None,
        train_transform: TransformSetting = None,
        val_transform: TransformSetting = None,
        test_transform: TransformSetting = None,
        **kwargs: Any,
    ):
        for key in ("no_label_replace", "mask_fill"):
            if kwargs.get(key) is not None:
                raise ConfigError(
                    f"{key}={kwargs[key]} has no use for detection labels (objects have no "
                    "nodata value, and augmentation here never brings in outside pixels); "
                    "leave it out."
                )
        if num_classes is not None and num_classes < 1:
            raise ConfigError(f"num_classes={num_classes} must be at least 1.")
        if class_names is not None and num_classes is not None and len(class_names) != num_classes:
            raise ConfigError(
                f"class_names has {len(class_names)} names but num_classes={num_classes}."
            )
        super().__init__(**kwargs)
        self.class_column = class_column
        self.class_names = list(class_names) if class_names is not None else None
        self.num_classes = num_classes
        self.return_masks = return_masks
        self.coco_files = {
            "train": train_coco_file,
            "val": val_coco_file,
            "test": test_coco_file,
            "predict": None,
        }
        given = {"train": train_transform, "val": val_transform, "test": test_transform}
        for split, spec in given.items():
            # Boxes must follow the image: only augmentations that move them exactly.
            self.augmentations[split] = build_detection_augmentation(spec, f"{split}_transform")
            self.sample_transforms[split] = None

    def dataset_kwargs(self, split: str) -> dict[str, Any]:
        """The label settings of ``split`` for the dataset."""
        return {
            "coco_file": self.coco_files[split],
            "class_column": self.class_column,
            "class_names": self.class_names,
            "num_classes": self.num_classes,
            "return_masks": self.return_masks,
        }

    def setup(self, stage: str) -> None:
        """Build the datasets of ``stage``; a COCO file's category names become
        :attr:`class_names` when none were given."""
        super().setup(stage)
        if self.class_names is None:
            for split in ("train", "val", "test"):
                dataset = getattr(self, f"{split}_dataset")
                if dataset is not None and dataset.coco is not None:
                    self.class_names = list(dataset.coco.class_names)
                    break
