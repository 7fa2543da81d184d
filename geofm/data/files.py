"""Finding samples on disk: glob patterns, common names, image/label pairing, split files.

A sample's *common name* is the part of its path matched by the wildcards of the glob pattern
(``img_grep="*_S2Hand.tif"`` gives ``Spain_7370579`` for ``Spain_7370579_S2Hand.tif``). Images
and labels are paired by the text each wildcard matched, never by sort position. Split files
select samples by exact name by default; with ``substring=True`` (TerraTorch's
``allow_substring_split_file``) an entry selects every sample whose name contains it.

Only file names are listed here; no file is opened.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from geofm.registry.errors import close_names

__all__ = [
    "FoundFile",
    "check_root",
    "find_files",
    "grep_to_regex",
    "pair_files",
    "read_split_file",
    "select_split",
]

log = logging.getLogger(__name__)

# Files that live beside rasters but are not rasters; skipped unless the pattern asks for them.
_SIDECAR_SUFFIXES = (
    ".aux.xml",
    ".ovr",
    ".msk",
    ".tfw",
    ".prj",
    ".txt",
    ".csv",
    ".json",
    ".yaml",
    ".yml",
    ".md",
)
# Extension-like endings that split files may carry or omit ("a_1.tif" vs "a_1").
_EXTENSION = re.compile(r"(\.[A-Za-z][A-Za-z0-9]{0,4})+$")
_MAX_LISTED = 5


@dataclass(frozen=True)
class FoundFile:
    """A file matched by a glob pattern.

    Attributes:
        path: The file.
        key: What each wildcard of the pattern matched; images and labels pair on it.
        name: The common name: the text from the first wildcard's match to the last one's.
    """

    path: Path
    key: tuple[str, ...]
    name: str


def check_root(root: str | Path | None, arg: str) -> Path:
    """``root`` as a folder that exists.

    Raises:
        ValueError: ``root`` is None.
        FileNotFoundError: ``root`` is not an existing folder; the message names ``arg``.
    """
    if root is None:
        raise ValueError(f"{arg} is required here but was not given.")
    path = Path(root).expanduser()
    if not path.is_dir():
        what = "is not a folder" if path.exists() else "does not exist"
        raise FileNotFoundError(f"{arg}='{root}' {what}.")
    return path


def grep_to_regex(grep: str) -> re.Pattern[str]:
    """A regex equivalent to the glob ``grep`` with one capture group per wildcard.

    ``*`` matches within one path component, ``**/`` any number of folders, ``?`` one character
    and ``[...]`` a character class, as in :meth:`pathlib.Path.glob`.
    """
    parts: list[str] = []
    i = 0
    while i < len(grep):
        if grep.startswith("**/", i):
            parts.append("((?:[^/]*/)*)")
            i += 3
        elif grep.startswith("**", i):
            parts.append("(.*)")
            i += 2
        elif grep[i] == "*":
            parts.append("([^/]*)")
            i += 1
        elif grep[i] == "?":
            parts.append("([^/])")
            i += 1
        elif grep[i] == "[" and "]" in grep[i + 2 :]:
            end = grep.index("]", i + 2)
            body = grep[i + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            parts.append("([" + body.replace("\\", "\\\\") + "])")
            i = end + 1
        else:
            parts.append(re.escape(grep[i]))
            i += 1
    return re.compile("".join(parts))


def _is_sidecar(path: Path, grep: str) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) and not grep.lower().endswith(s) for s in _SIDECAR_SUFFIXES)


def find_files(root: Path, grep: str, exclude: Iterable[Path] = ()) -> list[FoundFile]:
    """Files under ``root`` matching the glob ``grep``, sorted by common name.

    Hidden files, folders and sidecar files (``.aux.xml``, ``.ovr``, ...) are skipped.

    Args:
        root: Folder to search.
        grep: Glob pattern relative to ``root`` (``"*.tif"``, ``"*_S2Hand.tif"``, ``"*/*.tif"``).
        exclude: Paths to leave out (labels that share the image folder).

    Raises:
        ValueError: Two files have the same common name.
    """
    regex = grep_to_regex(grep)
    excluded = {p.resolve() for p in exclude}
    found: dict[tuple[str, ...], FoundFile] = {}
    for path in root.glob(grep):
        if path.name.startswith(".") or not path.is_file() or _is_sidecar(path, grep):
            continue
        if path.resolve() in excluded:
            continue
        rel = path.relative_to(root).as_posix()
        match = regex.fullmatch(rel)
        if match is None:  # pathlib and our regex disagree on an exotic pattern
            key, name = (rel,), _EXTENSION.sub("", rel)
        elif match.lastindex:
            key = match.groups()
            name = rel[match.start(1) : match.end(match.lastindex)]
        else:
            key, name = (rel,), _EXTENSION.sub("", rel)
        if key in found:
            raise ValueError(
                f"'{found[key].path}' and '{path}' have the same common name '{name}' under "
                f"pattern '{grep}'; make the pattern more specific."
            )
        found[key] = FoundFile(path, key, name)
    return sorted(found.values(), key=lambda f: (f.name, f.path.as_posix()))


def _listing(items: Sequence[object]) -> str:
    shown = ", ".join(f"'{i}'" for i in items[:_MAX_LISTED])
    more = f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return shown + more


def pair_files(
    images: Sequence[FoundFile],
    labels: Sequence[FoundFile],
    *,
    img_desc: str,
    label_desc: str,
) -> list[tuple[FoundFile, FoundFile]]:
    """Pair images with labels by what their wildcards matched.

    Args:
        images: Found images.
        labels: Found labels.
        img_desc: How the images were searched (``"train_data_root='x', img_grep='*.tif'"``),
            for error messages.
        label_desc: The same for labels.

    Returns:
        ``(image, label)`` pairs in the order of ``images``.

    Raises:
        FileNotFoundError: An image has no label or a label has no image; the message lists the
            files and how each side was searched.
    """
    by_key = {f.key: f for f in labels}
    missing_label = [f.path for f in images if f.key not in by_key]
    if missing_label:
        raise FileNotFoundError(
            f"No label found for {len(missing_label)} image(s): {_listing(missing_label)}. "
            f"Images: {img_desc}; labels: {label_desc}. Labels pair with images by the text "
            "the '*' of each pattern matches."
        )
    image_keys = {f.key for f in images}
    missing_image = [f.path for f in labels if f.key not in image_keys]
    if missing_image:
        raise FileNotFoundError(
            f"No image found for {len(missing_image)} label(s): {_listing(missing_image)}. "
            f"Images: {img_desc}; labels: {label_desc}."
        )
    return [(f, by_key[f.key]) for f in images]


def read_split_file(path: str | Path, arg: str = "split") -> list[str]:
    """Sample names listed in a split file: one per line; blank lines and ``#`` comments skipped.

    Raises:
        FileNotFoundError: The file does not exist; the message names ``arg``.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"{arg}='{path}' does not exist.")
    names = []
    for line in file.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line)
    return names


