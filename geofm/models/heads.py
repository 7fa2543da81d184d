"""Task heads: the last layers that turn decoder features into predictions."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from geofm.registry.class_path import import_object

__all__ = ["SegmentationHead", "RegressionHead", "ClassificationHead", "resolve_module"]


def resolve_module(spec: nn.Module | str | type | None) -> nn.Module:
    """An activation module from a module, a class, or a dotted path (``"torch.nn.ReLU"``).

    ``None`` gives ``nn.Identity()``.
    """
    if spec is None:
        return nn.Identity()
    if isinstance(spec, nn.Module):
        return spec
    if isinstance(spec, type) and issubclass(spec, nn.Module):
        return spec()
    if isinstance(spec, str):
        return resolve_module(import_object(spec, "torch.nn", what=f"Activation '{spec}'"))
    raise TypeError(f"Expected an nn.Module, a class or a dotted path, got {spec!r}.")


def _conv_stack(in_channels: int, channel_list: Sequence[int] | None, batch_norm: bool) -> tuple[nn.Module, int]:
    layers: list[nn.Module] = []
    for out_channels in channel_list or ():
        layers += [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not batch_norm)]
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
        in_channels = out_channels
    return nn.Sequential(*layers), in_channels


class SegmentationHead(nn.Module):
    """Optional 3x3 conv blocks, dropout, then a 1x1 conv to class logits.

    Args:
        in_channels: Channels of the decoder output.
        num_classes: Number of classes.
        channel_list: Channels of intermediate conv blocks (none by default).
        dropout: Dropout before the classifier.

    Shapes: ``(B, in_channels, H, W) -> (B, num_classes, H, W)``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        channel_list: Sequence[int] | None = None,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.blocks, channels = _conv_stack(in_channels, channel_list, batch_norm=True)
        self.dropout = nn.Dropout2d(dropout) if dropout else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.blocks(x)))


class RegressionHead(nn.Module):
    """Conv blocks, optional learned upscaling, then a 1x1 conv to one value per pixel.

    Args:
        in_channels: Channels of the decoder output.
        final_act: Activation applied last: a module, a class or a dotted path
            (``"torch.nn.ReLU"`` for non-negative targets).
        learned_upscale_layers: Number of x2 transposed-conv upscaling layers.
        channel_list: Channels of intermediate conv blocks.
        batch_norm: Use BatchNorm in the conv blocks.
        dropout: Dropout before the final conv.

    Shapes: ``(B, in_channels, H, W) -> (B, 1, H * 2**learned_upscale_layers, W * ...)``; the
    model removes the channel axis (one place for every decoder, with or without a head).
    """

    def __init__(
        self,
        in_channels: int,
        final_act: nn.Module | str | None = None,
        learned_upscale_layers: int = 0,
        channel_list: Sequence[int] | None = None,
        batch_norm: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        upscale: list[nn.Module] = []
        for _ in range(learned_upscale_layers):
            upscale += [nn.ConvTranspose2d(in_channels, in_channels, 2, stride=2), nn.ReLU(inplace=True)]
        self.upscale = nn.Sequential(*upscale)
        self.blocks, channels = _conv_stack(in_channels, channel_list, batch_norm=batch_norm)
        self.dropout = nn.Dropout2d(dropout) if dropout else nn.Identity()
        self.final = nn.Conv2d(channels, 1, kernel_size=1)
        self.final_act = resolve_module(final_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.blocks(self.upscale(x)))
        return self.final_act(self.final(x))


class ClassificationHead(nn.Module):
    """Optional hidden linear layers, dropout, then a linear layer to class logits.

    The head receives the decoder output and pools it itself, as TerraTorch's head does: a
    feature map ``(B, C, H, W)`` is treated as ``H * W`` feature vectors.

    Args:
        in_dim: Channels of the decoder output.
        num_classes: Number of classes.
        dim_list: Sizes of hidden linear layers (ReLU after each).
        dropout: Dropout before each linear layer.
        linear_after_pool: ``True``: average the feature map over H and W, then apply the
            layers. ``False`` (TerraTorch's default): apply the layers to every pixel's feature
            vector, then average the per-pixel logits. The two differ when ``dim_list`` adds
            non-linear layers or dropout is on; for ``(B, C)`` input they are the same.

    Shapes: ``(B, in_dim, H, W)`` or ``(B, in_dim) -> (B, num_classes)``.
    """

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        dim_list: Sequence[int] | None = None,
        dropout: float = 0.0,
        linear_after_pool: bool = False,
    ):
        super().__init__()
        self.linear_after_pool = linear_after_pool
        layers: list[nn.Module] = []
        for dim in dim_list or ():
            layers += [nn.Dropout(dropout), nn.Linear(in_dim, dim), nn.ReLU(inplace=True)]
            in_dim = dim
        layers += [nn.Dropout(dropout), nn.Linear(in_dim, num_classes)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:
            return self.layers(x)
        if x.ndim != 4:
            raise ValueError(
                f"ClassificationHead expects (B, C, H, W) or (B, C), got shape {tuple(x.shape)}."
            )
        if self.linear_after_pool:
            return self.layers(x.mean(dim=(-2, -1)))
        # (B, C, H, W) -> (B, H*W, C): the layers run on every pixel, the logits are averaged.
        return self.layers(x.flatten(2).transpose(1, 2)).mean(dim=1)
