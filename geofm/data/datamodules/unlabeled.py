"""``GenericUnlabeledDataModule``: folders of GeoTIFF images without labels (self-supervised
pretraining)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from geofm.data.datamodules.base import SPLITS, GeoTiffDataModule
from geofm.data.datasets.pixel_wise import GenericPixelWiseDataset

__all__ = ["GenericUnlabeledDataModule"]


class GenericUnlabeledDataModule(GeoTiffDataModule):
    """Image batches from GeoTIFF folders, one folder per split, no labels.

    Images of a split are the files of ``<split>_data_root`` matching ``img_grep`` (optionally
    restricted by a split file). Reading is the generic datamodules': band selection, nodata as
    NaN, files that stack dates read as ``(C, T, H, W)`` with ``expand_temporal_dimension``,
    ``temporal_coords`` from dated file names and ``location_coords`` from the CRS.

    Batches: ``image`` ``(B, C, H, W)`` / ``(B, C, T, H, W)`` float32 raw values, ``nodata_mask``
    ``(B, H, W)``, the coordinates when known, and ``filename``, ``crs``, ``transform``...
    Images of one batch must share a size: crop them in ``train_transform`` (e.g.
    ``kornia.augmentation.RandomCrop`` to the model's image size) when they differ.

    Args:
        batch_size: Samples per batch.
        num_workers: DataLoader worker processes.
        train_data_root: Folder of training images.
        val_data_root: Folder of validation images (optional for ``fit``).
        test_data_root: Folder of test images.
        predict_data_root: Folder of images to predict.
        img_grep: Glob pattern of images within a data root (``"*_merged.tif"``).
        train_split: File listing the training sample names, one a line.
        val_split: File listing the validation sample names.
        test_split: File listing the test sample names.
        ignore_split_file_extensions: Compare split names without file extensions.
        allow_substring_split_file: A split entry selects every sample whose name contains it.
        **kwargs: Settings of :class:`~geofm.data.datamodules.base.GeoTiffDataModule`
            (``means``, ``stds``, ``dataset_bands``, ``output_bands``, ``constant_scale``,
            ``no_data_replace``, ``expand_temporal_dimension``, ``train_transform``, ...).
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
        train_split: str | Path | None = None,
        val_split: str | Path | None = None,
        test_split: str | Path | None = None,
        ignore_split_file_extensions: bool = True,
        allow_substring_split_file: bool = False,
        **kwargs: Any,
    ):
        super().__init__(batch_size, num_workers, **kwargs)
        roots = (train_data_root, val_data_root, test_data_root, predict_data_root)
        self.roots = dict(zip(SPLITS, roots, strict=True))
        self.splits = {"train": train_split, "val": val_split, "test": test_split, "predict": None}
        self.img_grep = img_grep
        self.ignore_split_file_extensions = ignore_split_file_extensions
        self.allow_substring_split_file = allow_substring_split_file

    def split_configured(self, split: str) -> bool:
        """Whether ``split`` has a data root."""
        return self.roots[split] is not None

    def build_dataset(self, split: str) -> GenericPixelWiseDataset:
        """The images of ``split``, without labels."""
        if split not in SPLITS:
            raise ValueError(f"Unknown split '{split}'; expected one of {SPLITS}.")
        predict = split == "predict"
        dataset_bands = self.predict_dataset_bands if predict else None
        output_bands = self.predict_output_bands if predict else None
        return GenericPixelWiseDataset(
            self.roots[split],  # type: ignore[arg-type]  # None: the dataset names the setting
            img_grep=self.img_grep,
            split=self.splits[split],
            ignore_split_file_extensions=self.ignore_split_file_extensions,
            allow_substring_split_file=self.allow_substring_split_file,
            dataset_bands=dataset_bands if dataset_bands is not None else self.dataset_bands,
            output_bands=output_bands if output_bands is not None else self.output_bands,
            expand_temporal_dimension=self.expand_temporal_dimension,
            date_pattern=self.date_pattern,
            with_labels=False,
            arg_prefix=f"{split}_",
            band_keys=(
                "predict_dataset_bands" if dataset_bands is not None else "dataset_bands",
                "predict_output_bands" if output_bands is not None else "output_bands",
            ),
        )
