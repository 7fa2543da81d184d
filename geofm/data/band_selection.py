"""Which bands of a GeoTIFF to read: ``dataset_bands`` and ``output_bands`` resolved to indexes.

The convention (TerraTorch's, with 1-based band numbers where TerraTorch would fail):

- a **string** (or a band enum such as ``HLSBands.RED``) is a band *name*;
- an **integer** in ``dataset_bands`` is an *identifier* of an unnamed band (its value is
  free: TerraTorch configs often write 0-based ones);
- an **integer** in ``output_bands`` names the ``dataset_bands`` entry with that identifier
  when ``dataset_bands`` lists it (its first occurrence, as TerraTorch's ``list.index``), and
  is otherwise a 1-based band *number* in the file, as rasterio and GDAL count (``1`` is the
  first band);
- a **two-element list** ``[first, last]`` is the inclusive run of integers ``first..last``,
  each read as above (``[1, 6]`` is six entries, ``[0, 11]`` twelve).

``dataset_bands`` describes the file's bands in file order: names for the bands you name,
integers or ranges for those you don't (``[[1, 6], "NIR", "FMASK"]`` is an 8-band file whose
7th band is ``"NIR"``; TerraTorch's ``[[0, 11]]`` is a 12-band file). ``output_bands`` selects
bands, in the order the model receives them. With TerraTorch's ``dataset_bands: [[0, 11]]``,
``output_bands: [[1, 3]]`` selects the file's 2nd to 4th bands, as in TerraTorch; with
geofm's ``[[1, 6], "NIR"]``, ``output_bands: [2]`` is the 2nd band either way. An integer that
``dataset_bands`` does not list where its position holds another integer is refused as
ambiguous (``dataset_bands: [[0, 5]]``, ``output_bands: [6]``: identifier 6 is not listed, and
band number 6 is identifier 5).

Names match ignoring case and through the aliases of :mod:`geofm.data.bands` when that module
knows them (``"b4"``, ``"B04"`` and ``Sentinel2Bands.B04`` are one band); other names (``"DEM"``,
``"FMASK"``) must be spelled alike in both lists.

With ``expand_temporal_dimension``, ``dataset_bands`` describes one time step and the file
holds the time steps one after the other (``T * C`` bands, time-major).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from geofm.registry.errors import close_names

__all__ = ["BandSpec", "BandSelection", "expand_band_list", "select_bands", "band_key"]

#: One entry of ``dataset_bands`` / ``output_bands``: a name, a 1-based band number, or an
#: inclusive ``[first, last]`` range of band numbers.
BandSpec = str | int | Sequence[int]


def _band_label(entry: object) -> object:
    """A band enum's value (``HLSBands.RED`` -> ``"RED"``); other entries unchanged."""
    return entry.value if isinstance(entry, Enum) else entry


def band_key(name: str) -> str:
    """The form in which band names are compared: canonical for names :mod:`geofm.data.bands`
    knows (``"b4"`` -> ``"B04"``), upper case for others."""
    try:
        from geofm.data.bands import resolve_band
    except ImportError:  # the band enums are optional for reading files
        return name.strip().upper()
    try:
        return str(resolve_band(name))
    except (TypeError, ValueError):
        return name.strip().upper()


def expand_band_list(bands: Sequence[BandSpec], key: str) -> list[str | int]:
    """``bands`` with enums turned into names and ranges into band numbers.

    Args:
        bands: Entries as described in the module docstring.
        key: The setting the list came from, for error messages.

    Raises:
        ValueError: An entry is neither a name, an integer, nor a ``[first, last]`` range of
            integers with ``first <= last``.
    """
    if isinstance(bands, (str, bytes)):
        raise ValueError(f"{key}={bands!r} must be a list of band names or numbers, not a string.")
    out: list[str | int] = []
    for entry in bands:
        entry = _band_label(entry)
        if isinstance(entry, str):
            out.append(entry)
        elif isinstance(entry, bool):
            raise ValueError(f"{key} entry {entry!r} is not a band name or number.")
        elif isinstance(entry, int):
            out.append(entry)
        elif (
            isinstance(entry, Sequence)
            and len(entry) == 2
            and all(isinstance(e, int) and not isinstance(e, bool) for e in entry)
        ):
            first, last = entry
            if first > last:
                raise ValueError(
                    f"{key} range {list(entry)} is not an inclusive range [first, last] with "
                    "first <= last."
                )
            out.extend(range(first, last + 1))
        else:
            raise ValueError(
                f"{key} entry {entry!r} is not a band name (str), a 1-based band number (int) "
                "or an inclusive range [first, last]."
            )
    return out


