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

The variants are data (:data:`VARIANTS`); every registered name goes through
:func:`build_prithvi_vit`. Parameter names follow the official checkpoints, so loading only
strips their ``encoder.`` prefix (see :mod:`geofm.models.backbones.prithvi_weights`).

Example:
    >>> backbone = BACKBONE_REGISTRY.build(
    ...     "prithvi_eo_v2_300_tl", ckpt_path="Prithvi_EO_V2_300M_TL.pt",
    ...     bands=["BLUE", "GREEN", "RED", "NIR_NARROW"], num_frames=3)
    >>> tokens = backbone(x, temporal_coords=tc, location_coords=lc)  # x: (B, 4, 3, 224, 224)
    >>> tokens[-1].shape  # (B, 1 + 3 * 14 * 14, 1024), final norm applied
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geofm.data.bands import Band, resolve_bands
from geofm.models.backbones.pos_embed import resize_pos_embed, sincos_1d, sincos_3d_pos_embed
from geofm.models.backbones.prithvi_weights import (
    find_cached_file,
    hf_cache_dir,
    load_prithvi_checkpoint,
)
from geofm.registry import GEOFM_BACKBONE_REGISTRY

__all__ = [
    "PRETRAINED_BANDS",
    "PrithviVariant",
    "VARIANTS",
    "CoordinateEncoder",
    "PatchEmbed3d",
    "PrithviViT",
    "build_prithvi_vit",
]

log = logging.getLogger(__name__)

PRETRAINED_BANDS: tuple[str, ...] = ("BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2")
"""HLS bands of every Prithvi pretraining, in input-channel order."""

_COORDS = ("time", "location")
_V1_MEAN = (775.0, 1081.0, 1229.0, 2497.0, 2204.0, 1611.0)
_V1_STD = (1282.0, 1270.0, 1399.0, 1368.0, 1292.0, 1155.0)
_V2_MEAN = (1087.0, 1342.0, 1433.0, 2734.0, 1958.0, 1363.0)
_V2_STD = (2248.0, 2179.0, 2178.0, 1850.0, 1242.0, 1049.0)


@dataclass(frozen=True)
class PrithviVariant:
    """One Prithvi ViT: architecture and, when published, its weights.

    Attributes:
        name: Registry name.
        embed_dim: Token size ``D``.
        depth: Number of transformer blocks.
        num_heads: Attention heads.
        patch_size: Patch ``(t, h, w)``.
        coords_encoding: Coordinate encodings of the pretrained model (``"time"``,
            ``"location"``).
        hub_repo: Hugging Face repository of the official weights (``None``: none published).
        hub_file: Weight file in ``hub_repo``.
        bands: Pretraining bands, in input-channel order.
        mean: Normalisation mean per band (reflectance x 10000): V1's or V2's pretraining
            statistics (``prithvi_eo_tiny``, never pretrained, uses V2's).
        std: Normalisation standard deviation per band, likewise.
        img_size: Default image side.
    """

    name: str
    embed_dim: int
    depth: int
    num_heads: int
    patch_size: tuple[int, int, int] = (1, 16, 16)
    coords_encoding: tuple[str, ...] = ()
    hub_repo: str | None = None
    hub_file: str | None = None
    bands: tuple[str, ...] = PRETRAINED_BANDS
    mean: tuple[float, ...] = _V2_MEAN
    std: tuple[float, ...] = _V2_STD
    img_size: int = 224


