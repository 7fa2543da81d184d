"""Band names of the sensors geofm reads, as string enums usable as plain strings in configs.

``HLSBands.RED == "RED"``: a member compares equal to its value, so a YAML config may write the
name (``bands: [BLUE, GREEN, RED]``) and code may use the enum; both mean the same band.

A band list may mix names and integers. Names are matched case-insensitively against the
members (and aliases) of the enums given; integers are identifiers of bands without a name (a
DEM, an index computed by the user...), kept as they are, as in TerraTorch: an integer only
matches the same integer in another band list.

Example:
    >>> resolve_bands(["red", HLSBands.NIR_NARROW, 7])
    ['RED', 'NIR_NARROW', 7]
    >>> band_indices(["NIR_NARROW", "RED"], reference=["BLUE", "GREEN", "RED", "NIR_NARROW"])
    [3, 2]
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence
from typing import Literal, overload

from geofm.registry.errors import close_names

__all__ = [
    "Band",
    "BandEnum",
    "HLSBands",
    "Sentinel2Bands",
    "Sentinel1Bands",
    "KNOWN_BAND_ENUMS",
    "resolve_band",
    "resolve_bands",
    "band_indices",
]

Band = str | int
"""A band: a name (``"RED"``, ``HLSBands.RED``) or an integer identifier of an unnamed band."""


class BandEnum(enum.StrEnum):
    """Base of the band enums: lookup by value or name, ignoring case (``HLSBands("red")``)."""

    @classmethod
    def _missing_(cls, value: object) -> BandEnum | None:
        if not isinstance(value, str):
            return None
        key = cls._normalise(value)
        for name, member in cls.__members__.items():  # includes aliases
            if key in (name.upper(), member.value.upper()):
                return member
        return None

    @classmethod
    def _normalise(cls, value: str) -> str:
        return value.strip().upper()

    @classmethod
    def names(cls) -> list[str]:
        """Every accepted name, canonical members first, then aliases."""
        canonical = [m.value for m in cls]
        aliases = [n for n in cls.__members__ if n not in canonical]
        return canonical + aliases


class HLSBands(BandEnum):
    """Harmonized Landsat Sentinel-2 bands, by wavelength.

    Prithvi models were pretrained on ``BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2``.
    """

    COASTAL_AEROSOL = "COASTAL_AEROSOL"
    BLUE = "BLUE"
    GREEN = "GREEN"
    RED = "RED"
    RED_EDGE_1 = "RED_EDGE_1"
    RED_EDGE_2 = "RED_EDGE_2"
    RED_EDGE_3 = "RED_EDGE_3"
    NIR_BROAD = "NIR_BROAD"
    NIR_NARROW = "NIR_NARROW"
    WATER_VAPOR = "WATER_VAPOR"
    CIRRUS = "CIRRUS"
    SWIR_1 = "SWIR_1"
    SWIR_2 = "SWIR_2"
    THERMAL_INFRARED_1 = "THERMAL_INFRARED_1"
    THERMAL_INFRARED_2 = "THERMAL_INFRARED_2"


class Sentinel2Bands(BandEnum):
    """Sentinel-2 MSI bands in the usual file order (B01..B08, B8A, B09..B12).

    Aliases with the HLS names of the same wavelength (``Sentinel2Bands.RED is
    Sentinel2Bands.B04``) and unpadded names (``Sentinel2Bands("B4")``) are accepted.
    """

    B01 = "B01"
    B02 = "B02"
    B03 = "B03"
    B04 = "B04"
    B05 = "B05"
    B06 = "B06"
    B07 = "B07"
    B08 = "B08"
    B8A = "B8A"
    B09 = "B09"
    B10 = "B10"
    B11 = "B11"
    B12 = "B12"
    # Aliases: same value, so they resolve to the member above.
    COASTAL_AEROSOL = "B01"
    BLUE = "B02"
    GREEN = "B03"
    RED = "B04"
    RED_EDGE_1 = "B05"
    RED_EDGE_2 = "B06"
    RED_EDGE_3 = "B07"
    NIR_BROAD = "B08"
    NIR_NARROW = "B8A"
    WATER_VAPOR = "B09"
    CIRRUS = "B10"
    SWIR_1 = "B11"
    SWIR_2 = "B12"

    @classmethod
    def _normalise(cls, value: str) -> str:
        # "B1" / "b8a" -> "B01" / "B8A", the spelling of Sen1Floods11 and of many file names.
        key = value.strip().upper()
        match = re.fullmatch(r"B(\d)", key)
        return f"B0{match.group(1)}" if match else key


class Sentinel1Bands(BandEnum):
    """Sentinel-1 SAR polarisations."""

    VV = "VV"
    VH = "VH"
    HH = "HH"
    HV = "HV"


KNOWN_BAND_ENUMS: tuple[type[BandEnum], ...] = (HLSBands, Sentinel2Bands, Sentinel1Bands)
"""Enums searched, in this order, when a name is resolved (so ``"RED"`` is ``HLSBands.RED``)."""


def resolve_band(
    band: Band | enum.Enum, enums: Iterable[type[BandEnum]] = KNOWN_BAND_ENUMS
) -> Band:
    """The canonical form of one band: its enum value as a plain ``str``, or the ``int``.

    Args:
        band: A name (any case, an alias, an enum member) or an integer identifier.
        enums: Enums whose names are valid, searched in order.

    Raises:
        ValueError: for an unknown name; the message lists the valid names.
        TypeError: for anything else than a str, an enum member or an int.
    """
    enums = tuple(enums)
    if isinstance(band, bool) or not isinstance(band, (str, int, enum.Enum)):
        raise TypeError(
            f"Band {band!r} ({type(band).__name__}) is neither a band name such as 'RED' nor an "
            "integer identifier."
        )
    if isinstance(band, enum.Enum):
        if isinstance(band, BandEnum):
            return str(band.value)
        band = band.name
    if isinstance(band, int):
        return band
    for band_enum in enums:
        try:
            return str(band_enum(band).value)
        except ValueError:
            continue
    valid = list(dict.fromkeys(name for band_enum in enums for name in band_enum.names()))
    suggestions = close_names(band.strip().upper(), valid)
    hint = f" Did you mean {', '.join(map(repr, suggestions))}?" if suggestions else ""
    raise ValueError(
        f"Unknown band name {band!r}.{hint} Valid names "
        f"({', '.join(e.__name__ for e in enums)}): {', '.join(valid)}. "
        "A band without a name (a DEM, a custom index) can be given as an integer identifier."
    )


def resolve_bands(
    bands: Sequence[Band | enum.Enum],
    enums: Iterable[type[BandEnum]] = KNOWN_BAND_ENUMS,
    argument: str = "bands",
) -> list[Band]:
    """Canonical forms of a band list (see :func:`resolve_band`).

    Args:
        bands: Names and integer identifiers, in channel order.
        enums: Enums whose names are valid, searched in order.
        argument: Name of the argument the list came from, for error messages.

    Raises:
        ValueError: for an empty list, an unknown name or a band listed twice.
        TypeError: when ``bands`` is not a list.
    """
    if isinstance(bands, (str, bytes)) or not isinstance(bands, Sequence):
        raise TypeError(f"{argument} must be a list of band names or ints, got {bands!r}.")
    if len(bands) == 0:
        raise ValueError(
            f"{argument} is empty; give at least one band, e.g. ['RED', 'NIR_NARROW']."
        )
    enums = tuple(enums)
    resolved: list[Band] = []
    for position, band in enumerate(bands):
        try:
            resolved.append(resolve_band(band, enums))
        except (TypeError, ValueError) as err:
            raise type(err)(f"{argument}[{position}]: {err}") from None
    duplicates = sorted({str(b) for b in resolved if resolved.count(b) > 1})
    if duplicates:
        raise ValueError(f"{argument} lists {duplicates} more than once: {list(bands)}.")
    return resolved


@overload
def band_indices(
    bands: Sequence[Band | enum.Enum],
    reference: Sequence[Band | enum.Enum],
    missing: Literal["error"] = ...,
    enums: Iterable[type[BandEnum]] = ...,
) -> list[int]: ...
@overload
def band_indices(
    bands: Sequence[Band | enum.Enum],
    reference: Sequence[Band | enum.Enum],
    missing: Literal["none"],
    enums: Iterable[type[BandEnum]] = ...,
) -> list[int | None]: ...
def band_indices(
    bands: Sequence[Band | enum.Enum],
    reference: Sequence[Band | enum.Enum],
    missing: Literal["error", "none"] = "error",
    enums: Iterable[type[BandEnum]] = KNOWN_BAND_ENUMS,
) -> list[int] | list[int | None]:
    """Position of each band of ``bands`` in ``reference``.

    Use it to pick channels from a file (``reference`` = the file's bands) or to map model
    bands onto checkpoint bands (``reference`` = the pretraining bands).

    Args:
        bands: Wanted bands (names or integer identifiers).
        reference: Bands of the source, in channel order.
        missing: ``"error"`` raises for a band absent from ``reference``; ``"none"`` gives
            ``None`` at its position.
        enums: Enums whose names are valid, searched in order.

    Raises:
        ValueError: for unknown names, duplicates, or (``missing="error"``) absent bands.
    """
    if missing not in ("error", "none"):
        raise ValueError(f"missing must be 'error' or 'none', got {missing!r}.")
    enums = tuple(enums)
    wanted = resolve_bands(bands, enums, "bands")
    ref = resolve_bands(reference, enums, "reference")
    out: list[int | None] = [ref.index(b) if b in ref else None for b in wanted]
    absent = [b for b, i in zip(wanted, out, strict=True) if i is None]
    if absent and missing == "error":
        raise ValueError(f"Bands {absent} are not among the available bands {ref}.")
    return out
