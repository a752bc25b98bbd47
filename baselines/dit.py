"""The DiT-XL/2 baseline of Table 1: the official architecture, its checkpoint, and its 250-step DDPM sampler.

The sampler restates the official DiT ``sample.py`` path (improved-DDPM ``SpacedDiffusion.p_sample_loop`` with
``clip_denoised=False``) as plain functions over a model callable:

- Schedule: linear betas 1e-4..0.02 over 1000 steps (float64), respaced to K steps by improved-DDPM's
  ``space_timesteps(1000, [K])``; the respaced betas are 1 - abar_t / abar_prev over the kept timesteps, and the model
  sees the ORIGINAL timestep t in [0, 1000).
- Step (Ho et al. Eq. 7 posterior, Nichol & Dhariwal Eq. 15 variance): x0 = sqrt(1/abar) x - sqrt(1/abar - 1) eps;
  mean = c1 x0 + c2 x; log variance = frac log(beta) + (1 - frac) log(posterior variance, clipped), frac = (v + 1) / 2
  from the model's variance channels v in [-1, 1]; x_prev = mean + exp(log variance / 2) noise (no noise at the
  last step).
- BASELINE QUIRK, kept on purpose: the official ``forward_with_cfg`` applies classifier-free guidance to the FIRST 3
  of the 4 latent eps channels only ("for exact reproducibility reasons"); the 4th eps channel and the variance
  channels are the conditional outputs. ``guided_channels=3`` reproduces it; pass 4 for standard guidance. MSF never
  uses this (its guidance is msf/flow.py).

Randomness: sample i draws x_T and then every step's noise, in order, from its own CPU generator seeded with seeds[i]
(float32, then cast and moved), so a sample does not depend on the batch it is drawn in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from msf.dit import DiT, build_dit

OFFICIAL_URL = "https://dl.fbaipublicfiles.com/DiT/models/DiT-XL-2-256x256.pt"
EpsModel = Callable[[Tensor, Tensor, Tensor], Tensor]  # (x [B,C,H,W], t [B], y [B]) -> [B, 2C, H, W]


def dit_xl2(**kw: Any) -> DiT:
    """DiT-XL/2 as released: 32x32x4 latents, 1000 classes (+ null), learned sigma: 8 output channels (DiT Table 4)."""
    return build_dit("DiT-XL/2", **{"input_size": 32, "in_channels": 4, "num_classes": 1000, "learn_sigma": True, **kw})


def load_official_checkpoint(path: str | Path, model: DiT) -> DiT:
    """Load an official pretrained DiT checkpoint (a torch-pickled plain state dict) with strict keys."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"DiT checkpoint {path} not found; download it from {OFFICIAL_URL} (never fetched here)"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)  # tensors only: safe for a file that is not ours
    model.load_state_dict(state, strict=True)
    return model


# ----------------------------------------------------------------------------------------------------------------------
# Schedule.


def space_timesteps(num_steps: int, count: int) -> list[int]:
    """improved-DDPM ``space_timesteps(num_steps, [count])``: ``count`` evenly strided, rounded timesteps."""
    if not 2 <= count <= num_steps:
        raise ValueError(f"respaced step count must be in [2, {num_steps}], got {count}")
    stride, idx, taken = (num_steps - 1) / (count - 1), 0.0, []
    for _ in range(count):
        taken.append(round(idx))  # Python rounding and accumulated stride, exactly as the reference code
        idx += stride
    return taken


@dataclass(frozen=True)
class DDPMSchedule:
    """Respaced DDPM quantities in float64, indexed by step k = 0..K-1 (k = K-1 is sampled first)."""

    timesteps: Tensor  # [K] long: original timestep t_k given to the model
    betas: Tensor  # [K] respaced beta_k = 1 - abar_k / abar_{k-1}
    alphas_cumprod: Tensor  # [K] abar_k
    alphas_cumprod_prev: Tensor  # [K] abar_{k-1} (1 for k = 0)

    @property
    def posterior_variance(self) -> Tensor:
        """Variance of q(x_{k-1} | x_k, x_0) (Ho et al. Eq. 7): beta_k (1 - abar_{k-1}) / (1 - abar_k)."""
        return self.betas * (1 - self.alphas_cumprod_prev) / (1 - self.alphas_cumprod)

    @property
    def posterior_log_variance_clipped(self) -> Tensor:
        """log posterior variance with entry 0 (which is 0) replaced by entry 1, as improved-DDPM."""
        v = self.posterior_variance
        return torch.log(torch.cat([v[1:2], v[1:]]))


