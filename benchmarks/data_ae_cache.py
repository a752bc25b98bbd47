"""Data, autoencoder and target-cache throughput on CPU.

    .venv/bin/python benchmarks/data_ae_cache.py [--threads 1] [--ae-steps N] [--cache-images 2048] [--out DIR]

Measures: embedded images per second (one thread); the default small-AE config's training time and held-out
reconstruction PSNR (1024 ref images); cache build throughput (residual factorization, scales [6, 8], flips stored);
and the time to read one random training batch of 64 items from the cache (median of 200 reads).
Prints one JSON object. ``--out`` keeps the trained autoencoder and the cache there (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ablations.engine.autoencoders import SmallAEConfig, psnr, save_autoencoder, train_small_autoencoder
from ablations.engine.cache import build_cache
from ablations.engine.data import EmbeddedDataset
from ablations.engine.images import to_float
from msf.factorize import make_factorization, make_scales


def embedded_images_per_second(seconds: float = 3.0, batch: int = 256) -> float:
    """Generate embedded 32-px batches on one thread for ``seconds``; return images per second."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    data, n, start = EmbeddedDataset("train"), 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        data.make_batch(range(n % 40_000, n % 40_000 + batch))
        n += batch
    torch.set_num_threads(threads)
    return n / (time.perf_counter() - start)


def main() -> None:
    """Run the four measurements and print them as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads for AE and cache")
    parser.add_argument("--ae-steps", type=int, default=SmallAEConfig.steps, help="override the AE training steps")
    parser.add_argument("--cache-images", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="msf-bench-"))
    result: dict = {"threads": args.threads, "embedded_images_per_s_1thread": embedded_images_per_second()}
    torch.set_num_threads(args.threads)

    config = dataclasses.replace(SmallAEConfig(), steps=args.ae_steps)
    start = time.perf_counter()
    ae = train_small_autoencoder(EmbeddedDataset("train"), config, torch.Generator().manual_seed(0))
    result["ae_config"] = dataclasses.asdict(config)
    result["ae_params_M"] = sum(p.numel() for p in ae.vae.parameters()) / 1e6
    result["ae_train_s"] = time.perf_counter() - start
    save_autoencoder(ae, out / "autoencoder")
    x = to_float(EmbeddedDataset("ref", length=1024).make_batch(range(1024))[0])
    with torch.no_grad():
        mse = torch.stack([(ae.decode(ae.encode(c)).clamp(-1, 1) - c).pow(2).mean() for c in x.split(256)]).mean()
    result["ae_ref_psnr_db"] = psnr(mse.item())

    factorization = make_factorization("residual", make_scales([6, 8], full=32 // ae.factor))
    data = EmbeddedDataset("train", length=args.cache_images)
    start = time.perf_counter()
    cache = build_cache(out / "cache", data, ae, factorization, batch_size=256, shard_size=1024, log=print)
    seconds = time.perf_counter() - start
    result["cache_images_per_s"] = args.cache_images / seconds
    result["cache_items"] = len(cache)

    g = np.random.default_rng(0)
    reads = []
    for _ in range(200):
        indices = g.integers(0, len(cache), 64)
        start = time.perf_counter()
        cache.batch(indices)
        reads.append(time.perf_counter() - start)
    result["cache_read_batch64_ms"] = 1e3 * statistics.median(reads)
    result["out"] = str(out)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
