"""Models with one prediction per pixel (segmentation, pixel-wise regression)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from geofm.models.model import EncoderDecoderModel, ModelOutput, pad_to_multiple, run_necks

__all__ = ["PixelWiseModel"]


class PixelWiseModel(EncoderDecoderModel):
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

    tasks = ("segmentation", "regression")

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
        super().__init__(task, encoder, decoder, head, necks, aux_heads)
        self.rescale = rescale

    def _finish(self, out: torch.Tensor, size: tuple[int, int], padded: tuple[int, int]) -> torch.Tensor:
        """Resize, crop the padding and, for regression, drop the channel axis.

        This is the one place where the regression channel is removed, so every decoder (with
        or without its own head) gives ``(B, H, W)``.
        """
        squeeze = out.ndim == 3
        if squeeze:
            out = out.unsqueeze(1)
        if self.rescale and tuple(out.shape[-2:]) != padded:
            out = F.interpolate(out, size=padded, mode="bilinear", align_corners=False)
        # Crop the padding away, in the output's own resolution when it was not rescaled.
        # Integer ceil-division: exact, and a size expression torch.export can save.
        rows = -(-size[0] * out.shape[-2] // padded[0])
        cols = -(-size[1] * out.shape[-1] // padded[1])
        out = out[..., :rows, :cols]
        if self.task == "regression":
            if out.shape[1] != 1:
                raise ValueError(
                    f"A regression model predicts one value per pixel, but its decoder/head gave "
                    f"{out.shape[1]} channels (output shape {tuple(out.shape)})."
                )
            return out[:, 0]
        return out.squeeze(1) if squeeze else out

    def forward(self, x: torch.Tensor, **kwargs: Any) -> ModelOutput:
        """Predict for ``x`` ``(B, C, H, W)`` or ``(B, C, T, H, W)``.

        Keyword inputs (``temporal_coords``, ``location_coords``...) go to the backbone.
        """
        x, size, padded = pad_to_multiple(x, self.pad_multiple)
        features = run_necks(self.neck, self.encoder(x, **kwargs), padded)
        output = self._finish(self.head(self.decoder(features)), size, padded)
        aux = {name: self._finish(module(features), size, padded) for name, module in self.aux_heads.items()}
        return ModelOutput(output=output, auxiliary_heads=aux)


