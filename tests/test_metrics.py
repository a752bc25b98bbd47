"""Tests of the metric stages (features -> statistics -> numbers) and the embedded classifier (issue #6).

Independent references: scipy.linalg.sqrtm for FID, closed forms for Gaussians and for the Inception Score, numpy
for statistics, and torch-fidelity's own ``calculate_metrics`` end to end. Each tolerance is stated where it is used.
"""

import contextlib
import math
import signal
import statistics

import numpy as np
import pytest
import scipy.linalg
import torch
import torch_fidelity
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import save_file

from ablations.engine import metrics as M
from ablations.engine.classifier import (
    EmbeddedClassifier,
    accuracy,
    classifier_digest,
    classifier_metadata,
    load_classifier,
    save_classifier,
    train_classifier,
)
from ablations.engine.images import to_uint8

CPU = torch.device("cpu")


def random_images(n: int, seed: int, size: int = 16, low: int = 0, high: int = 256) -> torch.Tensor:
    """uint8 [n, 3, size, size] uniform noise in [low, high)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, (n, 3, size, size), generator=g, dtype=torch.uint8)


def gaussian_features(n: int, d: int, seed: int, shift: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    """float64 [n, d]: correlated Gaussian features (a random mixing of standard normals)."""
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(d, d, generator=g, dtype=torch.float64) / math.sqrt(d) + torch.eye(d, dtype=torch.float64)
    return shift + scale * torch.randn(n, d, generator=g, dtype=torch.float64) @ mixing


def scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    """Independent FID: numpy statistics and scipy.linalg.sqrtm, as ADM's evaluator and TTUR compute it."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def fid_of(a: torch.Tensor, b: torch.Tensor) -> float:
    """FID through this module's statistics and distance."""
    return M.fid_from_stats(*M.feature_stats(a), *M.feature_stats(b))


