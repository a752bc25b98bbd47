"""The speed fast paths and benchmark (issue: speed): bf16 autocast against float32, no host reads inside the step
loops, the matmul rate and utilisation arithmetic, and the speed benchmark's FLOPs against a count of the whole
sampler. Timings themselves are benchmarks (the ``speed`` sweep), not tested numbers."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import ablations.engine.speed
from ablations.engine.evaluate import generate, msf_sampler
from ablations.engine.families import FAMILIES, SpeedStage
from ablations.engine.jobs import speed_benchmark
from ablations.engine.speed import matmul_tflops, utilisation
from baselines.dit import sample_ddpm
from msf.dit import DiT
from msf.factorize import make_factorization, make_scales
from msf.flow import sample_euler, time_grid
from msf.pipeline import MSFModel, sample

DEVICES = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
TINY = (("depth", 1), ("hidden_size", 32), ("num_heads", 2))  # DiT constructor overrides for the plans below


def randomised(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """adaLN-Zero starts at a zero output: random weights everywhere make dtype differences visible."""
    g = torch.Generator().manual_seed(seed)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.05, generator=g)
    return net.eval()


def tiny_msf(device: torch.device | str = "cpu") -> MSFModel:
    stages = [
        randomised(DiT(input_size=h, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2, num_classes=3,
                       prior_channels=4 * (i > 0), learn_sigma=False), i)
        for i, h in enumerate([4, 8])
    ]
    return MSFModel(stages, make_factorization("residual", make_scales([4, 8], 8)), 4, 3).to(device)


def tiny_eps_dit(device: torch.device | str = "cpu") -> DiT:
    return randomised(DiT(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2,
                          num_classes=3, learn_sigma=True), 7).to(device)


# ---- bf16 autocast (eval.dtype=bfloat16) against the plain float32 path


@pytest.mark.parametrize("device", DEVICES, ids=str)
def test_bf16_msf_generation_matches_float32_within_bf16_rounding(device):
    """generate() under bf16 autocast vs float32, 2 scales x (6 Euler steps with CFG 1.5, 4 without): the ODE state
    stays float32, so only the networks' bf16 rounding (relative 2^-8 per op) accumulates. Tolerance: mean absolute
    difference below 1% of the latents' mean magnitude, max below 3% of their max (measured on CPU: 0.09% and 0.13%);
    and some difference must exist (autocast ran)."""
    msf = tiny_msf(device)
    y, seeds = torch.tensor([0, 1, 2, 0, 1, 2]), list(range(6))
    sampler = msf_sampler(msf, [6, 4], [1.5, 1.0], "euler", device)
    latents = {}
    for dtype in (torch.float32, torch.bfloat16):
        out: list[torch.Tensor] = []
        generate(sampler, lambda z, o=out: o.append(z) or z[:, :3].clamp(-1, 1), y, seeds, device, 3, dtype,
                 log=lambda _: None)
        latents[dtype] = torch.cat(out).cpu()
    ref, low = latents[torch.float32], latents[torch.bfloat16]
    assert low.dtype == torch.float32  # the ODE state is float32; only the networks ran in bf16
    diff, scale = (low - ref).abs(), ref.abs().mean()
    assert scale > 0.1  # a real output
    assert 0 < diff.mean() < 0.01 * scale, (diff.mean(), scale)
    assert diff.max() < 0.03 * ref.abs().max(), (diff.max(), ref.abs().max())


@pytest.mark.parametrize("device", DEVICES, ids=str)
def test_bf16_ddpm_sampler_matches_float32_within_bf16_rounding(device):
    """DiT's 250->10-step DDPM sampler with CFG 1.5 under bf16 autocast vs float32 (latents and schedule stay
    float32). Tolerance: mean absolute difference below 1% of the output's mean magnitude (measured on CPU: 0.18%)."""
    net, y, seeds = tiny_eps_dit(device), torch.tensor([0, 1, 2], device=device), [5, 6, 7]
    ref = sample_ddpm(net, y, seeds, 1.5, steps=10, latent_shape=(4, 8, 8), null_class=3)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        low = sample_ddpm(net, y, seeds, 1.5, steps=10, latent_shape=(4, 8, 8), null_class=3)
    diff = (low.float() - ref).abs()
    assert 0 < diff.mean() < 0.01 * ref.abs().mean(), (diff.mean(), ref.abs().mean())


# ---- no host synchronisation inside the step loops: on the meta device any read of a value fails


def test_meta_device_catches_a_host_read_in_the_step_loop():
    """The detector itself: a velocity that reads a value (``float(tensor)``, as ``.item()``) fails on meta."""
    z0 = torch.zeros(2, 4, 4, 4, device="meta")
    with pytest.raises((RuntimeError, NotImplementedError)):
        sample_euler(lambda z, t: z * float(z.abs().max()), z0, time_grid(3, device="meta"))


