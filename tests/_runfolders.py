"""Synthetic run folders and sweep manifests that follow the run-folder schema exactly, for the report tests.

The preset is imagenet256 (the paper's configuration: its main sweep has the DiT-XL/2 point), with embedded-world
metrics, planned with ``seeds.train=[0,1,2] seeds.sample=[0,1]``. Each eval point is a ``sample-LABEL-KEY`` run (the
images: grid.npy, samples.npz, its settings and timing) and a ``score-LABEL-KEY`` run scoring it (the sample run's
metrics plus FID, IS, precision/recall and ``samples``), named as the planner names them. Every sweep file has a
manifest under ``_sweeps/`` listing its points (what each point sets, the settings its runs record, the runs of
every seed: tests/test_reports.py checks them against the planner's own functions), its anchors and its other runs.

Every MSF setting is evaluated at training seeds 0, 1, 2 x sampling seeds 0, 1, and its FID is
``design + TRAIN_OFFSET[t] + SAMPLE_OFFSET[s] + jitter``: the training-seed offsets (+-1 FID) are shared by every
setting, so only a comparison paired by seeds resolves differences smaller than that. Each claim gets a known verdict:
- best scale-1 CFG is 1.4 (Table 2): FID 20 / 12 / 8 / 10 at CFG 1.0 / 1.2 / 1.4 / 1.5 -> supported (CFG 1.3 was
  run by older code only: a point no manifest lists, FID 1, which must not count);
- scale 2 needs no CFG (Table 3): FID 8 / 9 / 10 at scale-2 CFG 1.0 / 1.2 / 1.4 -> contradicted;
- best scale-1 steps 100-125 (Table 4): FID falls with the steps in every seed, 200 steps beats 100 and 125 by 0.3
  and 0.2 -> contradicted (an unpaired rule would drown this in the +-1 seed offsets);
- scale 2 robust to few steps (Table 5): 10 and 20 steps with FID noise of std 2 per run, 30 steps one run only, 40
  steps one unfinished score run -> not resolvable (huge noise must never support a flat claim);
- residual beats resizing (Fig. 2): image_resize beats residual by 0.45-0.51 in every run while latent_resize is
  worse but very noisy -> contradicted (the noisy arm must not swamp the consistent one);
- scale-2 loss much lower (Fig. 4): the paper's arm has q = 0.24-0.25 per training seed -> supported, while a
  latent_resize arm (q = 1.2), the ceiling's untrained stages and a stray duplicate of a stage-0 run (loss 5, a folder
  name sorting before the real one) must be left out;
- 2x faster than DiT-XL/2: DiT-XL/2 FID 11.5 at 40 s/64 img vs MSF's 8.0 at 6.5 s -> supported (MSF's +-1 seed
  offsets are not shared by the pretrained DiT-XL/2, so only a clear gap passes the equal-FID margin).
Anchors: real images FID 0.5, their autoencoder reconstructions 2.0, untrained stages 300 (+ small per-seed offsets):
the autoencoder's share of MSF(cfg=1.4)'s FID above the real floor is 1.5 / 7.5 = 20%; its margin (1.5 FID) is larger
than the deciding differences of Table 4 (0.2) and Fig. 2 (0.48), smaller than those of Tables 2, 3 and the speed claim.
A second manifest of the main sweep (sampling seed 0 only, its DiT-XL/2 checkpoint re-fetched: another key) lists a
DiT-XL/2 run with the seeds and settings of another: counted once, listed as a duplicate.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ablations.engine.families import FAMILIES
from ablations.engine.runfolder import key_of

PRESET = "imagenet256"
SWEEPS_DIR = Path(__file__).resolve().parents[1] / "ablations" / "sweeps"
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
UNFINISHED_STEPS_SCALE2 = 40  # one score run without metrics.json (its sample run finished)
ORPHAN_CFG = (1.3, 1.0)  # Table 2's CFG 1.3: runs of older code (another key), listed by no manifest
ORPHAN_FID = 1.0
FACTORIZATION_FID = {"residual": MAIN_FID, "residual_latent_base": 8.5, "latent_resize": 12.0}
IMAGE_RESIZE_GAIN = (0.45, 0.51)  # image_resize is better than residual by this much in every run
RESOLUTIONS_FID = {(16, 32): 9.0, (16, 24, 32): 8.4}  # Table R1 ([20, 32] not measured)
TDLN_FID = 8.7
BASELINES = {"dit_flow": 11.0, "dimr": 12.0}  # cfg [1.5], steps [250], trained by the harness
DIT_XL2 = {"fid": 11.5, "time": 40.0}
DUPLICATE_FID_SHIFT = 0.3  # the duplicate DiT-XL/2 run's FID: its twin's + this (no verdict depends on which counts)
MSF_TIME = 6.5  # seconds per 64 images of the main point
ANCHOR_FID = {"real": 0.5, "autoencoder": 2.0, "untrained": 300.0}
ANCHOR_STEP = {"real": 0.01, "autoencoder": 0.04, "untrained": 1.0}  # FID added per sampling (floors) or training seed
ANCHOR_MODELS = {"real": "real", "autoencoder": "reconstructed"}  # the floors' sample families
STAGE_LOSS = {0: 0.8, 1: 0.2}
STRAY_LOSS = 5.0  # a second folder for stage 0, training seed 0 of the paper's arm: no eval uses it
STRAY_PREFIX = "00"  # the stray's key starts so: it sorts before every other key, so picking the arm's folders by
# name would pick the stray
DECOMPOSITION_COLUMNS = ["base D(Up(f_0))", "residual 1 (latent ch. 0-2)", "sum D(f_hat)"]
GRID_SHAPE = (4, 8, 8, 8, 3)  # [classes, 8, H, W, 3], one solid colour per setting (grid_color)
DATA = {"name": "embedded", "image_size": 32, "num_classes": 4, "ref_size": 256, "root": None, "seed": 0,
        "train_size": 1000}
SCORING = {"batch_size": 64, "bootstrap": 0, "features": "embedded-net", "inception_weights": None,
           "reference_npz": None, "world": "embedded"}
RUNTIME = {"device": "cpu", "threads": 1}

Point = tuple[Any, ...]  # (model, steps, cfg, factorization, scales, conditioning) of a trained model's eval point


def record_key(kind: str, spec: dict[str, Any], deps: dict[str, str]) -> str:
    """The key a run folder's config.json hashes to (ablations/engine/runfolder.py key_of), as the planner's."""
    return key_of({"kind": kind, "results_version": 1, "spec": spec, "deps": deps})


def write_run(root: Path, kind: str, label: str, metrics: dict[str, Any] | None, spec: dict[str, Any] | None = None,
              deps: dict[str, str] | None = None, key: str | None = None, **files: Any) -> Path:
    """One run folder ``root/PRESET/KIND-LABEL-KEY``: config.json, log.txt, optional stats.jsonl (``stats``),
    samples.npz (``samples``: (images, labels)) and .npy files, and metrics.json written last (unless None)."""
    key = key or record_key(kind, spec or {}, deps or {})
    path = root / PRESET / f"{kind}-{label}-{key}"
    path.mkdir(parents=True)
    config = {"kind": kind, "name": path.name, "key": key, "results_version": 1, "spec": spec or {},
              "deps": deps or {}, "code_version": "unknown"}
    (path / "config.json").write_text(json.dumps(config))
    (path / "log.txt").write_text(f"{label}\n")
    for filename, content in files.items():
        if filename == "stats":
            (path / "stats.jsonl").write_text("".join(json.dumps(rec) + "\n" for rec in content))
        elif filename == "samples":
            np.savez(path / "samples.npz", *content)  # ADM's layout: arr_0 images (uint8 NHWC), arr_1 labels
        else:
            np.save(path / f"{filename}.npy", content)
    if metrics is not None:
        (path / "metrics.json").write_text(json.dumps({"kind": kind, **metrics}))
    return path


# ----------------------------------------------------------------------------------------------------------------------
# Metrics and specs of the eval runs


def sample_metrics(model: str, steps: tuple[int, ...] | None, cfg: tuple[float, ...] | None, train_seed: int | None,
                   sample_seed: int, factorization: str | None = "residual", scales: list[int] | None = None,
                   conditioning: str | None = "adaln_zero", time: float | None = None, anchor: str | None = None,
                   train_steps: list[int] | None = None) -> dict[str, Any]:
    """A sample run's metrics.json with every schema key (what the sample job records)."""
    scales = scales if scales is not None else list(SCALES)
    trained = model not in ("dit_xl2", "real", "reconstructed")
    return {
        "model": model, "anchor": anchor, "preset": PRESET, "dataset": "embedded", "n_samples": 64,
        "sample_seed": sample_seed, "train_seed": train_seed,
        "train_steps": train_steps if train_steps is not None else [300] * len(scales) if trained else None,
        "autoencoder": "embedded-ae", "factorization": factorization, "scales": scales,
        "steps": None if steps is None else list(steps), "cfg": None if cfg is None else list(cfg),
        "cfg_convention": "dit: v_u + w (v_c - v_u), w=1 no guidance", "solver": None if steps is None else "euler",
        "params_m": 1.234 if model == "msf" else 2.5, "gflops_per_image": 0.05 * sum(steps or ()),
        "sample_time_per_64_s": time, "device": "cpu", "dtype": "float32", "world_size": 1,
        "switches": {"attention": "sdpa", "compile": "none"}, "conditioning": conditioning,
    }


