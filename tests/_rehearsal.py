"""Stand-ins in the real formats for every input of the paper's configuration (the rehearsal preset), random weights:

- an ImageFolder laid out as ImageNet's train set: synset folder names, JPEGs of mixed sizes and aspect ratios, a
  greyscale and a CMYK JPEG among them (ImageNet has both);
- a diffusers AutoencoderKL folder written by ``save_pretrained`` in sd-vae-ft-ema's config format (f=8, 4 latent
  channels, 2 layers per block; narrower channels);
- torch-fidelity's InceptionV3 weights file (its state dict, ``torch.save``d, random weights);
- ADM's reference batch (``mu``, ``sigma`` of 2048-d pool3 features and ``arr_0``, uint8 NHWC 256x256 images);
- a checkpoint in the official DiT-XL/2 state-dict layout (a smaller DiT: depth 1, width 32, the same keys).

``python tests/_rehearsal.py OUT`` writes them into OUT and prints the command-line keys that point at them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

SYNSETS = ("n01440764", "n01443537", "n01484850", "n01491361")  # the first four ImageNet classes
SIZES = ((500, 375), (375, 500), (640, 427), (300, 300), (1024, 683), (333, 250))  # typical ImageNet shapes


def image_folder(root: Path, per_class: int = 12) -> Path:
    """JPEGs in synset folders: mixed sizes and aspect ratios, one greyscale and one CMYK image per class."""
    rng = np.random.default_rng(0)
    for c, synset in enumerate(SYNSETS):
        folder = root / synset
        folder.mkdir(parents=True)
        for i in range(per_class):
            w, h = SIZES[(c + i) % len(SIZES)]
            base = np.zeros((h, w, 3), np.uint8) + np.array([60 * c, 255 - 60 * c, 40 * i % 255], np.uint8)
            noisy = np.clip(base + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
            image = Image.fromarray(noisy)
            if i == 0:
                image = image.convert("L")  # greyscale JPEG
            elif i == 1:
                image = image.convert("CMYK")  # CMYK JPEG
            image.save(folder / f"{synset}_{i:05d}.JPEG", quality=90)
    return root


def vae_folder(root: Path) -> Path:
    """An AutoencoderKL in sd-vae-ft-ema's format (4 levels: f=8, 4 latent channels), narrower, random weights."""
    from diffusers import AutoencoderKL

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(16, 16, 32, 32), layers_per_block=2,
            act_fn="silu", latent_channels=4, norm_num_groups=8, sample_size=256, scaling_factor=0.18215,
        )
    vae.save_pretrained(root, safe_serialization=True)
    return root


def inception_weights(path: Path) -> Path:
    """torch-fidelity's InceptionV3 as its weights file: the state dict of a randomly initialised network."""
    import torch_fidelity.feature_extractor_inceptionv3 as tf_inception

    original = tf_inception.load_state_dict_from_url
    tf_inception.load_state_dict_from_url = lambda *a, **k: {}  # construct without the download
    load = tf_inception.FeatureExtractorInceptionV3.load_state_dict
    tf_inception.FeatureExtractorInceptionV3.load_state_dict = lambda self, *a, **k: None  # type: ignore[method-assign]
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net = tf_inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    finally:
        tf_inception.load_state_dict_from_url = original
        tf_inception.FeatureExtractorInceptionV3.load_state_dict = load  # type: ignore[method-assign]
    torch.save(net.state_dict(), path)
    return path


def adm_reference(path: Path, weights: Path, n: int = 32) -> Path:
    """ADM's reference batch: uint8 NHWC 256x256 images and the pool3 mean and covariance of their features."""
    from ablations.engine.metrics import extract_features, feature_stats, inception_extractor

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (n, 256, 256, 3), dtype=np.uint8)
    extractor = inception_extractor(torch.device("cpu"), weights)
    features = extract_features(torch.from_numpy(images).permute(0, 3, 1, 2), extractor, 16, torch.device("cpu"))
    mu, sigma = feature_stats(features.features)
    np.savez(path, arr_0=images, mu=mu.astype(np.float32), sigma=sigma.astype(np.float32))
    return path


def dit_checkpoint(path: Path) -> Path:
    """A checkpoint in the official DiT-XL/2 layout (its keys; depth 1, width 32), as DiT's train.py saves it."""
    from baselines.dit import dit_xl2

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = dit_xl2(depth=1, hidden_size=32, num_heads=2)
    torch.save(net.state_dict(), path)
    return path


def make_inputs(root: Path) -> list[str]:
    """Every stand-in under ``root``; returns the rehearsal's command-line keys pointing at them."""
    root.mkdir(parents=True, exist_ok=True)
    weights = inception_weights(root / "pt_inception-2015-12-05-6726825d.pth")
    return [
        f"data.root={image_folder(root / 'train')}",
        f"autoencoder.path={vae_folder(root / 'sd-vae-ft-ema')}",
        f"eval.inception_weights={weights}",
        f"eval.reference_npz={adm_reference(root / 'VIRTUAL_imagenet256_labeled.npz', weights)}",
        f"baseline.dit_xl2.checkpoint={dit_checkpoint(root / 'DiT-XL-2-256x256.pt')}",
    ]


if __name__ == "__main__":
    print(" ".join(make_inputs(Path(sys.argv[1]))))
