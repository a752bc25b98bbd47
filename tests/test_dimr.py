"""Tests of baselines/dimr.py: the released DiMR sizes (parameter counts against the README and a closed form of the
released code), shapes, TD-RMSNorm, the stage-model interface, and training through ablations/engine/train.py's loop."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from _ddp_worker import tiny_config

from ablations.engine.families import dimr_architecture
from ablations.engine.train import latest_checkpoint, load_stage, train
from baselines.dimr import DiMR, TDRMSNorm, build_dimr
from msf.factorize import make_factorization, make_scales

TINY = dict(input_size=8, num_classes=4)  # the embedded preset's 8x8x4 latents
QUIET = lambda _: None  # noqa: E731

# qihao067/DiMR README, ImageNet 256: "505M" and "1.06B", i.e. rounded: +- half a unit of the last digit
PUBLISHED = {"DiMR-XL/2R": (505e6, 0.5e6), "DiMR-G/2R": (1.06e9, 0.005e9)}


def released_params(
    dims: Sequence[int],
    mlp_dims: Sequence[int],
    num_blocks: Sequence[int],
    ratios: Sequence[int],
    C: int = 4,
    size: int = 32,
    classes: int = 1001,
) -> tuple[int, int]:
    """(all parameters, those of the lower branches' output heads) of the released MRModel with norm_type TDRMSN.

    Restated from qihao067/DiMR libs/core/blocks.py: a TimeDependentParameter holds 4 tensors of its shape (param0,
    param1, nodecay_weight, nodecay_bias), so a TD LayerNorm has 8 D and a TD-RMSNorm 4 D parameters; a stage has
    num_blocks // 2 * 2 + 1 blocks; the 2R configs patchify stage 0 by 2 and stage 1 by 1.
    """
    total, heads, low = 0, 0, None
    for r, (D, H, n, ratio) in enumerate(zip(dims, mlp_dims, num_blocks, ratios, strict=True)):
        blocks = n // 2 * 2 + 1
        mlp = 4 * D + 2 * (D * H + H) + (H * D + D)  # TD-RMSNorm, w0, w1, w2
        block = 4 * D + 3 * D * D + (D * D + D) + mlp if r == 0 else (49 * D + D) + mlp  # attention / 7x7 dwconv
        total += C * D * ratio**2 + D + (size // ratio) ** 2 * D + (classes * D if r == 0 else 0)
        total += blocks * block + (n // 2) * (2 * D * D + D)  # blocks and skip linears
        if low is not None:  # cascade: TD-LN, linear to D up^2, pixel shuffle, TD-LN
            total += 8 * low[0] + low[0] * D * low[1] ** 2 + D * low[1] ** 2 + 8 * D
        head = 8 * D + 9 * D * C + C  # TD-LN + 3x3 conv to C
        total += head
        heads += head if r < len(dims) - 1 else 0
        low = (D * (blocks + 1), ratio // ratios[r + 1]) if r + 1 < len(dims) else None
    return total, heads


RELEASED = {  # the released configs' values, num_blocks as written there (20 builds 21 blocks)
    "DiMR-XL/2R": released_params((960, 480), (1920, 960), (39, 20), (2, 1)),
    "DiMR-G/2R": released_params((1152, 576), (2304, 1152), (57, 29), (2, 1)),
}


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def inputs(model: DiMR, batch: int = 3, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random latents, flow times in [0, 1] and labels for ``model``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, model.in_channels, model.input_size, model.input_size, generator=g)
    return x, torch.rand(batch, generator=g), torch.randint(0, model.y_embedder.num_classes, (batch,), generator=g)


# ----------------------------------------------------------------------------------------------------------------------
# Published sizes (meta device: shapes only)


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_sizes_parameter_counts_and_shapes(name):
    with torch.device("meta"):
        model = build_dimr(name).eval()
        out = model(torch.zeros(2, 4, 32, 32), torch.zeros(2), torch.zeros(2, dtype=torch.long))
    assert out.shape == (2, 4, 32, 32)
    published, rounding = PUBLISHED[name]
    assert abs(count(model) - published) <= rounding, count(model)
    total, lower_heads = RELEASED[name]
    assert count(model) == total - lower_heads  # the released network exactly, less the multi-scale-loss heads
    assert abs(total - published) <= rounding  # the closed form itself agrees with the README


def test_branch_resolutions_and_cascade_widths_of_the_tiny_size():
    model = build_dimr("DiMR-tiny", **TINY)
    assert [tuple(b.pos_embed.shape) for b in model.branches] == [(1, 4, 128), (1, 16, 64), (1, 64, 32)]  # 2, 4, 8 px
    assert model.branches[0].cascade is None
    cascades = [(b.cascade.proj.in_features, b.cascade.proj.out_features) for b in model.branches[1:]]
    assert cascades == [(128 * 6, 64 * 4), (64 * 4, 32 * 4)]  # (2k + 2) D_low in, D r^2 out (r = 2)
    assert 1e6 < count(model) < 3e6


# ----------------------------------------------------------------------------------------------------------------------
# Behaviour of the tiny size on CPU


def test_tiny_forward_and_every_parameter_gets_a_gradient():
    model = build_dimr("DiMR-tiny", **TINY, generator=torch.Generator().manual_seed(0))
    x, t, y = inputs(model)
    out = model(x, t, y, force_drop_ids=torch.tensor([0, 1, 0]))
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.square().mean().backward()
    # DDP (the training loop) fails on parameters without a gradient: the lower prediction heads are left out for this
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    # all gradients are non-zero except TD's w and b: p0 = p1 at init, so d p(tau) / d(w, b) = sigmoid' (p0 - p1) = 0
    zero = {n.rsplit(".", 1)[-1] for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() == 0}
    assert zero == {"w", "b"}


def test_samples_do_not_depend_on_their_batch_and_drop_ids_select_the_null_class():
    model = build_dimr("DiMR-tiny", **TINY, generator=torch.Generator().manual_seed(0)).eval()
    x, t, y = inputs(model, batch=4)
    with torch.no_grad():
        full, part = model(x, t, y), model(x[:2], t[:2], y[:2])
        # float32; a smaller batch may take another kernel path (summation order), ~1e-7 relative
        torch.testing.assert_close(part, full[:2], rtol=1e-5, atol=1e-5)
        drop = torch.tensor([1, 0, 1, 0])
        null = torch.where(drop.bool(), torch.full_like(y, 4), y)
        torch.testing.assert_close(model(x, t, y, force_drop_ids=drop), model(x, t, null), rtol=0, atol=0)


def test_cascade_is_a_pixel_shuffle_in_dimr_channel_order():
    cascade = build_dimr("DiMR-tiny", **TINY, generator=torch.Generator().manual_seed(0)).branches[1].cascade
    g = torch.Generator().manual_seed(1)
    features = [torch.randn(2, 4, 128, generator=g) for _ in range(6)]  # 2x2 tokens of the Transformer branch
    tau = torch.tensor([-0.2, 0.7])
    with torch.no_grad():
        h = cascade.proj(cascade.norm_in(torch.cat(features, dim=-1), tau))  # [2, 4, r*r*D], channels (i, j, c)
        h = h.reshape(2, 2, 2, 2, 2, 64).permute(0, 5, 3, 4, 1, 2).reshape(2, 64 * 4, 2, 2)  # torch's (c, i, j) order
        ref = F.pixel_shuffle(h, 2).flatten(2).transpose(1, 2)  # [2, 16, 64]: 4x4 tokens, row-major
        # the same values moved by another route, then the same TD-LN: exact
        torch.testing.assert_close(cascade(features, tau), cascade.norm_out(ref, tau), rtol=0, atol=0)


def test_init_is_a_function_of_the_generator():
    a, b, c = (build_dimr("DiMR-tiny", **TINY, generator=torch.Generator().manual_seed(s)) for s in (5, 5, 6))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.head.weight, c.head.weight)


def test_td_rmsnorm_at_a_fixed_time_is_an_rmsnorm_with_gamma_of_t():
    norm = TDRMSNorm(24).double()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in norm.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = torch.randn(2, 5, 24, generator=g, dtype=torch.float64)
    tau = torch.tensor([-0.5, 0.9], dtype=torch.float64)
    s = norm.scale
    for i in range(2):
        gamma = s.p1[0] + (s.p0[0] - s.p1[0]) / (1 + torch.exp(-(s.w[0] * tau[i] + s.b[0])))  # [D]
        ref = x[i] / x[i].square().mean(-1, keepdim=True).add(1e-8).sqrt() * gamma
        # float64, the same formula in another order (~1e-16)
        torch.testing.assert_close(norm(x, tau)[i], ref.detach(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(depths=(4, 3, 3)), "must be odd"),
        (dict(ratios=(4, 3, 1)), "integer factors"),
        (dict(ratios=(2, 1)), "one entry per branch"),
        (dict(norm="bn"), "unknown norm"),
        (dict(learn_sigma=True), "single-scale"),
        (dict(prior_channels=4), "single-scale"),
    ],
)
def test_bad_configs_are_rejected(change, match):
    with pytest.raises(ValueError, match=match):
        build_dimr("DiMR-tiny", **TINY, **change)


def test_bad_inputs_and_names_are_rejected():
    model = build_dimr("DiMR-tiny", **TINY)
    x, t, y = inputs(model)
    with pytest.raises(ValueError, match="prior_channels=0"):
        model(x, t, y, torch.zeros_like(x))
    with pytest.raises(ValueError, match="x must have shape"):
        model(x[..., :4], t, y)
    with pytest.raises(ValueError, match="unknown DiMR size"):
        build_dimr("DiMR-H/2R")


# ----------------------------------------------------------------------------------------------------------------------
# Training through ablations/engine/train.py's loop (the Architecture hook)


class SingleScaleSource:
    """64 class-dependent 8x8x4 latents as one-scale targets, in memory (the TargetSource interface)."""

    def __init__(self, n: int = 64, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % 4
        means = torch.randn(4, 4, 1, 1, generator=g)
        self.x1 = means[self.labels] + 0.3 * torch.randn(n, 4, 8, 8, generator=g)  # [n, 4, 8, 8]
        self.factorization = make_factorization("residual", make_scales([8], 8))  # one scale: single-scale flow

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: Sequence[int]) -> tuple[list[torch.Tensor], torch.Tensor]:
        i = torch.as_tensor(list(indices))
        return [self.x1[i]], self.labels[i]


@pytest.mark.e2e
def test_a_few_training_steps_reduce_the_loss_and_the_stage_reloads(tmp_path):
    source = SingleScaleSource()
    # the shared tiny recipe (tests/_ddp_worker.py) on DiMR-tiny's single scale
    cfg = tiny_config(family="dimr", stage=0, model="DiMR-tiny", steps=60, ckpt_every=60, log_every=60)
    metrics = train(cfg, source, source.factorization, tmp_path, log=QUIET, arch=dimr_architecture())
    losses = [json.loads(line)["loss"] for line in (tmp_path / "stats.jsonl").read_text().splitlines()]
    # Eq. 5 from a random (not zero-initialised) output head: seeds 0-2 end at 0.47-0.53 of the first ten steps' mean
    assert sum(losses[-10:]) / 10 < 0.65 * sum(losses[:10]) / 10, losses
    assert (
        metrics["model"] == "dimr"
        and abs(metrics["params_m"] - count(build_dimr("DiMR-tiny", **TINY)) / 1e6) < 1e-3
    )
    kwargs = json.loads((tmp_path / "model.json").read_text())  # the DiMR constructor kwargs
    assert kwargs["ratios"] == [4, 2, 1] and kwargs["t_scale"] == 1000.0 and kwargs["prior_channels"] == 0
    stage = load_stage(tmp_path, arch=dimr_architecture())
    ckpt = safetensors.torch.load_file(str(latest_checkpoint(tmp_path / "checkpoints").with_suffix(".safetensors")))
    assert all(torch.equal(v, ckpt[f"ema/{k}"]) for k, v in stage.state_dict().items())
    assert isinstance(stage, DiMR) and not stage.training
    with pytest.raises(ValueError, match="is not a dit model"):
        load_stage(tmp_path)  # the default architecture cannot read a DiMR run
