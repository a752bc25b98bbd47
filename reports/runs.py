"""Reading run folders for the report: config.json, metrics.json, stats.jsonl and the sample arrays, never models.

A run folder holds ``config.json`` ({kind, name, key, results_version, spec, deps, code_version}) and, once its job is
done, ``metrics.json``. Eval runs that differ only in their seeds form a :class:`Group` (one setting); a group's runs
are keyed by (training seed, sampling seed), so that two settings can be compared run by run (reports/claims.py).
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ablations.engine.io import read_json, read_jsonl
from ablations.engine.runfolder import AUTOENCODER_FLOOR, CEILING, REAL_FLOOR
from reports.claims import Arm, SeedPair

REQUIRED_CONFIG = ("kind", "name", "spec", "deps")
REQUIRED = {  # metrics.json keys the report reads, by kind (run-folder schema)
    "train": "model stage train_seed factorization num_stages scale_size steps final_loss final_loss_ema100 params_m "
    "sec_per_step data_wait_frac device dtype world_size threads".split(),
    "sample": "model anchor preset dataset n_samples sample_seed train_seed train_steps autoencoder factorization "
    "scales steps cfg cfg_convention solver params_m gflops_per_image sample_time_per_64_s device dtype switches "
    "conditioning".split(),
    "score": "model anchor preset dataset world feature_extractor n_samples n_ref sample_seed train_seed train_steps "
    "autoencoder factorization scales steps cfg cfg_convention solver fid is_mean is_std precision recall params_m "
    "gflops_per_image sample_time_per_64_s device dtype switches conditioning samples".split(),
    "recon": "factorization scales psnr_per_scale psnr_full".split(),
    "speed": "model params_m gflops_per_forward tflops_per_image steps cfg sec_per_image images_per_s matmul_tflops "
    "mfu batch device dtype method switches".split(),
}
NUMBERS = set(  # metrics.json keys holding numbers (or lists of them): finite, or null where nothing was measured
    "stage train_seed num_stages scale_size steps final_loss final_loss_ema100 params_m sec_per_step data_wait_frac "
    "world_size threads n_samples n_ref sample_seed scales cfg fid is_mean is_std precision recall gflops_per_image "
    "sample_time_per_64_s psnr_per_scale psnr_full gflops_per_forward tflops_per_image sec_per_image images_per_s "
    "matmul_tflops mfu batch".split())
MODEL_KEYS = ("model", "anchor", "factorization", "scales", "steps", "cfg", "conditioning", "train_steps")
PROTOCOL = ("preset", "dataset", "world", "feature_extractor", "n_samples", "n_ref", "cfg_convention", "solver",
            "device", "dtype")
SETTING = MODEL_KEYS + PROTOCOL  # an eval group: runs with all of these equal (all but the seeds and measurements)
SAME_EVAL = ("preset", "dataset", "world", "feature_extractor", "n_samples", "n_ref")  # FIDs comparable across models
ANCHORS = {REAL_FLOOR: "floor: real images", AUTOENCODER_FLOOR: "floor: autoencoder reconstructions",  # every table's
           CEILING: "ceiling: untrained MSF"}


@dataclass(frozen=True)
class Run:
    """One run folder: its kind, name, config.json and metrics (None while unfinished: no metrics.json)."""

    path: Path
    kind: str
    name: str
    config: dict[str, Any]
    metrics: dict[str, Any] | None

    @property
    def spec(self) -> dict[str, Any]:
        """The typed job spec as written into config.json."""
        return dict(self.config["spec"])

    @property
    def deps(self) -> dict[str, str]:
        """The run folder names of this job's dependencies, by role (autoencoder, train0, ...)."""
        return dict(self.config["deps"])

    @property
    def images(self) -> Path:
        """The folder holding the images a score run scored (its sample run, beside it): grid.npy,
        decomposition.npy, samples.npz."""
        return self.path.parent / self.deps["samples"] if "samples" in self.deps else self.path

    @property
    def seeds(self) -> SeedPair:
        """(training seed or None, sampling seed) of an eval run."""
        m = self.metrics or {}
        return (None if m.get("train_seed") is None else int(m["train_seed"]), int(m["sample_seed"]))


