"""Coordinates of a sample for temporal-location models: acquisition dates and centre lat/lon.

``temporal_coords`` are ``(T, 2)`` float32 rows of ``(year, day of year)``, one per time step,
taken from the file name (or the GeoTIFF's date tag). ``location_coords`` are ``(2,)``
float32 ``(latitude, longitude)`` of the image centre, from its CRS and transform.

Date patterns:

- a format made of ``YYYY``, ``MM``, ``DD`` and ``DDD`` (day of year) with literal text around
  them: ``"YYYYMMDD"``, ``"YYYY-MM-DD"``, ``"YYYYDDD"``, ``".YYYYDDDT"`` (HLS names such as
  ``HLS.S30.T10SEG.2020156T185921.v2.0.tif``);
- a regular expression with named groups ``year`` and ``month``/``day`` or ``doy``;
- ``"tags"``: the GeoTIFF's ``TIFFTAG_DATETIME`` (``YYYY:MM:DD HH:MM:SS``) or
  ``ACQUISITIONDATE`` tag.

Without a pattern, :data:`DEFAULT_DATE_PATTERNS` are tried in order and the first that finds
a date in every file name is used.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "DEFAULT_DATE_PATTERNS",
    "DateError",
    "DatePattern",
    "find_dates",
    "location_coords",
    "temporal_coords",
]

log = logging.getLogger(__name__)

#: Tried in order when no ``date_pattern`` is given.
DEFAULT_DATE_PATTERNS = (".YYYYDDDT", "YYYY-MM-DD", "YYYYMMDD", "YYYYDDD")

_TOKENS = (
    ("YYYY", r"(?P<year>\d{4})"),
    ("DDD", r"(?P<doy>\d{3})"),
    ("MM", r"(?P<month>\d{2})"),
    ("DD", r"(?P<day>\d{2})"),
)
_DATE_TAGS = ("TIFFTAG_DATETIME", "ACQUISITIONDATE", "DATE_ACQUIRED", "DATETIME")


class DateError(ValueError):
    """A file whose acquisition date cannot be read with the configured pattern."""


class DatePattern:
    """A date pattern (see the module docstring) compiled to a regular expression.

    Args:
        pattern: A ``YYYY``/``MM``/``DD``/``DDD`` format, a regular expression with named
            groups, or ``"tags"``.
    """

    def __init__(self, pattern: str):
        self.pattern = pattern
        self.from_tags = pattern == "tags"
        self.regex: re.Pattern[str] | None = None
        if self.from_tags:
            return
        if "(?P<" in pattern:
            source = pattern
        else:
            source = re.escape(pattern)
            for token, group in _TOKENS:
                source = source.replace(token, group)
            # Digits must not run on: "YYYYMMDD" must not match inside a longer number.
            if pattern[0] in "YMD":
                source = rf"(?<!\d){source}"
            if pattern[-1] in "YMD":
                source = rf"{source}(?!\d)"
        try:
            self.regex = re.compile(source)
        except re.error as err:
            raise ValueError(f"date_pattern={pattern!r} is not a valid pattern: {err}") from None
        groups = set(self.regex.groupindex)
        if "year" not in groups or not ({"doy"} <= groups or {"month", "day"} <= groups):
            raise ValueError(
                f"date_pattern={pattern!r} must give a year and a day of year (DDD) or a month "
                "and day (MM, DD): e.g. 'YYYYMMDD', 'YYYYDDD', '.YYYYDDDT'."
            )

    def __repr__(self) -> str:
        return f"DatePattern({self.pattern!r})"

    def search(self, text: str) -> list[tuple[int, int]]:
        """Every valid date in ``text`` as ``(year, day of year)``, in order."""
        assert self.regex is not None
        dates = []
        for match in self.regex.finditer(text):
            date = _as_date(match.groupdict())
            if date is not None:
                dates.append(date)
        return dates


def _as_date(groups: dict[str, str | None]) -> tuple[int, int] | None:
    try:
        year = int(groups["year"])  # type: ignore[arg-type]
        if not 1950 <= year <= 2200:  # a satellite era; rules out other 4-digit numbers
            return None
        if groups.get("doy") is not None:
            doy = int(groups["doy"])  # type: ignore[arg-type]
            return (year, doy) if 1 <= doy <= (366 if _leap(year) else 365) else None
        date = dt.date(year, int(groups["month"]), int(groups["day"]))  # type: ignore[arg-type]
        return year, date.timetuple().tm_yday
    except (TypeError, ValueError, KeyError):
        return None


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _tag_date(path: Path) -> list[tuple[int, int]]:
    import rasterio

    with rasterio.open(path) as src:
        tags = src.tags()
    for key in _DATE_TAGS:
        value = tags.get(key)
        if value:
            found = DatePattern("YYYY:MM:DD").search(value) or DatePattern("YYYY-MM-DD").search(value)
            if found:
                return found[:1]
    return []


def find_dates(
    files: Sequence[Path], pattern: str | None, key: str = "date_pattern"
) -> tuple[list[list[tuple[int, int]]] | None, str | None]:
    """The dates in each file name (or tag), and the pattern that found them.

    Args:
        files: The image files.
        pattern: A date pattern, ``"tags"``, or ``None`` to try :data:`DEFAULT_DATE_PATTERNS`.
        key: The setting's name, for messages.

    Returns:
        Per file the dates found in order, and the pattern used; ``(None, None)`` when no
        pattern was given and no default finds a date in every file name.

    Raises:
        DateError: ``pattern`` was given and a file has no date it can read (the message
            names the file and the pattern).
    """
    if pattern is None:
        for candidate in DEFAULT_DATE_PATTERNS:
            compiled = DatePattern(candidate)
            found = [compiled.search(Path(f).name) for f in files]
            if files and all(found):
                log.info("Acquisition dates from file names with the pattern %r.", candidate)
                return found, candidate
        log.info(
            "No acquisition date found in every file name (tried %s); no temporal_coords. "
            "Set %s to give them to temporal models.",
            ", ".join(DEFAULT_DATE_PATTERNS),
            key,
        )
        return None, None
    compiled = DatePattern(pattern)
    if compiled.from_tags:
        return [_tag_date(Path(f)) for f in files], pattern  # read lazily would hide errors
    found = []
    for f in files:
        dates = compiled.search(Path(f).name)
        if not dates:
            raise DateError(
                f"No date matching {key}={pattern!r} in the file name '{Path(f).name}' "
                f"('{f}'). Fix the pattern (YYYY, MM, DD, DDD tokens or a regex with named "
                "groups year, month, day or doy) or rename the file."
            )
        found.append(dates)
    return found, pattern


def temporal_coords(
    dates: Sequence[tuple[int, int]], frames: int, path: Path, pattern: str | None
) -> np.ndarray:
    """``(T, 2)`` float32 ``(year, day of year)`` for an image of ``frames`` time steps.

    One date serves a single-frame image (the first of several, as in Landsat names whose
    second date is the processing date); a multi-frame image needs one date per frame.

    Raises:
        DateError: no date, or a date count that does not fit the frames (names the file).
    """
    if not dates:
        raise DateError(f"No acquisition date for '{path}' with date_pattern={pattern!r}.")
    if frames == 1:
        chosen = list(dates[:1])
    elif len(dates) == frames:
        chosen = list(dates)
    else:
        raise DateError(
            f"'{path}' has {frames} time steps but date_pattern={pattern!r} finds "
            f"{len(dates)} date(s) in it ({dates}); name one date per time step, in order."
        )
    return np.asarray(chosen, dtype=np.float32)


def location_coords(crs: str | None, transform: Sequence[float], height: int, width: int) -> np.ndarray | None:
    """``(2,)`` float32 ``(latitude, longitude)`` of the image centre; ``None`` without a CRS."""
    if crs is None:
        return None
    from rasterio.crs import CRS
    from rasterio.warp import transform as warp

    a, b, c, d, e, f = transform
    col, row = width / 2, height / 2
    x, y = a * col + b * row + c, d * col + e * row + f
    lon, lat = warp(CRS.from_user_input(crs), CRS.from_epsg(4326), [x], [y])
    return np.asarray([lat[0], lon[0]], dtype=np.float32)
