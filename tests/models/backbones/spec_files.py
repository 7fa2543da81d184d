"""Where the shared spec files are: ``../shared/specs`` beside the checkout (or beside the
folder of its worktrees)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def spec_file(name: str) -> Path:
    """``shared/specs/<name>`` next to the repository or one level up; a path that does not
    exist when neither has it (tests then fail naming it)."""
    for parent in (REPO.parent, REPO.parent.parent):
        path = parent / "shared" / "specs" / name
        if path.is_file():
            return path
    return REPO.parent / "shared" / "specs" / name


#: The zoo's official state-dict key/shape table.
ZOO_LAYOUTS = spec_file("zoo_state_dict_layouts.json")
