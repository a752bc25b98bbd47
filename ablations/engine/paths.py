"""Checks of every file and folder a user points the harness at, made before anything runs.

Each check opens the file only with a loader that cannot run code from it (safetensors headers, JSON, numpy without
pickle, torch's ``weights_only`` unpickler) and raises :class:`PathError` with one line naming the key, the path and
what was expected. The runner calls them when the command is parsed, so a wrong path never reaches a job.
"""

from __future__ import annotations

import itertools
import json
import os
import zipfile
from pathlib import Path
from typing import Any

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
VAE_WEIGHTS = "diffusion_pytorch_model.safetensors"
ADM_ARRAYS = ("mu", "sigma", "arr_0")


class PathError(ValueError):
    """A path that does not exist, has the wrong kind, or holds the wrong format."""


def _exists(key: str, path: str, kind: str) -> Path:
    """``path`` as a Path that exists and is a file or a directory, as ``kind`` says."""
    p = Path(path).expanduser()
    if not p.exists():
        raise PathError(f"{key}={path!r} does not exist (expected {kind})")
    if kind.startswith("a folder") and not p.is_dir():
        raise PathError(f"{key}={path!r} is a file; expected {kind}")
    if not kind.startswith("a folder") and not p.is_file():
        raise PathError(f"{key}={path!r} is a folder; expected {kind}")
    return p


