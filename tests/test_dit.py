"""Tests of msf/dit.py against diffusers' DiTTransformer2DModel and the official DiT checkpoint layout; TD-LN option."""

from __future__ import annotations

import json
import math

import pytest
import torch
from _ddp_worker import MemorySource, tiny_config
from diffusers import DiTTransformer2DModel
from torch import nn

from ablations.engine.train import load_stage, train
from msf.dit import DIT_CONFIGS, DiT, DiTBlock, TDBlock, TDLayerNorm, build_dit, set_attention, td_time
from msf.dit import Attention as DiTAttention

# A tiny model shared by most tests: 8x8x4 latents, patch 2 (16 tokens), width 64, 4 heads, 10 classes.
TINY = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=2, num_heads=4, num_classes=10)


def perturbed(model: DiT, seed: int = 0, skip: tuple[str, ...] = ("prior_embedder",)) -> DiT:
    """Give every zero-initialised trainable weight random values so all paths matter (pos_embed stays sin-cos)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad and not name.startswith(skip):
                p.copy_(0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def inputs(model: DiT, batch: int = 3, seed: int = 1, dtype: torch.dtype = torch.float32):
    """Random latents, integer DDPM timesteps and labels for ``model``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, model.in_channels, model.input_size, model.input_size, generator=g, dtype=dtype)
    t = torch.randint(0, 1000, (batch,), generator=g).to(dtype)
    y = torch.randint(0, model.y_embedder.num_classes, (batch,), generator=g)
    return x, t, y


# ----------------------------------------------------------------------------------------------------------------------
# Official checkpoint layout, restated independently of msf/dit.py from facebookresearch/DiT models.py.