def anchor_metrics(anchor: str, sample_seed: int) -> dict[str, Any]:
    """A floor's sample metrics: held-out real images (model 'real') or the same through the autoencoder (model
    'reconstructed'), scored as if generated."""
    m = sample_metrics(ANCHOR_MODELS[anchor], None, None, None, sample_seed, None, None, None, anchor=anchor)
    return m | {"scales": None, "params_m": None, "gflops_per_image": None}


def score_metrics(sampled: dict[str, Any], sample_name: str, fid: float | None) -> dict[str, Any]:
    """A score run's metrics.json: the sample run's metrics, the scores and the name of the sample run."""
    s = int(sampled["sample_seed"])
    return {**sampled, "world": "embedded", "feature_extractor": "embedded-net", "n_fake": sampled["n_samples"],
            "n_ref": 256, "reference": "embedded:split=ref", "fid": fid, "is_mean": 3.0 + s / 10, "is_std": 0.1,
            "precision": 0.5, "recall": 0.4 + s / 100, "samples": sample_name}


def sample_spec(model: str, steps: tuple[int, ...] | None, cfg: tuple[float, ...] | None, train_seed: int | None,
                sample_seed: int, timed: bool, inputs: dict[str, str] | None = None) -> dict[str, Any]:
    """A sample job's spec as config.json holds it (the report reads the dataset's image size and classes)."""
    return {"family": model, "sample": None if steps is None else {"steps": list(steps), "cfg": list(cfg or ()),
                                                                    "solver": "euler"},
            "sampling": {"attention": "sdpa", "batch_size": 64, "compile": "none", "dtype": "float32", "n_samples": 64},
            "sample_seed": sample_seed, "train_seed": train_seed, "time_sampling": timed, "data": DATA,
            "autoencoder": {"kind": "frozen", "frozen": "embedded-ae"}, "checkpoint": None, "network": None,
            "preset": PRESET, "inputs": inputs or {"autoencoder": "ae-fingerprint"}, "runtime": RUNTIME}


