"""Folders of GeoTIFF images with per-pixel labels: segmentation and pixel-wise regression."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from geofm.data.band_selection import BandSpec
from geofm.data.datasets.base import GeoTiffDataset
from geofm.data.files import check_root, find_files, pair_files, read_split_file, select_split
from geofm.data.raster import GridInfo, RasterError, read_label

__all__ = [
    "GenericPixelWiseDataset",
    "GenericNonGeoSegmentationDataset",
    "GenericNonGeoPixelwiseRegressionDataset",
    "check_label_grid",
]

log = logging.getLogger(__name__)


class GenericPixelWiseDataset(GeoTiffDataset):
    """Images in ``data_root`` paired with label rasters in ``label_data_root``.

    Images are the files matching ``img_grep``, labels those matching ``label_grep``; an image
    and a label form a sample when their patterns' wildcards matched the same text (their
    *common name*: ``a_1`` for ``a_1_img.tif`` with ``"*_img.tif"`` and ``lbl_a_1.tif`` with
    ``"lbl_*.tif"``). Labels may sit in the image folder: files matching ``label_grep`` are then
    not taken as images. Only file names are listed at construction; files are opened when a
    sample is read.

    Besides the keys of :class:`GeoTiffDataset`, a sample has ``mask`` ``(H, W)`` (its dtype is
    set by the subclass). Label pixels equal to the label file's nodata value (or NaN) are set
    to ``no_label_replace`` when it is given.

    Args:
        data_root: Folder of images.
        label_data_root: Folder of labels; defaults to ``data_root``.
        img_grep: Glob pattern of images, relative to ``data_root``.
        label_grep: Glob pattern of labels, relative to ``label_data_root``.
        split: A file listing sample names, one a line; only those samples are used (see
            :func:`geofm.data.files.select_split`).
        ignore_split_file_extensions: Compare split names without file extensions.
        allow_substring_split_file: A split entry selects every sample whose name contains it
            (TerraTorch's rule); ``False`` matches names exactly (``a_1`` never selects
            ``a_10``).
        dataset_bands: The image files' bands in file order (see
            :mod:`geofm.data.band_selection`).
        output_bands: Bands to return, in order.
        no_label_replace: Value for label nodata pixels; ``None`` keeps them.
        expand_temporal_dimension: Image files stack ``T`` frames; images become
            ``(C, T, H, W)``.
        date_pattern: How to read acquisition dates (see :mod:`geofm.data.coords`).
        with_labels: Read labels; ``False`` for prediction folders of images only.
        arg_prefix: Prefix of setting names in messages (``"train_"`` gives
            ``train_data_root=...``).
        band_keys: Names of the band settings, for messages.
    """

    mask_dtype: ClassVar[torch.dtype] = torch.float32

    def __init__(
        self,
        data_root: str | Path,
        label_data_root: str | Path | None = None,
        *,
        img_grep: str = "*",
        label_grep: str = "*",
        split: str | Path | None = None,
        ignore_split_file_extensions: bool = True,
        allow_substring_split_file: bool = False,
        dataset_bands: Sequence[BandSpec] | None = None,
        output_bands: Sequence[BandSpec] | None = None,
        no_label_replace: float | None = None,
        expand_temporal_dimension: bool = False,
        date_pattern: str | None = None,
        with_labels: bool = True,
        arg_prefix: str = "",
        band_keys: tuple[str, str] = ("dataset_bands", "output_bands"),
    ):
        root = check_root(data_root, f"{arg_prefix}data_root")
        label_arg = f"{arg_prefix}label_data_root"
        label_root = root if label_data_root is None else check_root(label_data_root, label_arg)
        split_arg = f"{arg_prefix}split"
        split_names = read_split_file(split, split_arg) if split is not None else None

        labels = find_files(label_root, label_grep) if with_labels else []
        same_folder = label_root.resolve() == root.resolve()
        images = find_files(root, img_grep, exclude=[f.path for f in labels] if same_folder else ())
        img_desc = f"{arg_prefix}data_root='{data_root}', img_grep='{img_grep}'"
        if not images:
            hint = (
                " (every match is also a label: make img_grep and label_grep tell them apart)"
                if same_folder and labels
                else ""
            )
            raise FileNotFoundError(f"No image found with {img_desc}{hint}.")
        if split_names is not None:
            images = select_split(
                images,
                split_names,
                ignore_extensions=ignore_split_file_extensions,
                arg=split_arg,
                substring=allow_substring_split_file,
            )
            labels = select_split(
                labels,
                split_names,
                ignore_extensions=ignore_split_file_extensions,
                strict=False,
                substring=allow_substring_split_file,
            )

        super().__init__(
            [f.path for f in images],
            dataset_bands=dataset_bands,
            output_bands=output_bands,
            expand_temporal_dimension=expand_temporal_dimension,
            date_pattern=date_pattern,
            band_keys=band_keys,
        )
        self.names = [f.name for f in images]
        self.label_files: list[Path] | None = None
        if with_labels:
            label_desc = (
                f"{label_arg if label_data_root is not None else f'{arg_prefix}data_root'}="
                f"'{label_root}', label_grep='{label_grep}'"
            )
            pairs = pair_files(images, labels, img_desc=img_desc, label_desc=label_desc)
            self.label_files = [label.path for _, label in pairs]
        self.no_label_replace = no_label_replace
        log.debug("%d samples in %s", len(self), root)

    def convert_label(self, raw: np.ndarray, nodata: np.ndarray, path: Path) -> np.ndarray:
        """The ``mask`` array from a label band ``raw`` ``(H, W)`` and its nodata mask."""
        raise NotImplementedError

    def read_label_array(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw label ``(H, W)`` of sample ``index`` and its nodata mask."""
        raw, nodata, _ = self._read_label(index)
        return raw, nodata

    def _read_label(self, index: int) -> tuple[np.ndarray, np.ndarray, GridInfo]:
        if self.label_files is None:
            raise RuntimeError("This dataset was built with with_labels=False.")
        return read_label(self.label_files[index])

    def read_sample(self, index: int) -> dict[str, Any]:
        """Sample ``index`` as read, with its label (before the dataset's ``transform``)."""
        sample = self.load_image(index)
        if self.label_files is not None:
            raw, nodata, grid = self._read_label(index)
            check_label_grid(self.label_files[index], grid, sample)
            mask = self.convert_label(raw, nodata, self.label_files[index])
            sample["mask"] = torch.from_numpy(mask).to(self.mask_dtype)
        return sample


