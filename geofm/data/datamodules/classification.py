"""``GenericNonGeoClassificationDataModule``: GeoTIFF images in one folder per class."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from geofm.data.datamodules.base import SPLITS, GeoTiffDataModule
from geofm.data.datasets.classification import GenericNonGeoClassificationDataset, find_classes
from geofm.data.files import check_root

__all__ = ["GenericNonGeoClassificationDataModule"]


class GenericNonGeoClassificationDataModule(GeoTiffDataModule):
    """Classification batches from ``<root>/<class_name>/<image>`` folders.

    Classes are the sorted folder names of ``train_data_root`` (like torchvision's
    ``ImageFolder``) unless ``class_names`` gives them; every split maps names to the same
    indices. Batches: ``image`` ``(B, C, H, W)`` / ``(B, C, T, H, W)`` float32, ``label``
    ``(B,)`` int64, ``nodata_mask`` ``(B, H, W)``, and lists ``filename``, ``crs``,
    ``transform``, ``height``, ``width``. ``predict_data_root`` takes images directly in it or
    in sub-folders, without labels.

    Args:
        batch_size: Samples per batch.
        num_workers: DataLoader worker processes.
        train_data_root: Training folder (one sub-folder per class).
        val_data_root: Validation folder (optional for ``fit``).
        test_data_root: Test folder.
        predict_data_root: Folder of images to predict.
        img_grep: Glob pattern of images inside each class folder.
        num_classes: Number of classes; checked against the class folders when given.
        class_names: Class names in index order; default: the folders of the first configured
            root among train, val, test.
        train_split: File listing training sample names.
        val_split: File listing validation sample names.
        test_split: File listing test sample names.
        ignore_split_file_extensions: Compare split names without file extensions.
        allow_substring_split_file: A split entry selects every image whose name contains it,
            as TerraTorch does; ``False`` (geofm's default; TerraTorch's is ``True``) matches
            names exactly (see
            :class:`~geofm.data.datamodules.pixel_wise.GenericPixelWiseDataModule`).
        **kwargs: Settings of :class:`~geofm.data.datamodules.base.GeoTiffDataModule`.
    """

    def __init__(
        self,
        batch_size: int = 8,
        num_workers: int = 0,
        train_data_root: str | Path | None = None,
        val_data_root: str | Path | None = None,
        test_data_root: str | Path | None = None,
        predict_data_root: str | Path | None = None,
        img_grep: str = "*",
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        train_split: str | Path | None = None,
        val_split: str | Path | None = None,
        test_split: str | Path | None = None,
        ignore_split_file_extensions: bool = True,
        allow_substring_split_file: bool = False,
        **kwargs: Any,
    ):
        super().__init__(batch_size, num_workers, **kwargs)
        self.roots = dict(
            zip(
                SPLITS,
                (train_data_root, val_data_root, test_data_root, predict_data_root),
                strict=True,
            )
        )
        self.splits = {"train": train_split, "val": val_split, "test": test_split, "predict": None}
        self.img_grep = img_grep
        self.num_classes = num_classes
        self._class_names = list(class_names) if class_names is not None else None
        self.ignore_split_file_extensions = ignore_split_file_extensions
        self.allow_substring_split_file = allow_substring_split_file

    @property
    def class_names(self) -> list[str]:
        """Class names in index order (lists the first configured root's folders once).

        Raises:
            ValueError: No train/val/test root is set and ``class_names`` was not given, or
                ``num_classes`` differs from the number of classes.
        """
        if self._class_names is None:
            for split in ("train", "val", "test"):
                if self.roots[split] is not None:
                    root = check_root(self.roots[split], f"{split}_data_root")
                    self._class_names = find_classes(root)
                    break
            else:
                raise ValueError(
                    "Class names are unknown: set train_data_root (its folders name the classes) "
                    "or class_names."
                )
        if self.num_classes is not None and self.num_classes != len(self._class_names):
            raise ValueError(
                f"num_classes={self.num_classes} but there are {len(self._class_names)} classes: "
                f"{self._class_names}."
            )
        return self._class_names

    def split_configured(self, split: str) -> bool:
        """Whether ``split`` has a data root."""
        return self.roots[split] is not None

    def build_dataset(self, split: str) -> GenericNonGeoClassificationDataset:
        """The dataset of ``split``; ``predict`` has no labels."""
        if split not in SPLITS:
            raise ValueError(f"Unknown split '{split}'; expected one of {SPLITS}.")
        predict = split == "predict"
        dataset_bands, output_bands = self.dataset_bands, self.output_bands
        keys = ("dataset_bands", "output_bands")
        if predict:
            if self.predict_dataset_bands is not None:
                dataset_bands, keys = self.predict_dataset_bands, ("predict_dataset_bands", keys[1])
            if self.predict_output_bands is not None:
                output_bands, keys = self.predict_output_bands, (keys[0], "predict_output_bands")
        return GenericNonGeoClassificationDataset(
            self.roots[split],  # type: ignore[arg-type]  # None: the dataset names the setting
            img_grep=self.img_grep,
            classes=None if predict else self.class_names,
            split=self.splits[split],
            ignore_split_file_extensions=self.ignore_split_file_extensions,
            allow_substring_split_file=self.allow_substring_split_file,
            with_labels=not predict,
            arg_prefix=f"{split}_",
            dataset_bands=dataset_bands,
            output_bands=output_bands,
            band_keys=keys,
            date_pattern=self.date_pattern,
            expand_temporal_dimension=self.expand_temporal_dimension,
        )