_TL = ("time", "location")
_HUB = "ibm-nasa-geospatial/"
_P14 = (1, 14, 14)
# fmt: off
VARIANTS: dict[str, PrithviVariant] = {v.name: v for v in (
    PrithviVariant("prithvi_eo_tiny", 256, 4, 4),
    PrithviVariant("prithvi_eo_v1_100", 768, 12, 12, hub_repo=_HUB + "Prithvi-EO-1.0-100M",
                   hub_file="Prithvi_EO_V1_100M.pt", mean=_V1_MEAN, std=_V1_STD),
    PrithviVariant("prithvi_eo_v2_tiny_tl", 192, 12, 3, coords_encoding=_TL,
                   hub_repo=_HUB + "Prithvi-EO-2.0-tiny-TL", hub_file="Prithvi_EO_V2_tiny_TL.pt"),
    PrithviVariant("prithvi_eo_v2_100_tl", 768, 12, 12, coords_encoding=_TL,
                   hub_repo=_HUB + "Prithvi-EO-2.0-100M-TL", hub_file="Prithvi_EO_V2_100M_TL.pt"),
    PrithviVariant("prithvi_eo_v2_300", 1024, 24, 16,
                   hub_repo=_HUB + "Prithvi-EO-2.0-300M", hub_file="Prithvi_EO_V2_300M.pt"),
    PrithviVariant("prithvi_eo_v2_300_tl", 1024, 24, 16, coords_encoding=_TL,
                   hub_repo=_HUB + "Prithvi-EO-2.0-300M-TL", hub_file="Prithvi_EO_V2_300M_TL.pt"),
    PrithviVariant("prithvi_eo_v2_600", 1280, 32, 16, patch_size=_P14,
                   hub_repo=_HUB + "Prithvi-EO-2.0-600M", hub_file="Prithvi_EO_V2_600M.pt"),
    PrithviVariant("prithvi_eo_v2_600_tl", 1280, 32, 16, patch_size=_P14, coords_encoding=_TL,
                   hub_repo=_HUB + "Prithvi-EO-2.0-600M-TL", hub_file="Prithvi_EO_V2_600M_TL.pt"),
)}
# fmt: on
"""Every Prithvi ViT variant, by registry name."""


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
        self.out_indices = _check_out_indices(out_indices, self.depth)
        self.out_channels: list[int] = [self.embed_dim * self.grid_size[0]] * len(self.out_indices)
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
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def fused_attn(self) -> bool:
        """Whether attention uses ``F.scaled_dot_product_attention`` (settable)."""
        return all(block.attn.fused_attn for block in self.blocks)

    @fused_attn.setter
    def fused_attn(self, value: bool) -> None:
        for block in self.blocks:
            block.attn.fused_attn = bool(value)

    # -------------------------------------------------------------------------- forward
    def _as_frames(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            if self.patch_size[0] != 1:
                raise ValueError(
                    f"A (B, C, H, W) input needs a time patch of 1, this model's is "
                    f"{self.patch_size[0]}; pass (B, C, T, H, W)."
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

    @staticmethod
    def _check_coords(coords: torch.Tensor, shape: tuple[int, ...], name: str) -> torch.Tensor:
        if tuple(coords.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(coords.shape)}.")
        return coords

    def forward(
        self,
        x: torch.Tensor,
        temporal_coords: torch.Tensor | None = None,
        location_coords: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> list[torch.Tensor]:
        """Tokens after each selected block.

        Args:
            x: ``(B, C, H, W)`` (one frame) or ``(B, C, T, H, W)``.
            temporal_coords: ``(B, T, 2)`` (year, day of year); used by models with the time
                encoding, ignored by the others. ``(B, 2)`` is accepted for one frame.
            location_coords: ``(B, 2)`` (latitude, longitude); used by models with the location
                encoding, ignored by the others.
            **kwargs: Other batch entries; ignored.

        Returns:
            One ``(B, 1 + Tg * Hg * Wg, D)`` tensor per ``out_indices`` entry, class token
            first; the output of the last block has the final norm applied.
        """
        x = self._as_frames(x)
        batch, _, frames = x.shape[:3]
        grid = tuple(s // p for s, p in zip(x.shape[2:], self.patch_size, strict=True))
        tokens = self.patch_embed(x)
        pos_embed = resize_pos_embed(self.pos_embed, self.grid_size, grid)
        tokens = tokens + pos_embed[:, 1:]
        if self.temporal_embed_enc is not None and temporal_coords is not None:
            if temporal_coords.ndim == 2 and frames == 1:
                temporal_coords = temporal_coords.unsqueeze(1)
            coords = self._check_coords(temporal_coords, (batch, frames, 2), "temporal_coords")
            # One code per token frame (the first frame of each time patch), for its tokens.
            code = self.temporal_embed_enc(coords[:, :: self.patch_size[0]][:, : grid[0]])
            tokens = (
                tokens.unflatten(1, (grid[0], grid[1] * grid[2])) + code[:, :, None].to(tokens)
            ).flatten(1, 2)
        if self.location_embed_enc is not None and location_coords is not None:
            coords = self._check_coords(location_coords, (batch, 2), "location_coords")
            tokens = tokens + self.location_embed_enc(coords)[:, None].to(tokens)
        cls_token = (self.cls_token + pos_embed[:, :1]).expand(batch, -1, -1)
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


def _check_out_indices(out_indices: Sequence[int] | None, depth: int) -> list[int]:
    if out_indices is None:
        return list(range(depth))
    if isinstance(out_indices, int) or len(out_indices) == 0:
        raise ValueError(
            f"out_indices must be a non-empty list of block indices, got {out_indices!r}."
        )
    bad = [i for i in out_indices if not -depth <= int(i) < depth]
    if bad:
        raise ValueError(
            f"out_indices {bad} are out of range for {depth} blocks; use 0..{depth - 1} "
            f"(or negative indices from the end)."
        )
    return [int(i) % depth for i in out_indices]


# ------------------------------------------------------------------------------ building
def _official_weights(variant: PrithviVariant) -> Path:
    """The official weight file of ``variant`` from the local Hugging Face cache."""
    if variant.hub_repo is None or variant.hub_file is None:
        raise ValueError(
            f"{variant.name} has no official pretrained weights; pass ckpt_path=<your weights> "
            "(backbone_ckpt_path in a model factory config) or set pretrained=False."
        )
    found = find_cached_file(variant.hub_repo, variant.hub_file)
    if found is None:
        raise FileNotFoundError(
            f"{variant.name}: pretrained=True, but the weights are not in the local Hugging Face "
            f"cache ({hf_cache_dir()}). Obtain the file '{variant.hub_file}' from the repository "
            f"'{variant.hub_repo}' (https://huggingface.co/{variant.hub_repo}; e.g. "
            f"`huggingface-cli download {variant.hub_repo} {variant.hub_file}` on a machine with "
            f"network access) and pass ckpt_path=<path to {variant.hub_file}> (backbone_ckpt_path "
            "in a model factory config). pretrained=False builds random weights instead."
        )
    return found


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
        num_frames: Frames per sample (default 1).
        img_size: Image side or ``(H, W)`` (default 224).
        out_indices: Blocks whose outputs are returned (default all).
        drop_path: Stochastic depth rate (default 0).
        coords_encoding: ``"time"`` / ``"location"`` encodings (default: the variant's).
        coords_scale_learn: Learn the coordinate-encoding scales (default False).
        fused_attn: Use fused attention (default True).

    Raises:
        ValueError: for an unknown variant, bad arguments, or weights that do not fit.
        FileNotFoundError: when the weights file is missing.
    """
    if isinstance(variant, str):
        if variant not in VARIANTS:
            raise ValueError(
                f"Unknown Prithvi ViT variant {variant!r}; choose from {list(VARIANTS)}."
            )
        variant = VARIANTS[variant]
    pretrained_bands = resolve_bands(
        pretrained_bands if pretrained_bands is not None else variant.bands,
        argument="pretrained_bands",
    )
    model_bands = (
        resolve_bands(bands, argument="bands") if bands is not None else list(pretrained_bands)
    )
    # Files are checked before building: a missing one should not cost a 600M-parameter init.
    if ckpt_path is None and pretrained:
        ckpt_path = _official_weights(variant)
    elif ckpt_path is not None and not Path(ckpt_path).expanduser().is_file():
        raise FileNotFoundError(f"{variant.name}: ckpt_path='{ckpt_path}' does not exist.")
    model = PrithviViT(
        img_size=img_size if img_size is not None else variant.img_size,
        patch_size=variant.patch_size,
        num_frames=num_frames if num_frames is not None else 1,
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
    if ckpt_path is not None:
        load_prithvi_checkpoint(model, ckpt_path, model_bands, pretrained_bands)
    else:
        log.info("%s: random initial weights (pretrained=False, no ckpt_path).", variant.name)
    return model


_BUILD_SIGNATURE = inspect.signature(build_prithvi_vit)
_BUILD_ARGS = [p for p in _BUILD_SIGNATURE.parameters if p != "variant"]


def _make_builder(variant: PrithviVariant) -> Callable[..., PrithviViT]:
    """The registry entry of ``variant``: :func:`build_prithvi_vit` with the variant fixed."""

    def builder(**kwargs: Any) -> PrithviViT:
        unknown = sorted(set(kwargs) - set(_BUILD_ARGS))
        if unknown:
            raise TypeError(
                f"{variant.name} got unknown arguments {unknown}; valid arguments: {_BUILD_ARGS}."
            )
        # None values are dropped so that config defaults never override the variant's.
        return build_prithvi_vit(variant, **{k: v for k, v in kwargs.items() if v is not None})

    builder.__name__ = builder.__qualname__ = variant.name
    builder.__module__ = __name__
    builder.__doc__ = (
        f"Prithvi ViT ``{variant.name}``: D={variant.embed_dim}, depth={variant.depth}, "
        f"heads={variant.num_heads}, patch={variant.patch_size}, "
        f"coordinates={list(variant.coords_encoding)}, weights="
        f"{variant.hub_repo + '/' + variant.hub_file if variant.hub_repo else 'none'}. "
        "Arguments: see build_prithvi_vit."
    )
    builder.__signature__ = _BUILD_SIGNATURE.replace(  # type: ignore[attr-defined]
        parameters=[
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
            for name, p in _BUILD_SIGNATURE.parameters.items()
            if name != "variant"
        ]
    )
    return builder


for _variant in VARIANTS.values():
    GEOFM_BACKBONE_REGISTRY.register(name=_variant.name)(_make_builder(_variant))
