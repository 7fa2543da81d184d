"""ObjectDetectionModelFactory: every framework on a CNN and on a ViT (through necks) trains."""

from __future__ import annotations

import pytest
import torch

from geofm.models.factories.object_detection import FRAMEWORKS, ObjectDetectionModel
from geofm.registry import MODEL_FACTORY_REGISTRY

SIZE = 64
VIT_NECKS = [
    {"name": "SelectIndices", "indices": [0, 1, 2, 3]},
    {"name": "ReshapeTokensToImage"},
    {"name": "LearnedInterpolateToPyramidal"},
]
BACKBONES = {
    "timm_resnet18": {"necks": [{"name": "SelectIndices", "indices": [1, 2, 3, 4]}]},
    "prithvi_eo_tiny": {"necks": VIT_NECKS, "backbone_num_frames": 1, "backbone_bands": ["BLUE", "GREEN", "RED", "NIR_NARROW"]},
}


def _targets(masks: bool) -> list[dict[str, torch.Tensor]]:
    boxes = torch.tensor([[6.0, 8.0, 26.0, 24.0], [34.0, 30.0, 58.0, 54.0]])
    target = {"boxes": boxes, "labels": torch.tensor([0, 1])}
    if masks:
        m = torch.zeros(2, SIZE, SIZE, dtype=torch.uint8)
        for i, (x1, y1, x2, y2) in enumerate(boxes.long().tolist()):
            m[i, y1:y2, x1:x2] = 1
        target["masks"] = m
    return [target]


def build(backbone: str, framework: str, **kwargs) -> ObjectDetectionModel:
    factory = MODEL_FACTORY_REGISTRY.build("ObjectDetectionModelFactory")
    # A narrow FPN keeps the R-CNN box head (fpn channels x 7 x 7 -> 1024) small.
    args = {"backbone_in_chans": 4, "fpn_out_channels": 64, **BACKBONES[backbone], **kwargs}
    return factory.build_model("object_detection", backbone=backbone, framework=framework, num_classes=2, **args)


