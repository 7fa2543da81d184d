"""TerraTorch's task arguments, read as geofm's own.

A TerraTorch config gives a task ``tiled_inference_parameters``, ``lr_overrides``,
``aux_heads`` and a ``plot_on_val`` that may be a bool. Each is mapped here onto what geofm's
:class:`~geofm.tasks.base.BaseTask` does with its own arguments, with TerraTorch's defaults and
effects; what geofm cannot do the same way is refused, naming the key and what to write.

- ``tiled_inference_parameters`` -> ``tiled_inference`` (arguments of
  :func:`geofm.inference.tiled_forward`): see :func:`tiled_from_terratorch`.
- ``lr_overrides: {substring: lr}`` -> ``param_groups`` over the parameters whose name
  contains the substring: see :func:`param_groups_from_lr_overrides`.
- ``aux_heads: [{name, decoder, decoder_args}]`` -> the model factory's ``aux_decoders``: see
  :func:`aux_decoders_from_aux_heads`.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from geofm.registry.errors import close_names

__all__ = [
    "TILED_KEYS",
    "TERRATORCH_PLOT_BATCHES",
    "aux_decoders_from_aux_heads",
    "param_groups_from_lr_overrides",
    "tiled_from_terratorch",
]

log = logging.getLogger(__name__)

#: Batches TerraTorch plots in a validation epoch that plots (its
#: ``BATCH_IDX_FOR_VALIDATION_PLOTTING``).
TERRATORCH_PLOT_BATCHES = 10

# TerraTorch's tiled_inference defaults for keys a config leaves out.
_TILED_DEFAULTS: dict[str, Any] = {
    "crop": 224,
    "stride": 192,
    "delta": 8,
    "batch_size": 16,
    "average_patches": True,
    "blend_overlaps": True,
    "padding": "reflect",
    "verbose": False,
}
#: Keys of TerraTorch's ``tiled_inference_parameters`` that geofm reads.
TILED_KEYS: tuple[str, ...] = (
    "h_crop",
    "w_crop",
    "h_stride",
    "w_stride",
    "crop",
    "stride",
    "delta",
    "batch_size",
    "average_patches",
    "blend_overlaps",
    "padding",
    "verbose",
    "out_channels",
)
_TILED_KEY = "model.init_args.tiled_inference_parameters"


def _int(params: Mapping[str, Any], name: str, minimum: int) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{_TILED_KEY}.{name}={value!r} must be an integer >= {minimum}.")
    return value


def tiled_from_terratorch(params: Mapping[str, Any]) -> dict[str, Any]:
    """``tiled_forward`` arguments that tile as TerraTorch's ``tiled_inference`` does.

    ``h_crop``/``w_crop`` (else ``crop``, default 224) give ``tile_size``; ``h_stride``/
    ``w_stride`` (else ``stride``, default 192) give ``stride``; ``batch_size`` (default 16)
    is tiles per forward pass; ``delta`` (default 8, lowered to half the overlap as TerraTorch
    does) becomes ``margin``: each tile's outputs within ``delta`` pixels of its edge count only
    where no other tile's inside covers the pixel, as TerraTorch crops them;
    ``blend_overlaps`` true (the default) blends overlapping tiles with weights that fall off
    towards tile edges (geofm's ``window: hann``; TerraTorch's ramp covers only the overlap),
    false averages them equally (``window: uniform``). ``average_patches: true`` and
    ``padding: reflect`` are what geofm always does; ``out_channels`` is ignored with a warning,
    as TerraTorch does. Tiles are spread evenly with steps of at most the stride (TerraTorch
    aligns the last row and column of tiles to the image's end instead).

    Raises:
        ValueError: an unknown key (naming the accepted ones), a value geofm cannot honour
            (``average_patches: false``, a padding other than ``reflect``, ``verbose: true``),
            or sizes that do not tile (a stride larger than the crop). Messages name the key.
    """
    if not isinstance(params, Mapping):
        raise TypeError(
            f"{_TILED_KEY} must be a dict such as {{h_crop: 224, w_crop: 224, h_stride: 192, "
            f"w_stride: 192}}, got {params!r}."
        )
    unknown = [k for k in params if k not in TILED_KEYS]
    if "inference_parameters" in unknown:
        raise ValueError(
            f"{_TILED_KEY}.inference_parameters: TerraTorch's deprecated dataclass is not read; "
            "give its fields (h_crop, w_crop, h_stride, w_stride, ...) directly."
        )
    if unknown:
        hint = close_names(unknown[0], TILED_KEYS)
        raise ValueError(
            f"{_TILED_KEY}.{unknown[0]}: unknown key"
            + (f" (did you mean '{hint[0]}'?)" if hint else "")
            + f". Accepted: {', '.join(TILED_KEYS)}; or write geofm's tiled_inference: "
            "{tile_size, stride or overlap, batch_size, window, margin}."
        )
    given = {k: v for k, v in params.items() if v is not None}
    settings = {**_TILED_DEFAULTS, **given}
    if settings["average_patches"] is not True:
        raise ValueError(
            f"{_TILED_KEY}.average_patches={settings['average_patches']!r}: geofm always averages "
            "overlapping tiles (TerraTorch's default, average_patches: true); it cannot keep the "
            "last tile's value. Remove average_patches."
        )
    padding = settings["padding"]
    if padding not in ("reflect", True):
        raise ValueError(
            f"{_TILED_KEY}.padding={padding!r}: geofm's tiler pads images by reflection "
            "(TerraTorch's default, padding: reflect). Remove padding."
        )
    if settings["verbose"] not in (False, None):
        raise ValueError(
            f"{_TILED_KEY}.verbose={settings['verbose']!r}: geofm's in-memory tiler shows no "
            "progress bar. Remove verbose."
        )
    if not isinstance(settings["blend_overlaps"], bool):
        raise ValueError(
            f"{_TILED_KEY}.blend_overlaps={settings['blend_overlaps']!r} must be true or false."
        )
    if "out_channels" in given:
        log.warning(
            "%s.out_channels is ignored: the tiler takes the channels of the model's output "
            "(TerraTorch deprecated it and ignores it too).",
            _TILED_KEY,
        )
    crop = _int(settings, "crop", 1)
    stride = _int(settings, "stride", 1)
    h_crop = _int(settings, "h_crop", 1) or crop
    w_crop = _int(settings, "w_crop", 1) or crop
    h_stride = _int(settings, "h_stride", 1) or stride
    w_stride = _int(settings, "w_stride", 1) or stride
    for axis, tile, step in (("h", h_crop, h_stride), ("w", w_crop, w_stride)):
        if step > tile:
            source = next((k for k in (f"{axis}_stride", "stride") if k in given), None)
            which = f"{_TILED_KEY}.{source}" if source else f"TerraTorch's default stride ({step})"
            raise ValueError(
                f"{which} is larger than the tile ({axis}_crop={tile}): tiles would leave gaps. "
                f"Give {_TILED_KEY}.{axis}_stride <= {tile}."
            )
    delta = _int(settings, "delta", 0)
    room = min((h_crop - h_stride) // 2, (w_crop - w_stride) // 2)
    if delta > room:
        if "delta" in given:  # TerraTorch lowers it with a warning too
            log.warning(
                "%s.delta=%d is more than half the overlap of the tiles; lowered to %d as "
                "TerraTorch does, so that every pixel lies inside some tile.",
                _TILED_KEY,
                delta,
                room,
            )
        delta = room
    return {
        "tile_size": (h_crop, w_crop),
        "stride": (h_stride, w_stride),
        "batch_size": _int(settings, "batch_size", 1),
        "window": "hann" if settings["blend_overlaps"] else "uniform",
        "margin": delta,
    }


def param_groups_from_lr_overrides(
    lr_overrides: Mapping[str, float], names: Sequence[str]
) -> list[dict[str, Any]]:
    """``param_groups`` that give each ``lr_overrides`` entry's learning rate to every
    parameter whose name contains its key, as TerraTorch does.

    TerraTorch matches each key against the task's parameter names (``model.encoder.x``), so
    here too: a key selects the parameters ``n`` (named inside the model, ``encoder.x``) with
    ``key in "model." + n``; each group's patterns are those names, escaped. A parameter that
    two keys select takes the first key's rate (TerraTorch would put it in two groups, which
    torch refuses). Parameters no key selects keep the optimizer's ``lr``.

    Args:
        lr_overrides: ``{name substring: learning rate}``.
        names: Names of the trainable parameters inside the model.

    Returns:
        ``[{"pattern": [names...], "lr": lr}, ...]`` in the order of ``lr_overrides``.

    Raises:
        ValueError: a key that no trainable parameter name contains, or only names an earlier
            key took (naming the key and example names), or a rate that is not a number.
    """
    groups = []
    taken: set[str] = set()
    for key, lr in lr_overrides.items():
        where = f"model.init_args.lr_overrides.{key}"
        if isinstance(lr, bool) or not isinstance(lr, (int, float)):
            raise ValueError(f"{where}={lr!r} must be a learning rate (a number).")
        selected = [n for n in names if key in f"model.{n}"]
        if not selected:
            raise ValueError(
                f"{where}: no trainable parameter name contains '{key}' (names look like "
                f"{['model.' + n for n in names[:3]]})."
            )
        fresh = [n for n in selected if n not in taken]
        if not fresh:
            raise ValueError(
                f"{where}: every parameter it selects ({len(selected)}) is already selected by "
                "an earlier lr_overrides key; remove one of them."
            )
        taken.update(fresh)
        groups.append({"pattern": [glob.escape(n) for n in fresh], "lr": float(lr)})
    return groups


def aux_decoders_from_aux_heads(aux_heads: Sequence[Any]) -> list[dict[str, Any]]:
    """TerraTorch's ``aux_heads`` (``AuxiliaryHead`` objects or dicts with ``name``,
    ``decoder``, ``decoder_args``) as plain dicts for the factory's ``aux_decoders``.

    Raises:
        ValueError: an entry without ``name`` or ``decoder``, with other keys, or a name
            given twice.
    """
    out: list[dict[str, Any]] = []
    for index, head in enumerate(aux_heads):
        key = f"model.init_args.aux_heads[{index}]"
        if dataclasses.is_dataclass(head) and not isinstance(head, type):
            head = dataclasses.asdict(head)
        if not isinstance(head, Mapping):
            raise ValueError(f"{key} must be a dict {{name, decoder, decoder_args}}, got {head!r}.")
        extra = sorted(set(head) - {"name", "decoder", "decoder_args"})
        if extra or "name" not in head or "decoder" not in head:
            raise ValueError(
                f"{key} needs 'name' and 'decoder' (and optional 'decoder_args', with decoder_* "
                f"and head_* keys); got keys {sorted(head)}."
            )
        args = dict(head.get("decoder_args") or {})
        out.append({"name": head["name"], "decoder": head["decoder"], "decoder_args": args})
    names = [h["name"] for h in out]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"model.init_args.aux_heads names {twice} more than once.")
    return out
