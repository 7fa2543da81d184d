"""The MAE reconstruction loss: mean squared error on the masked patches, nodata excluded."""

from __future__ import annotations

import torch

__all__ = ["NORM_PIX_EPS", "masked_patch_loss", "patch_target"]

#: Added to a patch's variance before dividing by its square root (the official value).
NORM_PIX_EPS = 1.0e-6


def patch_target(
    patches: torch.Tensor, valid: torch.Tensor, norm_pix_loss: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The values the decoder learns to predict, per patch.

    Args:
        patches: ``(B, N, K)`` normalised input values, patchified.
        valid: ``(B, N, K)`` bool, False at nodata.
        norm_pix_loss: Normalise each patch by the mean and (unbiased) variance of its valid
            values, as the official ``norm_pix_loss`` does (identical when all are valid).

    Returns:
        ``(target, mean, std)``: ``target`` ``(B, N, K)`` (0 where not valid), and the
        ``(B, N, 1)`` statistics that map a prediction back to input units
        (``pred * std + mean``; 0 and 1 without ``norm_pix_loss``).
    """
    weights = valid.to(patches.dtype)
    values = torch.where(valid, patches, torch.zeros_like(patches))
    if not norm_pix_loss:
        ones = torch.ones_like(values[..., :1])
        return values, torch.zeros_like(ones), ones
    count = weights.sum(-1, keepdim=True)
    mean = values.sum(-1, keepdim=True) / count.clamp(min=1)
    var = (((values - mean) * weights) ** 2).sum(-1, keepdim=True) / (count - 1).clamp(min=1)
    std = (var + NORM_PIX_EPS).sqrt()
    return (values - mean) / std * weights, mean, std


def masked_patch_loss(
    pred: torch.Tensor,
    patches: torch.Tensor,
    mask: torch.Tensor,
    valid: torch.Tensor | None = None,
    norm_pix_loss: bool = True,
) -> torch.Tensor:
    """Mean squared error over the valid values of the masked patches.

    Each masked patch's loss is the mean over its valid values; the batch loss is the mean over
    masked patches that have any (with ``norm_pix_loss``: at least two, for a variance). Visible
    patches never count: the MAE sees them.

    Args:
        pred: ``(B, N, K)`` predicted patch values.
        patches: ``(B, N, K)`` normalised input values, patchified (NaN allowed where not valid).
        mask: ``(B, N)``, 1 for masked patches.
        valid: ``(B, N, K)`` bool, False at nodata (default: where ``patches`` is finite).
        norm_pix_loss: Predict per-patch normalised values (see :func:`patch_target`).

    Returns:
        A scalar; 0 (still attached to ``pred``) when no masked patch has valid values.
    """
    # A bf16 prediction (mixed precision) is computed against the float32 target in float32,
    # as the official loss does by type promotion: bf16 value counts would round (257 -> 256).
    pred = pred.to(torch.promote_types(pred.dtype, patches.dtype))
    if valid is None:
        valid = torch.isfinite(patches)
    valid = valid & torch.isfinite(patches)
    target, _, _ = patch_target(patches, valid, norm_pix_loss)
    weights = valid.to(pred.dtype)
    count = weights.sum(-1)
    per_patch = ((pred - target) ** 2 * weights).sum(-1) / count.clamp(min=1)
    counted = mask.to(pred.dtype) * (count >= (2 if norm_pix_loss else 1)).to(pred.dtype)
    return (per_patch * counted).sum() / counted.sum().clamp(min=1)
