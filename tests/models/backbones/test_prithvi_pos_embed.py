"""Prithvi position embeddings against the spec's formula, written here in plain math."""

from __future__ import annotations

import math

import pytest
import torch

from geofm.models.backbones.pos_embed import resize_pos_embed, sincos_1d, sincos_3d_pos_embed
from geofm.registry import BACKBONE_REGISTRY

# PyTorch's bicubic kernel (a = -0.75) at offset 0.5: weights of the 4 neighbours.
_MIDPOINT_WEIGHTS = (-0.09375, 0.59375, 0.59375, -0.09375)


def spec_code(dims: int, pos: float) -> list[float]:
    """1-D sin-cos code of the spec: omega_i = 1 / 10000^(i / (d/2)); sines then cosines."""
    half = dims // 2
    omegas = [1.0 / 10000 ** (i / half) for i in range(half)]
    return [math.sin(pos * w) for w in omegas] + [math.cos(pos * w) for w in omegas]


def spec_row(embed_dim: int, t: int, r: int, c: int) -> list[float]:
    """Position embedding of the patch token at time t, row r, column c: width, height, time."""
    spatial, time = embed_dim // 16 * 6, embed_dim // 16 * 4
    return spec_code(spatial, c) + spec_code(spatial, r) + spec_code(time, t)


def spec_pos_embed(embed_dim: int, grid: tuple[int, int, int]) -> torch.Tensor:
    """``(1 + T*H*W, D)`` with the class token's zero row first, tokens in (t, h, w) order."""
    rows = [[0.0] * embed_dim]
    for t in range(grid[0]):
        for r in range(grid[1]):
            for c in range(grid[2]):
                rows.append(spec_row(embed_dim, t, r, c))
    return torch.tensor(rows, dtype=torch.float64)


def _token(grid: tuple[int, int, int], t: int, r: int, c: int) -> int:
    return 1 + (t * grid[1] + r) * grid[2] + c


@pytest.mark.parametrize(
    ("embed_dim", "grid"),
    [(192, (1, 14, 14)), (256, (2, 14, 14)), (1280, (1, 16, 16)), (1024, (3, 14, 14))],
)
def test_pos_embed_matches_formula(embed_dim: int, grid: tuple[int, int, int]) -> None:
    embed = sincos_3d_pos_embed(embed_dim, grid)
    assert embed.shape == (1, 1 + grid[0] * grid[1] * grid[2], embed_dim)
    assert embed.dtype == torch.float32
    assert torch.all(embed[0, 0] == 0)
    points = [(0, 0, 0), (0, 0, 5), (0, 7, 2), (grid[0] - 1, grid[1] - 1, grid[2] - 1)]
    for t, r, c in points:
        expected = torch.tensor(spec_row(embed_dim, t, r, c), dtype=torch.float32)
        torch.testing.assert_close(embed[0, _token(grid, t, r, c)], expected, atol=1e-6, rtol=0)


def test_model_buffer_is_the_formula() -> None:
    model = BACKBONE_REGISTRY.build("prithvi_eo_v2_tiny_tl", num_frames=2, img_size=64)
    assert model.grid_size == (2, 4, 4)
    expected = spec_pos_embed(192, (2, 4, 4)).to(torch.float32)[None]
    torch.testing.assert_close(model.pos_embed, expected, atol=1e-6, rtol=0)


def test_sincos_1d_layout() -> None:
    code = sincos_1d(8, torch.tensor([3.0], dtype=torch.float64))
    torch.testing.assert_close(code[0], torch.tensor(spec_code(8, 3.0), dtype=torch.float64))
    with pytest.raises(ValueError, match="even"):
        sincos_1d(7, torch.zeros(2))


def test_resize_keeps_grid_points_and_interpolates_bicubic() -> None:
    embed_dim, grid = 64, (1, 14, 14)
    embed = sincos_3d_pos_embed(embed_dim, grid)
    # 14 -> 27 patches with align_corners=True: new index 2k sits on old index k.
    new_grid = (1, 27, 27)
    resized = resize_pos_embed(embed, grid, new_grid)
    assert resized.shape == (1, 1 + 27 * 27, embed_dim)
    assert torch.all(resized[0, 0] == 0)
    for r, c in [(0, 0), (3, 11), (13, 13)]:
        expected = torch.tensor(spec_row(embed_dim, 0, r, c), dtype=torch.float32)
        torch.testing.assert_close(
            resized[0, _token(new_grid, 0, 2 * r, 2 * c)], expected, atol=1e-5, rtol=0
        )
    # New index (2r+1, 2c+1) lies half-way between old rows r, r+1 and columns c, c+1: the
    # bicubic value is the separable weighted sum of the 4 x 4 neighbours.
    for r, c in [(4, 6), (1, 10)]:
        expected = torch.zeros(embed_dim, dtype=torch.float64)
        for i, wr in enumerate(_MIDPOINT_WEIGHTS):
            for j, wc in enumerate(_MIDPOINT_WEIGHTS):
                row = torch.tensor(
                    spec_row(embed_dim, 0, r - 1 + i, c - 1 + j), dtype=torch.float64
                )
                expected += wr * wc * row
        torch.testing.assert_close(
            resized[0, _token(new_grid, 0, 2 * r + 1, 2 * c + 1)],
            expected.to(torch.float32),
            atol=1e-5,
            rtol=0,
        )


def test_resize_recomputes_time_and_handles_rectangles() -> None:
    embed_dim, grid = 64, (1, 4, 4)
    embed = sincos_3d_pos_embed(embed_dim, grid)
    new_grid = (3, 4, 7)
    resized = resize_pos_embed(embed, grid, new_grid)
    assert resized.shape == (1, 1 + 3 * 4 * 7, embed_dim)
    # Rows keep their grid points (4 -> 4), and the last frame carries time code 2.
    for t, r in [(0, 1), (2, 3)]:
        expected = torch.tensor(spec_row(embed_dim, t, r, 0), dtype=torch.float32)
        torch.testing.assert_close(
            resized[0, _token(new_grid, t, r, 0)], expected, atol=1e-5, rtol=0
        )
    # Column 6 of 7 is the old column 3 (the corners stay put with align_corners=True).
    expected = torch.tensor(spec_row(embed_dim, 1, 2, 3), dtype=torch.float32)
    torch.testing.assert_close(resized[0, _token(new_grid, 1, 2, 6)], expected, atol=1e-5, rtol=0)
    assert resize_pos_embed(embed, grid, grid) is embed


def test_forward_uses_resized_embedding() -> None:
    model = BACKBONE_REGISTRY.build("prithvi_eo_tiny", img_size=32, out_indices=[0])
    captured: list[torch.Tensor] = []
    model.blocks[0].register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    x = torch.zeros(1, 6, 2, 48, 32)  # zero input: block 0 sees bias + cls + position
    with torch.no_grad():
        model(x)
    grid = (2, 3, 2)
    expected = spec_pos_embed(256, (2, 2, 2)).to(torch.float32)[None]
    expected = resize_pos_embed(expected, (2, 2, 2), grid)
    tokens = captured[0][0, 1:] - model.patch_embed.proj.bias
    torch.testing.assert_close(tokens, expected[0, 1:], atol=1e-5, rtol=0)
    # Spot check against plain math at a grid point that interpolation keeps exact.
    torch.testing.assert_close(
        tokens[_token(grid, 1, 2, 1) - 1],
        torch.tensor(spec_row(256, 1, 1, 1), dtype=torch.float32),
        atol=1e-5,
        rtol=0,
    )