def official_shapes(depth, D, heads, p, C, num_classes, learn_sigma, input_size) -> dict[str, tuple[int, ...]]:
    """Key -> shape of an official DiT state dict (class_dropout_prob > 0, mlp_ratio 4)."""
    out = 2 * C if learn_sigma else C
    s: dict[str, tuple[int, ...]] = {
        "pos_embed": (1, (input_size // p) ** 2, D),
        "x_embedder.proj.weight": (D, C, p, p),
        "x_embedder.proj.bias": (D,),
        "t_embedder.mlp.0.weight": (D, 256),
        "t_embedder.mlp.0.bias": (D,),
        "t_embedder.mlp.2.weight": (D, D),
        "t_embedder.mlp.2.bias": (D,),
        "y_embedder.embedding_table.weight": (num_classes + 1, D),
    }
    for n in range(depth):
        for name, shape in {
            "attn.qkv": (3 * D, D),
            "attn.proj": (D, D),
            "mlp.fc1": (4 * D, D),
            "mlp.fc2": (D, 4 * D),
            "adaLN_modulation.1": (6 * D, D),
        }.items():
            s[f"blocks.{n}.{name}.weight"], s[f"blocks.{n}.{name}.bias"] = shape, shape[:1]
    s["final_layer.linear.weight"], s["final_layer.linear.bias"] = (p * p * out, D), (p * p * out,)
    s["final_layer.adaLN_modulation.1.weight"], s["final_layer.adaLN_modulation.1.bias"] = (2 * D, D), (2 * D,)
    return s


def test_xl2_state_dict_keys_and_shapes_match_official():
    with torch.device("meta"):
        model = build_dit("DiT-XL/2")
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == official_shapes(28, 1152, 16, 2, 4, 1000, True, 32)


@pytest.mark.parametrize("learn_sigma", [True, False])
def test_official_layout_random_state_dict_loads_strict(learn_sigma):
    g = torch.Generator().manual_seed(0)
    shapes = official_shapes(2, 64, 4, 2, 4, 10, learn_sigma, 8)
    sd = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
    model = DiT(**TINY, learn_sigma=learn_sigma)
    model.load_state_dict(sd, strict=True)  # raises on any missing/unexpected key or shape mismatch
    assert torch.equal(model.blocks[1].mlp.fc2.weight, sd["blocks.1.mlp.fc2.weight"])


# ----------------------------------------------------------------------------------------------------------------------
# Agreement with diffusers' DiTTransformer2DModel (an independent port of the official model).


def to_diffusers(sd: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """Official/our DiT state dict -> diffusers' layout (cf. diffusers scripts/convert_dit_to_diffusers.py)."""
    out = {
        "pos_embed.proj.weight": sd["x_embedder.proj.weight"],
        "pos_embed.proj.bias": sd["x_embedder.proj.bias"],
        "proj_out_1.weight": sd["final_layer.adaLN_modulation.1.weight"],
        "proj_out_1.bias": sd["final_layer.adaLN_modulation.1.bias"],
        "proj_out_2.weight": sd["final_layer.linear.weight"],
        "proj_out_2.bias": sd["final_layer.linear.bias"],
    }
    names = {"norm1.linear": "adaLN_modulation.1", "attn1.to_out.0": "attn.proj", "ff.net.0.proj": "mlp.fc1"}
    names["ff.net.2"] = "mlp.fc2"
    for n in range(depth):
        d, o = f"transformer_blocks.{n}.", f"blocks.{n}."
        emb = d + "norm1.emb."  # diffusers keeps a copy of the t/y embedders in every block
        for w in ("weight", "bias"):
            out[f"{emb}timestep_embedder.linear_1.{w}"] = sd[f"t_embedder.mlp.0.{w}"]
            out[f"{emb}timestep_embedder.linear_2.{w}"] = sd[f"t_embedder.mlp.2.{w}"]
            q, k, v = sd[f"{o}attn.qkv.{w}"].chunk(3, dim=0)
            out[f"{d}attn1.to_q.{w}"], out[f"{d}attn1.to_k.{w}"], out[f"{d}attn1.to_v.{w}"] = q, k, v
            for theirs, ours in names.items():
                out[f"{d}{theirs}.{w}"] = sd[f"{o}{ours}.{w}"]
        out[f"{emb}class_embedder.embedding_table.weight"] = sd["y_embedder.embedding_table.weight"]
    return out


def diffusers_twin(model: DiT) -> DiTTransformer2DModel:
    """The same network in diffusers, weights converted; its own sin-cos position table (a buffer) stays."""
    D, heads = model.pos_embed.shape[-1], model.blocks[0].attn.num_heads
    ref = DiTTransformer2DModel(
        num_attention_heads=heads,
        attention_head_dim=D // heads,
        in_channels=model.in_channels,
        out_channels=model.out_channels,
        num_layers=len(model.blocks),
        sample_size=model.input_size,
        patch_size=model.patch_size,
        num_embeds_ada_norm=model.y_embedder.num_classes,
        norm_eps=1e-6,  # official DiT uses eps 1e-6 in every LayerNorm; diffusers' default is 1e-5
    ).to(model.pos_embed.dtype)
    sd = to_diffusers(model.state_dict(), len(model.blocks))
    ref.load_state_dict(sd, strict=True)
    for block in ref.transformer_blocks:
        # diffusers' DiT divides the frequency exponents by 127 (downscale_freq_shift=1); official DiT by 128.
        block.norm1.emb.time_proj.downscale_freq_shift = 0
    return ref.eval()


@pytest.mark.parametrize(
    "config",
    [
        dict(learn_sigma=True),
        dict(learn_sigma=False),
        dict(learn_sigma=False, input_size=12, patch_size=4, hidden_size=96, num_heads=6, depth=3),
    ],
)
def test_forward_matches_diffusers(config):
    model = perturbed(DiT(**{**TINY, **config})).double().eval()
    ref = diffusers_twin(model)
    x, t, y = inputs(model, dtype=torch.float64)
    with torch.no_grad():
        ours = model(x, t, y)
        theirs = ref(x, timestep=t, class_labels=y).sample
    assert ours.shape == (3, model.out_channels, model.input_size, model.input_size)
    assert ours.abs().mean() > 0.1  # not a vacuous comparison of zeros
    # float64 both sides; only the timestep features are float32 (identically in both), so agreement is ~1e-13.
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------------------------------------------------
# Behaviour.


def test_fresh_model_outputs_zero_adaln_zero():
    model = DiT(**TINY, generator=torch.Generator().manual_seed(0)).eval()
    assert torch.count_nonzero(model(*inputs(model))) == 0  # zero-initialised final layer (adaLN-Zero, DiT Sec 3.2)


def test_init_is_a_function_of_the_generator():
    a, b = (DiT(**TINY, generator=torch.Generator().manual_seed(5)) for _ in range(2))
    c = DiT(**TINY, generator=torch.Generator().manual_seed(6))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.blocks[0].attn.qkv.weight, c.blocks[0].attn.qkv.weight)


def test_force_drop_ids_selects_the_null_class():
    model = perturbed(DiT(**TINY)).eval()
    x, t, y = inputs(model)
    drop = torch.tensor([1, 0, 1])
    with torch.no_grad():
        dropped = model(x, t, y, force_drop_ids=drop)
        expect = model(x, t, torch.where(drop.bool(), torch.full_like(y, 10), y))
    torch.testing.assert_close(dropped, expect, rtol=0, atol=0)  # the same labels go through the same ops


def test_label_dropout_uses_the_passed_generator_only():
    model = perturbed(DiT(**TINY, class_dropout_prob=0.5)).train()
    x, t, y = inputs(model, batch=16)
    with pytest.raises(ValueError, match="Generator"):
        model(x, t, y)
    state = torch.random.get_rng_state()
    a = model(x, t, y, generator=torch.Generator().manual_seed(3))
    b = model(x, t, y, generator=torch.Generator().manual_seed(3))
    model.eval()
    c = model(x, t, y)
    assert torch.equal(torch.random.get_rng_state(), state)  # no global RNG use
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)  # with p=0.5 over 16 labels some were dropped in training mode


def test_no_null_class_without_dropout():
    model = DiT(**TINY, class_dropout_prob=0.0)
    assert model.y_embedder.embedding_table.num_embeddings == 10  # official: null row only when dropout > 0
    with pytest.raises(ValueError, match="null class"):
        model(*inputs(model), force_drop_ids=torch.ones(3))


@pytest.mark.parametrize("mode", ["concat", "add"])
def test_prior_paths(mode):
    model = perturbed(DiT(**TINY, prior_channels=4, prior_mode=mode)).eval()
    x, t, y = inputs(model)
    prior = torch.randn(x.shape, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        zero, full = model(x, t, y, torch.zeros_like(prior)), model(x, t, y, prior)
        if mode == "add":
            assert model.x_embedder.proj.in_channels == 4
            torch.testing.assert_close(zero, full, rtol=0, atol=0)  # zero-initialised prior_embedder: no effect
            perturbed(model, seed=2, skip=())
            zero, full = model(x, t, y, torch.zeros_like(prior)), model(x, t, y, prior)
        else:
            assert model.x_embedder.proj.in_channels == 8 and model.prior_embedder is None
    assert (zero - full).abs().max() > 1e-2


def test_t_scale_multiplies_time():
    flow = perturbed(DiT(**TINY, t_scale=1000.0)).eval()
    ddpm = DiT(**TINY).eval()
    ddpm.load_state_dict(flow.state_dict())
    x, _, y = inputs(flow)
    t = torch.tensor([0.0, 0.25, 1.0])
    with torch.no_grad():
        # 1000 * t is exact in float32 for these t, so both see identical frequency features.
        torch.testing.assert_close(flow(x, t, y), ddpm(x, 1000 * t, y), rtol=0, atol=0)


def test_sdpa_matches_explicit_attention():
    torch.manual_seed(0)
    attn = DiTAttention(64, 4, "sdpa").double()
    x = torch.randn(2, 16, 64, dtype=torch.float64)
    q, k, v = attn.qkv(x).reshape(2, 16, 3, 4, 16).permute(2, 0, 3, 1, 4)  # [B, H, T, d] each
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(16), dim=-1)
    ref = attn.proj((w @ v).transpose(1, 2).reshape(2, 16, 64))
    torch.testing.assert_close(attn(x), ref, rtol=1e-12, atol=1e-12)  # float64, same math in another order


def test_set_attention_switches_every_block_and_checks_the_name():
    model = DiT(input_size=4, patch_size=2, in_channels=4, hidden_size=32, depth=3, num_heads=2, num_classes=3)
    assert set_attention(model, "sdpa") is model
    assert {b.attn.backend for b in model.blocks} == {"sdpa"}
    with pytest.raises(ValueError, match="unknown attention backend 'flash'"):
        set_attention(model, "flash")


def test_xformers_backend_refuses_cpu():
    with pytest.raises(ValueError, match="xformers"):
        DiTAttention(64, 4, "xformers")(torch.randn(1, 4, 64))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m, x, t, y: m(x[:, :3], t, y), "x must have shape"),
        (lambda m, x, t, y: m(x, t, y, torch.zeros_like(x)), "prior_channels=0"),
    ],
)
def test_bad_inputs(call, match):
    model = DiT(**TINY)
    with pytest.raises(ValueError, match=match):
        call(model, *inputs(model))


