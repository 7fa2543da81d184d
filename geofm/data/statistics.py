"""Per-band means and standard deviations (and class counts) of a training split, and their file.

:func:`compute_statistics` streams over the samples: each image is reduced to per-band count,
mean and sum of squared deviations in float64, and these are merged pairwise (Chan et al.'s
parallel form of Welford's algorithm), so memory holds one sample at a time and large values
do not lose precision. Nodata pixels (the file's nodata value or NaN, per band) are left out.

The file written by :func:`write_statistics` (YAML or JSON, by extension) is what the
datamodules' ``means`` and ``stds`` settings accept::

    bands: [BLUE, GREEN, RED]
    means: [0.05, 0.07, 0.09]
    stds: [0.02, 0.03, 0.04]
    pixel_counts: [1048576, 1048576, 1048576]
    class_counts: {0: 700000, 1: 348576}
    num_samples: 16

They also accept TerraTorch's statistics files: a ``.txt`` of numbers, one per band (one a
line, or all on one line, separated by spaces; ``#`` starts a comment), read as
``numpy.genfromtxt`` reads them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geofm.data.datasets import GenericNonGeoSegmentationDataset

__all__ = [
    "DatasetStatistics",
    "compute_statistics",
    "write_statistics",
    "load_statistics",
    "load_band_values",
]

log = logging.getLogger(__name__)


@dataclass
class DatasetStatistics:
    """Statistics of a dataset's images (after band selection and ``constant_scale``).

    Attributes:
        means: Per-band mean over valid pixels (and frames for temporal images).
        stds: Per-band population standard deviation (``ddof=0``, like ``numpy.std``).
        pixel_counts: Valid pixels per band.
        bands: Band names, when known.
        class_counts: Segmentation: pixels per label value (nodata label pixels left out);
            classification: samples per class index; regression: ``None``.
        num_samples: Samples read.
    """

    means: list[float]
    stds: list[float]
    pixel_counts: list[int]
    bands: list[str] | None = None
    class_counts: dict[int, int] | None = None
    num_samples: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values, ready for YAML or JSON."""
        return asdict(self)


class _Moments:
    """Running per-band count, mean and M2 (sum of squared deviations), merged pairwise."""

    def __init__(self) -> None:
        self.count: np.ndarray | None = None
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None

    def add(self, count: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> None:
        if self.count is None:
            self.count, self.mean, self.m2 = count.copy(), mean.copy(), m2.copy()
            return
        if count.shape != self.count.shape:
            raise ValueError(
                f"Samples have different band counts ({self.count.shape[0]} and {count.shape[0]})."
            )
        total = self.count + count
        safe = np.maximum(total, 1)
        delta = mean - self.mean
        self.mean = self.mean + delta * count / safe
        self.m2 = self.m2 + m2 + delta**2 * self.count * count / safe
        self.count = total


def _image_moments(image: np.ndarray, nodata: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-band valid count, mean and M2 of ``image`` ``(C, ...)``, in float64."""
    values = image.reshape(image.shape[0], -1).astype(np.float64)
    valid = ~nodata.reshape(nodata.shape[0], -1)
    count = valid.sum(axis=1).astype(np.float64)
    total = np.where(valid, values, 0.0).sum(axis=1)
    mean = total / np.maximum(count, 1)
    m2 = (np.where(valid, values - mean[:, None], 0.0) ** 2).sum(axis=1)
    return count, mean, m2


class _SampleReducer:
    """A map-style dataset of per-sample partial statistics (runs in DataLoader workers)."""

    def __init__(self, dataset: Any, indices: Sequence[int], constant_scale: float = 1.0):
        self.dataset = dataset
        self.indices = list(indices)
        self.constant_scale = constant_scale

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        index = self.indices[i]
        image, nodata, _ = self.dataset.read_image_array(index)
        if self.constant_scale != 1:
            image = image * np.float32(self.constant_scale)
        count, mean, m2 = _image_moments(image, nodata)
        out: dict[str, Any] = {"count": count, "mean": mean, "m2": m2, "classes": None}
        if isinstance(self.dataset, GenericNonGeoSegmentationDataset) and self.dataset.label_files:
            raw, label_nodata = self.dataset.read_label_array(index)
            label = self.dataset.convert_label(raw, label_nodata, self.dataset.label_files[index])
            values, counts = np.unique(label[~label_nodata], return_counts=True)
            out["classes"] = dict(zip(values.tolist(), counts.tolist(), strict=True))
        elif getattr(self.dataset, "targets", None) is not None:
            out["classes"] = {self.dataset.targets[index]: 1}
        return out


def _scale(source: Any, constant_scale: float | None) -> float:
    if constant_scale is not None:
        return float(constant_scale)
    return float(getattr(source, "constant_scale", 1.0))


def _identity(item: Any) -> Any:
    return item


def compute_statistics(
    source: Any,
    *,
    max_samples: int | None = None,
    num_workers: int = 0,
    progress: bool | None = None,
    constant_scale: float | None = None,
) -> DatasetStatistics:
    """Per-band means and stds, and class counts, of a dataset or a datamodule's training split.

    Values are those the model's preprocessing normalises: bands selected, temporal frames
    pooled per band, ``constant_scale`` applied; nodata and non-finite pixels are skipped.

    Args:
        source: A geofm GeoTIFF dataset, or a geofm datamodule (its ``train`` split is used).
        max_samples: Use only the first ``max_samples`` samples.
        num_workers: DataLoader workers reading files in parallel.
        progress: Show a progress bar; ``None`` shows one on a terminal.
        constant_scale: Factor applied to raw values; by default the datamodule's (1 for a
            dataset).

    Returns:
        The statistics; write them with :func:`write_statistics`.

    Raises:
        TypeError: ``source`` is neither a geofm dataset nor a geofm datamodule.
        ValueError: The dataset is empty, or a band has no valid pixel.
    """
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    dataset = source.build_dataset("train") if hasattr(source, "build_dataset") else source
    if not hasattr(dataset, "read_image_array"):
        raise TypeError(
            f"compute_statistics needs a geofm GeoTIFF dataset or datamodule, not "
            f"{type(source).__name__}."
        )
    n = len(dataset) if max_samples is None else min(max_samples, len(dataset))
    if n == 0:
        raise ValueError("compute_statistics got an empty dataset.")
    loader = DataLoader(
        _SampleReducer(dataset, range(n), _scale(source, constant_scale)),
        batch_size=None,
        num_workers=num_workers,
        collate_fn=_identity,
    )
    moments = _Moments()
    classes: dict[int, int] | None = None
    disable = None if progress is None else not progress  # None: tqdm decides (TTY or not)
    for part in tqdm(loader, total=n, desc="statistics", unit="sample", disable=disable):
        moments.add(part["count"], part["mean"], part["m2"])
        if part["classes"] is not None:
            classes = classes or {}
            for value, count in part["classes"].items():
                classes[int(value)] = classes.get(int(value), 0) + int(count)
    assert moments.count is not None  # n > 0
    empty = [i for i, c in enumerate(moments.count) if c == 0]
    if empty:
        raise ValueError(
            f"Band(s) at position {empty} have no valid (non-nodata) pixel in {n} samples."
        )
    names = getattr(dataset, "band_names", None)
    stats = DatasetStatistics(
        means=[float(v) for v in moments.mean],
        stds=[float(v) for v in np.sqrt(moments.m2 / moments.count)],
        pixel_counts=[int(c) for c in moments.count],
        bands=list(names) if names else None,
        class_counts=dict(sorted(classes.items())) if classes is not None else None,
        num_samples=n,
    )
    log.info("Statistics over %d samples: means %s, stds %s", n, stats.means, stats.stds)
    return stats


def write_statistics(stats: DatasetStatistics | dict[str, Any], path: str | Path) -> Path:
    """Write statistics as YAML (``.yaml``/``.yml``) or JSON (``.json``).

    Raises:
        ValueError: The extension is none of these.
    """
    path = Path(path)
    data = stats.to_dict() if isinstance(stats, DatasetStatistics) else dict(stats)
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        import yaml

        text = yaml.safe_dump(data, sort_keys=False)
    elif suffix == ".json":
        text = json.dumps(data, indent=2)
    else:
        raise ValueError(f"Statistics file '{path}' must end in .yaml, .yml or .json.")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load_statistics(path: str | Path) -> dict[str, Any]:
    """Read a statistics file written by :func:`write_statistics` (or by hand).

    Raises:
        FileNotFoundError: The file does not exist.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"Statistics file '{path}' does not exist.")
    text = path.read_text()
    if path.suffix.lower() == ".json":
        return json.loads(text)
    import yaml

    return yaml.safe_load(text)


