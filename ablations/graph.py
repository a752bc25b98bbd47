"""The job graph of a sweep: autoencoder -> target cache -> trainings -> eval points -> report.

The planner turns the resolved Config into typed job specs (ablations/engine/specs.py), once. A job's key hashes its
kind, results version, spec and dependencies, so a job whose run folder already has ``metrics.json`` for the same key
is done and skipped, and a job whose inputs or code version changed gets a new folder. A job's folder is
``RUNS/PRESET/KIND-LABEL-KEY``.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from ablations import inputs
from ablations.config import (
    Config,
    ConfigError,
    Sweep,
    lookup,
    per_scale,
    point_config,
    resolve,
    section_of,
    stage_of,
)
from ablations.engine import runfolder
from ablations.engine.committed import ASSETS
from ablations.engine.families import ANCHOR_FAMILIES, FAMILIES, METHOD, SPEED_FAMILIES
from ablations.engine.io import write_json
from ablations.engine.specs import (
    AutoencoderJob,
    CacheJob,
    Factorization,
    FactorizationSpec,
    ReconJob,
    Runtime,
    SampleJob,
    ScoreJob,
    SpeedJob,
    TrainJob,
    kind_of,
    latent_factor,
    run_key,
    sampling_of,
    scoring_of,
    spec_record,
)
from ablations.engine.typed import to_data


@dataclass
class Job:
    """One planned job: its kind, a readable label, its typed spec, its dependencies by role, key and folder."""

    kind: str
    label: str
    spec: Any
    deps: dict[str, Job] = field(default_factory=dict)
    key: str = ""
    run_dir: Path = Path()

    @property
    def name(self) -> str:
        """The run folder's name."""
        return f"{self.kind}-{self.label}-{self.key}"

    def record(self, code: str) -> dict[str, Any]:
        """The job's config.json."""
        return spec_record(self.kind, self.name, self.key, self.spec, {r: d.name for r, d in self.deps.items()}, code)

    def needs(self, other: Job) -> bool:
        """Whether this job depends on ``other``, directly or through other jobs."""
        return any(d.key == other.key or d.needs(other) for d in self.deps.values())


