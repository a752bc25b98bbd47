"""Frozen networks shipped with the harness, so that every machine measures with the same ruler.

Numbers computed on two machines are comparable only if both use the same feature network and autoencoder. These
are trained once, committed under ``ablations/engine/weights/`` as safetensors with their SHA-256 below, and loaded
(never retrained) by every run; a file whose hash differs is refused. Each is rebuilt by the documented command

    python -m ablations.engine.assets NAME OUT

which trains it from scratch on the CPU (deterministic on one machine; another CPU's kernels give other bits, which
is why the weights are committed rather than retrained).

============  ==================================================================================================
embedded-cnn  the embedded world's feature network (its "Inception"): ablations/engine/classifier.py's CNN on all
              20 classes of the embedded set at 32 px (dataset seed 7, disjoint from the experiments' seed 0)
digits-cnn    the same CNN on the handwritten digits' train split (the real-image stand-in's feature network)
embedded-ae   the tiny preset's small AutoencoderKL (f=4, 4 channels) on the embedded set at 32 px, in diffusers'
              folder format (config.json + diffusion_pytorch_model.safetensors), loaded like the SD VAE
digits-ae     the same autoencoder on the digits' train split (the embedded one reconstructs digits at 13 dB)
============  ==================================================================================================
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

WEIGHTS = Path(__file__).with_name("weights")


@dataclass(frozen=True)
class Asset:
    """One committed network: its file under ``WEIGHTS`` (a folder's weights file for the autoencoder), its hash."""

    name: str
    path: str  # relative to WEIGHTS: the file whose bytes are hashed
    sha256: str
    folder: bool = False  # the asset is the folder holding ``path`` (diffusers' format)

    @property
    def location(self) -> Path:
        """What loaders are given: the weights file, or its folder."""
        file = WEIGHTS / self.path
        return file.parent if self.folder else file


ASSETS: dict[str, Asset] = {
    a.name: a
    for a in (
        Asset("embedded-cnn", "embedded-cnn.safetensors",
              "459ece67076eb4ebcd5627e92f06ba5801a139bc75caad376b0c8eab189e4304"),
        Asset("digits-cnn", "digits-cnn.safetensors",
              "dce3af6cfb222ff7614b0930502932cd4ea45191c928083669f0f9810bca1916"),
        Asset("embedded-ae", "embedded-ae/diffusion_pytorch_model.safetensors",
              "e8794e2d4f76e7f5d20413b06a6185fd541435c774730ed83e0b38b9313e064e", folder=True),
        Asset("digits-ae", "digits-ae/diffusion_pytorch_model.safetensors",
              "dc3bffbf3f2b42561fe466a86e5e59fae89cd4449307e282bd309c29c9b93713", folder=True),
    )
}


class AssetError(ValueError):
    """A committed network that is missing or whose bytes differ from the recorded hash."""


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def asset(name: str) -> Path:
    """The location of a committed network after checking its hash."""
    if name not in ASSETS:
        raise AssetError(f"unknown frozen network {name!r}; expected one of {', '.join(ASSETS)}")
    a = ASSETS[name]
    file = WEIGHTS / a.path
    if not file.is_file():
        raise AssetError(f"frozen network {name} is missing: {file} (python -m ablations.engine.assets {name} OUT)")
    digest = sha256_of(file)
    if digest != a.sha256:
        raise AssetError(f"frozen network {name}: {file} has sha256 {digest[:12]}, expected {a.sha256[:12]}; it "
                         "was changed: restore it (git checkout) rather than retrain it")
    return a.location


# ----------------------------------------------------------------------------------------------------------------------
# Building them (the documented commands).


def build_embedded_cnn(out: Path, log: Callable[[str], None] = print, steps: int = 2000) -> None:
    """Train the embedded feature network on 20 classes at 32 px, dataset seed 7; report held-out accuracy."""
    import torch

    from ablations.engine.classifier import accuracy, save_classifier, train_classifier
    from ablations.engine.data import MAX_CLASSES, EmbeddedDataset

    torch.set_num_threads(2)
    train = EmbeddedDataset("train", 32, MAX_CLASSES, seed=7, length=50_000)
    ref = EmbeddedDataset("ref", 32, MAX_CLASSES, seed=7, length=4000)

    def batch(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return train.make_batch(torch.randint(len(train), (64,), generator=g).tolist())

    model = train_classifier(batch, MAX_CLASSES, steps, torch.Generator().manual_seed(7), log)
    acc = accuracy(model, *ref.make_batch(range(len(ref))))
    log(f"embedded-cnn: held-out accuracy {acc:.4f} over {len(ref)} images")
    save_classifier(model, out, {"accuracy_ref": f"{acc:.4f}", "recipe": f"embedded 20 classes seed 7, {steps} steps"})


def build_digits_cnn(out: Path, log: Callable[[str], None] = print, steps: int = 1500) -> None:
    """Train the digits feature network on the digits' train split; report accuracy on the ref split."""
    import torch

    from ablations.engine.classifier import accuracy, save_classifier, train_classifier
    from ablations.engine.data import build_dataset

    torch.set_num_threads(2)
    train, ref = build_dataset("digits", split="train"), build_dataset("digits", split="ref")
    images, labels = train.make_batch(range(len(train)))

    def batch(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        i = torch.randint(len(train), (64,), generator=g)
        return images[i], labels[i]

    model = train_classifier(batch, 10, steps, torch.Generator().manual_seed(7), log)
    acc = accuracy(model, *ref.make_batch(range(len(ref))))
    log(f"digits-cnn: held-out accuracy {acc:.4f} over {len(ref)} images")
    save_classifier(model, out, {"accuracy_ref": f"{acc:.4f}", "recipe": f"digits train split, {steps} steps"})


def build_digits_ae(out: Path, log: Callable[[str], None] = print) -> None:
    """Train the small AutoencoderKL (the same recipe) on the digits' train split (no flips: digits are not
    mirror-symmetric)."""
    import torch

    from ablations.engine.autoencoders import SmallAEConfig, save_autoencoder, train_small_autoencoder
    from ablations.engine.data import build_dataset

    torch.set_num_threads(2)
    ae = train_small_autoencoder(build_dataset("digits", split="train"), SmallAEConfig(),
                                 torch.Generator().manual_seed(0), log)
    ae.name = "digits-ae"
    save_autoencoder(ae, out)


def build_embedded_ae(out: Path, log: Callable[[str], None] = print) -> None:
    """Train the small AutoencoderKL (the tiny recipe: 1500 steps, batch 16) on 20 embedded classes, dataset seed 0."""
    import torch

    from ablations.engine.autoencoders import SmallAEConfig, save_autoencoder, train_small_autoencoder
    from ablations.engine.data import MAX_CLASSES, EmbeddedDataset

    torch.set_num_threads(2)
    train = EmbeddedDataset("train", 32, MAX_CLASSES, seed=0, length=20_000)
    ae = train_small_autoencoder(train, SmallAEConfig(), torch.Generator().manual_seed(0), log)
    ae.name = "embedded-ae"
    save_autoencoder(ae, out)


BUILDERS: dict[str, Callable[[Path], None]] = {
    "embedded-cnn": build_embedded_cnn,
    "digits-cnn": build_digits_cnn,
    "embedded-ae": build_embedded_ae,
    "digits-ae": build_digits_ae,
}


def main(argv: list[str] | None = None) -> int:
    """python -m ablations.engine.assets NAME OUT: rebuild one frozen network into OUT (a file, or a folder)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(BUILDERS))
    parser.add_argument("out", type=Path, help="the file (networks) or folder (embedded-ae) to write; must not exist")
    args = parser.parse_args(argv)
    if args.out.exists():
        parser.error(f"{args.out} exists; give a new path")
    try:
        BUILDERS[args.name](args.out)
    except BaseException:
        if args.out.is_dir():
            shutil.rmtree(args.out)
        args.out.unlink(missing_ok=True)
        raise
    target = args.out / Path(ASSETS[args.name].path).name if ASSETS[args.name].folder else args.out
    print(f"{args.name}: sha256 {sha256_of(target)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