def load_band_values(
    value: Sequence[float] | str | Path | None, field_name: str
) -> tuple[list[float] | None, list[str] | None]:
    """Per-band values given as a list or as a statistics file.

    Args:
        value: A list of numbers, or a YAML/JSON file holding either such a list or a mapping
            with the key ``field_name`` (and optionally ``bands``), or a ``.txt`` file of
            numbers (TerraTorch's format, one value per band).
        field_name: ``"means"`` or ``"stds"``.

    Returns:
        The values and, when the file names them, the bands they belong to.

    Raises:
        ValueError: The file lacks ``field_name`` or the values are not numbers.
    """
    if value is None:
        return None, None
    bands = None
    if isinstance(value, (str, Path)) and Path(value).suffix.lower() == ".txt":
        return _text_values(Path(value).expanduser(), field_name), None
    if isinstance(value, (str, Path)):
        data = load_statistics(value)
        if isinstance(data, dict):
            if field_name not in data:
                raise ValueError(
                    f"{field_name}='{value}': the file has no '{field_name}' key "
                    f"(keys: {sorted(data)})."
                )
            bands = data.get("bands")
            data = data[field_name]
        value = data
    try:
        values = [float(v) for v in value]  # type: ignore[union-attr]
    except (TypeError, ValueError) as err:
        raise ValueError(f"{field_name} must be a list of numbers, got {value!r}.") from err
    return values, [str(b) for b in bands] if bands else None


def _text_values(path: Path, field_name: str) -> list[float]:
    """Numbers of a TerraTorch statistics ``.txt`` (whitespace-separated, ``#`` comments).

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: A word is not a number, or the file holds a table (several lines of several
            values: per-band and per-time-step statistics, which geofm does not take).
    """
    if not path.is_file():
        raise FileNotFoundError(f"{field_name}='{path}': the statistics file does not exist.")
    rows = [line.split("#", 1)[0].split() for line in path.read_text().splitlines()]
    rows = [row for row in rows if row]
    if len(rows) > 1 and any(len(row) > 1 for row in rows):
        raise ValueError(
            f"{field_name}='{path}' holds a table of {len(rows)} lines with several values; give "
            "one value per band (one a line), in the order of output_bands."
        )
    try:
        values = [float(word) for row in rows for word in row]
    except ValueError as err:
        raise ValueError(f"{field_name}='{path}': {err}; the file must hold numbers only.") from err
    if not values:
        raise ValueError(f"{field_name}='{path}' holds no value.")
    return values
