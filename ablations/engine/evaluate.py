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
from msf.factorize import Up
from msf.pipeline import MSFModel, sample, sample_scales

COMPILE_MODES = ("none", "default", "max-autotune", "reduce-overhead")  # reduce-overhead: CUDA graphs

class ClonedOutputs(nn.Module):
    """A network whose outputs are copied out: a CUDA graph replay rewrites the previous replay's output
    buffer, and Heun's corrector (Eq. 6) still needs the predictor's velocity after the next call."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, *args: object, **kwargs: object) -> Tensor:
        return self.net(*args, **kwargs).clone()


def compiled(net: nn.Module, mode: str, device: torch.device) -> nn.Module:
    """torch.compile a network for sampling's fixed shapes; "reduce-overhead" also captures CUDA graphs."""
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
    """Per-sample seeds of one evaluation run: results do not depend on batch size or device count."""
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


@torch.no_grad()
def decomposition(
    msf: MSFModel,
    decode: Callable[[Tensor], Tensor],
    labels: Tensor,
    seeds: Sequence[int],
    steps: Sequence[int],
    cfg: Sequence[float],
    solver: str,
    device: torch.device,
) -> tuple[Tensor, list[str]]:
    """The base / residual / sum figure (Algorithm 3 scale by scale): for each sample, the image decoded from the
    latent accumulated after every scale, and before each later scale's image its residual latent f_resi^{h_i}
    (channels 0-2 in false colour, scaled by the sample's largest value) for the residual factorizations.

    Returns uint8 [B, columns, H, W, 3] and the column titles.
    """
    f_hat, outputs = sample_scales(msf, labels.to(device), seeds, steps, cfg, solver, device)
    fac, columns, titles = msf.factorization, [], []
    state: Tensor | None = None
    last = len(outputs) - 1
    for i, f_i in enumerate(outputs):
        state, _ = fac.step(state, f_i, i)
        image = decode(Up(state, fac.scales.full, fac.mode)).float()  # [B, 3, H, W]
        if i > 0 and fac.name.startswith("residual"):
            x = f_i[:, :3].float()
            x = x / x.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8)  # [B, 3, h_i, h_i] in [-1, 1]
            columns.append(torch.nn.functional.interpolate(x, size=image.shape[-2:], mode="nearest"))
            titles.append(f"residual {i} (latent {fac.scales.sizes[i]}x{fac.scales.sizes[i]}, ch. 0-2)")
        columns.append(image)
        titles.append("base D(Up(f_0))" if i == 0 else "sum D(f_hat)" if i == last else f"after scale {i}")
    grid = torch.stack([to_uint8(c).cpu() for c in columns], dim=1)  # [B, columns, 3, H, W]
    return grid.permute(0, 1, 3, 4, 2), titles


def sampling_gflops(forward_gflops: Sequence[float], steps: Sequence[int], cfg: Sequence[float], solver: str) -> float:
    """GFLOPs per sampled image: sum over scales of forward GFLOPs x steps x (2 with CFG) x (2 for Heun)."""
    evals = 2 if solver == "heun" else 1
    return sum(f * n * (1 if w == 1.0 else 2) * evals for f, n, w in zip(forward_gflops, steps, cfg, strict=True))
