"""Object detection / instance segmentation samples: GeoTIFF chips with vector or COCO labels."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from geofm.data.coco_labels import CocoLabels
from geofm.data.datasets.pixel_wise import GenericPixelWiseDataset
from geofm.data.files import check_root
from geofm.data.raster import GridInfo
from geofm.data.vector_labels import LabelFileError, read_vector_objects
from geofm.errors import ConfigError

__all__ = ["GenericNonGeoDetectionDataset"]


class GenericNonGeoDetectionDataset(GenericPixelWiseDataset):
    """GeoTIFF chips and their objects, from one vector file per chip or one COCO JSON file.

    Vector labels (GeoJSON, GeoPackage... in map coordinates) pair with images as label rasters
    do in :class:`~geofm.data.datasets.pixel_wise.GenericPixelWiseDataset` (``label_grep``,
    e.g. ``"*.geojson"``, and the common name); each is reprojected, clipped and placed on its
    chip's grid as it is read (:func:`~geofm.data.vector_labels.read_vector_objects`). With
    ``coco_file``, the labels of every image come from that file, in pixel coordinates
    (:class:`~geofm.data.coco_labels.CocoLabels`).

    Besides the image keys of :class:`~geofm.data.datasets.base.GeoTiffDataset`, a sample has
    ``boxes`` ``(N, 4)`` float32 xyxy pixels, ``labels`` ``(N,)`` int64 0-based classes and,
    with ``return_masks``, ``masks`` ``(N, H, W)`` uint8.

    Args:
        *args: ``data_root`` and ``label_data_root``, as for
            :class:`~geofm.data.datasets.pixel_wise.GenericPixelWiseDataset`.
        coco_file: A COCO JSON file with the labels of every image of ``data_root``; then
            ``label_data_root`` and ``label_grep`` must not be set.
        class_column: Attribute of the vector files that holds each object's class; ``None``:
            one class. Not used with ``coco_file`` (its categories are the classes).
        class_names: Class names in class order (vector labels: ``class_column`` values are
            looked up among them; COCO: must equal the file's categories).
        num_classes: When given, class ids at or above it are an error naming the file.
        return_masks: Also give each object's ``masks`` (instance segmentation).
        **kwargs: See :class:`~geofm.data.datasets.pixel_wise.GenericPixelWiseDataset`;
            ``no_label_replace`` must stay ``None`` (objects have no nodata value).
    """

    def __init__(
        self,
        *args: Any,
        coco_file: str | Path | None = None,
        class_column: str | None = None,
        class_names: Sequence[str] | None = None,
        num_classes: int | None = None,
        return_masks: bool = False,
        **kwargs: Any,
    ):
        prefix = kwargs.get("arg_prefix", "")
        if kwargs.get("no_label_replace") is not None:
            raise ConfigError(
                f"no_label_replace={kwargs['no_label_replace']} has no use for detection labels "
                "(objects have no nodata value); leave it out."
            )
        if class_names is not None and num_classes is not None and len(class_names) != num_classes:
            raise ConfigError(
                f"class_names has {len(class_names)} names but num_classes={num_classes}."
            )
        with_labels = kwargs.get("with_labels", True)
        self.coco: CocoLabels | None = None
        if coco_file is not None and with_labels:
            label_root = args[1] if len(args) > 1 else kwargs.get("label_data_root")
            if label_root is not None or kwargs.get("label_grep", "*") != "*":
                raise ConfigError(
                    f"{prefix}coco_file='{coco_file}' holds the labels of every image; "
                    f"{prefix}label_data_root and label_grep select vector label files. Set "
                    "one or the other."
                )
            if class_column is not None:
                raise ConfigError(
                    f"class_column='{class_column}' is for vector label files; with "
                    f"{prefix}coco_file the classes are its categories. Leave class_column out."
                )
            kwargs["with_labels"] = False  # no label files to pair: the JSON lists the images
        super().__init__(*args, **kwargs)
        self.class_column = class_column
        self.class_names = list(class_names) if class_names is not None else None
        self.num_classes = num_classes
        self.return_masks = return_masks
        self.coco_names: list[str] | None = None
        if coco_file is not None and with_labels:
            self.coco = CocoLabels(coco_file, class_names, arg=f"{prefix}coco_file")
            self.class_names = self.coco.class_names
            if num_classes is not None and len(self.coco.class_names) > num_classes:
                raise ConfigError(
                    f"{prefix}coco_file='{coco_file}' has {len(self.coco.class_names)} "
                    f"categories but num_classes={num_classes}."
                )
            root = check_root(args[0] if args else kwargs["data_root"], f"{prefix}data_root")
            names = [self.coco.entry_name(p, root) for p in self.image_files]
            unlisted = [str(p) for p, n in zip(self.image_files, names, strict=True) if n is None]
            if unlisted:
                shown = ", ".join(f"'{u}'" for u in unlisted[:5])
                more = f" and {len(unlisted) - 5} more" if len(unlisted) > 5 else ""
                raise LabelFileError(
                    f"{prefix}coco_file='{coco_file}' does not list image(s) {shown}{more} "
                    "(matched by file_name: the path relative to the image folder, or the base "
                    "name). List them (an image without objects has no annotations), or narrow "
                    "img_grep / the split file."
                )
            self.coco_names = names  # type: ignore[assignment]  # no None left

    @property
    def has_labels(self) -> bool:
        """Whether samples carry objects (``False`` for prediction folders)."""
        return self.coco is not None or self.label_files is not None

    def read_objects(self, index: int, grid: GridInfo) -> dict[str, torch.Tensor]:
        """``boxes``, ``labels`` (and ``masks``) of sample ``index``, on the chip's ``grid``."""
        if self.coco is not None and self.coco_names is not None:
            objects = self.coco.objects(
                self.coco_names[index], grid.height, grid.width, self.return_masks
            )
            if self.num_classes is not None and objects["labels"].size:
                if int(objects["labels"].max()) >= self.num_classes:
                    raise LabelFileError(
                        f"'{self.coco.path}': image '{self.coco_names[index]}' has class "
                        f"{int(objects['labels'].max())}, outside num_classes={self.num_classes}."
                    )
        elif self.label_files is not None:
            objects = read_vector_objects(
                self.label_files[index],
                grid,
                class_column=self.class_column,
                class_names=self.class_names,
                num_classes=self.num_classes,
                return_masks=self.return_masks,
                image=self.image_files[index],
            )
        else:
            raise RuntimeError("This dataset was built with with_labels=False.")
        return {key: torch.from_numpy(value) for key, value in objects.items()}

    def read_sample(self, index: int) -> dict[str, Any]:
        """Sample ``index``: the image keys plus ``boxes``, ``labels`` (and ``masks``)."""
        sample = self.load_image(index)
        if self.has_labels:
            grid = GridInfo(
                crs=sample["crs"],
                transform=sample["transform"],
                height=sample["height"],
                width=sample["width"],
                count=sample["image"].shape[0],
            )
            sample.update(self.read_objects(index, grid))
        return sample
