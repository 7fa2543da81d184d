"""The timm zoo: every timm model as a features-only backbone, behind the ``timm_`` prefix."""

from __future__ import annotations

import pytest
import torch

from geofm.models.zoo.timm import TimmBackbone, TimmBackboneSource
from geofm.registry import BACKBONE_REGISTRY


def test_timm_source_membership_is_cheap_and_builds_features():
    assert BACKBONE_REGISTRY.keys()[:2] == ["geofm", "timm"]
    assert "resnet50" in BACKBONE_REGISTRY
    assert "timm_resnet50" in BACKBONE_REGISTRY
    assert "timm_not_a_model" not in BACKBONE_REGISTRY
    fresh = type(BACKBONE_REGISTRY["timm"])()
    assert all(name in fresh for name in ["resnet50", "vit_small_patch16_224"] * 100)
    assert fresh._name_cache is None  # membership never listed all of timm
    backbone = BACKBONE_REGISTRY.build("timm_resnet18", pretrained=False, in_chans=6)
    features = backbone(torch.randn(2, 6, 64, 64))
    assert isinstance(features, list)
    assert [f.shape[1] for f in features] == backbone.out_channels == [64, 64, 128, 256, 512]
    assert [f.shape[-1] for f in features] == [32, 16, 8, 4, 2]


def test_timm_registration_refused():
    with pytest.raises(TypeError):
        BACKBONE_REGISTRY["timm"].register(lambda: None)


def test_source_is_the_zoo_modules():
    assert isinstance(BACKBONE_REGISTRY["timm"], TimmBackboneSource)
    assert isinstance(BACKBONE_REGISTRY["timm"].get("resnet18")(pretrained=False), TimmBackbone)


def test_missing_checkpoint_is_named():
    with pytest.raises(FileNotFoundError, match="ckpt_path='nowhere.pth'"):
        TimmBackbone("resnet18", ckpt_path="nowhere.pth")
