"""Shared test settings and fixtures: the hypothesis profiles (here and only here) and imagenet256's stand-in inputs.

`ci` (the default) keeps the property suite fast; `thorough` is for a local deep run:
    HYPOTHESIS_PROFILE=thorough pytest -q tests/test_factorize.py
"""

import os

import pytest
import torch
from diffusers import AutoencoderKL
from hypothesis import HealthCheck, settings
from PIL import Image

# The networks in the tests are tiny: one intra-op thread is as fast as two on a quiet 2-core machine and avoids the
# thread thrashing (up to 100x slower) seen when other processes share the cores. Subprocesses set their own.
torch.set_num_threads(1)

settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("thorough", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def cluster_inputs(tmp_path_factory):
    """Stand-ins in the real formats for imagenet256's path keys: an image folder, a VAE folder (f=8), a checkpoint."""
    root = tmp_path_factory.mktemp("inputs")
    (root / "train" / "n01440764").mkdir(parents=True)
    Image.new("RGB", (300, 260), (120, 30, 200)).save(root / "train" / "n01440764" / "a.JPEG")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=8, latent_channels=4)
    vae.save_pretrained(root / "vae", safe_serialization=True)
    torch.save({"x_embedder.proj.weight": torch.zeros(2)}, root / "dit.pt")
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(2)}, root / "inception.pth")
    return [f"data.root={root / 'train'}", f"autoencoder.path={root / 'vae'}",
            f"baseline.dit_xl2_checkpoint={root / 'dit.pt'}", f"eval.inception_weights={root / 'inception.pth'}",
            "launcher=inprocess"]
