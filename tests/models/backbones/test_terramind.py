"""TerraMind v1 encoders: the official file layout loaded unchanged, features as the spec
computes them, the position code and its resize, modality names, band subsets, per-modality
statistics, the large variants' layout, and composition into models."""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from geofm.models.backbones import terramind
from geofm.models.backbones.terramind import (
    MODALITIES,
    TERRAMIND_PRETRAINED_CONFIGS,
    VARIANTS,
    modality_key,
    resize_pos_emb,
)
from geofm.models.model import run_necks
from geofm.registry import BACKBONE_REGISTRY, GEOFM_BACKBONE_REGISTRY, MODEL_FACTORY_REGISTRY

from tests.models.backbones.spec_files import REPO, ZOO_LAYOUTS  # noqa: E402
# The spec's key/shape table, when the shared folder is beside the checkout (or its worktrees).
LAYOUTS = ZOO_LAYOUTS
def _require_layouts() -> None:
    assert LAYOUTS.is_file(), f"spec table {LAYOUTS} not found: check out ../shared beside the repository"
TWO = ["S2L2A", "S1GRD"]
S2L2A = list(MODALITIES["untok_sen2l2a@224"].bands)


# ------------------------------------------------------------------------------ reference
def sincos_reference(rows: int, cols: int, dim: int) -> torch.Tensor:
    """The spec's code, written out: [sin(r w), cos(r w), sin(c w), cos(c w)], w_i = 1e4^(-i/q)."""
    q = dim // 4
    table = torch.zeros(rows * cols, dim, dtype=torch.float64)
    for r in range(rows):
        for c in range(cols):
            for i in range(q):
                w = 10000.0 ** (-i / q)
                table[r * cols + c, i] = math.sin(r * w)
                table[r * cols + c, q + i] = math.cos(r * w)
                table[r * cols + c, 2 * q + i] = math.sin(c * w)
                table[r * cols + c, 3 * q + i] = math.cos(c * w)
    return table.float().unsqueeze(0)


def layout(name: str) -> dict:
    return json.loads(LAYOUTS.read_text())[name]


def official_file(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors in the official layout of the spec's table (every key it lists, including
    those a loader must drop); pos_emb is the fixed code and norm biases are zero, as in the files."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in layout(name)["official_checkpoint_state_dict"].items():
        if key.endswith("pos_emb"):
            side = math.isqrt(shape[1])
            state[key] = sincos_reference(side, side, shape[2])
        elif key.endswith(".bias") and "norm" in key.split(".")[-2]:
            state[key] = torch.zeros(shape)
        elif "norm" in key and key.endswith(".weight"):
            state[key] = 1 + 0.1 * torch.randn(shape, generator=generator)
        else:
            state[key] = 0.05 * torch.randn(shape, generator=generator)
    return state


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    _require_layouts()
    state = official_file("terramind_v1_tiny")
    path = tmp_path_factory.mktemp("terramind") / "TerraMind_v1_tiny.pt"
    torch.save(state, path)
    return path, state


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-6) * weight + bias


def reference_features(
    s: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor], heads: int,
    pos: dict[str, torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """The spec, straightforwardly: tokens per patch (row, column, channel; channel fastest) +
    pos + mod, concatenated, pre-norm blocks, encoder_norm on the last, mean over modalities."""
    tokens, counts = [], []
    for key, x in inputs.items():
        b, c, h, w = x.shape
        patches = [
            x[:, :, 16 * r:16 * r + 16, 16 * col:16 * col + 16].permute(0, 2, 3, 1).reshape(b, -1)
            for r in range(h // 16) for col in range(w // 16)
        ]
        e = f"encoder_embeddings.{key}."
        table = pos[key] if pos is not None else s[e + "pos_emb"]
        tokens.append(torch.stack(patches, 1) @ s[e + "proj.weight"].T + table + s[e + "mod_emb"])
        counts.append(len(patches))
    x = torch.cat(tokens, 1)
    out = []
    for i in range(12):
        p = f"encoder.{i}."
        y = layer_norm(x, s[p + "norm1.weight"], s[p + "norm1.bias"])
        qkv = y @ s[p + "attn.qkv.weight"].T + s[p + "attn.qkv.bias"]
        n, d = x.shape[1], x.shape[2]
        q, k, v = (t.reshape(x.shape[0], n, heads, d // heads).transpose(1, 2) for t in qkv.chunk(3, -1))
        attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d / heads), -1) @ v
        x = x + attn.transpose(1, 2).reshape(x.shape) @ s[p + "attn.proj.weight"].T + s[p + "attn.proj.bias"]
        y = layer_norm(x, s[p + "norm2.weight"], s[p + "norm2.bias"])
        hidden = y @ s[p + "mlp.fc1.weight"].T + s[p + "mlp.fc1.bias"]
        hidden = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2)))  # exact GELU
        x = x + hidden @ s[p + "mlp.fc2.weight"].T + s[p + "mlp.fc2.bias"]
        out.append(x)
    out[-1] = layer_norm(x, s["encoder_norm.weight"], s["encoder_norm.bias"])
    return [torch.stack(torch.split(f, counts, 1), 1).mean(1) for f in out]


