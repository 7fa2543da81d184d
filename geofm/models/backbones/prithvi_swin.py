"""Prithvi Swin-B and Swin-L backbones: timm's Swin Transformer on HLS bands.

Two variants pretrained on Harmonized Landsat Sentinel-2 (HLS) imagery:

========================  =========  =================  =============================
Variant                   embed dim  heads              ``out_channels``
========================  =========  =================  =============================
``prithvi_swin_B``        128        (4, 8, 16, 32)     [128, 256, 512, 1024]
``prithvi_swin_L``        192        (6, 12, 24, 48)    [192, 384, 768, 1536]
========================  =========  =================  =============================

Both use patch 4, window 7 and depths (2, 2, 18, 2), and return four NCHW feature maps with
strides 4, 8, 16 and 32. Weights are found like every geofm backbone's
(:func:`~geofm.models.backbones.pretrained.resolve_weights`: ``ckpt_path``, or with
``pretrained=True`` the hub file of the pretrained config from the local Hugging Face cache;
no public file is known for these two, so ``ckpt_path`` it is) and loaded by the shared
:func:`~geofm.models.backbones.checkpoints.load_backbone_checkpoint`.
Checkpoint layouts understood: this backbone's own ``state_dict``, timm's ``SwinTransformer``,
the original Microsoft / SimMIM Swin layout (timm converts it), each optionally wrapped in a
Lightning checkpoint (``{"state_dict": ...}``), ``{"model": ...}`` or a key prefix such as
``encoder.``, ``backbone.``, ``module.`` or ``model.encoder.``.

Example:
    >>> backbone = prithvi_swin_B(ckpt_path="prithvi_swin_B.pt", bands=["RED", "NIR_NARROW"])
    >>> features = backbone(torch.randn(2, 2, 224, 224))  # 4 maps, (2, 128, 56, 56) first
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from geofm.data.bands import Band, resolve_bands
from geofm.models.backbones.checkpoints import load_backbone_checkpoint
from geofm.models.backbones.out_indices import check_out_indices
from geofm.models.backbones.pretrained import (
    PRETRAINED_CONFIGS,
    PRITHVI_BANDS,
    PretrainedConfig,
    resolve_weights,
)
from geofm.models.backbones.prithvi_vit import bands_for_channels, resolve_aliases
from geofm.registry import GEOFM_BACKBONE_REGISTRY

if TYPE_CHECKING:
    from geofm.models.catalog import BackboneInfo

__all__ = [
    "PrithviSwinVariant",
    "VARIANTS",
    "SWIN_ALIASES",
    "PrithviSwin",
    "prithvi_swin_B",
    "prithvi_swin_L",
]

log = logging.getLogger(__name__)

# Checkpoint layouts recognised but not converted: key suffix -> advice.
_LAYOUT_HINTS = {
    "patch_embed.projection.weight": (
        "Its keys follow MMSegmentation's Swin layout (patch_embed.projection, stages.*), which "
        "geofm does not convert; use the original (timm or Microsoft/SimMIM layout) checkpoint."
    )
}
# Checkpoint entries that have no counterpart in a headless backbone (classifier, SimMIM's
# mask token) or that the model rebuilds itself (non-persistent buffers).
_IGNORED_PREFIXES = ("head.", "mask_token")
_IGNORED_SUFFIXES = ("relative_position_index", "attn_mask")
# TerraTorch's (and timm's) keyword for a Prithvi Swin argument -> geofm's name for it.
SWIN_ALIASES: dict[str, str] = {
    "model_bands": "bands",
    "in_channels": "in_chans",
    "drop_path": "drop_path_rate",
    "pretrained_cfg_overlay": "ckpt_path",
}
# SwinTransformer arguments this class decides itself.
_RESERVED = ("num_classes", "global_pool", "strict_img_size", "dynamic_img_size", "features_only")


@dataclass(frozen=True)
class PrithviSwinVariant:
    """The architecture of one Prithvi Swin variant (its weights: :attr:`pretrained_cfg`).

    Attributes:
        name: Registry name.
        embed_dim: Channels of the first stage; each later stage doubles them.
        num_heads: Attention heads per stage.
        depths: Swin blocks per stage.
        patch_size: Side of the patch-embedding convolution.
        window_size: Side of the attention windows.
    """

    name: str
    embed_dim: int
    num_heads: tuple[int, ...]
    depths: tuple[int, ...] = (2, 2, 18, 2)
    patch_size: int = 4
    window_size: int = 7

    @property
    def pretrained_cfg(self) -> PretrainedConfig | None:
        """Its entry of :data:`~geofm.models.backbones.pretrained.PRETRAINED_CONFIGS`."""
        return PRETRAINED_CONFIGS.get(self.name)

    @property
    def out_channels(self) -> list[int]:
        """Channels of the four feature maps."""
        return [self.embed_dim * 2**i for i in range(len(self.depths))]


VARIANTS: dict[str, PrithviSwinVariant] = {
    "prithvi_swin_B": PrithviSwinVariant("prithvi_swin_B", 128, num_heads=(4, 8, 16, 32)),
    "prithvi_swin_L": PrithviSwinVariant("prithvi_swin_L", 192, num_heads=(6, 12, 24, 48)),
}


# ---------------------------------------------------------------------------------- model
class PrithviSwin(nn.Module):
    """A Swin Transformer returning its four stage outputs as NCHW feature maps.

    Wraps timm's ``SwinTransformer`` built with ``strict_img_size=False``, so any input whose
    sides are multiples of 32 works (64x64, 224x224, 512x512...), whatever ``img_size`` is.

    Args:
        embed_dim: Channels of the first stage; each later stage doubles them.
        depths: Swin blocks per stage.
        num_heads: Attention heads per stage.
        bands: Input bands in channel order, as names known to :mod:`geofm.data.bands`
            (``"red"``, ``HLSBands.RED``) or integer identifiers of unnamed bands; the number of
            input channels follows them. Defaults to ``pretrained_bands``.
        pretrained_bands: Bands of the checkpoint's input channels, in order; channels of
            ``bands`` found here are copied from the checkpoint, the others (integers included,
            unless listed here too) are initialised anew.
        ckpt_path: Local weight file to load (see the module docstring for the layouts).
        img_size: Input size the attention windows are laid out for (224 in pretraining).
        patch_size: Side of the patch-embedding convolution.
        window_size: Side of the attention windows; checkpoint position-bias tables of another
            window size are resized.
        out_indices: Stages to return, in this order (0 to 3, negatives count from the end);
            all by default. Stages after the largest one requested are dropped.
        drop_path_rate: Stochastic depth rate (timm's default, 0.1, when None).
        **kwargs: Other ``timm.models.swin_transformer.SwinTransformer`` arguments
            (``mlp_ratio``, ``device``, ``dtype``...); ``None`` values are dropped.

    Attributes:
        extra_inputs: Keyword inputs :meth:`forward` accepts besides ``x``: ``()`` (no
            coordinate encoding).
        pretrained_stats: ``{"bands": [...], "mean": [...], "std": [...]}`` of the input
            bands, set by the variant functions from the pretrained config; ``None`` when a
            band has none (no statistics are published for the Prithvi Swin weights).
        out_channels: Channels of each returned feature map.
        strides: Downsampling factor of each returned feature map.
        bands: Canonical input bands (band-enum values such as ``"RED"``, or ints).
        pretrained_bands: Canonical bands of the checkpoint's input channels.
        model: The wrapped timm ``SwinTransformer``.
    """

    def __init__(
        self,
        embed_dim: int = 128,
        depths: Sequence[int] = (2, 2, 18, 2),
        num_heads: Sequence[int] = (4, 8, 16, 32),
        bands: Sequence[Band] | None = None,
        pretrained_bands: Sequence[Band] = PRITHVI_BANDS,
        ckpt_path: str | Path | None = None,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 4,
        window_size: int = 7,
        out_indices: Sequence[int] | None = None,
        drop_path_rate: float | None = None,
        **kwargs: Any,
    ):
        super().__init__()
        from timm.models.swin_transformer import SwinTransformer

        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        reserved = sorted(set(kwargs) & set(_RESERVED))
        if reserved:
            raise ValueError(
                f"PrithviSwin sets {reserved} itself (a headless backbone accepting any input "
                "size); remove them."
            )
        if len(depths) != len(num_heads):
            raise ValueError(
                f"depths={tuple(depths)} and num_heads={tuple(num_heads)} must have one entry "
                "per stage."
            )
        self.pretrained_bands: list[Band] = resolve_bands(
            pretrained_bands, argument="pretrained_bands"
        )
        self.bands: list[Band] = (
            list(self.pretrained_bands) if bands is None else resolve_bands(bands)
        )
        in_chans = kwargs.pop("in_chans", len(self.bands))
        if in_chans != len(self.bands):
            raise ValueError(
                f"in_chans={in_chans} does not match the {len(self.bands)} bands {self.bands}; "
                "the number of input channels follows bands, so pass bands only."
            )
        if drop_path_rate is not None:
            kwargs["drop_path_rate"] = drop_path_rate
        self.out_indices: list[int] = check_out_indices(out_indices, len(depths), unit="stage")
        self.extra_inputs: tuple[str, ...] = ()
        self.pretrained_stats: dict[str, list[Any]] | None = None

        self.model = SwinTransformer(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=len(self.bands),
            num_classes=0,
            embed_dim=embed_dim,
            depths=tuple(depths),
            num_heads=tuple(num_heads),
            window_size=window_size,
            strict_img_size=False,
            **kwargs,
        )
        if ckpt_path is not None:
            self._load_checkpoint(ckpt_path)
        # After loading, so that a full checkpoint still matches the full model.
        self._taps = sorted(self.out_indices)  # timm returns stages in network order
        self.model.prune_intermediate_layers(self._taps, prune_norm=False, prune_head=True)
        info = self.model.feature_info
        self.out_channels: list[int] = [info[i]["num_chs"] for i in self.out_indices]
        self.strides: list[int] = [info[i]["reduction"] for i in self.out_indices]

    @property
    def in_chans(self) -> int:
        """Number of input channels (one per band)."""
        return len(self.bands)

    def _load_checkpoint(self, ckpt_path: str | Path) -> None:
        """Load a weight file into the Swin (before pruning), adapting the first layer to bands.

        Raises:
            FileNotFoundError: when ``ckpt_path`` is not a file.
            ValueError: when the file holds no Swin weights, or keys are missing, unexpected or
                of another shape than the model's (each listed).
        """
        load_backbone_checkpoint(
            self.model,
            ckpt_path,
            self.bands,
            self.pretrained_bands,
            model=(
                f"Swin (embed_dim={self.model.embed_dim}, "
                f"depths={[len(s.blocks) for s in self.model.layers]})"
            ),
            what="Swin patch embedding",
            prepare=functools.partial(_prepare_swin_state, swin=self.model),
            hints=_LAYOUT_HINTS,
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of an image batch.

        Args:
            x: ``(B, C, H, W)``, or ``(B, C, 1, H, W)`` (one frame), with ``C = len(bands)`` and
                ``H``, ``W`` multiples of 32. No keyword input is accepted (no coordinate
                encoding): a ``temporal_coords=`` raises ``TypeError`` rather than vanish.

        Returns:
            One ``(B, out_channels[i], H / strides[i], W / strides[i])`` tensor per entry of
            ``out_indices``; the last stage is layer-normalised.
        """
        if x.ndim == 5:
            if x.shape[2] != 1:
                raise ValueError(
                    f"Prithvi Swin takes one frame, got input {tuple(x.shape)} with "
                    f"{x.shape[2]} frames (B, C, T, H, W); select a frame or use a temporal "
                    "backbone."
                )
            x = x.squeeze(2)
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"Prithvi Swin expects (B, {self.in_chans}, H, W) for bands {self.bands}, got "
                f"{tuple(x.shape)}."
            )
        features = self.model.forward_intermediates(
            x, indices=self._taps, norm=True, intermediates_only=True
        )
        by_stage = dict(zip(self._taps, features, strict=True))
        return [by_stage[i] for i in self.out_indices]


