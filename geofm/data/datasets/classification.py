"""Folders of GeoTIFF images, one folder per class (``root/<class_name>/*.tif``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from geofm.data.band_selection import BandSpec
from geofm.data.datasets.base import GeoTiffDataset
from geofm.data.files import FoundFile, check_root, find_files, read_split_file, select_split

__all__ = ["GenericNonGeoClassificationDataset", "find_classes"]

log = logging.getLogger(__name__)


def find_classes(root: str | Path) -> list[str]:
    """Class names of ``root``: its sub-folders (hidden ones skipped), sorted."""
    return sorted(p.name for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))


class GenericNonGeoClassificationDataset(GeoTiffDataset):
    """Images sorted into one folder per class, as torchvision's ``ImageFolder``.

    The class index of a sample is the position of its folder name in ``classes`` (sorted
    folder names of ``data_root`` unless given). Besides the keys of :class:`GeoTiffDataset`, a
    sample has ``label``: a 0-d int64 tensor.

    Args:
        data_root: Folder with one sub-folder per class.
        img_grep: Glob pattern of images inside each class folder.
        classes: Class names in index order; the folders of ``data_root`` must be among them
            (so that every split maps names to the same indices).
        split: A file listing sample names (common names or file names).
        ignore_split_file_extensions: Compare split names without file extensions.
        allow_substring_split_file: A split entry selects every image whose name contains it
            (TerraTorch's rule); ``False`` matches names exactly.
        with_labels: ``False`` for prediction folders: images directly in ``data_root`` and in
            its sub-folders are used, without labels.
        arg_prefix: Prefix of setting names in messages.
        **kwargs: Band and reading settings of :class:`GeoTiffDataset`.
    """

    def __init__(
        self,
        data_root: str | Path,
        *,
        img_grep: str = "*",
        classes: Sequence[str] | None = None,
        split: str | Path | None = None,
        ignore_split_file_extensions: bool = True,
        allow_substring_split_file: bool = False,
        with_labels: bool = True,
        arg_prefix: str = "",
        dataset_bands: Sequence[BandSpec] | None = None,
        output_bands: Sequence[BandSpec] | None = None,
        **kwargs: Any,
    ):
        root_arg = f"{arg_prefix}data_root"
        root = check_root(data_root, root_arg)
        found: list[tuple[FoundFile, int]] = []
        self.classes: list[str] = list(classes) if classes is not None else find_classes(root)
        if with_labels:
            folders = find_classes(root)
            unknown = [f for f in folders if f not in self.classes]
            if unknown:
                raise ValueError(
                    f"{root_arg}='{data_root}' has class folder(s) {unknown} that are not among "
                    f"the classes {self.classes} (taken from the training folder)."
                )
            if not folders:
                raise FileNotFoundError(
                    f"{root_arg}='{data_root}' has no class folders; classification data is laid "
                    "out as <root>/<class_name>/<image>."
                )
            for folder in folders:
                index = self.classes.index(folder)
                found += [(f, index) for f in find_files(root / folder, img_grep)]
        else:
            files = find_files(root, img_grep) + find_files(root, f"*/{img_grep}")
            found = [(f, -1) for f in files]
        if not found:
            raise FileNotFoundError(
                f"No image found with {root_arg}='{data_root}', img_grep='{img_grep}'."
            )
        if split is not None:
            split_arg = f"{arg_prefix}split"
            keep = select_split(
                [f for f, _ in found],
                read_split_file(split, split_arg),
                ignore_extensions=ignore_split_file_extensions,
                arg=split_arg,
                substring=allow_substring_split_file,
            )
            kept = {f.path for f in keep}
            found = [(f, i) for f, i in found if f.path in kept]
        super().__init__(
            [f.path for f, _ in found],
            dataset_bands=dataset_bands,
            output_bands=output_bands,
            **kwargs,
        )
        self.names = [f.name for f, _ in found]
        self.targets: list[int] | None = [i for _, i in found] if with_labels else None

    def read_sample(self, index: int) -> dict[str, Any]:
        """Sample ``index`` as read, with its label (before the dataset's ``transform``)."""
        sample = self.load_image(index)
        if self.targets is not None:
            sample["label"] = torch.tensor(self.targets[index], dtype=torch.int64)
        return sample
