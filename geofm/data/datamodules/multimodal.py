"""``GenericMultiModalDataModule``: one GeoTIFF folder per modality, ``image`` as a dict.

Configured like TerraTorch's datamodule of the same name (for TerraMind and other multimodal
backbones)::

    data:
      class_path: GenericMultiModalDataModule
      init_args:
        modalities: [S2L2A, S1GRD]
        batch_size: 8
        train_data_root: {S2L2A: data/train/S2L2A, S1GRD: data/train/S1GRD}
        train_label_data_root: data/train/labels
        image_grep: {S2L2A: "*_S2L2A.tif", S1GRD: "*_S1GRD.tif"}
        label_grep: "*_label.tif"
        output_bands: {S1GRD: [VV, VH]}
        dataset_bands: {S1GRD: [VV, VH]}
        constant_scale: {S2L2A: 1.0}
        no_label_replace: -1
        num_classes: 2

Batches: ``image`` ``{modality: (B, C_m, H, W)}`` raw float32 (NaN at nodata), ``mask``
``(B, H, W)``, ``nodata_mask`` ``(B, H, W)`` (any modality's nodata), and the first
modality's ``filename``/``crs``/``transform`` (predictions are written on its grid), dates and
location. Augmentations move every modality, the mask and the nodata mask alike.

Preprocessing settings (``means``, ``stds``, ``constant_scale``, ``no_data_replace``, bands)
are described per modality (:meth:`GenericMultiModalDataModule.preprocess_settings`); the
task's :class:`~geofm.models.preprocess.MultiModalPreprocess` applies them, or the backbone's
per-modality pretraining statistics where the datamodule gives none.

Missing modalities. By default every sample needs a file of every modality (a missing one
is an error naming a file of the sample and the modality). With
``allow_missing_modalities: true`` a sample holds the modalities it has files for; samples
with different modalities cannot be stacked, so a batch that mixes them is an error naming the
samples: use ``batch_size: 1`` (or folders where each batch is complete).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from geofm.data.band_selection import BandSpec
from geofm.data.datamodules.base import SPLITS, GeoTiffDataModule, TransformSetting
from geofm.data.datasets.multimodal import (
    GenericMultimodalDataset,
    GenericMultimodalPixelwiseRegressionDataset,
    GenericMultimodalSegmentationDataset,
    per_modality,
)
from geofm.data.raster import check_band_selection

__all__ = ["GenericMultiModalDataModule"]

log = logging.getLogger(__name__)

ByModality = Mapping[str, Any]

_DATASETS: dict[str | None, type[GenericMultimodalDataset]] = {
    "segmentation": GenericMultimodalSegmentationDataset,
    "regression": GenericMultimodalPixelwiseRegressionDataset,
}


class GenericMultiModalDataModule(GeoTiffDataModule):
    """Folders of co-registered GeoTIFFs, one per modality, with one label folder.

    Args:
        modalities: Modality names, in order (``[S2L2A, S1GRD]``); the first is the reference
            for grids, dates and locations. Names must be modalities of the model.
        batch_size: Samples per batch.
        num_workers: DataLoader worker processes.
        train_data_root: ``{modality: folder}`` of training images.
        val_data_root: The same for validation (optional for ``fit``).
        test_data_root: The same for testing.
        predict_data_root: The same for prediction (no labels needed).
        train_label_data_root: Folder of training labels (default: the first modality's
            folder).
        val_label_data_root: Folder of validation labels.
        test_label_data_root: Folder of test labels.
        image_grep: ``{modality: glob pattern}`` or one pattern (TerraTorch's name).
        img_grep: The same, under the single-modality datamodules' name.
        label_grep: Glob pattern of labels.
        train_split: File listing training sample names (common names).
        val_split: The same for validation.
        test_split: The same for testing.
        ignore_split_file_extensions: Compare split names without extensions.
        dataset_bands: ``{modality: bands in file order}``.
        output_bands: ``{modality: bands given to the model}``.
        predict_dataset_bands: ``dataset_bands`` for the predict split, by modality.
        predict_output_bands: ``output_bands`` for the predict split, by modality.
        means: ``{modality: per-band means or statistics file}``.
        stds: ``{modality: per-band stds or statistics file}``.
        constant_scale: ``{modality: factor}`` or one factor for all.
        no_data_replace: ``{modality: value}`` or one value for image nodata pixels, in the
            files' units (replaced before ``constant_scale``, as in TerraTorch).
        no_label_replace: Value for label nodata pixels (also for mask pixels an augmentation
            brings in from outside the image).
        num_classes: Number of classes (segmentation labels are checked against it).
        reduce_zero_label: Subtract 1 from every segmentation label.
        task: ``"segmentation"`` (int64 masks) or ``"regression"`` (float32 masks).
        allow_missing_modalities: Accept samples without files of some modalities (see the
            module docstring).
        rgb_modality: Modality shown in plots (default: the first).
        rgb_indices: Red, green, blue positions among ``rgb_modality``'s output bands.
        expand_temporal_dimension: Files stack ``T`` frames.
        date_pattern: How to read dates from the first modality's file names.
        train_transform: Augmentations for training (kornia, or TerraTorch's albumentations
            lists; one geometry for all modalities, see :mod:`geofm.data.transforms` and
            :mod:`geofm.data.albumentations_compat`).
        val_transform: The same for validation.
        test_transform: The same for testing.
        drop_last: Drop the last incomplete training batch.
        pin_memory: Pin host memory.
        persistent_workers: Keep workers between epochs.
        check_stackability: Batch a split one sample at a time when its files differ in size
            (read from their headers), as TerraTorch does (see
            :class:`~geofm.data.datamodules.base.GeoTiffDataModule`).
    """

    def __init__(
        self,
        modalities: Sequence[str],
        batch_size: int = 8,
        num_workers: int = 0,
        train_data_root: ByModality | None = None,
        val_data_root: ByModality | None = None,
        test_data_root: ByModality | None = None,
        predict_data_root: ByModality | None = None,
        train_label_data_root: str | Path | None = None,
        val_label_data_root: str | Path | None = None,
        test_label_data_root: str | Path | None = None,
        image_grep: str | Mapping[str, str] | None = None,
        img_grep: str | Mapping[str, str] | None = None,
        label_grep: str = "*",
        train_split: str | Path | None = None,
        val_split: str | Path | None = None,
        test_split: str | Path | None = None,
        ignore_split_file_extensions: bool = True,
        dataset_bands: Mapping[str, Sequence[BandSpec]] | None = None,
        output_bands: Mapping[str, Sequence[BandSpec]] | None = None,
        predict_dataset_bands: Mapping[str, Sequence[BandSpec]] | None = None,
        predict_output_bands: Mapping[str, Sequence[BandSpec]] | None = None,
        means: Mapping[str, Sequence[float] | str | Path] | None = None,
        stds: Mapping[str, Sequence[float] | str | Path] | None = None,
        constant_scale: float | Mapping[str, float] = 1.0,
        no_data_replace: float | Mapping[str, float] | None = None,
        no_label_replace: float | None = None,
        num_classes: int | None = None,
        reduce_zero_label: bool = False,
        task: str = "segmentation",
        allow_missing_modalities: bool = False,
        rgb_modality: str | None = None,
        rgb_indices: Sequence[int] | None = None,
        expand_temporal_dimension: bool = False,
        date_pattern: str | None = None,
        train_transform: TransformSetting = None,
        val_transform: TransformSetting = None,
        test_transform: TransformSetting = None,
        drop_last: bool = True,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        check_stackability: bool = False,
    ):
        self.modalities = [str(m) for m in modalities]
        if not self.modalities or len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities={list(modalities)} must name distinct modalities.")
        if task not in _DATASETS:
            raise ValueError(f"task={task!r}; choose one of {sorted(k for k in _DATASETS if k)}.")
        if image_grep is not None and img_grep is not None and image_grep != img_grep:
            raise ValueError("Give image_grep or img_grep (the same setting), not both.")
        super().__init__(
            batch_size,
            num_workers,
            expand_temporal_dimension=expand_temporal_dimension,
            date_pattern=date_pattern,
            train_transform=train_transform,
            val_transform=val_transform,
            test_transform=test_transform,
            drop_last=drop_last,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers,
            mask_fill=no_label_replace,
            check_stackability=check_stackability,
        )
        ms = self.modalities
        self.roots: dict[str, dict[str, Any] | None] = {}
        given = (train_data_root, val_data_root, test_data_root, predict_data_root)
        for split, root in zip(SPLITS, given, strict=True):
            if root is not None and not isinstance(root, Mapping):
                raise ValueError(
                    f"{split}_data_root must be a dict of folders by modality, e.g. "
                    f"{{{ms[0]}: data/{split}/{ms[0]}}}; got {root!r}."
                )
            roots = per_modality(root, ms, f"{split}_data_root") if root is not None else None
            lacking = [m for m, v in (roots or {}).items() if v is None]
            if lacking:
                raise ValueError(f"{split}_data_root has no folder for modalities {lacking}.")
            self.roots[split] = roots
        self.label_roots = {
            "train": train_label_data_root,
            "val": val_label_data_root,
            "test": test_label_data_root,
            "predict": None,
        }
        self.splits = {"train": train_split, "val": val_split, "test": test_split, "predict": None}
        grep = image_grep if image_grep is not None else img_grep
        self.image_grep = per_modality(grep, ms, "image_grep", "*")
        self.label_grep = label_grep
        self.ignore_split_file_extensions = ignore_split_file_extensions
        self.no_label_replace = no_label_replace
        self.num_classes = num_classes
        self.reduce_zero_label = reduce_zero_label
        self.task = task
        self.allow_missing_modalities = allow_missing_modalities
        self.modality_dataset_bands = per_modality(dataset_bands, ms, "dataset_bands")
        self.modality_output_bands = per_modality(output_bands, ms, "output_bands")
        self.modality_predict_dataset_bands = per_modality(
            predict_dataset_bands, ms, "predict_dataset_bands"
        )
        self.modality_predict_output_bands = per_modality(
            predict_output_bands, ms, "predict_output_bands"
        )
        # One single-modality datamodule per modality holds its settings: it resolves the
        # bands, reduces means/stds to the output bands and checks them, as for one modality.
        scales = per_modality(constant_scale, ms, "constant_scale", 1.0)
        fills = per_modality(no_data_replace, ms, "no_data_replace")
        means_by, stds_by = per_modality(means, ms, "means"), per_modality(stds, ms, "stds")
        self.modality_settings: dict[str, GeoTiffDataModule] = {}
        for m in ms:
            try:
                self.modality_settings[m] = GeoTiffDataModule(
                    batch_size,
                    means=means_by[m],
                    stds=stds_by[m],
                    dataset_bands=self.modality_dataset_bands[m],
                    output_bands=self.modality_output_bands[m],
                    predict_dataset_bands=self.modality_predict_dataset_bands[m],
                    predict_output_bands=self.modality_predict_output_bands[m],
                    constant_scale=scales[m],
                    no_data_replace=fills[m],
                )
            except ValueError as err:
                raise ValueError(f"Modality '{m}': {err}") from err
        self.rgb_modality = rgb_modality if rgb_modality is not None else ms[0]
        if self.rgb_modality not in ms:
            raise ValueError(f"rgb_modality={rgb_modality!r} is not among modalities {ms}.")
        if rgb_indices is not None:
            n = self.modality_settings[self.rgb_modality].selection.num_bands
            bad = [i for i in rgb_indices if i < 0 or (n is not None and i >= n)]
            if len(rgb_indices) != 3 or bad:
                raise ValueError(
                    f"rgb_indices={list(rgb_indices)} must be three 0-based positions among the "
                    f"output bands of rgb_modality '{self.rgb_modality}'."
                )
        self.rgb_indices = list(rgb_indices) if rgb_indices is not None else None

    # ------------------------------------------------------------------ settings
    @property
    def band_names(self) -> dict[str, list[str] | None]:  # type: ignore[override]
        """Output band names by modality, when known."""
        return {m: s.band_names for m, s in self.modality_settings.items()}

    def input_bands(self, stage: str | None = None) -> dict[str, list[str] | None]:
        """Band names given to the model in ``stage``, by modality (predict bands at predict)."""
        out = {}
        for m, s in self.modality_settings.items():
            names = (s.predict_selection if stage == "predict" else s.selection).names
            out[m] = list(names) if names is not None else None
        return out

    def preprocess_settings(self) -> dict[str, dict[str, Any]]:
        """The task's preprocessing settings by modality.

        Returns:
            ``{modality: settings}``, each as
            :meth:`~geofm.data.datamodules.base.GeoTiffDataModule.preprocess_settings`
            (``mean``, ``std``, ``constant_scale``, ``no_data_replace``, ``bands``,
            ``band_indexes``).
        """
        return {m: s.preprocess_settings() for m, s in self.modality_settings.items()}

    # ------------------------------------------------------------------ datasets
    def split_configured(self, split: str) -> bool:
        """Whether ``split`` has data roots."""
        return self.roots[split] is not None

    def build_dataset(self, split: str) -> GenericMultimodalDataset:  # type: ignore[override]
        """The dataset of ``split``; ``predict`` has no labels."""
        if split not in SPLITS:
            raise ValueError(f"Unknown split '{split}'; expected one of {SPLITS}.")
        predict = split == "predict"
        dataset_bands, output_bands = self.modality_dataset_bands, self.modality_output_bands
        keys = ("dataset_bands", "output_bands")
        if predict:
            dataset_bands = {
                m: p if p is not None else dataset_bands[m]
                for m, p in self.modality_predict_dataset_bands.items()
            }
            output_bands = {
                m: p if p is not None else output_bands[m]
                for m, p in self.modality_predict_output_bands.items()
            }
            keys = ("predict_dataset_bands", "predict_output_bands")
        cls = _DATASETS[self.task]
        extra: dict[str, Any] = {}
        if cls is GenericMultimodalSegmentationDataset:
            extra = {"num_classes": self.num_classes, "reduce_zero_label": self.reduce_zero_label}
        return cls(
            self.modalities,
            self.roots[split],  # type: ignore[arg-type]  # None: the dataset names the setting
            self.label_roots[split],
            image_grep=self.image_grep,
            label_grep=self.label_grep,
            split=self.splits[split],
            ignore_split_file_extensions=self.ignore_split_file_extensions,
            dataset_bands=dataset_bands,
            output_bands=output_bands,
            allow_missing_modalities=self.allow_missing_modalities,
            no_label_replace=self.no_label_replace,
            expand_temporal_dimension=self.expand_temporal_dimension,
            date_pattern=self.date_pattern,
            with_labels=not predict,
            arg_prefix=f"{split}_",
            band_keys=keys,
            **extra,
        )

    def _check_first_file(self, dataset: GenericMultimodalDataset) -> None:  # type: ignore[override]
        """Check each modality's band settings against its first file (headers only)."""
        for m in dataset.modalities:
            first = next((files[m] for files in dataset.sample_files if m in files), None)
            if first is not None:
                check_band_selection(
                    first,
                    dataset.selections[m],
                    expand_temporal_dimension=self.expand_temporal_dimension,
                    bands_key=dataset.bands_keys[m],
                )