@pytest.mark.parametrize("solver", ["euler", "heun"])
@pytest.mark.parametrize("cfg", [[1.5, 1.0], [1.0, 2.0]])
def test_msf_sampling_reads_nothing_back_to_the_host(solver, cfg):
    """Algorithm 3 end to end on the meta device (shapes only): every step, CFG batch, prior and accumulation runs
    without a host read, so on CUDA the step loop never waits for the GPU."""
    msf = tiny_msf("meta")
    f_hat = sample(msf, torch.tensor([0, 1], device="meta"), [0, 1], [3, 2], cfg, solver, "meta")
    assert f_hat.shape == (2, 4, 8, 8) and f_hat.device.type == "meta"


def test_ddpm_sampling_reads_nothing_back_to_the_host():
    """DiT-XL/2's DDPM sampler with CFG on the meta device: schedule scalars are host constants, state stays put."""
    x = sample_ddpm(tiny_eps_dit("meta"), torch.tensor([0, 1], device="meta"), [0, 1], 1.5, steps=5,
                    latent_shape=(4, 8, 8), null_class=3)
    assert x.shape == (2, 4, 8, 8) and x.device.type == "meta"


# ---- the matmul rate and utilisation


def test_matmul_rate_is_two_n_cubed_over_the_median_time(monkeypatch):
    ticks = iter(float(i) * 0.25 for i in range(100))  # every timed call takes exactly 0.25 s on this clock
    monkeypatch.setattr(ablations.engine.speed.time, "perf_counter", lambda: next(ticks))
    assert matmul_tflops(torch.device("cpu"), torch.float32, n=64, repeats=3) == pytest.approx(2 * 64**3 / 0.25 / 1e12)


def test_matmul_rate_measures_this_machine():
    rate = matmul_tflops(torch.device("cpu"), torch.float32, n=256, repeats=3)
    assert 1e-4 < rate < 100  # between 0.1 GFLOP/s and 100 TFLOP/s on any CPU


def test_utilisation_arithmetic_and_bad_input():
    assert utilisation(10.0, 2.0, 20.0) == pytest.approx(0.25)  # 10 TFLOPs in 2 s = 5 TFLOP/s of 20
    with pytest.raises(ValueError, match="need positive time and rate"):
        utilisation(1.0, 0.0, 1.0)


# ---- the speed benchmark: counted FLOPs per image against a count of the whole sampler

PLANS = {
    "dit_xl2": [SpeedStage("DiT-XL/2", 8, False, 4, 1.5, TINY)],
    "msf": [SpeedStage("MSF-stage1", 4, False, 3, 1.4, TINY), SpeedStage("MSF-stage2", 8, True, 2, 1.0, TINY)],
    "dimr": [SpeedStage("DiMR-tiny", 8, False, 3, 1.5)],
}


@pytest.mark.parametrize("model", sorted(PLANS))
def test_speed_plan_flops_match_a_count_of_the_whole_sampler(model):
    """tflops_per_image (forward GFLOPs x steps x 2 under CFG) equals FlopCounterMode over one full sample."""
    plan, device = PLANS[model], torch.device("cpu")
    nets = [FAMILIES[model].speed_network(st).eval() for st in plan]
    counter = FlopCounterMode(display=False)
    with counter:
        FAMILIES[model].speed_sampler(nets, plan, device)(torch.tensor([3]), [0])
    metrics = speed_benchmark(FAMILIES[model], plan, device, torch.float32, "sdpa", "none", "forward", 2,
                              log=lambda _: None)
    assert metrics["tflops_per_image"] * 1e12 == pytest.approx(counter.get_total_flops(), rel=1e-9)


@pytest.mark.parametrize("method", ["forward", "sample"])
def test_speed_benchmark_metrics_are_consistent(method):
    logs: list[str] = []
    m = speed_benchmark(FAMILIES["msf"], PLANS["msf"], torch.device("cpu"), torch.float32, "sdpa", "none", method, 2,
                        logs.append)
    assert m["steps"] == [3, 2] and m["cfg"] == [1.4, 1.0] and m["batch"] == 2 and m["dtype"] == "float32"
    assert m["images_per_s"] == pytest.approx(1 / m["sec_per_image"])
    assert m["achieved_tflops"] == pytest.approx(m["tflops_per_image"] / m["sec_per_image"])
    assert m["mfu"] == pytest.approx(m["achieved_tflops"] / m["matmul_tflops"])
    assert 0 < m["mfu"] < 1  # tiny networks cannot beat one large matmul
    assert m["method"].startswith({"forward": "median call", "sample": "whole sampler"}[method])
    assert logs and "s/img" in logs[-1]


def test_speed_plans_are_the_papers_sampling_settings():
    assert [(st.steps, st.cfg, st.passes) for st in FAMILIES["dit_xl2"].speed_plan] == [(250, 1.5, 500)]
    assert [(st.h, st.steps, st.cfg, st.passes) for st in FAMILIES["msf"].speed_plan] == [
        (24, 100, 1.4, 200), (32, 50, 1.0, 50)]
