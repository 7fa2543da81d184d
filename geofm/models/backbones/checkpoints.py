"""Reading backbone weight files, whatever the architecture, and fitting their first layer to bands.

Shared by the Prithvi ViT (:mod:`~geofm.models.backbones.prithvi_weights`) and Prithvi Swin
(:mod:`~geofm.models.backbones.prithvi_swin`) loaders:

- :func:`read_checkpoint`: the top-level mapping of a ``.safetensors`` or ``torch.save`` file;
- :func:`backbone_tensors`: the backbone's tensors in it, found under whatever key prefix
  (``encoder.``, ``model.encoder.``...) precedes the patch embedding, prefix removed;
- :func:`adapt_input_channels`: the patch-embedding (first-layer) weight for the model's bands,
  channel slices copied from the checkpoint band by band;
- :func:`check_state_dict`: the one report of missing, unexpected and mis-shaped keys;
- :func:`load_backbone_checkpoint`: the four steps above and ``load_state_dict``, with an
  architecture's own key handling plugged in (``prepare``).
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geofm.data.bands import KNOWN_BAND_ENUMS, Band, band_indices

__all__ = [
    "PATCH_EMBED_KEY",
    "listed",
    "read_checkpoint",
    "backbone_tensors",
    "adapt_input_channels",
    "check_state_dict",
    "load_backbone_checkpoint",
]

log = logging.getLogger(__name__)

_Prepare = Callable[
    [dict[str, torch.Tensor], Mapping[str, torch.Tensor], str], dict[str, torch.Tensor]
]

PATCH_EMBED_KEY = "patch_embed.proj.weight"
"""The first layer of timm-style ViTs and Swins: adapted to the bands, and the key that
locates the backbone in a checkpoint."""


def listed(items: Sequence[str], limit: int = 12) -> str:
    """The first ``limit`` items, comma-separated, and how many there are in all."""
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a weight file, tensors on the CPU.

    ``torch.save`` files are read with ``weights_only=True`` (a weight file must never run
    code) and memory-mapped when they are zip archives, so a 600M model is not copied twice.

    Raises:
        FileNotFoundError: when ``path`` is not a file.
        ValueError: when the file cannot be read as weights.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"Weight file ckpt_path='{path}' does not exist.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path), device="cpu"))
    try:
        # geofm's own Lightning checkpoints may hold band enums in their hyperparameters.
        with torch.serialization.safe_globals(list(KNOWN_BAND_ENUMS)):
            loaded = torch.load(
                path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path)
            )
    except Exception as err:  # torch raises several types for unreadable or unsafe pickles
        raise ValueError(
            f"Could not read ckpt_path='{path}' as weights ({type(err).__name__}: {err}). Pass a "
            ".safetensors file or a torch.save file of tensors (.pt/.pth/.ckpt). A checkpoint "
            "that pickles other objects can be re-saved, if you trust it, with "
            "torch.save({'state_dict': torch.load(path, weights_only=False)['state_dict']}, new)."
        ) from err
    if not isinstance(loaded, Mapping):
        raise ValueError(
            f"ckpt_path='{path}' holds a {type(loaded).__name__}, not a state dict; save "
            "model.state_dict() instead of the model."
        )
    return dict(loaded)


def backbone_tensors(
    raw: Mapping[str, Any],
    source: str = "checkpoint",
    what: str = "backbone",
    anchor: str = PATCH_EMBED_KEY,
    hints: Mapping[str, str] | None = None,
) -> tuple[str, dict[str, torch.Tensor]]:
    """The tensors of the one backbone in a checkpoint, keys as in the model.

    Args:
        raw: A file's top-level mapping: a state dict, a Lightning checkpoint
            (``{"state_dict": ...}``) or ``{"model": ...}``.
        source: Where ``raw`` came from, for messages.
        what: What is looked for, for messages (``"Prithvi ViT encoder"``).
        anchor: A key of the backbone; whatever precedes it in the checkpoint (``encoder.``,
            ``model.encoder.``, nothing) is the backbone's prefix.
        hints: Key suffix -> advice added to the error when ``anchor`` is absent but a key
            ends with that suffix (a known layout that is not converted).

    Returns:
        ``(prefix, tensors)``: the prefix found, and the tensors under it with the prefix
        removed. Tensors outside it (an MAE decoder, a fine-tuned model's decoder and head)
        are ignored, and logged.

    Raises:
        ValueError: when no or several backbones are found.
    """
    for wrapper in ("state_dict", "model"):  # Lightning, and plain training scripts
        if isinstance(raw.get(wrapper), Mapping):
            raw = raw[wrapper]
    tensors = {k: v for k, v in raw.items() if isinstance(v, torch.Tensor)}
    prefixes = sorted({k[: -len(anchor)] for k in tensors if k.endswith(anchor)})
    if not prefixes:
        advice = "".join(
            f" {text}"
            for suffix, text in (hints or {}).items()
            if any(k.endswith(suffix) for k in tensors)
        )
        raise ValueError(
            f"{source} holds no {what} (no key ending in '{anchor}'); first keys: "
            f"{listed(list(tensors))}.{advice}"
        )
    if len(prefixes) > 1:
        raise ValueError(
            f"{source} holds several {what}s, under the key prefixes {prefixes}; save the one "
            "to load on its own."
        )
    prefix = prefixes[0]
    state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    others = [k for k in tensors if not k.startswith(prefix)]
    if others:
        depth = prefix.count(".")
        groups = sorted({".".join(k.split(".")[:depth]) for k in others})
        log.info(
            "%s: using the %d tensors under prefix '%s'; ignoring %d others (%s).",
            source,
            len(state),
            prefix,
            len(others),
            ", ".join(f"{g}.*" for g in groups),
        )
    return prefix, state


def adapt_input_channels(
    weight: torch.Tensor,
    init: torch.Tensor,
    model_bands: Sequence[Band],
    pretrained_bands: Sequence[Band],
    source: str = "checkpoint",
    key: str = PATCH_EMBED_KEY,
) -> torch.Tensor:
    """A first-layer weight for the model's bands, built from the checkpoint's.

    Channel ``i`` of the result is the checkpoint's channel of band ``model_bands[i]`` when
    ``pretrained_bands`` has it (any order, any subset); the other channels keep ``init``, the
    model's own initialisation, and are logged as a warning (they must be learned).

    Args:
        weight: The checkpoint's weight ``(D, C_ckpt, *kernel)``, e.g. ``(D, C, p, p)`` for a
            2D patch embedding or ``(D, C, t, p, p)`` for a 3D one.
        init: The model's weight ``(D, C_model, *kernel)``; on the meta device, new bands
            start at zero.
        model_bands: The model's input bands, in channel order (``C_model`` of them).
        pretrained_bands: The checkpoint's input bands, in channel order (``C_ckpt``).
        source: Where ``weight`` came from, for messages.
        key: The weight's state-dict key, for messages.

    Returns:
        ``(D, C_model, *kernel)`` in ``init``'s dtype, on ``weight``'s device. A ``weight``
        whose other dimensions differ from ``init``'s (another architecture) is returned
        unchanged, for the caller's shape check to report with the other mismatches.

    Raises:
        ValueError: when ``weight`` has another number of channels than ``pretrained_bands``.
    """
    if weight.ndim < 2 or weight.shape[1] != len(pretrained_bands):
        channels = weight.shape[1] if weight.ndim >= 2 else "no"
        raise ValueError(
            f"{source} has {channels} input channels in '{key}' but pretrained_bands lists "
            f"{len(pretrained_bands)}: {list(pretrained_bands)}. Pass pretrained_bands= with "
            "the checkpoint's bands in channel order."
        )
    same_kernel = weight.ndim == init.ndim and weight.shape[2:] == init.shape[2:]
    if not same_kernel or weight.shape[0] != init.shape[0]:
        return weight
    if init.is_meta and not weight.is_meta:
        # A model built on the meta device has no values to keep.
        out = torch.zeros(init.shape, dtype=init.dtype, device=weight.device)
    else:
        # In the model's dtype, so that new bands keep their initialisation exactly.
        out = init.detach().to(device=weight.device).clone()
    positions = band_indices(model_bands, pretrained_bands, missing="none")
    for channel, position in enumerate(positions):
        if position is not None:
            out[:, channel] = weight[:, position].to(out.dtype)
    copied = [b for b, p in zip(model_bands, positions, strict=True) if p is not None]
    new = [b for b, p in zip(model_bands, positions, strict=True) if p is None]
    log.info("%s: patch-embedding weights copied for bands %s.", source, copied)
    if new:
        log.warning(
            "%s: bands %s are not among the checkpoint's bands %s; their patch-embedding "
            "weights are newly initialised and must be learned.",
            source,
            new,
            list(pretrained_bands),
        )
    return out


def check_state_dict(
    expected: Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    source: str,
    model: str,
) -> None:
    """Raise one error listing every key problem between a checkpoint and a model.

    The message reads ``<source> does not fit this <model>: missing keys: a, b; unexpected
    keys: c; shape mismatches: d: checkpoint (2, 3), model (4, 3). ...``, keys in the model's
    order (the checkpoint's for unexpected ones), at most 12 of each.

    Args:
        expected: The model's ``state_dict()``.
        state: The checkpoint tensors, keys as in the model.
        source: Where ``state`` came from (``ckpt_path='...'``).
        model: What the model is, with the dimensions that tell variants apart
            (``"Prithvi ViT (embed_dim=192, depth=12)"``).

    Raises:
        ValueError: when a key is missing, unexpected or of another shape.
    """
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)}, model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = [
        f"{what}: {listed(keys)}"
        for what, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        )
        if keys
    ]
    if problems:
        raise ValueError(
            f"{source} does not fit this {model}: {'; '.join(problems)}. Check that the variant "
            "and its arguments match the checkpoint."
        )


def load_backbone_checkpoint(
    target: nn.Module,
    checkpoint: str | Path | Mapping[str, Any],
    model_bands: Sequence[Band],
    pretrained_bands: Sequence[Band],
    model: str,
    what: str,
    prepare: _Prepare | None = None,
    hints: Mapping[str, str] | None = None,
) -> None:
    """Load a weight file (or its loaded mapping) into a backbone, in place.

    Steps: read the file (:func:`read_checkpoint`), find the backbone's tensors
    (:func:`backbone_tensors`), apply the architecture's own renames and drops (``prepare``),
    fit the patch embedding to the bands (:func:`adapt_input_channels`), report key problems
    (:func:`check_state_dict`), then ``load_state_dict(strict=True)``.

    Args:
        target: The module whose ``state_dict()`` keys the checkpoint must match.
        checkpoint: Path of a weight file, or its top-level mapping.
        model_bands: The model's input bands, in channel order.
        pretrained_bands: The checkpoint's input bands, in channel order.
        model: What ``target`` is, for the key report (see :func:`check_state_dict`).
        what: What is looked for in the file, for messages (``"Prithvi ViT encoder"``).
        prepare: ``(tensors, expected, source) -> tensors``: this architecture's drops,
            renames and values it supplies itself (``expected`` is ``target.state_dict()``).
        hints: Passed to :func:`backbone_tensors`.

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when the file is unreadable, holds no or several backbones, or its tensors
            do not fit ``target``.
    """
    if isinstance(checkpoint, (str, Path)):
        source = f"ckpt_path='{checkpoint}'"
        raw: Mapping[str, Any] = read_checkpoint(checkpoint)
    else:
        source, raw = "checkpoint", checkpoint
    _, state = backbone_tensors(raw, source, what=what, hints=hints)
    expected = target.state_dict()
    if prepare is not None:
        state = prepare(state, expected, source)
    if PATCH_EMBED_KEY in state and PATCH_EMBED_KEY in expected:
        state[PATCH_EMBED_KEY] = adapt_input_channels(
            state[PATCH_EMBED_KEY], expected[PATCH_EMBED_KEY], model_bands, pretrained_bands, source
        )
    check_state_dict(expected, state, source, model)
    target.load_state_dict(state, strict=True)
    log.info("Loaded %d tensors into the %s from %s.", len(state), model, source)
