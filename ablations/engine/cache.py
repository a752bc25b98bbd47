"""Per-scale target cache: the encoder passes of Algorithm 1 run once per image, training reads f_resi^{h_i} from disk.

Layout of a cache folder::

    manifest.json            the key (dataset, autoencoder id, factorization, scales, flip policy, dtype, shard
                             size), the completed shards, and ``complete`` (true only once every shard is written)
    shard_00000/scale_0.npy  targets of scale 0 for the shard's items, [n, C, h_0, h_0]; one file per scale
    shard_00000/labels.npy   int64 [n]
    ...

A shard is written into ``shard_k.tmp`` and renamed to ``shard_k`` (atomic), so a half-written shard never looks
complete; a rebuild skips existing shards and rewrites a leftover ``.tmp``. Horizontal flips (flip policy "both"):
item 2k is image k and item 2k+1 its mirror image, each encoded separately (the VAE is not flip-equivariant), so
the trainer picks a flip by picking an item. Flip policy "none": item k is image k.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ablations.engine.data import ImageDataset
from ablations.engine.images import to_float
from ablations.engine.io import write_json
from msf.autoencoder import Autoencoder
from msf.factorize import Factorization

Flip = Literal["both", "none"]
FLIPS: tuple[Flip, ...] = ("both", "none")
DTYPES = ("float32", "float16")
MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class CacheKeyError(ValueError):
    """A cache folder holds targets built for another configuration."""


class CacheIncompleteError(RuntimeError):
    """A cache folder whose build has not finished."""


def cache_key(
    dataset: ImageDataset,
    autoencoder: Autoencoder,
    factorization: Factorization,
    flip: Flip,
    dtype: str,
    shard_size: int,
) -> dict:
    """Everything the cached bytes depend on, as plain JSON data."""
    return {
        "format": FORMAT_VERSION,
        "dataset": dataset.key,
        "num_images": len(dataset),
        "autoencoder": f"{autoencoder.name}@{autoencoder.fingerprint()}",
        "factorization": factorization.name,
        "scales": list(factorization.scales.sizes),
        "mode": factorization.mode,
        "flip": flip,
        "dtype": dtype,
        "shard_size": shard_size,
    }


def _shard_dir(root: Path, k: int) -> Path:
    return root / f"shard_{k:05d}"


def _check_key(root: Path, key: dict) -> None:
    """Raise CacheKeyError unless the folder is new or was started with the same key."""
    manifest = root / MANIFEST
    if not manifest.exists():
        if any(root.glob("shard_*")):
            raise CacheKeyError(f"cache {root} has shards but no {MANIFEST}; delete the folder to rebuild it")
        return
    old = json.loads(manifest.read_text())["key"]
    diff = {k: (old.get(k), v) for k, v in key.items() if old.get(k) != v}
    if diff:
        raise CacheKeyError(f"cache {root} was built for another config (field: (cached, requested)): {diff}")


@torch.no_grad()
def extract_targets(
    images: Tensor, autoencoder: Autoencoder, factorization: Factorization, flip: Flip
) -> tuple[list[Tensor], int]:
    """Algorithm 1 on uint8 images [B,3,H,W] (with mirrored copies interleaved if flip == "both").

    Returns the per-scale targets [B*m, C, h_i, h_i] and the items per image m (2 with flips, else 1).
    """
    x = to_float(images)  # [B,3,H,W] in [-1,1]
    if flip == "both":
        x = torch.stack([x, x.flip(-1)], dim=1).flatten(0, 1)  # [2B,3,H,W]: image k at 2k, its mirror at 2k+1
    return factorization.targets(x, autoencoder.encode, autoencoder.factor), 2 if flip == "both" else 1


def _batches(dataset: ImageDataset, image_ids: range, batch_size: int, workers: int) -> Iterator[tuple[Tensor, Tensor]]:
    """The shard's images in order, batch by batch, decoded in ``workers`` processes (0: in this one)."""
    starts = range(image_ids.start, image_ids.stop, batch_size)
    chunks = [range(s, min(s + batch_size, image_ids.stop)) for s in starts]
    if workers == 0:
        yield from (dataset.make_batch(c) for c in chunks)
        return
    loader = torch.utils.data.DataLoader(  # one chunk per item: the order is kept, the decoding is parallel
        _Chunks(dataset, chunks), batch_size=None, num_workers=workers, prefetch_factor=2,
        multiprocessing_context="fork" if os.name == "posix" else None,
    )
    yield from loader


