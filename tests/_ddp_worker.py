"""Helper of tests/test_train.py: a tiny in-memory target source and a training process to launch, kill and resume.

Run as ``python tests/_ddp_worker.py RUN_DIR STEPS [--delay S] [--dump FILE]``; under RANK/WORLD_SIZE/MASTER_* it joins
a gloo job. ``--dump`` writes this rank's final model and EMA weights (captured by wrapping the
loop's ``ema_update``),
so the test can compare the replicas of a data-parallel run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import safetensors.torch
import torch

import ablations.engine.train
from ablations.engine.specs import FactorizationSpec, Runtime, StageConfig, TrainConfig, TrainJob
from ablations.engine.train import train
from msf.factorize import make_factorization, make_scales

SIZES, C, NUM_CLASSES = (4, 8), 4, 4


class MemorySource:
    """Per-scale residual targets (Algorithm 1) of class-dependent 8x8 latents, held in memory (TargetCache's API).

    ``delay`` slows ``batch`` down (seconds per call) so a test can kill a run in the middle; ``poison_from`` makes
    every call from that call number on return NaN targets.
    """

    def __init__(self, n: int = 64, seed: int = 0, delay: float = 0.0, poison_from: int | None = None):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % NUM_CLASSES
        means = torch.randn(NUM_CLASSES, C, 1, 1, generator=g)
        f_hat = means[self.labels] + 0.3 * torch.randn(n, C, SIZES[-1], SIZES[-1], generator=g)  # [n, C, 8, 8]
        self.factorization = make_factorization("residual", make_scales(SIZES, SIZES[-1]))
        self.targets = self.factorization.targets(f_hat, lambda x: x, 1)  # identity "encoder" on latents
        self.delay, self.poison_from, self.calls = delay, poison_from, 0

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: Sequence[int]) -> tuple[list[torch.Tensor], torch.Tensor]:
        time.sleep(self.delay)
        self.calls += 1
        i = torch.as_tensor(list(indices))
        targets = [f[i] for f in self.targets]
        if self.poison_from is not None and self.calls >= self.poison_from:
            targets = [torch.full_like(f, float("nan")) for f in targets]
        return targets, self.labels[i]


def tiny_config(**changes) -> TrainJob:
    """A DiT of depth 2, width 32 on the 8x8 residual scale (stage 1, with its prior), float32 on CPU.

    ``changes`` may name any TrainJob field, any TrainConfig field, ``device``, ``model`` (a size-table name) or
    ``model_overrides`` (network sizes, prior_mode, conditioning).
    """
    job = dict(family="msf", stage=1, steps=20, seed=0, num_classes=NUM_CLASSES, prior_mode="concat",
               conditioning="adaln_zero")
    network = dict(depth=2, hidden_size=32, num_heads=2, patch_size=2)
    train = dict(batch_size=8, lr=1e-3, ema_decay=0.9, label_dropout=0.25, ckpt_every=4, keep_last=2, log_every=10)
    device = "cpu"
    for k, v in changes.items():
        if k == "device":
            device = v
        elif k == "model":
            network["size"] = v
        elif k == "model_overrides":
            for name, value in v.items():
                (job if name in ("prior_mode", "conditioning") else network)[name] = value
        elif k in job:
            job[k] = v
        else:
            train[k] = v
    factorization = FactorizationSpec("residual", list(SIZES), "bilinear")
    return TrainJob(**job, network=StageConfig(**network), factorization=factorization,  # type: ignore[arg-type]
                    train=TrainConfig(**train), runtime=Runtime(device=device))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("steps", type=int)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--dump", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)  # two processes share two cores
    captured = {}
    ema_update = ablations.engine.train.ema_update

    def capture(ema, model, decay):
        captured.update(ema=ema, model=model)
        ema_update(ema, model, decay)

    ablations.engine.train.ema_update = capture
    source = MemorySource(delay=args.delay)
    train(tiny_config(steps=args.steps), source, source.factorization, args.run_dir, log=lambda _: None)
    if args.dump:
        tensors = {f"{name}/{k}": v.contiguous() for name, m in captured.items() for k, v in m.state_dict().items()}
        safetensors.torch.save_file(tensors, str(args.dump))


if __name__ == "__main__":
    main()
