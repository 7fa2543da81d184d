"""Loading Prithvi MAE checkpoints, decoder included, into a
:class:`~geofm.models.mae.model.PrithviMAE`.

Layouts understood (any of them as ``.pt``/``.pth``/``.ckpt`` or ``.safetensors``):

- official V2 files: ``encoder.*`` + ``decoder.*`` (``decoder.mask_token``,
  ``decoder.decoder_embed``, ``decoder.decoder_blocks.N``, ``decoder.decoder_norm``,
  ``decoder.decoder_pred``, ``decoder.decoder_pos_embed`` and, for the ``_tl`` models,
  ``decoder.temporal_embed_dec.scale`` / ``decoder.location_embed_dec.scale``);
- official V1 files: flat, encoder keys beside ``decoder_*`` and ``mask_token``;
- geofm's MAE Lightning checkpoints (``model.encoder.*`` + ``model.decoder.*`` under
  ``state_dict``), and any file whose encoder sits under ``<prefix>encoder.`` with its decoder
  under ``<prefix>decoder.``;
- encoder-only files (a fine-tuned backbone, or a fine-tuned task checkpoint whose
  ``decoder.*`` is no MAE decoder): the decoder keeps its fresh initialisation, with a warning.

The encoder goes through the backbone loader
(:func:`~geofm.models.backbones.prithvi_weights.load_prithvi_checkpoint`: band adaptation,
recomputed ``pos_embed``). The decoder's ``decoder_pos_embed`` is recomputed too, and its
``decoder_pred`` rows are matched to the model's bands the way the patch embedding's input
channels are (a patch's values are ordered band fastest).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from geofm.data.bands import Band, band_indices
from geofm.models.backbones.checkpoints import PATCH_EMBED_KEY, check_state_dict, read_checkpoint
from geofm.models.backbones.prithvi_weights import load_prithvi_checkpoint
from geofm.models.mae.model import PrithviMAE

__all__ = ["DECODER_SCALE_KEYS", "decoder_tensors", "load_prithvi_mae_checkpoint"]

log = logging.getLogger(__name__)

DECODER_SCALE_KEYS = ("temporal_embed_dec.scale", "location_embed_dec.scale")
"""Scales of the decoder's time / location codes, present only in the ``_tl`` models."""

_PRED_KEYS = ("decoder_pred.weight", "decoder_pred.bias")


def _tensors(raw: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    for wrapper in ("state_dict", "model"):  # Lightning, and plain training scripts
        if isinstance(raw.get(wrapper), Mapping):
            raw = raw[wrapper]
    return {k: v for k, v in raw.items() if isinstance(v, torch.Tensor)}


def decoder_tensors(raw: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The MAE decoder's tensors in a checkpoint, keys as in :class:`MAEDecoder`.

    The encoder is located by its patch embedding; the decoder is beside it: under
    ``<prefix>decoder.`` when the encoder is under ``<prefix>encoder.`` (V2, Lightning), else
    the ``decoder_*`` and ``mask_token`` keys next to the flat encoder keys (V1).

    Returns:
        The decoder tensors (empty when the file holds none: a ``decoder.`` without
        ``mask_token``, such as a fine-tuned task's UperNet, is not an MAE decoder).
    """
    tensors = _tensors(raw)
    prefixes = sorted({k[: -len(PATCH_EMBED_KEY)] for k in tensors if k.endswith(PATCH_EMBED_KEY)})
    if len(prefixes) != 1:  # the encoder loader reports none or several encoders
        return {}
    prefix = prefixes[0]
    if prefix.endswith("encoder."):
        decoder = prefix[: -len("encoder.")] + "decoder."
        found = {k[len(decoder) :]: v for k, v in tensors.items() if k.startswith(decoder)}
    else:
        flat = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        found = {k: v for k, v in flat.items() if k.startswith("decoder_") or k == "mask_token"}
    # Every MAE decoder has a mask token; a fine-tuning checkpoint's decoder.* has none.
    return found if "mask_token" in found else {}


def _adapt_pred(
    state: dict[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    model_bands: Sequence[Band],
    pretrained_bands: Sequence[Band],
    source: str,
) -> None:
    """Match ``decoder_pred``'s output rows to the model's bands, in place.

    A patch's ``t * p * q * C`` values are ordered band fastest, so the rows of band ``c`` are
    ``c, c + C, c + 2C, ...``. Bands the checkpoint lacks keep the model's initialisation.
    """
    if list(model_bands) == list(pretrained_bands):
        return
    positions = band_indices(model_bands, pretrained_bands, missing="none")
    for key in _PRED_KEYS:
        if key not in state or key not in expected:
            continue
        saved, init = state[key], expected[key]
        values = init.shape[0] // len(model_bands)
        if saved.shape[0] != values * len(pretrained_bands) or saved.shape[1:] != init.shape[1:]:
            return  # another patch size or width: check_state_dict reports it
        saved = saved.reshape(values, len(pretrained_bands), *saved.shape[1:])
        out = init.detach().clone().reshape(values, len(model_bands), *init.shape[1:])
        for channel, position in enumerate(positions):
            if position is not None:
                out[:, channel] = saved[:, position].to(out.dtype)
        state[key] = out.reshape(init.shape)
    new = [b for b, p in zip(model_bands, positions, strict=True) if p is None]
    if new:
        log.warning(
            "%s: bands %s have no decoder_pred rows in the checkpoint; they start fresh.",
            source,
            new,
        )


def load_prithvi_mae_checkpoint(
    model: PrithviMAE,
    path: str | Path,
    model_bands: Sequence[Band],
    pretrained_bands: Sequence[Band],
) -> None:
    """Load a Prithvi MAE (or encoder-only) checkpoint into ``model``, in place.

    Args:
        model: The MAE.
        path: The weight file.
        model_bands: The model's input bands, in channel order.
        pretrained_bands: The checkpoint's bands, in channel order.

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when it is unreadable or its encoder or decoder tensors do not fit (one
            message listing every missing, unexpected and mis-shaped key).
    """
    load_prithvi_checkpoint(model.encoder, path, model_bands, pretrained_bands)
    source = f"ckpt_path='{path}'"
    state = decoder_tensors(read_checkpoint(path))
    decoder = model.decoder
    if not state:
        log.warning(
            "%s holds no MAE decoder (decoder.* or decoder_* keys): the encoder is loaded, the "
            "decoder starts from random weights.",
            source,
        )
        return
    expected = decoder.state_dict()
    dropped = [k for k in DECODER_SCALE_KEYS if k in state and k not in expected]
    for key in [*dropped, "decoder_pos_embed"]:
        state.pop(key, None)
    if dropped:
        log.info("%s: not loaded (this model has no such code): %s.", source, dropped)
    state["decoder_pos_embed"] = expected["decoder_pos_embed"]  # fixed sin-cos, recomputed
    for key in DECODER_SCALE_KEYS:
        if key in expected and key not in state:
            log.info("%s: has no 'decoder.%s'; keeping the model's initial value.", source, key)
            state[key] = expected[key]
    _adapt_pred(state, expected, model_bands, pretrained_bands, source)
    description = (
        f"Prithvi MAE decoder (decoder_embed_dim={decoder.embed_dim}, "
        f"decoder_depth={len(decoder.decoder_blocks)}, bands={len(model_bands)})"
    )
    check_state_dict(expected, state, source, description)
    decoder.load_state_dict(state, strict=True)
    log.info("Loaded %d tensors into the %s from %s.", len(state), description, source)
