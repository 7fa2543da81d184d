"""Checkpoints of LoRA tasks: the trained part plus a reference to the base weights.

A task with LoRA trains the LoRA weights, necks, decoder and head; the backbone's base weights
stay as the weight file gave them. When the backbone was built from a file
(``model_args.backbone_ckpt_path``, or with ``backbone_pretrained: true`` a Prithvi file in
the local Hugging Face cache), :func:`trim_checkpoint` leaves the backbone's frozen tensors out
of the checkpoint's state dict and records under ``checkpoint["geofm_peft"]``:

- ``base``: the backbone's name, the weight file's path and its sha256;
- ``base_keys``: every state-dict key left out, with a fingerprint (sha256) of its tensor;
- ``settings``: the LoRA settings.

The backbone's first layer (patch embedding or first convolution) is always kept: its
channels for bands the weight file lacks start from a random initialisation, which no file
reproduces. :func:`restore_checkpoint`, called from the task's ``on_load_checkpoint`` (so
Lightning's resume, ``--ckpt_path`` of test/predict and
:func:`geofm.inference.load_task_checkpoint` all pass through it), checks that the task's own
backbone was built from a file with the recorded sha256 and that its tensors have the recorded
fingerprints, then puts them into the checkpoint's state dict; the state dict then loads
strictly, so any other missing key is still an error.

Without a weight file (random initialisation, ``pretrained`` weights geofm cannot locate, a
ready model) nothing refers to the base reproducibly, so checkpoints keep the whole backbone,
and the task logs so once.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "CHECKPOINT_KEY", "base_weights_file", "file_sha256", "restore_checkpoint", "trim_checkpoint",
]

log = logging.getLogger(__name__)

CHECKPOINT_KEY = "geofm_peft"
_ENCODER = "model.encoder."
# (path, size, mtime) -> sha256: a 1.2 GB file is hashed once per process.
_FILE_HASHES: dict[tuple[str, int, int], str] = {}
# (key, storage pointer, version counter) -> fingerprint: the frozen base is hashed once.
_TENSOR_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file (cached by path, size and modification time)."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
        _FILE_HASHES[key] = digest.hexdigest()
    return _FILE_HASHES[key]


def base_weights_file(
    model_args: Mapping[str, Any] | None, encoder: nn.Module | None
) -> Path | None:
    """The file the backbone's weights came from, when there is one.

    ``backbone_ckpt_path`` (or timm's ``backbone_pretrained_cfg_overlay: {file: ...}``), else
    with ``backbone_pretrained: true`` the official file of a geofm backbone in the local
    Hugging Face cache (the file the builder loaded).
    """
    args = model_args or {}
    path = args.get("backbone_ckpt_path")
    overlay = args.get("backbone_pretrained_cfg_overlay")
    if path is None and isinstance(overlay, Mapping):
        path = overlay.get("file")
    if path is not None:
        return Path(path).expanduser()
    if args.get("backbone_pretrained"):
        cfg = getattr(getattr(encoder, "variant", None), "pretrained_cfg", None)
        if getattr(cfg, "hub_repo", None) and getattr(cfg, "hub_file", None):
            from geofm.models.backbones.pretrained import find_cached_file

            return find_cached_file(cfg.hub_repo, cfg.hub_file)
    return None


def _fingerprint(key: str, tensor: torch.Tensor, cached: bool = True) -> str:
    cache_key = (key, tensor.data_ptr(), tensor._version)
    # The check on load hashes afresh: a freed tensor's address is reused, and writes through
    # .data leave _version as it was, so a cached entry could vouch for other weights.
    if not cached or cache_key not in _TENSOR_HASHES:
        data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        digest = hashlib.sha256(f"{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(data.tobytes())
        _TENSOR_HASHES[cache_key] = digest.hexdigest()[:32]
    return _TENSOR_HASHES[cache_key]


def _first_layer_prefix(encoder: nn.Module) -> str | None:
    """State-dict prefix of the encoder's first convolution (patch embedding), if any."""
    for name, module in encoder.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return f"{_ENCODER}{name}."
    return None


def _base_keys(task: Any, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Keys of ``state`` that the weight file fixes: the encoder's tensors that do not train,
    except its first layer's."""
    encoder = task.model.encoder
    trained = {f"{_ENCODER}{n}" for n, p in encoder.named_parameters() if p.requires_grad}
    first = _first_layer_prefix(encoder)
    return [
        k
        for k in state
        if k.startswith(_ENCODER) and k not in trained and not (first and k.startswith(first))
    ]


def _reference(task: Any) -> dict[str, Any] | None:
    """``{backbone, file, sha256}`` of the task's base weights, or ``None`` without a file."""
    args = task.hparams.get("model_args") or {}
    path = base_weights_file(args, getattr(task.model, "encoder", None))
    if path is None:
        return None
    backbone = args.get("backbone")
    return {
        "backbone": backbone if isinstance(backbone, str) else type(task.model.encoder).__name__,
        "file": str(path),
        "sha256": file_sha256(path),
    }


def trim_checkpoint(task: Any, checkpoint: dict[str, Any], settings: Mapping[str, Any]) -> None:
    """Leave the base weights out of ``checkpoint["state_dict"]`` and record their reference.

    Without a weight file the state dict keeps them (``base_keys`` is empty).
    """
    state = checkpoint["state_dict"]
    reference = _reference(task)
    record: dict[str, Any] = {"settings": dict(settings), "base": reference, "base_keys": {}}
    if reference is not None:
        keys = _base_keys(task, state)
        record["base_keys"] = {k: _fingerprint(k, state[k]) for k in keys}
        for key in keys:
            del state[key]
    checkpoint[CHECKPOINT_KEY] = record


def restore_checkpoint(task: Any, checkpoint: dict[str, Any]) -> None:
    """Put the task's base weights back into a trimmed checkpoint's state dict, after checking
    that they are the ones it was trained on.

    Raises:
        ValueError: the task's backbone has no weight file while the checkpoint refers to one,
            the file's sha256 differs from the recorded one (both named), or the rebuilt base
            tensors differ from the recorded fingerprints or lack recorded keys.
    """
    record = checkpoint.get(CHECKPOINT_KEY)
    if not isinstance(record, Mapping) or not record.get("base_keys"):
        return  # not a LoRA checkpoint, or one that keeps its base
    recorded = record["base"]
    args = task.hparams.get("model_args") or {}
    current = base_weights_file(args, getattr(getattr(task, "model", None), "encoder", None))
    if current is None:
        raise ValueError(
            f"The checkpoint holds LoRA weights trained on the base weights of "
            f"'{recorded['file']}' (sha256 {recorded['sha256']}), which it does not contain, but "
            "this task's backbone was built without a weight file. Set "
            f"model_args.backbone_ckpt_path: {recorded['file']}."
        )
    digest = file_sha256(current)
    if digest != recorded["sha256"]:
        raise ValueError(
            f"The checkpoint's LoRA weights were trained on the base weights '{recorded['file']}' "
            f"(sha256 {recorded['sha256']}), but this task's backbone comes from '{current}' "
            f"(sha256 {digest}). Point model_args.backbone_ckpt_path at the file the run was "
            "trained with."
        )
    own = task.state_dict()
    state = checkpoint["state_dict"]
    fingerprints: Mapping[str, str] = record["base_keys"]
    absent = [k for k in fingerprints if k not in own]
    if absent:
        raise ValueError(
            f"The checkpoint leaves out base tensors that this task's model does not have "
            f"({absent[:5]}{' ...' if len(absent) > 5 else ''}): build the task with the "
            "backbone and LoRA settings it was trained with."
        )
    differ = [k for k, f in fingerprints.items() if k not in state and _fingerprint(k, own[k], cached=False) != f]
    if differ:
        raise ValueError(
            f"The base weights rebuilt from '{current}' differ from those the checkpoint was "
            f"trained on in {len(differ)} tensors ({differ[:5]}): build the backbone with the "
            "same settings (bands, in_chans, variant) as the training run."
        )
    for key in fingerprints:
        state.setdefault(key, own[key])
