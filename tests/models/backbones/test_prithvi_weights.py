"""Loading Prithvi checkpoints: official V1/V2 layouts, Lightning files, bands, errors, cache.

Checkpoints are generated here with the official key names and shapes (random or constant
values); the layout generator is checked against ``../shared/specs`` when that folder exists.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from geofm.data.bands import HLSBands
from geofm.models.backbones.pretrained import PRETRAINED_CONFIGS, find_cached_file
from geofm.registry import BACKBONE_REGISTRY

# ../shared beside the checkout (also found from a worktree nested deeper, such as wt/name).
LAYOUTS = next(
    (
        found
        for parent in Path(__file__).resolve().parents[3:]
        if (found := parent / "shared" / "specs" / "prithvi_state_dict_layouts.json").is_file()
    ),
    Path(__file__).parents[3] / ".." / "shared" / "specs" / "prithvi_state_dict_layouts.json",
)
BANDS = ["BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2"]
# name: (embed dim, depth, patch side, time/location scales), from the spec's variant table.
SPEC = {
    "prithvi_eo_tiny": (256, 4, 16, False),
    "prithvi_eo_v1_100": (768, 12, 16, False),
    "prithvi_eo_v2_tiny_tl": (192, 12, 16, True),
    "prithvi_eo_v2_100_tl": (768, 12, 16, True),
    "prithvi_eo_v2_300": (1024, 24, 16, False),
    "prithvi_eo_v2_300_tl": (1024, 24, 16, True),
    "prithvi_eo_v2_600": (1280, 32, 14, False),
    "prithvi_eo_v2_600_tl": (1280, 32, 14, True),
}
DECODER_DIM, DECODER_DEPTH = 512, 8


def _block(prefix: str, dim: int) -> dict[str, tuple[int, ...]]:
    shapes = {
        "norm1.weight": (dim,),
        "norm1.bias": (dim,),
        "attn.qkv.weight": (3 * dim, dim),
        "attn.qkv.bias": (3 * dim,),
        "attn.proj.weight": (dim, dim),
        "attn.proj.bias": (dim,),
        "norm2.weight": (dim,),
        "norm2.bias": (dim,),
        "mlp.fc1.weight": (4 * dim, dim),
        "mlp.fc1.bias": (4 * dim,),
        "mlp.fc2.weight": (dim, 4 * dim),
        "mlp.fc2.bias": (dim,),
    }
    return {prefix + k: v for k, v in shapes.items()}


def encoder_layout(name: str) -> dict[str, tuple[int, ...]]:
    """The official encoder keys and shapes of a variant (224 px, one frame, 6 bands)."""
    dim, depth, patch, tl = SPEC[name]
    tokens = 1 + (224 // patch) ** 2
    out = {
        "cls_token": (1, 1, dim),
        "pos_embed": (1, tokens, dim),
        "patch_embed.proj.weight": (dim, 6, 1, patch, patch),
        "patch_embed.proj.bias": (dim,),
    }
    if tl:
        out |= {"temporal_embed_enc.scale": (1,), "location_embed_enc.scale": (1,)}
    for i in range(depth):
        out |= _block(f"blocks.{i}.", dim)
    return out | {"norm.weight": (dim,), "norm.bias": (dim,)}


def mae_layout(name: str) -> dict[str, tuple[int, ...]]:
    """The official V2 file: ``encoder.*`` and the MAE ``decoder.*``."""
    dim, _, patch, tl = SPEC[name]
    tokens = 1 + (224 // patch) ** 2
    out = {"encoder." + k: v for k, v in encoder_layout(name).items()}
    out |= {
        "decoder.mask_token": (1, 1, DECODER_DIM),
        "decoder.decoder_pos_embed": (1, tokens, DECODER_DIM),
        "decoder.decoder_embed.weight": (DECODER_DIM, dim),
        "decoder.decoder_embed.bias": (DECODER_DIM,),
    }
    if tl:
        out |= {"decoder.temporal_embed_dec.scale": (1,), "decoder.location_embed_dec.scale": (1,)}
    for i in range(DECODER_DEPTH):
        out |= _block(f"decoder.decoder_blocks.{i}.", DECODER_DIM)
    return out | {
        "decoder.decoder_norm.weight": (DECODER_DIM,),
        "decoder.decoder_norm.bias": (DECODER_DIM,),
        "decoder.decoder_pred.weight": (patch * patch * 6, DECODER_DIM),
        "decoder.decoder_pred.bias": (patch * patch * 6,),
    }


def v1_layout(name: str) -> dict[str, tuple[int, ...]]:
    """The official V1 file: flat encoder keys, ``decoder_*`` and ``mask_token``."""
    return {
        k.removeprefix("encoder.").removeprefix("decoder."): v for k, v in mae_layout(name).items()
    }


def make_checkpoint(
    layout: dict[str, tuple[int, ...]], device: str = "cpu"
) -> dict[str, torch.Tensor]:
    """Tensor ``i`` of the layout holds the constant ``i``; patch embeddings are random.

    Constants are broadcast views of one number: no memory, and ``torch.save`` stores one
    number for each, so the files stay small.
    """
    out = {}
    for i, (key, shape) in enumerate(layout.items()):
        if device == "meta":
            out[key] = torch.empty(shape, device="meta")
        elif key.endswith("patch_embed.proj.weight"):
            out[key] = torch.randn(shape)
        else:
            out[key] = torch.tensor(float(i)).expand(shape)
    return out


def build(name: str, **kwargs):
    if SPEC[name][0] > 256:
        with torch.device("meta"):
            return BACKBONE_REGISTRY.build(name, **kwargs)
    return BACKBONE_REGISTRY.build(name, **kwargs)


def assert_loaded(model, checkpoint: dict[str, torch.Tensor], prefix: str, bands=BANDS) -> None:
    """Every model tensor holds the checkpoint's, except the recomputed ``pos_embed``."""
    for key, value in model.state_dict().items():
        if key == "pos_embed":
            assert not torch.equal(value[0, 1], checkpoint[prefix + key][0, 1])
            continue
        source = checkpoint[prefix + key]
        if key == "patch_embed.proj.weight":
            source = source[:, [BANDS.index(b) for b in bands]]
        assert torch.equal(value, source.to(value.dtype)), key


