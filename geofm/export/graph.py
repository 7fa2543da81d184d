"""The module that is exported: raw GeoTIFF pixels in, logits out.

:class:`ExportGraph` wraps a task's :class:`~geofm.models.preprocess.Preprocess` and model
behind the one input of an exported file:

1. ``image`` ``(B, C_file, H, W)`` (``(B, C_file, T, H, W)`` for multi-temporal models): the
   raw values of every band of the GeoTIFF, in file order, as float32;
2. pixels equal to the file's nodata value become NaN (NaN and ±inf already are nodata), as
   geofm's readers do;
3. the model's bands are gathered (``output_bands``), then the task's ``Preprocess`` runs
   (``constant_scale``, nodata fill, normalisation), then the model;
4. ``logits`` ``(B, K, H, W)`` for pixel-wise tasks (regression: ``(B, 1, H, W)``), ``(B, K)``
   for classification, before any activation.

:class:`InputBands` resolves the file's bands and the model's selection with the datamodule's
rules (:mod:`geofm.data.band_selection`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from geofm.data.band_selection import BandSpec, expand_band_list, select_bands
from geofm.inference.predictor import model_output

__all__ = ["ExportGraph", "InputBands", "resolve_input_bands"]


@dataclass(frozen=True)
class InputBands:
    """The bands of an exported model's input and those the model sees.

    Attributes:
        file_bands: Names of every band of the input file, in file order (``band_<n>`` for
            unnamed bands).
        model_bands: Names of the model's bands, in the model's order.
        indexes: 0-based positions in ``file_bands`` of the model's bands, or ``None`` when the
            model takes every band in file order.
    """

    file_bands: tuple[str, ...]
    model_bands: tuple[str, ...]
    indexes: tuple[int, ...] | None


def resolve_input_bands(
    num_model_bands: int,
    dataset_bands: Sequence[BandSpec] | None = None,
    output_bands: Sequence[BandSpec] | None = None,
    trained_indexes: Sequence[int] | None = None,
    trained_names: Sequence[str] | None = None,
) -> InputBands:
    """The file's bands and the model's selection among them.

    Args:
        num_model_bands: Bands the model takes.
        dataset_bands: The file's bands, as the datamodule's ``dataset_bands``; ``None`` when
            the file holds exactly the model's bands.
        output_bands: The model's bands among them, as the datamodule's ``output_bands``;
            ``None`` uses ``trained_indexes`` (the checkpoint's 1-based band numbers), else
            every band of ``dataset_bands``.
        trained_indexes: 1-based file band numbers the task was trained on (its
            ``Preprocess.band_indexes``).
        trained_names: Band names the task was trained on (its ``Preprocess.bands``).

    Raises:
        ValueError: the selection does not give ``num_model_bands`` bands, or the file's bands
            are unknown while the model takes a subset of them.
    """
    if dataset_bands is None:
        identity = list(range(1, num_model_bands + 1))
        if output_bands is not None and expand_band_list(output_bands, "output_bands") != identity:
            raise ValueError(
                f"The model takes bands {list(output_bands)} of its files, but the files' bands are "
                "unknown: set data.init_args.dataset_bands in the config (or pass dataset_bands) "
                "so that the exported graph can select them."
            )
        if trained_indexes is not None and list(trained_indexes) != identity:
            raise ValueError(
                f"The model was trained on band numbers {list(trained_indexes)} of its files, but "
                "the files' bands are unknown: set data.init_args.dataset_bands in the config (or "
                "pass dataset_bands) so that the exported graph can select them."
            )
        names = tuple(trained_names) if trained_names else ()
        if len(names) != num_model_bands:
            names = tuple(f"band_{i}" for i in identity)
        return InputBands(names, names, None)
    every = select_bands(dataset_bands, None)
    assert every.names is not None
    if output_bands is not None:
        numbers = select_bands(dataset_bands, output_bands).indexes
    elif trained_indexes is not None:  # 1-based band numbers (never identifiers)
        numbers = tuple(int(i) for i in trained_indexes)
        beyond = [n for n in numbers if not 1 <= n <= len(every.names)]
        if beyond:
            raise ValueError(
                f"The model was trained on band numbers {list(numbers)}, but dataset_bands "
                f"describes {len(every.names)} bands."
            )
    else:
        numbers = tuple(range(1, len(every.names) + 1))
    assert numbers is not None
    if len(numbers) != num_model_bands:
        raise ValueError(
            f"The selection takes {len(numbers)} of the {len(every.names)} bands in dataset_bands, "
            f"but the model takes {num_model_bands}: set output_bands to the model's bands."
        )
    indexes = tuple(n - 1 for n in numbers)
    model_bands = tuple(every.names[i] for i in indexes)
    if indexes == tuple(range(len(every.names))):
        indexes = None
    return InputBands(tuple(every.names), model_bands, indexes)


class ExportGraph(nn.Module):
    """Raw file pixels to logits: nodata, band selection, the task's preprocessing, the model.

    Args:
        preprocess: The task's ``Preprocess`` (or a one-modality ``MultiModalPreprocess``).
        model: The task's model.
        indexes: 0-based file positions of the model's bands (within a time step), or ``None``
            for all of them.
        nodata: The file's nodata value (pixels equal to it are nodata), or ``None``.
        frames: Time steps per file (multi-temporal models): the file holds ``frames`` groups
            of ``channels`` bands, time-major, and the model takes ``(B, C, T, H, W)``.
        channels: Bands per time step in the file (needed when ``frames > 1``).

    Shapes: ``(B, C_file, H, W)`` float32 in (``C_file = frames * channels``); ``(B, K, H, W)``
    or ``(B, K)`` out.
    """

    def __init__(
        self,
        preprocess: nn.Module,
        model: nn.Module,
        indexes: Sequence[int] | None = None,
        nodata: float | None = None,
        frames: int = 1,
        channels: int | None = None,
    ):
        super().__init__()
        if frames > 1 and channels is None:
            raise ValueError("ExportGraph needs channels (bands per time step) when frames > 1.")
        self.preprocess = preprocess
        self.model = model
        self.nodata = None if nodata is None else float(nodata)
        self.frames = int(frames)
        self.channels = channels
        self.register_buffer(
            "indexes",
            None if indexes is None else torch.tensor([int(i) for i in indexes], dtype=torch.long),
            persistent=False,
        )

    def select(self, image: torch.Tensor) -> torch.Tensor:
        """The model's input from raw file values: nodata pixels as NaN (what geofm's readers
        give), the model's bands, ``(B, C, T, H, W)`` for multi-temporal models."""
        x = image.float()
        if self.nodata is not None and not math.isnan(self.nodata):  # NaN is nodata already
            nodata = torch.tensor(self.nodata, dtype=torch.float32)
            x = torch.where(x == nodata, torch.tensor(float("nan"), dtype=torch.float32), x)
        if self.frames > 1:
            # The file's T groups of C bands, time-major: (B, T, C, H, W) -> (B, C, T, H, W).
            x = x.unflatten(1, (self.frames, self.channels)).transpose(1, 2)
        if self.indexes is not None:
            x = torch.index_select(x, 1, self.indexes)
        return x

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``logits`` for raw ``image`` (see the class docstring)."""
        return model_output(self.model(self.preprocess(self.select(image))))
