"""Models with one prediction per pixel (segmentation, pixel-wise regression)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from geofm.models.model import Model, ModelOutput

__all__ = ["PixelWiseModel", "pad_to_multiple", "run_necks"]


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad the last two dims of ``x`` (reflect) up to a multiple of ``multiple``.

    Args:
        x: ``(B, C, H, W)`` or ``(B, C, T, H, W)``.

    Returns:
        The padded tensor and the original ``(H, W)``.
    """
    height, width = x.shape[-2:]
    pad_h = -height % multiple
    pad_w = -width % multiple
    if multiple <= 1 or not (pad_h or pad_w):
        return x, (height, width)
    # Reflect needs the pad to be smaller than the size; tiny inputs fall back to replicate.
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    pad = [0, pad_w, 0, pad_h] + [0, 0] * (x.ndim - 4)
    return F.pad(x, pad, mode=mode), (height, width)


def run_necks(necks: nn.ModuleList, features: list[torch.Tensor], image_size: tuple[int, int]) -> list[torch.Tensor]:
    """Pass ``features`` through each neck in turn; necks receive the input's (H, W)."""
    for neck in necks:
        features = neck(features, image_size=image_size)
    return features


def input_multiple(encoder: nn.Module) -> int:
    """The size multiple the encoder needs: its patch size and coarsest stride (their LCM)."""
    patch = getattr(encoder, "patch_size", None)
    strides = getattr(encoder, "strides", None)
    multiple = int(max(strides)) if strides else 1
    if patch is not None:
        multiple = math.lcm(multiple, int(patch[-1] if isinstance(patch, (tuple, list)) else patch))
    return multiple


class PixelWiseModel(Model):
    """Backbone → necks → decoder → head, with an output per pixel.

    Args:
        task: ``"segmentation"`` (output ``(B, num_classes, H, W)``) or ``"regression"``
            (output ``(B, H, W)``).
        encoder: Backbone returning ``list[Tensor]``.
        decoder: Decoder returning ``(B, C, H', W')``.
        head: Task head (``nn.Identity`` when the decoder includes it).
        necks: Necks applied in order between encoder and decoder.
        aux_heads: Extra decoder+head modules by name, run on the same necked features.
        rescale: Resize outputs to the input's height and width (bilinear) when they differ.
    """

    def __init__(
        self,
        task: str,
        encoder: nn.Module,
        decoder: nn.Module,
        head: nn.Module,
        necks: list[nn.Module] | None = None,
        aux_heads: dict[str, nn.Module] | None = None,
        rescale: bool = True,
    ):
        super().__init__()
        if task not in ("segmentation", "regression"):
            raise ValueError(f"PixelWiseModel task must be 'segmentation' or 'regression', got '{task}'.")
        self.task = task
        self.encoder = encoder
        self.neck = nn.ModuleList(necks or [])
        self.decoder = decoder
        self.head = head
        self.aux_heads = nn.ModuleDict(aux_heads or {})
        self.rescale = rescale
        self.pad_multiple = input_multiple(encoder)

    def _finish(self, out: torch.Tensor, size: tuple[int, int], padded: tuple[int, int]) -> torch.Tensor:
        squeeze = out.ndim == 3
        if squeeze:
            out = out.unsqueeze(1)
        if self.rescale and tuple(out.shape[-2:]) != padded:
            out = F.interpolate(out, size=padded, mode="bilinear", align_corners=False)
        # Crop the padding away, in the output's own resolution when it was not rescaled.
        rows = math.ceil(size[0] * out.shape[-2] / padded[0])
        cols = math.ceil(size[1] * out.shape[-1] / padded[1])
        out = out[..., :rows, :cols]
        if self.task == "regression" and out.shape[1] == 1:
            return out.squeeze(1)
        return out.squeeze(1) if squeeze else out

    def forward(self, x: torch.Tensor, **kwargs: Any) -> ModelOutput:
        """Predict for ``x`` ``(B, C, H, W)`` or ``(B, C, T, H, W)``.

        Keyword inputs (``temporal_coords``, ``location_coords``...) go to the backbone.
        """
        x, size = pad_to_multiple(x, self.pad_multiple)
        padded = tuple(x.shape[-2:])
        features = run_necks(self.neck, self.encoder(x, **kwargs), padded)
        output = self._finish(self.head(self.decoder(features)), size, padded)
        aux = {name: self._finish(module(features), size, padded) for name, module in self.aux_heads.items()}
        return ModelOutput(output=output, auxiliary_heads=aux)