SCORE_SPEC = {"scoring": SCORING, "data": DATA, "inputs": {"features": "features-fingerprint"}, "runtime": RUNTIME}


def train_metrics(model: str, stage: int, seed: int, loss: float | None, factorization: str, scales: list[int],
                  steps: int = 300) -> dict[str, Any]:
    """A train metrics.json with every schema key (``loss`` None: stages trained 0 steps, the ceiling's)."""
    return {"model": model, "stage": stage, "train_seed": seed, "factorization": factorization,
            "num_stages": len(scales), "scale_size": scales[stage], "steps": steps,
            "final_loss": None if loss is None else loss * 1.01, "final_loss_ema100": loss, "params_m": 0.6,
            "sec_per_step": None if loss is None else 0.05, "data_wait_frac": None if loss is None else 0.02,
            "device": "cpu", "dtype": "float32", "world_size": 1, "threads": 1}


def stats(loss: float) -> list[dict[str, Any]]:
    """300 per-step records decaying to ``loss``."""
    return [{"step": i, "loss": loss * (1 + 5 / i), "lr": 3e-4, "grad_norm": 1.0, "img_per_s": 100.0,
             "data_wait_s": 0.01} for i in range(1, 301)]


def train_spec(model: str, stage: int, seed: int, factorization: str, scales: list[int], conditioning: str,
               steps: int, lr: float = 3e-4) -> dict[str, Any]:
    """A train job's spec as config.json holds it (the parts the report reads)."""
    return {"family": model, "stage": stage, "seed": seed, "steps": steps, "conditioning": conditioning,
            "factorization": {"name": factorization, "scales": scales, "mode": "bilinear"},
            "train": {"batch_size": 64, "lr": lr}, "runtime": RUNTIME}


def arm_label(model: str, factorization: str, scales: tuple[int, ...] | list[int], conditioning: str,
              untrained: bool = False) -> str:
    """The planner's label of an arm's training runs without stage and seed: 'msf-residual-24x32[-tdln][-untrained]'."""
    tag = ("-tdln" if conditioning == "tdln" else "") + ("-untrained" if untrained else "")
    return f"{model}-{factorization}-{'x'.join(map(str, scales))}{tag}"


def train_deps(model: str, factorization: str, scales: tuple[int, ...], conditioning: str, seed: int,
               untrained: bool = False) -> dict[str, str]:
    """The train run folder names of an arm at one training seed, by role (train0, train1, ...)."""
    n = len(scales) if model == "msf" else 1
    label = arm_label(model, factorization, scales, conditioning, untrained)
    return {f"train{i}": f"train-{label}-s{i}-t{seed}-" + record_key(
        "train", train_spec(model, i, seed, factorization, list(scales), conditioning, 0 if untrained else 300),
        train_cache(factorization, scales)) for i in range(n)}


def train_cache(factorization: str, scales: tuple[int, ...] | list[int]) -> dict[str, str]:
    """A train run's dependency: its target cache (never written: the report reads trainings' own folders)."""
    return {"cache": f"cache-{factorization}-{'x'.join(map(str, scales))}"}


def write_trains(root: Path, model: str, factorization: str, scales: list[int], conditioning: str,
                 losses: dict[int, float | None]) -> None:
    """The train runs of one arm at every training seed (loss None: stages trained 0 steps, the ceiling's)."""
    untrained = all(v is None for v in losses.values())
    for seed in TRAIN_SEEDS:
        names = train_deps(model, factorization, tuple(scales), conditioning, seed, untrained)
        for stage, loss in losses.items():
            steps = 0 if loss is None else 300
            spec = train_spec(model, stage, seed, factorization, scales, conditioning, steps)
            q = None if loss is None else loss * (1 + (0.05 - 0.01 * stage) * seed)
            label, key = names[f"train{stage}"].removeprefix("train-").rsplit("-", 1)
            write_run(root, "train", label, train_metrics(model, stage, seed, q, factorization, scales, steps), spec,
                      train_cache(factorization, scales), key,
                      **({} if loss is None else {"stats": stats(loss)}))


