"""Synthetic run folders that follow the run-folder schema exactly, for the report tests.

The preset is imagenet256 (the paper's configuration: its main sweep has the DiT-XL/2 point), with embedded-world
metrics. Every MSF setting is evaluated at training seeds 0, 1, 2 x sampling seeds 0, 1, and its FID is
``design + TRAIN_OFFSET[t] + SAMPLE_OFFSET[s] + jitter``: the training-seed offsets (+-1 FID) are shared by every
setting, so only a comparison paired by seeds resolves differences smaller than that. Each claim gets a known verdict:
- best scale-1 CFG is 1.4 (Table 2): FID 20 / 12 / 8 / 10 at CFG 1.0 / 1.2 / 1.4 / 1.5 -> supported;
- scale 2 needs no CFG (Table 3): FID 8 / 9 / 10 at scale-2 CFG 1.0 / 1.2 / 1.4 -> contradicted;
- best scale-1 steps 100-125 (Table 4): FID falls with the steps in every seed, 200 steps beats 100 and 125 by 0.3
  and 0.2 -> contradicted (an unpaired rule would drown this in the +-1 seed offsets);
- scale 2 robust to few steps (Table 5): 10 and 20 steps with FID noise of std 2 per run, 30 steps one run only ->
  not resolvable (huge noise must never support a flat claim);
- residual beats resizing (Fig. 2): image_resize beats residual by 0.45-0.51 in every run while latent_resize is
  worse but very noisy -> contradicted (the noisy arm must not swamp the consistent one);
- scale-2 loss much lower (Fig. 4): the paper's arm has q = 0.24-0.25 per training seed -> supported, while a
  latent_resize arm (q = 1.2) and a stray duplicate of a stage-0 run (loss 5) must be left out;
- 2x faster than DiT-XL/2: DiT-XL/2 FID 11.5 at 40 s/64 img vs MSF's 8.0 at 6.5 s -> supported (MSF's +-1 seed
  offsets are not shared by the pretrained DiT-XL/2, so only a clear gap passes the equal-FID margin).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

PRESET = "imagenet256"
SCALES = [24, 32]  # the preset's MSF scales
TRAIN_SEEDS = (0, 1, 2)
SAMPLE_SEEDS = (0, 1)
TRAIN_OFFSET = {0: -1.0, 1: 0.0, 2: 1.0}
SAMPLE_OFFSET = {0: -0.05, 1: 0.05}
MAIN_STEPS = (100, 50)
MAIN_CFG = (1.4, 1.0)
MAIN_FID = 8.0
CFG_SCALE1_FID = {1.0: 20.0, 1.2: 12.0, 1.4: MAIN_FID, 1.5: 10.0}  # Table 2 (scale-2 CFG 1.0)
CFG_SCALE2_FID = {1.0: MAIN_FID, 1.2: 9.0, 1.4: 10.0}  # Table 3 (scale-1 CFG 1.4)
STEPS_SCALE1_FID = {25: 9.5, 50: 8.6, 100: MAIN_FID, 125: 7.9, 200: 7.7}  # Table 4 (scale-2 steps 50)
STEPS_SCALE2_FID = {10: 8.0, 20: 8.0, 30: 8.02, 50: MAIN_FID}  # Table 5 (scale-1 steps 100)
NOISY_STEPS_SCALE2 = (10, 20)  # FID noise std 2 per run
SINGLE_RUN_STEPS_SCALE2 = 30  # one run: training seed 0, sampling seed 0
FACTORIZATION_FID = {"residual": MAIN_FID, "residual_latent_base": 8.5, "latent_resize": 12.0}
IMAGE_RESIZE_GAIN = (0.45, 0.51)  # image_resize is better than residual by this much in every run
RESOLUTIONS_FID = {(16, 32): 9.0, (16, 24, 32): 8.4}  # Table R1 ([20, 32] not measured)
TDLN_FID = 8.7
BASELINES = {"dit_flow": 11.0, "dimr": 12.0}  # cfg [1.5], steps [250], trained by the harness
DIT_XL2 = {"fid": 11.5, "time": 40.0}
MSF_TIME = 6.5  # seconds per 64 images of the main point
ANCHOR_FID = {"real": 0.5, "untrained": 300.0}
STAGE_LOSS = {0: 0.8, 1: 0.2}
STRAY_LOSS = 5.0  # a second folder for stage 0, training seed 0 of the paper's arm: no eval uses it
DECOMPOSITION_COLUMNS = ["base D(Up(f_0))", "residual 1 (latent ch. 0-2)", "sum D(f_hat)"]
GRID_SHAPE = (4, 8, 8, 8, 3)  # [classes, 8, H, W, 3], one solid colour per setting (grid_color)


def write_run(root: Path, kind: str, name: str, metrics: dict[str, Any] | None, spec: dict[str, Any] | None = None,
              deps: dict[str, str] | None = None, **files: Any) -> Path:
    """One run folder: config.json, log.txt, optional stats.jsonl / .npy files, and metrics.json written last."""
    key = hashlib.sha1(f"{kind}/{name}".encode()).hexdigest()[:8]
    path = root / PRESET / f"{name}-{key}"
    path.mkdir(parents=True)
    config = {"kind": kind, "name": path.name, "key": key, "results_version": 1, "spec": spec or {},
              "deps": deps or {}, "code_version": "unknown"}
    (path / "config.json").write_text(json.dumps(config))
    (path / "log.txt").write_text(f"{name}\n")
    for filename, content in files.items():
        if filename == "stats":
            (path / "stats.jsonl").write_text("".join(json.dumps(rec) + "\n" for rec in content))
        else:
            np.save(path / f"{filename}.npy", content)
    if metrics is not None:
        (path / "metrics.json").write_text(json.dumps({"kind": kind, **metrics}))
    return path


def eval_metrics(model: str, steps: tuple[int, ...], cfg: tuple[float, ...], fid: float, train_seed: int | None,
                 sample_seed: int, factorization: str = "residual", scales: list[int] | None = None,
                 conditioning: str | None = "adaln_zero", time: float | None = None,
                 anchor: str | None = None) -> dict[str, Any]:
    """An eval metrics.json with every schema key."""
    return {
        "model": model, "anchor": anchor, "preset": PRESET, "dataset": "embedded", "world": "embedded",
        "feature_extractor": "embedded-net", "n_samples": 64, "n_ref": 256, "sample_seed": sample_seed,
        "train_seed": train_seed,
        "train_steps": None if model in ("dit_xl2", "real") else [300] * len(scales or SCALES),
        "factorization": factorization, "scales": scales if scales is not None else list(SCALES),
        "steps": list(steps), "cfg": list(cfg), "cfg_convention": "dit: v_u + w (v_c - v_u), w=1 no guidance",
        "solver": "euler", "fid": fid, "is_mean": 3.0 + sample_seed / 10, "is_std": 0.1, "precision": 0.5,
        "recall": 0.4 + sample_seed / 100, "params_m": 1.234 if model == "msf" else 2.5,
        "gflops_per_image": 0.05 * sum(steps), "sample_time_per_64_s": time, "device": "cpu", "dtype": "float32",
        "switches": {"attention": "sdpa", "compile": "none"}, "conditioning": conditioning,
    }


def real_metrics(fid: float, sample_seed: int) -> dict[str, Any]:
    """The floor: held-out real images scored as if generated (model and anchor 'real')."""
    m = eval_metrics("real", (), (), fid, None, sample_seed, anchor="real")
    return m | {"factorization": None, "scales": None, "steps": None, "cfg": None, "solver": None,
                "conditioning": None, "params_m": None, "gflops_per_image": None}


def eval_spec(model: str, steps: tuple[int, ...], cfg: tuple[float, ...], train_seed: int | None,
              sample_seed: int) -> dict[str, Any]:
    """The parts of an eval job spec the report reads (the dataset's image size and classes)."""
    return {"family": model, "sample": {"steps": list(steps), "cfg": list(cfg), "solver": "euler"},
            "sample_seed": sample_seed, "train_seed": train_seed, "preset": PRESET,
            "data": {"name": "embedded", "image_size": 32, "num_classes": 4}}


def train_metrics(model: str, stage: int, seed: int, loss: float, factorization: str, scales: list[int]) -> dict:
    """A train metrics.json with every schema key."""
    return {"model": model, "stage": stage, "train_seed": seed, "factorization": factorization,
            "num_stages": len(scales), "scale_size": scales[stage], "steps": 300, "final_loss": loss * 1.01,
            "final_loss_ema100": loss, "params_m": 0.6, "sec_per_step": 0.05, "data_wait_frac": 0.02,
            "device": "cpu", "dtype": "float32", "world_size": 1, "threads": 1}


def stats(loss: float) -> list[dict[str, Any]]:
    """300 per-step records decaying to ``loss``."""
    return [{"step": i, "loss": loss * (1 + 5 / i), "lr": 3e-4, "grad_norm": 1.0, "img_per_s": 100.0,
             "data_wait_s": 0.01} for i in range(1, 301)]


def write_trains(root: Path, model: str, factorization: str, scales: list[int], conditioning: str,
                 losses: dict[int, float]) -> dict[int, dict[str, str]]:
    """The train runs of one arm at every training seed; returns their folder names by seed and role."""
    out: dict[int, dict[str, str]] = {}
    for seed in TRAIN_SEEDS:
        for stage, loss in losses.items():
            spec = {"family": model, "stage": stage, "seed": seed, "conditioning": conditioning,
                    "factorization": {"name": factorization, "scales": scales, "mode": "bilinear"},
                    "train": {"batch_size": 64}}
            tag = f"{model}-{factorization}-{'x'.join(map(str, scales))}-{conditioning}-s{stage}-t{seed}"
            m = train_metrics(model, stage, seed, loss * (1 + (0.05 - 0.01 * stage) * seed), factorization, scales)
            path = write_run(root, "train", f"train-{tag}", m, spec, {"cache": "cache-x"}, stats=stats(loss))
            out.setdefault(seed, {})[f"train{stage}"] = path.name
    return out


def grid_color(point: tuple[Any, ...]) -> tuple[int, int, int]:
    """The solid colour of a setting's sample grid, so that a test can find which settings a figure shows."""
    i = int(hashlib.sha1(repr(point).encode()).hexdigest()[:8], 16)
    return (i % 200 + 30, (i // 200) % 200 + 30, (i // 40000) % 200 + 30)


def jitter(rng: np.random.Generator) -> float:
    """Per-run noise of std 0.02 FID, so that no paired difference is exactly constant."""
    return float(rng.normal(0.0, 0.02))


MAIN = ("msf", MAIN_STEPS, MAIN_CFG, "residual", tuple(SCALES), "adaln_zero")


def eval_points() -> dict[tuple[Any, ...], float]:
    """Every trained-model eval setting (model, steps, cfg, factorization, scales, conditioning) -> its design FID."""
    points: dict[tuple[Any, ...], float] = {}
    for c, f in CFG_SCALE1_FID.items():
        points[("msf", MAIN_STEPS, (c, 1.0), "residual", tuple(SCALES), "adaln_zero")] = f
    for c, f in CFG_SCALE2_FID.items():
        points[("msf", MAIN_STEPS, (1.4, c), "residual", tuple(SCALES), "adaln_zero")] = f
    for s, f in STEPS_SCALE1_FID.items():
        points[("msf", (s, MAIN_STEPS[1]), MAIN_CFG, "residual", tuple(SCALES), "adaln_zero")] = f
    for s, f in STEPS_SCALE2_FID.items():
        points[("msf", (MAIN_STEPS[0], s), MAIN_CFG, "residual", tuple(SCALES), "adaln_zero")] = f
    for name, f in FACTORIZATION_FID.items():
        points[("msf", MAIN_STEPS, MAIN_CFG, name, tuple(SCALES), "adaln_zero")] = f
    for scales, f in RESOLUTIONS_FID.items():
        n = len(scales)
        points[("msf", (100, *[50] * (n - 1)), (1.4, *[1.0] * (n - 1)), "residual", scales, "adaln_zero")] = f
    points[("msf", MAIN_STEPS, MAIN_CFG, "residual", tuple(SCALES), "tdln")] = TDLN_FID
    for model, f in BASELINES.items():
        points[(model, (250,), (1.5,), "residual", (32,), "adaln_zero")] = f
    # image_resize: the residual run's FID minus 0.45-0.51 in every run (make_runs)
    points[("msf", MAIN_STEPS, MAIN_CFG, "image_resize", tuple(SCALES), "adaln_zero")] = MAIN_FID
    return points


def make_runs(root: Path) -> Path:
    """Write the whole synthetic imagenet256 sweep under root/imagenet256 and return that folder."""
    rng = np.random.default_rng(0)
    paper_arm = write_trains(root, "msf", "residual", SCALES, "adaln_zero", STAGE_LOSS)
    write_trains(root, "msf", "latent_resize", SCALES, "adaln_zero", {0: 0.5, 1: 0.6})
    stray = train_metrics("msf", 0, 0, STRAY_LOSS, "residual", SCALES)
    write_run(root, "train", "train-msf-residual-24x32-adaln_zero-s0-t0-stray", stray,
              {"family": "msf", "stage": 0, "seed": 0, "conditioning": "adaln_zero",
               "factorization": {"name": "residual", "scales": SCALES, "mode": "bilinear"}}, stats=stats(STRAY_LOSS))

    points, main = eval_points(), MAIN
    main_fid = {(t, s): MAIN_FID + TRAIN_OFFSET[t] + SAMPLE_OFFSET[s] + jitter(rng)
                for t in TRAIN_SEEDS for s in SAMPLE_SEEDS}
    for point, fid in points.items():
        model, steps, cfg, fac, scales, cond = point
        noisy = model == "msf" and steps[0] == MAIN_STEPS[0] and len(steps) == 2 and steps[1] in NOISY_STEPS_SCALE2
        for i, (t, s) in enumerate((t, s) for t in TRAIN_SEEDS for s in SAMPLE_SEEDS):
            if steps == (MAIN_STEPS[0], SINGLE_RUN_STEPS_SCALE2) and (t, s) != (0, 0):
                continue
            if point == main:
                value = main_fid[t, s]
            elif fac == "image_resize":  # better than residual by 0.45-0.51 in every run
                gain = IMAGE_RESIZE_GAIN[0] + (IMAGE_RESIZE_GAIN[1] - IMAGE_RESIZE_GAIN[0]) * i / 5
                value = main_fid[t, s] - gain
            else:
                value = fid + TRAIN_OFFSET[t] + SAMPLE_OFFSET[s] + jitter(rng)
            if noisy or fac == "latent_resize":
                value += float(rng.normal(0.0, 2.0 if noisy else 3.0))
            first = (t, s) == (0, 0)
            files: dict[str, Any] = {"grid": np.full(GRID_SHAPE, grid_color(point), np.uint8)} if first else {}
            m = eval_metrics(model, steps, cfg, value, t, s, fac, list(scales), cond,
                             time=(MSF_TIME if point == main else 5.0) if first else None)
            if point == main and first:
                files["decomposition"] = rng.integers(0, 256, (4, 3, 8, 8, 3), dtype=np.uint8)
                m["decomposition_columns"] = DECOMPOSITION_COLUMNS
            deps = paper_arm[t] if model == "msf" and (fac, scales, cond) == main[3:] else {"train0": "elsewhere"}
            name = (f"eval-{model}-{fac}-{cond}-sc{'x'.join(map(str, scales))}-s{'_'.join(map(str, steps))}"
                    f"-c{'_'.join(map(str, cfg))}-t{t}-seed{s}")
            write_run(root, "eval", name, m, eval_spec(model, steps, cfg, t, s), deps, **files)
    for s in SAMPLE_SEEDS:
        m = eval_metrics("dit_xl2", (250,), (1.5,), DIT_XL2["fid"] + SAMPLE_OFFSET[s], None, s, "none (DDPM)", [32],
                         None, DIT_XL2["time"] if s == 0 else None)
        write_run(root, "eval", f"eval-dit_xl2-seed{s}", m, eval_spec("dit_xl2", (250,), (1.5,), None, s))
        write_run(root, "eval", f"eval-real-seed{s}", real_metrics(ANCHOR_FID["real"] + s / 100, s), {})
    for t in TRAIN_SEEDS:  # the ceiling: stages trained 0 steps, one sampling seed per training seed (as the engine)
        m = eval_metrics("msf", MAIN_STEPS, MAIN_CFG, ANCHOR_FID["untrained"] + t, t, 0, anchor="untrained")
        write_run(root, "eval", f"eval-msf-untrained-t{t}-seed0", m | {"train_steps": [0, 0]},
                  eval_spec("msf", MAIN_STEPS, MAIN_CFG, t, 0))
    # a duplicate of a finished eval (same settings and seeds, another folder): counted once
    dup = json.loads(next((root / PRESET).glob("eval-dit_xl2-seed0-*/metrics.json")).read_text())
    write_run(root, "eval", "eval-dit_xl2-seed0-zdup", dup | {"fid": 99.0}, {})

    for i, fac in enumerate([*FACTORIZATION_FID, "image_resize"]):
        metrics = {"factorization": fac, "scales": SCALES, "psnr_per_scale": [18.0 + i, 30.0], "psnr_full": 30.0}
        write_run(root, "recon", f"recon-{fac}", metrics,
                  decomposition=rng.integers(0, 256, (3, 2, 32, 32, 3), dtype=np.uint8))
    for model, sec, tflops in (("msf", 0.1, 22.1), ("dit_xl2", 0.6, 118.6)):
        metrics = {
            "model": model, "params_m": 1.5, "gflops_per_forward": [0.01, 0.02], "tflops_per_image": tflops,
            "steps": [100, 50] if model == "msf" else [250], "cfg": [1.4, 1.0] if model == "msf" else [1.5],
            "sec_per_image": sec, "images_per_s": 1 / sec, "matmul_tflops": 0.05, "mfu": tflops / sec / 0.05,
            "batch": 8, "device": "cpu", "dtype": "float32", "method": "median call time x steps",
            "switches": {"attention": "sdpa", "compile": "none"},
        }
        write_run(root, "speed", f"speed-{model}", metrics)
    write_run(root, "autoencoder", "autoencoder-pixels", {"psnr_ref_db": 30.0})
    write_run(root, "eval", "eval-unfinished", None)
    return root / PRESET