def inputs(size: int = 224, batch: int = 1, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"S2L2A": torch.randn(batch, 12, size, size, generator=g),
            "S1GRD": torch.randn(batch, 2, size, size, generator=g)}


def file_keys(model_inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same inputs under the file's modality keys."""
    return {modality_key(k): v for k, v in model_inputs.items()}


# ------------------------------------------------------------------------------ registry, facts
def test_variants_are_registered_functions_with_hub_files() -> None:
    for name in ("terramind_v1_tiny", "terramind_v1_small", "terramind_v1_base", "terramind_v1_large"):
        assert GEOFM_BACKBONE_REGISTRY.get(name) is getattr(terramind, name)
        cfg = TERRAMIND_PRETRAINED_CONFIGS[name]
        size = name.rsplit("_", 1)[-1]
        assert (cfg.hub_repo, cfg.hub_file) == (
            f"ibm-esa-geospatial/TerraMind-1.0-{size}", f"TerraMind_v1_{size}.pt"
        )
    assert [(v.embed_dim, v.depth, v.num_heads, v.mlp_hidden) for v in VARIANTS.values()] == [
        (192, 12, 3, 768), (384, 12, 6, 1536), (768, 12, 12, 2048), (1024, 24, 16, 2730)
    ]


def test_missing_weights_name_file_repo_and_ckpt_path(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        BACKBONE_REGISTRY.build("terramind_v1_small", pretrained=True)
    message = str(info.value)
    assert "TerraMind_v1_small.pt" in message and "ibm-esa-geospatial/TerraMind-1.0-small" in message
    assert "ckpt_path" in message
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        BACKBONE_REGISTRY.build("terramind_v1_tiny", ckpt_path=tmp_path / "absent.pt")


def test_pretrained_from_the_offline_hf_cache(tiny_file, tmp_path, monkeypatch) -> None:
    path, state = tiny_file
    snapshot = tmp_path / "models--ibm-esa-geospatial--TerraMind-1.0-tiny" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "TerraMind_v1_tiny.pt").write_bytes(path.read_bytes())
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    model = BACKBONE_REGISTRY.build("terramind_v1_tiny", pretrained=True, modalities=TWO)
    assert torch.equal(model.encoder[5].attn.qkv.weight, state["encoder.5.attn.qkv.weight"])


# ------------------------------------------------------------------------------ loading
def test_official_file_loads_unchanged_and_drops_the_rest_in_one_line(tiny_file, caplog) -> None:
    path, state = tiny_file
    spec = layout("terramind_v1_tiny")
    with caplog.at_level(logging.INFO, logger="geofm.models.backbones.terramind"):
        model = BACKBONE_REGISTRY.build("terramind_v1_tiny", ckpt_path=path, **spec["build_kwargs"])
    loaded = model.state_dict()
    drop = set(spec["keys_a_loader_must_drop"])
    assert set(loaded) == set(state) - {k for k in state if not k.startswith(
        ("encoder_embeddings.untok_sen2l2a@224.", "encoder_embeddings.untok_sen1grd@224.",
         "encoder.", "encoder_norm."))}
    assert not drop & set(loaded)
    for key, value in loaded.items():
        assert torch.equal(value, state[key]), key
    lines = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(lines) == 1
    dropped = len(state) - len(loaded)
    assert f"dropped {dropped} tensors" in lines[0]
    assert "of other modalities (tok_lulc@224, untok_dem@224" in lines[0]
    assert "of decoder" in lines[0] and "mask_token" in lines[0]


@pytest.mark.parametrize("key", ["encoder.3.mlp.fc1.bias", "encoder_embeddings.untok_sen1grd@224.proj.weight"])
def test_missing_encoder_key_is_an_error_naming_it(tiny_file, tmp_path, key: str) -> None:
    _, state = tiny_file
    broken = {k: v for k, v in state.items() if k != key}
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(ValueError, match=f"missing keys: {key.replace('.', '[.]')}"):
        BACKBONE_REGISTRY.build("terramind_v1_tiny", ckpt_path=tmp_path / "broken.pt", modalities=TWO)


def test_wrong_variant_is_a_shape_error(tiny_file) -> None:
    path, _ = tiny_file
    with pytest.raises(ValueError, match="shape mismatches: encoder_embeddings"):
        BACKBONE_REGISTRY.build("terramind_v1_small", ckpt_path=path, modalities=TWO)


# ------------------------------------------------------------------------------ features
def test_features_equal_the_spec(tiny_file) -> None:
    path, state = tiny_file
    spec = layout("terramind_v1_tiny")
    model = BACKBONE_REGISTRY.build("terramind_v1_tiny", ckpt_path=path, modalities=TWO).eval()
    assert model.out_channels == spec["out_channels"]
    x = inputs(224, batch=1)
    with torch.no_grad():
        got = model(x)
        want = reference_features(state, file_keys(x), heads=3)
    assert len(got) == 12
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.shape == (1, 196, 192)
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4, msg=f"feature {i}")
    # The layouts' batch-2 shapes.
    with torch.no_grad():
        shapes = [list(f.shape) for f in model(inputs(224, batch=2))]
    assert shapes == spec["feature_shapes"]


