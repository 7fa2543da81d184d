"""Prithvi-EO ViT backbones (NASA/IBM), loading the official checkpoints unchanged.

=========================  =====  =====  =====  =========  ===============  =====================
name                       dim    depth  heads  patch      coordinates      official weights
=========================  =====  =====  =====  =========  ===============  =====================
``prithvi_eo_tiny``        256    4      4      (1,16,16)  --               none (random only)
``prithvi_eo_v1_100``      768    12     12     (1,16,16)  --               Prithvi-EO-1.0-100M
``prithvi_eo_v2_tiny_tl``  192    12     3      (1,16,16)  time, location   Prithvi-EO-2.0-tiny-TL
``prithvi_eo_v2_100_tl``   768    12     12     (1,16,16)  time, location   Prithvi-EO-2.0-100M-TL
``prithvi_eo_v2_300``      1024   24     16     (1,16,16)  --               Prithvi-EO-2.0-300M
``prithvi_eo_v2_300_tl``   1024   24     16     (1,16,16)  time, location   Prithvi-EO-2.0-300M-TL
``prithvi_eo_v2_600``      1280   32     16     (1,14,14)  --               Prithvi-EO-2.0-600M
``prithvi_eo_v2_600_tl``   1280   32     16     (1,14,14)  time, location   Prithvi-EO-2.0-600M-TL
=========================  =====  =====  =====  =========  ===============  =====================

Each variant is a registered function of the same name (bottom of this module); all go through
:func:`build_prithvi_vit`. Architectures are in :data:`VARIANTS`, weight facts (hub file, bands,
normalisation) in :data:`~geofm.models.backbones.pretrained.PRETRAINED_CONFIGS`. Parameter names
follow the official checkpoints, so loading only strips their ``encoder.`` prefix (see
:mod:`geofm.models.backbones.prithvi_weights`).

Example:
    >>> backbone = prithvi_eo_v2_300_tl(
    ...     ckpt_path="Prithvi_EO_V2_300M_TL.pt",
    ...     bands=["BLUE", "GREEN", "RED", "NIR_NARROW"], num_frames=3)
    >>> backbone.extra_inputs
    ('temporal_coords', 'location_coords')
    >>> tokens = backbone(x, temporal_coords=tc, location_coords=lc)  # x: (B, 4, 3, 224, 224)
    >>> tokens[-1].shape  # (B, 1 + 3 * 14 * 14, 1024), final norm applied
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from geofm.data.bands import Band, resolve_bands
from geofm.models.backbones.out_indices import check_out_indices
from geofm.models.backbones.pos_embed import resize_pos_embed, sincos_1d, sincos_3d_pos_embed
from geofm.models.backbones.pretrained import (
    PRETRAINED_CONFIGS,
    PRITHVI_BANDS,
    PretrainedConfig,
    resolve_weights,
)
from geofm.models.backbones.prithvi_weights import load_prithvi_checkpoint
from geofm.registry import GEOFM_BACKBONE_REGISTRY

if TYPE_CHECKING:
    from geofm.models.catalog import BackboneInfo

__all__ = [
    "PrithviVariant",
    "VARIANTS",
    "CoordinateEncoder",
    "add_coordinate_codes",
    "init_linear_and_norm",
    "PatchEmbed3d",
    "PrithviViT",
    "build_prithvi_vit",
    "TERRATORCH_ALIASES",
    "resolve_aliases",
    "bands_for_channels",
    "prithvi_eo_tiny",
    "prithvi_eo_v1_100",
    "prithvi_eo_v2_tiny_tl",
    "prithvi_eo_v2_100_tl",
    "prithvi_eo_v2_300",
    "prithvi_eo_v2_300_tl",
    "prithvi_eo_v2_600",
    "prithvi_eo_v2_600_tl",
]

log = logging.getLogger(__name__)

_COORDS = ("time", "location")
# The forward keyword of each coordinate encoding.
_COORD_INPUTS = {"time": "temporal_coords", "location": "location_coords"}


@dataclass(frozen=True)
class PrithviVariant:
    """The architecture of one Prithvi ViT (its weights: :attr:`pretrained_cfg`).

    Attributes:
        name: Registry name.
        embed_dim: Token size ``D``.
        depth: Number of transformer blocks.
        num_heads: Attention heads.
        patch_size: Patch ``(t, h, w)``.
        coords_encoding: Coordinate encodings of the pretrained model (``"time"``,
            ``"location"``).
    """

    name: str
    embed_dim: int
    depth: int
    num_heads: int
    patch_size: tuple[int, int, int] = (1, 16, 16)
    coords_encoding: tuple[str, ...] = ()

    @property
    def pretrained_cfg(self) -> PretrainedConfig | None:
        """Its entry of :data:`~geofm.models.backbones.pretrained.PRETRAINED_CONFIGS`."""
        return PRETRAINED_CONFIGS.get(self.name)


_TL = ("time", "location")
_P14 = (1, 14, 14)
VARIANTS: dict[str, PrithviVariant] = {v.name: v for v in (
    PrithviVariant("prithvi_eo_tiny", 256, 4, 4),
    PrithviVariant("prithvi_eo_v1_100", 768, 12, 12),
    PrithviVariant("prithvi_eo_v2_tiny_tl", 192, 12, 3, coords_encoding=_TL),
    PrithviVariant("prithvi_eo_v2_100_tl", 768, 12, 12, coords_encoding=_TL),
    PrithviVariant("prithvi_eo_v2_300", 1024, 24, 16),
    PrithviVariant("prithvi_eo_v2_300_tl", 1024, 24, 16, coords_encoding=_TL),
    PrithviVariant("prithvi_eo_v2_600", 1280, 32, 16, patch_size=_P14),
    PrithviVariant("prithvi_eo_v2_600_tl", 1280, 32, 16, patch_size=_P14, coords_encoding=_TL),
)}
"""Architecture of every Prithvi ViT variant, by registry name."""


# ------------------------------------------------------------------------------ modules
class PatchEmbed3d(nn.Module):
    """Non-overlapping 3-D patches to tokens.

    Args:
        in_chans: Input bands ``C``.
        embed_dim: Token size ``D``.
        patch_size: Patch ``(t, h, w)``.
    """

    def __init__(self, in_chans: int, embed_dim: int, patch_size: tuple[int, int, int]):
        super().__init__()
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` -> ``(B, Tg * Hg * Wg, D)``, tokens in (t, h, w) order."""
        return self.proj(x).flatten(2).transpose(1, 2)


