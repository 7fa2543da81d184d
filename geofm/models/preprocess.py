"""``Preprocess``: raw pixel values to model inputs, one module for every route.

Training, validation, test, per-chip prediction, in-memory tiling, streamed scenes and
exports all pass raw values (the selected bands, as read from the file, float32, nodata as
NaN) through the same :class:`Preprocess`, which the task owns and saves in its state dict:

1. multiply by ``constant_scale``;
2. replace every non-finite value (nodata read as NaN, and ±inf) by ``no_data_replace``, or
   by the band's mean when none is given (0 after normalisation), so no NaN reaches a model;
3. normalise ``(x - mean) / std`` per band, when statistics are set.

The band names and file band numbers it was trained on travel with it (``bands``,
``band_indexes``), so that predictions can check that the input bands are the same.

Multimodal models (a backbone that declares ``modalities``, such as TerraMind) take ``image``
as a dict ``{modality: (B, C, H, W)}``; :class:`MultiModalPreprocess` holds one
:class:`Preprocess` per modality (state-dict keys ``preprocess.<modality>.mean``...), each
with its own statistics, scale and bands.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["MultiModalPreprocess", "Preprocess", "modality_key"]

log = logging.getLogger(__name__)


class Preprocess(nn.Module):
    """Constant scale, nodata fill and per-band normalisation of raw images.

    Args:
        mean: Per-band means (in scaled units), or ``None`` for no normalisation.
        std: Per-band standard deviations, given with ``mean``.
        constant_scale: Factor applied to raw values first.
        no_data_replace: Value for non-finite pixels (after scaling); ``None`` uses the band
            mean (or 0 without statistics).
        bands: Names of the model's input bands, in order (checked at predict time).
        band_indexes: 1-based band numbers read from the files, in model order.

    Shapes: ``(B, C, H, W)`` or ``(B, C, T, H, W)`` in and out.
    """

    def __init__(
        self,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        constant_scale: float = 1.0,
        no_data_replace: float | None = None,
        bands: Sequence[str] | None = None,
        band_indexes: Sequence[int] | None = None,
    ):
        super().__init__()
        self.register_buffer("mean", torch.empty(0))
        self.register_buffer("std", torch.empty(0))
        self.constant_scale = 1.0
        self.no_data_replace: float | None = None
        self.bands: list[str] | None = None
        self.band_indexes: list[int] | None = None
        #: Where the statistics came from, for messages ("the datamodule's means/stds"...).
        self.source = "no statistics"
        self.configure(
            mean=mean,
            std=std,
            constant_scale=constant_scale,
            no_data_replace=no_data_replace,
            bands=bands,
            band_indexes=band_indexes,
        )

    # ------------------------------------------------------------------ settings
    @property
    def has_statistics(self) -> bool:
        """Whether means and stds are set."""
        return self.mean.numel() > 0

    @property
    def num_bands(self) -> int | None:
        """Bands the settings fix (statistics, names or band numbers), when any does."""
        for values in (self.mean if self.has_statistics else None, self.bands, self.band_indexes):
            if values is not None:
                return len(values)
        return None

    def configure(
        self,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        constant_scale: float | None = None,
        no_data_replace: float | None = None,
        bands: Sequence[str] | None = None,
        band_indexes: Sequence[int] | None = None,
        source: str = "means/stds",
    ) -> None:
        """Set statistics and reading settings; arguments left ``None`` keep their value.

        Raises:
            ValueError: only one of mean/std given, lengths differ, or a std is not positive.
        """
        if (mean is None) != (std is None):
            raise ValueError(f"{source}: give both means and stds (got means={mean}, stds={std}).")
        if mean is not None and std is not None:
            mean_t = torch.as_tensor(list(mean), dtype=torch.float32).flatten()
            std_t = torch.as_tensor(list(std), dtype=torch.float32).flatten()
            if mean_t.numel() != std_t.numel():
                raise ValueError(f"{source}: {mean_t.numel()} means but {std_t.numel()} stds.")
            if not bool((std_t > 0).all()) or not bool(torch.isfinite(mean_t).all()):
                raise ValueError(
                    f"{source}: stds must be positive and means finite, got means "
                    f"{mean_t.tolist()}, stds {std_t.tolist()}."
                )
            device = self.mean.device
            self.mean, self.std = mean_t.to(device), std_t.to(device)
            self.source = source
        if constant_scale is not None:
            self.constant_scale = float(constant_scale)
        if no_data_replace is not None:
            self.no_data_replace = float(no_data_replace)
        if bands is not None:
            self.bands = [str(b) for b in bands]
        if band_indexes is not None:
            self.band_indexes = [int(i) for i in band_indexes]
        self._check_lengths()

    def _check_lengths(self) -> None:
        lengths = {
            "means/stds": self.mean.numel() if self.has_statistics else None,
            "bands": len(self.bands) if self.bands is not None else None,
            "band_indexes": len(self.band_indexes) if self.band_indexes is not None else None,
        }
        given = {k: v for k, v in lengths.items() if v is not None}
        if len(set(given.values())) > 1:
            raise ValueError(
                "Preprocessing settings disagree on the number of bands: "
                + ", ".join(f"{k} has {v}" for k, v in given.items())
                + "."
            )

    def extra_repr(self) -> str:
        stats = f"{self.mean.numel()} bands from {self.source}" if self.has_statistics else "none"
        return (
            f"statistics={stats}, constant_scale={self.constant_scale}, "
            f"no_data_replace={self.no_data_replace}, bands={self.bands}"
        )

    # ------------------------------------------------------------------ state
    def get_extra_state(self) -> dict[str, Any]:
        # Plain types only, so checkpoints load with torch.load(weights_only=True).
        return {
            "constant_scale": self.constant_scale,
            "no_data_replace": self.no_data_replace,
            "bands": self.bands,
            "band_indexes": self.band_indexes,
            "source": self.source,
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.constant_scale = float(state.get("constant_scale", 1.0))
        self.no_data_replace = state.get("no_data_replace")
        self.bands = state.get("bands")
        self.band_indexes = state.get("band_indexes")
        self.source = state.get("source", "the checkpoint")

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # The statistics' length is only known from the checkpoint: take its shape.
        for name in ("mean", "std"):
            saved = state_dict.get(prefix + name)
            if saved is not None and saved.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(saved, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ forward
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Model input from raw values.

        Args:
            image: ``(B, C, H, W)`` or ``(B, C, T, H, W)`` raw values of the model's bands
                (any real dtype; nodata as NaN).

        Returns:
            float32 of the same shape, every value finite.
        """
        x = image.float()
        channels = x.shape[1]
        if self.has_statistics and self.mean.numel() != channels:
            raise ValueError(
                f"{self.source} has {self.mean.numel()} values per band list but the input has "
                f"{channels} bands (shape {tuple(image.shape)})."
            )
        if self.constant_scale != 1.0:
            x = x * self.constant_scale
        shape = (1, channels) + (1,) * (x.ndim - 2)
        if self.no_data_replace is not None:
            fill = torch.full(shape, self.no_data_replace, dtype=x.dtype, device=x.device)
        elif self.has_statistics:
            fill = self.mean.view(shape).to(x.dtype)
        else:
            fill = torch.zeros(shape, dtype=x.dtype, device=x.device)
        x = torch.where(torch.isfinite(x), x, fill)
        if self.has_statistics:
            x = (x - self.mean.view(shape)) / self.std.view(shape)
        return x


