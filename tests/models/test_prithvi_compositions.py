"""Prithvi backbones inside factory-built models: shapes, multi-temporal input, training."""

from __future__ import annotations

import pytest
import torch

from geofm.registry import MODEL_FACTORY_REGISTRY

def build(task, frames=1, decoder="UperNetDecoder", necks=None, **kwargs):
    necks = necks or [
        {"name": "SelectIndices", "indices": [0, 1, 2, 3]},
        {"name": "ReshapeTokensToImage", "effective_time_dim": frames},
        {"name": "InterpolateToPyramidal"},
    ]
    return MODEL_FACTORY_REGISTRY.build("EncoderDecoderFactory").build_model(
        task,
        "prithvi_eo_tiny",
        decoder,
        num_classes=None if task == "regression" else 3,
        necks=necks,
        backbone_num_frames=frames,
        **kwargs,
    )


@pytest.mark.parametrize(
    ("task", "shape"),
    [("segmentation", (1, 3, 224, 224)), ("regression", (1, 224, 224)), ("classification", (1, 3))],
)
@pytest.mark.parametrize("input_shape", [(1, 6, 224, 224), (1, 6, 230, 230), (1, 6, 3, 224, 224)])
def test_shape_contract(task, shape, input_shape):
    frames = input_shape[2] if len(input_shape) == 5 else 1
    kwargs = {"decoder_channels": 32}
    necks = None
    if task == "classification":
        necks = [{"name": "AggregateTokens", "indices": [-1]}]
        kwargs = {}
    model = build(task, frames, decoder="IdentityDecoder" if task == "classification" else "UperNetDecoder", necks=necks, **kwargs).eval()
    with torch.no_grad():
        out = model(torch.randn(*input_shape)).output
    size = input_shape[-1]
    assert out.shape == tuple(size if d == 224 else d for d in shape)


def test_multitemporal_with_coordinates_reaches_backbone():
    model = MODEL_FACTORY_REGISTRY.build("EncoderDecoderFactory").build_model(
        "segmentation",
        "prithvi_eo_v2_tiny_tl",
        "FCNDecoder",
        num_classes=2,
        necks=[{"name": "SelectIndices", "indices": [-1]}, {"name": "ReshapeTokensToImage", "effective_time_dim": 2}],
        backbone_num_frames=2,
        backbone_img_size=64,
        decoder_channels=16,
    ).eval()
    x = torch.randn(2, 6, 2, 64, 64)
    temporal = torch.tensor([[[2020.0, 100.0], [2020.0, 200.0]]] * 2)
    location = torch.tensor([[40.0, -3.0]] * 2)
    with torch.no_grad():
        plain = model(x).output
        coded = model(x, temporal_coords=temporal, location_coords=location).output
    assert plain.shape == coded.shape == (2, 2, 64, 64)
    assert not torch.allclose(plain, coded)  # the coordinates changed the features


@pytest.mark.parametrize(
    ("backbone", "frames"), [("prithvi_eo_tiny", 1), ("prithvi_eo_tiny", 2), ("prithvi_swin_B", 1)]
)
def test_trains_a_few_steps(backbone, frames):
    torch.manual_seed(0)
    factory = MODEL_FACTORY_REGISTRY.build("EncoderDecoderFactory")
    if backbone == "prithvi_eo_tiny":
        model = build("segmentation", frames, decoder_channels=16, backbone_img_size=64)
    else:
        # Swin-B's layout with reduced depth keeps the test fast.
        model = factory.build_model(
            "segmentation", backbone, "UperNetDecoder", num_classes=2,
            backbone_depths=(1, 1, 1, 1), backbone_embed_dim=32, backbone_num_heads=(1, 2, 4, 8),
            backbone_img_size=64, decoder_channels=16,
        )
    shape = (4, 6, frames, 64, 64) if frames > 1 else (4, 6, 64, 64)
    x = torch.randn(*shape)
    y = ((x[:, 3, 0] if frames > 1 else x[:, 3]) > 0).long()
    optim = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        out = model(x).output
        loss = torch.nn.functional.cross_entropy(out, y)
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
