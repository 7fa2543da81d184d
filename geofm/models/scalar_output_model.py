"""Models with one prediction per image (classification)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from geofm.models.model import EncoderDecoderModel, ModelOutput, pad_to_multiple, run_necks

__all__ = ["ScalarOutputModel", "pool_spatial"]


def pool_spatial(x: torch.Tensor) -> torch.Tensor:
    """Average ``(B, C, H, W)`` over H and W; ``(B, C)`` passes through."""
    if x.ndim == 4:
        return x.mean(dim=(-2, -1))
    if x.ndim == 2:
        return x
    raise ValueError(f"Expected decoder output (B, C, H, W) or (B, C), got shape {tuple(x.shape)}.")


class ScalarOutputModel(EncoderDecoderModel):
    """Backbone → necks → decoder → head, with ``(B, num_classes)`` output.

    The head gets the decoder output as it is and pools it (see
    :class:`~geofm.models.heads.ClassificationHead`'s ``linear_after_pool``); a decoder that
    includes its head and returns ``(B, num_classes, H, W)`` has its logits averaged over H and W.

    Args:
        task: ``"classification"``.
        encoder: Backbone returning ``list[Tensor]``.
        decoder: Decoder returning ``(B, C, H, W)`` or ``(B, C)``.
        head: Classification head taking the decoder output, ``(B, C, H, W)`` or ``(B, C)``
            (``nn.Identity`` when the decoder includes it).
        necks: Necks applied in order between encoder and decoder.
        aux_heads: Extra decoder+head modules by name.
    """

    tasks = ("classification",)

    def __init__(
        self,
        task: str,
        encoder: nn.Module,
        decoder: nn.Module,
        head: nn.Module,
        necks: list[nn.Module] | None = None,
        aux_heads: dict[str, nn.Module] | None = None,
    ):
        super().__init__(task, encoder, decoder, head, necks, aux_heads)

    def forward(self, x: torch.Tensor, **kwargs: Any) -> ModelOutput:
        """Class logits ``(B, num_classes)`` for ``x`` ``(B, C, H, W)`` or ``(B, C, T, H, W)``."""
        x, _, padded = pad_to_multiple(x, self.pad_multiple)
        features = run_necks(self.neck, self.encoder(x, **kwargs), padded)
        output = pool_spatial(self.head(self.decoder(features)))
        aux = {name: module(features) for name, module in self.aux_heads.items()}
        return ModelOutput(output=output, auxiliary_heads=aux)
