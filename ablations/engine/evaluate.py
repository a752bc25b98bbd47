"""Evaluation of a sampler: generate -> decode -> uint8 -> features -> metrics, plus timing and FLOPs (Table 1).

Samples follow the ADM/DiT protocol: class labels spread evenly over the classes, one seed per sample, uint8
conversion of :func:`ablations.engine.images.to_uint8`. Every figure is returned with the device name
and dtype it was measured with.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ablations.engine.images import to_uint8
from ablations.engine.metrics import class_labels_for
from ablations.engine.speed import device_description, median_seconds
from msf.pipeline import MSFModel, sample

COMPILE_MODES = ("none", "default", "max-autotune", "reduce-overhead")  # reduce-overhead: CUDA graphs

class ClonedOutputs(nn.Module):
    """A network whose outputs are copied out (harness): a CUDA graph replay rewrites the previous replay's output
    buffer, and Heun's corrector (Eq. 6) still needs the predictor's velocity after the next call."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, *args: object, **kwargs: object) -> Tensor:
        return self.net(*args, **kwargs).clone()


def compiled(net: nn.Module, mode: str, device: torch.device) -> nn.Module:
    """torch.compile a network for sampling's fixed shapes; "reduce-overhead" also captures CUDA graphs (harness)."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {mode!r}; expected one of {', '.join(COMPILE_MODES)}")
    if mode == "reduce-overhead" and device.type != "cuda":
        raise ValueError(f"compile mode reduce-overhead (CUDA graphs) needs a CUDA device, got {device}")
    if mode == "none":
        return net
    fast: nn.Module = torch.compile(net, mode=mode)  # type: ignore[assignment]
    return ClonedOutputs(fast) if mode == "reduce-overhead" else fast


SEED_STRIDE = 1_000_000  # sample j of evaluation seed s uses per-sample seed s * SEED_STRIDE + j


def sample_seeds(seed: int, n: int) -> list[int]:
    """Per-sample seeds of one evaluation run (harness): results do not depend on batch size or device count."""
    if n > SEED_STRIDE:
        raise ValueError(f"at most {SEED_STRIDE} samples per evaluation seed, got {n}")
    return [seed * SEED_STRIDE + j for j in range(n)]


LatentSampler = Callable[[Tensor, Sequence[int]], Tensor]  # (labels [B], seeds) -> latents [B, C, h, w]


def msf_sampler(msf: MSFModel, steps: Sequence[int], cfg: Sequence[float], solver: str, device: torch.device):
    """Algorithm 3 as a latent sampler (labels, seeds) -> f_hat, for :func:`generate` and :func:`time_sampling`."""
    return lambda y, seeds: sample(msf, y, seeds, steps, cfg, solver, device)


@torch.no_grad()
def generate(
    sample_latents: LatentSampler,
    decode: Callable[[Tensor], Tensor],
    labels: Tensor,
    seeds: Sequence[int],
    device: torch.device,
    batch_size: int,
    dtype: torch.dtype = torch.float32,
    log: Callable[[str], None] = print,
) -> Tensor:
    """Sample latents then decode (Algorithm 3 line 14) in batches: uint8 images [N, 3, H, W].

    Args:
        sample_latents: (labels on ``device``, per-sample seeds) -> latents, e.g. :func:`msf_sampler`.
        decode: the autoencoder's decoder, latent -> image in [-1, 1].
        labels: [N] class labels; seeds: N per-sample seeds.
        device: where sampling runs; batch_size: samples per batch (does not change the result).
        dtype: bf16 runs the networks under autocast, on CUDA or CPU (ODE state and decoding stay float32).
    """
    out = []
    t0 = time.time()
    for start in range(0, len(labels), batch_size):
        y = labels[start : start + batch_size].to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            latents = sample_latents(y, seeds[start : start + batch_size])  # [B, C, h_N, h_N]
        images = decode(latents.float())  # [B, 3, H, W] in [-1, 1]
        out.append(to_uint8(images.float()).cpu())
        done = start + len(y)
        log(f"sampled {done}/{len(labels)} ({done / max(time.time() - t0, 1e-9):.1f} img/s)")
    return torch.cat(out)


def time_sampling(
    sample_latents: LatentSampler,
    decode: Callable[[Tensor], Tensor],
    num_classes: int,
    device: torch.device,
    dtype: torch.dtype,
    batch: int = 64,
    repeats: int = 3,
) -> dict[str, Any]:
    """Table 1's time column: seconds to sample and decode 64 images (median of repeats of one batch, scaled)."""
    labels = class_labels_for(batch, num_classes)
    seeds = list(range(batch))

    def run() -> None:
        generate(sample_latents, decode, labels, seeds, device, batch, dtype, log=lambda _: None)

    seconds = median_seconds(run, device, repeats=repeats, warmup=1)
    return {"sample_time_per_64_s": seconds * 64 / batch, "timing_batch": batch, "timing_repeats": repeats,
            "device": device_description(device), "dtype": str(dtype).replace("torch.", "")}


def sampling_gflops(forward_gflops: Sequence[float], steps: Sequence[int], cfg: Sequence[float], solver: str) -> float:
    """GFLOPs per sampled image: sum over scales of forward GFLOPs x steps x (2 with CFG) x (2 for Heun)."""
    evals = 2 if solver == "heun" else 1
    return sum(f * n * (1 if w == 1.0 else 2) * evals for f, n, w in zip(forward_gflops, steps, cfg, strict=True))
