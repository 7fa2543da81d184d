"""Build time and CPU forward time of representative models (batch 4, 224 x 224).

Run with ``make bench``; prints figures, asserts nothing.
"""

from __future__ import annotations

import time

import torch

from geofm.registry import MODEL_FACTORY_REGISTRY

MODELS = {
    "resnet18 + UNetDecoder": dict(
        backbone="timm_resnet18", decoder="UNetDecoder", backbone_in_chans=6,
        decoder_channels=[256, 128, 64, 32, 16],
    ),
    "resnet50 + smp_Unet": dict(backbone="timm_resnet50", decoder="smp_Unet", backbone_in_chans=6),
    "ViT-S/16 + UperNetDecoder": dict(
        backbone="timm_vit_small_patch16_224",
        decoder="UperNetDecoder",
        backbone_in_chans=6,
        backbone_out_indices=[2, 5, 8, 11],
        necks=[{"name": "InterpolateToPyramidal"}],
    ),
}


def main(batch: int = 4, size: int = 224, repeats: int = 3) -> None:
    torch.manual_seed(0)
    factory = MODEL_FACTORY_REGISTRY.build("EncoderDecoderFactory")
    x = torch.randn(batch, 6, size, size)
    print(f"threads: {torch.get_num_threads()}, input {tuple(x.shape)}")
    for name, args in MODELS.items():
        start = time.perf_counter()
        model = factory.build_model("segmentation", num_classes=2, **args).eval()
        build_s = time.perf_counter() - start
        params = sum(p.numel() for p in model.parameters())
        with torch.inference_mode():
            model(x)  # warm-up
            start = time.perf_counter()
            for _ in range(repeats):
                model(x)
            forward_s = (time.perf_counter() - start) / repeats
        print(
            f"{name:28s} params {params / 1e6:6.1f} M  build {build_s * 1000:7.0f} ms  "
            f"forward {forward_s * 1000:7.0f} ms/batch ({batch / forward_s:5.1f} img/s)"
        )


if __name__ == "__main__":
    main()
