"""MSF sampling: a list of per-scale stage models and a factorization, run scale by scale (Algorithm 3, Sec. 3.4).

Stage i is a velocity network ``stage(x, t, y, prior=None)`` on latents of size h_i; scale 0 sees only the class
label, scale i > 0 also the input prior handed over by ``factorization.step`` (Algorithm 3 lines 9-12). Each scale
draws its own noise from per-sample seeds, solves its ODE (Eq. 6) with its own step count and guidance scale (Eq. 7),
and the factorization folds the result into the full latent f_hat; decoding (line 14) is the caller's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from msf.factorize import Factorization
from msf.flow import cfg_velocity, sample_euler, sample_heun, time_grid

SOLVERS = {"euler": sample_euler, "heun": sample_heun}
NOISE_STREAMS = 1000  # scale indices per seed: sample b at scale i draws from seed_b * NOISE_STREAMS + i


class MSFModel(nn.Module):
    """An MSF model (Sec. 3.1): one stage per scale h_0 < ... < h_N, the factorization that links them, class count."""

    def __init__(self, stages: Sequence[nn.Module], factorization: Factorization, channels: int, num_classes: int):
        super().__init__()
        if len(stages) != len(factorization.scales):
            raise ValueError(f"{len(stages)} stage models for {len(factorization.scales)} scales")
        self.stages = nn.ModuleList(stages)
        self.factorization = factorization
        self.channels = channels
        self.num_classes = num_classes  # the null class of CFG is num_classes


def stage_noise(
    seeds: Sequence[int], i: int, shape: tuple[int, int, int], device: torch.device | str | None, dtype: torch.dtype
) -> Tensor:
    """Algorithm 3's z0 ~ N(0, I) at scale i: sample b from CPU generator seed_b * 1000 + i in float32, then cast."""
    if not 0 <= i < NOISE_STREAMS:
        raise ValueError(f"scale index {i} outside [0, {NOISE_STREAMS})")
    if any(s < 0 for s in seeds):
        raise ValueError(f"seeds must be non-negative, got {list(seeds)}")
    z0 = [torch.randn(shape, generator=torch.Generator().manual_seed(s * NOISE_STREAMS + i)) for s in seeds]
    return torch.stack(z0).to(device=device, dtype=dtype)  # [B, C, h, w]


def _check_sample_args(
    msf: MSFModel, class_labels: Tensor, seeds: Sequence[int], steps: Sequence[int], cfg: Sequence[float], solver: str
) -> None:
    """One-line ValueErrors for mismatched per-scale settings, seeds and solver names."""
    n = len(msf.factorization.scales)
    if len(steps) != n or len(cfg) != n:
        raise ValueError(f"need one step count and one CFG scale per scale ({n}), got steps={steps}, cfg={cfg}")
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in steps):
        raise ValueError(f"step counts must be integers >= 1, got {list(steps)}")
    if any(w < 0 for w in cfg):
        raise ValueError(f"CFG scales must be >= 0, got {list(cfg)}")
    if class_labels.ndim != 1 or len(seeds) != class_labels.shape[0]:
        raise ValueError(f"need one seed per class label: {len(seeds)} seeds, labels {tuple(class_labels.shape)}")
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; expected one of {', '.join(SOLVERS)}")


@torch.no_grad()
def sample(
    msf: MSFModel,
    class_labels: Tensor,
    seeds: Sequence[int],
    steps: Sequence[int],
    cfg: Sequence[float],
    solver: str = "euler",
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Algorithm 3 (lines 1-13): generate the full latent f_hat [B, C, h_N, h_N] scale by scale (no decoding).

    Args:
        msf: the stage models and factorization (stages already on ``device``, in eval mode).
        class_labels: [B] long labels c in [0, num_classes).
        seeds: one seed per sample; sample b's noise depends only on seeds[b] and the scale (batch-independent).
        steps: Euler/Heun steps per scale (the paper: 100 and 50).
        cfg: guidance scale w per scale, DiT convention, 1 = none (the paper: 1.4 and 1.0).
        solver: "euler" or "heun" (Heun costs 2 model evaluations per step).
        device: where noise and labels go; None means class_labels' device.
        dtype: the sampling dtype of noise, time grid and ODE state.
    """
    return sample_scales(msf, class_labels, seeds, steps, cfg, solver, device, dtype)[0]


@torch.no_grad()
def sample_scales(
    msf: MSFModel,
    class_labels: Tensor,
    seeds: Sequence[int],
    steps: Sequence[int],
    cfg: Sequence[float],
    solver: str = "euler",
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, list[Tensor]]:
    """Algorithm 3 (lines 1-13) as :func:`sample`, also returning every scale's output f_resi^{h_i} [B, C, h_i, h_i]."""
    _check_sample_args(msf, class_labels, seeds, steps, cfg, solver)
    device = class_labels.device if device is None else torch.device(device)
    y = class_labels.to(device)  # line 1: class label c
    f_hat: Tensor | None = None  # line 2: f_hat = 0 (None until scale 0 is added)
    prior: Tensor | None = None  # scale 0 has no input prior (line 5)
    outputs = []
    for i, h in enumerate(msf.factorization.scales.sizes):  # line 3: for i = 0 to N
        z0 = stage_noise(seeds, i, (msf.channels, h, h), device, dtype)  # [B, C, h_i, h_i]
        v = cfg_velocity(msf.stages[i], y, msf.num_classes, cfg[i], prior)  # lines 4-8: v_theta(z_t, t | c[, f_hat_hi])
        f_i = SOLVERS[solver](v, z0, time_grid(steps[i], dtype, device))  # lines 5/7: f_resi^{h_i} by Eq. 6
        f_hat, prior = msf.factorization.step(f_hat, f_i, i)  # lines 9-12: accumulate, next prior
        outputs.append(f_i)
    assert f_hat is not None  # there is at least one scale
    return f_hat, outputs  # [B, C, h_N, h_N]; line 14 (decode) is the caller's