def test_pos_emb_is_the_spec_code_and_resizes_bicubic(tiny_file) -> None:
    path, state = tiny_file
    model = BACKBONE_REGISTRY.build("terramind_v1_tiny", modalities=["S1GRD"]).eval()
    table = model.encoder_embeddings["untok_sen1grd@224"].pos_emb
    torch.testing.assert_close(table, sincos_reference(14, 14, 192), atol=1e-5, rtol=0)
    # 448: the 14 x 14 table resized, not the code recomputed for 28 x 28.
    resized = resize_pos_emb(table, (28, 28))
    maps = table.reshape(1, 14, 14, 192).permute(0, 3, 1, 2)
    expected = F.interpolate(maps, size=(28, 28), mode="bicubic", align_corners=False)
    torch.testing.assert_close(resized, expected.permute(0, 2, 3, 1).reshape(1, 784, 192))
    assert (resized - sincos_reference(28, 28, 192)).abs().max() > 0.1
    loaded = BACKBONE_REGISTRY.build("terramind_v1_tiny", ckpt_path=path, modalities=["S1GRD"]).eval()
    x = {"S1GRD": torch.randn(1, 2, 448, 448)}
    with torch.no_grad():
        got = loaded(x)[-1]
        pos = {"untok_sen1grd@224": resize_pos_emb(state["encoder_embeddings.untok_sen1grd@224.pos_emb"], (28, 28))}
        want = reference_features(state, {"untok_sen1grd@224": x["S1GRD"]}, heads=3, pos=pos)[-1]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_merge_methods() -> None:
    torch.manual_seed(0)
    x = inputs(32, batch=2)
    outs = {}
    weights = BACKBONE_REGISTRY.build("terramind_v1_tiny", modalities=TWO).state_dict()
    for method in ("mean", "max", "concat", "dict", None):
        model = BACKBONE_REGISTRY.build(
            "terramind_v1_tiny", modalities=TWO, merge_method=method
        ).eval()
        model.load_state_dict(weights, strict=method != "concat")  # concat adds missing_mod_token
        with torch.no_grad():
            outs[method] = model(x)
        if method == "concat":
            assert model.out_channels == [384] * 12
            with torch.no_grad():  # S1GRD absent: its half is the learned missing_mod_token
                half = model({"S2L2A": x["S2L2A"]})[-1][..., 192:]
            assert torch.equal(half, model.missing_mod_token.expand_as(half))
        else:
            assert model.out_channels == [192] * 12
    dict_last, raw_last = outs["dict"][-1], outs[None][-1]
    assert list(dict_last) == ["untok_sen2l2a@224", "untok_sen1grd@224"]
    assert raw_last.shape == (2, 8, 192)
    parts = torch.stack(list(dict_last.values()), 1)
    torch.testing.assert_close(outs["mean"][-1], parts.mean(1))
    torch.testing.assert_close(outs["max"][-1], parts.amax(1))
    torch.testing.assert_close(outs["concat"][-1], torch.cat(list(dict_last.values()), -1))
    with pytest.raises(ValueError, match="merge_method='sum'"):
        BACKBONE_REGISTRY.build("terramind_v1_tiny", merge_method="sum")