def test_missing_prior_and_bad_names():
    model = DiT(**TINY, prior_channels=4)
    with pytest.raises(ValueError, match="prior must have shape"):
        model(*inputs(model))
    with pytest.raises(ValueError, match="unknown DiT size"):
        build_dit("DiT-XXL/2")
    with pytest.raises(ValueError, match="prior_mode"):
        DiT(**TINY, prior_mode="film")  # type: ignore[arg-type]


def test_size_table():
    assert len(DIT_CONFIGS) == 14
    assert DIT_CONFIGS["DiT-B/4"] == dict(depth=12, hidden_size=768, num_heads=12, patch_size=4)
    assert DIT_CONFIGS["MSF-stage2"] == dict(depth=10, hidden_size=1280, num_heads=16, patch_size=2)


# ----------------------------------------------------------------------------------------------------------------------
# TD-LN conditioning (DiMR Sec. 3.3): conditioning="tdln".


def random_td(norm: TDLayerNorm, seed: int = 0) -> TDLayerNorm:
    """Give p0, p1, w, b independent random values (at init p0 = p1: gamma and beta would not depend on t)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in norm.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    return norm


def test_td_layernorm_at_a_fixed_time_is_a_layernorm_with_gamma_beta_of_t():
    D = 48
    norm = random_td(TDLayerNorm(D)).double()
    x = torch.randn(4, 7, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    tau = torch.tensor([-1.0, -0.3, 0.2, 1.0], dtype=torch.float64)
    out = norm(x, tau)
    p0, p1, w, b = norm.affine.p0, norm.affine.p1, norm.affine.w, norm.affine.b  # [2, D] each: rows gamma, beta
    for i in range(4):
        s = 1 / (1 + torch.exp(-(w * tau[i] + b)))  # the logistic function written out, not torch.sigmoid
        gamma, beta = (p1 + s * (p0 - p1)).detach()
        ref = nn.LayerNorm(D, eps=1e-6, dtype=torch.float64)  # an ordinary LayerNorm with those parameters
        with torch.no_grad():
            ref.weight.copy_(gamma)
            ref.bias.copy_(beta)
        # float64 on both sides, same statistics; the only difference is the order of the affine ops (~1e-15)
        torch.testing.assert_close(out[i], ref(x[i]), rtol=1e-12, atol=1e-12)
    assert (out[0] - out[3]).abs().max() > 0.1  # gamma(t), beta(t) do vary with t here


def test_td_time_maps_the_ddpm_range_to_minus_one_one():
    # DiMR train.py: log_snr = 8 n / 1000 - 4 and tau = log_snr / 4; flow t in [0, 1] with t_scale 1000 is n = 1000 t
    torch.testing.assert_close(td_time(torch.tensor([0.0, 0.5, 1.0]), 1000.0), torch.tensor([-1.0, 0.0, 1.0]))
    torch.testing.assert_close(td_time(torch.tensor([0.0, 250.0, 999.0]), 1.0), torch.tensor([-1.0, -0.5, 0.998]))


def test_default_conditioning_is_adaln_zero():
    model = DiT(**TINY)
    assert model.conditioning == "adaln_zero" and model.t_embedder is not None
    assert all(isinstance(b, DiTBlock) for b in model.blocks)
    assert not any(isinstance(m, TDLayerNorm) for m in model.modules())


def test_tdln_dit_shapes_forward_backward_and_label_token():
    model = DiT(**TINY, conditioning="tdln", class_dropout_prob=0.1, generator=torch.Generator().manual_seed(0))
    assert model.t_embedder is None and all(isinstance(b, TDBlock) for b in model.blocks)
    x, t, y = inputs(model)
    assert model.eval()(x, t, y).shape == (3, 8, 8, 8)  # learn_sigma default: 2C channels
    model = perturbed(model).train()  # the zero-initialised output layer would stop every other gradient
    model(x, t, y, force_drop_ids=torch.tensor([0, 1, 0])).square().mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert all(grads[f"blocks.0.norm1.affine.{k}"].abs().sum() > 0 for k in ("p0", "p1", "w", "b"))  # TD-LN trains
    model.eval()
    with torch.no_grad():  # the label enters through its token: another label, another output
        assert (model(x, t, y) - model(x, t, (y + 1) % 10)).abs().max() > 1e-3


def test_tdln_time_enters_through_the_norms_only():
    fresh = DiT(**TINY, conditioning="tdln", generator=torch.Generator().manual_seed(0)).eval()
    torch.nn.init.normal_(fresh.final_layer.linear.weight, generator=torch.Generator().manual_seed(2))  # not zero
    x, _, y = inputs(fresh)
    t0, t1 = torch.zeros(3), torch.full((3,), 999.0)
    with torch.no_grad():
        # p0 = p1 at initialisation: gamma, beta are constant in t, and nothing else sees t
        torch.testing.assert_close(fresh(x, t0, y), fresh(x, t1, y), rtol=0, atol=0)
        for m in fresh.modules():
            if isinstance(m, TDLayerNorm):
                random_td(m)
        assert (fresh(x, t0, y) - fresh(x, t1, y)).abs().max() > 1e-3


def test_tdln_has_fewer_parameters_than_adaln_zero():
    with torch.device("meta"):
        adaln, tdln = build_dit("DiT-XL/2"), build_dit("DiT-XL/2", conditioning="tdln")
    n_adaln, n_tdln = (sum(p.numel() for p in m.parameters()) for m in (adaln, tdln))
    assert (n_adaln, n_tdln) == (675_129_632, 448_227_104)
    # closed form of the difference: per block adaLN's 6 D^2 + 6 D vs two TD-LNs' 2 x 8 D; the final layer's
    # 2 D^2 + 2 D vs 8 D; the timestep MLP 256 D + D + D^2 + D exists only with adaLN-Zero
    D, depth = 1152, 28
    assert n_adaln - n_tdln == depth * (6 * D * D + 6 * D - 16 * D) + (2 * D * D + 2 * D - 8 * D) + (D * D + 258 * D)


def test_unknown_conditioning_is_rejected():
    with pytest.raises(ValueError, match="unknown conditioning 'film'"):
        DiT(**TINY, conditioning="film")  # type: ignore[arg-type]


@pytest.mark.e2e
def test_an_msf_stage_with_tdln_trains_through_model_overrides(tmp_path):
    source = MemorySource()  # stage 1 of a 4 -> 8 residual factorization: the TD-LN stage also takes the prior
    overrides = dict(depth=2, hidden_size=32, num_heads=2, conditioning="tdln")
    train(
        tiny_config(steps=60, ckpt_every=60, model_overrides=overrides),
        source,
        source.factorization,
        tmp_path,
        log=lambda _: None,
    )
    losses = [json.loads(line)["loss"] for line in (tmp_path / "stats.jsonl").read_text().splitlines()]
    # seeds 0-2 end at 0.74-0.75 of the first ten steps' mean (adaLN-Zero: 0.55): TD-LN starts time-blind (p0 = p1)
    assert sum(losses[-10:]) / 10 < 0.85 * sum(losses[:10]) / 10, losses
    assert load_stage(tmp_path).conditioning == "tdln"