def find_run_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """Run folders (holding config.json) given as themselves or under a parent folder, not inside another; a run
    folder's name (its job's kind, label and key) found twice, e.g. a published copy inside the runs folder, counts
    once."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise ValueError(f"not a directory: {p}")
        dirs = [p] if (p / "config.json").is_file() else sorted(c.parent for c in p.rglob("config.json"))
        nested = set(dirs)
        dirs = [d for d in dirs if not nested.intersection(d.parents)]  # e.g. the saved autoencoder in its run
        if not dirs:
            raise ValueError(f"no run folder (config.json) in {p}")
        found += [d.resolve() for d in dirs]
    unique: dict[str, Path] = {}
    for d in found:  # of two folders of one job, the one with its outputs (a published copy holds metadata only)
        if d.name not in unique or len(os.listdir(d)) > len(os.listdir(unique[d.name])):
            unique[d.name] = d
    return list(unique.values())


def _object(path: Path) -> dict[str, Any]:
    """A JSON object read from a run folder, naming the file on failure."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object")
    return data


def load_run(path: Path) -> Run:
    """Read config.json and, when the job is done, metrics.json, checking the schema's keys."""
    config = _object(path / "config.json")
    missing = [k for k in REQUIRED_CONFIG if k not in config]
    if missing:
        raise ValueError(f"{path / 'config.json'} lacks {', '.join(missing)} (written by an older harness?)")
    kind = str(config["kind"])
    metrics = _object(path / "metrics.json") if (path / "metrics.json").is_file() else None
    if metrics is not None:
        if metrics.get("kind", kind) != kind:
            raise ValueError(f"{path}: metrics.json kind {metrics.get('kind')!r} != config.json kind {kind!r}")
        missing = [k for k in REQUIRED.get(kind, ()) if k not in metrics]
        if missing:
            raise ValueError(f"{path / 'metrics.json'} lacks {', '.join(missing)}")
        for k in REQUIRED.get(kind, ()):
            if k in NUMBERS and not _numbers(metrics[k]):
                raise ValueError(f"{path / 'metrics.json'}: {k}={metrics[k]!r} is not a finite number (nor a list of "
                                 "them), so no table can show it: delete the run folder to redo its job")
    return Run(path, kind, str(config["name"]), config, metrics)


def _numbers(value: Any) -> bool:
    """Whether a metrics value is null, a finite number or a list of finite numbers (no NaN, no string)."""
    values = value if isinstance(value, list) else [value]
    return value is None or all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                                for v in values)


def done(runs: Iterable[Run], kind: str) -> list[Run]:
    """Finished runs of one kind, in the given order."""
    return [r for r in runs if r.kind == kind and r.metrics is not None]


def train_stats(run: Run) -> list[dict[str, Any]]:
    """The per-step records (those with a step and a loss) of a train run's stats.jsonl (Fig. 4)."""
    return [rec for rec in read_jsonl(run.path / "stats.jsonl") if "step" in rec and "loss" in rec]


def load_array(path: Path, ndim: int) -> np.ndarray:
    """A uint8 image array (grid.npy, decomposition.npy) with ``ndim`` dims ending in 3 channels."""
    a = np.load(path, allow_pickle=False)
    if a.dtype != np.uint8 or a.ndim != ndim or a.shape[-1] != 3:
        raise ValueError(f"{path}: expected uint8 with {ndim} dims ending in 3, got {a.dtype} {a.shape}")
    return a


# ----------------------------------------------------------------------------------------------------------------------
# Statistics over the runs of one setting


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (n - 1) over the runs of one setting."""

    mean: float
    std: float  # nan when n < 2
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        """Summarise the per-run values of one setting."""
        if not values:
            raise ValueError("Stat.of needs at least one value")
        std = statistics.stdev(values) if len(values) > 1 else math.nan
        return cls(statistics.fmean(values), std, len(values))


def _plural(n: int, word: str) -> str:
    """'1 training seed', '3 training seeds'."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def seeds_text(pairs: Sequence[SeedPair]) -> str:
    """What a spread is over: '3 training seeds x 1 sampling seed', or the seeds when they are not a full grid."""
    trains = sorted({t for t, _ in pairs if t is not None})
    samples = sorted({s for _, s in pairs})
    if not trains:
        return f"{_plural(len(samples), 'sampling seed')} (no training seed)"
    if len(pairs) == len(trains) * len(samples):
        return f"{_plural(len(trains), 'training seed')} x {_plural(len(samples), 'sampling seed')}"
    return f"{len(pairs)} runs over training seeds {trains} and sampling seeds {samples}"