# ------------------------------------------------------------------------------ modalities
@pytest.mark.parametrize("name, key", [
    ("S2L2A", "untok_sen2l2a@224"), ("s2l1c", "untok_sen2l1c@224"), ("S1GRD", "untok_sen1grd@224"),
    ("s1rtc", "untok_sen1rtc@224"), ("RGB", "untok_sen2rgb@224"), ("S2RGB", "untok_sen2rgb@224"),
    ("DEM", "untok_dem@224"), ("untok_sen2l2a@224", "untok_sen2l2a@224"),
    ("untok_sen1grd@224", "untok_sen1grd@224"), ("LULC", None), ("optical", None),
])
def test_modality_names(name: str, key: str | None) -> None:
    assert modality_key(name) == key


def test_modalities_build_and_unknown_names_fail() -> None:
    model = BACKBONE_REGISTRY.build("terramind_v1_tiny", modalities=["s2l1c", "DEM", "rgb"])
    assert model.modalities == ("s2l1c", "DEM", "rgb")
    assert list(model.encoder_embeddings) == ["untok_sen2l1c@224", "untok_dem@224", "untok_sen2rgb@224"]
    assert model.encoder_embeddings["untok_sen2l1c@224"].proj.weight.shape == (192, 13 * 256)
    assert model.extra_inputs == ()
    with pytest.raises(ValueError, match="Unknown TerraMind modality 'LULC'"):
        BACKBONE_REGISTRY.build("terramind_v1_tiny", modalities=["S2L2A", "LULC"])
    with pytest.raises(ValueError, match="more than once"):
        BACKBONE_REGISTRY.build("terramind_v1_tiny", modalities=["S2L2A", "untok_sen2l2a@224"])


def test_new_modality_is_untrained_and_loads_beside_the_file(tiny_file, caplog) -> None:
    path, state = tiny_file
    model = BACKBONE_REGISTRY.build(
        "terramind_v1_tiny", ckpt_path=path, modalities=["S2L2A", {"NDVI": 1}]
    ).eval()
    assert model.modalities == ("S2L2A", "NDVI")
    assert model.encoder_embeddings["NDVI"].proj.weight.shape == (192, 256)
    assert torch.equal(model.encoder[0].attn.qkv.weight, state["encoder.0.attn.qkv.weight"])
    assert model.pretrained_stats["NDVI"] is None and model.bands["NDVI"] == []
    with torch.no_grad():
        out = model({"S2L2A": torch.randn(1, 12, 32, 32), "NDVI": torch.randn(1, 1, 32, 32)})
    assert out[-1].shape == (1, 4, 192)


def test_runtime_subset_alias_and_unknown_key_ignored_with_a_warning() -> None:
    torch.manual_seed(0)
    model = BACKBONE_REGISTRY.build("terramind_v1_tiny", modalities=TWO).eval()
    x = inputs(32)
    with torch.no_grad():
        only_s2 = model({"S2L2A": x["S2L2A"]})[-1]
        alias = model({"s2l2a": x["S2L2A"]})[-1]
        bare = model(x["S2L2A"])[-1]
        with pytest.warns(UserWarning, match="input 'LULC' is not one of the built modalities"):
            extra = model({"S2L2A": x["S2L2A"], "LULC": torch.zeros(1, 1, 32, 32)})[-1]
        with warnings.catch_warnings():  # warned once per name, not once per batch
            warnings.simplefilter("error")
            model({"S2L2A": x["S2L2A"], "LULC": torch.zeros(1, 1, 32, 32)})
    assert torch.equal(alias, only_s2) and torch.equal(bare, only_s2) and torch.equal(extra, only_s2)
    with pytest.raises(ValueError, match="got none of its modalities"), pytest.warns(UserWarning):
        model({"DEM": torch.zeros(1, 1, 32, 32)})
    with pytest.raises(ValueError, match=r"expects \(B, 2, H, W\)"):
        model({"S1GRD": torch.zeros(1, 3, 32, 32)})


