"""The shared part of the segmentation and pixel-wise regression datamodules."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from geofm.data.datamodules.base import SPLITS, GeoTiffDataModule
from geofm.data.datasets.pixel_wise import GenericPixelWiseDataset

__all__ = ["GenericPixelWiseDataModule"]


class GenericPixelWiseDataModule(GeoTiffDataModule):
    """Folders of GeoTIFF images and label rasters, one set of folders per split.

    Images of a split are the files of ``<split>_data_root`` matching ``img_grep``; labels those
    of ``<split>_label_data_root`` (default: the image folder) matching ``label_grep``. An image
    and its label pair by their common name, the text the patterns' wildcards match
    (``Spain_7370579`` for ``img_grep="*_S2Hand.tif"``, ``label_grep="*_LabelHand.tif"``),
    whatever order the folders sort in. A split file lists sample names, one a line, matched
    exactly (``a_1`` never selects ``a_10``) unless ``allow_substring_split_file`` is set.
    ``predict_data_root`` alone is enough for ``predict``: it needs no labels and no other
    root.

    Batches: ``image`` ``(B, C, H, W)`` / ``(B, C, T, H, W)`` float32, ``mask`` ``(B, H, W)``,
    ``nodata_mask`` ``(B, H, W)`` bool, and lists ``filename``, ``crs`` (WKT), ``transform``
    (6-tuples), ``height``, ``width``.

    Args:
        batch_size: Samples per batch.
        num_workers: DataLoader worker processes.
        train_data_root: Folder of training images.
        val_data_root: Folder of validation images (optional for ``fit``).
        test_data_root: Folder of test images.
        predict_data_root: Folder of images to predict.
        img_grep: Glob pattern of images within a data root (``"*_S2Hand.tif"``).
        label_grep: Glob pattern of labels within a label root (``"*_LabelHand.tif"``).
        train_label_data_root: Folder of training labels; default ``train_data_root``.
        val_label_data_root: Folder of validation labels; default ``val_data_root``.
        test_label_data_root: Folder of test labels; default ``test_data_root``.
        train_split: File listing the training sample names.
        val_split: File listing the validation sample names.
        test_split: File listing the test sample names.
        ignore_split_file_extensions: Compare split names without file extensions.
        allow_substring_split_file: A split entry selects every sample whose common name or
            file name contains it, as TerraTorch does (``Spain`` selects every ``Spain_*``
            sample); one warning lists samples that several entries select and entries that
            name a sample exactly but select others too. ``False`` (geofm's default; TerraTorch's
            is ``True``) matches names exactly, so that ``a_1`` never selects ``a_10``; a split
            file whose entries are only parts of names then fails with a message saying to set
            this. Without a split file it changes nothing.
        no_label_replace: Value for label pixels equal to the label file's nodata value (or
            NaN); also written where an augmentation brings in pixels from outside the image.
        **kwargs: Settings of :class:`~geofm.data.datamodules.base.GeoTiffDataModule`
            (``means``, ``stds``, ``dataset_bands``, ``output_bands``, ``constant_scale``,
            ``no_data_replace``, ``expand_temporal_dimension``, ``train_transform``, ...).
    """

    dataset_class: ClassVar[type[GenericPixelWiseDataset]] = GenericPixelWiseDataset

    def __init__(
        self,
        batch_size: int = 8,
        num_workers: int = 0,
        train_data_root: str | Path | None = None,
        val_data_root: str | Path | None = None,
        test_data_root: str | Path | None = None,
        predict_data_root: str | Path | None = None,
        img_grep: str = "*",
        label_grep: str = "*",
        train_label_data_root: str | Path | None = None,
        val_label_data_root: str | Path | None = None,
        test_label_data_root: str | Path | None = None,
        train_split: str | Path | None = None,
        val_split: str | Path | None = None,
        test_split: str | Path | None = None,
        ignore_split_file_extensions: bool = True,
        allow_substring_split_file: bool = False,
        no_label_replace: float | None = None,
        **kwargs: Any,
    ):
        if kwargs.get("mask_fill") is None:  # a config passes mask_fill: null when it says nothing
            kwargs["mask_fill"] = self._mask_fill(no_label_replace)
        super().__init__(batch_size, num_workers, **kwargs)
        self.roots = dict(
            zip(
                SPLITS,
                (train_data_root, val_data_root, test_data_root, predict_data_root),
                strict=True,
            )
        )
        self.label_roots = {
            "train": train_label_data_root,
            "val": val_label_data_root,
            "test": test_label_data_root,
            "predict": None,
        }
        self.splits = {"train": train_split, "val": val_split, "test": test_split, "predict": None}
        self.img_grep = img_grep
        self.label_grep = label_grep
        self.ignore_split_file_extensions = ignore_split_file_extensions
        self.allow_substring_split_file = allow_substring_split_file
        self.no_label_replace = no_label_replace

    @staticmethod
    def _mask_fill(no_label_replace: float | None) -> float | None:
        """Mask value for pixels an augmentation brings in from outside the image."""
        return no_label_replace

    def split_configured(self, split: str) -> bool:
        """Whether ``split`` has a data root."""
        return self.roots[split] is not None

    def dataset_kwargs(self, split: str) -> dict[str, Any]:
        """Keyword arguments the task-specific dataset class adds for ``split``."""
        return {}

    def build_dataset(self, split: str) -> GenericPixelWiseDataset:
        """The dataset of ``split``; ``predict`` has no labels."""
        if split not in SPLITS:
            raise ValueError(f"Unknown split '{split}'; expected one of {SPLITS}.")
        predict = split == "predict"
        overrides = (
            (self.predict_dataset_bands, self.predict_output_bands) if predict else (None, None)
        )
        return self.dataset_class(
            self.roots[split],  # type: ignore[arg-type]  # None: the dataset names the setting
            self.label_roots[split],
            img_grep=self.img_grep,
            label_grep=self.label_grep,
            split=self.splits[split],
            ignore_split_file_extensions=self.ignore_split_file_extensions,
            allow_substring_split_file=self.allow_substring_split_file,
            dataset_bands=overrides[0] if overrides[0] is not None else self.dataset_bands,
            output_bands=overrides[1] if overrides[1] is not None else self.output_bands,
            no_label_replace=self.no_label_replace,
            expand_temporal_dimension=self.expand_temporal_dimension,
            date_pattern=self.date_pattern,
            with_labels=not predict,
            arg_prefix=f"{split}_",
            band_keys=(
                "predict_dataset_bands" if overrides[0] is not None else "dataset_bands",
                "predict_output_bands" if overrides[1] is not None else "output_bands",
            ),
            **self.dataset_kwargs(split),
        )
