"""Pieces shared by geofm's decoders: argument checks and conv/norm/activation units."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "AdaptiveAvgPool2d",
    "as_channel_list",
    "resolve_index",
    "positive_int",
    "check_features",
    "conv_norm_act",
    "activation_layer",
]


def as_channel_list(embed_dim: Sequence[int], decoder: str) -> list[int]:
    """Validate a decoder's channel list (one positive int per feature, finest first).

    Args:
        embed_dim: Channels of each feature the decoder will receive.
        decoder: Decoder name, used in error messages.

    Returns:
        The channels as a new ``list[int]``.

    Raises:
        ValueError: when ``embed_dim`` is not a non-empty sequence of positive ints.
    """
    if isinstance(embed_dim, int) or not isinstance(embed_dim, Sequence) or not embed_dim:
        raise ValueError(
            f"{decoder}: embed_dim={embed_dim!r} must be a non-empty list with the channels of "
            "each feature it receives (a backbone's or neck's out_channels), e.g. [768, 768]."
        )
    channels = list(embed_dim)
    if not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in channels):
        raise ValueError(f"{decoder}: embed_dim={channels} must hold positive ints only.")
    return channels


def resolve_index(index: int, embed_dim: list[int], arg: str, decoder: str) -> int:
    """Turn a (possibly negative) feature index into a non-negative one.

    Args:
        index: The index the user gave (``-1`` is the last, coarsest feature).
        embed_dim: The decoder's channel list, one entry per feature.
        arg: Argument name (``"in_index"``, ``"out_index"``), used in error messages.
        decoder: Decoder name, used in error messages.

    Raises:
        ValueError: when ``index`` is not an int in ``[-len(embed_dim), len(embed_dim))``.
    """
    count = len(embed_dim)
    if isinstance(index, bool) or not isinstance(index, int) or not -count <= index < count:
        raise ValueError(
            f"{decoder}: {arg}={index!r} does not select one of the {count} features "
            f"(embed_dim={embed_dim}); use an int from {-count} to {count - 1}."
        )
    return index % count


def positive_int(value: int, arg: str, decoder: str) -> int:
    """Return ``value`` when it is a positive int, else raise ``ValueError`` naming ``arg``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{decoder}: {arg}={value!r} must be a positive int.")
    return value


def check_features(features: Sequence[torch.Tensor], embed_dim: list[int], decoder: str) -> None:
    """Check that ``features`` match the channel list the decoder was built for.

    Conv layers would otherwise fail later with a message about weight shapes that does not
    say which feature or config value is wrong.

    Raises:
        ValueError: when the number of features or a feature's channel count differs.
    """
    if len(features) != len(embed_dim):
        raise ValueError(
            f"{decoder} was built for {len(embed_dim)} features (embed_dim={embed_dim}) but got "
            f"{len(features)}; pass the backbone's (or last neck's) out_channels as embed_dim."
        )
    got = [int(f.shape[1]) for f in features]
    if got != embed_dim:
        raise ValueError(
            f"{decoder} was built for feature channels embed_dim={embed_dim} but got {got}."
        )


def conv_norm_act(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    dilation: int = 1,
    norm: bool = True,
) -> nn.Module:
    """Conv2d (``same`` padding) then BatchNorm then ReLU, as torchvision's unit.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Odd kernel size; padding keeps the spatial size.
        dilation: Dilation of the convolution (atrous rate).
        norm: Add BatchNorm (the conv then has no bias). Branches that pool to 1x1 pass
            ``False``: BatchNorm over one value per channel fails in training at batch size 1.

    Returns:
        A module mapping ``(B, in_channels, H, W)`` to ``(B, out_channels, H, W)``.
    """
    from torchvision.ops import Conv2dNormActivation

    return Conv2dNormActivation(
        in_channels,
        out_channels,
        kernel_size=kernel_size,
        dilation=dilation,
        norm_layer=nn.BatchNorm2d if norm else None,
        activation_layer=nn.ReLU,
    )


def _activation_names() -> list[str]:
    import inspect

    from torch.nn.modules import activation

    def needs_arguments(cls: type) -> bool:
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
        return any(p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD for p in params)

    # Those that need arguments (Threshold, MultiheadAttention) cannot be named by a string.
    return sorted(n for n in activation.__all__ if not needs_arguments(getattr(activation, n)))


def activation_layer(name: str, decoder: str) -> type[nn.Module]:
    """The ``torch.nn`` activation class called ``name`` (case-insensitive: ``"gelu"`` works).

    Raises:
        ValueError: when ``name`` is not a ``torch.nn`` activation; the message lists them.
    """
    names = _activation_names()
    by_lower = {n.lower(): n for n in names}
    found = by_lower.get(str(name).lower())
    if found is None:
        raise ValueError(
            f"{decoder}: unknown activation={name!r}; use a torch.nn activation name: "
            f"{', '.join(names)}."
        )
    return getattr(nn, found)


def _averaging_matrix(size: int, out: int, like: torch.Tensor) -> torch.Tensor:
    """``(out, size)`` weights whose row ``i`` averages adaptive pooling's window ``i``:
    ``floor(i * size / out)`` to ``ceil((i + 1) * size / out)``, as PyTorch lays them out."""
    rows = torch.arange(out, device=like.device)
    cols = torch.arange(size, device=like.device)
    start = (rows * size) // out
    end = ((rows + 1) * size + out - 1) // out
    inside = (cols[None, :] >= start[:, None]) & (cols[None, :] < end[:, None])
    return inside.to(like.dtype) / (end - start).to(like.dtype)[:, None]


class AdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    """``nn.AdaptiveAvgPool2d`` that stays exact in exported graphs of any input size.

    ONNX has no adaptive pooling: exporters lower it to a pooling of fixed windows, right only
    when the input side is a multiple of the output side. Under ``torch.export`` the windows
    are averaged by two matrices built from the (symbolic) input size instead; eager runs use
    PyTorch's kernel. Same state dict as ``nn.AdaptiveAvgPool2d`` (none).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_exporting():
            return super().forward(x)
        size = self.output_size if isinstance(self.output_size, Sequence) else (self.output_size,) * 2
        out_h = x.shape[-2] if size[0] is None else int(size[0])
        out_w = x.shape[-1] if size[1] is None else int(size[1])
        rows = _averaging_matrix(x.shape[-2], out_h, x)
        cols = _averaging_matrix(x.shape[-1], out_w, x)
        return rows @ x @ cols.transpose(0, 1)
