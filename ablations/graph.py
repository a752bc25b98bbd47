"""The job graph of a sweep: autoencoder -> target cache -> trainings -> eval points -> report (harness).

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

from ablations.config import Config, Sweep, per_scale, point_config, stage_of
from ablations.engine.families import FAMILIES, SPEED_FAMILIES
from ablations.engine.specs import (
    AutoencoderJob,
    CacheJob,
    ClassifierJob,
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
        """The run folder's name (harness)."""
        return f"{self.kind}-{self.label}-{self.key}"

    def record(self, code: str) -> dict[str, Any]:
        """The job's config.json (harness)."""
        return spec_record(self.kind, self.name, self.key, self.spec, {r: d.name for r, d in self.deps.items()}, code)


def code_version() -> str:
    """The git commit of the code, recorded beside every job (harness)."""
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
        """Add a job (or return the one with the same key); ``deps`` must already be in the graph (harness)."""
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
        """Whether the job's metrics.json exists (harness)."""
        return (job.run_dir / "metrics.json").exists()


# ----------------------------------------------------------------------------------------------------------------------
# Planning: which jobs a sweep needs.


def _x(values: list[Any]) -> str:
    return "x".join(map(str, values))


def plan(cfg: Config, sweep: Sweep) -> Graph:
    """The graph of a sweep for a resolved config (see the module docstring)."""
    g = Graph(Path(cfg.runs_dir) / cfg.preset)
    runtime = Runtime(cfg.device, cfg.cpu_threads)
    factor = latent_factor(cfg.autoencoder)
    shared: dict[str, Job] = {}
    if cfg.autoencoder.kind == "small_kl":
        shared["autoencoder"] = g.add("small_kl", AutoencoderJob(cfg.data, cfg.autoencoder, runtime))
    ae_deps = dict(shared)
    if cfg.eval.world == "embedded":
        shared["classifier"] = g.add(cfg.data.name, ClassifierJob(cfg.data, cfg.eval.classifier_steps, runtime))

    def trained(model: str, pcfg: Config, seed: int) -> dict[str, Job]:
        """The train jobs of one model at one training seed, by role (train0, train1, ...) (harness)."""
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
        cache = g.add(f"{fac.name}-{_x(fac.scales)}", CacheJob(pcfg.data, pcfg.autoencoder, fac, pcfg.cache, runtime),
                      ae_deps)
        tdln = "-tdln" if conditioning == "tdln" else ""
        return {
            f"train{i}": g.add(
                f"{model}-{fac.name}-{_x(fac.scales)}{tdln}-s{i}-t{seed}",
                TrainJob(model, i, steps[i], seed, networks[i], pcfg.msf.prior_mode, conditioning, fac,  # type: ignore[arg-type]
                         pcfg.data.num_classes, pcfg.train, runtime),
                {"cache": cache},
            )
            for i in range(len(networks))
        }

    for point in sweep.points:
        model = point.get("model", "msf")
        pcfg = point_config(cfg, point)
        family = FAMILIES[model]
        train_seeds: list[int | None] = list(pcfg.seeds.train) if family.architecture is not None else [None]
        for train_seed in train_seeds:
            stages = trained(model, pcfg, train_seed) if train_seed is not None else {}
            for sample_seed in pcfg.seeds.sample:
                kind = pcfg.msf.factorization if family.multi_scale else "single"
                tdln = "-tdln" if family.multi_scale and pcfg.msf.conditioning == "tdln" else ""
                t = "" if train_seed is None else f"-t{train_seed}"
                g.add(
                    f"{model}-{kind}{tdln}-steps{'_'.join(map(str, pcfg.sample.steps))}"
                    f"-cfg{'_'.join(map(str, pcfg.sample.cfg))}{t}-seed{sample_seed}",
                    EvalJob(model, pcfg.sample, pcfg.eval, sample_seed, train_seed,  # type: ignore[arg-type]
                            sample_seed == pcfg.seeds.sample[0] and train_seed in (None, pcfg.seeds.train[0]),
                            pcfg.data, pcfg.autoencoder,
                            pcfg.baseline.dit_xl2_checkpoint if model == "dit_xl2" else None, cfg.preset, runtime),
                    {**shared, **stages},
                )
    if sweep.recon:
        for fac_name in get_args(Factorization):
            fac = FactorizationSpec(fac_name, cfg.msf.scales, cfg.msf.mode)  # type: ignore[arg-type]
            g.add(fac_name, ReconJob(fac, cfg.data, cfg.autoencoder, runtime), ae_deps)
    if sweep.speed:
        for model in SPEED_FAMILIES:
            g.add(model, SpeedJob(model, cfg.speed, cfg.eval.dtype, cfg.eval.attention, cfg.eval.compile,  # type: ignore[arg-type]
                                  runtime))
    return g


def plan_summary(g: Graph) -> list[dict[str, Any]]:
    """One row per job for --dry-run: kind, name, status (done / todo), run folder (harness)."""
    return [{"kind": j.kind, "name": j.name, "status": "done" if g.done(j) else "todo", "run_dir": str(j.run_dir)}
            for j in g]
