"""Import cost of geofm against torch, and the cost of registry membership tests.

Run with ``make bench``; prints figures, asserts nothing.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time


def time_command(code: str, repeats: int = 5) -> float:
    """Median wall time (s) of ``python -c code`` in a fresh interpreter."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    base = time_command("pass")
    geofm_s = time_command("import geofm")
    torch_s = time_command("import torch")
    print(f"python -c 'pass'          {base * 1000:8.1f} ms")
    print(f"python -c 'import geofm'  {geofm_s * 1000:8.1f} ms")
    print(f"python -c 'import torch'  {torch_s * 1000:8.1f} ms")

    from geofm import BACKBONE_REGISTRY

    "resnet50" in BACKBONE_REGISTRY  # first lookup imports timm and our backbones
    names = ["resnet50", "timm_resnet18", "prithvi_eo_v2_300", "not_a_model"]
    n = 10_000
    start = time.perf_counter()
    for i in range(n):
        names[i % len(names)] in BACKBONE_REGISTRY
    elapsed = time.perf_counter() - start
    print(f"{n} membership tests on BACKBONE_REGISTRY: {elapsed * 1000:.1f} ms "
          f"({elapsed / n * 1e6:.2f} us each)")


if __name__ == "__main__":
    main()