# A label this far (in pixels) from its image's grid is on another grid; less is rounding.
_GRID_TOLERANCE = 1e-3
_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # rasterio's transform of a file without one


def check_label_grid(label: Path, grid: GridInfo, image: dict[str, Any]) -> None:
    """Raise when a label raster does not lie on its image's pixel grid.

    A label trained against an image on another size, CRS or transform pairs each pixel with
    the wrong class without a word. A label without CRS (common for label files) is taken as
    on the image's grid when its transform is absent or the image's; a different CRS is not.

    Args:
        label: The label file, for messages.
        grid: The label file's grid.
        image: The image sample (``filename``, ``crs``, ``transform``, ``height``, ``width``).

    Raises:
        RasterError: naming both files and both grids.
    """
    image_hw = (image["height"], image["width"])
    if (grid.height, grid.width) != image_hw:
        raise RasterError(
            f"Label '{label}' is {grid.height} x {grid.width} pixels but its image "
            f"'{image['filename']}' is {image_hw[0]} x {image_hw[1]}."
        )
    differs = []
    if grid.crs is not None and image["crs"] is not None and not _same_crs(grid.crs, image["crs"]):
        differs.append(f"CRS {_crs_name(grid.crs)} vs {_crs_name(image['crs'])}")
    label_t, image_t = tuple(grid.transform), tuple(image["transform"])
    georeferenced = label_t != _IDENTITY and image_t != _IDENTITY
    if georeferenced and not _same_corners(label_t, image_t, grid.height, grid.width):
        differs.append(f"transform {_affine(label_t)} vs {_affine(image_t)}")
    if differs:
        raise RasterError(
            f"Label '{label}' is not on the grid of its image '{image['filename']}' (label vs "
            f"image: {'; '.join(differs)}). Write the label on the image's grid (same CRS, "
            "origin and pixel size), e.g. with gdalwarp -te/-tr or rasterio.warp.reproject."
        )


def _same_corners(a: Sequence[float], b: Sequence[float], height: int, width: int) -> bool:
    """Whether transforms ``a`` and ``b`` put the four image corners within a thousandth of a
    pixel of each other (rounding in pixel sizes is allowed, a shift or another size is not)."""
    cols = np.array([0, width, 0, width], dtype=np.float64)
    rows = np.array([0, 0, height, height], dtype=np.float64)

    def corners(t: Sequence[float]) -> np.ndarray:
        return np.stack([t[0] * cols + t[1] * rows + t[2], t[3] * cols + t[4] * rows + t[5]])

    pixel = max(abs(v) for v in (*b[:2], *b[3:5])) or 1.0
    return bool(np.allclose(corners(a), corners(b), rtol=0, atol=_GRID_TOLERANCE * pixel))


@functools.lru_cache(maxsize=64)
def _same_crs(a: str, b: str) -> bool:
    """Whether two WKT strings name one CRS (GDAL's comparison, not the text)."""
    if a == b:
        return True
    from rasterio.crs import CRS

    return CRS.from_wkt(a) == CRS.from_wkt(b)