def code_version() -> str:
    """The git commit of the code, recorded beside every job."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


class Graph:
    """Jobs in topological order (each job's dependencies come before it), deduplicated by key."""

    def __init__(self, runs_root: Path) -> None:
        self.root = runs_root
        self.jobs: dict[str, Job] = {}
        self.manifest: dict[str, Any] = {}  # the sweep's points and their runs, for the reports (see ``manifest``)

    def add(self, label: str, spec: Any, deps: dict[str, Job] | None = None) -> Job:
        """Add a job (or return the one with the same key); ``deps`` must already be in the graph."""
        deps = deps or {}
        kind = kind_of(spec)
        key = run_key(kind, spec, {role: d.name for role, d in deps.items()})
        if key not in self.jobs:
            job = Job(kind, label, spec, deps, key)
            job.run_dir = self.root / job.name
            self.jobs[key] = job
        return self.jobs[key]

    def __iter__(self) -> Iterator[Job]:
        return iter(self.jobs.values())

    def done(self, job: Job) -> bool:
        """Whether the job finished with intact outputs (metrics.json, recorded sizes)."""
        return runfolder.done(job.run_dir)


# ----------------------------------------------------------------------------------------------------------------------
# Planning: which jobs a sweep needs.


def _x(values: list[Any]) -> str:
    return "x".join(map(str, values))


def input_fingerprints(cfg: Config) -> dict[str, str]:
    """Fingerprints of the files the jobs read besides run folders, by role: the autoencoder's weights, the feature
    network (or Inception weights), ADM's reference batch and each pretrained family's checkpoint."""
    out: dict[str, str] = {}
    if cfg.autoencoder.kind == "frozen":
        out["autoencoder"] = ASSETS[cfg.autoencoder.frozen].sha256[:16]
    elif cfg.autoencoder.kind == "pretrained":
        out["autoencoder"] = inputs.fingerprint(Path(str(cfg.autoencoder.path)) / inputs.VAE_WEIGHTS)
    e = cfg.eval
    if e.world == "embedded":
        f = e.features
        out["features"] = ASSETS[f].sha256[:16] if f in ASSETS else inputs.fingerprint(f)
    elif e.inception_weights:
        out["inception"] = inputs.fingerprint(e.inception_weights)
    if e.reference_npz:
        out["reference"] = inputs.fingerprint(e.reference_npz)
    for name, family in FAMILIES.items():
        if family.pretrained and section_of(cfg, name).checkpoint:
            out[f"{name}.checkpoint"] = inputs.fingerprint(section_of(cfg, name).checkpoint)
    return out


def plan(cfg: Config, sweep: Sweep) -> Graph:
    """The graph of a sweep for a resolved config (see the module docstring)."""
    g = Graph(Path(cfg.runs_dir) / cfg.preset)
    runtime = Runtime(cfg.device, cfg.cpu_threads)
    factor = latent_factor(cfg.autoencoder)
    inputs = input_fingerprints(cfg)
    ae_inputs = {k: v for k, v in inputs.items() if k == "autoencoder"}
    score_inputs = {k: v for k, v in inputs.items() if k in ("features", "inception", "reference")}
    shared: dict[str, Job] = {}
    if cfg.autoencoder.kind == "small_kl":
        shared["autoencoder"] = g.add("small_kl", AutoencoderJob(cfg.data, cfg.autoencoder, runtime))
    ae_deps = dict(shared)

    def trained(model: str, pcfg: Config, seed: int, untrained: bool = False) -> dict[str, Job]:
        """The train jobs of one model at one training seed, by role (train0, train1, ...); ``untrained``: 0 steps,
        the ceiling of a table."""
        family = FAMILIES[model]
        if family.architecture is None:
            return {}
        if family.multi_scale:
            fac = FactorizationSpec(pcfg.msf.factorization, pcfg.msf.scales, pcfg.msf.mode)
            n = len(pcfg.msf.scales)
            networks = [stage_of(pcfg, i) for i in range(n)]
            steps = per_scale(pcfg.msf.steps, n, "msf.steps")
            conditioning = pcfg.msf.conditioning
        else:
            section = section_of(pcfg, model)
            fac = FactorizationSpec("residual", [pcfg.data.image_size // factor], pcfg.msf.mode)
            networks, steps, conditioning = [section.network], [section.steps], "adaln_zero"
        if untrained:
            steps = [0] * len(steps)
        n = pcfg.cache.parts
        caches = {f"cache{i}" if n > 1 else "cache": g.add(
            f"{fac.name}-{_x(fac.scales)}" + (f"-part{i}of{n}" if n > 1 else ""),
            CacheJob(pcfg.data, pcfg.autoencoder, fac, pcfg.cache, i, ae_inputs, runtime), ae_deps) for i in range(n)}
        tag = ("-tdln" if conditioning == "tdln" else "") + (f"-{runfolder.CEILING}" if untrained else "")
        return {
            f"train{i}": g.add(
                f"{model}-{fac.name}-{_x(fac.scales)}{tag}-s{i}-t{seed}",
                TrainJob(model, i, steps[i], seed, networks[i], pcfg.msf.prior_mode, conditioning,
                         fac, pcfg.data.num_classes, pcfg.train, runtime),
                caches,
            )
            for i in range(len(networks))
        }

    def evaluated(model: str, pcfg: Config, stages: dict[str, Job], train_seed: int | None, sample_seed: int,
                  timed: bool, tag: str = "") -> Job:
        """One eval point of a model (its trained stages as deps) at a point's sample settings: a sample job that
        saves the images and a score job that scores them; returns the score job."""
        family = FAMILIES[model]
        sample = None if family.anchor else pcfg.sample
        kind = f"-{pcfg.msf.factorization}" if family.multi_scale else "" if family.anchor else "-single"
        tag += "-tdln" if family.multi_scale and pcfg.msf.conditioning == "tdln" else ""
        setting = "" if sample is None else (f"-steps{'_'.join(map(str, sample.steps))}"
                                             f"-cfg{'_'.join(map(str, sample.cfg))}")
        t = "" if train_seed is None else f"-t{train_seed}"
        label = f"{model}{kind}{tag}{setting}{t}-seed{sample_seed}"
        weights = section_of(pcfg, model) if family.pretrained else None
        sampled = g.add(
            label,
            SampleJob(model, sample, sampling_of(pcfg.eval), sample_seed, train_seed, timed, pcfg.data,
                      pcfg.autoencoder, weights.checkpoint if weights else None, weights.network if weights else None,
                      cfg.preset, {k: v for k, v in inputs.items() if k in ("autoencoder", f"{model}.checkpoint")},
                      runtime),
            {**shared, **stages},
        )
        return g.add(label, ScoreJob(scoring_of(pcfg.eval), pcfg.data, score_inputs, runtime), {"samples": sampled})

    def run_names(score: Job, train_seed: int | None, sample_seed: int) -> dict[str, Any]:
        return {"train_seed": train_seed, "sample_seed": sample_seed, "score": score.name,
                "sample": score.deps["samples"].name}

    points = []
    for point in sweep.points:
        model = point.get("model", METHOD)
        pcfg = point_config(cfg, point)
        family = FAMILIES[model]
        train_seeds: list[int | None] = list(pcfg.seeds.train) if family.architecture is not None else [None]
        runs = []
        for train_seed in train_seeds:
            stages = trained(model, pcfg, train_seed) if train_seed is not None else {}
            for sample_seed in pcfg.seeds.sample:
                timed = sample_seed == pcfg.seeds.sample[0] and train_seed in (None, pcfg.seeds.train[0])
                runs.append(run_names(evaluated(model, pcfg, stages, train_seed, sample_seed, timed), train_seed,
                                      sample_seed))
        points.append({"explicit": reported(point, model), "setting": setting_of(pcfg, model), "runs": runs,
                       "paper_row": family.paper_row(pcfg.sample.cfg), "speed_rank": family.speed_rank})
    anchors: dict[str, list[dict[str, Any]]] = {}
    if sweep.points:  # every table's anchors: real images, the same through the autoencoder, untrained MSF stages
        for sample_seed in cfg.seeds.sample:
            for name in ANCHOR_FAMILIES:
                anchors.setdefault(str(FAMILIES[name].anchor), []).append(
                    run_names(evaluated(name, cfg, {}, None, sample_seed, False), None, sample_seed))
        seed = cfg.seeds.train[0]  # untrained adaLN-Zero stages output zero velocity: one seed shows the ceiling
        untrained = evaluated(METHOD, cfg, trained(METHOD, cfg, seed, untrained=True), seed, cfg.seeds.sample[0],
                              False, f"-{runfolder.CEILING}")
        anchors[runfolder.CEILING] = [run_names(untrained, seed, cfg.seeds.sample[0])]
    if sweep.recon:
        for fac_name in get_args(Factorization):
            fac = FactorizationSpec(fac_name, cfg.msf.scales, cfg.msf.mode)
            g.add(fac_name, ReconJob(fac, cfg.data, cfg.autoencoder, ae_inputs, runtime), ae_deps)
    if sweep.speed:
        for model in SPEED_FAMILIES:
            g.add(model, SpeedJob(model, cfg.speed, cfg.eval.dtype, cfg.eval.attention, cfg.eval.compile,
                                  runtime))
    default = setting_of(cfg, METHOD)
    g.manifest = {
        "sweep": sweep.name, "table": sweep.table, "description": sweep.description, "preset": cfg.preset,
        "overrides": {k: v for k, v in sweep.overrides.items() if not runner_key(k)},
        "config": {k: v for k, v in to_data(cfg).items() if not runner_key(k)},
        "points": points, "reference": sweep.reference if sweep.reference is not None else next(
            (i for i, p in enumerate(points) if p["setting"] == default and own_values(sweep.points[i], cfg)), None),
        "anchors": anchors, "other": {kind: [j.name for j in g if j.kind == kind] for kind in ("recon", "speed")},
    }
    return g


# ----------------------------------------------------------------------------------------------------------------------
# The sweep manifest: which runs make which table, recorded when the sweep is planned, read by the reports.

REPORTED = {  # a sweep file's key -> the name the sample job records it under (metrics.json)
    "model": "model",
    "sample.cfg": "cfg",
    "sample.steps": "steps",
    "msf.factorization": "factorization",
    "msf.scales": "scales",
    "msf.conditioning": "conditioning",
}


def reported(point: dict[str, Any], model: str) -> dict[str, Any]:
    """The settings a sweep point sets, under the names its runs record them (other keys keep their own name)."""
    return {"model": model, "anchor": None} | {REPORTED.get(k, k): v for k, v in point.items()}


def own_values(point: dict[str, Any], cfg: Config) -> bool:
    """Whether a point sets every key no run records (e.g. a swept learning rate) to the configuration's own value."""
    data = to_data(cfg)
    return all(lookup(data, k) == lookup(to_data(point_config(cfg, {k: v})), k)
               for k, v in point.items() if k not in REPORTED)


def setting_of(cfg: Config, model: str) -> dict[str, Any]:
    """The model settings a point's runs record (metrics.json), resolved: model, CFG and steps per scale, and for
    a multi-scale model its factorization, latent sizes and conditioning."""
    out: dict[str, Any] = {"model": model, "anchor": None, "cfg": cfg.sample.cfg, "steps": cfg.sample.steps}
    if FAMILIES[model].multi_scale:
        out |= {"factorization": cfg.msf.factorization, "scales": cfg.msf.scales,
                "conditioning": cfg.msf.conditioning}
    return out


def manifest_path(g: Graph) -> Path:
    """Where the sweep's manifest goes: ``RUNS/PRESET/_sweeps/SWEEP-HASH.json``, the hash naming its content (the
    same sweep planned with the same settings writes the same file)."""
    content = json.dumps(g.manifest, sort_keys=True).encode()
    return g.root / "_sweeps" / f"{g.manifest['sweep']}-{hashlib.sha256(content).hexdigest()[:8]}.json"


def write_manifest(g: Graph) -> Path:
    """Write the sweep's manifest (atomically, once) and return its path."""
    path = manifest_path(g)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, g.manifest)
    return path


RUNNER_KEYS = ("launcher", "runs_dir", "workers")  # and slurm.*: where and how jobs run, not what they compute


def runner_key(key: str) -> bool:
    """Whether a key says where and how jobs run rather than what they compute."""
    return key in RUNNER_KEYS or key.split(".")[0] == "slurm"


def check_overrides(argv_pairs: list[tuple[str, str]], cfg: Config, sweep: Sweep) -> None:
    """Refuse a command-line setting that changes no job of the sweep (it would be ignored silently): each override
    is dropped in turn and the sweep re-planned; the same jobs mean the setting had no effect.

    Raises:
        ConfigError: one line naming the key, its value and why it has no effect.
    """
    jobs = {j.key for j in plan(cfg, sweep)}
    full = to_data(cfg)
    for key, value in sweep.overrides.items():
        if runner_key(key):
            continue
        try:
            cfg0, sweep0 = resolve([(k, v) for k, v in argv_pairs if k != key])
        except ConfigError:  # the setting is needed for a valid configuration: it has an effect
            continue
        if lookup(to_data(cfg0), key) == lookup(full, key):  # the value it already had
            continue
        if {j.key for j in plan(cfg0, sweep0)} == jobs:
            raise ConfigError(f"{key}={value!r} changes no job of sweep={sweep.name} at preset={cfg.preset} (it "
                              "would be ignored with these settings); remove it")


def plan_summary(g: Graph) -> list[dict[str, Any]]:
    """One row per job for --dry-run: kind, name, status (done / todo), run folder."""
    def status(job: Job) -> str:
        if g.done(job):
            return "done"
        return "redo" if (job.run_dir / "metrics.json").exists() else "todo"  # redo: a damaged spec or outputs

    return [{"kind": j.kind, "name": j.name, "status": status(j), "run_dir": str(j.run_dir)} for j in g]
