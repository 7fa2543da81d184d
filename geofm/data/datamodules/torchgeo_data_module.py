"""``TorchGeoDataModule``: any TorchGeo datamodule, its batches in geofm's format.

TorchGeo's datamodules load, split and sample their datasets themselves; this wrapper builds
one (named as in TerraTorch's ``TorchGeoDataModule``/``TorchNonGeoDataModule``: ``cls`` plus
the datamodule's own arguments) and changes two things on the way to a geofm task:

- **normalisation moves into the task.** TorchGeo normalises batches on the device with a
  ``kornia.augmentation.Normalize`` inside its ``aug``. geofm's tasks normalise themselves
  (their :class:`~geofm.models.preprocess.Preprocess` is saved with the model and runs in every
  prediction route), so the wrapper reads the means/stds from those ``Normalize`` modules, makes
  them identities, and hands the statistics to the task through :meth:`preprocess_settings`.
  A single value for every band is expanded to the dataset's band count (read from a sample).
  When that cannot be done safely (different statistics per split, a band count that cannot be
  read) TorchGeo keeps normalising and the task gets no statistics; the log says so.
- **batches follow geofm's contract**: ``image`` float32 ``(B, C, H, W)``, ``mask`` ``(B, H, W)``
  (a channel of 1 dropped, integer classes as int64), ``label`` ``(B,)`` int64 for integer
  labels. Other keys pass through.

TorchGeo is an optional dependency (``pip install 'geofm[torchgeo]'``); it is imported when
the wrapper is built, never when geofm is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import nn

from geofm.registry.class_path import import_object
from geofm.registry.errors import MissingDependencyError, close_names

__all__ = ["TorchGeoDataModule", "TorchNonGeoDataModule", "to_geofm_batch"]

log = logging.getLogger(__name__)

_AUG_ATTRIBUTES = ("aug", "train_aug", "val_aug", "test_aug", "predict_aug")
_DATASET_ATTRIBUTES = ("train_dataset", "val_dataset", "test_dataset", "predict_dataset", "dataset")

SampleTransform = Callable[[dict[str, Any]], dict[str, Any]]


def _torchgeo_datamodules() -> Any:
    try:
        import torchgeo.datamodules
    except ImportError as err:
        raise MissingDependencyError("TorchGeoDataModule", "torchgeo", "torchgeo") from err
    return torchgeo.datamodules


def _datamodule_class(cls: str | type) -> type[pl.LightningDataModule]:
    """The class ``cls`` names: a TorchGeo datamodule name, a dotted path, or the class."""
    if isinstance(cls, str):
        module = _torchgeo_datamodules()
        if "." in cls:
            found = import_object(cls, what=f"cls='{cls}'")
        elif hasattr(module, cls):
            found = getattr(module, cls)
        else:
            names = [n for n in dir(module) if n.endswith("DataModule")]
            hint = close_names(cls, names, n=3)
            raise ValueError(
                f"cls='{cls}' is not a datamodule of torchgeo.datamodules"
                + (f" (did you mean {', '.join(repr(h) for h in hint)}?)" if hint else "")
                + "; give a name from there or a full class path."
            )
    else:
        found = cls
    if not (isinstance(found, type) and issubclass(found, pl.LightningDataModule)):
        raise ValueError(
            f"cls={cls!r} is not a LightningDataModule class; give a TorchGeo datamodule such as "
            "'EuroSATDataModule' or 'torchgeo.datamodules.EuroSATDataModule'."
        )
    return found


def _sample_transform(transforms: Any) -> SampleTransform:
    """One callable from ``transforms``: a callable, a ``{class_path, init_args}`` dict, or a
    list of them applied in order."""
    many = isinstance(transforms, Sequence) and not isinstance(transforms, str)
    entries = list(transforms) if many else [transforms]
    steps: list[SampleTransform] = []
    for entry in entries:
        if isinstance(entry, Mapping) and "class_path" in entry:
            entry = import_object(entry["class_path"], what=f"transforms: '{entry['class_path']}'")(
                **dict(entry.get("init_args") or {})
            )
        if type(entry).__module__.split(".")[0] == "albumentations":
            raise ValueError(
                f"transforms: {type(entry).__name__} is an albumentations transform, which takes "
                "numpy arrays as keywords; TorchGeo datasets call their transforms with the sample "
                "dict of tensors. Give callables that take and return that dict (for instance "
                "kornia.augmentation.AugmentationSequential(..., data_keys=None)), or augment "
                "batches in the task's datamodule with the generic geofm datamodules."
            )
        if not callable(entry):
            raise ValueError(
                f"transforms: {entry!r} is not callable; it must map a sample dict to one."
            )
        steps.append(entry)

    def apply(sample: dict[str, Any]) -> dict[str, Any]:
        for step in steps:
            sample = step(sample)
        return sample

    return apply


def _flat(value: Any) -> torch.Tensor:
    """A ``Normalize`` statistic (number, list or tensor) as a 1-D float32 tensor."""
    return torch.as_tensor(value, dtype=torch.float32).flatten()


def to_geofm_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """A TorchGeo batch in geofm's format (see the module docstring); changed in place."""
    image = batch.get("image")
    if isinstance(image, torch.Tensor) and image.dtype != torch.float32:
        batch["image"] = image.float()
    mask = batch.get("mask")
    if isinstance(mask, torch.Tensor):
        if mask.ndim == 4 and mask.shape[1] == 1:
            mask = mask.squeeze(1)
        if not mask.is_floating_point():
            mask = mask.long()
        batch["mask"] = mask
    label = batch.get("label")
    if isinstance(label, torch.Tensor) and not label.is_floating_point():
        batch["label"] = label.long()
    return batch