# ----------------------------------------------------------------------------------------------------------------------
# The eval points of the sweeps


def msf(steps: tuple[int, ...] = MAIN_STEPS, cfg: tuple[float, ...] = MAIN_CFG, factorization: str = "residual",
        scales: tuple[int, ...] = tuple(SCALES), conditioning: str = "adaln_zero") -> Point:
    """A trained MSF eval point."""
    return ("msf", steps, cfg, factorization, scales, conditioning)


MAIN = msf()
BASELINE_POINT = ((250,), (1.5,), "residual", (32,), "adaln_zero")  # dit_flow, dimr: single-scale, trained
DIT_XL2_POINT: Point = ("dit_xl2", (250,), (1.5,), "none (DDPM)", (32,), None)  # pretrained, no training seed
DIT_XL2_CHECKPOINT = "dit-fingerprint-a"  # its sample runs' input fingerprint (the duplicate's checkpoint: another)


def setting_of(point: Point) -> dict[str, Any]:
    """The settings a point's runs record, as the manifest's ``setting`` holds them (the planner's setting_of)."""
    model, steps, cfg, factorization, scales, conditioning = point
    out: dict[str, Any] = {"model": model, "anchor": None, "cfg": list(cfg), "steps": list(steps)}
    if model == "msf":
        out |= {"factorization": factorization, "scales": list(scales), "conditioning": conditioning}
    return out


def roles(point: Point) -> dict[str, Any]:
    """A point's row of the paper's Table 1 and its place among the speed claim's baselines, as the planner records
    them from the family registry."""
    family = FAMILIES[point[0]]
    return {"paper_row": family.paper_row(list(point[2])), "speed_rank": family.speed_rank}


def sweep_points() -> dict[str, list[tuple[dict[str, Any], Point]]]:
    """Every sweep file's points at imagenet256: (what the point sets, under the names its runs record, the point)."""
    def own(point: Point, *keys: str) -> dict[str, Any]:
        return {"model": point[0], "anchor": None} | {k: v for k, v in setting_of(point).items() if k in keys}

    main = [msf(cfg=(1.4, 1.0)), msf(cfg=(1.5, 1.0)), ("dit_flow", *BASELINE_POINT), ("dimr", *BASELINE_POINT),
            DIT_XL2_POINT]
    resolutions = [msf(scales=(16, 32)), msf(scales=(20, 32)), msf(scales=(24, 32)),
                   msf(steps=(100, 50, 50), cfg=(1.4, 1.0, 1.0), scales=(16, 24, 32))]
    return {
        "main": [(own(p, "cfg", "steps"), p) for p in main],
        "cfg_scale0": [(own(p, "cfg"), p) for p in (msf(cfg=(c, 1.0)) for c in (1.0, 1.1, 1.2, 1.3, 1.4, 1.5))],
        "cfg_scale1": [(own(p, "cfg"), p) for p in (msf(cfg=(1.4, c)) for c in (1.0, 1.1, 1.2, 1.3, 1.4))],
        "steps_scale0": [(own(p, "steps"), p) for p in (msf(steps=(s, 50)) for s in (25, 50, 100, 125, 200))],
        "steps_scale1": [(own(p, "steps"), p) for p in (msf(steps=(100, s)) for s in (10, 20, 30, 40, 50, 100))],
        "factorization": [(own(p, "factorization"), p) for p in (msf(factorization=f) for f in (
            "residual", "residual_latent_base", "latent_resize", "image_resize"))],
        "resolutions": [(own(p, "scales", "cfg", "steps"), p) for p in resolutions],
        "conditioning": [(own(p, "conditioning"), p) for p in (msf(conditioning=c) for c in ("adaln_zero", "tdln"))],
        "cfg_wide": [(own(p, "cfg"), p) for p in (msf(cfg=(c, 1.0)) for c in (1.4, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0))],
        "cfg_wide_flow": [(own(p, "cfg", "steps"), p) for p in (("dit_flow", (250,), (c,), *BASELINE_POINT[2:])
                                                               for c in (1.5, 2.0, 2.5, 3.0, 4.0))],
        "speed": [],
    }


def reference_of(sweep: str, points: list[tuple[dict[str, Any], Point]]) -> int | None:
    """The point a sweep's points table pairs the others with: the one its file names (cfg_wide_flow: Table 1's CFG
    1.5), else the one at the preset's own settings."""
    if sweep == "cfg_wide_flow":
        return 0
    return next((i for i, (_, p) in enumerate(points) if setting_of(p) == setting_of(MAIN)), None)


