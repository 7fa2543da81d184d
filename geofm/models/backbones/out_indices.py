"""The one ``out_indices`` rule of geofm's backbones (Prithvi ViT blocks, Swin stages)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["check_out_indices"]


def check_out_indices(
    out_indices: Sequence[int] | None, count: int, unit: str = "block"
) -> list[int]:
    """Non-negative indices of the features a backbone returns, in the order given.

    Args:
        out_indices: Indices into ``count`` features; negatives count from the end
            (``-1`` is the last). ``None`` selects all, in order.
        count: Number of features (blocks, stages) the backbone has.
        unit: What an index selects, for messages (``"block"``, ``"stage"``).

    Returns:
        The indices in ``0 .. count - 1``, in the order of ``out_indices``.

    Raises:
        ValueError: for an empty list or a lone int, an index out of range (the message names
            the valid range) or an index given twice (``3`` and ``-1`` of 4 are the same).
    """
    if out_indices is None:
        return list(range(count))
    if isinstance(out_indices, (int, str)) or len(out_indices) == 0:
        raise ValueError(
            f"out_indices must be a non-empty list of {unit} indices, got {out_indices!r}; "
            f"e.g. {list(range(count))[-4:]}."
        )
    bad_type = [i for i in out_indices if isinstance(i, bool) or not isinstance(i, int)]
    if bad_type:
        raise ValueError(f"out_indices must hold ints, got {list(out_indices)!r}.")
    bad = [i for i in out_indices if not -count <= i < count]
    if bad:
        raise ValueError(
            f"out_indices {bad} are out of range for {count} {unit}s: valid indices are "
            f"0..{count - 1}, or -{count}..-1 from the end."
        )
    indices = [i % count for i in out_indices]
    twice = sorted({i for i in indices if indices.count(i) > 1})
    if twice:
        raise ValueError(
            f"out_indices {list(out_indices)} select the {unit}s {twice} more than once (a "
            f"negative index counts from the end of {count}); list each {unit} once."
        )
    return indices
