"""Reading Prithvi ViT checkpoints into a :class:`~geofm.models.backbones.prithvi_vit.PrithviViT`.

Formats understood, each as ``.pt``/``.pth``/``.ckpt`` (``torch.save``) or ``.safetensors``:

- V2 MAE files: ``encoder.*`` (the backbone) and ``decoder.*`` (the MAE decoder, dropped);
- V1 files: flat encoder keys, plus ``decoder_*`` and ``mask_token`` (dropped);
- Lightning checkpoints (``{"state_dict": {...}}``) or any state dict holding the backbone under
  a prefix (``model.encoder.``): the prefix is found from the patch-embedding key, and the
  tensors of the other modules (decoder, head) are ignored.

The backbone's ``pos_embed`` is always recomputed (never read), coordinate-encoding scales are
dropped when the model has no such encoding, and the patch embedding is assembled band by band
(:func:`~geofm.models.backbones.checkpoints.adapt_input_channels`). Any other missing,
unexpected or mis-shaped tensor is an error that lists the keys. Reading files and finding the
prefix are shared with the Swin loader (:mod:`geofm.models.backbones.checkpoints`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geofm.data.bands import Band
from geofm.models.backbones.checkpoints import (
    PATCH_EMBED_KEY,
    adapt_input_channels,
    backbone_tensors,
    listed,
    read_checkpoint,
)

__all__ = [
    "SCALE_KEYS",
    "hf_cache_dir",
    "find_cached_file",
    "encoder_state_dict",
    "convert_state_dict",
    "load_prithvi_checkpoint",
]

log = logging.getLogger(__name__)

SCALE_KEYS = ("temporal_embed_enc.scale", "location_embed_enc.scale")
"""Scales of the time / location encodings, present only in the ``_tl`` models."""


# ------------------------------------------------------------------------------ finding files
def hf_cache_dir() -> Path:
    """The Hugging Face hub cache: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else the default."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.environ[variable]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def find_cached_file(repo_id: str, filename: str, cache_dir: Path | None = None) -> Path | None:
    """The local copy of ``filename`` of the Hugging Face model ``repo_id``, without network.

    Asks ``huggingface_hub`` (the ``hub`` extra) when installed, then looks for
    ``models--<owner>--<name>/snapshots/*/<filename>`` itself (newest snapshot first), which
    also finds files copied there by hand.
    """
    cache_dir = cache_dir or hf_cache_dir()
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        pass
    else:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=str(cache_dir))
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    snapshots = cache_dir / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    candidates = [p for p in snapshots.glob(f"*/{filename}") if p.is_file()]
    if not candidates:
        return None
    return max(candidates, key=lambda p: p.stat().st_mtime)


# ------------------------------------------------------------------------------ reading files
def encoder_state_dict(
    raw: Mapping[str, Any], source: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """The backbone tensors of a checkpoint, keys as in the model (prefix stripped).

    Args:
        raw: A file's top-level mapping: an official V1/V2 state dict, a Lightning checkpoint
            or any state dict holding the backbone under a prefix.
        source: Where ``raw`` came from, for messages.

    Tensors outside the backbone's prefix (an MAE decoder, a fine-tuned model's decoder and
    head) are ignored; the keys under it are checked later by :func:`convert_state_dict`.

    Raises:
        ValueError: when no or several backbones are found.
    """
    prefix, state = backbone_tensors(raw, source, what="Prithvi ViT encoder")
    if prefix == "":
        # V1 layout: the MAE decoder sits beside the encoder keys.
        decoder = [k for k in state if k.startswith("decoder_") or k == "mask_token"]
        for key in decoder:
            del state[key]
        if decoder:
            log.info(
                "%s: dropped %d MAE decoder tensors (decoder_*, mask_token).", source, len(decoder)
            )
    return state


# ------------------------------------------------------------------------------ converting
def convert_state_dict(
    model: nn.Module,
    encoder: Mapping[str, torch.Tensor],
    model_bands: Sequence[Band],
    pretrained_bands: Sequence[Band],
    source: str = "checkpoint",
) -> dict[str, torch.Tensor]:
    """A complete state dict for ``model`` built from checkpoint encoder tensors.

    Args:
        model: The backbone to load (its own ``pos_embed``, scales and new band channels are
            kept).
        encoder: Encoder tensors with the model's key names (see :func:`encoder_state_dict`).
        model_bands: The model's input bands, in channel order.
        pretrained_bands: The checkpoint's input bands, in channel order.
        source: Where the tensors came from, for messages.

    Returns:
        Tensors for every key of ``model.state_dict()``, to load with ``strict=True``.

    Raises:
        ValueError: listing every missing, unexpected and mis-shaped key.
    """
    expected = model.state_dict()
    # The first layer fitted to the bands first, so that every shape compares as it is.
    encoder = dict(encoder)
    encoder[PATCH_EMBED_KEY] = adapt_input_channels(
        encoder[PATCH_EMBED_KEY], expected[PATCH_EMBED_KEY], model_bands, pretrained_bands, source
    )
    ignored = ["pos_embed"] + [k for k in SCALE_KEYS if k not in expected]
    dropped = [k for k in encoder if k in ignored]
    unexpected = [k for k in encoder if k not in expected and k not in ignored]
    # The model's own values stand for these when the checkpoint lacks them.
    own = ["pos_embed"] + [k for k in SCALE_KEYS if k in expected and k not in encoder]
    missing = [k for k in expected if k not in encoder and k not in own]
    mismatched = []
    for key, value in encoder.items():
        if key not in expected or key in ignored:
            continue
        want = expected[key].shape
        if value.shape != want:
            mismatched.append(f"{key}: checkpoint {tuple(value.shape)}, model {tuple(want)}")
    problems = []
    if missing:
        problems.append(f"missing keys: {listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {listed(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {listed(mismatched)}")
    if problems:
        raise ValueError(
            f"{source} does not fit this Prithvi ViT "
            f"(embed_dim={expected['cls_token'].shape[-1]}, "
            f"depth={sum(k.endswith('norm1.weight') for k in expected)}): "
            + "; ".join(problems)
            + ". Check that the variant matches the checkpoint."
        )
    if dropped:
        log.info("%s: not loaded (recomputed or unused by this model): %s.", source, dropped)
    for key in own[1:]:
        log.info("%s: has no '%s'; keeping the model's initial value.", source, key)
    state = {k: encoder[k] if k in encoder and k not in ignored else v for k, v in expected.items()}
    state["pos_embed"] = expected["pos_embed"]
    return state


def load_prithvi_checkpoint(
    model: nn.Module,
    checkpoint: str | Path | Mapping[str, Any],
    model_bands: Sequence[Band],
    pretrained_bands: Sequence[Band],
) -> None:
    """Load a Prithvi checkpoint (a file or its loaded mapping) into ``model``, in place.

    Args:
        model: A :class:`~geofm.models.backbones.prithvi_vit.PrithviViT`.
        checkpoint: Path of a weight file, or its top-level mapping.
        model_bands: The model's input bands, in channel order.
        pretrained_bands: The checkpoint's input bands, in channel order.

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when the file is unreadable or its tensors do not fit the model.
    """
    if isinstance(checkpoint, (str, Path)):
        source = f"ckpt_path='{checkpoint}'"
        raw = read_checkpoint(checkpoint)
    else:
        source, raw = "checkpoint", checkpoint
    encoder = encoder_state_dict(raw, source)
    state = convert_state_dict(model, encoder, model_bands, pretrained_bands, source)
    model.load_state_dict(state, strict=True)
    log.info("Loaded Prithvi ViT weights from %s.", source)