def eval_points() -> dict[Point, float]:
    """Every measured trained-model eval point (model, steps, cfg, factorization, scales, conditioning) -> its
    design FID."""
    points: dict[Point, float] = {}
    for c, f in CFG_SCALE1_FID.items():
        points[msf(cfg=(c, 1.0))] = f
    for c, f in CFG_SCALE2_FID.items():
        points[msf(cfg=(1.4, c))] = f
    for s, f in STEPS_SCALE1_FID.items():
        points[msf(steps=(s, MAIN_STEPS[1]))] = f
    for s, f in STEPS_SCALE2_FID.items():
        points[msf(steps=(MAIN_STEPS[0], s))] = f
    for name, f in FACTORIZATION_FID.items():
        points[msf(factorization=name)] = f
    for scales, f in RESOLUTIONS_FID.items():
        n = len(scales)
        points[msf(steps=(100, *[50] * (n - 1)), cfg=(1.4, *[1.0] * (n - 1)), scales=scales)] = f
    points[msf(conditioning="tdln")] = TDLN_FID
    for model, f in BASELINES.items():
        points[(model, *BASELINE_POINT)] = f
    # image_resize: the residual run's FID minus 0.45-0.51 in every run (make_runs)
    points[msf(factorization="image_resize")] = MAIN_FID
    return points


