"""What the named benchmark datamodules share: a published folder layout over the generic reader.

A benchmark datamodule (``Sen1Floods11NonGeoDataModule``, ``FireScarsNonGeoDataModule``...) is
a :class:`~geofm.data.datamodules.segmentation.GenericNonGeoSegmentationDataModule` whose
folders, file patterns, split files, band names and statistics come from the dataset's
published layout: the user gives ``data_root`` and TerraTorch's arguments (``bands``,
``constant_scale``, ``no_data_replace``...), nothing else. Before a stage is set up, every path
it needs is checked, and a missing one raises :class:`LayoutError` naming it and the layout
expected under ``data_root``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from geofm.data.albumentations_compat import build_transforms
from geofm.data.band_selection import BandSpec, select_bands
from geofm.data.datamodules.base import STAGE_SPLITS
from geofm.data.datamodules.segmentation import GenericNonGeoSegmentationDataModule
from geofm.errors import ConfigError, GeofmError

__all__ = [
    "BenchmarkSegmentationDataModule",
    "LayoutError",
    "SplitFiles",
    "band_statistics",
    "fill_defaults",
]

log = logging.getLogger(__name__)

# Settings of the generic datamodule that a layout fixes; giving one is an error.
_FIXED = (
    "train_data_root",
    "val_data_root",
    "test_data_root",
    "predict_data_root",
    "train_label_data_root",
    "val_label_data_root",
    "test_label_data_root",
    "img_grep",
    "label_grep",
    "train_split",
    "val_split",
    "test_split",
    "dataset_bands",
    "output_bands",
)


class LayoutError(GeofmError, FileNotFoundError):
    """A ``data_root`` that lacks a path of the dataset's layout (the message names it)."""


@dataclass(frozen=True)
class SplitFiles:
    """Where one split's samples are.

    Attributes:
        images: Folder of the images.
        labels: Folder of the labels (may be ``images``).
        split: File listing the split's sample names, or ``None`` for every file.
    """

    images: Path
    labels: Path
    split: Path | None = None


def band_statistics(
    table: Mapping[str, float], names: Sequence[str], owner: str
) -> list[float]:
    """The values of ``table`` for band ``names`` (the selected bands, in order).

    Raises:
        ValueError: a band has no value in ``table``; the message says to give ``means`` and
            ``stds``.
    """
    missing = [n for n in names if n not in table]
    if missing:
        raise ValueError(
            f"{owner} has no default statistics for bands {missing}; give means and stds."
        )
    return [float(table[n]) for n in names]


def fill_defaults(kwargs: dict[str, Any], **defaults: Any) -> None:
    """Set each of ``defaults`` in ``kwargs`` unless given there as something other than ``None``.

    Configs pass every parameter a signature resolves, ``means: null`` included, so ``None``
    means "not given" for the settings a layout has defaults for.
    """
    for key, value in defaults.items():
        if kwargs.get(key) is None:
            kwargs[key] = value