class _Chunks(torch.utils.data.Dataset):
    """Index ranges of a dataset as items, so that DataLoader workers decode whole batches."""

    def __init__(self, dataset: ImageDataset, chunks: list[range]) -> None:
        self.dataset, self.chunks = dataset, chunks

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.dataset.make_batch(self.chunks[i])


def _extract_shard(
    dataset: ImageDataset,
    image_ids: range,
    autoencoder: Autoencoder,
    factorization: Factorization,
    flip: Flip,
    batch_size: int,
    device: torch.device,
    workers: int = 0,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Targets of one shard's images, batch by batch: ([float32 [n, C, h_i, h_i] per scale], int64 labels [n])."""
    per_scale: list[list[np.ndarray]] = [[] for _ in factorization.scales.sizes]
    labels = []
    for images, y in _batches(dataset, image_ids, batch_size, workers):
        targets, m = extract_targets(images.to(device), autoencoder, factorization, flip)
        for i, f in enumerate(targets):
            per_scale[i].append(f.to("cpu", torch.float32).numpy())
        labels.append(y.repeat_interleave(m).numpy())
    return [np.concatenate(chunks) for chunks in per_scale], np.concatenate(labels).astype(np.int64)


def _shard_ok(shard: Path, n_scales: int) -> bool:
    """A written shard whose arrays all load (memory-mapped) with one length: a truncated file fails."""
    try:
        lengths = {len(np.load(shard / f"scale_{i}.npy", mmap_mode="r")) for i in range(n_scales)}
        lengths.add(len(np.load(shard / "labels.npy", mmap_mode="r")))
    except (OSError, ValueError):
        return False
    return len(lengths) == 1


def _write_shard(root: Path, k: int, targets: list[np.ndarray], labels: np.ndarray, dtype: str) -> None:
    """Write shard k into shard_k.tmp (replacing a leftover one), then rename it to shard_k."""
    tmp = root / f"shard_{k:05d}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        for i, f in enumerate(targets):
            np.save(tmp / f"scale_{i}.npy", f.astype(dtype))
        np.save(tmp / "labels.npy", labels)
        os.replace(tmp, _shard_dir(root, k))
    except OSError as e:  # numpy's message ("problem writing element ...") names neither the file nor the cause
        raise OSError(f"cannot write cache shard {k} into {root} ({e}): is the disk full or read-only?") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed write (full disk) leaves nothing behind


def build_cache(
    root: str | Path,
    dataset: ImageDataset,
    autoencoder: Autoencoder,
    factorization: Factorization,
    batch_size: int = 64,
    shard_size: int = 4096,
    flip: Flip = "both",
    dtype: str = "float32",
    device: torch.device | str = "cpu",
    log: Callable[[str], None] = print,
    workers: int = 0,
    part: int = 0,
    parts: int = 1,
) -> TargetCache | None:
    """Pre-extract every image's per-scale targets (Algorithm 1) into a sharded, resumable, memory-mapped cache; the
    cache (None for one part of a cache built in parts).

    Args:
        root: cache folder (created; an existing one must hold the same key, else CacheKeyError).
        dataset: images (uint8) and labels, with a content ``key``.
        autoencoder: E of Algorithm 1 (its name and weight fingerprint enter the key).
        factorization: which targets (Algorithm 1 for "residual"; see msf.factorize).
        batch_size: images per encoder call (twice as many items with flips).
        shard_size: images per shard (the unit of resumption).
        flip: "both" (store each image and its mirror) or "none".
        dtype: "float32" or "float16" storage.
        device: where the encoder runs.
        log: progress callback, called once per written shard.
        workers: processes decoding images (JPEG decoding is the bottleneck of a GPU encoder).
        part, parts: this folder holds shards k with k % parts == part (a cache split over a SLURM job array);
            :class:`TargetCache` reads the parts' folders as one cache.
    """
    if flip not in FLIPS:
        raise ValueError(f"unknown flip policy {flip!r}; expected one of {', '.join(FLIPS)}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown cache dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    if batch_size < 1 or shard_size < 1:
        raise ValueError(f"batch_size and shard_size must be >= 1, got {batch_size} and {shard_size}")
    if not 0 <= part < parts:
        raise ValueError(f"cache part {part} is not in [0, {parts})")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    key = {**cache_key(dataset, autoencoder, factorization, flip, dtype, shard_size), "part": part, "parts": parts}
    _check_key(root, key)
    n_shards = -(-len(dataset) // shard_size)
    mine = [k for k in range(n_shards) if k % parts == part]
    for k in mine:
        if _shard_dir(root, k).is_dir() and not _shard_ok(_shard_dir(root, k), len(factorization.scales)):
            log(f"cache shard {k + 1}/{n_shards} is damaged; encoding it again")
            shutil.rmtree(_shard_dir(root, k))
    done = [k for k in mine if _shard_dir(root, k).is_dir()]
    manifest = {"key": key, "shards": done, "num_shards": n_shards, "complete": False}
    write_json(root / MANIFEST, manifest)
    t_start, encoded = time.perf_counter(), 0
    for k in mine:
        if k in done:
            continue
        t0 = time.perf_counter()
        ids = range(k * shard_size, min((k + 1) * shard_size, len(dataset)))
        targets, labels = _extract_shard(
            dataset, ids, autoencoder, factorization, flip, batch_size, torch.device(device), workers
        )
        _write_shard(root, k, targets, labels, dtype)
        done.append(k)
        write_json(root / MANIFEST, {**manifest, "shards": done})
        encoded += len(ids)
        rate, overall = len(ids) / (time.perf_counter() - t0), encoded / (time.perf_counter() - t_start)
        log(f"cache shard {len(done)}/{len(mine)} (shard {k} of {n_shards}): {rate:.0f} images/s, {overall:.0f} so far")
    write_json(root / MANIFEST, {**manifest, "shards": sorted(done), "complete": True})
    return TargetCache(root) if parts == 1 else None


def part_stats(root: str | Path, first: int = 1024) -> tuple[int, list[float]]:
    """Items in a cache folder (all of a cache, or one part of one) and the RMS of each scale's targets over its first
    ``first`` items, across shards as before parts existed (a cheap check of what was encoded)."""
    root = Path(root)
    manifest = json.loads((root / MANIFEST).read_text())
    shards = [_shard_dir(root, k) for k in sorted(manifest["shards"])]
    items = sum(len(np.load(s / "labels.npy", mmap_mode="r")) for s in shards)
    n_scales = len(manifest["key"]["scales"])
    head = [torch.from_numpy(np.concatenate([np.load(s / f"scale_{i}.npy", mmap_mode="r") for s in shards])[:first]
                             .astype(np.float32)) for i in range(n_scales)]  # the first items across shards
    return items, [float(f.double().pow(2).mean().sqrt()) for f in head]


class TargetCache:
    """A completed target cache, memory-mapped: ``batch(indices)`` returns per-scale targets and labels.

    ``roots`` are one cache folder, or the folders of a cache built in parts (``build_cache(part=i, parts=n)``),
    read as one cache.
    """

    def __init__(self, *roots: str | Path):
        folders = [Path(r) for r in roots]
        shard_of: dict[int, Path] = {}
        keys = []
        for root in folders:
            if not (root / MANIFEST).is_file():
                raise FileNotFoundError(f"no target cache in {root} (missing {MANIFEST})")
            manifest = json.loads((root / MANIFEST).read_text())
            if not manifest["complete"]:
                raise CacheIncompleteError(
                    f"cache {root} is incomplete ({len(manifest['shards'])}/{manifest['num_shards']} shards "
                    "written); rerun build_cache to resume it"
                )
            keys.append({k: v for k, v in manifest["key"].items() if k != "part"})
            shard_of |= {k: _shard_dir(root, k) for k in manifest["shards"]}
        if any(k != keys[0] for k in keys) or sorted(shard_of) != list(range(manifest["num_shards"])):
            raise CacheKeyError(f"the cache parts {[str(f) for f in folders]} do not form one cache")
        self.root, self.key = folders[0], keys[0]
        shards = [shard_of[k] for k in range(manifest["num_shards"])]
        n_scales = len(self.key["scales"])
        self.arrays = [[np.load(s / f"scale_{i}.npy", mmap_mode="r") for s in shards] for i in range(n_scales)]
        self.labels = np.concatenate([np.load(s / "labels.npy") for s in shards])  # int64 [len]
        self.shard_items = len(self.arrays[0][0])  # items per shard (the last may be shorter)

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: Sequence[int] | np.ndarray | Tensor) -> tuple[list[Tensor], Tensor]:
        """Items ``indices`` -> ([targets of scale i, [B, C, h_i, h_i] float32 for each i], labels int64 [B])."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"cache index out of range [0, {len(self)}): {idx.tolist()[:8]}")
        shard, offset = np.divmod(idx, self.shard_items)
        out = [np.empty((idx.size, *arrays[0].shape[1:]), dtype=np.float32) for arrays in self.arrays]
        for k in np.unique(shard):
            sel = shard == k
            for i, arrays in enumerate(self.arrays):
                out[i][sel] = arrays[k][offset[sel]]
        return [torch.from_numpy(o) for o in out], torch.from_numpy(self.labels[idx])
