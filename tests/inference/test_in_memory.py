"""``tiled_forward`` on tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from geofm.inference.in_memory import output_tensor, tiled_forward
from tests.inference.helpers import PositionModel


@pytest.mark.parametrize(("height", "width"), [(20, 27), (32, 32), (70, 45)])
def test_pointwise_model_equals_a_whole_image_pass(height: int, width: int) -> None:
    # A per-pixel model gives every tile the same value at a pixel, so blending must return it.
    torch.manual_seed(0)
    model = nn.Conv2d(3, 5, 1)
    image = torch.rand(2, 3, height, width)
    with torch.no_grad():
        expected = model(image)
        blended = tiled_forward(model, image, 16, overlap=6, batch_size=3)
    assert blended.shape == (2, 5, height, width)
    assert blended.dtype == torch.float32
    torch.testing.assert_close(blended, expected, rtol=1e-5, atol=1e-5)


def test_context_model_blends_without_seams() -> None:
    # A model whose output is one constant per tile (its mean input): the Hann window fades
    # between tiles, plain averaging steps at tile borders.
    image = torch.linspace(0, 1, 96)[None, None, None, :].repeat(1, 1, 96, 1) ** 2
    image = image + torch.rand(1, 1, 96, 96) * 0.01

    def tile_mean(x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True).expand(-1, 1, *x.shape[-2:])

    def largest_jump(window: str) -> float:
        out = tiled_forward(tile_mean, image, 32, overlap=16, window=window)[0, 0]
        return float(out.diff(dim=1).abs().max())

    assert largest_jump("hann") < largest_jump("uniform") / 2


def test_position_dependent_model_is_batch_size_independent_for_classes() -> None:
    model = PositionModel()
    image = torch.rand(1, 3, 50, 41) * 5
    with torch.no_grad():
        outs = [tiled_forward(model, image, 16, overlap=4, batch_size=b) for b in (1, 4, 64)]
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0], rtol=1e-5, atol=1e-5)
        assert torch.equal(out.argmax(1), outs[0].argmax(1))


def test_temporal_inputs_and_model_outputs() -> None:
    image = torch.rand(1, 2, 3, 20, 20)  # (B, C, T, H, W)

    class Output:
        def __init__(self, output: torch.Tensor):
            self.output = output

    out = tiled_forward(lambda x: Output(x.mean(dim=(1, 2))), image, 16)  # (N, h, w) maps
    torch.testing.assert_close(out[:, 0], image.mean(dim=(1, 2)), rtol=1e-5, atol=1e-6)


def test_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="batch"):
        tiled_forward(lambda x: x, torch.rand(3, 8, 8), 4)
    with pytest.raises(ValueError, match="resolution"):
        tiled_forward(lambda x: x[..., ::2, ::2], torch.rand(1, 3, 8, 8), 4)
    with pytest.raises(TypeError, match="tensor"):
        output_tensor([1, 2])
    with pytest.raises(ValueError, match="pixel-wise"):
        output_tensor(torch.zeros(2, 3))
    np.testing.assert_array_equal(
        output_tensor({"output": torch.ones(1, 2, 2)}).shape, (1, 1, 2, 2)
    )
