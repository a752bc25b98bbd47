"""Algorithm 3 (msf/pipeline.py): inference with oracle stages reproduces teacher forcing (Algorithms 1-2), per-sample
seeds make samples batch-independent, one scale is plain single-scale sampling, and bad settings are rejected."""

import pytest
import torch
from torch import nn

from msf.factorize import FACTORIZATIONS, make_factorization, make_scales
from msf.flow import sample_euler, time_grid
from msf.pipeline import MSFModel, sample, stage_noise

C, NUM_CLASSES = 3, 5
F64 = torch.float64


class OracleStage(nn.Module):
    """Velocity f_i - z0 for the pipeline's own noise z0 of scale i: constant, so Euler and Heun land on f_i.

    It records every input prior it is handed, to compare with Algorithm 2's teacher-forced priors.
    """

    def __init__(self, f_i: torch.Tensor, seeds: list[int], i: int):
        super().__init__()
        self.velocity = f_i - stage_noise(seeds, i, tuple(f_i.shape[1:]), "cpu", F64)  # [B, C, h_i, h_i]
        self.priors: list[torch.Tensor | None] = []

    def forward(self, x, t, y, prior=None):
        self.priors.append(prior)
        return self.velocity.repeat(x.shape[0] // self.velocity.shape[0], 1, 1, 1)  # a CFG batch is 2B


class ConvStage(nn.Module):
    """A tiny stage model: conv over [x, prior], plus a class embedding scaled by t; weights from a passed seed."""

    def __init__(self, seed: int):
        super().__init__()
        self.conv = nn.Conv2d(2 * C, C, 3, padding=1, dtype=F64)
        self.emb = nn.Embedding(NUM_CLASSES + 1, C, dtype=F64)  # + the null class
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=F64))

    def forward(self, x, t, y, prior=None):
        p = torch.zeros_like(x) if prior is None else prior
        h = torch.tanh(self.conv(torch.cat([x, p], dim=1)))  # [B, C, h, w]
        return h + self.emb(y)[:, :, None, None] * t.view(-1, 1, 1, 1)


def _targets(name: str, sizes: tuple[int, ...], batch: int):
    """Per-scale targets of random images via the factorization itself (Algorithm 1), with E = identity, factor 1."""
    factorization = make_factorization(name, make_scales(sizes, sizes[-1]))
    image = torch.rand(batch, C, sizes[-1], sizes[-1], generator=torch.Generator().manual_seed(0), dtype=F64) * 2 - 1
    return factorization, factorization.targets(image, lambda x: x, 1)


# ----------------------------------------------------------------------------------------------------------------------
# Teacher forcing (Algorithms 1-2) == inference (Algorithm 3) for oracle stages


@pytest.mark.parametrize("solver", ["euler", "heun"])
@pytest.mark.parametrize("sizes", [(8,), (4, 8), (2, 4, 8)])
@pytest.mark.parametrize("name", FACTORIZATIONS)
def test_oracle_inference_reproduces_teacher_forcing(name, sizes, solver):
    seeds = [3, 1, 4]
    factorization, targets = _targets(name, sizes, batch=len(seeds))
    stages = [OracleStage(f_i, seeds, i) for i, f_i in enumerate(targets)]
    msf = MSFModel(stages, factorization, C, NUM_CLASSES)
    steps = [5, 3, 2][: len(sizes)]
    out = sample(msf, torch.tensor([0, 2, 4]), seeds, steps, [1.0] * len(sizes), solver, dtype=F64)
    # 1e-12: the only error is float64 rounding of z0 + sum_k dt_k (f_i - z0) over <= 5 steps (~1e-15 each)
    assert torch.allclose(out, factorization.compose(targets), atol=1e-12, rtol=0)
    calls = steps[0] * (2 if solver == "heun" else 1)
    assert len(stages[0].priors) == calls
    for stage, expected in zip(stages, factorization.priors(targets), strict=True):
        for prior in stage.priors:  # the same prior at every time step of scale i
            assert (prior is None) == (expected is None)
            if expected is not None:
                assert torch.allclose(prior, expected, atol=1e-12, rtol=0)  # as above, through Up/Down (linear)


@pytest.mark.parametrize("name", ["residual", "latent_resize"])
def test_oracle_priors_are_doubled_under_guidance(name):
    seeds = [7, 8]
    factorization, targets = _targets(name, (4, 8), batch=2)
    stages = [OracleStage(f_i, seeds, i) for i, f_i in enumerate(targets)]
    # the oracle ignores the class, so v_u = v_c and guidance leaves the velocity unchanged
    out = sample(MSFModel(stages, factorization, C, NUM_CLASSES), torch.tensor([1, 2]), seeds, [4, 2], [2.0, 1.5],
                 dtype=F64)  # fmt: skip
    assert torch.allclose(out, factorization.compose(targets), atol=1e-12, rtol=0)  # float64 rounding, as above
    expected = factorization.priors(targets)[1]
    for prior in stages[1].priors:
        assert prior.shape[0] == 4  # [prior, prior] for the conditional and the null halves
        assert torch.allclose(prior, torch.cat([expected, expected]), atol=1e-12, rtol=0)