def ddpm_schedule(num_steps: int = 1000, respace: int = 250) -> DDPMSchedule:
    """DiT's linear betas (1e-4..0.02 at 1000 steps, float64) respaced to ``respace`` steps (improved-DDPM)."""
    scale = 1000 / num_steps  # get_named_beta_schedule("linear", T)
    betas = torch.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=torch.float64)  # [T]
    base = torch.cumprod(1 - betas, dim=0)  # abar_t, [T]
    timesteps = torch.tensor(space_timesteps(num_steps, respace))
    abar = base[timesteps]  # [K]
    abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
    return DDPMSchedule(timesteps, 1 - abar / abar_prev, abar, abar_prev)


# ----------------------------------------------------------------------------------------------------------------------
# Sampler.


def p_sample_step(s: DDPMSchedule, model_output: Tensor, x: Tensor, k: int, noise: Tensor) -> Tensor:
    """One ancestral step x_k -> x_{k-1} with learned-range variance (improved-DDPM p_sample, clip_denoised=False)."""

    def at(a: Tensor) -> Tensor:  # schedule entry k, cast like the reference (_extract_into_tensor -> x's dtype)
        return a[k].to(x.dtype)

    eps, v = model_output.chunk(2, dim=1)  # [B, C, H, W] each: eps and variance values in [-1, 1]
    abar = s.alphas_cumprod
    x0 = at((1 / abar).sqrt()) * x - at((1 / abar - 1).sqrt()) * eps
    c1 = at(s.betas * s.alphas_cumprod_prev.sqrt() / (1 - abar))
    c2 = at((1 - s.alphas_cumprod_prev) * (1 - s.betas).sqrt() / (1 - abar))
    mean = c1 * x0 + c2 * x
    frac = (v + 1) / 2
    log_var = frac * at(s.betas.log()) + (1 - frac) * at(s.posterior_log_variance_clipped)
    return mean + float(k > 0) * torch.exp(0.5 * log_var) * noise


def guided_output(
    model: EpsModel, x: Tensor, t: Tensor, y: Tensor, cfg_scale: float, null_class: int, guided_channels: int = 3
) -> Tensor:
    """Official DiT forward_with_cfg (conditional half): eps[:g] = u + w (c - u), other channels conditional."""
    out = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, null_class)]))  # [2B, 2C, H, W]
    cond, uncond = out.chunk(2)
    g = guided_channels
    eps = uncond[:, :g] + cfg_scale * (cond[:, :g] - uncond[:, :g])  # the baseline quirk: g = 3 of 4 channels
    return torch.cat([eps, cond[:, g:]], dim=1)


def _noise(gens: Sequence[torch.Generator], shape: tuple[int, ...], like: Tensor) -> Tensor:
    """Next N(0, I) draw of each sample's own generator, float32 on CPU, then cast and moved; on CUDA the
    copy goes through pinned memory without blocking, so the step loop never waits for the host."""
    z = torch.stack([torch.randn(shape, generator=g) for g in gens])  # [B, *shape] float32 on CPU
    if like.device.type == "cuda":
        z = z.pin_memory()
    return z.to(like.device, like.dtype, non_blocking=True)


@torch.no_grad()
def sample_ddpm(
    model: EpsModel,
    y: Tensor,
    seeds: Sequence[int],
    cfg_scale: float,
    steps: int = 250,
    latent_shape: tuple[int, int, int] = (4, 32, 32),
    null_class: int = 1000,
    guided_channels: int = 3,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The official DiT sampler: DDPM respaced to ``steps``, ancestral, learned-range variance, optional CFG.

    Args:
        model: eps/variance network (x, t, y) -> [B, 2C, H, W] (eval mode), e.g. ``dit_xl2()``.
        y: class labels [B] on the model's device.
        seeds: one seed per sample (its x_T and all its step noise come from its own generator).
        cfg_scale: guidance w (u + w (c - u)); 1.0 runs the single conditional forward, as the official script.
        steps: respaced step count (250 in the DiT paper).
        latent_shape: (C, H, W) of one latent.
        null_class: label of the unconditional branch.
        guided_channels: eps channels that are guided (3 = the official quirk, see the module docstring).
        dtype: dtype of the latents and of the schedule coefficients (official: float32).

    Returns:
        Latents x_0 [B, C, H, W] (not yet divided by the VAE scaling factor).
    """
    if len(seeds) != y.shape[0]:
        raise ValueError(f"need one seed per label: {len(seeds)} seeds for {y.shape[0]} labels")
    s = ddpm_schedule(1000, steps)
    gens = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
    x = _noise(gens, latent_shape, torch.empty(0, device=y.device, dtype=dtype))  # x_T [B, C, H, W]
    for k in reversed(range(len(s.timesteps))):
        t = torch.full_like(y, int(s.timesteps[k]))  # original timestep, as SpacedDiffusion's _WrappedModel
        if cfg_scale == 1.0:
            out = model(x, t, y)
        else:
            out = guided_output(model, x, t, y, cfg_scale, null_class, guided_channels)
        x = p_sample_step(s, out, x, k, _noise(gens, latent_shape, x))
    return x
