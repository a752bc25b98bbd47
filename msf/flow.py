"""Rectified flow as MSF writes it (Sec. 3.3, Eqs. 5-7; Liu et al. 2023).

Time runs from noise to data: z_t = t * x1 + (1 - t) * z0 with z0 ~ N(0, I) at t = 0 and the data x1 at t = 1; the
velocity target is v = x1 - z0 (Eq. 5) and sampling integrates dz_t = v_theta(z_t, t) dt from t = 0 to t = 1 (Eq. 6).
Classifier-free guidance uses the DiT convention v_u + w (v_c - v_u), so w = 1 means no guidance (Eq. 7).

Samplers are stateless ``@torch.no_grad()`` functions over a velocity callable ``v(z [B,...], t [B]) -> [B,...]``
that closes over the conditioning (class labels, input prior); a time grid is a separate tensor of N + 1 points.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

Velocity = Callable[[Tensor, Tensor], Tensor]
TimeDist = Literal["uniform", "logit_normal"]


def _bcast(t: Tensor, x: Tensor) -> Tensor:
    """View a per-sample time [B] as [B, 1, ..., 1] to broadcast against x [B, ...]."""
    return t.to(x.dtype).view(-1, *([1] * (x.ndim - 1)))


def interpolate(x1: Tensor, z0: Tensor, t: Tensor) -> Tensor:
    """Eq. 5: z_t = t * x1 + (1 - t) * z0 (t = 0 noise, t = 1 data); x1, z0 [B, ...], t [B]."""
    t = _bcast(t, x1)  # [B, 1, ..., 1]
    return t * x1 + (1 - t) * z0


def target_velocity(x1: Tensor, z0: Tensor) -> Tensor:
    """Eq. 5: the rectified-flow regression target x1 - z0 (the straight path's constant velocity)."""
    return x1 - z0


def flow_loss(
    model: Callable[..., Tensor], x1: Tensor, t: Tensor, z0: Tensor, y: Tensor, prior: Tensor | None = None
) -> Tensor:
    """Eq. 5: per-sample loss [B] = mean over non-batch dims of ||x1 - z0 - v_theta(z_t, t | y, prior)||^2."""
    z_t = interpolate(x1, z0, t)  # [B, C, h, w]
    v = model(z_t, t, y, prior=prior)  # [B, C, h, w]
    return (target_velocity(x1, z0) - v).square().flatten(1).mean(dim=1)  # [B]


def sample_time(
    n: int, generator: torch.Generator, dist: TimeDist = "uniform", mean: float = 0.0, std: float = 1.0
) -> Tensor:
    """Eq. 5's t ~ U(0, 1) (the paper), or logit-normal sigmoid(N(mean, std^2)) (SD3's option); float32 [n]."""
    if dist == "uniform":
        return torch.rand(n, generator=generator, device=generator.device)
    if dist == "logit_normal":
        return torch.sigmoid(mean + std * torch.randn(n, generator=generator, device=generator.device))
    raise ValueError(f"unknown time distribution {dist!r}; expected 'uniform' or 'logit_normal'")


def time_grid(steps: int, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    """Eq. 6's integration grid: steps + 1 points from 0 (noise) to exactly 1 (data), built in float64 then cast."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"number of sampling steps must be an integer >= 1, got {steps!r}")
    return torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64).to(dtype=dtype, device=device)  # [steps + 1]


@torch.no_grad()
def sample_euler(v: Velocity, z0: Tensor, grid: Tensor) -> Tensor:
    """Eq. 6 by explicit Euler: z_{k+1} = z_k + (t_{k+1} - t_k) v(z_k, t_k); the grid is cast to z0's dtype/device."""
    grid = grid.to(z0)  # [N + 1]
    z = z0  # [B, ...]
    for t, t_next in zip(grid[:-1], grid[1:], strict=True):
        z = z + (t_next - t) * v(z, t.expand(z.shape[0]))
    return z


@torch.no_grad()
def sample_heun(v: Velocity, z0: Tensor, grid: Tensor) -> Tensor:
    """Eq. 6 by Heun's 2nd-order method on every step, the last one included (2 NFE per step; t = 1 is evaluated)."""
    grid = grid.to(z0)  # [N + 1]
    z = z0  # [B, ...]
    for t, t_next in zip(grid[:-1], grid[1:], strict=True):
        dt = t_next - t
        d = v(z, t.expand(z.shape[0]))  # Euler slope at t_k
        z_euler = z + dt * d  # predictor
        d_next = v(z_euler, t_next.expand(z.shape[0]))  # slope at t_{k+1}
        z = z + dt * 0.5 * (d + d_next)  # trapezoidal corrector
    return z


def cfg_velocity(model: nn.Module, y: Tensor, null_class: int, w: float, prior: Tensor | None = None) -> Velocity:
    """Eq. 7: v = v(z,t|null) + w (v(z,t|y) - v(z,t|null)); w = 1 is one plain conditional pass, else one 2B pass."""
    if w < 0:
        raise ValueError(f"classifier-free guidance scale must be >= 0, got {w}")
    if w == 1.0:
        return lambda z, t: model(z, t, y, prior=prior)
    y2 = torch.cat([y, torch.full_like(y, null_class)])  # [2B]: conditional half, then the null class
    prior2 = None if prior is None else torch.cat([prior, prior])  # [2B, C, h, w]

    def guided(z: Tensor, t: Tensor) -> Tensor:
        v_c, v_u = model(torch.cat([z, z]), torch.cat([t, t]), y2, prior=prior2).chunk(2)  # [B, ...] each
        return v_u + w * (v_c - v_u)

    return guided