# ------------------------------------------------------------------------------ layouts
def test_layout_generator_matches_spec_file() -> None:
    assert LAYOUTS.is_file(), f"spec layout file {LAYOUTS} is absent: check out ../shared"
    spec = json.loads(LAYOUTS.read_text())
    assert set(spec) == set(SPEC)
    for name, entry in spec.items():
        expected = {k: tuple(v) for k, v in entry["backbone_state_dict"].items()}
        assert encoder_layout(name) == expected, name
        if "official_mae_checkpoint_state_dict" in entry:
            mae = {k: tuple(v) for k, v in entry["official_mae_checkpoint_state_dict"].items()}
            assert mae_layout(name) == mae, name


@pytest.mark.parametrize("name", list(SPEC))
def test_model_state_dict_has_the_official_names(name: str) -> None:
    model = build(name)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == encoder_layout(name)
    hub_file = PRETRAINED_CONFIGS[name].hub_file
    assert hub_file is None or hub_file.endswith(".pt")


# ------------------------------------------------------------------------------ every variant
def test_tiny_backbone_only_checkpoint(tmp_path: Path) -> None:
    checkpoint = make_checkpoint(encoder_layout("prithvi_eo_tiny"))
    path = tmp_path / "tiny.pt"
    torch.save(checkpoint, path)
    model = BACKBONE_REGISTRY.build("prithvi_eo_tiny", ckpt_path=path)
    assert_loaded(model, checkpoint, "")


