"""Evaluation of a sampler: generate -> decode -> uint8 -> features -> metrics, plus timing and FLOPs (Table 1).

Samples follow the ADM/DiT protocol: class labels spread evenly over the classes, one seed per sample, uint8
conversion as DiT's sample_ddp.py (see :func:`msf.metrics.to_uint8`). Every figure is returned with the device name
and dtype it was measured with.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from msf.metrics import class_labels_for, to_uint8
from msf.pipeline import MSFModel, sample

SEED_STRIDE = 1_000_000  # sample j of evaluation seed s uses per-sample seed s * SEED_STRIDE + j


def sample_seeds(seed: int, n: int) -> list[int]:
    """Per-sample seeds of one evaluation run (harness): results do not depend on batch size or device count."""
    if n > SEED_STRIDE:
        raise ValueError(f"at most {SEED_STRIDE} samples per evaluation seed, got {n}")
    return [seed * SEED_STRIDE + j for j in range(n)]


@torch.no_grad()
def generate(
    msf: MSFModel,
    decode: Callable[[Tensor], Tensor],
    labels: Tensor,
    seeds: Sequence[int],
    steps: Sequence[int],
    cfg: Sequence[float],
    solver: str,
    device: torch.device,
    batch_size: int,
    dtype: torch.dtype = torch.float32,
    log: Callable[[str], None] = print,
) -> Tensor:
    """Algorithm 3 then line 14 (decode) in batches: uint8 images [N, 3, H, W].

    Args:
        msf: the stage models (on ``device``, eval mode) and their factorization.
        decode: the autoencoder's decoder, latent -> image in [-1, 1].
        labels: [N] class labels; seeds: N per-sample seeds.
        steps, cfg, solver: per-scale sampling settings (Table 1: 100/50 steps, CFG 1.4/1.0).
        device: where sampling runs; batch_size: samples per batch (does not change the result).
        dtype: sampling dtype; bf16 runs under autocast on CUDA with a float32 ODE state.
    """
    out = []
    t0 = time.time()
    for start in range(0, len(labels), batch_size):
        y = labels[start : start + batch_size].to(device)
        s = seeds[start : start + batch_size]
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32 and device.type == "cuda"):
            f_hat = sample(msf, y, s, steps, cfg, solver, device)  # [B, C, h_N, h_N]
            images = decode(f_hat.float())  # [B, 3, H, W] in [-1, 1]
        out.append(to_uint8(images.float()).cpu())
        done = start + len(y)
        log(f"sampled {done}/{len(labels)} ({done / max(time.time() - t0, 1e-9):.1f} img/s)")
    return torch.cat(out)


def device_description(device: torch.device) -> str:
    """A readable device name recorded beside every timing (harness)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def median_seconds(fn: Callable[[], Any], device: torch.device, repeats: int = 3, warmup: int = 1) -> float:
    """Median wall time of ``fn`` over ``repeats`` after ``warmup`` calls, CUDA synchronised (harness)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def time_sampling(
    msf: MSFModel,
    decode: Callable[[Tensor], Tensor],
    steps: Sequence[int],
    cfg: Sequence[float],
    solver: str,
    device: torch.device,
    dtype: torch.dtype,
    batch: int = 64,
    repeats: int = 3,
) -> dict[str, Any]:
    """Table 1's time column: seconds to sample and decode one batch of ``batch`` images (median of repeats)."""
    labels = class_labels_for(batch, msf.num_classes)
    seeds = list(range(batch))

    def run() -> None:
        generate(msf, decode, labels, seeds, steps, cfg, solver, device, batch, dtype, log=lambda _: None)

    seconds = median_seconds(run, device, repeats=repeats, warmup=1)
    return {"sample_time_per_64_s": seconds * 64 / batch, "timing_batch": batch, "timing_repeats": repeats,
            "device": device_description(device), "dtype": str(dtype).replace("torch.", "")}


def sampling_gflops(forward_gflops: Sequence[float], steps: Sequence[int], cfg: Sequence[float], solver: str) -> float:
    """GFLOPs per sampled image: sum over scales of forward GFLOPs x steps x (2 with CFG) x (2 for Heun)."""
    evals = 2 if solver == "heun" else 1
    return sum(f * n * (1 if w == 1.0 else 2) * evals for f, n, w in zip(forward_gflops, steps, cfg, strict=True))
