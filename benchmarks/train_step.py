"""CPU seconds per training step of the tiny preset's models and the share of it spent waiting for data.

    .venv/bin/python benchmarks/train_step.py [--steps 30] [--threads 1] [--images 1024]

The models, scales and batch size come from ablations/presets/tiny.yaml: MSF stage 0 (6x6 latents, no prior),
stage 1 (8x8 latents with its prior) and the single-scale flow DiT (8x8). Each runs ``steps`` steps of the
training loop (ablations/engine/train.py), float32 on CPU, on a real memory-mapped TargetCache of ``images``
embedded 32-px images encoded by the preset's committed autoencoder.
Step times exclude the first step (start-up); the data share is the time blocked on the loader thread.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
import yaml

from ablations.engine import autoencoders
from ablations.engine.cache import build_cache
from ablations.engine.data import EmbeddedDataset
from ablations.engine.io import read_jsonl
from ablations.engine.specs import AutoencoderConfig, FactorizationSpec, Runtime, StageConfig, TrainConfig, TrainJob
from ablations.engine.train import train
from msf.factorize import make_factorization, make_scales

PRESET = Path(__file__).parents[1] / "ablations" / "presets" / "tiny.yaml"


def main() -> None:
    """Build a small cache, train each tiny-preset model for a few steps, print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=1024)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    preset = yaml.safe_load(PRESET.read_text())
    data = preset["data"]
    ae = autoencoders.load(AutoencoderConfig(**preset["autoencoder"]))
    full = data["image_size"] // ae.factor
    runs = [  # (label, scales, stage, model shape)
        *((f"MSF stage {i}", preset["msf"]["scales"], i, m) for i, m in enumerate(preset["msf"]["stages"])),
        ("single-scale flow DiT", [full], 0, preset["baseline"]["dit_flow"]),
    ]
    dataset = EmbeddedDataset("train", data["image_size"], data["num_classes"], seed=0, length=args.images)
    print(f"| model | latent | params | s / step (median) | s / step (mean) | data wait | img/s |\n|{'---|' * 7}")
    with tempfile.TemporaryDirectory() as tmp:
        for label, sizes, stage, shape in runs:
            factorization = make_factorization("residual", make_scales(sizes, full))
            cache = build_cache(Path(tmp) / f"cache{len(sizes)}", dataset, ae, factorization, 256, log=lambda _: None)
            batch = preset["train"]["batch_size"]
            job = TrainJob(
                "msf" if len(sizes) > 1 else "dit_flow", stage, args.steps, 0, StageConfig(**shape), "concat",
                "adaln_zero", FactorizationSpec("residual", sizes, "bilinear"), data["num_classes"],
                TrainConfig(batch_size=batch, ckpt_every=args.steps, log_every=args.steps),
                Runtime("cpu", args.threads),
            )
            run_dir = Path(tmp) / label.replace(" ", "_")
            metrics = train(job, cache, factorization, run_dir, log=lambda _: None)
            seconds = [batch / s["img_per_s"] for s in read_jsonl(run_dir / "stats.jsonl")[1:]]
            median = statistics.median(seconds)
            print(
                f"| {label} | {sizes[stage]}x{sizes[stage]}x{ae.channels} | {metrics['params_m']:.2f}M | {median:.4f} "
                f"| {metrics['sec_per_step']:.4f} | {100 * metrics['data_wait_frac']:.1f}% "
                f"| {batch / median:.0f} |"
            )


if __name__ == "__main__":
    main()
