"""Fixed sin-cos position embeddings of Prithvi ViTs, and their resizing to other grids.

The 3-D embedding of a token grid ``(Tg, Hg, Wg)`` concatenates, per token, a width code of
``D/16*6`` dims, a height code of ``D/16*6`` dims and a time code of ``D/16*4`` dims. Each is
the 1-D code of the integer coordinate: for ``d`` dims, ``omega_i = 1 / 10000^(i / (d/2))``
and the code is ``[sin(pos * omega), cos(pos * omega)]`` (all sines, then all cosines).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["sincos_1d", "sincos_3d_pos_embed", "resize_pos_embed"]


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """1-D sin-cos code of ``positions``, computed in their (floating) dtype.

    Args:
        dim: Code size; must be even.
        positions: Any shape, ``M`` values in all; integer tensors are computed in float64.

    Returns:
        ``(M, dim)``: sines in the first half, cosines in the second.
    """
    if dim % 2:
        raise ValueError(f"A sin-cos code needs an even number of dims, got {dim}.")
    pos = positions.reshape(-1)
    if not pos.is_floating_point():
        pos = pos.to(torch.float64)
    omega = torch.arange(dim // 2, dtype=pos.dtype, device=pos.device) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    angles = pos[:, None] * omega[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_3d_pos_embed(
    embed_dim: int, grid_size: tuple[int, int, int], cls_token: bool = True
) -> torch.Tensor:
    """Position embedding of a ``(Tg, Hg, Wg)`` token grid, tokens in (t, h, w) order.

    Computed in float64 on the CPU, returned as float32 (move it where it is needed).

    Args:
        embed_dim: Token size ``D``; a multiple of 16.
        grid_size: Patches along time, height and width.
        cls_token: Prepend a zero row for the class token.

    Returns:
        ``(1, [1 +] Tg * Hg * Wg, D)``.
    """
    if embed_dim % 16:
        raise ValueError(
            f"The 3-D sin-cos embedding needs embed_dim divisible by 16, got {embed_dim}."
        )
    t_size, h_size, w_size = (int(s) for s in grid_size)
    t, h, w = torch.meshgrid(
        *(torch.arange(n, dtype=torch.float64) for n in (t_size, h_size, w_size)), indexing="ij"
    )
    spatial_dim, time_dim = embed_dim // 16 * 6, embed_dim // 16 * 4
    embed = torch.cat(
        [sincos_1d(spatial_dim, w), sincos_1d(spatial_dim, h), sincos_1d(time_dim, t)], dim=1
    )
    if cls_token:
        embed = torch.cat([embed.new_zeros(1, embed_dim), embed], dim=0)
    return embed.to(torch.float32).unsqueeze(0)


def resize_pos_embed(
    pos_embed: torch.Tensor,
    grid_size: tuple[int, int, int],
    new_grid_size: tuple[int, int, int],
) -> torch.Tensor:
    """The embedding of ``new_grid_size`` derived from that of ``grid_size``.

    A new number of time patches gets a freshly computed embedding; then the per-frame spatial
    grid is resized with bicubic interpolation (``align_corners=True``), as the reference
    implementation does, so that features match it at any input size.

    Args:
        pos_embed: ``(1, 1 + Tg * Hg * Wg, D)`` for ``grid_size``; row 0 is the class token's.
        grid_size: ``(Tg, Hg, Wg)`` of ``pos_embed``.
        new_grid_size: The wanted ``(Tg', Hg', Wg')``.

    Returns:
        ``(1, 1 + Tg' * Hg' * Wg', D)`` on the device and in the dtype of ``pos_embed``.
    """
    grid_size, new_grid_size = tuple(grid_size), tuple(new_grid_size)
    # Under torch.export the grid is symbolic: comparing it with the stored one would fix the
    # exported size. Resizing to the same grid is exact (bicubic, align_corners=True), so an
    # exported model always resizes and takes any size.
    exporting = torch.compiler.is_exporting()
    if not exporting and grid_size == new_grid_size:
        return pos_embed
    embed_dim = pos_embed.shape[-1]
    if new_grid_size[0] != grid_size[0]:
        grid_size = (new_grid_size[0], *grid_size[1:])
        pos_embed = sincos_3d_pos_embed(embed_dim, grid_size).to(pos_embed)
    if not exporting and grid_size[1:] == new_grid_size[1:]:
        return pos_embed
    cls_embed, patch_embed = pos_embed[:, :1], pos_embed[:, 1:]
    # (1, T*H*W, D) -> (T, D, H, W): frames as the batch, so only H and W are interpolated.
    patch_embed = patch_embed.reshape(*grid_size, embed_dim).permute(0, 3, 1, 2)
    patch_embed = F.interpolate(
        patch_embed, size=new_grid_size[1:], mode="bicubic", align_corners=True
    )
    patch_embed = patch_embed.permute(0, 2, 3, 1).reshape(1, -1, embed_dim)
    return torch.cat([cls_embed, patch_embed], dim=1)
