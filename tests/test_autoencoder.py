"""Autoencoders: scaling-factor conventions against diffusers, the exact pixel identity, loading and training."""

import dataclasses
import socket

import pytest
import torch
from diffusers import AutoencoderKL

from ablations.engine.autoencoders import (
    SmallAEConfig,
    VAEWeightsNotFoundError,
    load_autoencoder,
    load_pretrained_vae,
    psnr,
    save_autoencoder,
    train_small_autoencoder,
)
from ablations.engine.data import EmbeddedDataset
from ablations.engine.images import to_float
from msf.autoencoder import KLAutoencoder, PixelAutoencoder

TINY = SmallAEConfig(block_out_channels=(8, 16), norm_num_groups=4, steps=40, batch_size=8, scale_batch=32)


def tiny_vae(scaling_factor: float = 0.37, seed: int = 0) -> AutoencoderKL:
    """A random f=2 AutoencoderKL with a non-default scaling factor (so applying it or not is visible)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = TINY.build(image_size=16)
    vae.register_to_config(scaling_factor=scaling_factor)
    return vae.eval()


def images(n: int = 4, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_kl_autoencoder_matches_diffusers_conventions():
    vae, x = tiny_vae(), images()
    ae = KLAutoencoder(vae, name="tiny")
    assert (ae.factor, ae.channels, ae.scaling_factor) == (2, 4, 0.37)
    z = ae.encode(x)
    assert z.shape == (4, 4, 8, 8)
    with torch.no_grad():
        mean = vae.encode(x).latent_dist.mean
        reference = vae.decode(mean).sample
    torch.testing.assert_close(z, mean * 0.37, rtol=0, atol=0)  # the same float ops in the same order: exact
    # z * s / s differs from z by float32 rounding (~1e-7 relative); the decoder amplifies it little.
    torch.testing.assert_close(ae.decode(z), reference, rtol=1e-5, atol=1e-5)


def test_chunked_encode_decode_equals_whole_batch():
    vae, x = tiny_vae(), images(6)
    whole, chunked = KLAutoencoder(vae, "tiny"), KLAutoencoder(vae, "tiny", chunk=4)
    # Chunks change only the batch size of each convolution call: equal up to float32 summation-order rounding.
    torch.testing.assert_close(chunked.encode(x), whole.encode(x), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(chunked.decode(whole.encode(x)), whole.decode(whole.encode(x)), rtol=1e-5, atol=1e-6)


def test_pixel_autoencoder_is_exact_identity():
    ae, x = PixelAutoencoder(), images()
    assert (ae.factor, ae.channels) == (1, 3)
    assert torch.equal(ae.decode(ae.encode(x)), x)


def test_fingerprint_tracks_weights_and_scaling():
    a = KLAutoencoder(tiny_vae(seed=0), "tiny")
    assert a.fingerprint() == KLAutoencoder(tiny_vae(seed=0), "tiny").fingerprint()
    assert a.fingerprint() != KLAutoencoder(tiny_vae(seed=1), "tiny").fingerprint()
    assert a.fingerprint() != KLAutoencoder(tiny_vae(scaling_factor=0.5), "tiny").fingerprint()


def test_save_load_round_trip_uses_safetensors_only(tmp_path):
    ae = KLAutoencoder(tiny_vae(), "tiny")
    save_autoencoder(ae, tmp_path / "ae")
    suffixes = {p.suffix for p in (tmp_path / "ae").iterdir()}
    assert suffixes == {".safetensors", ".json"}  # no pickle (.bin/.pt/.ckpt) anywhere
    loaded = load_autoencoder(tmp_path / "ae")
    assert (loaded.name, loaded.fingerprint()) == ("tiny", ae.fingerprint())
    assert torch.equal(loaded.encode(images()), ae.encode(images()))
    with pytest.raises(FileNotFoundError, match="no saved autoencoder"):
        load_autoencoder(tmp_path)


def test_missing_pretrained_vae_is_a_clear_offline_error(tmp_path, monkeypatch):
    attempts = []

    def no_network(self, address):
        attempts.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    for name in ["stabilityai/sd-vae-ft-ema", str(tmp_path / "no-such-folder"), str(tmp_path)]:
        with pytest.raises(VAEWeightsNotFoundError, match="huggingface-cli download .* --local-dir"):
            load_pretrained_vae(name, cache_dir=tmp_path / "hf-cache")
    assert attempts == []  # local_files_only: not even a connection attempt


def test_load_pretrained_vae_from_a_local_folder(tmp_path):
    tiny_vae().save_pretrained(tmp_path / "vae", safe_serialization=True)
    ae = load_pretrained_vae(str(tmp_path / "vae"))
    assert (ae.factor, ae.channels, ae.scaling_factor) == (2, 4, 0.37)


class RecordingDataset(EmbeddedDataset):
    """The embedded dataset, remembering the last batch it served (the scaling-factor batch, after training)."""

    def make_batch(self, indices):
        self.last = super().make_batch(indices)
        return self.last


def test_train_small_autoencoder_is_deterministic_and_sets_the_scaling_factor():
    runs, config = [], dataclasses.replace(TINY, steps=5)
    for _ in range(2):
        data = RecordingDataset(length=256)
        ae = train_small_autoencoder(data, config, torch.Generator().manual_seed(0), log=lambda _: None)
        runs.append((ae, data))
    (ae, data), (ae2, _) = runs
    assert ae.fingerprint() == ae2.fingerprint()  # CPU training is deterministic given the generator
    assert (ae.factor, ae.channels) == (2, 4)
    with torch.no_grad():
        latents = ae.vae.encode(to_float(data.last[0])).latent_dist.mean
    # SD's recipe: scaling_factor = 1 / std of the latents of a training batch (same batch, same float ops).
    assert ae.scaling_factor == pytest.approx(1.0 / latents.std().item(), rel=1e-6)


@pytest.mark.e2e
def test_small_autoencoder_learns_to_reconstruct():
    ae = train_small_autoencoder(EmbeddedDataset(), TINY, torch.Generator().manual_seed(0), log=lambda _: None)
    x = to_float(EmbeddedDataset("ref", length=64).make_batch(range(64))[0])
    trained = psnr((ae.decode(ae.encode(x)).clamp(-1, 1) - x).pow(2).mean().item())
    best_constant = psnr((x - x.mean(dim=(0, 2, 3), keepdim=True)).pow(2).mean().item())  # per-channel mean image
    # After 40 steps of batch 8 the tiny AE beats the best constant image (measured +1.3 dB; deterministic on CPU);
    # an untrained or wrongly trained AE (no step, wrong sign, detached graph) is far below it.
    assert trained > best_constant + 0.5