def seeds_short(pairs: Sequence[SeedPair]) -> str:
    """'3 x 1' (training x sampling seeds), '- x 3' without a training seed, or the run count."""
    trains = {t for t, _ in pairs if t is not None}
    samples = {s for _, s in pairs}
    if len(pairs) == max(len(trains), 1) * len(samples):
        return f"{len(trains) if trains else '-'} x {len(samples)}"
    return f"{len(pairs)} runs"


def _frozen(v: Any) -> Any:
    """A hashable copy of a metrics value (lists become tuples, dicts sorted item tuples)."""
    if isinstance(v, list):
        return tuple(map(_frozen, v))
    if isinstance(v, dict):
        return tuple(sorted((k, _frozen(x)) for k, x in v.items()))
    return v


def order_key(v: Any) -> Any:
    """A sort key ordering None first, numbers numerically and strings alphabetically, also inside tuples."""
    if isinstance(v, tuple):
        return (2, tuple(map(order_key, v)))
    if v is None:
        return (0, 0.0, "")
    return (1, float(v), "") if isinstance(v, int | float) else (3, 0.0, str(v))


@dataclass
class Group:
    """Eval runs equal in every setting but their seeds, one run per (training seed, sampling seed); their numbers
    are read from the tidy table of every run (reports/frame.py)."""

    setting: dict[str, Any]
    runs: list[Run]
    table: pd.DataFrame  # the tidy table the runs are rows of (indexed by run folder name)
    duplicates: list[Run] = field(default_factory=list)  # further runs with the same seeds: left out
    _rows: tuple[tuple[str, ...], pd.DataFrame] | None = field(default=None, repr=False, compare=False)

    def values(self, key: str) -> dict[SeedPair, float]:
        """One metric per run that measured it, by (training seed, sampling seed), from the runs' table rows."""
        if key not in self.table.columns:
            return {}
        names = tuple(r.name for r in self.runs)
        if self._rows is None or self._rows[0] != names:  # the runs' rows, selected once while the runs stay
            self._rows = names, self.table.loc[list(names)]
        rows = self._rows[1]
        keep = rows[key].notna().to_numpy()
        return {(None if pd.isna(t) else int(t), int(s)): float(v)
                for t, s, v in zip(rows["train_seed"].to_numpy()[keep], rows["sample_seed"].to_numpy()[keep],
                                   rows[key].to_numpy()[keep], strict=True)}

    def stat(self, key: str) -> Stat | None:
        """Mean and std over runs of one metric; None when no run measured it."""
        values = list(self.values(key).values())
        return Stat.of(values) if values else None

    def arm(self, label: str, key: str = "fid") -> Arm:
        """This setting's per-run values of one metric, for paired comparisons (reports/claims.py)."""
        return Arm(label, self.values(key))

    @property
    def pairs(self) -> list[SeedPair]:
        """The (training seed, sampling seed) of every run."""
        return sorted((r.seeds for r in self.runs), key=order_key)

    @property
    def anchor(self) -> str | None:
        """None for a model, REAL_FLOOR for the floor row, CEILING for the ceiling row."""
        return self.setting.get("anchor")


def group_key(run: Run, extra: Mapping[str, Any] = {}) -> tuple[Any, ...]:  # noqa: B006 - read only
    """What makes runs one setting: every SETTING value a score run recorded, then the sweep point's settings that
    no run records (``extra``, e.g. a swept training key)."""
    assert run.metrics is not None
    return tuple(_frozen(run.metrics[k]) for k in SETTING) + tuple(sorted((k, _frozen(v)) for k, v in extra.items()))


def same_eval(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two settings were scored alike (dataset, features, sample and reference counts)."""
    return all(a[k] == b[k] for k in SAME_EVAL)


def anchor_group(groups: Sequence[Group], anchor: str, like: dict[str, Any] | None) -> Group | None:
    """The floor (REAL_FLOOR) or ceiling (CEILING) group scored like ``like``, preferring the most equal settings
    (Tables 1-5 anchor rows)."""
    found = [g for g in groups if g.anchor == anchor and (like is None or same_eval(g.setting, like))]
    if not found:
        return None
    return max(found, key=lambda g: sum(like is not None and g.setting[k] == like.get(k) for k in SETTING))


def group_index(groups: Sequence[Group]) -> dict[str, Group]:
    """The group of each eval run folder's name."""
    return {r.name: g for g in groups for r in g.runs}
