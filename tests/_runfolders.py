"""Synthetic run folders that follow the run-folder schema exactly, for the report tests (harness).

The numbers are designed so that each claim gets a known verdict (seed offsets -0.1, 0, +0.1 give a seed std of
exactly 0.1 FID, so 2 s = 0.2):
- best scale-1 CFG is 1.4 (Table 2): FID 20 / 12 / 8 / 10 at CFG 1.0 / 1.2 / 1.4 / 1.5 -> supported;
- scale 2 needs no CFG (Table 3): FID 8 / 9 / 10 at scale-2 CFG 1.0 / 1.2 / 1.4 -> contradicted;
- best scale-1 steps 100-125 (Table 4): only 5 / 10 / 20 steps measured -> not resolvable;
- scale 2 robust to few steps (Table 5): 2 steps has a single seed -> not resolvable;
- residual beats resizing: residual 8, latent_resize 12, image_resize 9, residual_latent_base 8.5 -> supported;
- scale-2 loss much lower: final_loss_ema100 0.8 vs 0.2 -> supported;
- 2x faster than DiT-XL/2: DiT-XL/2 FID 8.1 at 40 s/64 img vs MSF's best FID 7.9 at 6.5 s -> supported.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

PRESET = "smoke"
SEEDS = (0, 1, 2)
OFFSETS = (-0.1, 0.0, 0.1)  # per-seed FID offsets: sample std 0.1
MAIN_STEPS = (10, 5)
MAIN_CFG = (1.4, 1.0)
CFG_SCALE1_FID = {1.0: 20.0, 1.2: 12.0, 1.4: 8.0, 1.5: 10.0}  # Table 2 sweep (scale-2 CFG 1.0)
CFG_SCALE2_FID = {1.0: 8.0, 1.2: 9.0, 1.4: 10.0}  # Table 3 sweep (scale-1 CFG 1.4)
STEPS_SCALE1_FID = {5: 9.5, 10: 8.0, 20: 7.9}  # Table 4 sweep (scale-2 steps 5)
STEPS_SCALE2_FID = {2: 8.3, 5: 8.0, 10: 8.05}  # Table 5 sweep (scale-1 steps 10)
SINGLE_SEED_STEPS_SCALE2 = 2
FACTORIZATION_FID = {"residual": 8.0, "residual_latent_base": 8.5, "latent_resize": 12.0, "image_resize": 9.0}
STAGE_LOSS = {0: 0.8, 1: 0.2}
DIT_XL2 = {"fid": 8.1, "time": 40.0}
GRID_SHAPE = (10, 4, 16, 16, 3)  # [num_classes, k, H, W, 3]


def write_run(root: Path, kind: str, name: str, metrics: dict[str, Any] | None, **files: Any) -> Path:
    """One run folder: config.json, log.txt, optional stats.jsonl / .npy files, and metrics.json written last."""
    key = hashlib.sha1(f"{kind}/{name}".encode()).hexdigest()[:8]
    path = root / PRESET / f"{name}-{key}"
    path.mkdir(parents=True)
    config = {"kind": kind, "name": name, "key": key, "config": {"name": name}, "code_version": "unknown"}
    (path / "config.json").write_text(json.dumps(config))
    (path / "log.txt").write_text(f"{name}\n")
    for filename, content in files.items():
        if filename == "stats":
            (path / "stats.jsonl").write_text("".join(json.dumps(rec) + "\n" for rec in content))
        else:
            np.save(path / f"{filename}.npy", content)
    if metrics is not None:
        (path / "metrics.json").write_text(json.dumps(metrics))
    return path


def eval_metrics(
    model: str,
    steps: tuple[int, ...],
    cfg: tuple[float, ...],
    fid: float,
    seed: int,
    factorization: str = "residual",
    time: float | None = None,
) -> dict[str, Any]:
    """An eval metrics.json with every schema key; sampling time grows with the number of steps."""
    return {
        "kind": "eval",
        "model": model,
        "preset": PRESET,
        "dataset": "embedded",
        "world": "embedded",
        "feature_extractor": "embedded-net",
        "n_samples": 64,
        "n_ref": 256,
        "seed": seed,
        "factorization": factorization,
        "scales": [4, 8] if len(steps) == 2 else [8],
        "steps": list(steps),
        "cfg": list(cfg),
        "cfg_convention": "dit: v_u + w (v_c - v_u), w=1 no guidance",
        "solver": "euler",
        "fid": fid,
        "is_mean": 3.0 + seed / 10,
        "is_std": 0.1,
        "precision": 0.5,
        "recall": 0.4 + seed / 100,
        "params_m": 1.234 if model == "msf" else 2.5,
        "gflops_per_image": 0.05 * sum(steps),
        "sample_time_per_64_s": time if time is not None else 0.3 * steps[0] + 0.1 * steps[-1],
        "device": "cpu",
        "dtype": "float32",
    }


def msf_points() -> dict[tuple[tuple[int, ...], tuple[float, ...], str], float]:
    """Every distinct MSF eval setting (steps, cfg, factorization) -> mean FID; sweeps share the main point."""
    points = {(MAIN_STEPS, (c, 1.0), "residual"): f for c, f in CFG_SCALE1_FID.items()}
    points |= {(MAIN_STEPS, (1.4, c), "residual"): f for c, f in CFG_SCALE2_FID.items()}
    points |= {((s, MAIN_STEPS[1]), MAIN_CFG, "residual"): f for s, f in STEPS_SCALE1_FID.items()}
    points |= {((MAIN_STEPS[0], s), MAIN_CFG, "residual"): f for s, f in STEPS_SCALE2_FID.items()}
    points |= {(MAIN_STEPS, MAIN_CFG, name): f for name, f in FACTORIZATION_FID.items()}
    return points


def seeds_of(steps: tuple[int, ...]) -> tuple[int, ...]:
    """All seeds, except a single seed for Table 5's 2-step point."""
    return SEEDS[:1] if steps == (MAIN_STEPS[0], SINGLE_SEED_STEPS_SCALE2) else SEEDS


