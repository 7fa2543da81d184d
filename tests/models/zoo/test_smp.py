"""The smp zoo: segmentation_models_pytorch decoders behind the ``smp_`` prefix."""

from __future__ import annotations

import pytest
import torch

from geofm.models.zoo.smp import SmpDecoder, SmpDecoderSource
from geofm.registry import DECODER_REGISTRY


@pytest.mark.parametrize("arch", ["Unet", "FPN", "DeepLabV3Plus", "PSPNet", "UnetPlusPlus"])
def test_smp_decoders(arch):
    channels = [64, 64, 128, 256, 512]
    decoder = DECODER_REGISTRY.build(f"smp_{arch}", channels)
    features = [torch.randn(2, c, 64 // 2**i, 64 // 2**i) for i, c in enumerate(channels)]
    out = decoder(features)
    assert out.shape[:2] == (2, decoder.out_channels)


def test_smp_decoder_arguments_reach_smp():
    decoder = DECODER_REGISTRY.build(
        "smp_Unet", [16, 32, 64], decoder_channels=[48, 24, 12]
    )
    assert decoder.out_channels == 12
    out = decoder([torch.randn(2, c, 32 // 2**i, 32 // 2**i) for i, c in enumerate([16, 32, 64])])
    assert out.shape == (2, 12, 64, 64)
    assert set(DECODER_REGISTRY["smp"]) >= {"Unet", "FPN", "DeepLabV3Plus", "PSPNet"}


def test_smp_decoder_refuses_what_it_cannot_honour():
    with pytest.raises(ValueError, match="builds its own encoder"):
        SmpDecoder([64, 128], arch="DPT")
    with pytest.raises(ValueError, match="classes"):
        DECODER_REGISTRY.build("smp_Unet", [16, 32, 64], classes=3)


def test_search_order_geofm_then_smp_then_mmseg():
    assert DECODER_REGISTRY.keys()[:2] == ["geofm", "smp"]
    assert isinstance(DECODER_REGISTRY["smp"], SmpDecoderSource)
    assert "mmseg" not in DECODER_REGISTRY.keys()[:2]
