"""Checks of every file and folder a user points the harness at, made when the command is parsed.

Each check opens a file only with a loader that cannot run code from it (safetensors headers, JSON, numpy array
headers without pickle, torch's ``weights_only`` unpickler, PIL headers), compares every weights file, tensor by
tensor, with the network that will load it (built on the meta device: names and shapes, no memory), and raises
:class:`InputError` with one line naming the key, the path and what was expected. ablations/config.py calls them
before anything is written; ablations/run.py checks the planned run folders' path lengths.

A class-per-folder dataset is checked in full up to ``HEADERS_CHECKED`` images: every image's header (format, size)
and, for PNG files, their end marker (a truncated PNG has none); a JPEG damaged past its header is only found when a
job decodes it (that job then fails with one line naming the file). Larger trees (ImageNet: 1.28M images) have
``HEADERS_CHECKED`` evenly spaced images checked: the probe is partial there (ImageNet's 50,000 validation images
are checked in full).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

VAE_WEIGHTS = "diffusion_pytorch_model.safetensors"
ADM_ARRAYS = ("mu", "sigma", "arr_0")
ADM_FEATURES = 2048  # Inception pool3: the dimension of ADM's mu and sigma
HEADERS_CHECKED = 50_000  # image headers read at most (0.13-0.16 ms each on a local disk); beyond, an even sample
MIN_FREE_BYTES = 100 << 20
JOB_FILE_MAX = 96  # bytes: the longest path a job writes inside its run folder, with a margin (a temporary
# checkpoint, checkpoints/.step_00000000.safetensors.tmp-PID-RANDOM, has 60)
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # a PNG file's last chunk: IEND, empty, with its CRC


class InputError(ValueError):
    """A path that does not exist, has the wrong kind, holds the wrong format, or is too long for the file system."""


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """No warnings reach stderr from the loaders inside the block (the refusal is the one line the user sees)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _short(text: str, n: int = 60) -> str:
    """``text`` quoted, cut to ``n`` characters."""
    return repr(text) if len(text) <= n else repr(text[:n]) + "..."


def _exists(key: str, path: str | Path, kind: str) -> Path:
    """``path`` as a Path that exists and is a file or a directory, as ``kind`` says."""
    p = Path(path).expanduser()
    try:
        exists, is_dir = p.exists(), p.is_dir()
    except OSError as e:  # a name too long for the file system
        raise InputError(f"{key}={_short(str(path))}: {e.strerror or e} (expected {kind})") from None
    if not exists:
        raise InputError(f"{key}={str(path)!r} does not exist (expected {kind})")
    if kind.startswith("a folder") and not is_dir:
        raise InputError(f"{key}={str(path)!r} is a file; expected {kind}")
    if not kind.startswith("a folder") and is_dir:
        raise InputError(f"{key}={str(path)!r} is a folder; expected {kind}")
    return p


# ----------------------------------------------------------------------------------------------------------------------
# Datasets


def image_problem(path: Path) -> str | None:
    """Why an image file cannot be read, from its header (and a PNG's end marker); None when it looks whole."""
    from PIL import Image

    try:
        with quiet(), Image.open(path) as im:  # reads the header only: format, size, mode
            image_format = im.format
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if image_format == "PNG":
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - len(PNG_END)))
            if f.read() != PNG_END:
                return "truncated: its last chunk is not IEND"
    return None