def _forms(text: str) -> set[str]:
    return {text, _EXTENSION.sub("", text)}


def _texts(f: FoundFile, ignore_extensions: bool) -> set[str]:
    """What a split entry is compared with: the common name and the file name."""
    if ignore_extensions:
        return _forms(f.name) | _forms(f.path.name)
    return {f.name, f.path.name}


def select_split(
    files: Sequence[FoundFile],
    names: Sequence[str],
    *,
    ignore_extensions: bool = True,
    arg: str = "split",
    strict: bool = True,
    substring: bool = False,
) -> list[FoundFile]:
    """The files that the entries ``names`` of a split file select.

    By default an entry selects a file when it equals the file's common name or its file name
    (``a_1``, ``a_1_img.tif``); ``a_1`` never selects ``a_10``. With ``substring`` (TerraTorch's
    ``allow_substring_split_file``) an entry selects every file whose common name or file name
    contains it (``Spain`` selects ``Spain_7370579``; ``a_1`` also selects ``a_10``). With
    ``ignore_extensions``, extensions on either side are disregarded (``a_1.tif`` matches common
    name ``a_1``).

    With ``strict``, one warning lists the entries that select nothing and, with
    ``substring``, one warning lists samples that several entries select and entries that name
    a sample exactly but select others too (a split meant for exact names).

    Raises:
        ValueError: No file matches any listed name (strict only); in exact mode the message
            says when the entries are parts of file names (set ``allow_substring_split_file``).
    """
    entries = [_EXTENSION.sub("", n) if ignore_extensions else n for n in names]
    texts = [_texts(f, ignore_extensions) for f in files]
    if substring:
        hits = [[e for e in dict.fromkeys(entries) if any(e in t for t in ts)] for ts in texts]
    else:
        wanted: set[str] = set()
        for n in names:
            wanted |= _forms(n) if ignore_extensions else {n}
        hits = [sorted(ts & wanted) for ts in texts]
    selected = [f for f, hit in zip(files, hits, strict=True) if hit]
    if not strict:
        return selected
    if substring:
        used = {e for hit in hits for e in hit}
        unmatched = [n for n, e in zip(names, entries, strict=True) if e not in used]
        _warn_substring_matches(files, hits, texts, arg)
    else:
        used = {h for hit in hits for h in hit}
        unmatched = [n for n in names if not ((_forms(n) if ignore_extensions else {n}) & used)]
    partial = _substring_hint(unmatched, entries, names, texts) if not substring else ""
    if not selected:
        hint = close_names(names[0], [f.name for f in files]) if names else []
        raise ValueError(
            f"None of the {len(names)} names in {arg} matches a file (first: "
            f"{_listing(list(names))}; found files are named like "
            f"{_listing([f.name for f in files])})."
            + (f" Did you mean {hint[0]!r}?" if hint and not partial else "")
            + partial
        )
    if unmatched:
        log.warning(
            "%d name(s) in %s match no file: %s.%s",
            len(unmatched),
            arg,
            _listing(unmatched),
            partial,
        )
    return selected