def grid_color(point: tuple[Any, ...]) -> tuple[int, int, int]:
    """The solid colour of a setting's sample grid, so that a test can find which settings a figure shows."""
    i = int(hashlib.sha1(repr(point).encode()).hexdigest()[:8], 16)
    return (i % 200 + 30, (i // 200) % 200 + 30, (i // 40000) % 200 + 30)


def jitter(rng: np.random.Generator) -> float:
    """Per-run noise of std 0.02 FID, so that no paired difference is exactly constant."""
    return float(rng.normal(0.0, 0.02))


def seeds_of(point: Point) -> list[tuple[int | None, int]]:
    """The (training seed, sampling seed) of every run the planner plans for a point."""
    trains: tuple[int | None, ...] = (None,) if point[0] == "dit_xl2" else TRAIN_SEEDS
    return [(t, s) for t in trains for s in SAMPLE_SEEDS]


def eval_label(point: Point, train_seed: int | None, sample_seed: int, untrained: bool = False) -> str:
    """The planner's label of one eval point's sample and score runs: 'msf-residual-steps100_50-cfg1.4_1.0-t0-seed0'."""
    model, steps, cfg, factorization, _, conditioning = point
    kind = f"-{factorization}" if model == "msf" else "-single"
    tag = ("-untrained" if untrained else "") + ("-tdln" if conditioning == "tdln" else "")
    t = "" if train_seed is None else f"-t{train_seed}"
    return f"{model}{kind}{tag}-steps{'_'.join(map(str, steps))}-cfg{'_'.join(map(str, cfg))}{t}-seed{sample_seed}"


class World:
    """Names and writes the sample and score runs of eval points; the manifests list them by name."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def names(self, label: str, spec: dict[str, Any], deps: dict[str, str]) -> dict[str, str]:
        """The sample and score run folder names of one eval (written or not)."""
        sample = f"sample-{label}-{record_key('sample', spec, deps)}"
        return {"sample": sample, "score": f"score-{label}-{record_key('score', SCORE_SPEC, {'samples': sample})}"}

    def point_run(self, point: Point, t: int | None, s: int, inputs: dict[str, str] | None = None,
                  untrained: bool = False) -> tuple[str, dict[str, Any], dict[str, str], dict[str, str]]:
        """The label, sample spec, sample deps and run names of one run of a trained model's point."""
        model, steps, cfg, factorization, scales, conditioning = point
        timed = not untrained and s == SAMPLE_SEEDS[0] and t in (None, TRAIN_SEEDS[0])
        if inputs is None and model == "dit_xl2":
            inputs = {"checkpoint": DIT_XL2_CHECKPOINT}
        spec = sample_spec(model, steps, cfg, t, s, timed, inputs)
        deps = {} if t is None else train_deps(model, factorization, scales, str(conditioning), t, untrained)
        label = eval_label(point, t, s, untrained)
        return label, spec, deps, self.names(label, spec, deps)

    def anchor_run(self, anchor: str, s: int) -> tuple[str, dict[str, Any], dict[str, str]]:
        """The label, sample spec and run names of one floor run (real images or their reconstructions)."""
        label = f"{ANCHOR_MODELS[anchor]}-seed{s}"
        spec = sample_spec(ANCHOR_MODELS[anchor], None, None, None, s, False)
        return label, spec, self.names(label, spec, {})

    def write(self, label: str, spec: dict[str, Any], deps: dict[str, str], names: dict[str, str],
              sampled: dict[str, Any], fid: float | None, scored: bool = True, **files: Any) -> None:
        """Write one eval's sample run (images, settings) and score run (settings + scores; unfinished unless
        ``scored``)."""
        sample_key, score_key = names["sample"].rsplit("-", 1)[1], names["score"].rsplit("-", 1)[1]
        write_run(self.root, "sample", label, sampled, spec, deps, sample_key, **files)
        write_run(self.root, "score", label, score_metrics(sampled, names["sample"], fid) if scored else None,
                  SCORE_SPEC, {"samples": names["sample"]}, score_key)


def images(color: tuple[int, int, int]) -> dict[str, Any]:
    """A sample run's image files: grid.npy in one solid colour, and a small samples.npz."""
    grid = np.full(GRID_SHAPE, color, np.uint8)
    return {"grid": grid, "samples": (grid.reshape(-1, *GRID_SHAPE[2:])[:8], np.arange(8) % GRID_SHAPE[0])}


def run_entry(names: dict[str, str], t: int | None, s: int) -> dict[str, Any]:
    """One run of a manifest: its seeds and its score and sample run folders."""
    return {"train_seed": t, "sample_seed": s, "score": names["score"], "sample": names["sample"]}


# ----------------------------------------------------------------------------------------------------------------------
# Manifests


def sweep_file(name: str) -> dict[str, Any]:
    """A sweep file's YAML (its table and description)."""
    return dict(yaml.safe_load((SWEEPS_DIR / f"{name}.yaml").read_text(encoding="utf-8")))


def config(sweep: str, train_seeds: tuple[int, ...] = TRAIN_SEEDS, sample_seeds: tuple[int, ...] = SAMPLE_SEEDS,
           **changes: Any) -> dict[str, Any]:
    """A manifest's resolved config minus runner keys, reduced to the sections the synthetic runs depend on;
    ``changes``: 'section.key' -> value."""
    out: dict[str, Any] = {
        "preset": PRESET, "sweep": sweep, "seeds": {"train": list(train_seeds), "sample": list(sample_seeds)},
        "data": dict(DATA), "sample": {"cfg": list(MAIN_CFG), "steps": list(MAIN_STEPS), "solver": "euler"},
        "msf": {"factorization": "residual", "scales": list(SCALES), "conditioning": "adaln_zero", "mode": "bilinear",
                "steps": [300, 300]},
        "eval": {"n_samples": 64, "features": "embedded-net", "world": "embedded", "batch_size": 64},
        "train": {"batch_size": 64, "lr": 0.0003},
    }
    for dotted, value in changes.items():
        section, key = dotted.split(".")
        out[section][key] = value
    return out


def manifest(sweep: str, points: list[dict[str, Any]], anchors: dict[str, list[dict[str, Any]]],
             cfg: dict[str, Any], overrides: dict[str, Any], reference: int | None,
             other: dict[str, list[str]] | None = None, table: str | None = None,
             description: str | None = None) -> dict[str, Any]:
    """A sweep manifest as the planner writes it (ablations/graph.py plan)."""
    raw = sweep_file(sweep) if table is None else {}
    return {"sweep": sweep, "table": table or str(raw["table"]), "description": description or raw["description"],
            "preset": PRESET, "overrides": overrides, "config": cfg, "points": points, "reference": reference,
            "anchors": anchors, "other": other or {"recon": [], "speed": []}}


def write_manifest(root: Path, data: dict[str, Any]) -> Path:
    """``root/PRESET/_sweeps/SWEEP-HASH.json``, named and written as the planner names and writes it (keys sorted)."""
    content = json.dumps(data, sort_keys=True).encode()
    path = root / PRESET / "_sweeps" / f"{data['sweep']}-{hashlib.sha256(content).hexdigest()[:8]}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return path


def seeds_overrides(train_seeds: tuple[int, ...] = TRAIN_SEEDS,
                    sample_seeds: tuple[int, ...] = SAMPLE_SEEDS) -> dict[str, Any]:
    """The command-line keys the synthetic sweeps were planned with (imagenet256 has seeds.train [0], sample [0-2])."""
    return {"seeds.sample": list(sample_seeds), "seeds.train": list(train_seeds)}


# ----------------------------------------------------------------------------------------------------------------------
# The whole world


def make_runs(root: Path) -> Path:
    """Write the whole synthetic imagenet256 world (runs and manifests) under root/imagenet256 and return that
    folder."""
    rng = np.random.default_rng(0)
    world = World(root)
    write_trains(root, "msf", "residual", SCALES, "adaln_zero", dict(STAGE_LOSS))  # the paper's arm
    write_trains(root, "msf", "latent_resize", SCALES, "adaln_zero", {0: 0.5, 1: 0.6})
    write_trains(root, "msf", "residual", SCALES, "adaln_zero", {0: None, 1: None})  # the ceiling's stages
    stray = train_metrics("msf", 0, 0, STRAY_LOSS, "residual", SCALES)
    spec = next(spec for lr in np.linspace(1e-3, 2e-3, 10_000)  # a learning rate whose key sorts first
                if record_key("train", spec := train_spec("msf", 0, 0, "residual", SCALES, "adaln_zero", 300,
                                                         lr=float(lr)), {"cache": "cache-x"}).startswith(STRAY_PREFIX))
    write_run(root, "train", f"{arm_label('msf', 'residual', SCALES, 'adaln_zero')}-s0-t0", stray, spec,
              {"cache": "cache-x"}, stats=stats(STRAY_LOSS))

    # ---- trained models' eval points: a sample and a score run per (training seed, sampling seed)
    main_fid = {(t, s): MAIN_FID + TRAIN_OFFSET[t] + SAMPLE_OFFSET[s] + jitter(rng)
                for t in TRAIN_SEEDS for s in SAMPLE_SEEDS}
    for point, fid in eval_points().items():
        model, steps, cfg, fac, scales, cond = point
        noisy = model == "msf" and steps[0] == MAIN_STEPS[0] and len(steps) == 2 and steps[1] in NOISY_STEPS_SCALE2
        for i, (t, s) in enumerate(seeds_of(point)):
            assert t is not None
            if steps == (MAIN_STEPS[0], SINGLE_RUN_STEPS_SCALE2) and (t, s) != (0, 0):
                continue
            if point == MAIN:
                value = main_fid[t, s]
            elif fac == "image_resize":  # better than residual by 0.45-0.51 in every run
                gain = IMAGE_RESIZE_GAIN[0] + (IMAGE_RESIZE_GAIN[1] - IMAGE_RESIZE_GAIN[0]) * i / 5
                value = main_fid[t, s] - gain
            else:
                value = fid + TRAIN_OFFSET[t] + SAMPLE_OFFSET[s] + jitter(rng)
            if noisy or fac == "latent_resize":
                value += float(rng.normal(0.0, 2.0 if noisy else 3.0))
            label, spec, deps, names = world.point_run(point, t, s)
            m = sample_metrics(model, steps, cfg, t, s, fac, list(scales), cond,
                               time=(MSF_TIME if point == MAIN else 5.0) if spec["time_sampling"] else None)
            files = images(grid_color(point))
            if point == MAIN and (t, s) == (0, 0):
                files["decomposition"] = rng.integers(0, 256, (4, 3, 8, 8, 3), dtype=np.uint8)
                m["decomposition_columns"] = DECOMPOSITION_COLUMNS
            world.write(label, spec, deps, names, m, value, **files)
    unfinished = msf(steps=(MAIN_STEPS[0], UNFINISHED_STEPS_SCALE2))  # sampled; its scoring never finished
    label, spec, deps, names = world.point_run(unfinished, 0, 0)
    world.write(label, spec, deps, names, sample_metrics("msf", unfinished[1], unfinished[2], 0, 0, time=5.0), None,
                scored=False, **images(grid_color(unfinished)))
    orphan = msf(cfg=ORPHAN_CFG)  # Table 2's CFG 1.3 by older code: its keys are no manifest's
    for t, s in seeds_of(orphan):
        label, spec, deps, _ = world.point_run(orphan, t, s)
        spec = spec | {"inputs": {"autoencoder": "older"}}
        names = world.names(label, spec, deps)
        m = sample_metrics("msf", orphan[1], orphan[2], t, s)
        world.write(label, spec, deps, names, m, ORPHAN_FID, **images(grid_color(("orphan", *orphan))))

    # ---- the pretrained DiT-XL/2 (no training seed), twice at sampling seed 0: its checkpoint re-fetched
    for t, s in seeds_of(DIT_XL2_POINT):
        label, spec, _, names = world.point_run(DIT_XL2_POINT, t, s)
        m = sample_metrics("dit_xl2", (250,), (1.5,), None, s, "none (DDPM)", [32], None,
                           DIT_XL2["time"] if spec["time_sampling"] else None)
        world.write(label, spec, {}, names, m, DIT_XL2["fid"] + SAMPLE_OFFSET[s], **images(grid_color(DIT_XL2_POINT)))
    label, spec, _, duplicate = world.point_run(DIT_XL2_POINT, None, 0, {"checkpoint": "dit-fingerprint-b"})
    m = sample_metrics("dit_xl2", (250,), (1.5,), None, 0, "none (DDPM)", [32], None, DIT_XL2["time"])
    world.write(label, spec, {}, duplicate, m, DIT_XL2["fid"] + SAMPLE_OFFSET[0] + DUPLICATE_FID_SHIFT,
                **images(grid_color(DIT_XL2_POINT)))

    # ---- the anchors of every table: the two floors per sampling seed, the ceiling per training seed
    anchors: dict[str, list[dict[str, Any]]] = {"real": [], "autoencoder": [], "untrained": []}
    for s in SAMPLE_SEEDS:
        for anchor in ("real", "autoencoder"):
            label, spec, names = world.anchor_run(anchor, s)
            world.write(label, spec, {}, names, anchor_metrics(anchor, s), ANCHOR_FID[anchor] + ANCHOR_STEP[anchor] * s,
                        **images((128, 128, 128)))
            anchors[anchor].append(run_entry(names, None, s))
    for t in TRAIN_SEEDS:
        label, spec, deps, names = world.point_run(MAIN, t, 0, untrained=True)
        m = sample_metrics("msf", MAIN_STEPS, MAIN_CFG, t, 0, anchor="untrained", train_steps=[0, 0])
        world.write(label, spec, deps, names, m, ANCHOR_FID["untrained"] + ANCHOR_STEP["untrained"] * t,
                    **images((60, 60, 60)))
        anchors["untrained"].append(run_entry(names, t, 0))

    # ---- reconstructions (Fig. 2), speed at the paper's sizes, and a run of another kind
    recon = []
    for i, fac in enumerate([*FACTORIZATION_FID, "image_resize"]):
        metrics = {"factorization": fac, "scales": SCALES, "psnr_per_scale": [18.0 + i, 30.0], "psnr_full": 30.0}
        recon.append(write_run(root, "recon", fac, metrics,
                               decomposition=rng.integers(0, 256, (3, 2, 32, 32, 3), dtype=np.uint8)).name)
    speed = []
    for model, sec, tflops in (("msf", 0.1, 22.1), ("dit_xl2", 0.6, 118.6)):
        metrics = {
            "model": model, "paper_row": FAMILIES[model].paper_row([1.4, 1.0] if model == "msf" else [1.5]),
            "params_m": 1.5, "gflops_per_forward": [0.01, 0.02], "tflops_per_image": tflops,
            "steps": [100, 50] if model == "msf" else [250], "cfg": [1.4, 1.0] if model == "msf" else [1.5],
            "sec_per_image": sec, "images_per_s": 1 / sec, "matmul_tflops": 0.05, "mfu": tflops / sec / 0.05,
            "batch": 8, "device": "cpu", "dtype": "float32", "method": "median call time x steps",
            "switches": {"attention": "sdpa", "compile": "none"},
        }
        speed.append(write_run(root, "speed", model, metrics).name)
    write_run(root, "autoencoder", "pixels", {"psnr_ref_db": 30.0})

    # ---- one manifest per sweep file, and a second one of the main sweep (sampling seed 0, checkpoint re-fetched)
    for sweep, points in sweep_points().items():
        listed: list[dict[str, Any]] = []
        for explicit, point in points:
            runs = [run_entry(world.point_run(point, t, s)[3], t, s) for t, s in seeds_of(point)]
            listed.append({"explicit": explicit, "setting": setting_of(point), "runs": runs, **roles(point)})
        reference = reference_of(sweep, points)
        other = {"recon": recon if sweep == "factorization" else [], "speed": speed if sweep == "speed" else []}
        write_manifest(root, manifest(sweep, listed, anchors if points else {}, config(sweep), seeds_overrides(),
                                      reference, other))
        if sweep == "main":
            again = [p | {"runs": [r for r in p["runs"] if r["sample_seed"] == 0]} for p in listed]
            again[-1]["runs"] = [run_entry(duplicate, None, 0)]
            seed0 = {k: [r for r in v if r["sample_seed"] == 0] for k, v in anchors.items()}
            write_manifest(root, manifest(sweep, again, seed0, config(sweep, sample_seeds=(0,)),
                                          seeds_overrides(sample_seeds=(0,)), reference, other))
    return root / PRESET


# ----------------------------------------------------------------------------------------------------------------------
# Small worlds for single tests


def write_point(root: Path, point: Point, runs: dict[tuple[int | None, int], float | None],
                extra: dict[str, Any] | None = None, salt: str = "") -> list[dict[str, Any]]:
    """Sample and score runs of one trained-model point at the given (training seed, sampling seed) -> FID (None:
    not measured), ``extra`` merged into the sample metrics; returns the manifest's run entries. ``salt`` gives the
    runs other keys (the same point planned with other settings no run records, e.g. another learning rate)."""
    world = World(root)
    out = []
    for (t, s), fid in runs.items():
        label, spec, deps, names = world.point_run(point, t, s)
        if salt:
            deps = {k: f"{v}-{salt}" for k, v in deps.items()}
            names = world.names(label, spec, deps)
        m = sample_metrics(point[0], point[1], point[2], t, s, point[3], list(point[4]), point[5]) | (extra or {})
        world.write(label, spec, deps, names, m, fid)
        out.append(run_entry(names, t, s))
    return out


def write_sweep(root: Path, sweep: str, measured: dict[Point, dict[tuple[int | None, int], float | None]],
                train_seeds: tuple[int, ...] = (0,), sample_seeds: tuple[int, ...] = (0,)) -> Path:
    """One sweep file planned at the synthetic preset with the given seeds: its manifest lists every point's runs and
    no anchors; only the runs of the ``measured`` points ((training seed, sampling seed) -> FID) are written."""
    world = World(root)
    for point, fids in measured.items():
        write_point(root, point, fids)
    points = sweep_points()[sweep]
    listed = [{"explicit": explicit, "setting": setting_of(point),
               "runs": [run_entry(world.point_run(point, t, s)[3], t, s)
                        for t in ((None,) if point[0] == "dit_xl2" else train_seeds) for s in sample_seeds],
               **roles(point)}
              for explicit, point in points]
    reference = reference_of(sweep, points)
    return write_manifest(root, manifest(sweep, listed, {}, config(sweep, train_seeds, sample_seeds),
                                         seeds_overrides(train_seeds, sample_seeds), reference))