def _crs_name(wkt: str) -> str:
    from rasterio.crs import CRS

    crs = CRS.from_wkt(wkt)
    return crs.to_string() if crs.to_epsg() is not None else repr(wkt[:60] + "...")


def _affine(t: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in t) + ")"


class GenericNonGeoSegmentationDataset(GenericPixelWiseDataset):
    """Segmentation samples: ``mask`` ``(H, W)`` int64 class indices.

    Args:
        *args: See :class:`GenericPixelWiseDataset`.
        num_classes: Number of classes. When given, every label read is checked: a pixel
            (not nodata) outside ``[0, num_classes)`` that is not ``no_label_replace`` (nor
            ``-1`` with ``reduce_zero_label``) raises :class:`RasterError` naming the file.
        reduce_zero_label: Subtract 1 from every label (class 0 becomes -1, to be ignored with
            ``ignore_index=-1``) for label files whose classes start at 1. Nodata pixels are not
            shifted; they get ``no_label_replace``.
        **kwargs: See :class:`GenericPixelWiseDataset`.
    """

    mask_dtype = torch.int64

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

    def convert_label(self, raw: np.ndarray, nodata: np.ndarray, path: Path) -> np.ndarray:
        """Class indices ``(H, W)`` int64, nodata pixels set to ``no_label_replace``.

        Raises:
            RasterError: for float labels with fractional values, and (with ``num_classes``)
                for class values outside ``[0, num_classes)``; the message names ``path``.
        """
        has_nodata = bool(nodata.any())
        valid = ~nodata if has_nodata else slice(None)
        if np.issubdtype(raw.dtype, np.floating):
            values = np.unique(raw[valid])
            fractional = values[values != np.round(values)]
            if fractional.size:
                # Casting would truncate 0.99 to class 0 without a word.
                raise RasterError(
                    f"Label '{path}' holds non-integer values {_few(fractional)}; segmentation "
                    "labels are class indices. Write whole numbers (or tag the file's nodata "
                    "value)."
                )
        if has_nodata and self.no_label_replace is None and np.issubdtype(raw.dtype, np.floating):
            raise RasterError(
                f"Label '{path}' has nodata/NaN pixels, which have no class index; set "
                "no_label_replace (e.g. -1 with the task's ignore_index=-1)."
            )
        mask = np.where(nodata, 0, raw).astype(np.int64) if has_nodata else raw.astype(np.int64)
        if self.reduce_zero_label:
            mask = mask - 1
        if self.num_classes is not None:
            self._check_classes(mask[valid], path)
        if has_nodata:
            fill = raw.astype(np.int64) if self.no_label_replace is None else self.no_label_replace
            mask = np.where(nodata, fill, mask)
        return mask

    def _check_classes(self, classes: np.ndarray, path: Path) -> None:
        """Raise when ``classes`` (the label's valid pixels) leave ``[0, num_classes)``."""
        values = np.unique(classes)
        allowed = (values >= 0) & (values < self.num_classes)
        if self.no_label_replace is not None:
            allowed |= values == self.no_label_replace
        if self.reduce_zero_label:
            allowed |= values == -1  # class 0 shifted away on purpose
        bad = values[~allowed]
        if bad.size:
            shift = " after reduce_zero_label" if self.reduce_zero_label else ""
            raise RasterError(
                f"Label '{path}' has class values {_few(bad)}{shift} outside "
                f"[0, {self.num_classes}) for num_classes={self.num_classes}. Raise num_classes, "
                "tag the file's nodata value, or set no_label_replace to the value that marks "
                "ignored pixels (with the task's ignore_index set to the same)."
            )


def _few(values: np.ndarray, count: int = 5) -> str:
    """The first ``count`` sorted values of ``values`` for a message, with how many more."""
    shown = ", ".join(f"{v:g}" for v in np.sort(values)[:count].tolist())
    more = f" and {values.size - count} more" if values.size > count else ""
    return f"[{shown}]{more}"


class GenericNonGeoPixelwiseRegressionDataset(GenericPixelWiseDataset):
    """Pixel-wise regression samples: ``mask`` ``(H, W)`` float32 targets.

    Label nodata pixels become ``no_label_replace``, or NaN when it is not given (the regression
    task skips NaN targets).
    """

    mask_dtype = torch.float32

    def convert_label(self, raw: np.ndarray, nodata: np.ndarray, path: Path) -> np.ndarray:
        """Targets ``(H, W)`` float32, nodata pixels set to ``no_label_replace`` or NaN."""
        mask = raw.astype(np.float32)
        if nodata.any():
            fill = np.nan if self.no_label_replace is None else self.no_label_replace
            mask[nodata] = fill
        return mask
