"""Reading Prithvi ViT checkpoints into a :class:`~geofm.models.backbones.prithvi_vit.PrithviViT`.

Formats understood, each as ``.pt``/``.pth``/``.ckpt`` (``torch.save``) or ``.safetensors``:

- V2 MAE files: ``encoder.*`` (the backbone) and ``decoder.*`` (the MAE decoder, dropped);
- V1 files: flat encoder keys, plus ``decoder_*`` and ``mask_token`` (dropped);
- Lightning checkpoints (``{"state_dict": {...}}``) or any state dict holding the backbone under
  a prefix (``model.encoder.``): the prefix is found from the patch-embedding key, and the
  tensors of the other modules (decoder, head) are ignored.

The backbone's ``pos_embed`` is always recomputed (never read), coordinate-encoding scales are
dropped when the model has no such encoding and kept at the model's value when the checkpoint
has none. Everything else goes through the loader shared with the Swin
(:func:`~geofm.models.backbones.checkpoints.load_backbone_checkpoint`): band adaptation of the
patch embedding and one report of missing, unexpected or mis-shaped keys.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geofm.data.bands import Band
from geofm.models.backbones.checkpoints import load_backbone_checkpoint

__all__ = ["SCALE_KEYS", "prepare_prithvi_state", "load_prithvi_checkpoint"]

log = logging.getLogger(__name__)

SCALE_KEYS = ("temporal_embed_enc.scale", "location_embed_enc.scale")
"""Scales of the time / location encodings, present only in the ``_tl`` models."""


def prepare_prithvi_state(
    state: dict[str, torch.Tensor], expected: Mapping[str, torch.Tensor], source: str
) -> dict[str, torch.Tensor]:
    """The Prithvi-specific part of loading: what the model computes or does not have.

    Args:
        state: Backbone tensors of a checkpoint, prefix removed.
        expected: The model's ``state_dict()``.
        source: Where ``state`` came from, for messages.

    Returns:
        ``state`` without the V1 MAE decoder (``decoder_*``, ``mask_token``), with the model's
        own ``pos_embed``, without coordinate scales the model lacks and with the model's
        scales where the checkpoint lacks them.
    """
    state = dict(state)
    # V1 layout: the MAE decoder sits beside the encoder keys.
    decoder = [k for k in state if k.startswith("decoder_") or k == "mask_token"]
    dropped = [k for k in state if k == "pos_embed" or (k in SCALE_KEYS and k not in expected)]
    for key in decoder + dropped:
        del state[key]
    if decoder:
        log.info(
            "%s: dropped %d MAE decoder tensors (decoder_*, mask_token).", source, len(decoder)
        )
    if dropped:
        log.info("%s: not loaded (recomputed or unused by this model): %s.", source, dropped)
    # Fixed sin-cos values, recomputed for the model's grid.
    state["pos_embed"] = expected["pos_embed"]
    for key in SCALE_KEYS:
        if key in expected and key not in state:
            log.info("%s: has no '%s'; keeping the model's initial value.", source, key)
            state[key] = expected[key]
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
    load_backbone_checkpoint(
        model,
        checkpoint,
        model_bands,
        pretrained_bands,
        model=f"Prithvi ViT (embed_dim={model.embed_dim}, depth={model.depth})",
        what="Prithvi ViT encoder",
        prepare=prepare_prithvi_state,
    )