class TorchGeoDataModule(pl.LightningDataModule):
    """A TorchGeo datamodule (``NonGeoDataModule`` or ``GeoDataModule``) for geofm's tasks.

    In a config, as in TerraTorch (``dict_kwargs`` holds the TorchGeo datamodule's own
    arguments)::

        data:
          class_path: geofm.data.datamodules.TorchGeoDataModule   # or terratorch.datamodules.*
          init_args:
            cls: EuroSATDataModule        # a name of torchgeo.datamodules, or a class path
            batch_size: 32
            num_workers: 4
          dict_kwargs:
            root: data/eurosat
            bands: [B02, B03, B04, B08]
            download: false

    Setup, loaders, samplers and batch augmentation are the TorchGeo datamodule's; its
    normalisation moves to the task and its batches are converted (see
    :mod:`geofm.data.datamodules.torchgeo_data_module`). Other attributes (``plot``,
    ``train_dataset``...) are the wrapped datamodule's.

    Args:
        cls: The TorchGeo datamodule: a name of ``torchgeo.datamodules``
            (``"EuroSATDataModule"``), a full class path, or the class.
        batch_size: Samples per batch; ``None`` keeps the datamodule's default.
        num_workers: DataLoader worker processes.
        transforms: Per-sample transforms given to the TorchGeo dataset: a callable that takes
            and returns the sample dict, a ``{class_path, init_args}`` dict, or a list of them
            (applied in order). Albumentations transforms are refused (they take numpy
            keywords, not TorchGeo's tensor dicts).
        **kwargs: Arguments of the TorchGeo datamodule and its dataset (``root``, ``bands``,
            ``download``...).

    Raises:
        MissingDependencyError: TorchGeo is not installed.
        ValueError: ``cls`` names no datamodule (with close names), or a transform is unusable.
    """

    def __init__(
        self,
        cls: str | type,
        batch_size: int | None = None,
        num_workers: int = 0,
        transforms: Any = None,
        **kwargs: Any,
    ):
        super().__init__()
        datamodule_class = _datamodule_class(cls)
        if batch_size is not None:
            kwargs["batch_size"] = batch_size
        if transforms is not None:
            kwargs["transforms"] = _sample_transform(transforms)
        #: The TorchGeo datamodule.
        self.wrapped: pl.LightningDataModule = datamodule_class(num_workers=num_workers, **kwargs)
        self.batch_size = getattr(self.wrapped, "batch_size", batch_size)
        self.num_workers = num_workers
        #: Statistics moved from TorchGeo's ``Normalize`` to the task (``None`` until ``setup``,
        #: or when TorchGeo keeps normalising).
        self.means: list[float] | None = None
        self.stds: list[float] | None = None
        self._band_names: list[str] | None = None
        self._normalisation_checked = False

    def __getattr__(self, name: str) -> Any:
        # Only called for names this object lacks: those of the wrapped datamodule.
        if name.startswith("__") or name in ("wrapped", "_normalisation_checked"):
            raise AttributeError(name)
        try:
            wrapped = self.__dict__["wrapped"]
        except KeyError:
            raise AttributeError(name) from None
        return getattr(wrapped, name)

    # ------------------------------------------------------------------ delegation
    def prepare_data(self) -> None:
        """The TorchGeo datamodule's (downloads when ``download=True``)."""
        self.wrapped.prepare_data()

    def setup(self, stage: str) -> None:
        """Set up the TorchGeo datamodule, then move its normalisation to the task (once)."""
        self.wrapped.trainer = self.trainer
        self.wrapped.setup(stage)
        if not self._normalisation_checked:
            self._normalisation_checked = True
            self._move_normalisation()

    def train_dataloader(self) -> Any:
        return self.wrapped.train_dataloader()

    def val_dataloader(self) -> Any:
        return self.wrapped.val_dataloader()

    def test_dataloader(self) -> Any:
        return self.wrapped.test_dataloader()

    def predict_dataloader(self) -> Any:
        return self.wrapped.predict_dataloader()

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """The TorchGeo datamodule's."""
        return self.wrapped.on_before_batch_transfer(batch, dataloader_idx)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """The TorchGeo datamodule's (a ``GeoDataModule`` drops ``crs`` and ``bounds`` there)."""
        return self.wrapped.transfer_batch_to_device(batch, device, dataloader_idx)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """TorchGeo's batch augmentation, geofm's batch format, then the task's own hook.

        Lightning runs only the datamodule's hook when both define one, so the task's is
        chained here (as :class:`~geofm.data.datamodules.base.GeoTiffDataModule` does).
        """
        self.wrapped.trainer = self.trainer
        batch = self.wrapped.on_after_batch_transfer(batch, dataloader_idx)
        if isinstance(batch, dict):
            batch = to_geofm_batch(batch)
        module = self.trainer.lightning_module if self.trainer is not None else None
        if is_overridden("on_after_batch_transfer", module, parent=pl.LightningModule):
            batch = module.on_after_batch_transfer(batch, dataloader_idx)
        return batch

    # ------------------------------------------------------------------ normalisation
    def preprocess_settings(self) -> dict[str, Any]:
        """What the task's :class:`~geofm.models.preprocess.Preprocess` takes: the means/stds
        moved from TorchGeo (raw units, ``constant_scale`` 1) and the band names when the
        dataset names them."""
        return {
            "mean": self.means,
            "std": self.stds,
            "constant_scale": 1.0,
            "no_data_replace": None,
            "bands": self._band_names,
            "band_indexes": None,
        }

    def _normalize_modules(self) -> list[nn.Module]:
        import kornia.augmentation as K

        found: list[nn.Module] = []
        for attribute in _AUG_ATTRIBUTES:
            aug = getattr(self.wrapped, attribute, None)
            if isinstance(aug, nn.Module):
                found += [m for m in aug.modules() if isinstance(m, K.Normalize) and m not in found]
        return found

    def _sample_band_count(self) -> int | None:
        """Channels of the first sample of a set-up dataset, when one can be read.

        A non-geo dataset is indexed by 0; a geo dataset by the first query of its split's
        sampler (TorchGeo's ``<split>_batch_sampler`` / ``<split>_sampler``).
        """
        for split in ("train", "val", "test", "predict", None):
            prefix = f"{split}_" if split else ""
            dataset = getattr(self.wrapped, f"{prefix}dataset", None)
            if dataset is None:
                continue
            queries: list[Any] = [0]
            for name in (f"{prefix}batch_sampler", f"{prefix}sampler"):
                sampler = getattr(self.wrapped, name, None)
                if sampler is not None:
                    query = next(iter(sampler), None)
                    queries.append(query[0] if isinstance(query, list) and query else query)
            for query in queries:
                try:
                    image = dataset[query]["image"]
                except Exception:  # noqa: BLE001  (a geo dataset takes no 0, an empty one has none)
                    continue
                if isinstance(image, torch.Tensor) and image.ndim == 3:
                    return int(image.shape[0])
        return None

    def _dataset_band_names(self, count: int) -> list[str] | None:
        for attribute in _DATASET_ATTRIBUTES:
            bands = getattr(getattr(self.wrapped, attribute, None), "bands", None)
            if isinstance(bands, Sequence) and not isinstance(bands, str):
                if len(bands) == count and all(isinstance(b, str) for b in bands):
                    return list(bands)
        return None

    def _move_normalisation(self) -> None:
        owner = type(self.wrapped).__name__
        modules = self._normalize_modules()
        if not modules:
            log.info("%s normalises no batch; the task's own statistics apply.", owner)
            return
        stats = [(_flat(m.flags["mean"]), _flat(m.flags["std"])) for m in modules]
        mean, std = stats[0]
        if any(not (torch.equal(m, mean) and torch.equal(s, std)) for m, s in stats[1:]):
            log.warning(
                "%s normalises its splits with different statistics; TorchGeo keeps normalising "
                "and the task gets no means/stds.",
                owner,
            )
            return
        count = max(mean.numel(), std.numel())
        if count == 1:
            count = self._sample_band_count() or 0
            if not count:
                log.warning(
                    "%s normalises every band with one value and its band count cannot be read "
                    "from a sample; TorchGeo keeps normalising and the task gets no means/stds.",
                    owner,
                )
                return
            mean, std = mean.expand(count), std.expand(count)
        for module in modules:
            module.flags["mean"] = torch.zeros_like(_flat(module.flags["mean"]))
            module.flags["std"] = torch.ones_like(_flat(module.flags["std"]))
        self.means, self.stds = mean.tolist(), std.tolist()
        self._band_names = self._dataset_band_names(count)
        log.info(
            "%s's normalisation (%d bands) moved to the task's preprocessing.", owner, count
        )


class TorchNonGeoDataModule(TorchGeoDataModule):
    """TerraTorch's name for a non-geo TorchGeo datamodule; the same as
    :class:`TorchGeoDataModule`, which takes both kinds."""