@pytest.mark.parametrize("backbone", list(BACKBONES))
@pytest.mark.parametrize("framework", list(FRAMEWORKS))
def test_each_framework_trains_a_step(backbone, framework):
    torch.manual_seed(0)
    model = build(backbone, framework)
    image = torch.randn(1, 4, SIZE, SIZE)
    model.train()
    losses = model(image, _targets(framework == "mask-rcnn"))
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    if framework == "mask-rcnn":
        assert "loss_mask" in losses
    # One step changes the backbone's and the heads' weights: gradients reach both.
    watched = {
        "encoder": next(p for p in model.encoder.parameters() if p.requires_grad),
        "head": next(p for p in model.head.parameters() if p.requires_grad),
    }
    before = {k: p.detach().clone() for k, p in watched.items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss.backward()
    optimizer.step()
    for name, param in watched.items():
        assert not torch.equal(before[name], param.detach()), f"the {name} did not change"
    model.eval()
    with torch.no_grad():
        (out,) = model(image)
    assert out["boxes"].shape[1:] == (4,) and out["scores"].shape == out["labels"].shape
    assert out["labels"].numel() == 0 or 0 <= int(out["labels"].min()) <= int(out["labels"].max()) < 2


def test_mask_rcnn_returns_masks_at_the_input_size_with_0_based_labels():
    torch.manual_seed(0)
    model = build("timm_resnet18", "mask-rcnn", framework_box_score_thresh=0.0)
    model.eval()
    with torch.no_grad():
        (out,) = model(torch.randn(1, 4, SIZE, SIZE))
    assert out["masks"].shape == (len(out["boxes"]), SIZE, SIZE)
    assert len(out["boxes"]) > 0  # no score threshold: the untrained model proposes boxes
    # torchvision's labels are 1-based (0 = background); the model gives 0-based classes.
    assert set(out["labels"].tolist()) <= {0, 1}


def test_labels_are_shifted_for_frameworks_with_a_background_class(monkeypatch):
    model = build("timm_resnet18", "faster-rcnn")
    seen = {}

    def capture(images, targets=None):
        seen["labels"] = targets[0]["labels"].tolist()
        return {"loss": torch.zeros(())}

    monkeypatch.setattr(model.detector, "forward", capture)
    model.train()
    model(torch.randn(1, 4, SIZE, SIZE), _targets(False))
    assert seen["labels"] == [1, 2]
    retina = build("timm_resnet18", "retinanet")
    assert retina.label_offset == 0 and retina.detector.head.classification_head.num_classes == 2


def test_no_resize_and_no_normalisation():
    """Boxes stay in the input's pixel grid: the transform neither resizes nor normalises."""
    model = build("timm_resnet18", "faster-rcnn")
    image = torch.randn(4, 50, 70) * 100
    batched, _ = model.detector.transform([image])
    assert batched.image_sizes == [(50, 70)]
    assert torch.equal(batched.tensors[0, :, :50, :70], image)
    assert batched.tensors.shape[-2:] == (64, 96)  # padded to a multiple of 32


def test_freezing_parts():
    model = build("timm_resnet18", "retinanet")
    model.freeze_encoder()
    model.freeze_decoder()
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert not any(p.requires_grad for p in model.decoder.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    model.train()
    assert not any(m.training for m in model.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_bad_arguments_are_named():
    factory = MODEL_FACTORY_REGISTRY.build("ObjectDetectionModelFactory")
    with pytest.raises(ValueError, match="framework='yolo'"):
        factory.build_model("object_detection", backbone="timm_resnet18", framework="yolo", num_classes=2)
    with pytest.raises(ValueError, match=r"does not use: \['decoder'\]"):
        factory.build_model(
            "object_detection", backbone="timm_resnet18", framework="fcos", num_classes=2, decoder="x"
        )
    with pytest.raises(ValueError, match="anchor_sizes has 2 levels"):
        build("timm_resnet18", "faster-rcnn", anchor_sizes=[[16], [32]])
    with pytest.raises(ValueError, match="in_channels=3 and backbone_in_chans=4"):
        build("timm_resnet18", "fcos", in_channels=3)
    with pytest.raises(ValueError, match="num_classes >= 1"):
        factory.build_model("object_detection", backbone="timm_resnet18", framework="fcos")


def test_terratorch_config_keys(caplog):
    """TerraTorch's detection configs end the necks with FeaturePyramidNetworkNeck and set
    framework_min_size/max_size, which its transform ignores: the same model builds here."""
    with caplog.at_level("WARNING", logger="geofm.models.factories.object_detection"):
        model = build(
            "timm_resnet18",
            "faster-rcnn",
            necks=[{"name": "SelectIndices", "indices": [1, 2, 3, 4]}, {"name": "FeaturePyramidNetworkNeck", "out_channel": 32}],
            fpn_out_channels=256,
            framework_min_size=896,
            framework_max_size=896,
        )
    assert model.decoder.layer_blocks[0][0].out_channels == 32 and len(model.neck) == 1
    assert "framework_min_size=896 has no effect" in caplog.text
    image = torch.randn(4, 40, 40)
    assert model.detector.transform([image])[0].image_sizes == [(40, 40)]


def test_fpn_neck_that_would_return_a_list_is_refused():
    necks = [
        {"name": "SelectIndices", "indices": [1, 2, 3, 4]},
        {"name": "FeaturePyramidNetworkNeck", "output_ordered_dict": False},
    ]
    with pytest.raises(ValueError, match=r"output_ordered_dict=False"):
        build("timm_resnet18", "faster-rcnn", necks=necks)
    # True, TerraTorch's default, is what the factory's FPN does: accepted.
    necks[-1]["output_ordered_dict"] = True
    assert len(build("timm_resnet18", "faster-rcnn", necks=necks).neck) == 1
