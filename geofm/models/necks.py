"""Necks: adapt a backbone's feature list to what a decoder expects.

A neck takes the backbone's ``list[Tensor]`` and returns another list; the model calls it as
``neck(features, image_size=(H, W))`` with the spatial size of the (padded) input image. Its
:meth:`Neck.process_channel_list` says what channels it returns, so that the factory can chain
necks (the channel list given to neck ``k + 1`` is ``neck_k.process_channel_list(previous)``)
and build the decoder for the last one.

The names and arguments follow TerraTorch's necks, so that its configs keep working::

    necks:
      - name: SelectIndices
        indices: [2, 5, 8, 11]
      - name: ReshapeTokensToImage
      - name: LearnedInterpolateToPyramidal
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from geofm.registry import GEOFM_NECK_REGISTRY

__all__ = [
    "Neck",
    "SelectIndices",
    "PermuteDims",
    "InterpolateToPyramidal",
    "MaxpoolToPyramidal",
    "ReshapeTokensToImage",
    "AddBottleneckLayer",
    "LearnedInterpolateToPyramidal",
    "AggregateTokens",
]

log = logging.getLogger(__name__)

# Modes of ``F.interpolate`` that work on (B, C, H, W) maps.
_INTERPOLATION_MODES = ("nearest", "nearest-exact", "bilinear", "bicubic", "area")
_POOLINGS = ("mean", "max", "min", "cls")


def _check_channel_list(channel_list: Sequence[int], neck: str) -> list[int]:
    if isinstance(channel_list, (str, bytes)) or not isinstance(channel_list, Sequence):
        raise TypeError(
            f"{neck}: channel_list must be a list of ints (the backbone's out_channels), "
            f"got {channel_list!r}."
        )
    channels = list(channel_list)
    if not channels or not all(isinstance(c, int) and c > 0 for c in channels):
        raise ValueError(
            f"{neck}: channel_list must be a non-empty list of positive ints, got {channels}."
        )
    return channels


def _check_positive_int(value: object, name: str, neck: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{neck}: {name} must be a positive int, got {value!r}.")
    return value


def _check_ndim(x: torch.Tensor, ndim: int, layout: str, neck: str, index: int) -> None:
    if x.ndim != ndim:
        raise ValueError(
            f"{neck} expects features shaped {layout}; feature {index} has shape "
            f"{tuple(x.shape)}."
        )


class Neck(nn.Module, ABC):
    """Base class of every neck.

    Args:
        channel_list: Channels of the features this neck receives, one per feature.

    Attributes:
        channel_list: The channels given at construction.
    """

    def __init__(self, channel_list: Sequence[int]):
        super().__init__()
        self.channel_list = _check_channel_list(channel_list, type(self).__name__)

    @abstractmethod
    def process_channel_list(self, channel_list: list[int]) -> list[int]:
        """Channels of the features this neck returns for inputs with ``channel_list``."""

    @abstractmethod
    def forward(
        self, features: list[torch.Tensor], image_size: tuple[int, int] | None = None
    ) -> list[torch.Tensor]:
        """Transform ``features``.

        Args:
            features: The backbone's (or previous neck's) outputs.
            image_size: ``(H, W)`` of the (padded) input image; necks that do not need it
                ignore it.
        """


@GEOFM_NECK_REGISTRY.register
class SelectIndices(Neck):
    """Keep some of the features, in the given order.

    Args:
        channel_list: Channels of the incoming features.
        indices: Positions of the features to keep; negative indices count from the end
            (``[-1]`` keeps the last).
    """

    def __init__(self, channel_list: Sequence[int], indices: Sequence[int]):
        super().__init__(channel_list)
        if isinstance(indices, int) or not indices:
            raise ValueError(f"SelectIndices: indices must be a non-empty list, got {indices!r}.")
        self.indices = [int(i) for i in indices]
        self._check_indices(len(self.channel_list), "channel_list")

    def _check_indices(self, length: int, what: str) -> None:
        bad = [i for i in self.indices if not -length <= i < length]
        if bad:
            raise IndexError(
                f"SelectIndices: indices {bad} are out of range for a {what} of length "
                f"{length}; valid indices are {-length}..{length - 1}."
            )

    def process_channel_list(self, channel_list: list[int]) -> list[int]:
        self._check_indices(len(channel_list), "channel_list")
        return [channel_list[i] for i in self.indices]

    def forward(
        self, features: list[torch.Tensor], image_size: tuple[int, int] | None = None
    ) -> list[torch.Tensor]:
        """The features at ``indices``."""
        self._check_indices(len(features), "feature list")
        return [features[i] for i in self.indices]


@GEOFM_NECK_REGISTRY.register
class PermuteDims(Neck):
    """Permute the dimensions of every feature (``Tensor.permute(new_order)``).

    Typical use: channels-last maps ``(B, H, W, C)`` to ``(B, C, H, W)`` with
    ``new_order=[0, 3, 1, 2]``. The channel list is unchanged.

    Args:
        channel_list: Channels of the incoming features.
        new_order: A permutation of ``range(ndim)``.
    """

    def __init__(self, channel_list: Sequence[int], new_order: Sequence[int]):
        super().__init__(channel_list)
        order = list(new_order) if not isinstance(new_order, int) else [new_order]
        if sorted(order) != list(range(len(order))):
            raise ValueError(
                f"PermuteDims: new_order must be a permutation of 0..N-1 (such as [0, 3, 1, 2]), "
                f"got {list(order)}."
            )
        self.new_order = order

    def process_channel_list(self, channel_list: list[int]) -> list[int]:
        return list(channel_list)

    def forward(
        self, features: list[torch.Tensor], image_size: tuple[int, int] | None = None
    ) -> list[torch.Tensor]:
        """Every feature permuted, made contiguous for the convolutions that follow."""
        layout = f"{len(self.new_order)} dims (new_order={self.new_order})"
        for i, x in enumerate(features):
            _check_ndim(x, len(self.new_order), layout, "PermuteDims", i)
        return [x.permute(*self.new_order).contiguous() for x in features]


@GEOFM_NECK_REGISTRY.register
class InterpolateToPyramidal(Neck):
    """Resize same-resolution maps (a ViT's) into a pyramid, the first the largest.

    Feature ``i`` of ``n`` is resized by ``scale_factor ** (n - 1 - i)``: the last keeps its
    size. Four ViT maps at stride 16 become maps at strides 2, 4, 8, 16. Channels unchanged.

    Args:
        channel_list: Channels of the incoming features.
        scale_factor: Size ratio between consecutive levels.
        interpolation_mode: Mode of ``torch.nn.functional.interpolate``: one of
            ``"nearest"``, ``"nearest-exact"``, ``"bilinear"``, ``"bicubic"``, ``"area"``.
        mode: TerraTorch's name for ``interpolation_mode``; accepted so its configs work.
    """

    def __init__(
        self,
        channel_list: Sequence[int],
        scale_factor: int = 2,
        interpolation_mode: str = "nearest",
        mode: str | None = None,
    ):
        super().__init__(channel_list)
        if mode is not None:
            if interpolation_mode not in ("nearest", mode):
                raise ValueError(
                    f"InterpolateToPyramidal: got interpolation_mode={interpolation_mode!r} and "
                    f"mode={mode!r}; pass only interpolation_mode."
                )
            interpolation_mode = mode
        if interpolation_mode not in _INTERPOLATION_MODES:
            raise ValueError(
                f"InterpolateToPyramidal: unknown interpolation_mode {interpolation_mode!r}; "
                f"choose from {list(_INTERPOLATION_MODES)}."
            )
        if isinstance(scale_factor, bool) or not isinstance(scale_factor, (int, float)) or (
            scale_factor <= 0
        ):
            raise ValueError(
                f"InterpolateToPyramidal: scale_factor must be a positive number, "
                f"got {scale_factor!r}."
            )
        self.scale_factor = scale_factor
        self.interpolation_mode = interpolation_mode

    def process_channel_list(self, channel_list: list[int]) -> list[int]:
        return list(channel_list)

    def forward(
        self, features: list[torch.Tensor], image_size: tuple[int, int] | None = None
    ) -> list[torch.Tensor]:
        """Feature ``i`` ``(B, C, h, w)`` -> ``(B, C, h * s**(n-1-i), w * s**(n-1-i))``."""
        out = []
        n = len(features)
        for i, x in enumerate(features):
            _check_ndim(x, 4, "(B, C, H, W)", "InterpolateToPyramidal", i)
            exponent = n - 1 - i
            if exponent == 0:
                out.append(x)
                continue
            # An explicit size (not scale_factor) makes the output size exact for float factors.
            factor = self.scale_factor**exponent
            size = (round(x.shape[-2] * factor), round(x.shape[-1] * factor))
            out.append(F.interpolate(x, size=size, mode=self.interpolation_mode))
        return out


@GEOFM_NECK_REGISTRY.register
class MaxpoolToPyramidal(Neck):
    """Max-pool same-resolution maps into a pyramid, the first keeping its size.

    Feature ``i`` is max-pooled with kernel and stride ``kernel_size ** i``. Channels unchanged.

    Args:
        channel_list: Channels of the incoming features.
        kernel_size: Size ratio between consecutive levels.
    """

    def __init__(self, channel_list: Sequence[int], kernel_size: int = 2):
        super().__init__(channel_list)
        self.kernel_size = _check_positive_int(kernel_size, "kernel_size", "MaxpoolToPyramidal")

    def process_channel_list(self, channel_list: list[int]) -> list[int]:
        return list(channel_list)

    def forward(
        self, features: list[torch.Tensor], image_size: tuple[int, int] | None = None
    ) -> list[torch.Tensor]:
        """Feature ``i`` ``(B, C, h, w)`` -> ``(B, C, h // k**i, w // k**i)``."""
        out = []
        for i, x in enumerate(features):
            _check_ndim(x, 4, "(B, C, H, W)", "MaxpoolToPyramidal", i)
            out.append(x if i == 0 else F.max_pool2d(x, kernel_size=self.kernel_size**i))
        return out


@GEOFM_NECK_REGISTRY.register
class ReshapeTokensToImage(Neck):
    """Turn ViT tokens into image-like maps.

    Tokens ``(B, [1 +] T * Hg * Wg, D)`` in (time, row, column) order become maps
    ``(B, T * D, Hg, Wg)``: token ``(t, r, c)`` channel ``e`` lands at channel ``t * D + e``,
    row ``r``, column ``c``. The grid comes from, in order: ``h`` when given; the input's
    aspect ratio (``image_size``, which the model always passes); a square grid.
    Channels unchanged (a ViT backbone already reports ``D * T``).

    Args:
        channel_list: Channels of the incoming features.
        remove_cls_token: Drop the first token (the class token) before reshaping.
        effective_time_dim: Number of token time steps ``T`` (frames // tubelet size).
        h: Grid height ``Hg``; the width follows from the number of tokens.
    """

    def __init__(
        self,
        channel_list: Sequence[int],
        remove_cls_token: bool = True,
        effective_time_dim: int = 1,
        h: int | None = None,
    ):
        super().__init__(channel_list)
        self.remove_cls_token = bool(remove_cls_token)
        self.effective_time_dim = _check_positive_int(
            effective_time_dim, "effective_time_dim", "ReshapeTokensToImage"
        )
        self.h = None if h is None else _check_positive_int(h, "h", "ReshapeTokensToImage")

    def process_channel_list(self, channel_list: list[int]) -> list[int]:
        return list(channel_list)

    def grid_size(
        self, tokens_per_step: int, image_size: tuple[int, int] | None
    ) -> tuple[int, int]:
        """The token grid ``(Hg, Wg)`` with ``Hg * Wg == tokens_per_step``.

        Raises:
            ValueError: when no grid of that many tokens fits ``h`` or ``image_size``, or when
                neither is given and the count is not a square.
        """
        if self.h is not None:
            if tokens_per_step % self.h:
                raise ValueError(
                    f"ReshapeTokensToImage: {tokens_per_step} tokens per time step do not form "
                    f"a grid of height h={self.h}."
                )
            return self.h, tokens_per_step // self.h
        if image_size is not None:
            height, width = image_size
            if _symbolic(tokens_per_step, height, width):
                return _traced_grid_size(tokens_per_step, height, width)
            # Square patches: Hg / Wg == H / W and Hg * Wg == tokens_per_step.
            hg = max(1, round(math.sqrt(tokens_per_step * height / width)))
            if tokens_per_step % hg == 0:
                return hg, tokens_per_step // hg
            raise ValueError(
                f"ReshapeTokensToImage: {tokens_per_step} tokens per time step do not form a "
                f"grid with the aspect ratio of image_size={tuple(image_size)}; check "
                "remove_cls_token and effective_time_dim, or pass h."
            )
        hg = math.isqrt(tokens_per_step)
        if hg * hg != tokens_per_step:
            raise ValueError(
                f"ReshapeTokensToImage: {tokens_per_step} tokens per time step are not a square "
                "grid; pass image_size=(H, W) to forward (the model does) or set h, or check "
                "remove_cls_token and effective_time_dim."
            )
        return hg, hg

    def forward(
        self, features: list[torch.Tensor], image_size: tuple[int, int] | None = None
    ) -> list[torch.Tensor]:
        """Tokens ``(B, [1 +] T * Hg * Wg, D)`` -> maps ``(B, T * D, Hg, Wg)``."""
        t = self.effective_time_dim
        out = []
        for i, x in enumerate(features):
            _check_ndim(x, 3, "(B, N, D) tokens", "ReshapeTokensToImage", i)
            if self.remove_cls_token:
                x = x[:, 1:]
            n = x.shape[1]
            if n == 0 or n % t:
                raise ValueError(
                    f"ReshapeTokensToImage: feature {i} has {n} patch tokens, which is not a "
                    f"positive multiple of effective_time_dim={t}."
                )
            hg, wg = self.grid_size(n // t, image_size)
            out.append(rearrange(x, "b (t h w) e -> b (t e) h w", t=t, h=hg, w=wg))
        return out


@GEOFM_NECK_REGISTRY.register
class AddBottleneckLayer(Neck):
    """Append one more feature: the last one through conv3x3 + BatchNorm + ReLU, half its channels.

    Gives a backbone one level more, as some smp decoders expect. The new map keeps the
    resolution of the last one.

    Args:
        channel_list: Channels of the incoming features; the last needs at least 2.
    """

    def __init__(self, channel_list: Sequence[int]):
        super().__init__(channel_list)
        last = self.channel_list[-1]
        if last < 2:
            raise ValueError(
                f"AddBottleneckLayer halves the channels of the last feature, which has {last}; "
                "it needs at least 2."
            )
        self.bottleneck = nn.Sequential(
            nn.Conv2d(last, last // 2, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(last // 2),
            nn.ReLU(inplace=True),
        )

    def process_channel_list(self, channel_list: list[int]) -> list[int]:
        return [*channel_list, channel_list[-1] // 2]

    def forward(
        self, features: list[torch.Tensor], image_size: tuple[int, int] | None = None
    ) -> list[torch.Tensor]:
        """``features`` plus ``(B, C_last // 2, h_last, w_last)``; the input list is not changed."""
        if not features:
            raise ValueError("AddBottleneckLayer got an empty feature list.")
        return [*features, self.bottleneck(features[-1])]


@GEOFM_NECK_REGISTRY.register
class LearnedInterpolateToPyramidal(Neck):
    """Turn exactly 4 same-resolution maps into a 4-level pyramid with learned upsampling.

    Feature 0 is upsampled x4 (two stride-2 transposed convolutions), feature 1 x2, feature 2
    kept, feature 3 max-pooled /2. Channels become ``[c0 // 4, c1 // 2, c2, c3]``.
    The submodule names (``fpn1``..``fpn4``) match TerraTorch's, so its checkpoints load.

    Args:
        channel_list: Channels of the 4 incoming features.
    """

    def __init__(self, channel_list: Sequence[int]):
        super().__init__(channel_list)
        if len(self.channel_list) != 4:
            raise ValueError(
                "LearnedInterpolateToPyramidal needs exactly 4 features, got channel_list="
                f"{self.channel_list}; select 4 first (SelectIndices, e.g. indices=[2, 5, 8, 11])."
            )
        c0, c1, _, _ = self.channel_list
        if c0 < 4 or c1 < 2:
            raise ValueError(
                f"LearnedInterpolateToPyramidal divides channels 0 by 4 and 1 by 2; got "
                f"channel_list={self.channel_list}."
            )
        self.fpn1 = nn.Sequential(
            nn.ConvTranspose2d(c0, c0 // 2, kernel_size=2, stride=2),
            nn.BatchNorm2d(c0 // 2),
            nn.GELU(),
            nn.ConvTranspose2d(c0 // 2, c0 // 4, kernel_size=2, stride=2),
        )
        self.fpn2 = nn.Sequential(nn.ConvTranspose2d(c1, c1 // 2, kernel_size=2, stride=2))
        self.fpn3 = nn.Sequential(nn.Identity())
        self.fpn4 = nn.Sequential(nn.MaxPool2d(kernel_size=2, stride=2))

    def process_channel_list(self, channel_list: list[int]) -> list[int]:
        if len(channel_list) != 4:
            raise ValueError(
                f"LearnedInterpolateToPyramidal needs exactly 4 channels, got {channel_list}."
            )
        return [channel_list[0] // 4, channel_list[1] // 2, channel_list[2], channel_list[3]]

    def forward(
        self, features: list[torch.Tensor], image_size: tuple[int, int] | None = None
    ) -> list[torch.Tensor]:
        """4 maps ``(B, C_i, h, w)`` -> sizes ``4h``, ``2h``, ``h``, ``h // 2``."""
        if len(features) != 4:
            raise ValueError(
                f"LearnedInterpolateToPyramidal needs exactly 4 features, got {len(features)}."
            )
        for i, x in enumerate(features):
            _check_ndim(x, 4, "(B, C, H, W)", "LearnedInterpolateToPyramidal", i)
        levels = (self.fpn1, self.fpn2, self.fpn3, self.fpn4)
        return [level(x) for level, x in zip(levels, features, strict=True)]


@GEOFM_NECK_REGISTRY.register
class AggregateTokens(Neck):
    """Pool each feature to one vector, for classification and other scalar outputs.

    Tokens ``(B, [1 +] N, D)`` are pooled over the token axis (``"mean"``, ``"max"``,
    ``"min"``), or the class token is taken (``"cls"``). Maps ``(B, C, H, W)`` are pooled over
    ``H, W``. When the channel list says ``T * D`` for tokens of width ``D`` (a multi-frame
    ViT), the tokens are pooled per time step and concatenated, so the output keeps the
    ``T * D`` channels the backbone reports.

    Args:
        channel_list: Channels of the incoming features.
        pooling: ``"mean"``, ``"max"``, ``"min"`` or ``"cls"``.
        indices: Features to keep (negative indices count from the end); all by default.
        drop_cls_token: Leave the first token out of mean/max/min pooling.
    """

    def __init__(
        self,
        channel_list: Sequence[int],
        pooling: str = "mean",
        indices: Sequence[int] | None = None,
        drop_cls_token: bool = True,
    ):
        super().__init__(channel_list)
        if pooling not in _POOLINGS:
            raise ValueError(
                f"AggregateTokens: unknown pooling {pooling!r}; choose from {list(_POOLINGS)}."
            )
        self.pooling = pooling
        self.drop_cls_token = bool(drop_cls_token)
        self.select = None if indices is None else SelectIndices(self.channel_list, indices)

    @property
    def indices(self) -> list[int] | None:
        """The kept features, ``None`` for all."""
        return None if self.select is None else self.select.indices

    def process_channel_list(self, channel_list: list[int]) -> list[int]:
        if self.select is None:
            return list(channel_list)
        return self.select.process_channel_list(channel_list)

    def _pool(self, x: torch.Tensor, dim: int | tuple[int, ...]) -> torch.Tensor:
        if self.pooling == "mean":
            return x.mean(dim=dim)
        if self.pooling == "max":
            return x.amax(dim=dim)
        return x.amin(dim=dim)

    def _pool_tokens(self, x: torch.Tensor, channels: int, index: int) -> torch.Tensor:
        width = x.shape[-1]
        if self.pooling == "cls":
            if channels != width:
                raise ValueError(
                    f"AggregateTokens: pooling='cls' gives {width} channels for feature {index}, "
                    f"but its channel list entry is {channels} (several time steps); use "
                    "pooling='mean', 'max' or 'min'."
                )
            return x[:, 0]
        if channels % width:
            raise ValueError(
                f"AggregateTokens: feature {index} has tokens of width {width}, which does not "
                f"divide its channel list entry {channels}."
            )
        if self.drop_cls_token:
            x = x[:, 1:]
        steps = channels // width
        if x.shape[1] == 0 or x.shape[1] % steps:
            raise ValueError(
                f"AggregateTokens: feature {index} has {x.shape[1]} tokens to pool, not a "
                f"positive multiple of its {steps} time steps (channels {channels} / width "
                f"{width}); check drop_cls_token."
            )
        # (B, T*N, D) -> (B, T, N, D): pool per time step so the output has T * D channels.
        pooled = self._pool(rearrange(x, "b (t n) e -> b t n e", t=steps), dim=2)
        return rearrange(pooled, "b t e -> b (t e)")

    def forward(
        self, features: list[torch.Tensor], image_size: tuple[int, int] | None = None
    ) -> list[torch.Tensor]:
        """Each kept feature, tokens ``(B, N, D)`` or maps ``(B, C, H, W)``, -> ``(B, C)``."""
        channels = self.channel_list
        if self.select is not None:
            features = self.select(features)
            channels = self.select.process_channel_list(channels)
        if len(features) != len(channels):
            raise ValueError(
                f"AggregateTokens was built for {len(channels)} features (channel_list="
                f"{self.channel_list}) but got {len(features)}."
            )
        out = []
        for i, (x, c) in enumerate(zip(features, channels, strict=True)):
            if x.ndim == 3:
                out.append(self._pool_tokens(x, c, i))
            elif x.ndim == 4:
                if self.pooling == "cls":
                    raise ValueError(
                        f"AggregateTokens: pooling='cls' needs tokens (B, N, D); feature {i} is "
                        f"a map of shape {tuple(x.shape)}. Use 'mean', 'max' or 'min'."
                    )
                out.append(self._pool(x, dim=(2, 3)))
            else:
                raise ValueError(
                    "AggregateTokens expects tokens (B, N, D) or maps (B, C, H, W); feature "
                    f"{i} has shape {tuple(x.shape)}."
                )
        return out


def _symbolic(*values: Any) -> bool:
    """Whether any of ``values`` is a symbolic size (``torch.export`` with dynamic shapes)."""
    return any(isinstance(v, torch.SymInt) for v in values)


def _example_int(value: Any) -> int:
    """The example value behind a symbolic size, read without fixing the size in the graph."""
    if not isinstance(value, torch.SymInt):
        return int(value)
    hint = getattr(value, "hint", None)
    if hint is None:
        hint = value.node.hint
    return int(hint)


def _traced_grid_size(tokens: Any, height: Any, width: Any) -> tuple[Any, Any]:
    """:meth:`ReshapeTokensToImage.grid_size` for symbolic sizes, under ``torch.export``.

    The square root of the eager rule would fix the grid to the example's; the patch side is a
    constant of the model, so it is taken from the example sizes and the grid is
    ``(H // patch, tokens // Hg)``, symbolic in ``H`` and ``W``.
    """
    patch = round(math.sqrt(_example_int(height) * _example_int(width) / _example_int(tokens)))
    hg = height // max(patch, 1)
    return hg, tokens // hg
