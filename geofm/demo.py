"""The README's first command (``make demo``).

Until the training command lands, the demo builds the example model from the registries and
prints a summary of it.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "demo_model.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--config", type=Path, default=EXAMPLE)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import torch
    import yaml

    from geofm.registry import BACKBONE_REGISTRY, DECODER_REGISTRY

    cfg = yaml.safe_load(args.config.read_text())
    backbone = BACKBONE_REGISTRY.build(cfg["backbone"])
    decoder = DECODER_REGISTRY.build(cfg["decoder"], backbone.out_channels)
    x = torch.randn(1, cfg["backbone"].get("in_chans", 3), 224, 224)
    with torch.no_grad():
        features = backbone(x)
        out = decoder(features)
    n_params = sum(p.numel() for m in (backbone, decoder) for p in m.parameters())
    print(f"config: {args.config}")
    print(f"backbone {cfg['backbone']['type']}: out_channels {backbone.out_channels}")
    print(f"decoder {cfg['decoder']['type']}: out_channels {decoder.out_channels}")
    print(f"input {tuple(x.shape)} -> decoder output {tuple(out.shape)}")
    print(f"parameters: {n_params:,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
