"""Property tests of the multi-scale factorization (Algorithms 1-3, Sec. 3.2-3.4).

Hypothesis settings (examples, deadline) come from tests/conftest.py only.
"""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from msf.factorize import (
    FACTORIZATIONS,
    MODES,
    Down,
    ScaleSpecError,
    Up,
    accumulate,
    input_priors,
    make_factorization,
    make_scales,
    residual_latents,
)

DTYPES = (torch.float32, torch.float64)


@st.composite
def scale_lists(draw, max_full: int = 16, max_scales: int = 4):
    """A valid increasing scale list (1 to 4 scales) ending at a random full latent size."""
    full = draw(st.integers(1, max_full))
    k = draw(st.integers(0, min(max_scales - 1, full - 1)))
    smaller = draw(st.lists(st.integers(1, full - 1), min_size=k, max_size=k, unique=True)) if k else []
    return make_scales(sorted(smaller) + [full], full)


@st.composite
def latent_cases(draw):
    """(scales, mode, dtype, f_hat, f_0) with random batch, channels and magnitudes."""
    scales = draw(scale_lists())
    mode = draw(st.sampled_from(MODES))
    dtype = draw(st.sampled_from(DTYPES))
    B, C = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    magnitude = draw(st.sampled_from([1e-3, 1.0, 30.0]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    f_hat = magnitude * torch.randn(B, C, scales.full, scales.full, generator=g, dtype=torch.float64)
    f_0 = magnitude * torch.randn(B, C, scales.sizes[0], scales.sizes[0], generator=g, dtype=torch.float64)
    if scales.N == 0:
        f_0 = f_hat  # one scale: I_l = I_h, so the base is the full latent itself
    return scales, mode, dtype, f_hat.to(dtype), f_0.to(dtype)


def rounding_bound(f_hat, R, scales, mode):
    """Largest composition error that float rounding allows for sum_i Up(R_i) vs f_hat (Algorithms 1 + 3).

    Algorithm 1 does N subtractions and the composition N additions, each exact up to the unit roundoff u = eps/2 of
    its result. So |error| <= 2N * u * M, M the largest intermediate magnitude (f_hat, each Up(R_i), each partial sum).
    We allow 2N * eps * M: a factor 2 of slack over the rigorous bound, still within a few ulps.
    """
    ups = [Up(r, scales.full, mode) for r in R]
    running, M = ups[0], max(f_hat.abs().max().item(), ups[0].abs().max().item())
    for u in ups[1:]:
        running = running + u
        M = max(M, u.abs().max().item(), running.abs().max().item())
    return 2 * scales.N * torch.finfo(f_hat.dtype).eps * M, M


@given(latent_cases())
def test_residual_accumulation_reconstructs_exactly(case):
    """sum_i Up(f_resi^{h_i}, h_N) == f_hat for any base f_0, mode, dtype and number of scales (Algorithms 1 + 3)."""
    scales, mode, dtype, f_hat, f_0 = case
    R = residual_latents(f_hat, f_0, scales, mode)
    err = (make_factorization("residual", scales, mode).compose(R) - f_hat).abs().max().item()
    bound, M = rounding_bound(f_hat, R, scales, mode)
    assert err <= bound
    if dtype == torch.float64:
        assert err <= 1e-12 * M  # the float64 target: ~1e-12 relative to the magnitudes involved


@given(latent_cases())
def test_teacher_forcing_priors_equal_inference_accumulation(case):
    """Algorithm 2's priors are bit-identical to Algorithm 3's accumulated priors when each stage returns its target."""
    scales, mode, _, f_hat, f_0 = case
    R = residual_latents(f_hat, f_0, scales, mode)
    P = input_priors(R, scales, mode)
    state, prior = None, None
    for i, f_i in enumerate(R):
        if i > 0:
            assert P[i] is not None and prior is not None and torch.equal(P[i], prior)
        state, prior = accumulate(state, f_i, i, scales, mode)
    assert P[0] is None and prior is None and len(P) == len(R)


@given(latent_cases(), st.sampled_from(FACTORIZATIONS))
def test_every_factorization_sampling_steps_match_teacher_forcing(case, name):
    """For all four factorizations, step() fed the true targets yields priors() and ends at compose()."""
    scales, mode, _, f_hat, _ = case
    fac = make_factorization(name, scales, mode)
    targets = fac.targets(f_hat, lambda x: x, 1)  # pixel world: encode = identity, factor 1
    priors = fac.priors(targets)
    state, prior = None, None
    for i, f_i in enumerate(targets):
        assert f_i.shape == (*f_hat.shape[:2], scales.sizes[i], scales.sizes[i])  # shape contract
        if i > 0:
            assert priors[i] is not None and prior is not None and torch.equal(priors[i], prior)
            assert priors[i].shape == f_i.shape
        state, prior = fac.step(state, f_i, i)
    assert state is not None and torch.equal(state, fac.compose(targets))


@given(latent_cases(), st.sampled_from(("residual_latent_base", "latent_resize")))
def test_latent_factorizations_compose_to_the_latent(case, name):
    """residual_latent_base and latent_resize reconstruct f_hat (exactly for latent_resize: f_N = Down(f_hat, h_N))."""
    scales, mode, dtype, f_hat, _ = case
    fac = make_factorization(name, scales, mode)
    out = fac.compose(fac.targets(f_hat, lambda x: x, 1))
    if name == "latent_resize":
        assert torch.equal(out, f_hat)
    else:
        bound, _ = rounding_bound(f_hat, fac.targets(f_hat, lambda x: x, 1), scales, mode)
        assert (out - f_hat).abs().max().item() <= bound


@given(latent_cases(), st.floats(-3, 3), st.floats(-3, 3))
def test_residual_latent_base_is_linear(case, a, b):
    """With f_0 = Down(f_hat), every target is a linear function of f_hat (Up/Down are linear in every mode)."""
    scales, mode, _, x, _ = case
    x = x.double()
    y = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    fac = make_factorization("residual_latent_base", scales, mode)
    lhs = fac.targets(a * x + b * y, lambda v: v, 1)
    tx, ty = fac.targets(x, lambda v: v, 1), fac.targets(y, lambda v: v, 1)
    scale = max(1.0, x.abs().max().item(), y.abs().max().item())
    for t_l, t_x, t_y in zip(lhs, tx, ty, strict=True):
        # float64 with O(10) ops per element: 1e-12 relative is ~5000x the unit roundoff, ample and still sharp
        assert torch.allclose(t_l, a * t_x + b * t_y, rtol=0, atol=1e-12 * scale * (abs(a) + abs(b) + 1))


@given(latent_cases(), st.sampled_from(FACTORIZATIONS))
def test_one_scale_is_plain_single_scale_diffusion(case, name):
    """A single scale gives targets == [latent] and no prior, for every factorization (a plain DiT)."""
    _, mode, _, f_hat, _ = case
    scales = make_scales([f_hat.shape[-1]], f_hat.shape[-1])
    fac = make_factorization(name, scales, mode)
    targets = fac.targets(f_hat, lambda x: x, 1)
    assert len(targets) == 1 and torch.equal(targets[0], f_hat)
    assert fac.priors(targets) == [None]
    assert torch.equal(fac.compose(targets), f_hat)


def test_up_down_identity_at_same_size_and_direction_checks():
    x = torch.randn(2, 3, 8, 8)
    for mode in MODES:
        assert Up(x, 8, mode) is x and Down(x, 8, mode) is x
    with pytest.raises(ValueError, match="larger"):
        Up(x, 4)
    with pytest.raises(ValueError, match="smaller"):
        Down(x, 16)
    with pytest.raises(ValueError, match="unknown resize mode"):
        Up(x, 16, "lanczos")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "sizes, full, multiple, message",
    [
        ([], 32, 1, "empty"),
        ([24, 16, 32], 32, 1, "strictly increasing"),
        ([16, 16, 32], 32, 1, "strictly increasing"),
        ([16, 24], 32, 1, "must equal the full latent size 32"),
        ([0, 32], 32, 1, "positive"),
        ([-8, 32], 32, 1, "positive"),
        ([15, 32], 32, 2, "not divisible by 2"),
        ([16.0, 32], 32, 1, "integers"),
    ],
)
def test_bad_scale_specs_raise_clear_errors(sizes, full, multiple, message):
    with pytest.raises(ScaleSpecError, match=message):
        make_scales(sizes, full, multiple)


def test_unknown_factorization_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown factorization 'wavelet'"):
        make_factorization("wavelet", make_scales([4, 8], 8))


# ----------------------------------------------------------------------------------------------------------------------
# With a real (tiny, random-weight) diffusers AutoencoderKL: the base of `residual` is E(downsampled image).


@pytest.fixture(scope="module")
def tiny_vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
    ).double()
    return vae.eval()