def test_v1_flat_checkpoint_loads() -> None:
    from geofm.models.backbones.prithvi_weights import load_prithvi_checkpoint

    checkpoint = make_checkpoint(v1_layout("prithvi_eo_v1_100"))
    assert "mask_token" in checkpoint and "decoder_pred.weight" in checkpoint
    model = BACKBONE_REGISTRY.build("prithvi_eo_v1_100")
    load_prithvi_checkpoint(model, checkpoint, BANDS, BANDS)
    assert_loaded(model, checkpoint, "")


def test_v2_tiny_tl_mae_checkpoint_with_band_subset(caplog: pytest.LogCaptureFixture) -> None:
    from geofm.models.backbones.prithvi_weights import load_prithvi_checkpoint

    checkpoint = make_checkpoint(mae_layout("prithvi_eo_v2_tiny_tl"))
    bands = ["NIR_NARROW", "RED", "GREEN"]
    model = BACKBONE_REGISTRY.build("prithvi_eo_v2_tiny_tl", bands=bands)
    with caplog.at_level(logging.INFO, logger="geofm"):
        load_prithvi_checkpoint(model, checkpoint, bands, BANDS)
    assert_loaded(model, checkpoint, "encoder.", bands=bands)
    assert "['NIR_NARROW', 'RED', 'GREEN']" in caplog.text


@pytest.mark.parametrize(
    "name",
    [
        "prithvi_eo_v2_100_tl",
        "prithvi_eo_v2_300",
        "prithvi_eo_v2_300_tl",
        "prithvi_eo_v2_600",
        "prithvi_eo_v2_600_tl",
        "prithvi_eo_v1_100",
    ],
)
def test_large_checkpoints_on_meta(name: str) -> None:
    """Key and shape logic for the big variants, on meta tensors (no memory, no values)."""
    from geofm.models.backbones.prithvi_weights import load_prithvi_checkpoint

    layout = v1_layout(name) if name == "prithvi_eo_v1_100" else mae_layout(name)
    checkpoint = make_checkpoint(layout, device="meta")
    model = build(name, bands=["SWIR_2", "BLUE", 7])
    load_prithvi_checkpoint(model, checkpoint, model.bands, BANDS)
    assert model.patch_embed.proj.weight.shape[1] == 3
    extra = dict(checkpoint)
    key = "encoder.blocks.3.attn.extra" if name != "prithvi_eo_v1_100" else "blocks.3.attn.extra"
    extra[key] = torch.empty(4, device="meta")
    with pytest.raises(ValueError, match=r"unexpected keys: blocks\.3\.attn\.extra"):
        load_prithvi_checkpoint(model, extra, model.bands, BANDS)


