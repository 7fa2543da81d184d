"""The zoo's contract, over every backbone of the catalog, and its compositions per family."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from geofm.cli import main as geofm
from geofm.models import EncoderDecoderFactory
from geofm.models.catalog import BackboneInfo, backbone_catalog, update_readme
from geofm.registry import BACKBONE_REGISTRY
from geofm.tasks import SemanticSegmentationTask

README = Path(__file__).resolve().parents[2] / "README.md"
CATALOG = backbone_catalog()


def _channels(entry: BackboneInfo) -> int:
    if entry.family == "TerraMind":
        return 12  # its default modality, S2L2A, as a bare tensor
    return 3 if entry.family == "DOFA" else len(entry.bands.split(", "))


def _build_args(entry: BackboneInfo) -> dict:
    return {"model_bands": ["BLUE", "GREEN", "RED"]} if entry.family == "DOFA" else {}


def test_catalog_covers_every_family():
    families = {e.family for e in CATALOG}
    assert {"Prithvi-EO ViT", "Prithvi Swin", "DOFA", "TerraMind", "TorchGeo ResNet", "TorchGeo ViT",
            "TorchGeo Swin V2"} <= families
    names = {e.name for e in CATALOG}
    for name in ("ssl4eos12_resnet50_sentinel2_all_moco", "ssl4eos12_vit_small_patch16_224_sentinel2_all_dino",
                 "satlas_swin_t_sentinel2_si_ms", "seco_resnet18_sentinel2_rgb_seco", "prithvi_eo_v2_300_tl"):
        assert name in names


@pytest.mark.parametrize("entry", CATALOG, ids=[e.name for e in CATALOG])
def test_every_backbone_keeps_the_contract(entry):
    """Built (on the meta device: shapes only, no memory), every feature matches out_channels."""
    with torch.device("meta"):
        backbone = BACKBONE_REGISTRY.build(f"{entry.source}_{entry.name}", **_build_args(entry)).eval()
        features = backbone(torch.empty(1, _channels(entry), 224, 224))
    assert isinstance(features, list) and features
    channels = list(backbone.out_channels)
    assert len(features) == len(channels)
    for feature, count in zip(features, channels, strict=True):
        # NCHW maps carry channels at 1; tokens (B, N, D) and channels-last maps at -1.
        assert count in (feature.shape[1], feature.shape[-1]), (tuple(feature.shape), count)
    assert isinstance(getattr(backbone, "extra_inputs", None), tuple)
    stats = getattr(backbone, "pretrained_stats", None)
    if entry.family == "TerraMind":  # per modality
        stats = stats["S2L2A"]
    assert stats is None or len(stats["mean"]) == _channels(entry) == len(stats["std"])


# One representative per family: backbone arguments and the necks that give decoders 4 maps.
_PYRAMID = [{"name": "ReshapeTokensToImage"}, {"name": "LearnedInterpolateToPyramidal"}]
FAMILIES = {
    "prithvi": ("prithvi_eo_tiny", 6, 64, {"backbone_out_indices": [0, 1, 2, 3]}, _PYRAMID),
    "dofa": ("dofa_small_patch16_224", 3, 64,
             {"backbone_model_bands": ["BLUE", "GREEN", "RED"], "backbone_out_indices": [2, 5, 8, 11]}, _PYRAMID),
    "terramind": ("terramind_v1_tiny", 12, 64, {}, [
        {"name": "SelectIndices", "indices": [2, 5, 8, 11]},
        {"name": "ReshapeTokensToImage", "remove_cls_token": False},  # TerraMind has none
        {"name": "LearnedInterpolateToPyramidal"},
    ]),
    "torchgeo_resnet": ("seco_resnet18_sentinel2_rgb_seco", 3, 64, {"backbone_out_indices": [1, 2, 3, 4]}, []),
    "torchgeo_swin": ("satlas_swin_t_sentinel2_si_ms", 9, 64, {"backbone_out_indices": [1, 3, 5, 7]},
                      [{"name": "PermuteDims", "new_order": [0, 3, 1, 2]}]),
}


@pytest.mark.parametrize("decoder", ["UperNetDecoder", "UNetDecoder", "FCNDecoder"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_families_compose_with_every_decoder(family, decoder):
    name, bands, size, args, necks = FAMILIES[family]
    decoder_args = {"decoder_channels": 32} if decoder != "UNetDecoder" else {"decoder_channels": [64, 32, 16, 8]}
    model = EncoderDecoderFactory().build_model(
        "segmentation", backbone=name, decoder=decoder, num_classes=3, necks=necks, **args, **decoder_args
    ).eval()
    with torch.no_grad():
        out = model(torch.randn(1, bands, size, size)).output
    assert out.shape == (1, 3, size, size)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_families_train_one_step(family):
    name, bands, size, args, necks = FAMILIES[family]
    task = SemanticSegmentationTask(
        model_args={"backbone": name, "decoder": "UperNetDecoder", "decoder_channels": 32,
                    "necks": necks, "num_classes": 3, **args},
        means=[0.0] * bands, stds=[1.0] * bands,
    )
    optimizer = torch.optim.SGD(task.parameters(), lr=0.1)
    before = [p.detach().clone() for p in task.model.encoder.parameters()]
    batch = {"image": torch.randn(2, bands, size, size), "mask": torch.randint(0, 3, (2, size, size))}
    loss = task.training_step(batch, 0)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, task.model.encoder.parameters()))


def test_readme_zoo_table_is_the_registry():
    assert update_readme(README, check=True), "run: python -m geofm.models.catalog README.md"


def test_registry_list_shows_source_bands_and_pretraining(capsys):
    assert geofm(["registry", "list", "backbone", "--filter", "ssl4eos12_resnet50_sentinel2_all_moco"]) == 0
    out = capsys.readouterr().out
    assert "torchgeo_ssl4eos12_resnet50_sentinel2_all_moco" in out
    assert "bands: COASTAL_AEROSOL, BLUE" in out and "SSL4EO-S12" in out and "SENTINEL2_ALL_MOCO" in out
