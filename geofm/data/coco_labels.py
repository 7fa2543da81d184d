"""Object labels from a COCO JSON file in pixel coordinates: one file for a folder of images.

An image of the folder is matched to the file's ``images`` entry whose ``file_name`` is its
path relative to the folder, or else its base name. Its annotations become:

- ``boxes`` ``(N, 4)`` float32 ``(x_min, y_min, x_max, y_max)`` pixels, from COCO's
  ``bbox`` ``[x, y, width, height]``, clipped to the image; boxes left without area are dropped;
- ``labels`` ``(N,)`` int64: categories numbered 0, 1, ... in the order of their COCO ``id``
  (ids 1, 2, 5 become 0, 1, 2); :attr:`CocoLabels.class_names` are their ``name``\\s;
- ``masks`` ``(N, H, W)`` uint8 from ``segmentation`` polygons (rasterised, pixel centres
  inside) or RLE (decoded with pycocotools), when asked for.

Crowd annotations (``iscrowd: 1``) mark regions of many objects, not objects: they are left out,
as torchvision's detection references do. An image listed without annotations has no objects.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geofm.data.vector_labels import LabelFileError, empty_objects
from geofm.registry.errors import MissingDependencyError

__all__ = ["CocoLabels"]


class CocoLabels:
    """The annotations of one COCO JSON file, indexed by image.

    Args:
        path: The COCO JSON file (``images``, ``annotations``, ``categories``).
        class_names: When given, must equal the file's category names in category-id order
            (a check that a config and its file agree).
        arg: Name of the setting that gave ``path``, for messages.

    Raises:
        LabelFileError: the file is not COCO JSON, lacks a key, lists an image twice, has an
            annotation of an unknown image or category, or its categories differ from
            ``class_names``.
    """

    def __init__(
        self,
        path: str | Path,
        class_names: Sequence[str] | None = None,
        arg: str = "coco_file",
    ):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{arg}='{path}' is not a file.")
        try:
            data = json.loads(self.path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise LabelFileError(f"{arg}='{path}' is not JSON: {err}") from err
        missing = [k for k in ("images", "categories") if not isinstance(data.get(k), list)]
        if missing:
            raise LabelFileError(f"{arg}='{path}' is not COCO JSON: it has no list {missing}.")
        categories = sorted(data["categories"], key=lambda c: c["id"])
        self.class_names = [str(c.get("name", c["id"])) for c in categories]
        self._class_of = {c["id"]: i for i, c in enumerate(categories)}
        if class_names is not None and [str(n) for n in class_names] != self.class_names:
            raise LabelFileError(
                f"class_names {list(class_names)} differ from the categories of {arg}='{path}' "
                f"(in id order: {self.class_names}); leave class_names out or make them agree."
            )
        self._images: dict[str, dict[str, Any]] = {}
        by_id: dict[Any, dict[str, Any]] = {}
        for image in data["images"]:
            # A repeated entry would silently take the place of the first, annotations and all.
            for key, seen in (("file_name", self._images), ("id", by_id)):
                if image.get(key) in seen:
                    raise LabelFileError(
                        f"{arg}='{path}' lists {key} {image.get(key)!r} twice in 'images'; "
                        "give each image one entry."
                    )
            entry = {**image, "annotations": []}
            self._images[str(image["file_name"])] = entry
            by_id[image["id"]] = entry
        for ann in data.get("annotations", []):
            if ann.get("image_id") not in by_id:
                raise LabelFileError(
                    f"{arg}='{path}': annotation {ann.get('id')} is of image_id "
                    f"{ann.get('image_id')!r}, which 'images' does not list."
                )
            if ann.get("category_id") not in self._class_of:
                raise LabelFileError(
                    f"{arg}='{path}': annotation {ann.get('id')} has category_id "
                    f"{ann.get('category_id')!r}, not among the categories "
                    f"{sorted(self._class_of)}."
                )
            by_id[ann["image_id"]]["annotations"].append(ann)
        self._by_basename: dict[str, list[str]] = {}
        for name in self._images:
            self._by_basename.setdefault(Path(name).name, []).append(name)
        self.arg = arg

    def entry_name(self, image: Path, root: Path) -> str | None:
        """The ``file_name`` of ``image`` (a file under ``root``) in this file, or ``None``.

        Raises:
            LabelFileError: the base name matches several entries and the relative path none.
        """
        relative = image.relative_to(root).as_posix() if image.is_relative_to(root) else None
        if relative is not None and relative in self._images:
            return relative
        candidates = self._by_basename.get(image.name, [])
        if len(candidates) > 1:
            raise LabelFileError(
                f"{self.arg}='{self.path}': image '{image}' matches entries {candidates} by name; "
                f"write file_name as the path relative to the image folder ('{relative}')."
            )
        return candidates[0] if candidates else None

    def objects(
        self, name: str, height: int, width: int, return_masks: bool = False
    ) -> dict[str, np.ndarray]:
        """Targets of the image with ``file_name`` ``name``, whose size is ``height x width``.

        Returns:
            ``boxes`` ``(N, 4)`` float32 xyxy pixels, ``labels`` ``(N,)`` int64 and, with
            ``return_masks``, ``masks`` ``(N, H, W)`` uint8.

        Raises:
            LabelFileError: the entry's ``height``/``width`` differ from the image's, or an
                annotation lacks ``bbox`` (or ``segmentation`` with ``return_masks``).
        """
        entry = self._images[name]
        size = (entry.get("height"), entry.get("width"))
        if None not in size and size != (height, width):
            raise LabelFileError(
                f"{self.arg}='{self.path}': image '{name}' is listed as {size[0]} x {size[1]} "
                f"pixels but the file is {height} x {width}."
            )
        boxes, labels, masks = [], [], []
        for ann in entry["annotations"]:
            if ann.get("iscrowd", 0):
                continue
            bbox = ann.get("bbox")
            if bbox is None or len(bbox) != 4:
                raise LabelFileError(
                    f"{self.arg}='{self.path}': annotation {ann.get('id')} of '{name}' has no "
                    "bbox [x, y, width, height]."
                )
            x, y, w, h = (float(v) for v in bbox)
            box = np.clip([x, y, x + w, y + h], 0, [width, height, width, height])
            if box[2] <= box[0] or box[3] <= box[1]:
                continue  # outside the image, or without area
            boxes.append(box)
            labels.append(self._class_of[ann["category_id"]])
            if return_masks:
                masks.append(self._mask(ann, name, height, width))
        if not boxes:
            return empty_objects(height, width, return_masks)
        objects = {
            "boxes": np.asarray(boxes, dtype=np.float32),
            "labels": np.asarray(labels, dtype=np.int64),
        }
        if return_masks:
            objects["masks"] = np.stack(masks)
        return objects

    def _mask(self, ann: dict[str, Any], name: str, height: int, width: int) -> np.ndarray:
        """The ``(H, W)`` uint8 mask of one annotation."""
        segmentation = ann.get("segmentation")
        if not segmentation:
            raise LabelFileError(
                f"{self.arg}='{self.path}': annotation {ann.get('id')} of '{name}' has no "
                "segmentation, which masks (return_masks) need."
            )
        if isinstance(segmentation, dict):  # RLE
            try:
                from pycocotools import mask as mask_utils
            except ImportError as err:
                raise MissingDependencyError(
                    "Reading COCO RLE segmentations", "pycocotools", "detection"
                ) from err
            if isinstance(segmentation.get("counts"), list):
                segmentation = mask_utils.frPyObjects(segmentation, height, width)
            return np.asarray(mask_utils.decode(segmentation), dtype=np.uint8)
        from rasterio.features import rasterize

        rings = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in segmentation]
        # Each polygon of the list is one part of the object (GeoJSON rings close themselves).
        shapes = [
            ({"type": "Polygon", "coordinates": [[*r.tolist(), r[0].tolist()]]}, 1)
            for r in rings
            if len(r) >= 3
        ]
        if not shapes:
            return np.zeros((height, width), dtype=np.uint8)
        # Identity transform: the polygons are in pixel coordinates already.
        return rasterize(shapes, out_shape=(height, width), dtype="uint8")
