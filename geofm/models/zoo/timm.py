"""timm as a backbone zoo: every timm model, built features-only (``timm_resnet18``).

Registers :class:`TimmBackboneSource` in ``BACKBONE_REGISTRY`` under the prefix ``timm``.
timm itself is imported only when a name is looked up or built.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geofm.registry import BACKBONE_REGISTRY
from geofm.registry.external import ExternalSource

__all__ = ["TimmBackbone", "TimmBackboneSource"]

log = logging.getLogger(__name__)


class TimmBackbone(nn.Module):
    """A timm model built with ``features_only=True``.

    Args:
        name: timm model name (``"resnet18"``, ``"convnext_tiny"``, ``"vit_small_patch16_224"``).
        pretrained: Load pretrained weights: from ``ckpt_path`` when given, otherwise through
            timm's hub download (which needs network access).
        ckpt_path: Local weight file (``.pth``, ``.safetensors``) for the full timm model.
        in_chans: Number of input bands; timm adapts the first layer's pretrained weights.
        out_indices: Which feature levels to return (timm's default: all).
        **kwargs: Other ``timm.create_model`` arguments; ``None`` values are dropped so that
            config defaults never override timm's.

    Attributes:
        out_channels: Channels of each returned feature map.
    """

    def __init__(
        self,
        name: str,
        pretrained: bool = False,
        ckpt_path: str | Path | None = None,
        in_chans: int = 3,
        out_indices: list[int] | tuple[int, ...] | None = None,
        **kwargs: Any,
    ):
        super().__init__()
        import timm

        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        if out_indices is not None:
            kwargs["out_indices"] = tuple(out_indices)
        if ckpt_path is not None:
            path = Path(ckpt_path)
            if not path.is_file():
                raise FileNotFoundError(f"Backbone weights ckpt_path='{path}' does not exist.")
            pretrained = True
            kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
        try:
            self.model = timm.create_model(
                name, pretrained=pretrained, features_only=True, in_chans=in_chans, **kwargs
            )
        except (OSError, RuntimeError) as err:
            if pretrained and ckpt_path is None:
                raise RuntimeError(
                    f"Could not fetch pretrained weights for timm model '{name}' ({err}). "
                    "Without network access, download the weights elsewhere and pass "
                    "ckpt_path=<file> (backbone_ckpt_path in a factory config)."
                ) from err
            raise
        self.out_channels: list[int] = list(self.model.feature_info.channels())
        self.strides: list[int] = list(self.model.feature_info.reduction())

    def forward(self, x: torch.Tensor, **kwargs: Any) -> list[torch.Tensor]:
        """Features of ``x`` ``(B, C, H, W)``, one ``(B, C_i, H/s_i, W/s_i)`` per level.

        Extra keyword inputs (such as ``temporal_coords``) are ignored: timm models do not use
        them.
        """
        return list(self.model(x))


class TimmBackboneSource(ExternalSource):
    """timm models as backbones (``BACKBONE_REGISTRY.build("timm_resnet18", in_chans=6)``).

    Membership asks timm's own registry (a dict lookup); the full name list is computed once,
    only when someone iterates.
    """

    name = "timm backbone"

    def _names(self) -> tuple[str, ...]:
        import timm

        return tuple(timm.list_models())

    def _knows(self, name: str) -> bool:
        import timm

        return timm.is_model(name)

    def _build(self, name: str, *args: Any, **kwargs: Any) -> TimmBackbone:
        return TimmBackbone(name, *args, **kwargs)


BACKBONE_REGISTRY.register_source("timm", TimmBackboneSource())