def image_folder(key: str, path: str, probe: int = 3, entries: int = 1000) -> Path:
    """A class-per-folder image tree (ImageNet's train layout): the first ``probe`` class folders hold an image among
    their first ``entries`` entries (a cheap check at parse time; the dataset lists every file when it loads)."""
    root = _exists(key, path, "a folder of class folders holding images")
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    if not classes:
        raise PathError(f"{key}={path!r} has no class folders (expected ImageNet's layout: one folder per class)")
    for c in classes[:probe]:
        images = [f for f in itertools.islice(c.rglob("*"), entries) if f.suffix.lower() in IMAGE_EXTENSIONS]
        if not images:
            raise PathError(f"{key}={path!r}: class folder {c.name!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        decodable(key, min(images))
    return root


def decodable(key: str, image: Path) -> None:
    """One image file decodes completely (PIL loads every byte: a truncated file fails)."""
    from PIL import Image

    try:
        with Image.open(image) as im:
            im.load()
    except (OSError, SyntaxError, ValueError) as e:
        raise PathError(f"{key}: {image} cannot be decoded ({e})") from None


def safetensors_header(key: str, path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file, read without loading any tensor."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 2 <= n <= 100_000_000:
                raise ValueError("no safetensors header")
            header = json.loads(f.read(n))
        if not isinstance(header, dict):
            raise ValueError("header is not a mapping")
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise PathError(f"{key}: {path} is not a safetensors file ({e})") from None
    return header


def vae_folder(key: str, path: str) -> Path:
    """A diffusers AutoencoderKL folder as ``save_pretrained`` writes it: config.json and safetensors weights."""
    root = _exists(key, path, "a folder holding a diffusers AutoencoderKL (config.json and safetensors weights)")
    config = root / "config.json"
    try:
        cfg = json.loads(config.read_text())
        missing = [k for k in ("block_out_channels", "latent_channels", "scaling_factor") if k not in cfg]
    except (OSError, ValueError) as e:
        raise PathError(f"{key}={path!r}: no readable config.json ({type(e).__name__}); expected a diffusers "
                        "AutoencoderKL folder (save_pretrained)") from None
    if missing:
        raise PathError(f"{key}={path!r}: config.json lacks {', '.join(missing)}; not an AutoencoderKL config")
    weights = root / VAE_WEIGHTS
    if not weights.is_file():
        raise PathError(f"{key}={path!r}: no {VAE_WEIGHTS} (safetensors weights are required; .bin pickles are "
                        "never loaded)")
    safetensors_header(key, weights)
    return root


def torch_state_dict(key: str, path: str, what: str) -> dict[str, Any]:
    """A torch-saved state dict, loaded with torch's ``weights_only`` unpickler (tensors only: no code runs)."""
    import torch

    p = _exists(key, path, f"a file ({what})")
    zipped = zipfile.is_zipfile(p)
    with open(p, "rb") as f:
        if not zipped and f.read(1) != b"\x80":  # torch.save's zip format, or the legacy pickle format
            raise PathError(f"{key}={path!r} is not a torch-saved file (expected {what})")
    try:  # the zip format is memory-mapped: a 2.7 GB checkpoint is checked without reading it all
        state = torch.load(p, map_location="cpu", weights_only=True, mmap=zipped)
    except Exception as e:  # noqa: BLE001 - any refusal of the safe unpickler: one line, nothing ran
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PathError(f"{key}={path!r} is not a plain state dict of tensors ({first[:160]}); refusing to load "
                        "it") from None
    if not isinstance(state, dict) or not state or not all(hasattr(v, "shape") for v in state.values()):
        raise PathError(f"{key}={path!r} does not hold a state dict of tensors (expected {what})")
    return state


def adm_reference(key: str, path: str) -> Path:
    """ADM's reference batch npz (mu, sigma, arr_0), read without pickle."""
    import numpy as np

    p = _exists(key, path, "a file (ADM's reference batch .npz)")
    try:
        with np.load(p, allow_pickle=False) as z:
            missing = [a for a in ADM_ARRAYS if a not in z.files]
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise PathError(f"{key}={path!r} is not an npz file ({type(e).__name__})") from None
    if missing:
        raise PathError(f"{key}={path!r} lacks ADM's arrays {', '.join(missing)} (expected mu, sigma, arr_0)")
    return p


def cifar10_folder(key: str, path: str) -> Path:
    """A folder holding CIFAR-10's binary version (cifar-10-batches-bin; the python version is a pickle)."""
    root = _exists(key, path, "a folder holding cifar-10-batches-bin")
    if not (root / "cifar-10-batches-bin").is_dir():
        raise PathError(f"{key}={path!r} has no cifar-10-batches-bin folder (extract CIFAR-10's binary version "
                        "there; the python version is a pickle and is never loaded)")
    return root


def classifier_file(key: str, path: str) -> Path:
    """A feature network written by ablations/engine/classifier.py: safetensors with its config in the header."""
    p = _exists(key, path, "a classifier .safetensors file")
    header = safetensors_header(key, p)
    if "config" not in header.get("__metadata__", {}):
        raise PathError(f"{key}={path!r} is a safetensors file without a classifier config in its header")
    return p


def fingerprint(path: str | Path, whole: int = 64 << 20, part: int = 4 << 20) -> str:
    """A digest naming a file's content, cheap for large ones: SHA-256 of the whole file up to ``whole`` bytes, else
    of its size, first and last ``part`` bytes (a 2.7 GB checkpoint is fingerprinted without reading it all)."""
    import hashlib

    p = Path(path)
    size = p.stat().st_size
    h = hashlib.sha256()
    with open(p, "rb") as f:
        if size <= whole:
            h.update(f.read())
        else:
            h.update(str(size).encode())
            h.update(f.read(part))
            f.seek(size - part)
            h.update(f.read(part))
    return h.hexdigest()[:16]


MIN_FREE_BYTES = 100 << 20


def writable_folder(key: str, path: str, min_free: int = MIN_FREE_BYTES) -> Path:
    """A folder the runs can go to: its nearest existing ancestor is a writable folder (a probe file is created and
    removed there) with at least ``min_free`` bytes free. Nothing is left behind."""
    import shutil
    import tempfile

    p = Path(path).expanduser().absolute()
    existing = next(a for a in [p, *p.parents] if a.exists())
    if not existing.is_dir():
        raise PathError(f"{key}={path!r}: {existing} is a file; expected a folder for the run folders")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".msf-probe-"):
            pass
    except OSError as e:
        raise PathError(f"{key}={path!r}: cannot write in {existing} ({e.strerror or e})") from None
    free = shutil.disk_usage(existing).free
    if free < min_free:
        raise PathError(f"{key}={path!r}: only {free >> 20} MB free on {existing}; need at least {min_free >> 20} MB")
    return p


def hub_inception_weights() -> Path | None:
    """torch-fidelity's Inception weights where its download lands (torch.hub.get_dir(), without importing torch), if
    they are there."""
    home = os.environ.get("TORCH_HOME", os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch"))
    hub = Path(os.environ.get("TORCH_HUB", os.path.join(home, "hub"))).expanduser()
    path = hub / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth"
    return path if path.is_file() else None
