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
from collections.abc import Callable, Sequence
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
    """Everything the cached bytes depend on, as plain JSON data (harness)."""
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
    """Raise CacheKeyError unless the folder is new or was started with the same key (harness)."""
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
    """Algorithm 1 on uint8 images [B,3,H,W] (with mirrored copies interleaved if flip == "both") (harness).

    Returns the per-scale targets [B*m, C, h_i, h_i] and the items per image m (2 with flips, else 1).
    """
    x = to_float(images)  # [B,3,H,W] in [-1,1]
    if flip == "both":
        x = torch.stack([x, x.flip(-1)], dim=1).flatten(0, 1)  # [2B,3,H,W]: image k at 2k, its mirror at 2k+1
    return factorization.targets(x, autoencoder.encode, autoencoder.factor), 2 if flip == "both" else 1


def _extract_shard(
    dataset: ImageDataset,
    image_ids: range,
    autoencoder: Autoencoder,
    factorization: Factorization,
    flip: Flip,
    batch_size: int,
    device: torch.device,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Targets of one shard's images, batch by batch: ([float32 [n, C, h_i, h_i] per scale], int64 labels [n])."""
    per_scale: list[list[np.ndarray]] = [[] for _ in factorization.scales.sizes]
    labels = []
    for start in range(image_ids.start, image_ids.stop, batch_size):
        images, y = dataset.make_batch(range(start, min(start + batch_size, image_ids.stop)))
        targets, m = extract_targets(images.to(device), autoencoder, factorization, flip)
        for i, f in enumerate(targets):
            per_scale[i].append(f.to("cpu", torch.float32).numpy())
        labels.append(y.repeat_interleave(m).numpy())
    return [np.concatenate(chunks) for chunks in per_scale], np.concatenate(labels).astype(np.int64)


def _write_shard(root: Path, k: int, targets: list[np.ndarray], labels: np.ndarray, dtype: str) -> None:
    """Write shard k into shard_k.tmp (replacing a leftover one), then rename it to shard_k (harness)."""
    tmp = root / f"shard_{k:05d}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    for i, f in enumerate(targets):
        np.save(tmp / f"scale_{i}.npy", f.astype(dtype))
    np.save(tmp / "labels.npy", labels)
    os.replace(tmp, _shard_dir(root, k))


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
) -> TargetCache:
    """Pre-extract every image's per-scale targets (Algorithm 1) into a sharded, resumable, memory-mapped cache.

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
    """
    if flip not in FLIPS:
        raise ValueError(f"unknown flip policy {flip!r}; expected one of {', '.join(FLIPS)}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown cache dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    if batch_size < 1 or shard_size < 1:
        raise ValueError(f"batch_size and shard_size must be >= 1, got {batch_size} and {shard_size}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    key = cache_key(dataset, autoencoder, factorization, flip, dtype, shard_size)
    _check_key(root, key)
    n_shards = -(-len(dataset) // shard_size)
    done = [k for k in range(n_shards) if _shard_dir(root, k).is_dir()]
    write_json(root / MANIFEST, {"key": key, "shards": done, "num_shards": n_shards, "complete": False})
    for k in range(n_shards):
        if k in done:
            continue
        t0 = time.perf_counter()
        ids = range(k * shard_size, min((k + 1) * shard_size, len(dataset)))
        targets, labels = _extract_shard(
            dataset, ids, autoencoder, factorization, flip, batch_size, torch.device(device)
        )
        _write_shard(root, k, targets, labels, dtype)
        done.append(k)
        write_json(root / MANIFEST, {"key": key, "shards": done, "num_shards": n_shards, "complete": False})
        log(f"cache shard {k + 1}/{n_shards}: {len(ids) / (time.perf_counter() - t0):.0f} images/s")
    write_json(root / MANIFEST, {"key": key, "shards": done, "num_shards": n_shards, "complete": True})
    return TargetCache(root)


class TargetCache:
    """A completed target cache, memory-mapped: ``batch(indices)`` returns per-scale targets and labels (harness)."""

    def __init__(self, root: str | Path):
        root = Path(root)
        if not (root / MANIFEST).is_file():
            raise FileNotFoundError(f"no target cache in {root} (missing {MANIFEST})")
        manifest = json.loads((root / MANIFEST).read_text())
        if not manifest["complete"]:
            raise CacheIncompleteError(
                f"cache {root} is incomplete ({len(manifest['shards'])}/{manifest['num_shards']} shards); "
                "rerun build_cache to resume it"
            )
        self.root, self.key = root, manifest["key"]
        shards = [_shard_dir(root, k) for k in range(manifest["num_shards"])]
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
