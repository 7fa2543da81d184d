"""Forward throughput of ``prithvi_eo_v1_100`` with fused and with unfused attention.

Batch of 4 images, 6 bands x 224 x 224, eval mode, no gradients, random weights (throughput does
not depend on them). Fused attention is ``F.scaled_dot_product_attention``; unfused computes
``softmax(Q K^T / sqrt(d)) V`` explicitly. Run with ``make bench``; prints figures, asserts
nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from geofm.registry import BACKBONE_REGISTRY


def time_modes(
    model: torch.nn.Module, x: torch.Tensor, warmup: int, runs: int
) -> dict[bool, list[float]]:
    """Wall time (s) of each timed forward pass, by ``fused_attn`` setting.

    The two settings alternate run by run, so that a change in machine load affects both alike.
    """

    def sync() -> None:
        if x.is_cuda:  # kernels run asynchronously: wait for them before reading the clock
            torch.cuda.synchronize(x.device)

    times: dict[bool, list[float]] = {True: [], False: []}
    with torch.inference_mode():
        for fused in (True, False):
            model.fused_attn = fused
            for _ in range(warmup):
                model(x)
        for _ in range(runs):
            for fused in (True, False):
                model.fused_attn = fused
                sync()
                start = time.perf_counter()
                model(x)
                sync()
                times[fused].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = BACKBONE_REGISTRY.build("prithvi_eo_v1_100", img_size=args.size).eval().to(args.device)
    x = torch.randn(args.batch, 6, args.size, args.size, device=args.device)
    print(
        f"prithvi_eo_v1_100, input {tuple(x.shape)}, {args.device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {args.warmup} warm-up + {args.runs} timed runs"
    )
    times = time_modes(model, x, args.warmup, args.runs)
    medians = {fused: statistics.median(t) for fused, t in times.items()}
    for fused, label in ((True, "fused (SDPA)"), (False, "unfused     ")):
        print(
            f"{label}  {medians[fused] * 1000:9.1f} ms/batch (min {min(times[fused]) * 1000:.1f})  "
            f"{args.batch / medians[fused]:8.2f} images/s"
        )
    print(f"fused speed-up: {medians[False] / medians[True]:.2f}x")


if __name__ == "__main__":
    main()
