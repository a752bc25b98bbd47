"""CPU forward time of msf/dit.py vs diffusers' DiTTransformer2DModel at one small size.

    .venv/bin/python benchmarks/dit_forward.py [--threads 1] [--repeats 10]

DiT-S/2-like: depth 4, width 384, 6 heads, patch 2, 16x16x4 latents (64 tokens), batch 8, float32, no grad;
median of ``repeats`` calls after two warm-up calls, alternating the two models call by call.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from diffusers import DiTTransformer2DModel

from msf.dit import DiT

DEPTH, WIDTH, HEADS, PATCH, SIZE, CHANNELS, BATCH = 4, 384, 6, 2, 16, 4, 8


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float]]:
    """Median (wall, process CPU) seconds per call; calls alternate between models so load hits both."""
    for fn in fns.values():
        fn(), fn()  # warm-up
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {
        name: (statistics.median(w for w, _ in ts), statistics.median(c for _, c in ts)) for name, ts in times.items()
    }


def main() -> None:
    """Time both models on the same inputs and print a two-row markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ours = DiT(SIZE, PATCH, CHANNELS, WIDTH, DEPTH, HEADS, generator=torch.Generator().manual_seed(0)).eval()
    theirs = DiTTransformer2DModel(HEADS, WIDTH // HEADS, CHANNELS, 2 * CHANNELS, DEPTH, sample_size=SIZE)
    theirs.eval()  # type: ignore[attr-defined]  # diffusers' ModelMixin is an nn.Module
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, CHANNELS, SIZE, SIZE, generator=g)
    t, y = torch.randint(0, 1000, (BATCH,), generator=g), torch.randint(0, 1000, (BATCH,), generator=g)
    fns = {
        "msf.dit.DiT": lambda: ours(x, t, y),
        "diffusers DiTTransformer2DModel": lambda: theirs(x, timestep=t, class_labels=y),
    }
    with torch.no_grad():
        medians = interleaved_medians(fns, args.repeats)
    print(f"| model (batch {BATCH}, {args.threads} thread(s)) | median wall ms | median CPU ms |\n|---|---:|---:|")
    for name, (wall, cpu) in medians.items():
        print(f"| {name} | {1e3 * wall:.1f} | {1e3 * cpu:.1f} |")


if __name__ == "__main__":
    main()
