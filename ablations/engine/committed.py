"""The frozen networks committed with the harness: their files under ``ablations/engine/weights/`` and SHA-256.

Every run loads them by name through :func:`asset`, which refuses a file whose bytes differ from the recorded hash.
What each one is and how it is rebuilt: ablations/engine/assets.py. Nothing here imports torch or the project: the
check runs when a command is parsed.
"""

from __future__ import annotations

import hashlib
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
    image_size: int = 32  # the size of the images it was trained on: a preset must use the same

    @property
    def location(self) -> Path:
        """What loaders are given: the weights file, or its folder."""
        file = WEIGHTS / self.path
        return file.parent if self.folder else file


ASSETS: dict[str, Asset] = {
    a.name: a
    for a in (
        Asset("photos-cnn", "photos-cnn.safetensors",
              "6d8d988956af4c6f4a1ff9b0b3f881030ebb5e3b37ff41306feb1dc1b2a4f433"),
        Asset("embedded-cnn", "embedded-cnn.safetensors",
              "459ece67076eb4ebcd5627e92f06ba5801a139bc75caad376b0c8eab189e4304"),
        Asset("digits-cnn", "digits-cnn.safetensors",
              "dce3af6cfb222ff7614b0930502932cd4ea45191c928083669f0f9810bca1916"),
        Asset("photos-ae", "photos-ae/diffusion_pytorch_model.safetensors",
              "b8d077f92e5e497eb6b26b198c9ccc11ba6a02bd22e03da57e7ee2d1b30bd7a4", folder=True),
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