# ----------------------------------------------------------------------------------------------------------------------
# Per-sample seeds: batch composition does not change a sample


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_each_sample_depends_only_on_its_seed_and_label(solver):
    factorization = make_factorization("residual", make_scales([4, 6, 8], 8))
    msf = MSFModel([ConvStage(seed) for seed in (10, 11, 12)], factorization, C, NUM_CLASSES)
    labels, seeds = torch.tensor([1, 2, 3, 0]), [10, 11, 12, 13]
    settings = dict(steps=[3, 2, 2], cfg=[1.5, 1.0, 2.0], solver=solver, dtype=F64)
    batch = sample(msf, labels, seeds, **settings)
    assert batch.shape == (4, C, 8, 8)
    order = [2, 0, 3, 1]
    shuffled = sample(msf, labels[order], [seeds[b] for b in order], **settings)
    # 1e-12: float64 conv kernels may block the batch differently (reordered sums, ~1e-16 relative per operation)
    assert torch.allclose(shuffled, batch[order], atol=1e-12, rtol=0)
    for b in range(4):
        alone = sample(msf, labels[b : b + 1], [seeds[b]], **settings)
        assert torch.allclose(alone[0], batch[b], atol=1e-12, rtol=0)  # as above
    assert not torch.allclose(batch[0], batch[1], atol=1e-3)  # different seeds do give different samples


def test_stage_noise_follows_the_documented_derivation():
    z = stage_noise([5, 7], 1, (C, 4, 4), "cpu", F64)
    assert z.shape == (2, C, 4, 4) and z.dtype == F64
    reference = torch.randn(C, 4, 4, generator=torch.Generator().manual_seed(7 * 1000 + 1)).double()
    assert torch.equal(z[1], reference)  # float32 draw on CPU, then cast: pinned so old sample sets stay reproducible
    assert torch.equal(stage_noise([7], 1, (C, 4, 4), "cpu", F64)[0], z[1])
    assert not torch.allclose(stage_noise([7], 0, (C, 4, 4), "cpu", F64)[0], z[1], atol=0.1)  # scales differ


@pytest.mark.parametrize("i, seeds", [(-1, [0]), (1000, [0]), (0, [-2])])
def test_stage_noise_rejects_bad_streams(i, seeds):
    with pytest.raises(ValueError):
        stage_noise(seeds, i, (C, 4, 4), "cpu", F64)


# ----------------------------------------------------------------------------------------------------------------------
# One scale is single-scale sampling


@pytest.mark.parametrize("name", FACTORIZATIONS)
def test_one_scale_is_plain_euler_sampling(name):
    stage = ConvStage(seed=0)
    msf = MSFModel([stage], make_factorization(name, make_scales([8], 8)), C, NUM_CLASSES)
    labels, seeds = torch.tensor([4, 0, 2]), [21, 22, 23]
    out = sample(msf, labels, seeds, [6], [1.0], dtype=F64)
    direct = sample_euler(lambda z, t: stage(z, t, labels), stage_noise(seeds, 0, (C, 8, 8), "cpu", F64),
                          time_grid(6, F64))  # fmt: skip
    assert torch.equal(out, direct)  # the same operations in the same order


# ----------------------------------------------------------------------------------------------------------------------
# Bad settings


def _two_scale_model():
    factorization = make_factorization("residual", make_scales([4, 8], 8))
    return MSFModel([ConvStage(0), ConvStage(1)], factorization, C, NUM_CLASSES)


@pytest.mark.parametrize(
    "steps, cfg, seeds, solver, match",
    [
        ([0, 2], [1.0, 1.0], [0, 1], "euler", "step counts"),
        ([2, 2.5], [1.0, 1.0], [0, 1], "euler", "step counts"),
        ([2, 2], [-0.1, 1.0], [0, 1], "euler", "CFG scales"),
        ([2], [1.0, 1.0], [0, 1], "euler", "per scale"),
        ([2, 2], [1.0], [0, 1], "euler", "per scale"),
        ([2, 2], [1.0, 1.0], [0], "euler", "one seed per class label"),
        ([2, 2], [1.0, 1.0], [0, 1], "rk4", "unknown solver"),
    ],
)
def test_sample_rejects_bad_settings(steps, cfg, seeds, solver, match):
    with pytest.raises(ValueError, match=match):
        sample(_two_scale_model(), torch.tensor([0, 1]), seeds, steps, cfg, solver, dtype=F64)


def test_model_needs_one_stage_per_scale():
    with pytest.raises(ValueError, match="stage models for 2 scales"):
        MSFModel([ConvStage(0)], make_factorization("residual", make_scales([4, 8], 8)), C, NUM_CLASSES)