# ------------------------------------------------------------------------------ bands
@pytest.fixture
def tiny_tl_file(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    checkpoint = make_checkpoint(mae_layout("prithvi_eo_v2_tiny_tl"))
    path = tmp_path / "Prithvi_EO_V2_tiny_TL.pt"
    torch.save(checkpoint, path)
    return path, checkpoint


def test_bands_mixed_names_enums_and_new(tiny_tl_file, caplog: pytest.LogCaptureFixture) -> None:
    path, checkpoint = tiny_tl_file
    torch.manual_seed(3)
    fresh = BACKBONE_REGISTRY.build(
        "prithvi_eo_v2_tiny_tl", bands=["swir_1", HLSBands.BLUE, "RED_EDGE_1", 0]
    )
    torch.manual_seed(3)
    with caplog.at_level(logging.INFO, logger="geofm"):
        model = BACKBONE_REGISTRY.build(
            "prithvi_eo_v2_tiny_tl",
            ckpt_path=path,
            bands=["swir_1", HLSBands.BLUE, "RED_EDGE_1", 0],
        )
    assert model.bands == ["SWIR_1", "BLUE", "RED_EDGE_1", 0]
    weight, source = model.patch_embed.proj.weight, checkpoint["encoder.patch_embed.proj.weight"]
    assert torch.equal(weight[:, 0], source[:, 4])
    assert torch.equal(weight[:, 1], source[:, 0])
    # New bands keep the model's own initialisation.
    assert torch.equal(weight[:, 2:], fresh.patch_embed.proj.weight[:, 2:])
    assert "['SWIR_1', 'BLUE']" in caplog.text
    assert "['RED_EDGE_1', 0]" in caplog.text and "newly initialised" in caplog.text


def test_pretrained_bands_of_a_finetuned_checkpoint(tiny_tl_file) -> None:
    path, checkpoint = tiny_tl_file
    custom = ["RED", "GREEN", "BLUE", 10, 11, "NIR_NARROW"]
    model = BACKBONE_REGISTRY.build(
        "prithvi_eo_v2_tiny_tl", ckpt_path=path, bands=[11, "GREEN"], pretrained_bands=custom
    )
    source = checkpoint["encoder.patch_embed.proj.weight"]
    assert torch.equal(model.patch_embed.proj.weight[:, 0], source[:, 4])
    assert torch.equal(model.patch_embed.proj.weight[:, 1], source[:, 1])
    with pytest.raises(ValueError, match="6 input channels.*pretrained_bands lists 3"):
        BACKBONE_REGISTRY.build("prithvi_eo_v2_tiny_tl", ckpt_path=path, pretrained_bands=BANDS[:3])


# ------------------------------------------------------------------------------ file formats
def test_pt_safetensors_and_lightning_files_load_the_same(tiny_tl_file, tmp_path: Path) -> None:
    path, checkpoint = tiny_tl_file
    tensors = {k: v for k, v in checkpoint.items() if k.startswith("encoder.")}
    safetensors_path = tmp_path / "weights.safetensors"  # safetensors wants dense tensors
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(safetensors_path))
    lightning_path = tmp_path / "epoch=3.ckpt"
    state = {
        "model.encoder." + k.removeprefix("encoder."): v
        for k, v in tensors.items()
        if k.startswith("encoder.")
    }
    state["model.decoder.convs.0.weight"] = torch.ones(8, 3)  # the rest of a fine-tuned model
    state["model.head.weight"] = torch.ones(2, 8)
    torch.save(
        {
            "state_dict": state,
            "epoch": 3,
            "hyper_parameters": {"bands": [HLSBands.RED, HLSBands.BLUE]},
        },
        lightning_path,
    )
    # A geofm model's own state dict: encoder, decoder and head side by side.
    model_path = tmp_path / "model_state.pt"
    model_state = {k: v for k, v in tensors.items() if k.startswith("encoder.")}
    torch.save(model_state | {"decoder.convs.0.weight": torch.ones(8, 3)}, model_path)
    for source in (path, safetensors_path, lightning_path, model_path):
        model = BACKBONE_REGISTRY.build("prithvi_eo_v2_tiny_tl", ckpt_path=str(source))
        assert_loaded(model, checkpoint, "encoder.")


def _expect_error(tmp_path: Path, checkpoint: dict[str, torch.Tensor], match: str) -> None:
    path = tmp_path / "bad.pt"
    torch.save(checkpoint, path)
    with pytest.raises(ValueError, match=match):
        BACKBONE_REGISTRY.build("prithvi_eo_v2_tiny_tl", ckpt_path=path)


def test_bad_checkpoints_list_the_keys(tiny_tl_file, tmp_path: Path) -> None:
    _, checkpoint = tiny_tl_file
    good = dict(checkpoint)
    _expect_error(
        tmp_path,
        good | {"encoder.blocks.0.attn.extra_bias": torch.zeros(3)},
        r"unexpected keys: blocks\.0\.attn\.extra_bias",
    )
    _expect_error(
        tmp_path,
        good | {"encoder.blocks.1.mlp.fc1.weight": torch.zeros(700, 192)},
        r"shape mismatches: blocks\.1\.mlp\.fc1\.weight: "
        r"checkpoint \(700, 192\), model \(768, 192\)",
    )
    missing = {k: v for k, v in good.items() if k != "encoder.norm.weight"}
    _expect_error(tmp_path, missing, r"missing keys: norm\.weight")
    _expect_error(tmp_path, {"weight": torch.zeros(3)}, "no Prithvi ViT encoder")
    # A checkpoint of another variant: every mismatch is reported.
    tiny = make_checkpoint(encoder_layout("prithvi_eo_tiny"))
    _expect_error(tmp_path, tiny, r"cls_token: checkpoint \(1, 1, 256\), model \(1, 1, 192\)")
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        BACKBONE_REGISTRY.build("prithvi_eo_tiny", ckpt_path=tmp_path / "nothing.pt")


