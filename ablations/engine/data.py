"""Image datasets of the harness: the embedded procedural set, class-per-folder trees (ImageNet) and CIFAR-10.

Every dataset returns ``(uint8 [3, H, W] tensor, label)`` items and has a batch API ``make_batch(indices) ->
(uint8 [B, 3, H, W], int64 [B])`` plus a ``key`` string that names its content (used by the target cache).
Convert to the model range with :func:`ablations.engine.images.to_float` ([-1, 1]).

The embedded dataset (standing in for ImageNet in Sec. 4 experiments that must run offline) is procedural:
image i is a pure function of (dataset seed, i). Its classes are (coarse family) x (fine texture):

* coarse family ``label // 2``: a shape layout (disc, square, bar, ring, diamond) in a colour family (hue);
* fine texture ``TEXTURES[label % 5]``: a zero-mean pattern of period 4 (in 32-px units) inside the shape.

So classes ``2k`` and ``2k + 1`` share their coarse structure and differ only in texture, and classes ``c`` and
``c + 5`` share their texture and differ only in coarse structure. A period-4 zero-mean texture averages out under a
4x box downsample, so a generator that gets only the low-resolution base right cannot produce the right class.
Nuisance per image: position, size, hue/saturation/value jitter, background colour and gradient, texture phase and
amplitude.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from ablations.engine.images import to_uint8
from ablations.engine.specs import DataConfig

SPLITS = ("train", "ref")
DATASETS = ("embedded", "photos", "imagefolder", "cifar10", "digits")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


class ImageDataset(Dataset):
    """Base of the harness datasets: items ``(uint8 [3,H,W], label)``, ``make_batch`` and a content ``key``."""

    key: str

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        raise NotImplementedError

    def make_batch(self, indices: Sequence[int] | Tensor) -> tuple[Tensor, Tensor]:
        """Stack items into (uint8 [B,3,H,W], int64 [B])."""
        items = [self[int(i)] for i in indices]
        return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items], dtype=torch.int64)

    def labels(self) -> np.ndarray:
        """Every item's label, int64 [N], without decoding images."""
        raise NotImplementedError


def held_out(dataset: ImageDataset, num_classes: int) -> Callable[[Tensor, Sequence[int]], Tensor]:
    """Real images as a sampler, for the floors of every table: image b is an item of class labels[b] chosen by
    seeds[b] alone, uint8 [B, 3, H, W] (the same seeds pick the same images for every floor)."""
    by_class = [np.flatnonzero(dataset.labels() == c) for c in range(num_classes)]
    empty = [c for c, items in enumerate(by_class) if not len(items)]
    if empty:
        raise ValueError(f"class {empty[0]} has no image in {dataset.key}")

    def pick(labels: Tensor, seeds: Sequence[int]) -> Tensor:
        picks = [int(by_class[int(c)][torch.randint(len(by_class[int(c)]), (1,),
                                                    generator=torch.Generator().manual_seed(int(s)))])
                 for c, s in zip(labels.tolist(), seeds, strict=True)]
        return dataset.make_batch(picks)[0]

    return pick


# ----------------------------------------------------------------------------------------------------------------------
# Embedded procedural dataset.