@contextlib.contextmanager
def time_limit(seconds: int):
    """Fail instead of hanging: SIGALRM interrupts anything (a blocked download included) after ``seconds``."""

    def on_alarm(signum, frame):
        raise TimeoutError(f"took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def classifier() -> EmbeddedClassifier:
    """An untrained, fixed-seed tiny classifier (4 classes, 32-d features): a deterministic feature network."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return EmbeddedClassifier(num_classes=4, width=8).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def extractor(classifier) -> M.FeatureExtractor:
    return M.embedded_extractor(classifier, CPU)


# ----------------------------------------------------------------------------------------------------------------------
# Images and labels.


def test_to_uint8_matches_dit_formula_on_edge_values():
    # All inputs and 127.5 * x + 128 are exact in float32, so the expected bytes are exact: -1 -> 0.5 truncates to 0,
    # 1 -> 255.5 clamps to 255, 0 -> 128 (ADM's (x + 1) * 127.5 would give 127 there).
    x = torch.tensor([-1.0, -0.5, -0.25, 0.0, 0.25, 1.0, -2.0, 2.0])
    expected = np.clip(127.5 * x.double().numpy() + 128.0, 0, 255).astype(np.uint8)  # DiT sample_ddp.py in float64
    out = to_uint8(x)
    assert out.dtype == torch.uint8
    assert out.tolist() == expected.tolist() == [0, 64, 96, 128, 159, 255, 0, 255]


def test_class_labels_for_spreads_evenly_and_deterministically():
    labels = M.class_labels_for(25, 10)
    counts = torch.bincount(labels, minlength=10)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 25
    assert torch.equal(labels, M.class_labels_for(25, 10))
    assert labels[:10].tolist() == list(range(10))
    with pytest.raises(ValueError, match="num_classes"):
        M.class_labels_for(5, 0)


# ----------------------------------------------------------------------------------------------------------------------
# Statistics and FID.


def test_feature_stats_match_numpy_two_pass():
    x = gaussian_features(300, 12, seed=1, shift=5.0)
    mu, sigma = M.feature_stats(x, chunk=7)  # chunks of 7 exercise the float64 accumulation across chunks
    # One-pass sums lose about log10((shift/std)^2) ~ 1.4 digits against numpy's two-pass covariance: 1e-11 is ample.
    np.testing.assert_allclose(mu, x.numpy().mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x.numpy(), rowvar=False), rtol=1e-11, atol=1e-11)
    assert mu.dtype == sigma.dtype == np.float64


@given(
    seed=st.integers(0, 2**31 - 1),
    d=st.integers(1, 24),
    extra=st.integers(5, 120),
    shift=st.floats(-3, 3),
    scale=st.floats(0.2, 5),
)
def test_fid_matches_scipy_sqrtm(seed, d, extra, shift, scale):
    a = gaussian_features(d + extra, d, seed)
    b = gaussian_features(d + extra + 7, d, seed + 1, shift, scale)
    expected = scipy_fid(a.numpy(), b.numpy())
    # Full-rank covariances (n > d): the two methods agreed to 1.3e-12 relative over 300 draws of this generator, so
    # 1e-9 leaves ~1000x slack for conditioning; the absolute floor covers FIDs near zero relative to the traces.
    floor = 1e-9 * float(a.var(0).sum() + b.var(0).sum())  # 1e-9 of tr(S1) + tr(S2)
    assert fid_of(a, b) == pytest.approx(expected, rel=1e-9, abs=floor)


def test_fid_matches_closed_form_for_diagonal_gaussians():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([0.5, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 0.25])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()  # commuting covariances
    # Exact inputs, 3x3 eigenproblem: float64 round-off only.
    assert M.fid_from_stats(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-12)


def test_fid_of_a_set_with_itself_is_zero():
    x = gaussian_features(200, 32, seed=2)
    mu, sigma = M.feature_stats(x)
    lam_max = float(np.linalg.eigvalsh(sigma).max())
    # tr(S) + tr(S) - 2 tr((S S)^(1/2)): eigenvalues of S S carry ~eps * lam_max^2 absolute error, so each square root
    # is off by at most ~sqrt(eps) * lam_max = 1.5e-8 lam_max; with d = 32 roots, 1e-6 * lam_max bounds the sum.
    assert abs(M.fid_from_stats(mu, sigma, mu, sigma)) <= 1e-6 * lam_max


def test_fid_is_symmetric():
    a, b = gaussian_features(150, 16, seed=3), gaussian_features(170, 16, seed=4, shift=0.3, scale=1.5)
    # S1 S2 and S2 S1 have the same eigenvalues; the two eigen-solves differ by round-off only.
    assert fid_of(a, b) == pytest.approx(fid_of(b, a), rel=1e-10)


# ----------------------------------------------------------------------------------------------------------------------
# Inception Score and precision/recall.


def test_inception_score_of_uniform_predictions_is_one():
    mean, std = M.inception_score(torch.zeros(100, 7))
    # p(y|x) = p(y) exactly, so every KL is 0 up to float64 round-off of log-softmax.
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("splits", [1, 5])
def test_inception_score_of_confident_even_predictions_is_num_classes(splits):
    k = 8
    logits = 1e3 * torch.nn.functional.one_hot(torch.arange(40 * splits) % k, k).float()  # p(y|x) one-hot
    # No shuffle: each split then holds every class equally often, so p(y) is uniform and IS = exp(log k) = k.
    mean, std = M.inception_score(logits, splits=splits, shuffle_seed=None)
    assert mean == pytest.approx(k, rel=1e-12) and std == pytest.approx(0.0, abs=1e-9)


def test_inception_score_matches_direct_formula():
    g = torch.Generator().manual_seed(5)
    logits = 3 * torch.randn(500, 10, generator=g, dtype=torch.float64)
    p = torch.softmax(logits, 1).numpy()
    expected = math.exp(np.mean(np.sum(p * (np.log(p) - np.log(p.mean(0))), axis=1)))  # exp E KL(p(y|x) || p(y))
    # One split, so the shuffle does not matter; float64 throughout.
    assert M.inception_score(logits, splits=1)[0] == pytest.approx(expected, rel=1e-10)
    with pytest.raises(ValueError, match="at least 10"):
        M.inception_score(logits[:9])


def test_precision_recall_identical_and_disjoint_sets():
    real = gaussian_features(60, 8, seed=6).float()
    assert M.precision_recall(real, real.clone()) == (1.0, 1.0)  # every point lies in its own ball (distance 0)
    far = real + 1e3  # farther than any k-NN radius of either set
    assert M.precision_recall(real, far) == (0.0, 0.0)
    with pytest.raises(ValueError, match="k=3"):
        M.precision_recall(real[:3], real[:3])


def test_precision_recall_counts_outliers():
    real = gaussian_features(80, 8, seed=7).float()
    fake = torch.cat([real[:30], real[:10] + 1e3])  # 30 inliers (copies of real points), 10 far outliers
    precision, recall = M.precision_recall(real, fake)
    assert precision == pytest.approx(30 / 40)  # exactly the inliers are inside a real ball
    assert recall < 1.0  # the fake set misses real points beyond its 30 inliers' balls


# ----------------------------------------------------------------------------------------------------------------------
# Features: batch-size independence and agreement with torch-fidelity end to end.


def test_features_and_metrics_do_not_depend_on_batch_size(extractor):
    images = random_images(70, seed=8)
    f7 = M.extract_features(images, extractor, batch_size=7, device=CPU)
    f64 = M.extract_features(images, extractor, batch_size=64, device=CPU)
    # GroupNorm is per sample and eval mode has no dropout; only float32 conv round-off may differ between batch shapes.
    torch.testing.assert_close(f7.features, f64.features, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(f7.logits, f64.logits, rtol=1e-5, atol=1e-6)
    assert f7.features.shape == (70, extractor.module.classifier.feature_dim) and f7.logits.shape == (70, 4)
    real = M.extract_features(random_images(50, seed=16, low=30, high=220), extractor, 50, CPU).features
    reference = M.ReferenceStats.from_features(M.ReferenceKey("noise", "ref", extractor.label, 50), real)
    m7, m64 = (M.metrics_from_features(f, reference, extractor) for f in (f7, f64))
    # Features equal to ~1e-6 relative move FID and IS by the same order; 1e-5 relative is the float32 budget.
    assert m7["fid"] == pytest.approx(m64["fid"], rel=1e-5) and m7["is_mean"] == pytest.approx(m64["is_mean"], rel=1e-5)


def test_features_are_extracted_without_tf32(extractor):
    seen = []
    hook = extractor.module.register_forward_pre_hook(
        lambda module, args: seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))
    )
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        M.extract_features(random_images(3, seed=17), extractor, 3, CPU)
    finally:
        hook.remove()
    assert seen == [(False, False)]  # full float32 while the network runs...
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before  # ...then restored


def test_compute_metrics_equals_torch_fidelity(classifier, extractor, tmp_path):
    real, fake = random_images(60, seed=9), random_images(50, seed=10, low=40, high=200)
    weights = save_classifier(classifier, tmp_path / "clf.safetensors")
    key = M.ReferenceKey("noise", "ref", extractor.label, len(real))
    reference = M.cached_reference(tmp_path, key, lambda: M.extract_features(real, extractor, 16, CPU).features)
    ours = M.compute_metrics(fake, reference, extractor, batch_size=16, device=CPU)
    theirs = torch_fidelity.calculate_metrics(
        input1=M.UInt8Images(fake), input2=M.UInt8Images(real), cuda=False, isc=True, fid=True, prc=True,
        feature_extractor=M.EMBEDDED_NAME, feature_extractor_weights_path=str(weights),
        batch_size=16, cache=False, save_cpu_ram=True, verbose=False,
    )  # fmt: skip
    # FID: our float64 one-pass statistics vs torch-fidelity's float32 mean and np.cov; features of ~unit scale,
    # so the two agree to ~1e-6 relative. IS and precision/recall run the same code on the same features: exact.
    assert ours["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-5)
    assert ours["fid"] > 1e-3  # a real difference between the two sets, not a trivial zero
    assert ours["is_mean"] == pytest.approx(theirs["inception_score_mean"], rel=1e-12)
    assert ours["is_std"] == pytest.approx(theirs["inception_score_std"], rel=1e-9, abs=1e-12)
    assert (ours["precision"], ours["recall"]) == (theirs["precision"], theirs["recall"])
    assert ours["world"] == "embedded" and ours["feature_extractor"] == extractor.label
    assert ours["n_fake"] == 50 and ours["n_ref"] == 60 and ours["reference"] == "noise/ref"


def test_metrics_refuse_mixed_feature_worlds(extractor):
    feats = M.extract_features(random_images(20, seed=11), extractor, 20, CPU)
    other = M.ReferenceStats.from_features(M.ReferenceKey("noise", "ref", "inception-v3-compat", 20), feats.features)
    with pytest.raises(ValueError, match="inception-v3-compat"):
        M.metrics_from_features(feats, other, extractor)


# ----------------------------------------------------------------------------------------------------------------------
# Inception: offline behaviour and plumbing (random weights stand in for the real file, which needs the internet).


def test_inception_without_weights_is_a_fast_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr("torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url", no_download)
    with time_limit(10), pytest.raises(M.InceptionWeightsMissing) as err:
        M.inception_extractor(CPU)
    message = str(err.value)
    assert M.INCEPTION_FILE in message and "inception_weights=PATH" in message and "\n" not in message
    assert isinstance(err.value, FileNotFoundError)
    with time_limit(10), pytest.raises(M.InceptionWeightsMissing, match="inception_weights=.*missing.pth"):
        M.inception_extractor(CPU, weights=tmp_path / "missing.pth")


@pytest.fixture(scope="module")
def random_inception_weights(tmp_path_factory):
    """A state dict of torch-fidelity's InceptionV3 with random weights, saved as the real file would be."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    with pytest.MonkeyPatch.context() as mp, torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        mp.setattr("torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url", lambda *a, **k: {})
        mp.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        state = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"]).state_dict()
    path = tmp_path_factory.mktemp("inception") / M.INCEPTION_FILE
    torch.save(state, path)
    return path


def test_inception_weights_are_found_in_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / M.INCEPTION_FILE  # where torch-fidelity's own download lands
    cached.parent.mkdir(parents=True)
    cached.touch()
    assert M.inception_weights() == cached
    assert M.inception_weights(cached) == cached


@pytest.mark.slow  # InceptionV3 at 299 x 299 on CPU: ~6 GFLOP per image, tens of seconds on a shared 2-core machine
def test_inception_extractor_and_adm_reference(random_inception_weights, tmp_path):
    inception = M.inception_extractor(CPU, weights=random_inception_weights)
    assert (inception.world, inception.label) == ("inception", "inception-v3-compat")
    images = random_images(4, seed=12, size=8)
    adm = tmp_path / "VIRTUAL_test.npz"
    np.savez(
        adm,
        mu=np.zeros(2048, np.float32),
        sigma=np.eye(2048, dtype=np.float32),
        arr_0=images.permute(0, 2, 3, 1).numpy(),
    )
    reference = M.load_adm_reference(adm, inception, batch_size=4, device=CPU)
    assert reference.features.shape == (4, 2048) and reference.mu.dtype == np.float64
    assert reference.key == M.ReferenceKey("adm", "VIRTUAL_test", "inception-v3-compat", 4)
    out = M.compute_metrics(images, reference, inception, batch_size=4, device=CPU, isc_splits=4)
    assert out["world"] == "inception" and out["precision"] == out["recall"] == 1.0  # same features as the reference


def test_adm_reference_errors(extractor, tmp_path):
    with pytest.raises(FileNotFoundError, match="VIRTUAL_imagenet256_labeled.npz"):
        M.load_adm_reference(tmp_path / "missing.npz", extractor, 4, CPU)
    bad = tmp_path / "bad.npz"
    np.savez(bad, arr_0=np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"missing \['mu', 'sigma'\]"):
        M.load_adm_reference(bad, extractor, 4, CPU)
    good = tmp_path / "good.npz"
    np.savez(good, mu=np.zeros(2), sigma=np.eye(2), arr_0=np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="Inception pool3"):
        M.load_adm_reference(good, extractor, 4, CPU)


# ----------------------------------------------------------------------------------------------------------------------
# Reference cache, ADM sample export, error bars.


def test_reference_cache_computes_once_and_checks_its_key(tmp_path):
    key = M.ReferenceKey("embedded", "ref", "msf-embedded-cnn@abc", 40)
    calls = []

    def compute():
        calls.append(1)
        return gaussian_features(40, 6, seed=13).float()

    first = M.cached_reference(tmp_path, key, compute)
    second = M.cached_reference(tmp_path, key, compute)
    assert len(calls) == 1 and second.key == key
    np.testing.assert_array_equal(first.mu, second.mu)
    np.testing.assert_array_equal(first.sigma, second.sigma)
    assert torch.equal(first.features, second.features)
    assert [p.name for p in tmp_path.iterdir()] == [key.filename()]  # no temporary file left behind
    other = M.ReferenceKey("embedded", "ref", "msf-embedded-cnn@abc", 41)
    (tmp_path / key.filename()).rename(tmp_path / other.filename())
    with pytest.raises(ValueError, match="holds statistics for"):
        M.ReferenceStats.load(tmp_path, other)
    with pytest.raises(ValueError, match="n=41"):
        M.ReferenceStats.from_features(other, compute())


def test_adm_npz_round_trip_and_validation(tmp_path):
    images = random_images(4, seed=14, size=8).permute(0, 2, 3, 1).numpy()
    path = M.save_adm_npz(tmp_path / "samples.npz", images)
    with np.load(path) as z:
        assert z.files == ["arr_0"] and z["arr_0"].dtype == np.uint8  # what ADM's evaluator.py reads
    np.testing.assert_array_equal(M.load_adm_npz(path), images)
    with pytest.raises(ValueError, match="NHWC"):
        M.save_adm_npz(tmp_path / "bad.npz", images.transpose(0, 3, 1, 2))
    np.savez(tmp_path / "other.npz", x=images)
    with pytest.raises(ValueError, match="arr_0"):
        M.load_adm_npz(tmp_path / "other.npz")


def test_mean_std_matches_statistics_module():
    values = [5.34, 5.33, 5.36]
    mean, std = M.mean_std(values)
    assert mean == pytest.approx(statistics.mean(values), rel=1e-14)
    assert std == pytest.approx(statistics.stdev(values), rel=1e-12)  # sample standard deviation (n - 1)
    with pytest.raises(ValueError, match="at least 2"):
        M.mean_std([5.3])


def test_bootstrap_fid_spread_matches_independent_resampling():
    d, n = 4, 400
    key = M.ReferenceKey("gauss", "ref", "none", 1)
    reference = M.ReferenceStats(key, np.zeros(d), np.eye(d), None)  # the true distribution N(0, I)
    true_fids = [M.fid_from_stats(*M.feature_stats(torch.randn(n, d, generator=torch.Generator().manual_seed(s)) + 0.2),
                                  reference.mu, reference.sigma) for s in range(100)]  # fmt: skip
    fake = torch.randn(n, d, generator=torch.Generator().manual_seed(1000)) + 0.2
    lo, hi = M.bootstrap_fid(fake, reference, 200, torch.Generator().manual_seed(0))
    assert (lo, hi) == M.bootstrap_fid(fake, reference, 200, torch.Generator().manual_seed(0))  # generator-determined
    # A 95% interval spans ~3.92 standard deviations of the sampling distribution; the bootstrap estimates that spread
    # from one sample, so allow a factor of 2 either way (bootstrap and 100-draw noise are ~10-20% each).
    ratio = (hi - lo) / (3.92 * np.std(true_fids, ddof=1))
    assert 0.5 < ratio < 2.0


# ----------------------------------------------------------------------------------------------------------------------
# The embedded classifier.


def quadrant_batch(g: torch.Generator, n: int = 32, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic 4-class task: class c = a bright patch in quadrant c of a noisy image."""
    y = torch.randint(4, (n,), generator=g)
    x = torch.rand(n, 3, size, size, generator=g) * 0.5
    h = size // 2
    for i, c in enumerate(y.tolist()):
        r, q = divmod(c, 2)
        x[i, :, r * h : (r + 1) * h, q * h : (q + 1) * h] += 0.5
    return (x * 255).to(torch.uint8), y


@pytest.mark.e2e
def test_classifier_learns_a_synthetic_task_and_is_seeded():
    def train(seed, steps):
        return train_classifier(quadrant_batch, 4, steps, torch.Generator().manual_seed(seed), lambda s: None, width=8)

    held_out = quadrant_batch(torch.Generator().manual_seed(99), n=200)
    untrained = train(0, 0)
    trained = train(0, 40)
    # Chance is 0.25: the untrained network must sit well below the trained one, which must solve this easy task.
    assert accuracy(untrained, *held_out) < 0.5 < 0.95 <= accuracy(trained, *held_out)
    assert classifier_digest(train(0, 3)) == classifier_digest(train(0, 3)) != classifier_digest(train(1, 3))


def test_classifier_save_load_round_trip(classifier, tmp_path):
    path = save_classifier(classifier, tmp_path / "clf.safetensors", {"accuracy": 0.97, "split": "ref"})
    loaded = load_classifier(path)
    images = random_images(6, seed=15)
    for a, b in zip(classifier(images), loaded(images), strict=True):
        assert torch.equal(a, b)
    assert classifier_digest(loaded) == classifier_digest(classifier)
    assert classifier_metadata(path) == {"accuracy": 0.97, "split": "ref"}
    assert M.embedded_extractor(path, CPU).label == M.embedded_extractor(classifier, CPU).label
    with pytest.raises(FileNotFoundError, match="missing"):
        load_classifier(tmp_path / "missing.safetensors")
    save_file({"w": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="no classifier config"):
        load_classifier(tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="uint8"):
        classifier(images.float())


@pytest.mark.slow  # ~2 min on 2 CPU cores
def test_classifier_reaches_target_accuracy_on_embedded_dataset():
    from ablations.engine.data import EmbeddedDataset

    train_set, ref = EmbeddedDataset("train", size=32), EmbeddedDataset("ref", size=32, length=2000)

    def batch_fn(g):
        return train_set.make_batch(torch.randint(len(train_set), (64,), generator=g))

    model = train_classifier(batch_fn, 10, 300, torch.Generator().manual_seed(0), lambda s: None)
    assert accuracy(model, *ref.make_batch(range(len(ref)))) >= 0.95  # issue #6's target on the held-out split
