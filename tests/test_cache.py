"""Target cache: equal to direct Algorithm 1, flips as documented, resumable and byte-identical, keyed."""

import json

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

from ablations.engine.cache import CacheIncompleteError, CacheKeyError, TargetCache, build_cache, part_stats
from ablations.engine.data import EmbeddedDataset
from ablations.engine.images import to_float
from msf.autoencoder import KLAutoencoder, PixelAutoencoder
from msf.factorize import make_factorization, make_scales


def tiny_ae(seed: int = 0) -> KLAutoencoder:
    """A random f=2 AutoencoderKL (32-px images -> 16x16x4 latents) with a non-default scaling factor."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            block_out_channels=(8, 8),
            norm_num_groups=4,
            latent_channels=4,
        )
    vae.register_to_config(scaling_factor=0.37)
    return KLAutoencoder(vae, name="tiny")


DATA = EmbeddedDataset("train", length=10)
RESIDUAL = make_factorization("residual", make_scales([8, 16], full=16))
silent = lambda _: None  # noqa: E731


def npy_bytes(root) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.npy"))}


def test_cache_equals_direct_algorithm_1_with_flips(tmp_path):
    ae = tiny_ae()
    cache = build_cache(tmp_path, DATA, ae, RESIDUAL, batch_size=4, shard_size=4, log=silent)
    assert len(cache) == 20  # 10 images and their mirrors
    images, labels = DATA.make_batch(range(10))
    x = to_float(images)
    with torch.no_grad():
        direct = RESIDUAL.targets(x, ae.encode, ae.factor)
        mirrored = RESIDUAL.targets(x.flip(-1), ae.encode, ae.factor)
    order = np.random.default_rng(0).permutation(20)  # random order, crossing shards
    targets, y = cache.batch(order)
    assert [t.shape for t in targets] == [(20, 4, 8, 8), (20, 4, 16, 16)]
    assert torch.equal(y, labels.repeat_interleave(2)[order])
    for got, plain, flip in zip(targets, direct, mirrored, strict=True):
        want = torch.stack([plain, flip], dim=1).flatten(0, 1)[order]  # item 2k = image k, 2k+1 = its mirror
        # The cache encodes batches of 8 items (4 images + mirrors), the reference all 10 at once: convolutions
        # may sum in another order, so allow float32 rounding (targets are O(1)).
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_pixel_cache_without_flips_is_exact(tmp_path):
    factorization = make_factorization("residual", make_scales([16, 32], full=32))
    cache = build_cache(
        tmp_path, DATA, PixelAutoencoder(), factorization, batch_size=3, shard_size=4, flip="none", log=silent
    )
    targets, _ = cache.batch(range(10))
    direct = factorization.targets(to_float(DATA.make_batch(range(10))[0]), PixelAutoencoder().encode, 1)
    for got, want in zip(targets, direct, strict=True):
        assert torch.equal(got, want)  # per-image resizes: no cross-batch arithmetic, so bit-exact


def test_interrupted_build_resumes_to_identical_bytes(tmp_path):
    ae = tiny_ae()
    reference = build_cache(tmp_path / "ref", DATA, ae, RESIDUAL, batch_size=2, shard_size=3, log=silent)

    written = []

    def crash_after_two(message: str) -> None:
        written.append(message)
        if len(written) == 2:
            raise KeyboardInterrupt("simulated interruption after 2 of 4 shards")

    root = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        build_cache(root, DATA, ae, RESIDUAL, batch_size=2, shard_size=3, log=crash_after_two)
    with pytest.raises(CacheIncompleteError, match="2/4 shards"):
        TargetCache(root)
    stale = root / "shard_00002.tmp"  # a shard that died half-written: garbage under the temporary name
    stale.mkdir()
    (stale / "scale_0.npy").write_bytes(b"half-written")

    resumed_log = []
    build_cache(root, DATA, ae, RESIDUAL, batch_size=2, shard_size=3, log=resumed_log.append)
    assert len(resumed_log) == 2  # only shards 3 and 4 were computed again
    assert not stale.exists()
    assert npy_bytes(root) == npy_bytes(reference.root)  # byte-identical to the uninterrupted build
    assert json.loads((root / "manifest.json").read_text())["complete"] is True


def test_mismatched_key_is_an_error(tmp_path):
    build_cache(tmp_path, DATA, tiny_ae(), RESIDUAL, batch_size=5, shard_size=5, log=silent)
    build_cache(tmp_path, DATA, tiny_ae(), RESIDUAL, batch_size=5, shard_size=5, log=silent)  # same key: reused
    others = {
        "autoencoder": dict(autoencoder=tiny_ae(seed=1)),
        "flip": dict(flip="none"),
        "scales": dict(factorization=make_factorization("residual", make_scales([4, 16], full=16))),
        "factorization": dict(factorization=make_factorization("latent_resize", RESIDUAL.scales)),
        "dataset": dict(dataset=EmbeddedDataset("train", length=10, seed=1)),
        "shard_size": dict(shard_size=4),
    }
    for field, change in others.items():
        kwargs = dict(dataset=DATA, autoencoder=tiny_ae(), factorization=RESIDUAL, batch_size=5, shard_size=5)
        with pytest.raises(CacheKeyError, match=field):
            build_cache(tmp_path, **{**kwargs, **change}, log=silent)


def test_bad_cache_folders_and_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="no target cache"):
        TargetCache(tmp_path)
    (tmp_path / "shard_00000").mkdir()
    with pytest.raises(CacheKeyError, match="no manifest"):
        build_cache(tmp_path, DATA, PixelAutoencoder(), RESIDUAL, log=silent)
    with pytest.raises(ValueError, match="flip"):
        build_cache(tmp_path / "x", DATA, PixelAutoencoder(), RESIDUAL, flip="random", log=silent)  # type: ignore
    cache = build_cache(
        tmp_path / "ok", DATA, PixelAutoencoder(), make_factorization("residual", make_scales([32], 32)), log=silent
    )
    with pytest.raises(IndexError):
        cache.batch([len(cache)])


def test_part_stats_read_the_first_items_across_shards(tmp_path):
    """The cache job's cheap check: item count and per-scale RMS of the first items, whatever the shard size."""
    cache = build_cache(tmp_path, DATA, tiny_ae(), RESIDUAL, batch_size=2, shard_size=3, flip="none", log=silent)
    items, rms = part_stats(tmp_path, first=7)  # 7 items span three shards of 3
    targets, _ = cache.batch(range(7))
    assert items == len(cache) == 10
    assert rms == pytest.approx([float(f.double().pow(2).mean().sqrt()) for f in targets], rel=1e-12)
