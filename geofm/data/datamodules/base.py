"""What the generic datamodules share: loaders, per-split augmentation, statistics.

Datasets return raw values (NaN at nodata). Scaling, nodata filling and normalisation belong
to the task's :class:`~geofm.models.preprocess.Preprocess`: the datamodule only describes
them (:meth:`GeoTiffDataModule.preprocess_settings`: ``means``/``stds`` per output band in
``constant_scale``-d units, ``constant_scale``, ``no_data_replace`` in scaled units, band names
and numbers), and the task takes that description in its ``setup``.

Batching. Samples of one batch must have one shape; :func:`~geofm.data.collate.collate_samples`
checks every batch and names the files when they differ. ``check_stackability`` (TerraTorch's
name) checks a whole split before its loader is built, from the files' headers, and batches it
one sample at a time when its images differ in size, as TerraTorch does.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch.utils.data import DataLoader

from geofm.data.albumentations_compat import build_transforms
from geofm.data.band_selection import BandSelection, BandSpec, band_key, select_bands
from geofm.data.collate import collate_samples
from geofm.data.datasets.base import GeoTiffDataset
from geofm.data.raster import check_band_selection, read_grid
from geofm.data.sample_transforms import SampleTransform
from geofm.data.statistics import load_band_values
from geofm.data.transforms import AugmentationSpec, BatchAugmentation

__all__ = ["GeoTiffDataModule", "SPLITS", "STAGE_SPLITS"]

log = logging.getLogger(__name__)

# Our on_after_batch_transfer calls the LightningModule's after its own (see there), so
# Lightning's warning that the module's hook is not used does not hold for these datamodules.
warnings.filterwarnings(
    "ignore", message=r"You have overridden `on_after_batch_transfer` in both", category=UserWarning
)

SPLITS = ("train", "val", "test", "predict")
#: Splits each Lightning stage sets up.
STAGE_SPLITS = {
    "fit": ("train", "val"),
    "validate": ("val",),
    "test": ("test",),
    "predict": ("predict",),
}

TransformSetting = Sequence[AugmentationSpec] | AugmentationSpec | None


class GeoTiffDataModule(pl.LightningDataModule):
    """Base of the generic datamodules: data loaders, augmentation, means/stds.

    Subclasses implement :meth:`build_dataset`.

    Args:
        batch_size: Samples per batch (all splits).
        num_workers: DataLoader worker processes.
        means: Per-band means of the output bands, or a statistics file: YAML/JSON with
            ``means`` (see :mod:`geofm.data.statistics`), or TerraTorch's ``.txt`` of numbers
            (one per line). A list as long as ``dataset_bands`` is reduced to the selected
            bands; a file that names its ``bands`` is matched by name.
        stds: Per-band standard deviations, given like ``means``.
        dataset_bands: The files' bands in file order: names (``BLUE``, TerraTorch's
            ``HLSBands`` names...), integer identifiers of unnamed bands, ``[first, last]``
            runs of them (TerraTorch's ``[[0, 11]]``); see :mod:`geofm.data.band_selection`.
        output_bands: Bands given to the model, in order: names, identifiers listed in
            ``dataset_bands``, or 1-based band numbers.
        predict_dataset_bands: ``dataset_bands`` for the predict split, when its files differ.
        predict_output_bands: ``output_bands`` for the predict split; must select as many bands
            as ``output_bands`` (the model's input).
        constant_scale: Factor applied to raw pixel values (by the task's preprocessing, before
            normalisation); ``means``/``stds`` are in scaled units.
        rgb_indices: 0-based positions, among the output bands, of red, green and blue (for
            plots; TerraTorch's setting).
        no_data_replace: Value for image nodata pixels (the file's nodata value, NaN or ±inf),
            in the file's units: as in TerraTorch it replaces them before ``constant_scale``
            (``-9999`` with ``constant_scale: 0.0001`` gives ``-0.9999``); ``None`` uses each
            band's mean (0 after normalisation).
        expand_temporal_dimension: Files stack ``T`` frames of ``len(dataset_bands)`` bands,
            time-major; images become ``(C, T, H, W)``.
        date_pattern: How to read acquisition dates for ``temporal_coords`` (see
            :mod:`geofm.data.coords`: ``"YYYYMMDD"``, ``".YYYYDDDT"``, a regex, ``"tags"``);
            ``None`` tries the common file-name patterns.
        train_transform: Augmentations for training: kornia augmentations (see
            :mod:`geofm.data.transforms`), run on the device in ``on_after_batch_transfer``, or
            TerraTorch's albumentations lists (see :mod:`geofm.data.albumentations_compat`:
            mapped to kornia, or run per sample on the CPU by the dataset).
        val_transform: The same for validation.
        test_transform: The same for testing. Prediction batches are never augmented (their
            pixels must stay on the file's grid).
        drop_last: Drop the last incomplete training batch.
        pin_memory: Pin host memory in the data loaders.
        persistent_workers: Keep workers alive between epochs (only when ``num_workers > 0``).
        mask_fill: Value for mask pixels brought in from outside the image by an augmentation.
        check_stackability: Before building a split's loader, read every image's header; when
            the images differ in size (or, when all bands are read, in band count), log a
            warning and batch that split one sample at a time, as TerraTorch does. ``False``
            (geofm's default, as it reads no file; TerraTorch's is ``True``) leaves
            ``batch_size`` as it is: a batch of different sizes is then an error naming its
            files.
    """

    #: How the loaders batch samples (detection keeps each sample's objects in lists).
    collate_fn = staticmethod(collate_samples)

    def __init__(
        self,
        batch_size: int = 8,
        num_workers: int = 0,
        *,
        means: Sequence[float] | str | Path | None = None,
        stds: Sequence[float] | str | Path | None = None,
        dataset_bands: Sequence[BandSpec] | None = None,
        output_bands: Sequence[BandSpec] | None = None,
        predict_dataset_bands: Sequence[BandSpec] | None = None,
        predict_output_bands: Sequence[BandSpec] | None = None,
        constant_scale: float = 1.0,
        rgb_indices: Sequence[int] | None = None,
        no_data_replace: float | None = None,
        expand_temporal_dimension: bool = False,
        date_pattern: str | None = None,
        train_transform: TransformSetting = None,
        val_transform: TransformSetting = None,
        test_transform: TransformSetting = None,
        drop_last: bool = True,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        mask_fill: float | None = None,
        check_stackability: bool = False,
    ):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1.")
        if num_workers < 0:
            raise ValueError(f"num_workers={num_workers} must be 0 or more.")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.drop_last = drop_last
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.dataset_bands = dataset_bands
        self.output_bands = output_bands
        self.predict_dataset_bands = predict_dataset_bands
        self.predict_output_bands = predict_output_bands
        self.constant_scale = float(constant_scale)
        self.no_data_replace = no_data_replace
        self.expand_temporal_dimension = expand_temporal_dimension
        self.date_pattern = date_pattern
        self.rgb_indices = list(rgb_indices) if rgb_indices is not None else None
        self.check_stackability = check_stackability
        self._split_batch_size: dict[str, int] = {}

        # Resolved now so that a wrong band name fails at construction, before any training.
        self.selection: BandSelection = select_bands(dataset_bands, output_bands)
        self.predict_selection: BandSelection = select_bands(
            predict_dataset_bands if predict_dataset_bands is not None else dataset_bands,
            predict_output_bands if predict_output_bands is not None else output_bands,
            dataset_key="predict_dataset_bands"
            if predict_dataset_bands is not None
            else "dataset_bands",
            output_key="predict_output_bands"
            if predict_output_bands is not None
            else "output_bands",
        )
        n_train, n_predict = self.selection.num_bands, self.predict_selection.num_bands
        if n_train is not None and n_predict is not None and n_train != n_predict:
            raise ValueError(
                f"predict_output_bands selects {n_predict} bands but output_bands selects "
                f"{n_train}; the model takes the same bands at predict time."
            )
        self.means = self._band_values(means, "means")
        self.stds = self._band_values(stds, "stds")
        if (self.means is None) != (self.stds is None):
            raise ValueError("Give both means and stds, or neither.")
        if self.means is not None and self.stds is not None:
            if len(self.means) != len(self.stds):
                raise ValueError(
                    f"means has {len(self.means)} values but stds has {len(self.stds)}."
                )
            if any(s <= 0 for s in self.stds):
                raise ValueError(f"stds must be positive, got {self.stds}.")

        # Each setting splits into per-sample CPU transforms (albumentations, run by the
        # dataset) and the batch augmentation run on the device (kornia).
        self.sample_transforms: dict[str, SampleTransform | None] = {"predict": None}
        self.augmentations: dict[str, BatchAugmentation | None] = {"predict": None}
        given = {"train": train_transform, "val": val_transform, "test": test_transform}
        for split, spec in given.items():
            self.sample_transforms[split], self.augmentations[split] = build_transforms(
                spec, f"{split}_transform", mask_fill
            )
        if self.rgb_indices is not None:
            n = self.selection.num_bands
            bad = [i for i in self.rgb_indices if i < 0 or (n is not None and i >= n)]
            if len(self.rgb_indices) != 3 or bad:
                among = f"the {n} output bands" if n is not None else "the output bands"
                raise ValueError(
                    f"rgb_indices={self.rgb_indices} must be three 0-based positions among {among}."
                )
        # Set up by setup(); attribute names as in TorchGeo and TerraTorch.
        self.train_dataset: GeoTiffDataset | None = None
        self.val_dataset: GeoTiffDataset | None = None
        self.test_dataset: GeoTiffDataset | None = None
        self.predict_dataset: GeoTiffDataset | None = None

    # ------------------------------------------------------------------ bands and statistics
    @property
    def band_names(self) -> list[str] | None:
        """Names of the output bands (``band_<n>`` for unnamed ones), when known."""
        return list(self.selection.names) if self.selection.names is not None else None

    def _band_values(self, value: Any, field_name: str) -> list[float] | None:
        values, file_bands = load_band_values(value, field_name)
        if values is None:
            return None
        sel = self.selection
        wanted = sel.num_bands
        if file_bands is not None and sel.names is not None:
            by_key = {band_key(b): i for i, b in enumerate(file_bands)}
            if all(band_key(n) in by_key for n in sel.names):
                return [values[by_key[band_key(n)]] for n in sel.names]
        if wanted is None or len(values) == wanted:
            return values
        if sel.indexes is not None and (sel.dataset_count in (None, len(values))):
            if max(sel.indexes) <= len(values):
                # Values given for every band of the file: keep those of the selected bands.
                return [values[i - 1] for i in sel.indexes]
        raise ValueError(
            f"{field_name} has {len(values)} values but output_bands selects {wanted} band(s)"
            + (f" of the {sel.dataset_count} in dataset_bands" if sel.dataset_count else "")
            + "; give one value per output band (or per dataset band)."
        )

    def preprocess_settings(self) -> dict[str, Any]:
        """What the task's :class:`~geofm.models.preprocess.Preprocess` takes from this datamodule.

        Returns:
            ``mean``, ``std``, ``constant_scale``, ``no_data_replace`` (in scaled units: the
            setting times ``constant_scale``), ``bands`` (output band names, when known) and
            ``band_indexes`` (1-based file band numbers, when known).
        """
        fill = self.no_data_replace
        return {
            "mean": self.means,
            "std": self.stds,
            "constant_scale": self.constant_scale,
            "no_data_replace": None if fill is None else float(fill) * self.constant_scale,
            "bands": self.band_names,
            "band_indexes": list(self.selection.indexes) if self.selection.indexes else None,
        }

    # ------------------------------------------------------------------ datasets
    def build_dataset(self, split: str) -> GeoTiffDataset:
        """The dataset of ``split`` (``"train"``, ``"val"``, ``"test"`` or ``"predict"``)."""
        raise NotImplementedError

    def split_configured(self, split: str) -> bool:
        """Whether ``split`` has a data root."""
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        """Build the datasets of ``stage`` (``fit``, ``validate``, ``test``, ``predict``).

        Only file names are listed; the first image of each split is opened to check that the
        band settings fit it.

        Raises:
            ValueError: ``stage`` is unknown, or a split the stage needs has no data root.
        """
        if stage not in STAGE_SPLITS:
            raise ValueError(f"Unknown stage '{stage}'; expected one of {sorted(STAGE_SPLITS)}.")
        for split in STAGE_SPLITS[stage]:
            if not self.split_configured(split):
                if split == "val" and stage == "fit":
                    log.info("No val_data_root: training without validation.")
                    continue
                raise ValueError(f"Stage '{stage}' needs {split}_data_root, which is not set.")
            if getattr(self, f"{split}_dataset") is None:
                dataset = self.build_dataset(split)
                dataset.transform = self.sample_transforms.get(split)
                self._check_first_file(dataset)
                setattr(self, f"{split}_dataset", dataset)
                log.info("%s split: %d samples", split, len(dataset))

    def _check_first_file(self, dataset: GeoTiffDataset) -> None:
        if len(dataset):
            check_band_selection(
                dataset.image_files[0],
                dataset.selection,
                expand_temporal_dimension=self.expand_temporal_dimension,
                bands_key=dataset.bands_key,
            )

    # ------------------------------------------------------------------ loaders
    def _loader(self, split: str) -> DataLoader:
        dataset = getattr(self, f"{split}_dataset")
        if dataset is None:
            if split == "val" and not self.split_configured("val"):
                return []  # type: ignore[return-value]  # Lightning skips an empty list
            raise RuntimeError(f"The {split} dataset is not set up; call setup() first.")
        train = split == "train"
        batch_size = self._stackable_batch_size(split, dataset)
        # drop_last on a split smaller than one batch would leave no batch at all.
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train,
            num_workers=self.num_workers,
            collate_fn=self.collate_fn,
            drop_last=train and self.drop_last and len(dataset) >= batch_size,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
        )

    def _stackable_batch_size(self, split: str, dataset: Any) -> int:
        """``batch_size``, or 1 when ``check_stackability`` finds images of different shapes."""
        if not self.check_stackability or self.batch_size == 1 or len(dataset) < 2:
            return self.batch_size
        if split not in self._split_batch_size:
            shapes: dict[tuple[Any, ...], str] = {}
            for name, shape in _file_shapes(dataset):
                shapes.setdefault(shape, name)
            size = self.batch_size
            if len(shapes) > 1:
                size = 1
                examples = "; ".join(f"{s} ('{n}')" for s, n in list(shapes.items())[:3])
                log.warning(
                    "check_stackability: the %s split's images have %d different shapes "
                    "(height, width[, bands]): %s. Batching them one at a time (batch_size=1), as "
                    "TerraTorch does; crop or resize them to one size to batch them.",
                    split,
                    len(shapes),
                    examples,
                )
            self._split_batch_size[split] = size
        return self._split_batch_size[split]

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches."""
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        """Validation batches (an empty list without ``val_data_root``)."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        """Test batches."""
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        """Prediction batches, in file order."""
        return self._loader("predict")

    # ------------------------------------------------------------------ augmentation
    def augment(self, batch: dict[str, Any], split: str) -> dict[str, Any]:
        """Apply the augmentation configured for ``split`` to a batch (on its device)."""
        augmentation = self.augmentations.get(split)
        if augmentation is None:
            return batch
        return augmentation(batch)

    def _current_split(self) -> str | None:
        trainer = self.trainer
        if trainer is None:
            return None
        if trainer.training:
            return "train"
        if trainer.validating or trainer.sanity_checking:
            return "val"
        if trainer.testing:
            return "test"
        if trainer.predicting:
            return "predict"
        return None

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Augment the batch on the device, then run the task's own hook on the result.

        Lightning (2.x) calls only one ``on_after_batch_transfer`` when both the datamodule and
        the LightningModule define it, the datamodule's, and warns that it does. So this hook
        chains the module's after the augmentation: the task's normalisation in its own
        ``on_after_batch_transfer`` still runs, once, on the augmented batch.
        """
        split = self._current_split()
        if split is not None and isinstance(batch, dict):
            batch = self.augment(batch, split)
        module = self.trainer.lightning_module if self.trainer is not None else None
        if is_overridden("on_after_batch_transfer", module, parent=pl.LightningModule):
            batch = module.on_after_batch_transfer(batch, dataloader_idx)
        return batch


def _file_shapes(dataset: Any) -> list[tuple[str, tuple[Any, ...]]]:
    """``(file, shape)`` of each sample from the file headers: ``(height, width)``, plus the
    band count when every band is read; by modality for multimodal samples."""

    def shape(path: Any, selection: BandSelection | None) -> tuple[int, ...]:
        grid = read_grid(path)
        every_band = selection is None or selection.indexes is None
        return (grid.height, grid.width, grid.count) if every_band else (grid.height, grid.width)

    files = getattr(dataset, "sample_files", None)
    if files is not None:  # multimodal: one file per modality
        selections = getattr(dataset, "selections", {})
        return [
            (
                str(next(iter(by.values()))),
                tuple((m, *shape(p, selections.get(m))) for m, p in by.items()),
            )
            for by in files
        ]
    selection = getattr(dataset, "selection", None)
    return [(str(p), shape(p, selection)) for p in dataset.image_files]
