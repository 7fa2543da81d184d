"""``Embedder``: a backbone (and optional necks) as an embedding model.

It returns, for raw-preprocessed images ``(B, C, H, W)``, one feature level as a map on the
patch grid and one pooled vector per image:

- token backbones (a ``(B, [1 +] h * w, D)`` output, Prithvi ViT): the patch tokens folded to
  ``(B, D, h, w)`` with ``h = H / p``, ``w = W / p`` (``p`` the patch size); the class token,
  when the backbone has one, is kept for ``pooling="cls"``;
- convolutional backbones: the chosen stage's ``(B, D, h, w)`` feature map (stride ``H / h``).

The embedding model is built from the same registries as every geofm model
(``BACKBONE_REGISTRY``, ``NECK_REGISTRY``) through the encoder-decoder factory's own builders,
so a backbone name and its ``backbone_*`` arguments mean what they mean in a fit config.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

__all__ = ["POOLINGS", "Embedder", "Pooling", "build_embedder"]

Pooling = Literal["mean", "max", "cls"]
POOLINGS: tuple[str, ...] = ("mean", "max", "cls")


class Embedder(nn.Module):
    """Backbone + necks + one feature level, pooled and as a grid.

    Args:
        encoder: A backbone (``out_channels: list[int]``, ``forward -> list[Tensor]``).
        necks: Applied in order to the backbone's feature list.
        layer: Index into the (necked) feature list; ``-1``, the last, by default.
        pooling: ``"mean"`` or ``"max"`` over the grid, or ``"cls"``: the class token of a
            token backbone.

    Attributes:
        encoder: The backbone (its ``pretrained_stats`` give the default normalisation).
        extra_inputs: The keyword inputs the backbone takes (``temporal_coords``...).
    """

    def __init__(
        self,
        encoder: nn.Module,
        necks: Sequence[nn.Module] = (),
        layer: int = -1,
        pooling: Pooling = "mean",
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling={pooling!r}; choose one of {list(POOLINGS)}.")
        self.encoder = encoder
        self.necks = nn.ModuleList(necks)
        self.layer = int(layer)
        self.pooling: Pooling = pooling
        self.extra_inputs: tuple[str, ...] = tuple(getattr(encoder, "extra_inputs", ()) or ())
        if pooling == "cls" and self.necks:
            raise ValueError(
                "pooling='cls' takes the backbone's class token, which necks remove or reshape; "
                "use pooling 'mean' or 'max' with necks, or drop the necks."
            )

    def _feature(self, x: torch.Tensor, **extra: Any) -> torch.Tensor:
        features = self.encoder(x, **extra)
        for neck in self.necks:
            features = neck(features)
        if not isinstance(features, (list, tuple)):
            features = [features]
        try:
            return features[self.layer]
        except IndexError:
            raise ValueError(
                f"layer={self.layer} but the backbone{' and necks' if self.necks else ''} give "
                f"{len(features)} feature levels; choose an index in "
                f"[{-len(features)}, {len(features) - 1}]."
            ) from None

    def _patch(self) -> tuple[int, int] | None:
        size = getattr(self.encoder, "patch_size", None)
        if isinstance(size, int):
            return size, size
        if isinstance(size, Sequence) and len(size) >= 2:
            return int(size[-2]), int(size[-1])
        return None

    def fold_tokens(
        self, tokens: torch.Tensor, height: int, width: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(B, [1 +] h * w, D)`` tokens to a ``(B, D, h, w)`` grid and the class token ``(B, D)``.

        Raises:
            ValueError: the token count fits neither ``h * w`` nor ``1 + h * w``, or the
                backbone has several token frames.
        """
        patch = self._patch()
        if patch is None:  # no declared patch: a square grid of the token count
            side = math.isqrt(tokens.shape[1])
            patch = (height // max(side, 1), width // max(side, 1))
        h, w = height // patch[0], width // patch[1]
        count = tokens.shape[1]
        if count == h * w + 1:
            cls, patches = tokens[:, 0], tokens[:, 1:]
        elif count == h * w:
            cls, patches = None, tokens
        else:
            raise ValueError(
                f"The backbone returned {count} tokens for a {height} x {width} input with "
                f"patches of {patch}: expected {h * w} or {h * w + 1} (one frame). Embeddings "
                "take single-frame inputs (backbone_num_frames: 1)."
            )
        grid = patches.transpose(1, 2).reshape(patches.shape[0], patches.shape[2], h, w)
        return grid, cls

    def forward(self, x: torch.Tensor, **extra: Any) -> dict[str, torch.Tensor]:
        """Embeddings of preprocessed images.

        Args:
            x: ``(B, C, H, W)``.
            **extra: The backbone's keyword inputs (``temporal_coords``, ``location_coords``).

        Returns:
            ``{"output": (B, D, h, w) grid, "pooled": (B, D)}`` (``output`` is the key every
            geofm prediction route reads).
        """
        feature = self._feature(x, **extra)
        cls = None
        if feature.ndim == 3:
            feature, cls = self.fold_tokens(feature, x.shape[-2], x.shape[-1])
        elif feature.ndim == 5:  # (B, D, T, h, w) of one frame
            feature = feature.flatten(1, 2)
        if feature.ndim != 4:
            raise ValueError(
                f"Feature level {self.layer} has shape {tuple(feature.shape)}; embeddings need "
                "(B, D, h, w) maps or (B, N, D) tokens."
            )
        if self.pooling == "mean":
            pooled = feature.mean(dim=(2, 3))
        elif self.pooling == "max":
            pooled = feature.amax(dim=(2, 3))
        else:
            if cls is None:
                raise ValueError(
                    f"pooling='cls' needs a class token, but {type(self.encoder).__name__} "
                    "returns no token sequence with one; use pooling 'mean' or 'max'."
                )
            pooled = cls
        return {"output": feature, "pooled": pooled}


def build_embedder(
    backbone: str | nn.Module,
    necks: Sequence[Mapping[str, Any]] | None = None,
    layer: int = -1,
    pooling: Pooling = "mean",
    **kwargs: Any,
) -> Embedder:
    """An :class:`Embedder` from registry names, as the encoder-decoder factory builds them.

    Args:
        backbone: A ``BACKBONE_REGISTRY`` name or a module.
        necks: ``[{"name": ..., **args}]`` neck specs (none by default: token backbones are
            folded here, so that ``pooling="cls"`` keeps the class token).
        layer: Feature level (index into the necked feature list).
        pooling: ``"mean"``, ``"max"`` or ``"cls"``.
        **kwargs: ``backbone_*`` arguments (``backbone_pretrained``, ``backbone_ckpt_path``,
            ``backbone_bands``...).

    Raises:
        ValueError: a keyword without the ``backbone_`` prefix (listed).
    """
    from geofm.models.factories.encoder_decoder import EncoderDecoderFactory, _split_prefixed

    routed, unused = _split_prefixed(kwargs, ("backbone",))
    if unused:
        raise ValueError(
            f"Embedding models take backbone, necks and backbone_* arguments; got "
            f"{sorted(unused)} (decoders and heads have no place in an embedding model)."
        )
    if pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r}; choose one of {list(POOLINGS)}.")
    encoder = EncoderDecoderFactory._build_backbone(backbone, routed["backbone"])
    channels = list(getattr(encoder, "out_channels", []) or [])
    modules, _ = EncoderDecoderFactory._build_necks(list(necks or []), channels)
    return Embedder(encoder, modules, layer=layer, pooling=pooling)