def _prepare_swin_state(
    state: dict[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    source: str,
    swin: nn.Module,
) -> dict[str, torch.Tensor]:
    """The Swin-specific part of loading: drop what a backbone lacks, let timm convert the rest.

    Args:
        state: Swin tensors of a checkpoint, prefix removed.
        expected: The timm ``SwinTransformer``'s ``state_dict()`` (unused: timm reads ``swin``).
        source: Where ``state`` came from (unused).
        swin: The timm ``SwinTransformer`` to load, not yet pruned.
    """
    from timm.models.swin_transformer import checkpoint_filter_fn

    del expected, source  # the signature is the shared loader's
    state = {
        k: v
        for k, v in state.items()
        if not k.startswith(_IGNORED_PREFIXES) and not k.endswith(_IGNORED_SUFFIXES)
    }
    # timm renames the Microsoft/SimMIM layout and resizes position-bias tables and the patch
    # kernel when window or patch size differ; timm-layout keys pass unchanged.
    return checkpoint_filter_fn(state, swin)


# ---------------------------------------------------------------------------------- builders
def _build(
    variant: PrithviSwinVariant,
    pretrained: bool,
    ckpt_path: str | Path | None,
    num_frames: int | None,
    kwargs: dict[str, Any],
) -> PrithviSwin:
    """What both variant functions do: find the weights, build, attach the statistics."""
    if num_frames is not None and num_frames != 1:
        raise ValueError(f"{variant.name} takes one frame, got num_frames={num_frames}.")
    cfg = variant.pretrained_cfg
    kwargs = dict(kwargs)
    terratorch_names = {k: kwargs.pop(k) for k in list(kwargs) if k in SWIN_ALIASES}
    args = resolve_aliases(
        {
            "bands": kwargs.pop("bands", None),
            "in_chans": kwargs.pop("in_chans", None),
            "drop_path_rate": kwargs.pop("drop_path_rate", None),
            "ckpt_path": ckpt_path,
        },
        terratorch_names,
        SWIN_ALIASES,
        variant.name,
    )
    ckpt_path = args["ckpt_path"]
    checkpoint_bands = kwargs.get("pretrained_bands") or (cfg.bands if cfg else PRITHVI_BANDS)
    kwargs["bands"] = bands_for_channels(
        args["in_chans"], args["bands"], checkpoint_bands, variant.name
    )
    kwargs["drop_path_rate"] = args["drop_path_rate"]
    # Checked before building, as for the ViT: a missing file should cost no initialisation.
    weights = resolve_weights(variant.name, cfg, pretrained, ckpt_path)
    args: dict[str, Any] = {
        "embed_dim": variant.embed_dim,
        "depths": variant.depths,
        "num_heads": variant.num_heads,
        "patch_size": variant.patch_size,
        "window_size": variant.window_size,
        "pretrained_bands": cfg.bands if cfg is not None else PRITHVI_BANDS,
    }
    if cfg is not None:
        args["img_size"] = cfg.img_size
    # None means "the variant's default", so CLI/config defaults never override it.
    args.update({k: v for k, v in kwargs.items() if v is not None})
    model = PrithviSwin(ckpt_path=weights, **args)
    # Statistics describe the official pretraining: a checkpoint with other bands has its own.
    if cfg is not None and model.pretrained_bands == list(cfg.bands):
        model.pretrained_stats = cfg.stats(model.bands)
    return model


@GEOFM_BACKBONE_REGISTRY.register
def prithvi_swin_B(  # noqa: N802 (the published model name)
    pretrained: bool = False,
    ckpt_path: str | Path | None = None,
    bands: Sequence[Band] | None = None,
    num_frames: int | None = None,
    **kwargs: Any,
) -> PrithviSwin:
    """Prithvi Swin-B: embed 128, heads (4, 8, 16, 32), out_channels [128, 256, 512, 1024].

    Args:
        pretrained: Load the official weights of the pretrained config from the local Hugging
            Face cache (never downloaded); no public file is known for the Prithvi Swins, so
            this raises an error that asks for ``ckpt_path``.
        ckpt_path: Local weight file, loaded whatever ``pretrained`` says.
        bands: Input bands (default: the six HLS bands BLUE, GREEN, RED, NIR_NARROW, SWIR_1,
            SWIR_2).
        num_frames: Accepted for factories that pass it; only 1 is valid.
        **kwargs: :class:`PrithviSwin` arguments (``img_size``, ``out_indices``,
            ``drop_path_rate``, ``window_size``, ``patch_size``, ``pretrained_bands``,
            ``depths``, ``in_chans``...), and TerraTorch's names (:data:`SWIN_ALIASES`):
            ``model_bands`` (``bands``), ``in_channels`` (``in_chans``), ``drop_path``
            (``drop_path_rate``), ``pretrained_cfg_overlay: {file: path}`` (``ckpt_path``).
            ``in_chans`` without ``bands`` takes the first pretrained bands (see
            :func:`~geofm.models.backbones.prithvi_vit.bands_for_channels`). ``None`` values
            are dropped; an alias that disagrees with its geofm name is an error.
    """
    variant = VARIANTS["prithvi_swin_B"]
    return _build(variant, pretrained, ckpt_path, num_frames, {"bands": bands, **kwargs})


@GEOFM_BACKBONE_REGISTRY.register
def prithvi_swin_L(  # noqa: N802 (the published model name)
    pretrained: bool = False,
    ckpt_path: str | Path | None = None,
    bands: Sequence[Band] | None = None,
    num_frames: int | None = None,
    **kwargs: Any,
) -> PrithviSwin:
    """Prithvi Swin-L: embed 192, heads (6, 12, 24, 48), out_channels [192, 384, 768, 1536].

    Args: as :func:`prithvi_swin_B`.
    """
    variant = VARIANTS["prithvi_swin_L"]
    return _build(variant, pretrained, ckpt_path, num_frames, {"bands": bands, **kwargs})


def describe(name: str) -> BackboneInfo:
    """The catalog entry of a Prithvi Swin variant (see :mod:`geofm.models.catalog`)."""
    return PRETRAINED_CONFIGS[name].info(name, "Prithvi Swin", "HLS")