@pytest.mark.parametrize("mode", MODES)
def test_residual_base_is_the_latent_of_the_downsampled_image(tiny_vae, mode):
    """Algorithm 1 line 2: f_0 = E(I_l) with I_l the bilinear-downsampled image; the rest composes back to E(I_h)."""
    sf = tiny_vae.config.scaling_factor

    @torch.no_grad()
    def encode(x):
        return tiny_vae.encode(x).latent_dist.mean * sf

    factor = 2 ** (len(tiny_vae.config.block_out_channels) - 1)
    image = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2 - 1
    scales = make_scales([4, 6, 8], 8)
    fac = make_factorization("residual", scales, mode)
    R = fac.targets(image, encode, factor)
    I_l = torch.nn.functional.interpolate(image, size=(8, 8), mode="bilinear", antialias=True, align_corners=False)
    assert R[0].shape == (2, 4, 4, 4)
    torch.testing.assert_close(R[0], encode(I_l), rtol=0, atol=1e-12)  # same float64 computation: ~exact
    torch.testing.assert_close(fac.compose(R), encode(image), rtol=0, atol=1e-12)
    # the base is *not* the resized latent: the paper's point (Sec. 3.2) is that these differ
    assert not torch.allclose(R[0], Down(encode(image), 4, mode), atol=1e-3)
