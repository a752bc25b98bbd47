"""Rectified flow (msf/flow.py, MSF Eqs. 5-7): against diffusers' Euler scheduler, a closed-form Gaussian flow,
scipy distribution tests, and counted forward passes for classifier-free guidance."""

import math

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from msf.flow import (
    cfg_velocity,
    flow_loss,
    interpolate,
    sample_euler,
    sample_heun,
    sample_time,
    target_velocity,
    time_grid,
)

# ----------------------------------------------------------------------------------------------------------------------
# Time grid


@given(steps=st.integers(1, 2000), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_time_grid_has_n_plus_one_points_from_0_to_exactly_1(steps, dtype):
    grid = time_grid(steps, dtype)
    assert grid.shape == (steps + 1,) and grid.dtype == dtype
    assert grid[0].item() == 0.0 and grid[-1].item() == 1.0  # exact: an off-by-one would leave residual noise
    assert bool((grid[1:] > grid[:-1]).all())
    # uniform spacing 1/steps up to the cast's rounding (float32 eps * 2, float64 exact-ish)
    tol = 4 * torch.finfo(dtype).eps
    assert torch.allclose(grid.diff().double(), torch.full((steps,), 1 / steps, dtype=torch.float64), atol=tol, rtol=0)


@pytest.mark.parametrize("steps", [0, -3, 1.5, True])
def test_time_grid_rejects_bad_step_counts(steps):
    with pytest.raises(ValueError, match="sampling steps"):
        time_grid(steps)


# ----------------------------------------------------------------------------------------------------------------------
# Euler against diffusers' FlowMatchEulerDiscreteScheduler (an independent implementation)


def _tanh_field(dim: int, seed: int):
    """A nonlinear, time-dependent velocity field v(z, t) = tanh((1 + t) W z + b) - z / 2 on [B, dim]."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(dim, dim, generator=g) / math.sqrt(dim)
    b = torch.randn(dim, generator=g)
    return lambda z, t: torch.tanh(z @ W.T * (1 + t.view(-1, 1)) + b) - 0.5 * z


@pytest.mark.parametrize("steps", [1, 7, 50, 250])
def test_euler_matches_diffusers_flow_match_euler(steps):
    v = _tanh_field(16, seed=0)
    z0 = torch.randn(8, 16, generator=torch.Generator().manual_seed(1))
    ours = sample_euler(v, z0, time_grid(steps))
    # diffusers' convention: sigma = 1 - t runs 1 (noise) -> 0 (data), x = sigma*noise + (1-sigma)*data and the model
    # predicts noise - data = -v; its step x + (sigma_next - sigma) * (-v) is our x + (t_next - t) * v.
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0)  # shift=1: no resolution-dependent time warp
    scheduler.set_timesteps(sigmas=(1 - time_grid(steps, torch.float64)[:-1]).tolist())  # it appends sigma = 0
    assert scheduler.sigmas.shape == (steps + 1,) and scheduler.sigmas[-1].item() == 0.0
    x = z0.clone()
    for timestep in scheduler.timesteps:
        t = 1 - timestep / scheduler.config.num_train_timesteps
        x = scheduler.step(-v(x, t.expand(x.shape[0])), timestep, x).prev_sample
    # 1e-5: diffusers stores sigma = 1 - t and timestep = 1000 * sigma in float32, so each step's t and dt differ by
    # float32 rounding (~1e-7 relative on |z| <= 3), accumulating over <= 250 steps; an off-by-one grid is ~1e-1 off.
    assert torch.allclose(ours, x, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------------------------------------------
# A known exact flow: x1 ~ N(mu, s^2 I), z0 ~ N(0, I), z_t = t x1 + (1 - t) z0.
# z_t and u = x1 - z0 are jointly Gaussian, so E[u | z_t] = mu + c(t) (z_t - t mu) with
# c(t) = Cov(u, z_t) / Var(z_t) = (t s^2 - (1 - t)) / (t^2 s^2 + (1 - t)^2).
# The ODE keeps z_t = t mu + sqrt(t^2 s^2 + (1 - t)^2) z0 (check: d/dt of it equals v at it), a monotone map whose
# marginal is N(t mu, Var(z_t)); at t = 1 it sends z0 to mu + s z0.

MU, S = 1.5, 0.5


def gaussian_velocity(z, t):
    """The exact marginal rectified-flow velocity for data N(MU, S^2 I)."""
    t = t.view(-1, *([1] * (z.ndim - 1)))
    c = (t * S**2 - (1 - t)) / (t**2 * S**2 + (1 - t) ** 2)
    return MU + c * (z - t * MU)


@pytest.mark.parametrize("t", [0.1, 0.5, 0.9])
def test_gaussian_velocity_is_the_conditional_mean_of_x1_minus_z0(t):
    g = torch.Generator().manual_seed(2)
    n = 200_000
    x1 = MU + S * torch.randn(n, generator=g, dtype=torch.float64)
    z0 = torch.randn(n, generator=g, dtype=torch.float64)
    z_t = interpolate(x1, z0, torch.full((n,), t, dtype=torch.float64))
    u = target_velocity(x1, z0)
    slope, intercept = stats.linregress(z_t.numpy(), u.numpy())[:2]  # least squares: E[u | z_t] is linear here
    z = torch.tensor([0.0, 1.0], dtype=torch.float64)
    v0, v1 = gaussian_velocity(z, torch.full((2,), t, dtype=torch.float64)).tolist()
    # 0.02: Monte-Carlo standard error of a slope/intercept with 2e5 samples is ~0.003-0.005; 4 sigma margin
    assert abs(slope - (v1 - v0)) < 0.02 and abs(intercept - v0) < 0.02


def _errors(solver, steps):
    z0 = torch.randn(64, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    out = solver(gaussian_velocity, z0, time_grid(steps, torch.float64))
    return (out - (MU + S * z0)).abs().max().item()


def test_fine_heun_reaches_the_exact_map():
    # 1e-6: Heun's global error is ~0.7 / N^2 on this field (measured), 2e-7 at N = 2000; float64 rounding is 1e-13
    assert _errors(sample_heun, 2000) < 1e-6


def test_euler_is_first_order_and_heun_second_order():
    euler = _errors(sample_euler, 32) / _errors(sample_euler, 64)
    heun = _errors(sample_heun, 32) / _errors(sample_heun, 64)
    # halving dt divides the error by 2^order; measured 1.98 and 3.83 (the N^-3 term still shows at N = 32)
    assert 1.9 < euler < 2.1
    assert 3.6 < heun < 4.4
    assert _errors(sample_heun, 16) < 0.1 * _errors(sample_euler, 32)  # Heun wins at equal model evaluations


# ----------------------------------------------------------------------------------------------------------------------
# Classifier-free guidance (Eq. 7)


class CountingModel(torch.nn.Module):
    """An elementwise stage model that records each call's batch size (elementwise: batching cannot change bits)."""

    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.emb = torch.linspace(-1.0, 1.0, num_classes + 1, dtype=torch.float64)  # the null class included
        self.batches: list[int] = []

    def forward(self, x, t, y, prior=None):
        self.batches.append(x.shape[0])
        out = torch.sin(x) * (1 + self.emb[y].view(-1, 1, 1, 1)) + t.view(-1, 1, 1, 1)
        return out if prior is None else out + prior * prior


def _cfg_inputs(with_prior: bool):
    g = torch.Generator().manual_seed(4)
    z = torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64)
    t = torch.rand(3, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 4, 2])
    prior = torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64) if with_prior else None
    return z, t, y, prior