# ------------------------------------------------------------------------------ bands, stats
def test_band_subset_copies_the_right_columns(tmp_path) -> None:
    _require_layouts()
    spec = layout("terramind_v1_small")
    state = official_file("terramind_v1_small", seed=3)
    torch.save(state, tmp_path / "small.pt")
    model = BACKBONE_REGISTRY.build("terramind_v1_small", ckpt_path=tmp_path / "small.pt", **spec["build_kwargs"])
    chosen = spec["build_kwargs"]["bands"]["S2L2A"]
    new = model.encoder_embeddings["untok_sen2l2a@224"].proj.weight.reshape(384, 256, len(chosen))
    old = state["encoder_embeddings.untok_sen2l2a@224.proj.weight"].reshape(384, 256, 12)
    for i, band in enumerate(chosen):
        assert torch.equal(new[:, :, i], old[:, :, S2L2A.index(band)]), band
    assert model.encoder_embeddings["untok_sen2l2a@224"].proj.bias is None
    x = {k: torch.randn(s) for k, s in spec["input_shapes"].items()}
    with torch.no_grad():
        assert [list(f.shape) for f in model.eval()(x)] == spec["feature_shapes"]
    assert model.out_channels == spec["out_channels"]
    # Sentinel-2 codes name the same bands; a band outside the list keeps a fresh init.
    other = BACKBONE_REGISTRY.build(
        "terramind_v1_small", ckpt_path=tmp_path / "small.pt", modalities=TWO,
        bands={"s2l2a": ["B04", "CIRRUS"], "S1GRD": ["VH", "VV"]},
    )
    w = other.encoder_embeddings["untok_sen2l2a@224"].proj.weight.reshape(384, 256, 2)
    assert torch.equal(w[:, :, 0], old[:, :, S2L2A.index("RED")])
    assert not any(torch.allclose(w[:, :, 1], old[:, :, j]) for j in range(12))
    s1 = other.encoder_embeddings["untok_sen1grd@224"].proj.weight.reshape(384, 256, 2)
    s1_old = state["encoder_embeddings.untok_sen1grd@224.proj.weight"].reshape(384, 256, 2)
    assert torch.equal(s1, s1_old.flip(-1))
    assert other.pretrained_stats["S2L2A"] is None  # CIRRUS is not an S2L2A band
    with pytest.raises(ValueError, match="bands names the modality 'DEM'"):
        BACKBONE_REGISTRY.build("terramind_v1_tiny", modalities=TWO, bands={"DEM": ["DEM"]})


def test_pretrained_stats_per_modality_in_band_order() -> None:
    model = BACKBONE_REGISTRY.build(
        "terramind_v1_tiny", modalities=["S2L2A", "S1GRD", "DEM"], bands={"S2L2A": ["RED", "BLUE"]}
    )
    stats = model.pretrained_stats
    assert list(stats) == ["S2L2A", "S1GRD", "DEM"]
    assert stats["S2L2A"] == {"bands": ["RED", "BLUE"], "mean": [1853.91, 1503.317], "std": [2134.138, 2141.107]}
    assert stats["S1GRD"] == {"bands": ["VV", "VH"], "mean": [-12.599, -20.293], "std": [5.195, 5.890]}
    assert stats["DEM"] == {"bands": ["DEM"], "mean": [670.665], "std": [951.272]}
    assert model.bands["S2L2A"] == ["RED", "BLUE"]
    full = BACKBONE_REGISTRY.build("terramind_v1_tiny", modalities=["S2L1C", "RGB"]).pretrained_stats
    assert full["S2L1C"]["bands"][9:11] == ["WATER_VAPOR", "CIRRUS"] and full["S2L1C"]["mean"][10] == 506.07
    assert full["RGB"] == {"bands": ["RED", "GREEN", "BLUE"], "mean": [87.271, 80.931, 66.667],
                           "std": [58.767, 47.663, 42.631]}