class CoordinateEncoder(nn.Module):
    """Sin-cos code of a coordinate pair, scaled: (year, day of year) or (lat, lon).

    The first value is coded in ``D // 2`` dims, the second in the rest, on the raw values.

    Args:
        embed_dim: Token size ``D``.
        learn_scale: Learn the scale (initialised at 0.1) instead of a fixed 1.0 buffer.
    """

    def __init__(self, embed_dim: int, learn_scale: bool = False):
        super().__init__()
        self.first_dim = embed_dim // 2
        self.second_dim = embed_dim - self.first_dim
        if learn_scale:
            self.scale = nn.Parameter(torch.full((1,), 0.1))
        else:
            self.register_buffer("scale", torch.ones(1))

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """``(..., 2)`` -> ``(..., D)``.

        Computed in the coordinates' float dtype (float32 for integer ones), as the reference
        does: a year such as 2020 is coded differently in float32 and float64.
        """
        if not coords.is_floating_point():
            coords = coords.to(torch.float32)
        first = sincos_1d(self.first_dim, coords[..., 0])
        second = sincos_1d(self.second_dim, coords[..., 1])
        code = torch.cat([first, second], dim=-1).reshape(*coords.shape[:-1], -1)
        return self.scale * code


def init_linear_and_norm(root: nn.Module) -> None:
    """The official MAE initialisation of every ``Linear`` (Xavier uniform, zero bias) and
    ``LayerNorm`` (ones, zeros) under ``root``; encoder and MAE decoder share it."""
    for module in root.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class PrithviViT(nn.Module):
    """Prithvi ViT encoder: 3-D patch embedding, fixed sin-cos positions, pre-norm blocks.

    Args:
        img_size: Image side, or ``(H, W)``, that ``pos_embed`` is computed for; other sizes
            are handled by interpolating it.
        patch_size: Patch ``(t, h, w)``.
        num_frames: Frames ``T`` per sample.
        in_chans: Input bands ``C``.
        embed_dim: Token size ``D``.
        depth: Number of blocks.
        num_heads: Attention heads.
        mlp_ratio: MLP hidden size over ``D``.
        drop_path: Stochastic depth of the last block; it grows linearly from 0 over the blocks.
        coords_encoding: Coordinate encodings to add when the caller passes coordinates:
            ``"time"`` and/or ``"location"``.
        coords_scale_learn: Learn the coordinate-encoding scales (start at 0.1) instead of
            fixed 1.0 buffers.
        out_indices: Blocks whose outputs are returned, in this order (negative counts from
            the end); all by default. Blocks after the largest index are not run (their
            parameters then get no gradient: use DDP's ``find_unused_parameters`` if trained).
        fused_attn: Compute attention with ``F.scaled_dot_product_attention``; ``False`` uses
            the explicit ``softmax(Q K^T / sqrt(d)) V`` (for comparison).

    Attributes:
        out_channels: ``[D * Tg] * len(out_indices)``, ``Tg = num_frames // t``.
        grid_size: Token grid ``(Tg, Hg, Wg)`` of ``img_size``.
        extra_inputs: Keyword inputs :meth:`forward` accepts besides ``x``:
            ``("temporal_coords", "location_coords")`` for a model with both coordinate
            encodings (the ``_tl`` variants), one of them with one encoding, ``()`` without.
            Preprocessing and models pass exactly these batch entries.
        pretrained_stats: ``{"bands": [...], "mean": [...], "std": [...]}``: the pretraining
            normalisation of the input bands, in input order (file units, reflectance x 10000),
            set by :func:`build_prithvi_vit`; ``None`` when a band has no pretraining
            statistics (a new band, an integer identifier, a custom ``pretrained_bands``) or
            the model was built directly.
        bands: Input bands in channel order, set by :func:`build_prithvi_vit`.
        variant: The :class:`PrithviVariant` built, set by :func:`build_prithvi_vit`.
    """

    def __init__(
        self,
        img_size: int | Sequence[int] = 224,
        patch_size: Sequence[int] = (1, 16, 16),
        num_frames: int = 1,
        in_chans: int = 6,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        coords_encoding: Sequence[str] = (),
        coords_scale_learn: bool = False,
        out_indices: Sequence[int] | None = None,
        fused_attn: bool = True,
    ):
        super().__init__()
        from timm.models.vision_transformer import Block  # timm's names match the checkpoints

        self.img_size = _pair(img_size, "img_size")
        self.patch_size = _triple(patch_size)
        self.num_frames = int(num_frames)
        self.in_chans = int(in_chans)
        self.embed_dim = int(embed_dim)
        self.depth = int(depth)
        frames_and_size = (self.num_frames, *self.img_size)
        if any(s < p or s % p for s, p in zip(frames_and_size, self.patch_size, strict=True)):
            raise ValueError(
                f"num_frames and img_size {frames_and_size} must be multiples of the patch size "
                f"{self.patch_size} (t, h, w)."
            )
        self.grid_size = tuple(
            s // p for s, p in zip(frames_and_size, self.patch_size, strict=True)
        )
        unknown = sorted(set(coords_encoding) - set(_COORDS))
        if isinstance(coords_encoding, str) or unknown:
            raise ValueError(
                f"coords_encoding={coords_encoding!r}: give a list of {list(_COORDS)} (or [])."
            )
        self.coords_encoding = tuple(c for c in _COORDS if c in coords_encoding)
        self.extra_inputs: tuple[str, ...] = tuple(_COORD_INPUTS[c] for c in self.coords_encoding)
        self.out_indices = check_out_indices(out_indices, self.depth, unit="block")
        self.out_channels: list[int] = [self.embed_dim * self.grid_size[0]] * len(self.out_indices)
        self.pretrained_stats: dict[str, list[Any]] | None = None
        self.bands: list[Band] = []
        self.variant: PrithviVariant | None = None
        self._warned_border = False

        self.patch_embed = PatchEmbed3d(self.in_chans, self.embed_dim, self.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dim))
        # Fixed, recomputed rather than read from checkpoints; persistent so that the state
        # dict has the official layout.
        self.register_buffer(
            "pos_embed",
            sincos_3d_pos_embed(self.embed_dim, self.grid_size).to(self.cls_token.device),
        )
        self.temporal_embed_enc = (
            CoordinateEncoder(self.embed_dim, coords_scale_learn)
            if "time" in self.coords_encoding
            else None
        )
        self.location_embed_enc = (
            CoordinateEncoder(self.embed_dim, coords_scale_learn)
            if "location" in self.coords_encoding
            else None
        )
        rates = torch.linspace(0, float(drop_path), self.depth, device="cpu").tolist()
        self.blocks = nn.ModuleList(
            Block(
                self.embed_dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=True,
                drop_path=rate,
                norm_layer=nn.LayerNorm,
                act_layer=nn.GELU,
            )
            for rate in rates
        )
        self.norm = nn.LayerNorm(self.embed_dim)
        self.fused_attn = fused_attn
        self._init_weights()

    # -------------------------------------------------------------------------- setup
    def _init_weights(self) -> None:
        weight = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        init_linear_and_norm(self)

    @property
    def fused_attn(self) -> bool:
        """Whether attention uses ``F.scaled_dot_product_attention`` (settable)."""
        return all(block.attn.fused_attn for block in self.blocks)

    @fused_attn.setter
    def fused_attn(self, value: bool) -> None:
        for block in self.blocks:
            block.attn.fused_attn = bool(value)

    @property
    def image_necks(self) -> tuple[dict[str, Any], ...]:
        """Necks that turn the tokens into maps ``(B, Tg * D, Hg, Wg)``, class token dropped.

        The factory inserts them when a config gives no necks, as TerraTorch's models apply
        Prithvi's ``prepare_features_for_image_model`` then.
        """
        return (
            {
                "name": "ReshapeTokensToImage",
                "remove_cls_token": True,
                "effective_time_dim": self.grid_size[0],
            },
        )

    # -------------------------------------------------------------------------- forward
    def _as_frames(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            if self.patch_size[0] != 1:
                raise ValueError(
                    f"A (B, C, H, W) input needs a time patch of 1, this model's is "
                    f"{self.patch_size[0]}; pass (B, C, T, H, W) with T={self.num_frames} "
                    "(for files that stack the dates, data.init_args.expand_temporal_dimension: "
                    "true), or build the backbone with a time patch of 1."
                )
            x = x.unsqueeze(2)
        if x.ndim != 5:
            raise ValueError(
                f"Prithvi ViT expects (B, C, H, W) or (B, C, T, H, W), got shape {tuple(x.shape)}."
            )
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"Input has {x.shape[1]} channels but the model was built for {self.in_chans} "
                f"bands {self.bands or ''}; set bands= to the input's bands."
            )
        too_small = any(s < p for s, p in zip(x.shape[2:], self.patch_size, strict=True))
        if too_small:
            raise ValueError(
                f"Input (T, H, W) = {tuple(x.shape[2:])} is smaller than one patch "
                f"{self.patch_size}."
            )
        if not self._warned_border and any(
            s % p for s, p in zip(x.shape[2:], self.patch_size, strict=True)
        ):
            log.warning(
                "Input (T, H, W) = %s is not a multiple of the patch size %s: the border is "
                "ignored. Pad the input for pixel-wise tasks.",
                tuple(x.shape[2:]),
                self.patch_size,
            )
            self._warned_border = True
        return x

    def _no_encoding(self, argument: str, encoding: str) -> ValueError:
        """The error for coordinates given to a model without their encoding."""
        name = self.variant.name if self.variant is not None else "This PrithviViT"
        if self.variant is not None and encoding in self.variant.coords_encoding:
            advice = (
                f"it was built with coords_encoding={list(self.coords_encoding)}; rebuild it "
                f"with '{encoding}' in coords_encoding"
            )
        else:
            base = self.variant.name if self.variant is not None else ""
            with_tl = [n for n, v in VARIANTS.items() if encoding in v.coords_encoding]
            suggestion = f"{base}_tl" if f"{base}_tl" in VARIANTS else f"one of {with_tl}"
            advice = f"use {suggestion} (time and location encodings)"
        return ValueError(
            f"{name} has no {encoding} encoding, so {argument} cannot be used: {advice}, or "
            f"leave {argument} out of the model's inputs (backbone.extra_inputs lists those "
            "it takes)."
        )

    def embed_tokens(
        self,
        x: torch.Tensor,
        temporal_coords: torch.Tensor | None = None,
        location_coords: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch tokens with their position (and coordinate) codes, and the class token.

        The part of :meth:`forward` before the blocks; an MAE masks the patch tokens here,
        after the position embedding is added (as the official pretraining does).

        Args: see :meth:`forward`.

        Returns:
            ``(tokens, cls_token)``: ``(B, Tg * Hg * Wg, D)`` in (t, h, w) order, and
            ``(B, 1, D)`` with its position code.
        """
        if temporal_coords is not None and self.temporal_embed_enc is None:
            raise self._no_encoding("temporal_coords", "time")
        if location_coords is not None and self.location_embed_enc is None:
            raise self._no_encoding("location_coords", "location")
        x = self._as_frames(x)
        batch, _, frames = x.shape[:3]
        grid = tuple(s // p for s, p in zip(x.shape[2:], self.patch_size, strict=True))
        tokens = self.patch_embed(x)
        pos_embed = resize_pos_embed(self.pos_embed, self.grid_size, grid)
        tokens = tokens + pos_embed[:, 1:]
        tokens = add_coordinate_codes(
            tokens,
            grid,
            frames,
            self.patch_size[0],
            self.temporal_embed_enc,
            self.location_embed_enc,
            temporal_coords,
            location_coords,
        )
        cls_token = (self.cls_token + pos_embed[:, :1]).expand(batch, -1, -1)
        return tokens, cls_token

    def forward(
        self,
        x: torch.Tensor,
        temporal_coords: torch.Tensor | None = None,
        location_coords: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Tokens after each selected block.

        Args:
            x: ``(B, C, H, W)`` (one frame) or ``(B, C, T, H, W)``.
            temporal_coords: ``(B, T, 2)`` (year, day of year), for models with the time
                encoding; ``(B, 2)`` is accepted for one frame. ``None``: no time code added.
            location_coords: ``(B, 2)`` (latitude, longitude), for models with the location
                encoding. ``None``: no location code added.

        Returns:
            One ``(B, 1 + Tg * Hg * Wg, D)`` tensor per ``out_indices`` entry, class token
            first; the output of the last block has the final norm applied.

        Raises:
            ValueError: for coordinates this model has no encoding for, or of the wrong shape.
            TypeError: for any other keyword (a misspelt one must not be silently dropped).
        """
        tokens, cls_token = self.embed_tokens(x, temporal_coords, location_coords)
        hidden = torch.cat([cls_token, tokens], dim=1)

        wanted = set(self.out_indices)
        outputs: dict[int, torch.Tensor] = {}
        for index, block in enumerate(self.blocks[: max(wanted) + 1]):
            hidden = block(hidden)
            if index == self.depth - 1:
                hidden = self.norm(hidden)
            if index in wanted:
                outputs[index] = hidden
        return [outputs[i] for i in self.out_indices]


def _check_coords(coords: Any, shape: tuple[int, ...], name: str, layout: str) -> torch.Tensor:
    if not isinstance(coords, torch.Tensor):
        raise TypeError(f"{name} must be a tensor {layout}, got {type(coords).__name__}.")
    if tuple(coords.shape) != shape:
        raise ValueError(
            f"{name} must have shape {layout} = {shape} for this input, got "
            f"{tuple(coords.shape)}."
        )
    return coords


def add_coordinate_codes(
    tokens: torch.Tensor,
    grid: tuple[int, int, int],
    frames: int,
    time_patch: int,
    temporal_encoder: CoordinateEncoder | None,
    location_encoder: CoordinateEncoder | None,
    temporal_coords: torch.Tensor | None,
    location_coords: torch.Tensor | None,
) -> torch.Tensor:
    """Add the time and location codes to patch tokens (the encoder's and the MAE decoder's).

    Args:
        tokens: ``(B, Tg * Hg * Wg, D)`` in (t, h, w) order.
        grid: ``(Tg, Hg, Wg)`` of ``tokens``.
        frames: Frames ``T`` of the input.
        time_patch: Frames per time patch ``t``.
        temporal_encoder: Codes ``(year, day)`` pairs, or ``None`` (no time code added).
        location_encoder: Codes ``(lat, lon)`` pairs, or ``None``.
        temporal_coords: ``(B, T, 2)`` (``(B, 2)`` for one frame), or ``None``.
        location_coords: ``(B, 2)`` or ``None``.

    Returns:
        ``tokens`` plus the codes, same shape.
    """
    batch = tokens.shape[0]
    if temporal_encoder is not None and temporal_coords is not None:
        one_frame = frames == 1 and isinstance(temporal_coords, torch.Tensor)
        if one_frame and temporal_coords.ndim == 2:
            temporal_coords = temporal_coords.unsqueeze(1)  # (B, 2) for a single frame
        coords = _check_coords(temporal_coords, (batch, frames, 2), "temporal_coords", "(B, T, 2)")
        # One code per token frame (the first frame of each time patch), for its tokens.
        code = temporal_encoder(coords[:, ::time_patch][:, : grid[0]])
        tokens = (
            tokens.unflatten(1, (grid[0], grid[1] * grid[2])) + code[:, :, None].to(tokens)
        ).flatten(1, 2)
    if location_encoder is not None and location_coords is not None:
        coords = _check_coords(location_coords, (batch, 2), "location_coords", "(B, 2)")
        tokens = tokens + location_encoder(coords)[:, None].to(tokens)
    return tokens


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or (H, W), got {value!r}.")
    return pair  # type: ignore[return-value]


def _triple(value: int | Sequence[int]) -> tuple[int, int, int]:
    if isinstance(value, int):
        return (1, value, value)
    triple = tuple(int(v) for v in value)
    if len(triple) == 2:
        triple = (1, *triple)
    if len(triple) != 3:
        raise ValueError(f"patch_size must be an int, (h, w) or (t, h, w), got {value!r}.")
    return triple  # type: ignore[return-value]


# ------------------------------------------------------------------------------ aliases
TERRATORCH_ALIASES: dict[str, str] = {
    "model_bands": "bands",
    "in_channels": "in_chans",
    "drop_path_rate": "drop_path",
    "pretrained_cfg_overlay": "ckpt_path",
}
"""TerraTorch's (and timm's) keyword for a Prithvi ViT argument -> geofm's name for it."""

# Keywords TerraTorch configs give a Prithvi ViT that cannot change it (TerraTorch's ViT
# swallows them too); accepted with a warning so that those configs run.
_VIT_NO_EFFECT: dict[str, str] = {
    "window_size": "a ViT has no attention windows (window_size is a Swin argument)",
    "pretrain_img_size": "the position embedding is a fixed sin-cos, recomputed for img_size",
}


def _overlay_file(overlay: Any, owner: str) -> str:
    """The weight file of timm's ``pretrained_cfg_overlay``; other overlay keys are refused."""
    if not isinstance(overlay, Mapping) or set(overlay) != {"file"}:
        raise ValueError(
            f"{owner}: pretrained_cfg_overlay={overlay!r} is supported as {{file: <path>}} only "
            "(geofm's ckpt_path); for the official weights use pretrained: true, which reads "
            "the local Hugging Face cache."
        )
    return str(overlay["file"])


def _same(a: Any, b: Any) -> bool:
    # A YAML list and a tuple default, or a Path and a str, name the same value.
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return [str(v) for v in a] == [str(v) for v in b]
    return a == b or str(a) == str(b)


def resolve_aliases(
    given: Mapping[str, Any],
    aliases_given: Mapping[str, Any],
    aliases: Mapping[str, str],
    owner: str,
    no_effect: Mapping[str, str] | None = None,
    valid: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Fold TerraTorch's keyword names into geofm's.

    Args:
        given: geofm arguments as received (``None``: not given).
        aliases_given: The other keywords received; each must be a key of ``aliases`` or
            ``no_effect``. ``None`` values are dropped, as for every geofm argument.
        aliases: Alias -> geofm name (``pretrained_cfg_overlay`` maps its ``file``).
        owner: The backbone, for messages.
        no_effect: Keywords accepted with a warning because they cannot change this backbone,
            with the reason.
        valid: The owner's own argument names, listed when a keyword is unknown (default the
            keys of ``given``).

    Returns:
        ``given`` with the aliased values filled in.

    Raises:
        TypeError: for a keyword that is neither an alias nor known to have no effect.
        ValueError: when an alias and its geofm name (or two aliases of it) disagree.
    """
    no_effect = no_effect or {}
    unknown = sorted(set(aliases_given) - set(aliases) - set(no_effect))
    if unknown:
        raise TypeError(
            f"{owner} got unknown arguments {unknown}; valid arguments: "
            f"{list(valid) if valid is not None else sorted(given)}, and TerraTorch's names "
            f"{sorted(aliases)}."
        )
    resolved = dict(given)
    source = {name: name for name, value in given.items() if value is not None}
    for alias, value in aliases_given.items():
        if value is None:
            continue
        if alias in no_effect:
            log.warning("%s: %s=%r has no effect: %s.", owner, alias, value, no_effect[alias])
            continue
        target = aliases[alias]
        if alias == "pretrained_cfg_overlay":
            value = _overlay_file(value, owner)
        current = resolved.get(target)
        if current is not None and not _same(current, value):
            raise ValueError(
                f"{owner}: {alias}={value!r} (TerraTorch's name) and {source[target]}={current!r} "
                f"disagree; give {target} only."
            )
        resolved[target] = value
        source.setdefault(target, alias)
    return resolved


def bands_for_channels(
    in_chans: int | None,
    bands: Sequence[Band] | None,
    pretrained_bands: Sequence[Band],
    owner: str,
) -> Sequence[Band] | None:
    """The bands an ``in_chans`` (TerraTorch's ``in_channels``) asks for.

    With ``bands`` the two must agree. Without, ``in_chans`` below the number of pretrained
    bands takes the first ``in_chans`` of them (TerraTorch assumes the pretraining order in the
    same case), with a warning; more channels than pretrained bands need ``bands``.

    Raises:
        ValueError: when they disagree, or ``in_chans`` cannot be matched without ``bands``.
    """
    if in_chans is None:
        return bands
    if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
        raise ValueError(f"{owner}: in_chans/in_channels must be a positive int, got {in_chans!r}.")
    if bands is not None:
        count = len(resolve_bands(bands, argument="bands"))
        if count != in_chans:
            raise ValueError(
                f"{owner}: in_chans={in_chans} (in_channels in TerraTorch) but bands has "
                f"{count} entries {list(bands)}; the channels follow bands, so give bands only."
            )
        return bands
    if in_chans == len(pretrained_bands):
        return None
    if in_chans > len(pretrained_bands):
        raise ValueError(
            f"{owner}: in_chans/in_channels={in_chans} is more than the {len(pretrained_bands)} "
            f"pretrained bands {list(pretrained_bands)}; name the input bands with bands=[...] "
            "(integers for bands without a name)."
        )
    chosen = list(pretrained_bands)[:in_chans]
    log.warning(
        "%s: in_chans/in_channels=%d without bands: taking the first %d pretrained bands %s. "
        "Pass bands=[...] to say which bands the input has.",
        owner, in_chans, in_chans, chosen,
    )
    return chosen


# ------------------------------------------------------------------------------ building
def build_prithvi_vit(
    variant: str | PrithviVariant,
    pretrained: bool | None = None,
    ckpt_path: str | Path | None = None,
    bands: Sequence[Band] | None = None,
    pretrained_bands: Sequence[Band] | None = None,
    num_frames: int | None = None,
    img_size: int | Sequence[int] | None = None,
    out_indices: Sequence[int] | None = None,
    drop_path: float | None = None,
    coords_encoding: Sequence[str] | None = None,
    coords_scale_learn: bool | None = None,
    fused_attn: bool | None = None,
    in_chans: int | None = None,
    patch_size: int | Sequence[int] | None = None,
    **terratorch_names: Any,
) -> PrithviViT:
    """Build a Prithvi ViT variant, with weights when asked. ``None`` means the default.

    Args:
        variant: A :data:`VARIANTS` name or a :class:`PrithviVariant`.
        pretrained: Load the official weights from the local Hugging Face cache (never
            downloaded); an error says which file to obtain when it is missing.
        ckpt_path: Weight file to load instead (``.pt``/``.pth``/``.safetensors``, official
            or Lightning checkpoint); it is loaded whatever ``pretrained`` says.
        bands: Input bands (HLS names, other sensor band names, integer identifiers), in
            channel order; defaults to ``pretrained_bands``. Bands the checkpoint knows get its
            patch-embedding weights, the others a fresh initialisation.
        pretrained_bands: The checkpoint's bands in channel order; defaults to the variant's
            pretraining bands (BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2).
        num_frames: Frames per sample (default: the pretrained config's, 1).
        img_size: Image side or ``(H, W)`` (default: the pretrained config's, 224).
        out_indices: Blocks whose outputs are returned, in this order (default all).
        drop_path: Stochastic depth rate (default 0).
        coords_encoding: ``"time"`` / ``"location"`` encodings (default: the variant's).
        coords_scale_learn: Learn the coordinate-encoding scales (default False).
        fused_attn: Use fused attention (default True).
        in_chans: Number of input channels: checked against ``bands``, or without them the
            first ``in_chans`` pretrained bands (see :func:`bands_for_channels`).
        patch_size: Patch side, ``(h, w)`` or ``(t, h, w)``, instead of the variant's (the
            official weights then no longer fit).
        **terratorch_names: TerraTorch's names (:data:`TERRATORCH_ALIASES`): ``model_bands``
            (``bands``), ``in_channels`` (``in_chans``), ``drop_path_rate`` (``drop_path``),
            ``pretrained_cfg_overlay: {file: path}`` (``ckpt_path``); ``window_size`` and
            ``pretrain_img_size`` are accepted with a warning (they cannot change a ViT).

    Raises:
        ValueError: for an unknown variant, bad arguments, an alias that disagrees with its
            geofm name, or weights that do not fit.
        TypeError: for an unknown keyword.
        FileNotFoundError: when the weights file is missing.
    """
    if isinstance(variant, str):
        if variant not in VARIANTS:
            raise ValueError(
                f"Unknown Prithvi ViT variant {variant!r}; choose from {list(VARIANTS)}."
            )
        variant = VARIANTS[variant]
    args = resolve_aliases(
        {"bands": bands, "in_chans": in_chans, "drop_path": drop_path, "ckpt_path": ckpt_path},
        terratorch_names,
        TERRATORCH_ALIASES,
        variant.name,
        no_effect=_VIT_NO_EFFECT,
        valid=_BUILD_ARGS,
    )
    bands, in_chans, drop_path, ckpt_path = (
        args["bands"], args["in_chans"], args["drop_path"], args["ckpt_path"]
    )
    if patch_size is not None:
        # The pretrained config is found by name, so weights and statistics still apply.
        variant = dataclasses.replace(variant, patch_size=_triple(patch_size))
    cfg = variant.pretrained_cfg
    # A variant outside the table (built by hand) is taken as pretrained on the Prithvi bands.
    official_bands = list(cfg.bands if cfg is not None else PRITHVI_BANDS)
    pretrained_bands = resolve_bands(
        pretrained_bands if pretrained_bands is not None else official_bands,
        argument="pretrained_bands",
    )
    bands = bands_for_channels(in_chans, bands, pretrained_bands, variant.name)
    model_bands = (
        resolve_bands(bands, argument="bands") if bands is not None else list(pretrained_bands)
    )
    # Files are checked before building: a missing one should not cost a 600M-parameter init.
    weights = resolve_weights(variant.name, cfg, pretrained, ckpt_path)
    model = PrithviViT(
        img_size=img_size if img_size is not None else (cfg.img_size if cfg else 224),
        patch_size=variant.patch_size,
        num_frames=num_frames if num_frames is not None else (cfg.num_frames if cfg else 1),
        in_chans=len(model_bands),
        embed_dim=variant.embed_dim,
        depth=variant.depth,
        num_heads=variant.num_heads,
        drop_path=drop_path if drop_path is not None else 0.0,
        coords_encoding=coords_encoding if coords_encoding is not None else variant.coords_encoding,
        coords_scale_learn=bool(coords_scale_learn),
        out_indices=out_indices,
        fused_attn=fused_attn if fused_attn is not None else True,
    )
    model.bands = model_bands
    model.variant = variant
    # Statistics describe the official pretraining: a checkpoint with other bands has its own.
    if cfg is not None and pretrained_bands == official_bands:
        model.pretrained_stats = cfg.stats(model_bands)
    if weights is not None:
        load_prithvi_checkpoint(model, weights, model_bands, pretrained_bands)
    return model


_BUILD_ARGS = [
    name
    for name, p in inspect.signature(build_prithvi_vit).parameters.items()
    if name != "variant" and p.kind is not p.VAR_KEYWORD
]
_ACCEPTED = [*_BUILD_ARGS, *TERRATORCH_ALIASES, *_VIT_NO_EFFECT]


def _build(
    name: str,
    pretrained: bool,
    ckpt_path: str | Path | None,
    bands: Sequence[Band] | None,
    kwargs: dict[str, Any],
) -> PrithviViT:
    """What every registered variant function does: check its keywords, then build."""
    unknown = sorted(set(kwargs) - set(_ACCEPTED))
    if unknown:
        raise TypeError(
            f"{name} got unknown arguments {unknown}; valid arguments: {_BUILD_ARGS}, and "
            f"TerraTorch's names {sorted(TERRATORCH_ALIASES)}."
        )
    # None values are dropped so that config defaults never override the variant's.
    options = {k: v for k, v in kwargs.items() if v is not None}
    return build_prithvi_vit(
        name, pretrained=pretrained, ckpt_path=ckpt_path, bands=bands, **options
    )


# ------------------------------------------------------------------------------ variants
# Arguments of every function: pretrained (official weights from the local Hugging Face
# cache), ckpt_path (a local weight file, loaded whatever pretrained says), bands (input bands
# in channel order), and the other build_prithvi_vit arguments as keywords.
@GEOFM_BACKBONE_REGISTRY.register
def prithvi_eo_tiny(
    pretrained: bool = False,
    ckpt_path: str | Path | None = None,
    bands: Sequence[Band] | None = None,
    **kwargs: Any,
) -> PrithviViT:
    """Prithvi-EO tiny (D 256, depth 4, 4 heads, patch 16): random weights only, for tests.

    Args: see :func:`build_prithvi_vit`.
    """
    return _build("prithvi_eo_tiny", pretrained, ckpt_path, bands, kwargs)


@GEOFM_BACKBONE_REGISTRY.register
def prithvi_eo_v1_100(
    pretrained: bool = False,
    ckpt_path: str | Path | None = None,
    bands: Sequence[Band] | None = None,
    **kwargs: Any,
) -> PrithviViT:
    """Prithvi-EO-1.0-100M (D 768, depth 12, 12 heads, patch 16), no coordinate encoding.

    Args: see :func:`build_prithvi_vit`.
    """
    return _build("prithvi_eo_v1_100", pretrained, ckpt_path, bands, kwargs)


@GEOFM_BACKBONE_REGISTRY.register
def prithvi_eo_v2_tiny_tl(
    pretrained: bool = False,
    ckpt_path: str | Path | None = None,
    bands: Sequence[Band] | None = None,
    **kwargs: Any,
) -> PrithviViT:
    """Prithvi-EO-2.0-tiny-TL (D 192, depth 12, 3 heads, patch 16), time + location encoding.

    Args: see :func:`build_prithvi_vit`.
    """
    return _build("prithvi_eo_v2_tiny_tl", pretrained, ckpt_path, bands, kwargs)


@GEOFM_BACKBONE_REGISTRY.register
def prithvi_eo_v2_100_tl(
    pretrained: bool = False,
    ckpt_path: str | Path | None = None,
    bands: Sequence[Band] | None = None,
    **kwargs: Any,
) -> PrithviViT:
    """Prithvi-EO-2.0-100M-TL (D 768, depth 12, 12 heads, patch 16), time + location encoding.

    Args: see :func:`build_prithvi_vit`.
    """
    return _build("prithvi_eo_v2_100_tl", pretrained, ckpt_path, bands, kwargs)


@GEOFM_BACKBONE_REGISTRY.register
def prithvi_eo_v2_300(
    pretrained: bool = False,
    ckpt_path: str | Path | None = None,
    bands: Sequence[Band] | None = None,
    **kwargs: Any,
) -> PrithviViT:
    """Prithvi-EO-2.0-300M (D 1024, depth 24, 16 heads, patch 16), no coordinate encoding.

    Args: see :func:`build_prithvi_vit`.
    """
    return _build("prithvi_eo_v2_300", pretrained, ckpt_path, bands, kwargs)


@GEOFM_BACKBONE_REGISTRY.register
def prithvi_eo_v2_300_tl(
    pretrained: bool = False,
    ckpt_path: str | Path | None = None,
    bands: Sequence[Band] | None = None,
    **kwargs: Any,
) -> PrithviViT:
    """Prithvi-EO-2.0-300M-TL (D 1024, depth 24, 16 heads, patch 16), time + location encoding.

    Args: see :func:`build_prithvi_vit`.
    """
    return _build("prithvi_eo_v2_300_tl", pretrained, ckpt_path, bands, kwargs)


@GEOFM_BACKBONE_REGISTRY.register
def prithvi_eo_v2_600(
    pretrained: bool = False,
    ckpt_path: str | Path | None = None,
    bands: Sequence[Band] | None = None,
    **kwargs: Any,
) -> PrithviViT:
    """Prithvi-EO-2.0-600M (D 1280, depth 32, 16 heads, patch 14), no coordinate encoding.

    Args: see :func:`build_prithvi_vit`.
    """
    return _build("prithvi_eo_v2_600", pretrained, ckpt_path, bands, kwargs)


@GEOFM_BACKBONE_REGISTRY.register
def prithvi_eo_v2_600_tl(
    pretrained: bool = False,
    ckpt_path: str | Path | None = None,
    bands: Sequence[Band] | None = None,
    **kwargs: Any,
) -> PrithviViT:
    """Prithvi-EO-2.0-600M-TL (D 1280, depth 32, 16 heads, patch 14), time + location encoding.

    Args: see :func:`build_prithvi_vit`.
    """
    return _build("prithvi_eo_v2_600_tl", pretrained, ckpt_path, bands, kwargs)


def describe(name: str) -> BackboneInfo:
    """The catalog entry of a Prithvi-EO ViT variant (see :mod:`geofm.models.catalog`)."""
    return PRETRAINED_CONFIGS[name].info(name, "Prithvi-EO ViT", "HLS")