def modality_key(name: str) -> str:
    """A modality name reduced for comparison: TerraMind's user names and internal keys alike.

    Case is ignored, TerraMind's ``untok_`` prefix and ``@<size>`` suffix are dropped, and
    ``sen2``/``sen1`` read as ``s2``/``s1``: ``S2L2A``, ``s2l2a`` and ``untok_sen2l2a@224``
    all give ``s2l2a``.
    """
    key = name.lower().removeprefix("untok_").split("@", 1)[0]
    return key.replace("sen2", "s2").replace("sen1", "s1")


class MultiModalPreprocess(nn.ModuleDict):
    """One :class:`Preprocess` per modality, for models that take ``{modality: image}`` dicts.

    The modalities are those the model declares, in its order; its first modality also takes
    a bare tensor (as TerraMind does), so single-modality datamodules keep working. Data keys
    are matched to the model's names with :func:`modality_key` (``s2l2a`` finds ``S2L2A``).

    Args:
        modalities: The model's modality names, in order.

    Shapes: ``{modality: (B, C_m, H, W)}`` (or ``(B, C_m, T, H, W)``) in and out, keys kept;
    a tensor in, a tensor out.
    """

    def __init__(self, modalities: Iterable[str]):
        names = [str(m) for m in modalities]
        if not names:
            raise ValueError("MultiModalPreprocess needs at least one modality name.")
        super().__init__({name: Preprocess() for name in names})

    @property
    def first(self) -> str:
        """The model's first modality: the one a bare tensor image is taken as."""
        return next(iter(self.keys()))

    def resolve(self, name: str) -> str | None:
        """The model's name for data key ``name``, or ``None`` when the model has no such modality."""
        if name in self:
            return name
        wanted = modality_key(name)
        return next((m for m in self.keys() if modality_key(m) == wanted), None)

    def modality(self, name: str) -> Preprocess:
        """The :class:`Preprocess` of modality ``name``.

        Raises:
            ValueError: the model has no such modality (the message lists those it has).
        """
        resolved = self.resolve(name)
        if resolved is None:
            raise ValueError(
                f"The batch has modality '{name}' but the model takes {list(self.keys())}. "
                "Rename the datamodule's modality (data.init_args.modalities and the keys of "
                "its *_data_root) or build the backbone with that modality."
            )
        return self[resolved]  # type: ignore[return-value]

    def forward(self, image: torch.Tensor | Mapping[str, torch.Tensor]) -> Any:
        """Model inputs from raw values, modality by modality.

        Args:
            image: ``{modality: (B, C_m, H, W)}`` raw values, or a tensor taken as the first
                modality.

        Returns:
            The same structure, float32, every value finite.
        """
        if isinstance(image, torch.Tensor):
            return self[self.first](image)
        return {name: self.modality(name)(value) for name, value in image.items()}