class BenchmarkSegmentationDataModule(GenericNonGeoSegmentationDataModule):
    """A segmentation dataset's published layout read by the generic datamodule.

    Subclasses build the split paths and band settings from their TerraTorch arguments and pass
    them here; the arguments that the layout fixes (``train_data_root``, ``img_grep``,
    ``dataset_bands``...) are refused, naming the generic datamodule that takes them.

    Args:
        data_root: The dataset's folder.
        layout: Per split (``train``, ``val``, ``test``, ``predict``) where its files are.
        file_bands: The image files' band names, in file order (``dataset_bands``).
        model_bands: The bands the model receives, in order (``output_bands``).
        use_metadata: TerraTorch's switch for ``temporal_coords``/``location_coords``. geofm
            gives ``location_coords`` whenever the files have a CRS and ``temporal_coords``
            when the file names hold dates; ``True`` logs which of them this layout cannot give.
        predict_transform: TerraTorch's setting. Prediction batches are never augmented (their
            pixels stay on the file's grid), so only entries that do nothing here are taken
            (``ToTensorV2``, the temporal flatten/unflatten pair); any other is an error.
        **kwargs: Settings of
            :class:`~geofm.data.datamodules.segmentation.GenericNonGeoSegmentationDataModule`
            that the layout leaves open (``batch_size``, ``means``, ``constant_scale``,
            ``train_transform``, ``num_classes``...).
    """

    #: The dataset's layout under ``data_root``: (path pattern, what it holds), for messages.
    LAYOUT: ClassVar[tuple[tuple[str, str], ...]] = ()
    #: Glob patterns of the images and labels in their folders.
    IMG_GREP: ClassVar[str] = "*"
    LABEL_GREP: ClassVar[str] = "*"
    #: What ``use_metadata=True`` cannot give with this layout, for the log.
    METADATA_NOTE: ClassVar[str | None] = None

    def __init__(
        self,
        data_root: str | Path,
        layout: Mapping[str, SplitFiles],
        file_bands: Sequence[BandSpec],
        model_bands: Sequence[BandSpec],
        *,
        use_metadata: bool = False,
        predict_transform: Any = None,
        **kwargs: Any,
    ):
        owner = type(self).__name__
        fixed = sorted(set(kwargs) & set(_FIXED))
        if fixed:
            raise ValueError(
                f"{owner} reads the dataset's own layout, which fixes {fixed}. Give data_root "
                "(and bands), or use GenericNonGeoSegmentationDataModule to choose folders, "
                "patterns and split files yourself."
            )
        if use_metadata and self.METADATA_NOTE:
            log.warning("%s: use_metadata=True, but %s", owner, self.METADATA_NOTE)
        if any(build_transforms(predict_transform, "predict_transform")):
            raise ConfigError(
                f"{owner}: predict_transform: geofm never transforms prediction batches, so "
                "that predictions lie on the input file's grid. Remove predict_transform (or "
                "keep only ToTensorV2)."
            )
        super().__init__(
            train_data_root=layout["train"].images,
            val_data_root=layout["val"].images,
            test_data_root=layout["test"].images,
            predict_data_root=layout["predict"].images,
            train_label_data_root=layout["train"].labels,
            val_label_data_root=layout["val"].labels,
            test_label_data_root=layout["test"].labels,
            train_split=layout["train"].split,
            val_split=layout["val"].split,
            test_split=layout["test"].split,
            img_grep=self.IMG_GREP,
            label_grep=self.LABEL_GREP,
            dataset_bands=file_bands,
            output_bands=model_bands,
            **kwargs,
        )
        self.data_root = Path(data_root)
        self.layout = dict(layout)
        self.use_metadata = use_metadata
        # The generic datamodule predicts every image of its root; the layout names a split.
        self.splits["predict"] = layout["predict"].split

    @staticmethod
    def rgb_positions(names: Sequence[str]) -> list[int] | None:
        """Positions of ``RED``, ``GREEN``, ``BLUE`` among band ``names``, when all are there."""
        upper = [n.upper() for n in names]
        if all(c in upper for c in ("RED", "GREEN", "BLUE")):
            return [upper.index(c) for c in ("RED", "GREEN", "BLUE")]
        return None

    @staticmethod
    def selected_names(
        dataset_bands: Sequence[BandSpec], bands: Sequence[BandSpec], owner: str
    ) -> list[str]:
        """Names of the ``bands`` (names or 1-based numbers) among ``dataset_bands``.

        Raises:
            ValueError: a band is unknown (the message lists the dataset's band names).
        """
        try:
            selection = select_bands(dataset_bands, bands, output_key="bands")
        except ValueError as err:
            raise ValueError(f"{owner}: {err}") from err
        return list(selection.names or ())

    # ------------------------------------------------------------------ layout check
    def layout_text(self) -> str:
        """The expected layout under ``data_root``, on one line."""
        return "; ".join(f"{path} ({what})" for path, what in self.LAYOUT)

    def check_layout(self, split: str) -> None:
        """Raise :class:`LayoutError` when a path that ``split`` reads is missing.

        Raises:
            LayoutError: naming the missing path, what it should hold and the whole layout.
        """
        files = self.layout[split]
        needed: list[tuple[Path, str]] = [(self.data_root, "data_root")]
        needed.append((files.images, f"the {split} images"))
        if split != "predict":
            needed.append((files.labels, f"the {split} labels"))
        if files.split is not None:
            needed.append((files.split, f"the {split} split file"))
        for path, what in needed:
            if not path.exists():
                raise LayoutError(
                    f"{type(self).__name__}: {path} does not exist ({what}). data_root="
                    f"'{self.data_root}' should hold: {self.layout_text()}. For another layout "
                    "use GenericNonGeoSegmentationDataModule with your folders and patterns."
                )

    def setup(self, stage: str) -> None:
        """Check the layout paths of ``stage``, then build its datasets (see the generic one)."""
        for split in STAGE_SPLITS.get(stage, ()):
            self.check_layout(split)
        super().setup(stage)