def image_folder(where: str, root: Path, num_classes: int) -> int:
    """A class-per-folder image tree (ImageNet's train layout): ``num_classes`` class folders, each holding images,
    every image's header readable (see the module docstring). Returns the number of images.

    Args:
        where: how the folder is named in a refusal, e.g. ``data.root='/data/imagenet/train'``.
        root: the folder (it exists).
        num_classes: ``data.num_classes``.
    """
    from ablations.engine.data import IMAGE_EXTENSIONS, class_folders, image_files

    classes = class_folders(root)
    if not classes:
        raise InputError(f"{where} has no class folders (expected ImageNet's layout: one folder per class)")
    if len(classes) != num_classes:
        raise InputError(f"data.num_classes={num_classes} but {root} has {len(classes)} class folders "
                         f"({', '.join(c.name for c in classes[:4])}{', ...' if len(classes) > 4 else ''})")
    files = []
    for c in classes:
        images = image_files(c)
        if not images:
            raise InputError(f"{where}: class folder {c.name!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        files += images
    step = -(-len(files) // HEADERS_CHECKED)  # 1 (every file) up to HEADERS_CHECKED files
    for f in files[::step]:
        problem = image_problem(f)
        if problem is not None:
            raise InputError(f"{where}: {f} cannot be read as an image ({problem})")
    return len(files)


def image_dataset(key: str, path: str, num_classes: int) -> None:
    """``data.root`` of ``data.name=imagefolder``: see :func:`image_folder`."""
    root = _exists(key, path, "a folder of class folders holding images")
    image_folder(f"{key}={path!r}", root, num_classes)


def digits(root: str | None, num_classes: int) -> None:
    """The handwritten digits' class-per-folder trees, where they were made before (the first job makes them from
    scikit-learn's copy otherwise): ten classes, every image readable."""
    from ablations.engine.data import DIGITS_CLASSES, digits_location

    if num_classes != DIGITS_CLASSES:
        raise InputError(f"data.num_classes={num_classes} but the digits have {DIGITS_CLASSES} classes")
    folder = digits_location(root)
    if (folder / "ref").is_dir():
        for split in ("train", "ref"):
            tree = folder / split
            where = f"data.root={root!r}" if root else f"data.name=digits ({tree})"
            image_folder(where, _exists(where, tree, "a folder of class folders holding images"), num_classes)


def cifar10_folder(key: str, path: str, num_classes: int) -> None:
    """A folder holding CIFAR-10's binary version (cifar-10-batches-bin; the python version is a pickle): its six
    files, each a whole number of 3073-byte records."""
    from ablations.engine.data import CIFAR10Dataset as C

    root = _exists(key, path, "a folder holding cifar-10-batches-bin")
    folder = root / C.FOLDER
    if not folder.is_dir():
        raise InputError(f"{key}={path!r} has no {C.FOLDER} folder (extract CIFAR-10's binary version there; the "
                         "python version is a pickle and is never loaded)")
    for name in (*C.FILES["train"], *C.FILES["ref"]):
        f = folder / name
        if not f.is_file():
            raise InputError(f"{key}={path!r}: {C.FOLDER} lacks {name} (extract all of {C.URL} there)")
        size = f.stat().st_size
        if size == 0 or size % C.RECORD:
            raise InputError(f"{key}={path!r}: {C.FOLDER}/{name} has {size} bytes; expected a non-zero multiple of "
                             f"CIFAR-10's {C.RECORD}-byte records (truncated?)")
    if num_classes != C.CLASSES:
        raise InputError(f"data.num_classes={num_classes} but CIFAR-10 has {C.CLASSES} classes")


# ----------------------------------------------------------------------------------------------------------------------
# Weights: read without running code, then compared tensor by tensor with the network that loads them


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
        raise InputError(f"{key}: {path} is not a safetensors file ({e})") from None
    return header


def safetensors_shapes(key: str, path: Path) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor of a safetensors file, from its header."""
    header = safetensors_header(key, path)
    try:
        return {k: tuple(int(n) for n in v["shape"]) for k, v in header.items() if k != "__metadata__"}
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{key}: {path} is not a safetensors file (a header entry without a shape)") from None


def unpickler_reason(e: Exception) -> str:
    """The line of torch's refusal that says what the file held, without the advice around it."""
    boilerplate = ("Weights only load failed", "Check the documentation", "Please file an issue")
    lines = [line.strip() for line in str(e).splitlines()]
    reasons = [line for line in lines if line and not line.startswith(boilerplate)]
    return (reasons[0] if reasons else type(e).__name__)[:120]


def state_dict_shapes(key: str, path: str, what: str) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor of a torch-saved state dict, loaded with torch's ``weights_only`` unpickler (tensors
    only: no code runs) and memory-mapped (a 2.7 GB checkpoint is checked without reading it)."""
    import torch

    p = _exists(key, path, f"a file ({what})")
    zipped = zipfile.is_zipfile(p)
    with open(p, "rb") as f:
        if not zipped and f.read(1) != b"\x80":  # torch.save's zip format, or the legacy pickle format
            raise InputError(f"{key}={path!r} is not a torch-saved file (expected {what})")
    try:
        with quiet():
            state = torch.load(p, map_location="cpu", weights_only=True, mmap=zipped)
    except Exception as e:  # noqa: BLE001 - any refusal of the safe unpickler: one line, nothing ran
        raise InputError(f"{key}={path!r} is not a plain state dict of tensors ({unpickler_reason(e)}); refusing to "
                         "load it") from None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{key}={path!r} does not hold a state dict of tensors (expected {what})")
    return {str(k): tuple(v.shape) for k, v in state.items()}


def meta_shapes(build: Callable[[], Any]) -> dict[str, tuple[int, ...]]:
    """The state-dict shapes of the network ``build()`` makes, built on the meta device (nothing allocated)."""
    import torch

    with quiet(), torch.device("meta"):
        net = build()
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def fits(where: str, found: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]], network: str,
         optional: str | None = None) -> None:
    """Refuse weights whose tensors are not exactly the network's: names and shapes (strict loading).

    Args:
        where: the key and path, e.g. ``eval.inception_weights='/w.pth'``.
        found, expected: tensor name -> shape, of the file and of the network.
        network: what loads the file, for the message.
        optional: a name ending the loader fills in when it is absent (BatchNorm's ``num_batches_tracked``).
    """
    missing = [k for k in expected if k not in found and not (optional and k.endswith(optional))]
    unexpected = [k for k in found if k not in expected]
    other = [k for k in expected if k in found and found[k] != expected[k]]
    problems = []
    if missing:
        problems.append(f"{len(missing)} of its {len(expected)} tensors missing (first {missing[0]!r})")
    if unexpected:
        problems.append(f"{len(unexpected)} tensors it does not have (first {unexpected[0]!r})")
    if other:
        k = other[0]
        problems.append(f"{len(other)} of another shape (first {k!r}: {list(found[k])}, expected {list(expected[k])})")
    if problems:
        raise InputError(f"{where} does not fit {network}: {'; '.join(problems)}")


def inception_weights(key: str, path: str) -> None:
    """torch-fidelity's InceptionV3 weights (pt_inception-2015-12-05), tensor by tensor."""
    from ablations.engine.metrics import inception_layout

    found = state_dict_shapes(key, path, "torch-fidelity's InceptionV3 weights, pt_inception-2015-12-05")
    with quiet():
        expected = inception_layout()
    fits(f"{key}={path!r}", found, expected, "torch-fidelity's InceptionV3", optional="num_batches_tracked")


def checkpoint(key: str, path: str, what: str, network: Callable[[], Any], section: str) -> None:
    """A pretrained family's state dict against the network it loads into, as its section configures it."""
    found = state_dict_shapes(key, path, what)
    fits(f"{key}={path!r}", found, meta_shapes(network), f"the network {section} configures")


def classifier_file(key: str, path: str) -> None:
    """A feature network written by ablations/engine/classifier.py: safetensors whose header holds its config, with
    the tensors of the EmbeddedClassifier that config builds."""
    from ablations.engine.classifier import EmbeddedClassifier

    p = _exists(key, path, "a classifier .safetensors file")
    config = (safetensors_header(key, p).get("__metadata__") or {}).get("config")
    if config is None:
        raise InputError(f"{key}={path!r} is a safetensors file without a classifier config in its header")
    try:
        kwargs = json.loads(config)
        expected = meta_shapes(lambda: EmbeddedClassifier(**kwargs))
    except (ValueError, TypeError) as e:
        raise InputError(f"{key}={path!r}: its header's config {config[:80]!r} does not build an EmbeddedClassifier "
                         f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    fits(f"{key}={path!r}", safetensors_shapes(key, p), expected, f"the EmbeddedClassifier of its config {config}")


def vae_folder(key: str, path: str) -> None:
    """A diffusers AutoencoderKL folder as ``save_pretrained`` writes it: config.json, and safetensors weights with
    the tensors of the AutoencoderKL that config builds (older attention names are renamed as diffusers does)."""
    root = _exists(key, path, "a folder holding a diffusers AutoencoderKL (config.json and safetensors weights)")
    try:
        cfg = json.loads((root / "config.json").read_text())
        if not isinstance(cfg, dict):
            raise ValueError("not a mapping")
    except (OSError, ValueError) as e:
        raise InputError(f"{key}={path!r}: no readable config.json ({type(e).__name__}); expected a diffusers "
                         "AutoencoderKL folder (save_pretrained)") from None
    missing = [k for k in ("block_out_channels", "latent_channels", "scaling_factor") if k not in cfg]
    if missing:
        raise InputError(f"{key}={path!r}: config.json lacks {', '.join(missing)}; not an AutoencoderKL config")
    weights = root / VAE_WEIGHTS
    if not weights.is_file():
        raise InputError(f"{key}={path!r}: no {VAE_WEIGHTS} (safetensors weights are required; .bin pickles are "
                         "never loaded)")
    found = safetensors_shapes(key, weights)
    import torch  # diffusers takes seconds to import: only once the cheap checks passed
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # diffusers' notes on config keys it does not use: not the user's concern
    try:
        with quiet(), torch.device("meta"):
            vae = AutoencoderKL.from_config(cfg)
    except Exception as e:  # noqa: BLE001 - any config diffusers cannot build: one line
        raise InputError(f"{key}={path!r}: config.json does not build an AutoencoderKL "
                         f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    finally:
        diffusers_logging.set_verbosity(level)
    expected = {k: tuple(v.shape) for k, v in vae.state_dict().items()}
    renamed = vae._fix_state_dict_keys_on_load(dict(found))  # query/key/value/proj_attn -> to_q/to_k/to_v/to_out.0
    fits(f"{key}={path!r}: {VAE_WEIGHTS}", renamed, expected, "the AutoencoderKL of its config.json")


def adm_reference(key: str, path: str) -> None:
    """ADM's reference batch npz: mu [2048], sigma [2048, 2048] and arr_0 (uint8 NHWC images), read from the arrays'
    headers without pickle (an array of Python objects is refused, never unpickled)."""
    import numpy as np

    p = _exists(key, path, "a file (ADM's reference batch .npz)")
    read_2_0 = np.lib.format.read_array_header_2_0
    headers: dict[str, tuple[tuple[int, ...], Any]] = {}
    try:
        with zipfile.ZipFile(p) as z:
            names = set(z.namelist())
            for a in ADM_ARRAYS:
                if f"{a}.npy" not in names:
                    continue
                with z.open(f"{a}.npy") as f:
                    version = np.lib.format.read_magic(f)  # 1.0, or 2.0 / 3.0 (longer headers)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else read_2_0
                    shape, _, dtype = read(f)
                headers[a] = (tuple(shape), dtype)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise InputError(f"{key}={path!r} is not an npz file ({type(e).__name__})") from None
    missing = [a for a in ADM_ARRAYS if a not in headers]
    if missing:
        raise InputError(f"{key}={path!r} lacks ADM's arrays {', '.join(missing)} (expected mu, sigma, arr_0)")
    pickled = [a for a, (_, dtype) in headers.items() if dtype.hasobject]
    if pickled:
        raise InputError(f"{key}={path!r}: array {pickled[0]!r} holds pickled Python objects; refusing to load it")
    d = ADM_FEATURES
    expected = {"mu": ((d,), "f"), "sigma": ((d, d), "f")}
    for a, (shape, kind) in expected.items():
        if headers[a][0] != shape or headers[a][1].kind != kind:
            raise InputError(f"{key}={path!r}: {a} is {headers[a][1]} {list(headers[a][0])}; expected float "
                             f"{list(shape)} (Inception pool3 statistics)")
    shape, dtype = headers["arr_0"]
    if dtype != np.uint8 or len(shape) != 4 or shape[-1] != 3 or shape[0] < 2:
        raise InputError(f"{key}={path!r}: arr_0 is {dtype} {list(shape)}; expected uint8 [N >= 2, H, W, 3] images")


# ----------------------------------------------------------------------------------------------------------------------
# The runs folder: writable, free space, file-name limits


def name_limits(path: Path) -> tuple[int, int]:
    """(longest file name, longest path) in bytes on the file system of ``path``'s nearest existing ancestor."""
    for a in [path, *path.parents]:
        try:
            if a.exists():
                return os.pathconf(a, "PC_NAME_MAX"), os.pathconf(a, "PC_PATH_MAX") - 1  # the limit counts a NUL
        except OSError as e:
            if e.errno != errno.ENAMETOOLONG:
                raise
    return 255, 4095


def path_fits(key: str, value: str, path: Path, extra: int, what: str) -> None:
    """Every component of ``path`` and the whole of it (plus ``extra`` bytes below it) fit the file system; ``what``
    names the paths in a refusal."""
    name_max, path_max = name_limits(path)
    long = [part for part in path.parts if len(os.fsencode(part)) > name_max]
    if long:
        raise InputError(f"{key}={_short(value)}: the name {_short(long[0], 40)} has {len(os.fsencode(long[0]))} "
                         f"bytes; this file system allows {name_max} (PC_NAME_MAX)")
    total = len(os.fsencode(path)) + extra
    if total > path_max:
        raise InputError(f"{key}={_short(value)}: {what} would reach {total} bytes; this file system allows "
                         f"{path_max} (PC_PATH_MAX): choose a shorter {key}")


def writable_folder(key: str, path: str, min_free: int = MIN_FREE_BYTES) -> Path:
    """A folder the runs can go to: short enough for the file system, its nearest existing ancestor a writable folder
    (a probe file is created and removed there) with at least ``min_free`` bytes free. Nothing is left behind."""
    p = Path(path).expanduser().absolute()
    path_fits(key, path, p, 1 + JOB_FILE_MAX, "the paths of the files jobs write")
    existing = next(a for a in [p, *p.parents] if a.exists())
    if not existing.is_dir():
        raise InputError(f"{key}={path!r}: {existing} is a file; expected a folder for the run folders")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".msf-probe-"):
            pass
    except OSError as e:
        raise InputError(f"{key}={path!r}: cannot write in {existing} ({e.strerror or e})") from None
    free = shutil.disk_usage(existing).free
    if free < min_free:
        raise InputError(f"{key}={path!r}: only {free >> 20} MB free on {existing}; need at least {min_free >> 20} MB")
    return p


def run_folders(key: str, value: str, root: Path, names: Iterable[str]) -> None:
    """The run folders a plan makes under ``root``, with the longest file a job writes in them, fit the file
    system's limits (checked once the plan names them, before anything is written)."""
    longest = max(names, key=lambda n: len(os.fsencode(n)), default="")
    path_fits(key, value, root.expanduser().absolute() / longest, 1 + JOB_FILE_MAX,
              f"run folder {_short(longest, 40)} and the files its job writes")


# ----------------------------------------------------------------------------------------------------------------------
# Input files named by their content


def fingerprint(path: str | Path, whole: int = 64 << 20, part: int = 4 << 20) -> str:
    """A digest naming a file's content, cheap for large ones: SHA-256 of the whole file up to ``whole`` bytes, else
    of its size, first and last ``part`` bytes (a 2.7 GB checkpoint is fingerprinted without reading it all)."""
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


def hub_inception_weights() -> Path | None:
    """torch-fidelity's Inception weights where its download lands (torch.hub.get_dir(), without importing torch), if
    they are there."""
    home = os.environ.get("TORCH_HOME", os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch"))
    hub = Path(os.environ.get("TORCH_HUB", os.path.join(home, "hub"))).expanduser()
    path = hub / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth"
    return path if path.is_file() else None
