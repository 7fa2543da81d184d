"""Several GeoTIFF folders, one per modality, read as one sample: ``image`` is a dict.

Each modality has its folder and glob pattern; files of different modalities form one sample
when their patterns' wildcards matched the same text (their *common name*, as images and
labels pair in :mod:`geofm.data.files`): ``a_1_S2L2A.tif`` (``"*_S2L2A.tif"``) and
``a_1_S1GRD.tif`` (``"*_S1GRD.tif"``) are sample ``a_1``. Each modality is read as the
single-modality datasets read an image (:func:`geofm.data.raster.read_image`: raw float32
values of the selected bands, NaN at nodata); labels are read, checked and converted as theirs.

The first modality of a sample (in ``modalities`` order) is its *reference*: its file gives
``filename``, the grid (``crs``, ``transform``, ``height``, ``width``, the grid predictions
are written on), dates and location. Every other modality must lie on that grid.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from geofm.data.band_selection import BandSelection, BandSpec, select_bands
from geofm.data.coords import find_dates, location_coords, temporal_coords
from geofm.data.datasets.base import SampleDataset
from geofm.data.datasets.pixel_wise import (
    GenericNonGeoPixelwiseRegressionDataset,
    GenericNonGeoSegmentationDataset,
    _same_corners,
    _same_crs,
    check_label_grid,
)
from geofm.data.files import FoundFile, check_root, find_files, read_split_file, select_split
from geofm.data.raster import RasterError, read_grid, read_image, read_label

__all__ = [
    "GenericMultimodalDataset",
    "GenericMultimodalPixelwiseRegressionDataset",
    "GenericMultimodalSegmentationDataset",
    "per_modality",
]

log = logging.getLogger(__name__)

_MAX_LISTED = 5


def per_modality(
    value: Any, modalities: Sequence[str], arg: str, default: Any = None
) -> dict[str, Any]:
    """``value`` as ``{modality: value}``: a dict is checked, anything else applies to all.

    Args:
        value: A dict by modality, or one value for every modality.
        modalities: The modality names.
        arg: The setting's name, for messages.
        default: Value for modalities a dict leaves out.

    Raises:
        ValueError: the dict names a modality that is not in ``modalities``.
    """
    if not isinstance(value, Mapping):
        return {m: value if value is not None else default for m in modalities}
    unknown = [k for k in value if k not in modalities]
    if unknown:
        raise ValueError(
            f"{arg} has keys {unknown} that are not among modalities {list(modalities)}."
        )
    return {m: value.get(m, default) for m in modalities}


def _listing(items: Sequence[object]) -> str:
    shown = ", ".join(f"'{i}'" for i in items[:_MAX_LISTED])
    more = f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return shown + more


class GenericMultimodalDataset(SampleDataset):
    """Samples of several modalities from one folder (and pattern) per modality.

    A sample is a dict:

    - ``image``: ``{modality: (C_m, H, W)}`` (``(C_m, T, H, W)`` with
      ``expand_temporal_dimension``) float32 raw values, NaN at nodata, in ``modalities``
      order; with ``allow_missing_modalities`` the modalities the sample has files for;
    - ``nodata_mask``: ``(H, W)`` bool, True where any selected band of any modality is nodata;
    - ``mask``: ``(H, W)`` when the dataset has labels (dtype set by the subclass);
    - ``temporal_coords`` / ``location_coords``: from the reference modality (see the module
      docstring), as :class:`~geofm.data.datasets.base.GeoTiffDataset` gives them;
    - ``filename`` (the reference file), ``crs``, ``transform``, ``height``, ``width``.

    Args:
        modalities: Modality names, in order (the first is the reference).
        data_root: ``{modality: folder}``; every modality needs one.
        label_data_root: Folder of labels; ``None`` for no labels (``with_labels=False``) or
            the first modality's folder.
        image_grep: ``{modality: glob pattern}`` or one pattern for all (default ``"*"``).
        label_grep: Glob pattern of labels.
        split: A file listing sample names (common names), one a line.
        ignore_split_file_extensions: Compare split names without file extensions.
        dataset_bands: ``{modality: bands in file order}`` (see
            :mod:`geofm.data.band_selection`); modalities left out read every band.
        output_bands: ``{modality: bands to return}``.
        allow_missing_modalities: A sample may lack files of some modalities (it needs one);
            else a missing file is an error naming the sample's files and the modality.
        no_label_replace: Value for label nodata pixels; ``None`` keeps them.
        expand_temporal_dimension: Files stack ``T`` frames.
        date_pattern: How to read dates from the reference files' names (see
            :mod:`geofm.data.coords`).
        with_labels: Read labels.
        arg_prefix: Prefix of setting names in messages (``"train_"``).
        band_keys: Names of the band settings, for messages.
    """

    mask_dtype: ClassVar[torch.dtype] = torch.float32

    def __init__(
        self,
        modalities: Sequence[str],
        data_root: Mapping[str, str | Path],
        label_data_root: str | Path | None = None,
        *,
        image_grep: str | Mapping[str, str] | None = None,
        label_grep: str = "*",
        split: str | Path | None = None,
        ignore_split_file_extensions: bool = True,
        dataset_bands: Mapping[str, Sequence[BandSpec]] | None = None,
        output_bands: Mapping[str, Sequence[BandSpec]] | None = None,
        allow_missing_modalities: bool = False,
        no_label_replace: float | None = None,
        expand_temporal_dimension: bool = False,
        date_pattern: str | None = None,
        with_labels: bool = True,
        arg_prefix: str = "",
        band_keys: tuple[str, str] = ("dataset_bands", "output_bands"),
    ):
        super().__init__()
        self.modalities = [str(m) for m in modalities]
        if not self.modalities:
            raise ValueError("modalities is empty; name at least one modality.")
        root_arg = f"{arg_prefix}data_root"
        roots = per_modality(data_root, self.modalities, root_arg)
        greps = per_modality(image_grep, self.modalities, "image_grep", default="*")
        dataset_bands = per_modality(dataset_bands, self.modalities, band_keys[0])
        output_bands = per_modality(output_bands, self.modalities, band_keys[1])
        self.expand_temporal_dimension = expand_temporal_dimension
        self.allow_missing_modalities = allow_missing_modalities
        self.no_label_replace = no_label_replace
        self.bands_keys = {m: f"{band_keys[1]}['{m}']" for m in self.modalities}
        self.selections: dict[str, BandSelection] = {
            m: select_bands(
                dataset_bands[m],
                output_bands[m],
                dataset_key=f"{band_keys[0]}['{m}']",
                output_key=self.bands_keys[m],
            )
            for m in self.modalities
        }
        if expand_temporal_dimension:
            unknown = [m for m in self.modalities if self.selections[m].dataset_count is None]
            if unknown:
                raise ValueError(
                    f"expand_temporal_dimension=True needs {band_keys[0]} of modalities {unknown}: "
                    "the bands of one time step, in file order."
                )

        folders = {m: check_root(roots[m], f"{root_arg}['{m}']") for m in self.modalities}
        split_arg = f"{arg_prefix}split"
        split_names = read_split_file(split, split_arg) if split is not None else None
        label_root = None
        labels: list[FoundFile] = []
        if with_labels:
            label_arg = f"{arg_prefix}label_data_root"
            label_root = (
                folders[self.modalities[0]]
                if label_data_root is None
                else check_root(label_data_root, label_arg)
            )
            labels = find_files(label_root, label_grep)
        label_paths = [f.path for f in labels]

        # key (what the wildcards matched) -> {modality: file}
        found: dict[str, dict[tuple[str, ...], FoundFile]] = {}
        self._search: dict[str, str] = {}
        for m in self.modalities:
            self._search[m] = f"{root_arg}['{m}']='{roots[m]}', image_grep='{greps[m]}'"
            same_folder = label_root is not None and label_root.resolve() == folders[m].resolve()
            files = find_files(folders[m], greps[m], exclude=label_paths if same_folder else ())
            if split_names is not None:
                files = select_split(
                    files, split_names, ignore_extensions=ignore_split_file_extensions, strict=False
                )
            found[m] = {f.key: f for f in files}
        keys = sorted({k for files in found.values() for k in files})
        if not keys:
            where = "; ".join(self._search.values())
            in_split = f" and {split_arg}='{split}'" if split else ""
            raise FileNotFoundError(f"No image found with {where}{in_split}.")
        self._check_complete(keys, found)

        # Samples in common-name order; each maps the modalities it has to their file.
        def name_of(key: tuple[str, ...]) -> str:
            return next(found[m][key].name for m in self.modalities if key in found[m])

        keys.sort(key=name_of)
        self.names = [name_of(k) for k in keys]
        self.sample_files: list[dict[str, Path]] = [
            {m: found[m][k].path for m in self.modalities if k in found[m]} for k in keys
        ]
        self.label_files: list[Path] | None = None
        if with_labels:
            if split_names is not None:
                labels = select_split(
                    labels, split_names, ignore_extensions=ignore_split_file_extensions, strict=False
                )
            self.label_files = self._pair_labels(keys, labels, label_root, label_grep, arg_prefix)
        # Dates come from the reference file of each sample.
        self.dates, self.date_pattern = find_dates(self.reference_files, date_pattern)
        log.debug("%d multimodal samples (%s)", len(self), ", ".join(self.modalities))

    # ------------------------------------------------------------------ files
    def _check_complete(
        self,
        keys: Sequence[tuple[str, ...]],
        found: Mapping[str, Mapping[tuple[str, ...], FoundFile]],
    ) -> None:
        """Raise for samples that lack a modality, unless ``allow_missing_modalities``."""
        if self.allow_missing_modalities:
            return
        for m in self.modalities:
            missing = [k for k in keys if k not in found[m]]
            if not missing:
                continue
            examples = [
                next(found[o][k].path for o in self.modalities if k in found[o]) for k in missing
            ]
            raise FileNotFoundError(
                f"Modality '{m}' has no file for {len(missing)} sample(s), e.g. for "
                f"{_listing(examples)}. Searched {self._search[m]}. Files of the modalities pair "
                "by the text the '*' of each pattern matches; set allow_missing_modalities: true "
                "to accept samples without some modalities."
            )

    def _pair_labels(
        self,
        keys: Sequence[tuple[str, ...]],
        labels: Sequence[FoundFile],
        label_root: Path | None,
        label_grep: str,
        arg_prefix: str,
    ) -> list[Path]:
        label_desc = f"{arg_prefix}label_data_root='{label_root}', label_grep='{label_grep}'"
        by_key = {f.key: f for f in labels}
        missing = [self.sample_files[i] for i, k in enumerate(keys) if k not in by_key]
        if missing:
            shown = [str(next(iter(files.values()))) for files in missing]
            raise FileNotFoundError(
                f"No label found for {len(missing)} sample(s): {_listing(shown)}. Labels: "
                f"{label_desc}. Labels pair with images by the text the '*' of each pattern "
                "matches."
            )
        known = set(keys)
        orphans = [f.path for f in labels if f.key not in known]
        if orphans:
            raise FileNotFoundError(
                f"No image found for {len(orphans)} label(s): {_listing(orphans)}. Images: "
                f"{'; '.join(self._search.values())}; labels: {label_desc}."
            )
        return [by_key[k].path for k in keys]

    @property
    def reference_files(self) -> list[Path]:
        """Each sample's reference file: its first modality (in ``modalities`` order)."""
        return [next(iter(files.values())) for files in self.sample_files]

    @property
    def image_files(self) -> list[Path]:
        """Refused: routes that read one file per sample (``--streaming``) cannot read these.

        Raises:
            NotImplementedError: always, naming what to use instead.
        """
        raise NotImplementedError(
            f"--streaming (and other routes that read one image file per scene) does not "
            f"support multimodal data ({', '.join(self.modalities)}): a sample is several "
            "files. Predict per chip with geofm predict without --streaming."
        )

    @property
    def band_names(self) -> dict[str, tuple[str, ...] | None]:
        """Output band names by modality (``band_<n>`` for unnamed ones), when known."""
        return {m: s.names for m, s in self.selections.items()}

    def __len__(self) -> int:
        return len(self.sample_files)

    # ------------------------------------------------------------------ reading
    def coordinates(
        self, index: int, grid: Mapping[str, Any] | None = None, frames: int = 1
    ) -> dict[str, np.ndarray]:
        """``temporal_coords`` ``(T, 2)`` and ``location_coords`` ``(2,)`` of sample ``index``,
        from its reference file."""
        path = self.reference_files[index]
        coords: dict[str, np.ndarray] = {}
        if self.dates is not None:
            coords["temporal_coords"] = temporal_coords(
                self.dates[index], frames, path, self.date_pattern
            )
        if grid is None:
            grid = read_grid(path).as_metadata()
        location = location_coords(grid["crs"], grid["transform"], grid["height"], grid["width"])
        if location is not None:
            coords["location_coords"] = location
        return coords

    def load_image(self, index: int) -> dict[str, Any]:
        """Every key of sample ``index`` but ``mask``."""
        images: dict[str, torch.Tensor] = {}
        nodata_any: np.ndarray | None = None
        reference: dict[str, Any] | None = None
        for m, path in self.sample_files[index].items():
            image, nodata, grid = read_image(
                path,
                self.selections[m],
                expand_temporal_dimension=self.expand_temporal_dimension,
                bands_key=self.bands_keys[m],
            )
            meta = {"filename": str(path), **grid.as_metadata()}
            if reference is None:
                reference = meta
            else:
                _check_same_grid(m, meta, reference)
            images[m] = torch.from_numpy(image)
            pixel_nodata = nodata.reshape(-1, *nodata.shape[-2:]).any(axis=0)
            nodata_any = pixel_nodata if nodata_any is None else nodata_any | pixel_nodata
        assert reference is not None and nodata_any is not None  # every sample has a file
        first = next(iter(images.values()))
        frames = first.shape[1] if first.ndim == 4 else 1
        sample: dict[str, Any] = {"image": images, "nodata_mask": torch.from_numpy(nodata_any)}
        coords = self.coordinates(index, reference, frames)
        sample.update({key: torch.from_numpy(value) for key, value in coords.items()})
        return {**sample, **reference}

    def convert_label(self, raw: np.ndarray, nodata: np.ndarray, path: Path) -> np.ndarray:
        """The ``mask`` array from a label band ``raw`` ``(H, W)`` and its nodata mask."""
        raise NotImplementedError

    def read_sample(self, index: int) -> dict[str, Any]:
        """Sample ``index`` as read, with its label (before the dataset's ``transform``)."""
        sample = self.load_image(index)
        if self.label_files is not None:
            path = self.label_files[index]
            raw, nodata, grid = read_label(path)
            check_label_grid(path, grid, sample)
            mask = self.convert_label(raw, nodata, path)
            sample["mask"] = torch.from_numpy(mask).to(self.mask_dtype)
        return sample