@pytest.mark.parametrize("with_prior", [False, True])
def test_cfg_scale_one_is_one_plain_conditional_pass(with_prior):
    z, t, y, prior = _cfg_inputs(with_prior)
    model = CountingModel()
    guided = cfg_velocity(model, y, null_class=5, w=1.0, prior=prior)(z, t)
    assert model.batches == [3]
    assert torch.equal(guided, model(z, t, y, prior=prior))


@pytest.mark.parametrize("with_prior", [False, True])
@pytest.mark.parametrize("w", [0.0, 1.4, 2.0])
def test_cfg_is_one_doubled_pass_equal_to_eq7(with_prior, w):
    z, t, y, prior = _cfg_inputs(with_prior)
    model = CountingModel()
    guided = cfg_velocity(model, y, null_class=5, w=w, prior=prior)(z, t)
    assert model.batches == [6]
    v_c = model(z, t, y, prior=prior)
    v_u = model(z, t, torch.full_like(y, 5), prior=prior)
    # exact: the model is elementwise, so the doubled batch computes the very same operations per sample
    assert torch.equal(guided, v_u + w * (v_c - v_u))


def test_cfg_rejects_negative_scale():
    with pytest.raises(ValueError, match="guidance scale"):
        cfg_velocity(CountingModel(), torch.tensor([0]), null_class=5, w=-0.5)


