"""The Prithvi masked autoencoder: the Prithvi ViT encoder, random masking and the MAE decoder.

Parameter names and shapes are those of the official checkpoints, so ``PrithviMAE.state_dict()``
*is* the official V2 layout (``encoder.*`` + ``decoder.*``) and an official file loads without
renaming (see :mod:`geofm.models.mae.weights`). The forward pass follows the official
pretraining:

1. patch tokens + fixed position code (+ time/location codes for the ``_tl`` models);
2. per-sample random masking: ``int(N * (1 - mask_ratio))`` tokens (rounded down) are kept;
3. the class token is prepended and the kept tokens go through the encoder blocks and norm;
4. the decoder embeds them (``decoder_embed``), fills the masked places with ``mask_token``,
   restores the token order, adds its own fixed sin-cos position code (3-D, of the decoder
   width) and coordinate codes, runs ``decoder_blocks`` and ``decoder_norm``, and predicts the
   ``t * p * p * C`` values of every patch (``decoder_pred``), class token dropped.

A patch's values are ordered (frame, row, column, band), band fastest, as the official
``patchify`` orders them (:func:`patchify`, :func:`unpatchify`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from geofm.models.backbones.pos_embed import resize_pos_embed, sincos_3d_pos_embed
from geofm.models.backbones.prithvi_vit import (
    CoordinateEncoder,
    PrithviViT,
    add_coordinate_codes,
    init_linear_and_norm,
)

__all__ = [
    "DECODER_DEFAULTS",
    "MAEDecoder",
    "MAEOutput",
    "PrithviMAE",
    "kept_tokens",
    "patchify",
    "random_masking",
    "unpatchify",
]

#: The decoder of every official Prithvi MAE checkpoint (V1 and V2, all sizes).
DECODER_DEFAULTS = {"embed_dim": 512, "depth": 8, "num_heads": 16}


def kept_tokens(num_tokens: int, mask_ratio: float) -> int:
    """Tokens an MAE keeps: ``int(N * (1 - mask_ratio))`` (rounded down, as the official
    ``random_masking``), at least one kept and one masked.

    Raises:
        ValueError: ``mask_ratio`` outside ``(0, 1)``, or fewer than two tokens.
    """
    if not 0.0 < float(mask_ratio) < 1.0:
        raise ValueError(f"mask_ratio={mask_ratio!r} must be between 0 and 1 (exclusive).")
    if num_tokens < 2:
        raise ValueError(
            f"The input has {num_tokens} patch token(s); masking needs at least two (use images "
            "of at least two patches)."
        )
    # Truncation, not round(): the official code's int() decides which tokens a given noise
    # keeps. The clamps only matter where it would keep no token (or mask none).
    return min(max(int(num_tokens * (1.0 - float(mask_ratio))), 1), num_tokens - 1)


def random_masking(
    tokens: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep a random subset of each sample's tokens (per-sample shuffle by sorted noise).

    Args:
        tokens: ``(B, N, D)``.
        mask_ratio: Share of tokens masked, in ``(0, 1)``.
        noise: ``(B, N)``; the tokens with the smallest noise are kept (random when ``None``).

    Returns:
        ``(kept, mask, ids_restore)``: kept tokens ``(B, N_keep, D)`` in shuffled order, the
        mask ``(B, N)`` (1.0 masked, 0.0 kept) in token order, and ``(B, N)`` indices that undo
        the shuffle.
    """
    batch, count, dim = tokens.shape
    keep = kept_tokens(count, mask_ratio)
    if noise is None:
        noise = torch.rand(batch, count, device=tokens.device)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :keep]
    kept = torch.gather(tokens, 1, ids_keep.unsqueeze(-1).expand(-1, -1, dim))
    mask = torch.ones(batch, count, device=tokens.device, dtype=tokens.dtype)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return kept, mask, ids_restore


def patchify(images: torch.Tensor, patch_size: Sequence[int]) -> torch.Tensor:
    """``(B, C, T, H, W)`` -> ``(B, Tg * Hg * Wg, t * p * q * C)``, values of a patch in
    (frame, row, column, band) order, band fastest; a border smaller than a patch is dropped
    (the encoder ignores it too)."""
    t, p, q = patch_size
    batch, channels, frames, height, width = images.shape
    tg, hg, wg = frames // t, height // p, width // q
    x = images[:, :, : tg * t, : hg * p, : wg * q]
    x = x.reshape(batch, channels, tg, t, hg, p, wg, q)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)
    return x.reshape(batch, tg * hg * wg, t * p * q * channels)