TEXTURES = ("stripes_h", "stripes_v", "checker", "diagonal", "dots")
SHAPES = ("disc", "square", "bar", "ring", "diamond")
REF_OFFSET = 1 << 40  # global index of ref item 0: the train and ref index ranges never meet
MAX_CLASSES = 20  # 10 coarse families; beyond that the golden-angle hues crowd below the hue jitter
EMBEDDED_SIZES = (32, 64)  # image sides in pixels (the textures' period is defined in 32-px units)
DEFAULT_LENGTH = {"train": 50_000, "ref": 10_000}
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_NUM_PARAMS = 13  # nuisance uniforms per image (render_embedded reads u[:, 0..12])


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 arrays (a counter-based hash, so image i needs only (seed, i))."""
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def hash_uniform(seed: int, index: np.ndarray, n: int) -> Tensor:
    """Uniforms in [0,1) of shape [B, n], a pure function of (seed, index[b], j)."""
    key = _splitmix64(np.array([seed], dtype=np.uint64))  # [1]
    per_image = _splitmix64(key ^ index.astype(np.uint64))  # [B]
    z = _splitmix64(per_image[:, None] + np.arange(n, dtype=np.uint64)[None, :] * _GOLDEN)  # [B, n]
    return torch.from_numpy((z >> np.uint64(11)).astype(np.float64) * 2.0**-53).to(torch.float32)


def hsv_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """HSV in [0,1] (each [B]) -> RGB in [0,1] [B, 3] (the standard piecewise-linear formula)."""
    n = torch.tensor([5.0, 3.0, 1.0])  # R, G, B
    k = (n[None, :] + 6.0 * h[:, None]) % 6.0  # [B, 3]
    return v[:, None] - v[:, None] * s[:, None] * (torch.minimum(k, 4.0 - k).clamp(0.0, 1.0))


def _shape_distance(dx: Tensor, dy: Tensor) -> Tensor:
    """Normalised distance of every shape in SHAPES, < 1 inside: [B, 1, H, W] each -> [B, 5, H, W]."""
    r = torch.sqrt(dx**2 + dy**2)
    return torch.cat(
        [
            r,  # disc
            torch.maximum(dx.abs(), dy.abs()) * 1.1,  # square (area close to the disc's)
            torch.maximum(dx.abs() / 1.5, dy.abs() / 0.6),  # horizontal bar
            (r - 0.7).abs() / 0.3,  # ring
            (dx.abs() + dy.abs()) / 1.3,  # diamond
        ],
        dim=1,
    )


def _textures(ix: Tensor, iy: Tensor) -> Tensor:
    """Zero-mean period-4 patterns of TEXTURES on integer cell coordinates [B,1,H,W] -> [B, 5, H, W]."""
    ix, iy = torch.broadcast_tensors(ix, iy)
    on_x, on_y = (ix % 4) < 2, (iy % 4) < 2
    signed = [
        on_y,  # horizontal stripes
        on_x,  # vertical stripes
        on_x ^ on_y,  # 2x2 checker
        ((ix + iy) % 4) < 2,  # diagonal stripes
    ]
    dots = (on_x & on_y).float()  # a 2x2 dot every 4x4 cell: mean 1/4
    return torch.cat([2.0 * b.float() - 1.0 for b in signed] + [(dots - 0.25) / 0.75], dim=1)


def render_embedded(labels: Tensor, u: Tensor, size: int) -> Tensor:
    """Draw embedded images from labels [B] and nuisance uniforms u [B, 13] -> float [B, 3, size, size] in [-1, 1].

    The embedded dataset's generator (see the module docstring for the class design).
    """
    B, unit = labels.shape[0], size // 32  # texture cell size in pixels (1 at 32 px, 2 at 64 px)
    family, texture = labels // 2, labels % len(TEXTURES)
    col = lambda j: u[:, j].view(B, 1, 1, 1)  # noqa: E731  (one nuisance parameter as [B,1,1,1])
    grid = (torch.arange(size, dtype=torch.float32) + 0.5) / size  # pixel centres in (0, 1)
    x, y = grid.view(1, 1, 1, size), grid.view(1, 1, size, 1)
    # Coarse structure: a shape of the family's layout at a jittered position and size.
    radius = 0.22 + 0.1 * col(2)  # [B,1,1,1], in image widths
    dx, dy = (x - 0.5 - 0.3 * (col(0) - 0.5)) / radius, (y - 0.5 - 0.3 * (col(1) - 0.5)) / radius
    dist = _shape_distance(dx, dy).gather(1, (family % len(SHAPES)).view(B, 1, 1, 1).expand(B, 1, size, size))
    mask = torch.sigmoid((1.0 - dist) * radius * 96.0)  # soft edge: 10-90% rise over about 1.5 32-px pixels
    # Colours: the family's hue (golden-angle spaced) with jitter; a dull background with a linear gradient.
    hue = (family.float() * 0.381966 + 0.08 * (u[:, 3] - 0.5)) % 1.0
    fg = hsv_to_rgb(hue, 0.55 + 0.3 * u[:, 4], 0.6 + 0.3 * u[:, 5]).view(B, 3, 1, 1)
    bg = hsv_to_rgb(u[:, 6], torch.full((B,), 0.3), 0.15 + 0.3 * u[:, 7]).view(B, 3, 1, 1)
    angle = 2 * math.pi * col(8)
    gradient = 0.3 * col(9) * ((x - 0.5) * torch.cos(angle) + (y - 0.5) * torch.sin(angle))
    # Fine texture: the class's zero-mean period-4 pattern, random phase and amplitude, inside the shape only.
    cells = torch.arange(size) // unit
    ix = cells.view(1, 1, 1, size) + (4 * u[:, 10]).long().view(B, 1, 1, 1)
    iy = cells.view(1, 1, size, 1) + (4 * u[:, 11]).long().view(B, 1, 1, 1)
    pattern = _textures(ix, iy).gather(1, texture.view(B, 1, 1, 1).expand(B, 1, size, size))
    amplitude = 0.18 + 0.07 * col(12)
    background = 0.75 * (2 * bg - 1) + gradient
    foreground = 0.75 * (2 * fg - 1) + amplitude * pattern
    return (background * (1 - mask) + foreground * mask).clamp(-1.0, 1.0)


class EmbeddedDataset(ImageDataset):
    """The embedded procedural dataset: item i of a split is a pure function of (seed, split, i).

    Args:
        split: "train" (global indices 0..length-1) or "ref" (held out: global indices REF_OFFSET + i).
        size: image side, 32 or 64 (64 draws the same pictures at twice the resolution).
        num_classes: 2..20; item i has label i % num_classes (balanced).
        seed: dataset seed.
        length: number of items (default 50,000 train / 10,000 ref).
    """

    def __init__(
        self, split: str = "train", size: int = 32, num_classes: int = 10, seed: int = 0, length: int | None = None
    ):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        if size not in EMBEDDED_SIZES:
            raise ValueError(f"embedded image size must be one of {EMBEDDED_SIZES}, got {size}")
        if not 2 <= num_classes <= MAX_CLASSES:
            raise ValueError(f"embedded num_classes must be in [2, {MAX_CLASSES}], got {num_classes}")
        if not 0 <= seed < 2**63:
            raise ValueError(f"embedded seed must be in [0, 2**63), got {seed}")
        length = DEFAULT_LENGTH[split] if length is None else length
        if not 0 < length <= REF_OFFSET:
            raise ValueError(f"embedded length must be in [1, {REF_OFFSET}], got {length}")
        self.split, self.size, self.num_classes, self.seed, self.length = split, size, num_classes, seed, length
        self.offset = 0 if split == "train" else REF_OFFSET
        self.key = f"embedded:split={split},size={size},classes={num_classes},seed={seed},length={length}"

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        images, labels = self.make_batch([index])
        return images[0], int(labels[0])

    def labels(self) -> np.ndarray:
        """Item i has label i % num_classes."""
        return np.arange(self.length, dtype=np.int64) % self.num_classes

    def make_batch(self, indices: Sequence[int] | Tensor) -> tuple[Tensor, Tensor]:
        """Vectorised generation of items ``indices`` -> (uint8 [B,3,H,W], int64 [B])."""
        index = np.asarray(indices, dtype=np.int64).reshape(-1)
        if index.size and (index.min() < 0 or index.max() >= self.length):
            raise IndexError(f"embedded {self.split} index out of range [0, {self.length}): {index.tolist()[:8]}")
        labels = torch.from_numpy(index % self.num_classes)
        u = hash_uniform(self.seed, index + self.offset, _NUM_PARAMS)
        return to_uint8(render_embedded(labels, u, self.size)), labels


# ----------------------------------------------------------------------------------------------------------------------
# Photo crops: a small real image set that ships inside packages on the index (scikit-image's and scikit-learn's
# sample photos), one class per photo.

PHOTOS = (  # (class name, package, loader): colour photos, then two grey textures
    ("astronaut", "skimage", "astronaut"),
    ("cat", "skimage", "chelsea"),
    ("coffee", "skimage", "coffee"),
    ("rocket", "skimage", "rocket"),
    ("stained tissue", "skimage", "immunohistochemistry"),
    ("motorcycle", "skimage", "stereo_motorcycle"),
    ("temple", "sklearn", "china.jpg"),
    ("flower", "sklearn", "flower.jpg"),
    ("brick", "skimage", "brick"),
    ("gravel", "skimage", "gravel"),
)
CROP_SIDES = (48, 160)  # crop side in photo pixels, drawn uniformly: every crop is reduced to the image size


@functools.cache
def _photo(package: str, name: str) -> np.ndarray:
    """One sample photo as uint8 [H, W, 3], read from the installed package (no network), once per process."""
    if package == "sklearn":
        from sklearn.datasets import load_sample_image

        image = load_sample_image(name)
    else:
        import skimage.data

        image = getattr(skimage.data, name)()
        image = image[0] if isinstance(image, tuple) else image  # stereo_motorcycle: (left, right, disparity)
    return np.ascontiguousarray(np.stack([image] * 3, -1) if image.ndim == 2 else image[..., :3])


class PhotosDataset(ImageDataset):
    """Crops of real photos, one class per photo (PHOTOS): item i of a split is a pure function of (seed, split, i).

    Class ``i % num_classes``; a square crop of side uniform in CROP_SIDES at a uniform position, mirrored with
    probability 1/2, reduced to ``size`` px (bicubic, antialiased). So every image carries the photo's detail at
    every scale from the crop down to a pixel, as natural images do; the ref split draws other crops of the same
    photos (indices from REF_OFFSET), as the embedded set does.
    """

    def __init__(self, split: str = "train", size: int = 32, num_classes: int = len(PHOTOS), seed: int = 0,
                 length: int | None = None):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        if not 2 <= num_classes <= len(PHOTOS):
            raise ValueError(f"photos num_classes must be in [2, {len(PHOTOS)}], got {num_classes}")
        if not 8 <= size <= CROP_SIDES[0]:
            raise ValueError(f"photos image size must be in [8, {CROP_SIDES[0]}], got {size}")
        length = DEFAULT_LENGTH[split] if length is None else length
        if not 0 < length <= REF_OFFSET:
            raise ValueError(f"photos length must be in [1, {REF_OFFSET}], got {length}")
        self.photos = [_photo(package, name) for _, package, name in PHOTOS[:num_classes]]
        digest = hashlib.sha256(b"".join(p.tobytes() for p in self.photos)).hexdigest()[:16]
        self.split, self.size, self.num_classes, self.seed, self.length = split, size, num_classes, seed, length
        self.offset = 0 if split == "train" else REF_OFFSET
        self.key = f"photos:split={split},size={size},classes={num_classes},seed={seed},length={length},{digest}"

    def __len__(self) -> int:
        return self.length

    def labels(self) -> np.ndarray:
        """Item i has label i % num_classes."""
        return np.arange(self.length, dtype=np.int64) % self.num_classes

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        images, labels = self.make_batch([index])
        return images[0], int(labels[0])

    def make_batch(self, indices: Sequence[int] | Tensor) -> tuple[Tensor, Tensor]:
        """Items ``indices`` -> (uint8 [B,3,H,W], int64 [B])."""
        index = np.asarray(indices, dtype=np.int64).reshape(-1)
        if index.size and (index.min() < 0 or index.max() >= self.length):
            raise IndexError(f"photos {self.split} index out of range [0, {self.length}): {index.tolist()[:8]}")
        labels = index % self.num_classes
        u = hash_uniform(self.seed, index + self.offset, 4).numpy()  # side, x, y, mirror
        out = np.empty((len(index), self.size, self.size, 3), np.uint8)
        for b, (c, (side, x, y, mirror)) in enumerate(zip(labels, u, strict=True)):
            photo = self.photos[int(c)]
            h, w = photo.shape[:2]
            n = min(int(CROP_SIDES[0] + side * (CROP_SIDES[1] - CROP_SIDES[0])), h, w)
            top, left = int(y * (h - n + 1)), int(x * (w - n + 1))
            crop = Image.fromarray(photo[top : top + n, left : left + n])
            crop = crop.resize((self.size, self.size), Image.Resampling.BICUBIC)
            out[b] = np.asarray(crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if mirror < 0.5 else crop)
        return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)


# ----------------------------------------------------------------------------------------------------------------------
# Class-per-folder trees (ImageNet train layout) with ADM's centre crop, and CIFAR-10.


def center_crop_arr(pil_image: Image.Image, image_size: int) -> Image.Image:
    """ADM's centre crop (DiT's train.py): BOX-halve while min side >= 2*size, BICUBIC to size, crop (Sec. 4.1)."""
    while min(*pil_image.size) >= 2 * image_size:
        w, h = pil_image.size
        pil_image = pil_image.resize((w // 2, h // 2), resample=Image.Resampling.BOX)
    w, h = pil_image.size
    scale = image_size / min(w, h)
    pil_image = pil_image.resize((round(w * scale), round(h * scale)), resample=Image.Resampling.BICUBIC)
    arr = np.array(pil_image)
    crop_y, crop_x = (arr.shape[0] - image_size) // 2, (arr.shape[1] - image_size) // 2
    return Image.fromarray(arr[crop_y : crop_y + image_size, crop_x : crop_x + image_size])


def load_image(path: Path, image_size: int) -> Tensor:
    """One image file (JPEG, PNG, ...; grey, CMYK or RGB) -> RGB, ADM's centre crop -> uint8 [3, S, S].

    Raises:
        ValueError: naming the file, when it cannot be decoded (truncated, not an image).
    """
    try:
        with Image.open(path) as image:
            return pil_to_tensor(center_crop_arr(image.convert("RGB"), image_size))
    except (OSError, SyntaxError, ValueError) as e:  # PIL's UnidentifiedImageError is an OSError
        raise ValueError(f"{path}: cannot decode this image ({e})") from None


def pil_to_tensor(pil_image: Image.Image) -> Tensor:
    """PIL image -> uint8 [3, H, W] RGB tensor."""
    return torch.from_numpy(np.array(pil_image.convert("RGB"))).permute(2, 0, 1).contiguous()


def class_folders(root: Path) -> list[Path]:
    """The class folders of a class-per-folder tree, sorted: class ``i`` is the ``i``-th."""
    return sorted(p for p in root.iterdir() if p.is_dir())


def image_files(class_folder: Path) -> list[Path]:
    """The image files of one class folder, found recursively, sorted."""
    return sorted(p for p in class_folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


class ImageFolderDataset(ImageDataset):
    """Any class-per-folder tree (e.g. ImageNet train), ADM centre-cropped to ``image_size`` (Sec. 4.1).

    Labels are the sorted class-folder names' ranks; images are found recursively inside each class folder.
    Raises FileNotFoundError for a missing root and ValueError for a tree without class folders or images.
    """

    def __init__(self, root: str | Path, image_size: int):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder {root} does not exist (expected class-per-folder subdirectories)")
        folders = class_folders(root)
        if not folders:
            raise ValueError(f"image folder {root} has no class subdirectories")
        self.classes = [f.name for f in folders]
        self.samples = [(path, label) for label, folder in enumerate(folders) for path in image_files(folder)]
        if not self.samples:
            raise ValueError(f"image folder {root} has no images ({', '.join(IMAGE_EXTENSIONS)}) in its class folders")
        self.root, self.image_size = root, image_size
        listing = "\n".join(f"{p.relative_to(root)}\t{y}" for p, y in self.samples).encode()
        self.key = f"imagefolder:{root.resolve()},size={image_size},files={hashlib.sha256(listing).hexdigest()[:16]}"

    def __len__(self) -> int:
        return len(self.samples)

    def labels(self) -> np.ndarray:
        """The class-folder rank of every file."""
        return np.array([y for _, y in self.samples], dtype=np.int64)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.samples[index]
        return load_image(path, self.image_size), label


class CIFAR10Dataset(ImageDataset):
    """CIFAR-10 from its binary version (split "train" = the 5 data batches, "ref" = the test batch), ADM-cropped.

    Reads ``cifar-10-batches-bin`` (records of 1 label byte + 3072 pixel bytes, R, G and B planes) with numpy: the
    python version is a pickle, which this harness never loads. Nothing is downloaded.
    """

    FOLDER = "cifar-10-batches-bin"
    URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
    FILES = {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "ref": ("test_batch.bin",)}
    RECORD = 3073  # bytes per image: the label byte and 32 x 32 x 3 pixel bytes
    CLASSES = 10

    def __init__(self, root: str | Path, split: str = "train", image_size: int = 32):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        folder = Path(root) / self.FOLDER
        names = self.FILES[split]
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise FileNotFoundError(
                f"CIFAR-10 not found: expected {folder / missing[0]} (extract {self.URL} into {root}); "
                "this harness never downloads"
            )
        records = np.concatenate([np.fromfile(folder / n, dtype=np.uint8).reshape(-1, self.RECORD) for n in names])
        self.targets = records[:, 0].astype(np.int64)  # [N]
        self.images = records[:, 1:].reshape(-1, 3, 32, 32)  # [N, 3, 32, 32] uint8
        self.image_size = image_size
        self.key = f"cifar10:{Path(root).resolve()},split={split},size={image_size}"

    def __len__(self) -> int:
        return len(self.targets)

    def labels(self) -> np.ndarray:
        """The label byte of every record."""
        return self.targets

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = Image.fromarray(self.images[index].transpose(1, 2, 0))
        return pil_to_tensor(center_crop_arr(image, self.image_size)), int(self.targets[index])


# ----------------------------------------------------------------------------------------------------------------------
# Handwritten digits (scikit-learn's copy of the UCI set): a small real image set, read through the ImageFolder path.

DIGITS_VERSION = 1
DIGITS_REF = 297  # held-out images (the last of a fixed shuffle of the 1797); the other 1500 are the train split
DIGITS_CLASSES = 10


def digits_location(root: str | Path | None = None) -> Path:
    """Where the digits' PNG trees are (or will be) made: ``root``, else the user's cache folder."""
    if root is not None:
        return Path(root)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "msf-harness" / f"digits-v{DIGITS_VERSION}"


def digits_folder(root: str | Path | None = None) -> Path:
    """scikit-learn's 1797 handwritten digits (8x8, 17 grey levels) as PNG files in two class-per-folder trees,
    ``train/<digit>/`` and ``ref/<digit>/``, made once (atomically) under ``root`` or the user's cache folder.

    The 8x8 images are enlarged to 32x32 (bicubic) and stored as RGB, so they enter the harness exactly as ImageNet
    does: JPEG/PNG files decoded by PIL and centre-cropped by ImageFolderDataset.
    """
    import shutil
    import tempfile

    root = digits_location(root)
    if (root / "ref").is_dir():
        return root
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".digits-", dir=root.parent))
    try:
        for rank, i in enumerate(order):
            split = "ref" if rank >= len(order) - DIGITS_REF else "train"
            folder = tmp / split / str(int(digits.target[i]))
            folder.mkdir(parents=True, exist_ok=True)
            grey = (digits.images[i] * (255.0 / 16.0)).round().astype(np.uint8)  # [8, 8] in 0..255
            image = Image.fromarray(grey).resize((32, 32), Image.Resampling.BICUBIC).convert("RGB")
            image.save(folder / f"{int(i):04d}.png")
        try:
            os.replace(tmp, root)
        except OSError:  # another process made it first
            if not (root / "ref").is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def build_dataset(
    name: str,
    root: str | Path | None = None,
    split: str = "train",
    image_size: int = 32,
    num_classes: int = 10,
    seed: int = 0,
    length: int | None = None,
    ref_root: str | Path | None = None,
) -> ImageDataset:
    """Build a dataset by name.

    Args:
        name: "embedded", "imagefolder", "cifar10" or "digits".
        root: data folder (imagefolder: the class-per-folder tree of the train split; cifar10: the folder holding
            cifar-10-batches-bin; digits: where its PNG trees are made, None for the user's cache; embedded: unused).
        ref_root: imagefolder only: the class-per-folder tree of the held-out reference split (None: ``root``).
        split: "train" or "ref" (embedded, cifar10 and digits; an imagefolder's split is chosen by its root).
        image_size: output side in pixels.
        num_classes, seed, length: embedded only.
    """
    if name == "embedded":
        return EmbeddedDataset(split, image_size, num_classes, seed, length)
    if name == "photos":
        return PhotosDataset(split, image_size, num_classes, seed, length)
    if name == "digits":
        return ImageFolderDataset(digits_folder(root) / split, image_size)
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if root is None:
        raise ValueError(f"dataset {name!r} needs a root folder")
    if name == "imagefolder":
        return ImageFolderDataset(ref_root if split == "ref" and ref_root else root, image_size)
    return CIFAR10Dataset(root, split, image_size)


def dataset(data: DataConfig, split: str) -> ImageDataset:
    """The train or reference split of a configured dataset."""
    length = data.train_size if split == "train" else data.ref_size
    return build_dataset(data.name, data.root, split, data.image_size, data.num_classes, data.seed,
                         length if data.name in ("embedded", "photos") else None, data.ref_root)