def _substring_hint(
    unmatched: Sequence[str],
    entries: Sequence[str],
    names: Sequence[str],
    texts: Sequence[set[str]],
) -> str:
    """In exact mode: a hint when unmatched entries are parts of file names."""
    entry_of = dict(zip(names, entries, strict=True))
    parts = [n for n in unmatched if any(entry_of[n] in t for ts in texts for t in ts)]
    if not parts:
        return ""
    return (
        f" Entries such as {_listing(parts)} are parts of file names: set "
        "allow_substring_split_file: true to select every sample whose name contains an entry "
        "(TerraTorch's default)."
    )


def _warn_substring_matches(
    files: Sequence[FoundFile], hits: Sequence[list[str]], texts: Sequence[set[str]], arg: str
) -> None:
    """One warning for samples selected by several entries and for exact entries that select
    other samples too (``a_1`` selecting ``a_10``)."""
    several = [
        f"'{f.name}' ({', '.join(h)})" for f, h in zip(files, hits, strict=True) if len(h) > 1
    ]
    exact = {e for ts, hit in zip(texts, hits, strict=True) for e in hit if e in ts}
    wider: dict[str, list[str]] = {}
    for f, ts, hit in zip(files, texts, hits, strict=True):
        for e in hit:
            if e in exact and e not in ts:
                wider.setdefault(e, []).append(f.name)
    if not several and not wider:
        return
    parts = []
    if several:
        shown = "; ".join(several[:_MAX_LISTED])
        more = f" and {len(several) - _MAX_LISTED} more" if len(several) > _MAX_LISTED else ""
        parts.append(f"{len(several)} sample(s) match several entries: {shown}{more}")
    if wider:
        items = list(wider.items())
        shown = "; ".join(f"'{e}' also selects {_listing(v)}" for e, v in items[:_MAX_LISTED])
        more = f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
        parts.append(f"entries that name a sample exactly select others too: {shown}{more}")
    log.warning(
        "%s (allow_substring_split_file=true selects every sample whose name contains an entry): "
        "%s. Set allow_substring_split_file: false to match names exactly.",
        arg,
        "; ".join(parts),
    )
