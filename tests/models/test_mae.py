"""The Prithvi MAE: masking, patch order, the official layout (every variant, against the shared
spec), loading official V1/V2 files with their decoder, and the reconstruction loss."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from geofm.models.factories.mae import build_prithvi_mae
from geofm.models.mae import kept_tokens, patchify, random_masking, unpatchify
from geofm.models.mae.loss import masked_patch_loss
from geofm.registry import MODEL_FACTORY_REGISTRY
from tests.models.backbones.test_prithvi_weights import (
    BANDS,
    LAYOUTS,
    SPEC,
    make_checkpoint,
    mae_layout,
    v1_layout,
)

TINY_DECODER = {"decoder_embed_dim": 32, "decoder_depth": 1, "decoder_num_heads": 2}


def tiny_mae(**kwargs):
    options = {"img_size": 32, **TINY_DECODER, **kwargs}
    return build_prithvi_mae(options.pop("backbone", "prithvi_eo_tiny"), **options)


# ------------------------------------------------------------------------------ masking
@pytest.mark.parametrize(
    "count,ratio,keep",
    # int(), as the official random_masking: 49 * 0.4 = 19.6 keeps 19 and 9 * 0.3 keeps 2
    # (round() would keep 20 and 3); 10 * (1 - 0.9) < 1 still keeps one token.
    [(196, 0.75, 49), (16, 0.5, 8), (10, 0.9, 1), (4, 0.75, 1), (49, 0.6, 19), (9, 0.7, 2)],
)
def test_masking_keeps_truncated_share_per_sample(count: int, ratio: float, keep: int) -> None:
    torch.manual_seed(0)
    tokens = torch.randn(3, count, 8)
    kept, mask, ids_restore = random_masking(tokens, ratio)
    assert kept.shape == (3, keep, 8)
    assert mask.sum(1).tolist() == [count - keep] * 3
    # The kept tokens are exactly the unmasked ones, and ids_restore undoes the shuffle.
    for b in range(3):
        visible = tokens[b][mask[b] == 0]
        assert sorted(map(tuple, visible.tolist())) == sorted(map(tuple, kept[b].tolist()))
    full = torch.cat([kept, torch.zeros(3, count - keep, 8)], dim=1)
    restored = torch.gather(full, 1, ids_restore[..., None].expand(-1, -1, 8))
    assert torch.equal(restored[mask == 0], tokens[mask == 0])


def test_masking_differs_between_samples_and_follows_noise() -> None:
    tokens = torch.randn(4, 64, 4)
    _, mask, _ = random_masking(tokens, 0.75)
    assert len({tuple(m.tolist()) for m in mask}) > 1
    noise = torch.arange(64.0).repeat(2, 1)  # smallest noise kept: the first 16 tokens
    _, mask, _ = random_masking(tokens[:2], 0.75, noise)
    assert mask[:, :16].sum() == 0 and mask[:, 16:].min() == 1


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5])
def test_bad_mask_ratio(ratio: float) -> None:
    with pytest.raises(ValueError, match=f"mask_ratio={ratio!r} must be between 0 and 1"):
        kept_tokens(10, ratio)
    with pytest.raises(ValueError, match="mask_ratio"):
        tiny_mae().forward(torch.randn(1, 6, 32, 32), mask_ratio=ratio)


def test_non_prithvi_backbone_and_mae_only_arguments_are_refused() -> None:
    for backbone in ("timm_resnet18", "prithvi_swin_B"):
        with pytest.raises(ValueError, match=f"backbone='{backbone}' is not one.*prithvi_eo_tiny"):
            build_prithvi_mae(backbone)
    with pytest.raises(ValueError, match="backbone_out_indices does not apply"):
        build_prithvi_mae("prithvi_eo_tiny", out_indices=[1])
    factory = MODEL_FACTORY_REGISTRY.build("PrithviMAEFactory")
    with pytest.raises(ValueError, match=r"does not use: \['decoder_width', 'necks'\]"):
        factory.build_model("mae", backbone="prithvi_eo_tiny", necks=[], decoder_width=3)


# ------------------------------------------------------------------------------ patches
def test_patch_values_are_ordered_frame_row_column_band() -> None:
    x = torch.randn(2, 3, 4, 8, 12)  # (B, C, T, H, W)
    patches = patchify(x, (2, 4, 4))  # grid (2, 2, 3), 2*4*4*3 values
    assert patches.shape == (2, 12, 96)
    b, tg, hg, wg, s, p, q, c = 1, 1, 0, 2, 1, 3, 2, 1
    token = (tg * 2 + hg) * 3 + wg
    value = ((s * 4 + p) * 4 + q) * 3 + c  # band fastest, as the official patchify
    assert patches[b, token, value] == x[b, c, tg * 2 + s, hg * 4 + p, wg * 4 + q]
    assert torch.equal(unpatchify(patches, (2, 4, 4), (2, 2, 3), 3), x)


# ------------------------------------------------------------------------------ forward
def test_multi_temporal_tl_forward_uses_coordinates() -> None:
    model = tiny_mae(backbone="prithvi_eo_v2_tiny_tl", num_frames=2).eval()
    x = torch.randn(2, 6, 2, 32, 32)
    noise = torch.rand(2, 8)
    coords = {
        "temporal_coords": torch.tensor([[[2020.0, 10.0], [2020.0, 200.0]]] * 2),
        "location_coords": torch.tensor([[41.0, -3.0]] * 2),
    }
    out = model(x, noise=noise, **coords)
    assert out.output.shape == (2, 2 * 2 * 2, 16 * 16 * 6) and out.grid == (2, 2, 2)
    assert out.mask.sum(1).tolist() == [6.0, 6.0]
    assert model.extra_inputs == ("temporal_coords", "location_coords")
    later = {**coords, "temporal_coords": coords["temporal_coords"] + torch.tensor([3.0, 0.0])}
    assert not torch.allclose(model(x, noise=noise, **later).output, out.output)
    # The decoder's own time code counts too: with the encoder's scale at 0, dates still matter.
    model.encoder.temporal_embed_enc.scale.zero_()
    first = model(x, noise=noise, **coords).output
    assert not torch.allclose(model(x, noise=noise, **later).output, first)


def test_visible_patches_change_the_prediction_masked_ones_do_not() -> None:
    model = tiny_mae().eval()
    x = torch.randn(1, 6, 32, 32)
    noise = torch.tensor([[0.1, 0.9, 0.8, 0.7]])  # token 0 kept, 1-3 masked
    out = model(x, noise=noise).output
    hidden = x.clone()
    hidden[..., 16:, 16:] += 5.0  # token 3: masked, never seen
    assert torch.equal(model(x=hidden, noise=noise).output, out)
    seen = x.clone()
    seen[..., :16, :16] += 5.0  # token 0: visible
    assert not torch.allclose(model(seen, noise=noise).output, out)


def test_decoder_places_tokens_as_the_official_mae() -> None:
    """The decoder step by step, written out without gather: each kept token goes back to its
    own place, every other place gets the mask token, then the decoder's 3-D sin-cos code
    (class row zero), the blocks, decoder_norm and decoder_pred; the class token is dropped."""
    from geofm.models.backbones.pos_embed import sincos_3d_pos_embed

    torch.manual_seed(0)
    model = tiny_mae(img_size=48).eval()  # a 3 x 3 grid of 16 px patches
    decoder = model.decoder
    with torch.no_grad():
        decoder.mask_token.normal_()
    x = torch.randn(2, 6, 48, 48)
    noise = torch.rand(2, 9)
    out = model(x, mask_ratio=0.7, noise=noise)  # int(9 * 0.3) = 2 tokens kept
    keep = torch.argsort(noise, dim=1)[:, :2]
    assert out.mask.sum(1).tolist() == [7.0, 7.0]
    with torch.no_grad():
        tokens, cls_token = model.encoder.embed_tokens(x)
        kept = torch.stack([tokens[b, keep[b]] for b in range(2)])
        hidden = torch.cat([cls_token, kept], dim=1)
        for block in model.encoder.blocks:
            hidden = block(hidden)
        embedded = decoder.decoder_embed(model.encoder.norm(hidden))
        full = decoder.mask_token.expand(2, 9, -1).clone()
        for b in range(2):
            for j, place in enumerate(keep[b].tolist()):
                full[b, place] = embedded[b, 1 + j]
        pos = sincos_3d_pos_embed(decoder.embed_dim, (1, 3, 3))
        assert torch.equal(pos[0, 0], torch.zeros(decoder.embed_dim))
        seq = torch.cat([embedded[:, :1], full], dim=1) + pos
        for block in decoder.decoder_blocks:
            seq = block(seq)
        expected = decoder.decoder_pred(decoder.decoder_norm(seq))[:, 1:]
    torch.testing.assert_close(out.output, expected)
    for b in range(2):
        assert out.mask[b, keep[b]].sum() == 0


# ------------------------------------------------------------------------------ layouts
@pytest.mark.parametrize("name", [n for n in SPEC if n != "prithvi_eo_tiny"])
def test_state_dict_is_the_official_mae_layout(name: str) -> None:
    assert LAYOUTS.is_file(), f"spec layout file {LAYOUTS} is absent: check out ../shared"
    spec = json.loads(LAYOUTS.read_text())[name]["official_mae_checkpoint_state_dict"]
    with torch.device("meta"):
        model = build_prithvi_mae(name, num_frames=1, img_size=224)
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert got == spec


def assert_decoder_loaded(model, checkpoint: dict[str, torch.Tensor], prefix: str) -> None:
    """Every decoder tensor holds the checkpoint's, except the recomputed position code."""
    for key, value in model.decoder.state_dict().items():
        source = checkpoint[prefix + key]
        if key == "decoder_pos_embed":
            assert not torch.equal(value, source.to(value.dtype))
            continue
        assert torch.equal(value, source.to(value.dtype)), key