def make_runs(root: Path) -> Path:
    """Write the whole synthetic smoke sweep under root/smoke and return that folder."""
    rng = np.random.default_rng(0)
    for (steps, cfg, fact), fid in msf_points().items():
        for seed in seeds_of(steps):
            name = f"eval-msf-{fact}-s{'_'.join(map(str, steps))}-c{'_'.join(map(str, cfg))}-seed{seed}"
            grid = (
                {"grid": rng.integers(0, 256, GRID_SHAPE, dtype=np.uint8)}
                if (steps, cfg, seed) == (MAIN_STEPS, MAIN_CFG, 0) and fact == "residual"
                else {}
            )
            write_run(root, "eval", name, eval_metrics("msf", steps, cfg, fid + OFFSETS[seed], seed, fact), **grid)
    for seed in SEEDS:
        m = eval_metrics("dit_xl2", (25,), (1.5,), DIT_XL2["fid"] + OFFSETS[seed], seed, "none", DIT_XL2["time"])
        write_run(root, "eval", f"eval-dit_xl2-seed{seed}", m)
        m = eval_metrics("dit_flow", (20,), (1.4,), 11.0, seed, "none")
        write_run(root, "eval", f"eval-dit_flow-seed{seed}", m)
    for stage, loss in STAGE_LOSS.items():
        stats = [
            {
                "step": i,
                "loss": loss * (1 + 5 / (i + 1)),
                "lr": 3e-4,
                "grad_norm": 1.0,
                "img_per_s": 100.0,
                "data_wait_s": 0.01,
            }
            for i in range(300)
        ]
        metrics = {
            "kind": "train",
            "model": "msf",
            "stage": stage,
            "num_stages": 2,
            "scale_size": 4 * (stage + 1),
            "steps": 300,
            "final_loss": loss * 1.01,
            "final_loss_ema100": loss,
            "params_m": 0.6,
            "sec_per_step": 0.05,
            "data_wait_frac": 0.02,
        }
        write_run(root, "train", f"train-msf-stage{stage}", metrics, stats=stats)
    for i, fact in enumerate(FACTORIZATION_FID):
        metrics = {
            "kind": "recon",
            "factorization": fact,
            "scales": [4, 8],
            "psnr_per_scale": [18.0 + i, 30.0],
            "psnr_full": 30.0,
        }
        decomposition = rng.integers(0, 256, (3, 2, 32, 32, 3), dtype=np.uint8)
        write_run(root, "recon", f"recon-{fact}", metrics, decomposition=decomposition)
    for model, sec in (("msf", 0.1), ("dit_xl2", 0.6)):
        metrics = {
            "kind": "speed",
            "model": model,
            "params_m": 1.5,
            "gflops_per_forward": [0.01, 0.02],
            "tflops_per_image": 0.002,
            "steps": [100, 50] if model == "msf" else [250],
            "cfg": [1.4, 1.0] if model == "msf" else [1.5],
            "sec_per_image": sec,
            "images_per_s": 1 / sec,
            "matmul_tflops": 0.05,
            "mfu": 0.002 / sec / 0.05,
            "batch": 8,
            "device": "cpu",
            "dtype": "float32",
            "method": "median call time x steps",
            "switches": {"tf32": False, "compile": False},
        }
        write_run(root, "speed", f"speed-{model}", metrics)
    write_run(root, "autoencoder", "autoencoder-pixels", {"kind": "autoencoder"})
    write_run(root, "eval", "eval-unfinished", None)
    return root / PRESET
