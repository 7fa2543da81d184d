"""What every geofm model returns and offers: ``ModelOutput``, ``AuxiliaryHead``, ``Model``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["ModelOutput", "AuxiliaryHead", "Model", "freeze_module"]


@dataclass
class ModelOutput:
    """A model's predictions.

    Attributes:
        output: The main output: ``(B, C, H, W)`` class logits, ``(B, H, W)`` regression
            values, or ``(B, C)`` class logits for classification.
        auxiliary_heads: Outputs of the auxiliary heads, by head name, shaped like ``output``.
    """

    output: torch.Tensor
    auxiliary_heads: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class AuxiliaryHead:
    """An extra decoder + head trained beside the main one (deep supervision).

    Args:
        name: Key of its output in ``ModelOutput.auxiliary_heads`` and of its loss weight.
        decoder: Decoder name in ``DECODER_REGISTRY``.
        decoder_args: Keyword arguments with the factory's prefixes: ``decoder_*`` for the
            decoder, ``head_*`` for its head.
    """

    name: str
    decoder: str
    decoder_args: dict[str, Any] | None = None


_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def freeze_module(module: nn.Module) -> None:
    """Stop gradients into ``module`` and put its norm layers in eval mode.

    :class:`Model` keeps those norm layers in eval mode across later ``.train()`` calls, so
    BatchNorm running statistics of a frozen part do not drift.
    """
    for param in module.parameters():
        param.requires_grad_(False)
    for sub in module.modules():
        if isinstance(sub, _NORMS):
            sub.eval()


class Model(nn.Module):
    """Interface of geofm models: ``forward(x, **kwargs) -> ModelOutput`` and freezing."""

    encoder: nn.Module
    decoder: nn.Module
    head: nn.Module

    def _freeze(self, *parts: str) -> None:
        frozen = set(getattr(self, "_frozen_parts", ()))
        for part in parts:
            module = getattr(self, part, None)
            if module is not None:
                freeze_module(module)
                frozen.add(part)
        self._frozen_parts = sorted(frozen)

    def freeze_encoder(self) -> None:
        """Freeze the backbone (no gradients, norm statistics fixed)."""
        self._freeze("encoder")

    def freeze_decoder(self) -> None:
        """Freeze the necks and the decoder."""
        self._freeze("neck", "decoder")

    def freeze_head(self) -> None:
        """Freeze the task head."""
        self._freeze("head")

    def train(self, mode: bool = True) -> Model:
        super().train(mode)
        for part in getattr(self, "_frozen_parts", ()):
            for sub in getattr(self, part).modules():
                if isinstance(sub, _NORMS):
                    sub.eval()
        return self

    def forward(self, x: torch.Tensor, **kwargs: Any) -> ModelOutput:  # pragma: no cover
        raise NotImplementedError