# ------------------------------------------------------------------------------ large variants
def test_base_and_large_are_swiglu_without_biases_on_meta() -> None:
    with torch.device("meta"):
        base = BACKBONE_REGISTRY.build("terramind_v1_base", modalities=TWO)
        large = BACKBONE_REGISTRY.build("terramind_v1_large", modalities=["S2L2A"])
    shapes = {k: tuple(v.shape) for k, v in base.state_dict().items() if k.startswith("encoder.0.")}
    assert shapes == {
        "encoder.0.norm1.weight": (768,), "encoder.0.norm1.bias": (768,),
        "encoder.0.attn.qkv.weight": (2304, 768), "encoder.0.attn.proj.weight": (768, 768),
        "encoder.0.norm2.weight": (768,), "encoder.0.norm2.bias": (768,),
        "encoder.0.mlp.fc1.weight": (2048, 768), "encoder.0.mlp.fc3.weight": (2048, 768),
        "encoder.0.mlp.fc2.weight": (768, 2048),
    }
    assert "encoder.0.norm1.bias" not in dict(base.named_parameters())  # a fixed zero buffer
    assert base.out_channels == [768] * 12
    assert len(large.encoder) == 24 and large.out_channels == [1024] * 24
    assert large.encoder[0].mlp.fc1.weight.shape == (2730, 1024)
    assert large.encoder_embeddings["untok_sen2l2a@224"].proj.weight.shape == (1024, 3072)


def test_swiglu_block_formula() -> None:
    torch.manual_seed(0)
    block = terramind.TerraMindBlock(8, 2, 10, swiglu=True).eval()
    x = torch.randn(1, 3, 8)
    m = block.mlp
    y = F.layer_norm(x, (8,), block.norm2.weight, None, 1e-6)
    expected_mlp = F.silu(y @ m.fc1.weight.T) * (y @ m.fc3.weight.T) @ m.fc2.weight.T
    torch.testing.assert_close(block.mlp(y), expected_mlp)


# ------------------------------------------------------------------------------ compositions
NECKS = [
    {"name": "SelectIndices", "indices": [2, 5, 8, 11]},
    {"name": "ReshapeTokensToImage", "remove_cls_token": False},
    {"name": "LearnedInterpolateToPyramidal"},
]


def test_composes_with_upernet_on_a_dict_and_on_a_bare_tensor() -> None:
    torch.manual_seed(0)
    model = MODEL_FACTORY_REGISTRY.build("EncoderDecoderFactory").build_model(
        "segmentation", "terramind_v1_tiny", "UperNetDecoder", num_classes=3, necks=NECKS,
        backbone_modalities=TWO, decoder_channels=16,
    )
    x = inputs(64, batch=2)
    features = run_necks(model.neck, model.encoder(x), (64, 64))
    out = model.head(model.decoder(features))
    out = F.interpolate(out, size=(64, 64), mode="bilinear") if out.shape[-2:] != (64, 64) else out
    assert out.shape == (2, 3, 64, 64)
    out.mean().backward()
    assert model.encoder.encoder_embeddings["untok_sen1grd@224"].proj.weight.grad.abs().sum() > 0
    assert model(x["S2L2A"]).output.shape == (2, 3, 64, 64)  # the first modality


def test_segmentation_model_on_a_dict() -> None:
    model = MODEL_FACTORY_REGISTRY.build("EncoderDecoderFactory").build_model(
        "segmentation", "terramind_v1_tiny", "UperNetDecoder", num_classes=3, necks=NECKS,
        backbone_modalities=TWO, decoder_channels=16,
    )
    x = inputs(64, batch=2)
    assert model(x).output.shape == (2, 3, 64, 64)
    odd = {key: value[..., :60, :62] for key, value in x.items()}  # padded to 64, cropped back
    assert model(odd).output.shape == (2, 3, 60, 62)


def test_example_config_parses_and_builds_terramind() -> None:
    from geofm.cli_lightning import run_lightning_cli

    path = REPO / "examples" / "terramind_upernet_segmentation.yaml"
    cli = run_lightning_cli(["-c", str(path), "--trainer.logger", "false"], run=False)
    encoder = cli.model.model.encoder
    assert isinstance(encoder, terramind.TerraMindEncoder)
    assert encoder.variant.name == "terramind_v1_base" and encoder.modalities == ("S2L2A",)
    assert encoder.pretrained_stats["S2L2A"]["mean"] == cli.datamodule.means
