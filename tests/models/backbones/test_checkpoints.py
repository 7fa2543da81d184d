"""Shared checkpoint helpers: the first-layer band adaptation and finding a backbone's tensors."""

from __future__ import annotations

import logging

import pytest
import torch

from geofm.models.backbones.checkpoints import (
    PATCH_EMBED_KEY,
    adapt_input_channels,
    backbone_tensors,
    read_checkpoint,
)

CKPT_BANDS = ["BLUE", "GREEN", "RED", "NIR_NARROW"]


@pytest.mark.parametrize("kernel", [(4, 4), (1, 4, 4)], ids=["2d", "3d"])
def test_bands_are_copied_by_name_and_new_bands_keep_the_init(kernel, caplog) -> None:
    weight = torch.randn(8, 4, *kernel)
    init = torch.randn(8, 3, *kernel)
    with caplog.at_level(logging.INFO, logger="geofm"):
        out = adapt_input_channels(weight, init, ["NIR_NARROW", "BLUE", 7], CKPT_BANDS, "test")
    assert out.shape == init.shape
    assert torch.equal(out[:, 0], weight[:, 3])
    assert torch.equal(out[:, 1], weight[:, 0])
    assert torch.equal(out[:, 2], init[:, 2])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "[7]" in warnings[0] and "newly initialised" in warnings[0]
    assert "['NIR_NARROW', 'BLUE']" in caplog.text


def test_result_takes_the_models_dtype_so_new_bands_stay_exact() -> None:
    weight = torch.randn(8, 4, 2, 2, dtype=torch.float16)
    init = torch.randn(8, 2, 2, 2, dtype=torch.float64)
    out = adapt_input_channels(weight, init, ["RED", 5], CKPT_BANDS)
    assert out.dtype == torch.float64
    assert torch.equal(out[:, 0], weight[:, 2].double())
    assert torch.equal(out[:, 1], init[:, 1])


def test_meta_model_gets_zeros_for_new_bands() -> None:
    weight = torch.randn(8, 4, 2, 2)
    init = torch.empty(8, 2, 2, 2, device="meta")
    out = adapt_input_channels(weight, init, ["GREEN", 9], CKPT_BANDS)
    assert out.device.type == "cpu"
    assert torch.equal(out[:, 0], weight[:, 1])
    assert torch.count_nonzero(out[:, 1]) == 0


def test_wrong_channel_count_names_pretrained_bands_and_other_shapes_pass_through() -> None:
    with pytest.raises(ValueError, match="has 3 input channels .* pretrained_bands lists 4"):
        adapt_input_channels(torch.zeros(8, 3, 2, 2), torch.zeros(8, 3, 2, 2), ["RED"], CKPT_BANDS)
    other = torch.zeros(16, 4, 2, 2)  # another embedding width: left for the caller to report
    assert adapt_input_channels(other, torch.zeros(8, 4, 2, 2), CKPT_BANDS, CKPT_BANDS) is other


def test_backbone_tensors_unwraps_and_strips_the_prefix(caplog) -> None:
    patch, norm = torch.ones(2, 3), torch.zeros(2)
    raw = {
        "state_dict": {
            f"model.encoder.{PATCH_EMBED_KEY}": patch,
            "model.encoder.norm.weight": norm,
            "model.head.weight": torch.ones(1),
        },
        "epoch": 3,
    }
    with caplog.at_level(logging.INFO, logger="geofm"):
        prefix, state = backbone_tensors(raw, "ckpt", what="encoder")
    assert prefix == "model.encoder."
    assert state.keys() == {PATCH_EMBED_KEY, "norm.weight"}
    assert state[PATCH_EMBED_KEY] is patch
    assert "model.head.*" in caplog.text


def test_backbone_tensors_errors_name_what_was_found() -> None:
    several = {f"a.{PATCH_EMBED_KEY}": torch.ones(1), f"b.{PATCH_EMBED_KEY}": torch.ones(1)}
    with pytest.raises(ValueError, match=r"several encoders, under the key prefixes \['a\."):
        backbone_tensors(several, what="encoder")
    other = {"stem.projection.weight": torch.ones(1)}
    with pytest.raises(ValueError, match="no encoder .*stem.projection.weight. Convert it") as info:
        hints = {"projection.weight": "Convert it.", "x": "No."}
        backbone_tensors(other, what="encoder", hints=hints)
    assert "No." not in str(info.value)


def test_read_checkpoint_refuses_pickled_modules(tmp_path) -> None:
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")
    with pytest.raises(ValueError, match="module.pt"):
        read_checkpoint(tmp_path / "module.pt")
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        read_checkpoint(tmp_path / "absent.pt")
