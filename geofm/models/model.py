"""What every geofm model returns and offers: ``ModelOutput``, ``AuxiliaryHead``, ``Model``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ModelOutput", "AuxiliaryHead", "Model", "EncoderDecoderModel", "freeze_module", "pad_to_multiple", "run_necks", "input_multiple"]


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


def pad_to_multiple(
    x: torch.Tensor | Mapping[str, torch.Tensor], multiple: int
) -> tuple[Any, tuple[int, int], tuple[int, int]]:
    """Pad the last two dims of ``x`` (reflect) up to a multiple of ``multiple``.

    Args:
        x: ``(B, C, H, W)`` or ``(B, C, T, H, W)``, or a dict of them by modality (multimodal
            inputs share one grid; each is padded alike).

    Returns:
        The padded input, the original ``(H, W)`` and the padded ``(H, W)``.
    """
    if isinstance(x, Mapping):
        padded = {key: pad_to_multiple(value, multiple) for key, value in x.items()}
        if not padded:
            raise ValueError("The model got an empty dict of inputs.")
        first = next(iter(padded.values()))
        return {key: value[0] for key, value in padded.items()}, first[1], first[2]
    height, width = x.shape[-2:]
    pad_h = -height % multiple
    pad_w = -width % multiple
    if multiple <= 1 or not (pad_h or pad_w):
        return x, (height, width), (height, width)
    # Reflect needs the pad to be smaller than the size; tiny inputs fall back to replicate.
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    pad = [0, pad_w, 0, pad_h] + [0, 0] * (x.ndim - 4)
    return F.pad(x, pad, mode=mode), (height, width), (height + pad_h, width + pad_w)


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


class EncoderDecoderModel(Model):
    """Shared parts of the factory's models: encoder, necks, decoder, head, auxiliary heads.

    Args:
        task: One of the subclass's ``tasks``.
        encoder: Backbone returning ``list[Tensor]``.
        decoder: Decoder of the (necked) features.
        head: Task head (``nn.Identity`` when the decoder includes it).
        necks: Necks applied in order between encoder and decoder.
        aux_heads: Extra decoder+head modules by name, run on the same necked features.
    """

    #: Tasks this kind of model serves.
    tasks: tuple[str, ...] = ()

    def __init__(
        self,
        task: str,
        encoder: nn.Module,
        decoder: nn.Module,
        head: nn.Module,
        necks: list[nn.Module] | None = None,
        aux_heads: dict[str, nn.Module] | None = None,
    ):
        super().__init__()
        if task not in self.tasks:
            raise ValueError(f"{type(self).__name__} task must be one of {list(self.tasks)}, got '{task}'.")
        self.task = task
        self.encoder = encoder
        self.neck = nn.ModuleList(necks or [])
        self.decoder = decoder
        self.head = head
        self.aux_heads = nn.ModuleDict(aux_heads or {})
        # Input sides are padded to this multiple.
        self.pad_multiple = input_multiple(encoder)

    @property
    def extra_inputs(self) -> tuple[str, ...]:
        """Keyword inputs ``forward`` passes to the backbone (``temporal_coords``...)."""
        return tuple(getattr(self.encoder, "extra_inputs", ()))
