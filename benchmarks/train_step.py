"""CPU seconds per training step of the tiny preset's models and the share of it spent waiting for data (harness).

    .venv/bin/python benchmarks/train_step.py [--steps 30] [--threads 1] [--images 1024]

The models, scales and batch size come from ablations/presets/tiny.yaml: MSF stage 0 (6x6 latents, no prior),
stage 1 (8x8 latents with its prior) and the single-scale flow DiT (8x8). Each runs ``steps`` steps of ablations/engine/train.py's
loop, float32 on CPU, on a real memory-mapped TargetCache of ``images`` embedded 32-px images encoded by a
random-weight autoencoder of the preset's shape (the bytes read per step are what matter here, not their values).
Step times exclude the first step (start-up); the data share is the time blocked on the loader thread.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
import yaml

from ablations.engine.autoencoders import SmallAEConfig
from msf.autoencoder import KLAutoencoder
from ablations.engine.cache import build_cache
from ablations.engine.data import EmbeddedDataset
from msf.factorize import make_factorization, make_scales
from ablations.engine.train import TrainConfig, read_jsonl, train

PRESET = Path(__file__).parents[1] / "ablations" / "presets" / "tiny.yaml"


def main() -> None:
    """Build a small cache, train each tiny-preset model for a few steps, print a markdown table (harness)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=1024)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    preset = yaml.safe_load(PRESET.read_text())
    data, ae_cfg = preset["data"], preset["autoencoder"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # SmallAEConfig.build initialises from the global RNG
        vae = SmallAEConfig(tuple(ae_cfg["block_out_channels"]), latent_channels=ae_cfg["latent_channels"]).build(32)
    ae = KLAutoencoder(vae, name="random-small-ae")
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
            cfg = TrainConfig(
                stage=stage,
                model="DiT-S/2",
                model_overrides=shape,
                num_classes=data["num_classes"],
                batch_size=preset["train"]["batch_size"],
                steps=args.steps,
                device="cpu",
                ckpt_every=args.steps,
                log_every=args.steps,
            )
            run_dir = Path(tmp) / label.replace(" ", "_")
            metrics = train(cfg, cache, factorization, run_dir, log=lambda _: None)
            seconds = [cfg.batch_size / s["img_per_s"] for s in read_jsonl(run_dir / "stats.jsonl")[1:]]
            median = statistics.median(seconds)
            print(
                f"| {label} | {sizes[stage]}x{sizes[stage]}x{ae.channels} | {metrics['params_m']:.2f}M | {median:.4f} "
                f"| {metrics['sec_per_step']:.4f} | {100 * metrics['data_wait_frac']:.1f}% "
                f"| {cfg.batch_size / median:.0f} |"
            )


if __name__ == "__main__":
    main()