def test_coordinate_scales_follow_the_model(tiny_tl_file, caplog: pytest.LogCaptureFixture) -> None:
    path, _ = tiny_tl_file
    plain = BACKBONE_REGISTRY.build("prithvi_eo_v2_tiny_tl", ckpt_path=path, coords_encoding=[])
    assert plain.temporal_embed_enc is None
    checkpoint = make_checkpoint(encoder_layout("prithvi_eo_tiny"))
    torch.save(checkpoint, path.with_name("tiny.pt"))
    with caplog.at_level(logging.INFO, logger="geofm"):
        model = BACKBONE_REGISTRY.build(
            "prithvi_eo_tiny",
            ckpt_path=path.with_name("tiny.pt"),
            coords_encoding=["time", "location"],
        )
    assert model.temporal_embed_enc.scale.item() == 1.0
    assert "temporal_embed_enc.scale" in caplog.text


# ------------------------------------------------------------------------------ pretrained=True
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hf"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def test_pretrained_without_cache_says_what_to_obtain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cache(tmp_path, monkeypatch)
    with pytest.raises(FileNotFoundError) as info:
        BACKBONE_REGISTRY.build("prithvi_eo_v2_300", pretrained=True)
    message = str(info.value)
    assert "Prithvi_EO_V2_300M.pt" in message
    assert "ibm-nasa-geospatial/Prithvi-EO-2.0-300M" in message
    assert "ckpt_path" in message
    with pytest.raises(ValueError, match="no official pretrained weights"):
        BACKBONE_REGISTRY.build("prithvi_eo_tiny", pretrained=True)


@pytest.mark.parametrize("with_refs", [True, False])
def test_pretrained_loads_from_the_hub_cache(
    tiny_tl_file, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_refs: bool
) -> None:
    path, checkpoint = tiny_tl_file
    cache = _cache(tmp_path, monkeypatch)
    repo = cache / "models--ibm-nasa-geospatial--Prithvi-EO-2.0-tiny-TL"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "Prithvi_EO_V2_tiny_TL.pt").write_bytes(path.read_bytes())
    if with_refs:
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text("0123abcd")
    found = find_cached_file(
        "ibm-nasa-geospatial/Prithvi-EO-2.0-tiny-TL", "Prithvi_EO_V2_tiny_TL.pt"
    )
    assert found is not None and found.name == "Prithvi_EO_V2_tiny_TL.pt"
    model = BACKBONE_REGISTRY.build("prithvi_eo_v2_tiny_tl", pretrained=True)
    assert_loaded(model, checkpoint, "encoder.")


def test_half_precision_checkpoint_keeps_new_bands_exact(tmp_path: Path) -> None:
    checkpoint = make_checkpoint(encoder_layout("prithvi_eo_tiny"))
    path = tmp_path / "tiny_bf16.pt"
    torch.save({k: v.to(torch.bfloat16) for k, v in checkpoint.items()}, path)
    torch.manual_seed(5)
    fresh = BACKBONE_REGISTRY.build("prithvi_eo_tiny", bands=["RED", "RED_EDGE_2"])
    torch.manual_seed(5)
    model = BACKBONE_REGISTRY.build("prithvi_eo_tiny", ckpt_path=path, bands=["RED", "RED_EDGE_2"])
    weight = model.patch_embed.proj.weight
    assert weight.dtype == torch.float32
    source = checkpoint["patch_embed.proj.weight"][:, 2].to(torch.bfloat16).float()
    assert torch.equal(weight[:, 0], source)
    assert torch.equal(weight[:, 1], fresh.patch_embed.proj.weight[:, 1])