def unpatchify(
    patches: torch.Tensor, patch_size: Sequence[int], grid: Sequence[int], channels: int
) -> torch.Tensor:
    """The inverse of :func:`patchify`.

    ``(B, N, t * p * q * C)`` -> ``(B, C, Tg * t, Hg * p, Wg * q)``.
    """
    t, p, q = patch_size
    tg, hg, wg = grid
    batch = patches.shape[0]
    x = patches.reshape(batch, tg, hg, wg, t, p, q, channels)
    x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)
    return x.reshape(batch, channels, tg * t, hg * p, wg * q)


@dataclass
class MAEOutput:
    """What :class:`PrithviMAE` returns.

    Attributes:
        output: Predicted patch values ``(B, N, t * p * q * C)`` (in the target's units:
            per-patch normalised when trained with ``norm_pix_loss``).
        mask: ``(B, N)``, 1.0 where the token was masked (the patches the loss counts).
        grid: Token grid ``(Tg, Hg, Wg)`` of the input.
    """

    output: torch.Tensor
    mask: torch.Tensor
    grid: tuple[int, int, int]


class MAEDecoder(nn.Module):
    """The official Prithvi MAE decoder (names and shapes as in the checkpoints' ``decoder.*``).

    Args:
        encoder_embed_dim: Token size of the encoder.
        grid_size: Token grid ``(Tg, Hg, Wg)`` that ``decoder_pos_embed`` is computed for.
        patch_size: Patch ``(t, h, w)``.
        in_chans: Bands ``C`` predicted per pixel.
        embed_dim: Decoder token size (a multiple of 16: 3-D sin-cos code).
        depth: Decoder blocks.
        num_heads: Decoder attention heads.
        mlp_ratio: MLP hidden size over ``embed_dim``.
        coords_encoding: ``"time"`` / ``"location"`` codes added when coordinates are given.
        coords_scale_learn: Learn the coordinate scales (start at 0.1) instead of fixed 1.0.
    """

    def __init__(
        self,
        encoder_embed_dim: int,
        grid_size: Sequence[int],
        patch_size: Sequence[int],
        in_chans: int,
        embed_dim: int = DECODER_DEFAULTS["embed_dim"],
        depth: int = DECODER_DEFAULTS["depth"],
        num_heads: int = DECODER_DEFAULTS["num_heads"],
        mlp_ratio: float = 4.0,
        coords_encoding: Sequence[str] = (),
        coords_scale_learn: bool = False,
    ):
        super().__init__()
        from timm.models.vision_transformer import Block  # timm's names match the checkpoints

        if embed_dim % 16 or embed_dim % num_heads:
            raise ValueError(
                f"decoder_embed_dim={embed_dim} must be a multiple of 16 (3-D sin-cos position "
                f"code) and of decoder_num_heads={num_heads}."
            )
        self.grid_size = tuple(int(g) for g in grid_size)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.in_chans = int(in_chans)
        self.embed_dim = int(embed_dim)
        self.decoder_embed = nn.Linear(encoder_embed_dim, embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        # Fixed, recomputed rather than read from checkpoints; persistent so that the state
        # dict has the official layout.
        self.register_buffer("decoder_pos_embed", sincos_3d_pos_embed(embed_dim, self.grid_size))
        self.temporal_embed_dec = (
            CoordinateEncoder(embed_dim, coords_scale_learn) if "time" in coords_encoding else None
        )
        self.location_embed_dec = (
            CoordinateEncoder(embed_dim, coords_scale_learn)
            if "location" in coords_encoding
            else None
        )
        self.decoder_blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, norm_layer=nn.LayerNorm)
            for _ in range(depth)
        )
        self.decoder_norm = nn.LayerNorm(embed_dim)
        values = self.patch_size[0] * self.patch_size[1] * self.patch_size[2] * self.in_chans
        self.decoder_pred = nn.Linear(embed_dim, values, bias=True)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.normal_(self.mask_token, std=0.02)
        init_linear_and_norm(self)

    def forward(
        self,
        hidden: torch.Tensor,
        ids_restore: torch.Tensor,
        grid: tuple[int, int, int],
        frames: int,
        temporal_coords: torch.Tensor | None = None,
        location_coords: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Patch values of every token from the encoded kept tokens.

        Args:
            hidden: Encoder output ``(B, 1 + N_keep, D_enc)``, class token first.
            ids_restore: ``(B, N)`` from :func:`random_masking`.
            grid: Token grid ``(Tg, Hg, Wg)`` of the input (``N = Tg * Hg * Wg``).
            frames: Frames ``T`` of the input.
            temporal_coords: ``(B, T, 2)`` or ``None``.
            location_coords: ``(B, 2)`` or ``None``.

        Returns:
            ``(B, N, t * p * q * C)``.
        """
        x = self.decoder_embed(hidden)
        cls_token, kept = x[:, :1], x[:, 1:]
        count = ids_restore.shape[1]
        mask_tokens = self.mask_token.to(x.dtype).expand(x.shape[0], count - kept.shape[1], -1)
        x = torch.cat([kept, mask_tokens], dim=1)
        x = torch.gather(x, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[2]))
        pos_embed = resize_pos_embed(self.decoder_pos_embed, self.grid_size, tuple(grid))
        x = x + pos_embed[:, 1:]
        x = add_coordinate_codes(
            x, grid, frames, self.patch_size[0], self.temporal_embed_dec, self.location_embed_dec,
            temporal_coords, location_coords,
        )
        x = torch.cat([cls_token + pos_embed[:, :1], x], dim=1)
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]


class PrithviMAE(nn.Module):
    """A Prithvi ViT encoder with the official MAE decoder.

    Args:
        encoder: The encoder (built by :func:`~geofm.models.backbones.prithvi_vit.build_prithvi_vit`
            so that it knows its bands and pretraining statistics).
        decoder_embed_dim: Decoder token size.
        decoder_depth: Decoder blocks.
        decoder_num_heads: Decoder attention heads.
        mask_ratio: Default share of tokens masked in :meth:`forward`.

    Attributes:
        extra_inputs: The encoder's coordinate inputs (``temporal_coords``, ``location_coords``).
    """

    def __init__(
        self,
        encoder: PrithviViT,
        decoder_embed_dim: int = DECODER_DEFAULTS["embed_dim"],
        decoder_depth: int = DECODER_DEFAULTS["depth"],
        decoder_num_heads: int = DECODER_DEFAULTS["num_heads"],
        mask_ratio: float = 0.75,
    ):
        super().__init__()
        kept_tokens(2, mask_ratio)  # checks the ratio now, not at the first batch
        self.encoder = encoder
        scale_learn = isinstance(
            getattr(encoder.temporal_embed_enc or encoder.location_embed_enc, "scale", None),
            nn.Parameter,
        )
        self.decoder = MAEDecoder(
            encoder.embed_dim,
            encoder.grid_size,
            encoder.patch_size,
            encoder.in_chans,
            embed_dim=decoder_embed_dim,
            depth=decoder_depth,
            num_heads=decoder_num_heads,
            coords_encoding=encoder.coords_encoding,
            coords_scale_learn=scale_learn,
        )
        self.mask_ratio = float(mask_ratio)
        self.extra_inputs = encoder.extra_inputs

    @property
    def patch_size(self) -> tuple[int, int, int]:
        """Patch ``(t, h, w)``."""
        return self.encoder.patch_size

    def freeze_encoder(self) -> None:
        """No gradients for the encoder."""
        self.encoder.requires_grad_(False)

    def freeze_decoder(self) -> None:
        """No gradients for the decoder."""
        self.decoder.requires_grad_(False)

    def forward(
        self,
        x: torch.Tensor,
        temporal_coords: torch.Tensor | None = None,
        location_coords: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        noise: torch.Tensor | None = None,
    ) -> MAEOutput:
        """Mask, encode the kept tokens, reconstruct every patch.

        Args:
            x: Normalised ``(B, C, H, W)`` or ``(B, C, T, H, W)``.
            temporal_coords: ``(B, T, 2)`` (year, day of year), for models with the time code.
            location_coords: ``(B, 2)`` (lat, lon), for models with the location code.
            mask_ratio: Share of tokens masked (default: the model's ``mask_ratio``).
            noise: ``(B, N)`` masking noise (see :func:`random_masking`), for reproducibility.

        Returns:
            :class:`MAEOutput`.
        """
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        encoder = self.encoder
        frames = x.shape[2] if x.ndim == 5 else 1
        tokens, cls_token = encoder.embed_tokens(x, temporal_coords, location_coords)
        grid = tuple(
            s // p for s, p in zip((frames, *x.shape[-2:]), encoder.patch_size, strict=True)
        )
        kept, mask, ids_restore = random_masking(tokens, ratio, noise)
        hidden = torch.cat([cls_token, kept], dim=1)
        for block in encoder.blocks:
            hidden = block(hidden)
        hidden = encoder.norm(hidden)
        pred = self.decoder(hidden, ids_restore, grid, frames, temporal_coords, location_coords)
        return MAEOutput(pred, mask, grid)  # type: ignore[arg-type]