def _check_same_grid(modality: str, meta: Mapping[str, Any], reference: Mapping[str, Any]) -> None:
    """Raise when a modality's file is not on the reference file's pixel grid.

    One augmentation geometry and one output grid serve every modality, so they must be
    co-registered (same size; same CRS and corners when both are georeferenced).
    """
    size, ref_size = (meta["height"], meta["width"]), (reference["height"], reference["width"])
    problem = None
    if size != ref_size:
        problem = f"{size[0]} x {size[1]} pixels vs {ref_size[0]} x {ref_size[1]}"
    elif meta["crs"] is not None and reference["crs"] is not None:
        if not _same_crs(meta["crs"], reference["crs"]):
            problem = "another CRS"
        elif not _same_corners(meta["transform"], reference["transform"], *size):
            problem = f"transform {meta['transform']} vs {reference['transform']}"
    if problem:
        raise RasterError(
            f"'{meta['filename']}' (modality '{modality}') is not on the grid of "
            f"'{reference['filename']}' ({problem}). The modalities of a sample must be "
            "co-registered: resample them to one grid (e.g. with gdalwarp)."
        )


class GenericMultimodalSegmentationDataset(GenericMultimodalDataset):
    """Multimodal segmentation samples: ``mask`` ``(H, W)`` int64 class indices.

    Labels are converted and checked as by
    :class:`~geofm.data.datasets.pixel_wise.GenericNonGeoSegmentationDataset` (same method).

    Args:
        *args: See :class:`GenericMultimodalDataset`.
        num_classes: Number of classes; labels outside ``[0, num_classes)`` are errors naming
            the file.
        reduce_zero_label: Subtract 1 from every label.
        **kwargs: See :class:`GenericMultimodalDataset`.
    """

    mask_dtype = torch.int64
    # The single-modality conversion, reused as is (it reads only the attributes set below).
    convert_label = GenericNonGeoSegmentationDataset.convert_label
    _check_classes = GenericNonGeoSegmentationDataset._check_classes

    def __init__(
        self,
        *args: Any,
        num_classes: int | None = None,
        reduce_zero_label: bool = False,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.num_classes = num_classes
        self.reduce_zero_label = reduce_zero_label


class GenericMultimodalPixelwiseRegressionDataset(GenericMultimodalDataset):
    """Multimodal pixel-wise regression samples: ``mask`` ``(H, W)`` float32 targets (NaN, or
    ``no_label_replace``, at label nodata)."""

    mask_dtype = torch.float32
    convert_label = GenericNonGeoPixelwiseRegressionDataset.convert_label
