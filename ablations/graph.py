"""The job graph of a sweep: autoencoder -> target cache -> trainings -> eval points -> report.

The planner turns the resolved Config into typed job specs (ablations/engine/specs.py), once. A job's key hashes its
kind, results version, spec and dependencies, so a job whose run folder already has ``metrics.json`` for the same key
is done and skipped, and a job whose inputs or code version changed gets a new folder. A job's folder is
``RUNS/PRESET/KIND-LABEL-KEY``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from ablations.config import Config, ConfigError, Sweep, lookup, per_scale, point_config, resolve, stage_of
from ablations.engine import paths, runfolder
from ablations.engine.assets import ASSETS
from ablations.engine.families import FAMILIES, SPEED_FAMILIES
from ablations.engine.specs import (
    AutoencoderJob,
    CacheJob,
    EvalJob,
    Factorization,
    FactorizationSpec,
    ReconJob,
    Runtime,
    SpeedJob,
    TrainJob,
    kind_of,
    latent_factor,
    run_key,
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
    network (or Inception weights), ADM's reference batch and the DiT-XL/2 checkpoint."""
    out: dict[str, str] = {}
    if cfg.autoencoder.kind == "frozen":
        out["autoencoder"] = ASSETS[cfg.autoencoder.frozen].sha256[:16]
    elif cfg.autoencoder.kind == "pretrained":
        out["autoencoder"] = paths.fingerprint(Path(str(cfg.autoencoder.path)) / paths.VAE_WEIGHTS)
    e = cfg.eval
    if e.world == "embedded":
        f = e.features
        out["features"] = ASSETS[f].sha256[:16] if f in ASSETS else paths.fingerprint(f)
    elif e.inception_weights:
        out["inception"] = paths.fingerprint(e.inception_weights)
    if e.reference_npz:
        out["reference"] = paths.fingerprint(e.reference_npz)
    if cfg.baseline.dit_xl2_checkpoint:
        out["checkpoint"] = paths.fingerprint(cfg.baseline.dit_xl2_checkpoint)
    return out


def plan(cfg: Config, sweep: Sweep) -> Graph:
    """The graph of a sweep for a resolved config (see the module docstring)."""
    g = Graph(Path(cfg.runs_dir) / cfg.preset)
    runtime = Runtime(cfg.device, cfg.cpu_threads)
    factor = latent_factor(cfg.autoencoder)
    inputs = input_fingerprints(cfg)
    ae_inputs = {k: v for k, v in inputs.items() if k == "autoencoder"}
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
            assert family.baseline is not None
            network, step_count = family.baseline(pcfg.baseline)
            fac = FactorizationSpec("residual", [pcfg.data.image_size // factor], pcfg.msf.mode)
            networks, steps, conditioning = [network], [step_count], "adaln_zero"
        if untrained:
            steps = [0] * len(steps)
        n = pcfg.cache.parts
        caches = {f"cache{i}" if n > 1 else "cache": g.add(
            f"{fac.name}-{_x(fac.scales)}" + (f"-part{i}of{n}" if n > 1 else ""),
            CacheJob(pcfg.data, pcfg.autoencoder, fac, pcfg.cache, i, ae_inputs, runtime), ae_deps) for i in range(n)}
        tag = ("-tdln" if conditioning == "tdln" else "") + ("-untrained" if untrained else "")
        return {
            f"train{i}": g.add(
                f"{model}-{fac.name}-{_x(fac.scales)}{tag}-s{i}-t{seed}",
                TrainJob(model, i, steps[i], seed, networks[i], pcfg.msf.prior_mode, conditioning,  # type: ignore[arg-type]
                         fac, pcfg.data.num_classes, pcfg.train, runtime),
                caches,
            )
            for i in range(len(networks))
        }

    def evaluated(model: str, pcfg: Config, stages: dict[str, Job], train_seed: int | None, sample_seed: int,
                  timed: bool, tag: str = "") -> Job:
        """One eval job of a model (its trained stages as deps) at a point's sample settings."""
        family = FAMILIES[model]
        sample = None if model == "real" else pcfg.sample
        kind = pcfg.msf.factorization if family.multi_scale else "single"
        tag += "-tdln" if family.multi_scale and pcfg.msf.conditioning == "tdln" else ""
        setting = "" if sample is None else (f"-steps{'_'.join(map(str, sample.steps))}"
                                             f"-cfg{'_'.join(map(str, sample.cfg))}")
        t = "" if train_seed is None else f"-t{train_seed}"
        return g.add(
            f"{model}-{kind}{tag}{setting}{t}-seed{sample_seed}",
            EvalJob(model, sample, pcfg.eval, sample_seed, train_seed, timed, pcfg.data,  # type: ignore[arg-type]
                    pcfg.autoencoder, pcfg.baseline.dit_xl2_checkpoint if model == "dit_xl2" else None,
                    pcfg.baseline.dit_xl2 if model == "dit_xl2" else None, cfg.preset,
                    {k: v for k, v in inputs.items() if k != "checkpoint" or model == "dit_xl2"}, runtime),
            {**shared, **stages},
        )

    for point in sweep.points:
        model = point.get("model", "msf")
        pcfg = point_config(cfg, point)
        family = FAMILIES[model]
        train_seeds: list[int | None] = list(pcfg.seeds.train) if family.architecture is not None else [None]
        for train_seed in train_seeds:
            stages = trained(model, pcfg, train_seed) if train_seed is not None else {}
            for sample_seed in pcfg.seeds.sample:
                timed = sample_seed == pcfg.seeds.sample[0] and train_seed in (None, pcfg.seeds.train[0])
                evaluated(model, pcfg, stages, train_seed, sample_seed, timed)
    if sweep.points:  # the floor and ceiling of every table: real images, and MSF with untrained stages
        for sample_seed in cfg.seeds.sample:
            evaluated("real", cfg, {}, None, sample_seed, False)
        for train_seed in cfg.seeds.train:
            evaluated("msf", cfg, trained("msf", cfg, train_seed, untrained=True), train_seed, cfg.seeds.sample[0],
                      False, "-untrained")
    if sweep.recon:
        for fac_name in get_args(Factorization):
            fac = FactorizationSpec(fac_name, cfg.msf.scales, cfg.msf.mode)
            g.add(fac_name, ReconJob(fac, cfg.data, cfg.autoencoder, ae_inputs, runtime), ae_deps)
    if sweep.speed:
        for model in SPEED_FAMILIES:
            g.add(model, SpeedJob(model, cfg.speed, cfg.eval.dtype, cfg.eval.attention, cfg.eval.compile,  # type: ignore[arg-type]
                                  runtime))
    return g


RUNNER_KEYS = ("launcher", "runs_dir", "workers")  # and slurm.*: where and how jobs run, not what they compute


def check_overrides(argv_pairs: list[tuple[str, str]], cfg: Config, sweep: Sweep) -> None:
    """Refuse a command-line setting that changes no job of the sweep (it would be ignored silently): each override
    is dropped in turn and the sweep re-planned; the same jobs mean the setting had no effect.

    Raises:
        ConfigError: one line naming the key, its value and why it has no effect.
    """
    jobs = {j.key for j in plan(cfg, sweep)}
    full = to_data(cfg)
    for key, value in sweep.overrides.items():
        if key in RUNNER_KEYS or key.startswith("slurm."):
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
        return "redo" if (job.run_dir / "metrics.json").exists() else "todo"  # redo: damaged outputs

    return [{"kind": j.kind, "name": j.name, "status": status(j), "run_dir": str(j.run_dir)} for j in g]