# ----------------------------------------------------------------------------------------------------------------------
# Training loss (Eq. 5) and time sampling


def _loss_inputs():
    g = torch.Generator().manual_seed(5)
    x1 = torch.randn(4, 3, 4, 4, generator=g, dtype=torch.float64)
    z0 = torch.randn(4, 3, 4, 4, generator=g, dtype=torch.float64)
    t = torch.rand(4, generator=g, dtype=torch.float64)
    return x1, z0, t, torch.tensor([0, 1, 2, 3])


def test_interpolate_endpoints_are_noise_and_data():
    x1, z0, _, _ = _loss_inputs()
    assert torch.equal(interpolate(x1, z0, torch.zeros(4)), z0)
    assert torch.equal(interpolate(x1, z0, torch.ones(4)), x1)


def test_flow_loss_is_zero_for_the_oracle_velocity():
    x1, z0, t, y = _loss_inputs()

    def oracle(x, t_in, y_in, prior=None):
        assert torch.equal(x, t.view(-1, 1, 1, 1) * x1 + (1 - t.view(-1, 1, 1, 1)) * z0)  # it is handed z_t
        return x1 - z0

    loss = flow_loss(oracle, x1, t, z0, y)
    assert loss.shape == (4,) and torch.equal(loss, torch.zeros(4, dtype=torch.float64))


def test_flow_loss_matches_a_direct_formula_for_a_wrong_model():
    x1, z0, t, y = _loss_inputs()
    prior = torch.ones_like(x1)

    def model(x, t_in, y_in, prior=None):
        return 0.5 * x + prior

    loss = flow_loss(model, x1, t, z0, y, prior=prior)
    tb = t.view(-1, 1, 1, 1)
    expected = ((x1 - z0 - 0.5 * (tb * x1 + (1 - tb) * z0) - 1.0) ** 2).mean(dim=(1, 2, 3))
    assert torch.allclose(loss, expected, rtol=1e-12, atol=0)  # float64, a few reordered operations
    assert bool((loss > 0).all())


def test_uniform_time_is_uniform_on_the_open_interval():
    t = sample_time(20_000, torch.Generator().manual_seed(6))
    assert t.dtype == torch.float32 and bool(((t > 0) & (t < 1)).all())
    assert stats.kstest(t.numpy(), "uniform").pvalue > 1e-3  # a fixed seed: the test is deterministic
    assert torch.equal(t, sample_time(20_000, torch.Generator().manual_seed(6)))  # randomness comes from the generator


def test_logit_normal_time_has_normal_logits():
    t = sample_time(20_000, torch.Generator().manual_seed(7), "logit_normal", mean=0.5, std=0.8).double()
    assert bool(((t > 0) & (t < 1)).all())
    assert stats.kstest(torch.logit(t).numpy(), "norm", args=(0.5, 0.8)).pvalue > 1e-3


def test_sample_time_rejects_unknown_distribution():
    with pytest.raises(ValueError, match="time distribution"):
        sample_time(4, torch.Generator(), "beta")
