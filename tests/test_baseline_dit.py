"""Tests of the DiT-XL/2 baseline (baselines/dit.py): checkpoint loading, DDPM schedule and step, official CFG quirk."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from baselines.dit import (
    OFFICIAL_URL,
    ddpm_schedule,
    dit_xl2,
    guided_output,
    load_official_checkpoint,
    p_sample_step,
    sample_ddpm,
    space_timesteps,
)
from msf.dit import DiT

# Tiny official-layout DiT: 8x8x4 latents, patch 2, width 64, 4 heads, 10 classes (+ null), learned sigma.
TINY = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=2, num_heads=4, num_classes=10)


def random_dit(seed: int = 0) -> DiT:
    """A tiny DiT whose every trainable weight is random (a stand-in for a trained checkpoint)."""
    model = DiT(**TINY)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoint.


def test_dit_xl2_is_the_released_configuration():
    with torch.device("meta"):
        model = dit_xl2()
    assert (model.input_size, model.in_channels, model.out_channels) == (32, 4, 8)  # learn_sigma: eps + variance
    assert model.y_embedder.embedding_table.num_embeddings == 1001  # 1000 ImageNet classes + the null class
    assert len(model.blocks) == 28 and model.pos_embed.shape == (1, 256, 1152)


def test_checkpoint_round_trip_strict(tmp_path):
    path = tmp_path / "DiT-tiny.pt"
    torch.save(random_dit().state_dict(), path)  # a plain state dict, as the released DiT-XL-2-256x256.pt
    model = load_official_checkpoint(path, DiT(**TINY))
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), random_dit().state_dict().values(), strict=True)
    )


def test_checkpoint_with_wrong_keys_is_rejected(tmp_path):
    sd = random_dit().state_dict()
    sd["blocks.0.attn.in_proj.weight"] = sd.pop("blocks.0.attn.qkv.weight")
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(RuntimeError, match="in_proj"):
        load_official_checkpoint(tmp_path / "bad.pt", DiT(**TINY))


def test_missing_checkpoint_names_path_and_url(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt") as err:
        load_official_checkpoint(tmp_path / "nope.pt", DiT(**TINY))
    assert OFFICIAL_URL in str(err.value)


# ----------------------------------------------------------------------------------------------------------------------
# Schedule and one step against independent references.


def test_space_timesteps_matches_closed_form():
    # round(i * 999 / 249) never sits on a .5 tie (2 * 999 * i is even, 249 * odd is odd), so the accumulated and the
    # multiplied strides round identically.
    assert space_timesteps(1000, 250) == [round(i * 999 / 249) for i in range(250)]
    assert space_timesteps(1000, 1000) == list(range(1000))
    with pytest.raises(ValueError, match="respaced"):
        space_timesteps(1000, 1)


def test_respaced_schedule_keeps_abar_and_matches_diffusers():
    s = ddpm_schedule(1000, 250)
    ref = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    # diffusers builds its schedule in float32: cumulative products of 1000 factors agree to ~1e-6 relative.
    torch.testing.assert_close(s.alphas_cumprod, ref.alphas_cumprod[s.timesteps].double(), rtol=1e-5, atol=0)
    # respacing keeps abar at the kept steps: prod(1 - beta_k) telescopes (float64 rounding only).
    torch.testing.assert_close(torch.cumprod(1 - s.betas, 0), s.alphas_cumprod, rtol=1e-12, atol=0)


@pytest.mark.parametrize("k", [0, 1, 5, 9])
def test_one_step_matches_diffusers_learned_range(k):
    s = ddpm_schedule(1000, 10)
    ref = DDPMScheduler(variance_type="learned_range", clip_sample=False)  # linear 1e-4..0.02, 1000 steps
    ref.set_timesteps(timesteps=s.timesteps.flip(0).tolist())  # the respaced steps, descending
    # Independent float64 abar (diffusers would otherwise work in float32): isolates the step formula.
    ref.alphas_cumprod = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    ref.one = torch.tensor(1.0, dtype=torch.float64)
    g = torch.Generator().manual_seed(k)
    x = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    out = torch.cat([torch.randn(2, 4, 8, 8, generator=g), torch.rand(2, 4, 8, 8, generator=g) * 2 - 1], 1).double()
    for seed in (0, 1):  # two noises: agreement for both pins the mean and the standard deviation
        noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        theirs = ref.step(out, int(s.timesteps[k]), x, generator=torch.Generator().manual_seed(seed)).prev_sample
        # float64 on both sides, different but equivalent formulas: agreement to ~1e-12.
        torch.testing.assert_close(p_sample_step(s, out, x, k, noise), theirs, rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------------------------------------------------
# Guidance quirk and the sampler.


def label_model(x, t, y):
    """Fake eps/variance model: channel c of sample b is y_b + 10 c (8 channels), so every mix is traceable."""
    out = y.double()[:, None, None, None] + 10 * torch.arange(8.0, dtype=torch.float64)[:, None, None]  # [B, 8, 1, 1]
    return out.expand(-1, -1, *x.shape[2:])


def test_guidance_touches_only_first_three_eps_channels():
    x = torch.zeros(2, 4, 2, 2, dtype=torch.float64)
    y, w = torch.tensor([3, 7]), 4.0
    out = guided_output(label_model, x, torch.zeros(2), y, w, null_class=10)
    cond = label_model(x, None, y)
    uncond = label_model(x, None, torch.full_like(y, 10))
    torch.testing.assert_close(out[:, :3], uncond[:, :3] + w * (cond[:, :3] - uncond[:, :3]), rtol=0, atol=0)
    torch.testing.assert_close(out[:, 3:], cond[:, 3:], rtol=0, atol=0)  # eps channel 3 and all variance channels
    full = guided_output(label_model, x, torch.zeros(2), y, w, null_class=10, guided_channels=4)
    assert not torch.equal(full[:, 3], out[:, 3])


def test_sampler_recovers_a_point_mass():
    """Closed form: for data = c, the exact eps is (x - sqrt(abar) c) / sqrt(1 - abar) and x0 = c at every step."""
    c, s = 0.7, ddpm_schedule(1000, 20)
    abar = torch.zeros(1000, dtype=torch.float64)
    abar[s.timesteps] = s.alphas_cumprod

    def exact(x, t, y):
        a = abar[t][:, None, None, None]
        eps = (x - a.sqrt() * c) / (1 - a).sqrt()
        return torch.cat([eps, -torch.ones_like(eps)], 1)  # variance values -1: the posterior variance

    out = sample_ddpm(exact, torch.zeros(2, dtype=torch.long), [0, 1], 1.0, 20, (4, 4, 4), dtype=torch.float64)
    # The last step has abar_prev = 1, so its mean is exactly x0 = c and no noise is added (float64 rounding).
    torch.testing.assert_close(out, torch.full_like(out, c), rtol=0, atol=1e-9)


def test_sampler_end_to_end_deterministic_and_batch_independent():
    model = random_dit()
    kw = dict(cfg_scale=1.5, steps=4, latent_shape=(4, 8, 8), null_class=10)
    y = torch.tensor([2, 5, 9])
    batch = sample_ddpm(model, y, [11, 12, 13], **kw)
    again = sample_ddpm(model, y, [11, 12, 13], **kw)
    alone = sample_ddpm(model, y[:1], [11], **kw)
    other = sample_ddpm(model, y[:1], [14], **kw)
    assert batch.shape == (3, 4, 8, 8) and torch.isfinite(batch).all()
    assert torch.equal(batch, again)
    # batch 1 vs 3 may change float32 matmul blocking; 4 steps keep the drift at ~1e-6.
    torch.testing.assert_close(alone, batch[:1], rtol=1e-4, atol=1e-4)
    assert (other - alone).abs().max() > 0.1


def test_sampler_rejects_mismatched_seeds():
    with pytest.raises(ValueError, match="one seed per label"):
        sample_ddpm(label_model, torch.tensor([1, 2]), [0], 1.0, 4, (4, 2, 2))