def test_official_v2_tl_file_loads_encoder_and_decoder(tmp_path: Path, monkeypatch) -> None:
    """backbone_pretrained: true takes the official file from the Hugging Face cache."""
    checkpoint = make_checkpoint(mae_layout("prithvi_eo_v2_tiny_tl"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    snapshot = tmp_path / "hf" / "models--ibm-nasa-geospatial--Prithvi-EO-2.0-tiny-TL" / "snapshots"
    (snapshot / "0123abcd").mkdir(parents=True)
    torch.save(checkpoint, snapshot / "0123abcd" / "Prithvi_EO_V2_tiny_TL.pt")
    factory = MODEL_FACTORY_REGISTRY.build("PrithviMAEFactory")
    model = factory.build_model(
        "mae", backbone="prithvi_eo_v2_tiny_tl", backbone_pretrained=True, backbone_img_size=32
    )
    assert_decoder_loaded(model, checkpoint, "decoder.")
    assert torch.equal(model.encoder.norm.weight, checkpoint["encoder.norm.weight"])
    assert torch.equal(
        model.encoder.patch_embed.proj.weight, checkpoint["encoder.patch_embed.proj.weight"]
    )


def test_official_v1_flat_file_loads_its_decoder(tmp_path: Path) -> None:
    with torch.device("meta"):  # the real V1 names and shapes, no memory
        meta = build_prithvi_mae("prithvi_eo_v1_100", num_frames=1, img_size=224)
    flat = {k: tuple(v.shape) for k, v in meta.state_dict().items()}
    flat = {k.removeprefix("encoder.").removeprefix("decoder."): v for k, v in flat.items()}
    assert flat == v1_layout("prithvi_eo_v1_100")
    # Values: the same flat naming for a tiny model, loaded for real.
    model = tiny_mae()
    flat_tiny = {
        k.removeprefix("encoder.").removeprefix("decoder."): torch.randn(v.shape)
        for k, v in model.state_dict().items()
    }
    path = tmp_path / "v1_flat.pt"
    torch.save(flat_tiny, path)
    loaded = tiny_mae(ckpt_path=path)
    assert_decoder_loaded(loaded, flat_tiny, "")
    qkv = loaded.encoder.blocks[0].attn.qkv.weight
    assert torch.equal(qkv, flat_tiny["blocks.0.attn.qkv.weight"])


def test_band_subset_takes_the_decoder_rows_of_those_bands(tmp_path: Path) -> None:
    model = tiny_mae()
    state = {k: torch.randn(v.shape) for k, v in model.state_dict().items()}
    path = tmp_path / "mae.pt"
    torch.save(state, path)
    bands = ["NIR_NARROW", "BLUE", "RED"]
    subset = tiny_mae(ckpt_path=path, bands=bands)
    rows = state["decoder.decoder_pred.weight"].reshape(256, 6, 32)
    picked = rows[:, [BANDS.index(b) for b in bands]].reshape(256 * 3, 32)
    assert torch.equal(subset.decoder.decoder_pred.weight, picked)
    bias = state["decoder.decoder_pred.bias"].reshape(256, 6)[:, [3, 0, 2]].reshape(-1)
    assert torch.equal(subset.decoder.decoder_pred.bias, bias)


def test_encoder_only_file_keeps_a_fresh_decoder(tmp_path: Path, caplog) -> None:
    encoder = {k: torch.randn(v.shape) for k, v in tiny_mae().encoder.state_dict().items()}
    path = tmp_path / "encoder.pt"
    torch.save(encoder, path)
    with caplog.at_level(logging.WARNING, logger="geofm"):
        model = tiny_mae(ckpt_path=path)
    assert "holds no MAE decoder" in caplog.text
    assert torch.equal(model.encoder.norm.bias, encoder["norm.bias"])


def test_fine_tuned_task_checkpoint_keeps_a_fresh_decoder(tmp_path: Path, caplog) -> None:
    """A geofm segmentation checkpoint: model.encoder.* beside a model.decoder.* that is no
    MAE decoder (a UperNet); the encoder loads, the decoder starts fresh, no error."""
    encoder = {
        "model.encoder." + k: torch.randn(v.shape)
        for k, v in tiny_mae().encoder.state_dict().items()
    }
    decoder = {"model.decoder.convs.0.weight": torch.randn(8, 4)}
    path = tmp_path / "segmentation.ckpt"
    torch.save({"state_dict": {**encoder, **decoder}}, path)
    with caplog.at_level(logging.WARNING, logger="geofm"):
        model = tiny_mae(ckpt_path=path)
    assert "holds no MAE decoder" in caplog.text
    assert torch.equal(model.encoder.norm.bias, encoder["model.encoder.norm.bias"])


def test_decoder_of_another_size_is_reported(tmp_path: Path) -> None:
    state = tiny_mae(decoder_depth=2).state_dict()
    path = tmp_path / "deeper.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"unexpected keys: decoder_blocks\.1\.norm1\.weight"):
        tiny_mae(ckpt_path=path)


# ------------------------------------------------------------------------------ loss
def test_loss_counts_only_masked_patches() -> None:
    torch.manual_seed(0)
    pred, patches = torch.randn(2, 4, 12), torch.randn(2, 4, 12)
    mask = torch.tensor([[1.0, 0, 1, 0], [0, 1, 1, 1]])
    loss = masked_patch_loss(pred, patches, mask)
    changed = patches.clone()
    changed[0, 1, 5] += 10.0  # a visible patch
    assert torch.equal(masked_patch_loss(pred, changed, mask), loss)
    changed[0, 2, 5] += 10.0  # a masked patch
    assert not torch.allclose(masked_patch_loss(pred, changed, mask), loss)


def test_norm_pix_loss_targets_each_patch_normalised() -> None:
    torch.manual_seed(0)
    pred, patches = torch.randn(1, 3, 16), torch.randn(1, 3, 16)
    mask = torch.ones(1, 3)
    shifted = patches * 3.0 + 7.0  # same patches, other brightness and contrast
    on = masked_patch_loss(pred, patches, mask, norm_pix_loss=True)
    same = masked_patch_loss(pred, shifted, mask, norm_pix_loss=True)
    torch.testing.assert_close(same, on, rtol=1e-4, atol=1e-5)
    off = masked_patch_loss(pred, patches, mask, norm_pix_loss=False)
    assert not torch.allclose(on, off)
    assert not torch.allclose(masked_patch_loss(pred, shifted, mask, norm_pix_loss=False), off)
    # The official formula when every value is valid: mean, unbiased variance, 1e-6.
    mean, var = patches.mean(-1, keepdim=True), patches.var(-1, keepdim=True)
    target = (patches - mean) / (var + 1e-6) ** 0.5
    torch.testing.assert_close(on, ((pred - target) ** 2).mean())


def test_nodata_values_are_left_out_of_the_loss() -> None:
    torch.manual_seed(0)
    pred, patches = torch.randn(1, 2, 8), torch.randn(1, 2, 8)
    mask = torch.tensor([[1.0, 1.0]])
    with_nan = patches.clone()
    with_nan[0, 0, 3] = float("nan")
    loss = masked_patch_loss(pred, with_nan, mask, norm_pix_loss=False)
    assert torch.isfinite(loss)
    keep = torch.ones(2, 8, dtype=torch.bool)
    keep[0, 3] = False
    errors = [((pred[0, i] - patches[0, i]) ** 2)[keep[i]].mean() for i in range(2)]
    expected = torch.stack(errors).mean()
    torch.testing.assert_close(loss, expected)
    everything_missing = torch.full_like(patches, float("nan"))
    empty = masked_patch_loss(pred.requires_grad_(), everything_missing, mask)
    assert float(empty.detach()) == 0.0 and empty.requires_grad


def test_bf16_prediction_is_scored_in_float32() -> None:
    """Mixed precision: a bf16 prediction gives the float32 loss of the same values (value
    and patch counts in bf16 would round: 257 valid values count as 256)."""
    torch.manual_seed(0)
    pred = torch.randn(2, 3, 300).to(torch.bfloat16)
    patches = torch.randn(2, 3, 300)
    patches[0, 0, 257:] = float("nan")  # 257 valid values in one masked patch
    mask = torch.ones(2, 3)
    for norm in (True, False):
        loss = masked_patch_loss(pred, patches, mask, norm_pix_loss=norm)
        assert loss.dtype == torch.float32
        expected = masked_patch_loss(pred.float(), patches, mask, norm_pix_loss=norm)
        torch.testing.assert_close(loss, expected, rtol=0, atol=0)