@dataclass(frozen=True)
class BandSelection:
    """Resolved band choice.

    Attributes:
        indexes: 1-based band numbers to read (within one time step when temporal), in output
            order; ``None`` reads every band of the file.
        names: Output band names as ``dataset_bands`` spells them (``"band_<n>"`` for unnamed
            bands); ``None`` when every band is read and ``dataset_bands`` was not given.
        dataset_count: Number of bands ``dataset_bands`` describes (per time step), or ``None``.
    """

    indexes: tuple[int, ...] | None
    names: tuple[str, ...] | None
    dataset_count: int | None

    @property
    def num_bands(self) -> int | None:
        """Number of output bands (per time step), when known without opening a file."""
        if self.indexes is not None:
            return len(self.indexes)
        return self.dataset_count


def select_bands(
    dataset_bands: Sequence[BandSpec] | None,
    output_bands: Sequence[BandSpec] | None,
    *,
    dataset_key: str = "dataset_bands",
    output_key: str = "output_bands",
) -> BandSelection:
    """Resolve ``output_bands`` against ``dataset_bands`` (see the module docstring).

    Raises:
        ValueError: A band name is unknown (the message lists the known names), a name is given
            twice in ``dataset_bands``, names are used without ``dataset_bands``, a band number
            exceeds the bands ``dataset_bands`` describes or is ambiguous.
    """
    described = expand_band_list(dataset_bands, dataset_key) if dataset_bands is not None else None
    positions: dict[str, int] = {}  # band_key(name) -> 1-based number
    identifiers: dict[int, int] = {}  # integer identifier -> 1-based number of its first entry
    if described is not None:
        if not described:
            raise ValueError(f"{dataset_key} is empty; leave it unset to mean every band.")
        for number, entry in enumerate(described, start=1):
            if isinstance(entry, int):
                identifiers.setdefault(entry, number)
            elif isinstance(entry, str):
                key = band_key(entry)
                if key in positions:
                    first = described[positions[key] - 1]
                    raise ValueError(f"{dataset_key} names band '{first}' twice ('{entry}').")
                positions[key] = number

    def name_of(number: int) -> str:
        if described is not None and isinstance(described[number - 1], str):
            return str(described[number - 1])
        return f"band_{number}"

    if output_bands is None:
        if described is None:
            return BandSelection(None, None, None)
        numbers = tuple(range(1, len(described) + 1))
        return BandSelection(numbers, tuple(name_of(n) for n in numbers), len(described))

    wanted = expand_band_list(output_bands, output_key)
    if not wanted:
        raise ValueError(f"{output_key} is empty; leave it unset to mean every band.")
    numbers_list: list[int] = []
    for entry in wanted:
        if isinstance(entry, str):
            numbers_list.append(
                _number_of_name(entry, described, positions, dataset_key, output_key)
            )
        elif entry in identifiers:  # TerraTorch's reading: the entry with this identifier
            numbers_list.append(identifiers[entry])
        else:
            _check_number(entry, described, dataset_key, output_key)
            numbers_list.append(entry)
    numbers = tuple(numbers_list)
    return BandSelection(
        numbers, tuple(name_of(n) for n in numbers), len(described) if described else None
    )


def _number_of_name(
    name: str,
    described: list[str | int] | None,
    positions: dict[str, int],
    dataset_key: str,
    output_key: str,
) -> int:
    if described is None:
        raise ValueError(
            f"{output_key} names band '{name}', but {dataset_key} is not set, so the file's "
            f"bands have no names. Name them with {dataset_key} (in file order) or select "
            "bands by 1-based number."
        )
    number = positions.get(band_key(name))
    if number is None:
        known = [d for d in described if isinstance(d, str)]
        hint = close_names(name, known)
        raise ValueError(
            f"{output_key} names band '{name}', which is not in {dataset_key}. Known names: "
            f"{known}." + (f" Did you mean '{hint[0]}'?" if hint else "")
        )
    return number


def _check_number(
    number: int, described: list[str | int] | None, dataset_key: str, output_key: str
) -> None:
    if number < 1:
        raise ValueError(
            f"{output_key} band number {number} is invalid: band numbers are 1-based (the first "
            "band is 1), as in rasterio and GDAL."
        )
    if described is None:
        return
    if number > len(described):
        raise ValueError(
            f"{output_key} band number {number} is beyond the {len(described)} bands that "
            f"{dataset_key} describes."
        )
    held = described[number - 1]
    if isinstance(held, int) and held != number:
        listed = sorted({d for d in described if isinstance(d, int)})
        raise ValueError(
            f"{output_key} integer {number} is ambiguous: {dataset_key} does not list it among "
            f"its integer identifiers ({_span(listed)}), and band number {number} is the entry "
            f"{held} there. Select that band by its identifier ({held}), as TerraTorch does, "
            f"or give {dataset_key} identifiers equal to the band numbers ([[1, "
            f"{len(described)}]])."
        )


def _span(values: list[int]) -> str:
    """Sorted integers for a message, runs shortened (``0..11, 20``)."""
    runs: list[str] = []
    start = prev = None
    for v in [*values, None]:
        if v is not None and prev is not None and v == prev + 1:
            prev = v
            continue
        if start is not None:
            runs.append(str(start) if start == prev else f"{start}..{prev}")
        start = prev = v
    return ", ".join(runs)
