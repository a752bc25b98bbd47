"""Shared test settings and fixtures: the test tiers, the hypothesis profiles (here and only here), one torch thread,
and imagenet256's stand-in inputs.

Tiers: `pytest -q -m "not e2e"` is the fast tier (every unit test, under 2 minutes on 2 cores). End-to-end tests carry
`e2e`: those that run a whole sweep, a subprocess of ablations/run.py or of another command that trains or samples, a
real training of more than a few steps, or the SLURM cluster; every test of the slow, faults, numeric, slurm and
rehearsal groups gets `e2e` here. The default `pytest -q` runs the unit tests and the e2e tests outside those groups.

`ci` (the default hypothesis profile) keeps the property suite fast; `thorough` is for a local deep run:
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

E2E_GROUPS = ("slow", "faults", "numeric", "slurm", "rehearsal")


@pytest.hookimpl(tryfirst=True)  # before the -m selection reads the marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test of an end-to-end group is end to end."""
    for item in items:
        if any(item.get_closest_marker(group) for group in E2E_GROUPS):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Back to one intra-op thread after a test whose code set another count (the asset builders set 2, a job its
    cpu_threads): the next tests would otherwise thrash on a shared machine."""
    yield
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("thorough", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def layout_file(shapes: dict[str, tuple[int, ...]], path):
    """A torch-saved state dict with the given tensor names and shapes, each a broadcast zero (a few bytes on disk):
    what the parse-time checks compare with a network's layout."""
    torch.save({k: torch.zeros(()).expand(shape) for k, shape in shapes.items()}, path)
    return path


@pytest.fixture(scope="session")
def cluster_inputs(tmp_path_factory):
    """Stand-ins in the real formats for imagenet256's path keys: an image folder (2 classes), a VAE folder (f=8),
    DiT-XL/2's layout at depth 1, width 32 (as the rehearsal's) and torch-fidelity's InceptionV3 layout. The jobs run
    here (launcher=inprocess): on the CPU."""
    from ablations.engine.metrics import inception_layout
    from baselines.dit import dit_xl2

    root = tmp_path_factory.mktemp("inputs")
    for c, synset in enumerate(("n01440764", "n01443537")):
        (root / "train" / synset).mkdir(parents=True)
        Image.new("RGB", (300, 260), (120, 30 * c, 200)).save(root / "train" / synset / "a.JPEG")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=8, latent_channels=4)
        vae.save_pretrained(root / "vae", safe_serialization=True)
        torch.save(dit_xl2(depth=1, hidden_size=32, num_heads=2).state_dict(), root / "dit.pt")
    layout_file(inception_layout(), root / "inception.pth")
    return [f"data.root={root / 'train'}", "data.num_classes=2", f"autoencoder.path={root / 'vae'}",
            f"baseline.dit_xl2.checkpoint={root / 'dit.pt'}", "baseline.dit_xl2={size: '', depth: 1, hidden_size: 32, "
            "num_heads: 2}", f"eval.inception_weights={root / 'inception.pth'}", "launcher=inprocess", "device=cpu"]
