"""The mmseg source and decoder adapter, with a stand-in ``mmseg`` package.

mmsegmentation needs mmcv compiled for this torch; the stand-in records what geofm asks of
mmseg's registry, which is the adapter's whole job.
"""

from __future__ import annotations

import sys
import types

import pytest
import torch
from torch import nn

from geofm.models.zoo.mmseg import MmsegDecoderSource
from geofm.registry import DECODER_REGISTRY


class FakeHead(nn.Module):
    def __init__(self, in_channels, in_index, channels, num_classes, **kwargs):
        super().__init__()
        self.config = dict(in_channels=in_channels, in_index=in_index, channels=channels, **kwargs)
        last = in_channels[-1] if isinstance(in_channels, list) else in_channels
        self.conv = nn.Conv2d(last, num_classes, 1)

    def forward(self, inputs):
        return self.conv(inputs[-1])


@pytest.fixture
def fake_mmseg(monkeypatch):
    built = []

    class Models:
        module_dict = {"UPerHead": FakeHead, "FCNHead": FakeHead, "BaseModule": object}

        @staticmethod
        def build(config):
            config = dict(config)
            cls = Models.module_dict[config.pop("type")]
            built.append(config)
            return cls(**config)

    mmseg = types.ModuleType("mmseg")
    registry = types.ModuleType("mmseg.registry")
    registry.MODELS = Models
    utils = types.ModuleType("mmseg.utils")
    utils.register_all_modules = lambda init_default_scope=False: None
    for name, module in {"mmseg": mmseg, "mmseg.registry": registry, "mmseg.utils": utils}.items():
        monkeypatch.setitem(sys.modules, name, module)
    return built


def test_source_lists_heads_and_builds(fake_mmseg):
    source = MmsegDecoderSource()
    assert sorted(source) == ["FCNHead", "UPerHead"]
    assert source.includes_head
    decoder = source.build("UPerHead", [8, 16], num_classes=3, channels=32, pool_scales=(1, 2))
    assert fake_mmseg[-1]["in_channels"] == [8, 16] and fake_mmseg[-1]["in_index"] == [0, 1]
    assert fake_mmseg[-1]["pool_scales"] == (1, 2)
    out = decoder([torch.randn(2, 8, 16, 16), torch.randn(2, 16, 8, 8)])
    assert out.shape == (2, 3, 8, 8) and decoder.out_channels == 3


def test_single_index_head(fake_mmseg):
    decoder = MmsegDecoderSource().build("FCNHead", [8, 16], num_classes=2, in_index=-1)
    assert fake_mmseg[-1]["in_channels"] == 16 and "input_transform" not in fake_mmseg[-1]
    assert decoder([torch.randn(1, 8, 8, 8), torch.randn(1, 16, 4, 4)]).shape == (1, 2, 4, 4)


def test_mmseg_missing_gives_install_hint():
    if "mmseg" in DECODER_REGISTRY.keys():
        pytest.skip("mmsegmentation is installed")
    with pytest.raises(ImportError, match=r"pip install 'geofm\[mmseg\]'"):
        DECODER_REGISTRY.build("mmseg_UPerHead", [64])
    assert not any(name.startswith("mmseg_") for name in DECODER_REGISTRY)
    assert "mmseg_UPerHead" not in DECODER_REGISTRY  # membership answers, build explains
