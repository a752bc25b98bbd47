"""Regenerate the paper's Tables 1-5, figures (Figs. 2, 4, 6-12 style) and claim verdicts from run folders (harness).

    python reports/build.py RUN_DIR... [--out DIR]

Each RUN_DIR is a run folder or a folder holding run folders. Only run-folder files are read (config.json,
metrics.json, stats.jsonl, decomposition.npy, grid.npy), never models. Writes ``report.md``, a self-contained
``report.html`` (figures embedded as data URIs, no network) and the figures as PNG files beside them. Points that were
not measured are shown as missing, never filled from the paper.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter

from msf.factorize import FACTORIZATIONS
from reports import paper
from reports.claims import RULES, Evidence, Stat, Timed, judge_all

MISSING = "—"
DECIMALS = {"fid": 2, "precision": 2, "recall": 2, "psnr": 2, "is_mean": 1}
SIGNIFICANT = 3  # every other number: parameters (M), GFLOPs, TFLOPs, seconds, losses
ROUNDING = (
    "Rounding: FID, precision, recall and PSNR (dB) to 2 decimals, IS to 1 decimal; parameters (M), GFLOPs, TFLOPs, "
    "seconds and losses to 3 significant digits. `mean ± std` is over seeds (sample std, n-1); a single seed shows "
    f"its value alone; {MISSING} marks a point that was not measured (never filled from the paper)."
)
PAPER_EVAL = "paper: Inception FID-5K (ADM evaluation) on ImageNet 256x256, 5K samples"
REQUIRED = {  # metrics.json keys the report reads, by kind (run-folder schema)
    "train": "model stage num_stages scale_size steps final_loss final_loss_ema100 params_m sec_per_step "
    "data_wait_frac".split(),
    "eval": "model preset dataset world feature_extractor n_samples n_ref seed factorization scales steps cfg "
    "cfg_convention solver fid is_mean is_std precision recall params_m gflops_per_image sample_time_per_64_s device "
    "dtype".split(),
    "recon": "factorization scales psnr_per_scale psnr_full".split(),
    "speed": "model params_m gflops_per_forward tflops_per_image steps cfg sec_per_image images_per_s matmul_tflops "
    "mfu batch device dtype method switches".split(),
}
SETTING = tuple(  # an eval group: nodes with all of these equal (everything but the seed and the measurements)
    "model preset dataset world feature_extractor n_samples n_ref factorization scales steps cfg cfg_convention solver "
    "device dtype conditioning".split()
)
CONTEXT = ("preset", "dataset", "world", "feature_extractor", "n_samples", "n_ref", "solver", "device", "dtype")
SAME_EVAL = ("preset", "dataset", "world", "feature_extractor", "n_samples")  # comparable FIDs across models
MAX_GRIDS, MAX_GRID_CLASSES, MAX_GRID_SAMPLES, MAX_DECOMP_IMAGES = 2, 16, 8, 2


# ----------------------------------------------------------------------------------------------------------------------
# Run folders


@dataclass(frozen=True)
class Run:
    """One run folder: its kind, node name and metrics (None while unfinished: no metrics.json yet) (harness)."""

    path: Path
    kind: str
    name: str
    metrics: dict[str, Any] | None


def _read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object, naming the file on failure (harness)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {path}: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object")
    return data


def find_run_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """Run folders (holding config.json) given as themselves or under a parent folder, not inside another (harness)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise ValueError(f"not a directory: {p}")
        dirs = [p] if (p / "config.json").is_file() else sorted(c.parent for c in p.rglob("config.json"))
        nested = set(dirs)
        dirs = [d for d in dirs if not nested.intersection(d.parents)]  # e.g. the saved autoencoder in its run
        if not dirs:
            raise ValueError(f"no run folder (config.json) in {p}")
        found += dirs
    return list(dict.fromkeys(d.resolve() for d in found))


def load_run(path: Path) -> Run:
    """Read config.json and, when the node is done, metrics.json with the schema's keys (harness)."""
    config = _read_json(path / "config.json")
    kind = config.get("kind")
    if not isinstance(kind, str):
        raise ValueError(f"{path / 'config.json'} has no 'kind'")
    metrics = _read_json(path / "metrics.json") if (path / "metrics.json").is_file() else None
    if metrics is not None:
        if metrics.get("kind", kind) != kind:
            raise ValueError(f"{path}: metrics.json kind {metrics.get('kind')!r} != config.json kind {kind!r}")
        missing = [k for k in REQUIRED.get(kind, ()) if k not in metrics]
        if missing:
            raise ValueError(f"{path / 'metrics.json'} lacks {', '.join(missing)}")
    return Run(path, kind, str(config.get("name", path.name)), metrics)


def done(runs: Sequence[Run], kind: str) -> list[Run]:
    """Finished runs of one kind, by folder (harness)."""
    return [r for r in runs if r.kind == kind and r.metrics is not None]


def train_stats(run: Run) -> list[dict[str, Any]]:
    """The per-step records (those with a loss) of a train node's stats.jsonl (harness)."""
    path = run.path / "stats.jsonl"
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [rec for rec in map(json.loads, filter(str.strip, lines)) if "step" in rec and "loss" in rec]


def load_array(path: Path, ndim: int) -> np.ndarray:
    """A uint8 image array (decomposition.npy, grid.npy) with ``ndim`` dims ending in 3 channels (harness)."""
    a = np.load(path, allow_pickle=False)
    if a.dtype != np.uint8 or a.ndim != ndim or a.shape[-1] != 3:
        raise ValueError(f"{path}: expected uint8 with {ndim} dims ending in 3, got {a.dtype} {a.shape}")
    return a


# ----------------------------------------------------------------------------------------------------------------------
# Eval groups: nodes equal in everything but the seed


def _order(v: Any) -> Any:
    """A sort key that orders numbers numerically and strings alphabetically, also inside tuples (harness)."""
    if isinstance(v, tuple):
        return tuple(map(_order, v))
    return (0, float(v), "") if isinstance(v, int | float) else (1, 0.0, str(v))


def _frozen(v: Any) -> Any:
    """A hashable copy of a metrics value (lists become tuples) (harness)."""
    return tuple(v) if isinstance(v, list) else v


@dataclass
class Group:
    """Eval nodes that differ only in their seed; statistics are mean and std over seeds (harness)."""

    setting: dict[str, Any]
    runs: list[Run]

    def stat(self, key: str) -> Stat | None:
        """Mean and std over seeds of one metric; None when no seed measured it (harness)."""
        values = [float(r.metrics[key]) for r in self.runs if r.metrics and r.metrics[key] is not None]
        return Stat.of(values) if values else None

    @property
    def seeds(self) -> list[int]:
        """The seeds of this setting (harness)."""
        return sorted(int(r.metrics["seed"]) for r in self.runs if r.metrics)


def setting_value(metrics: dict[str, Any], key: str) -> Any:
    """One setting of an eval; MSF evals written before the conditioning option was recorded used adaLN-Zero."""
    if key == "conditioning" and key not in metrics:
        return "adaln_zero" if metrics["model"] == "msf" else None
    return metrics[key]


def group_evals(runs: Sequence[Run]) -> list[Group]:
    """Finished eval nodes grouped by every setting but the seed, in a stable order (harness)."""
    groups: dict[tuple[Any, ...], list[Run]] = defaultdict(list)
    for r in done(runs, "eval"):
        assert r.metrics is not None
        groups[tuple(_frozen(setting_value(r.metrics, k)) for k in SETTING)].append(r)
    ordered = sorted(groups.items(), key=lambda kv: _order(kv[0]))
    return [Group(dict(zip(SETTING, key, strict=True)), rs) for key, rs in ordered]


def slash(values: Sequence[Any] | None, key: str = "") -> str:
    """Per-scale settings as '100/50' (CFG scales as '1.4/1.0'), MISSING when null (harness)."""
    if values is None:
        return MISSING
    return "/".join(_setting_label(v, key) if key == "cfg" and v != "·" else str(v) for v in values)


def setting_text(s: dict[str, Any]) -> str:
    """A short description of one eval setting: model, factorization, scales, steps, CFG, solver, preset (harness)."""
    parts = [s["model"], s["factorization"]] if s["model"] == "msf" else [s["model"]]
    parts += [s["conditioning"]] if s.get("conditioning") not in (None, "adaln_zero") else []
    parts += [
        f"scales {slash(s['scales'])}",
        f"steps {slash(s['steps'])}",
        f"cfg {slash(s['cfg'], 'cfg')}",
        s["solver"],
        f"{s['preset']} n={s['n_samples']}",
    ]
    return ", ".join(map(str, parts))


def describe(groups: Sequence[Group]) -> str:
    """The evaluation context of some groups (preset, dataset, features, samples, seeds) for a caption (harness)."""
    parts = [f"{k} {'/'.join(sorted({str(g.setting[k]) for g in groups}))}" for k in CONTEXT]
    seeds = sorted({s for g in groups for s in g.seeds})
    return "Ours: " + "; ".join(parts) + f"; seeds {', '.join(map(str, seeds))}."


# ----------------------------------------------------------------------------------------------------------------------
# Cells and tables


def fmt(x: float | None, key: str) -> str:
    """One number rounded as ROUNDING says, or MISSING (harness)."""
    if x is None or not math.isfinite(x):
        return MISSING
    if key in DECIMALS:
        return f"{x:.{DECIMALS[key]}f}"
    return np.format_float_positional(x, precision=SIGNIFICANT, fractional=False, trim="-")


def fmt_stat(st: Stat | None, key: str) -> str:
    """'mean ± std' over seeds, the value alone for one seed, or MISSING (harness)."""
    if st is None:
        return MISSING
    return fmt(st.mean, key) if st.n < 2 else f"{fmt(st.mean, key)} ± {fmt(st.std, key)}"


@dataclass
class Table:
    """A report table: id ('Table 2'), title, caption, header and cells as text (harness)."""

    id: str
    title: str
    caption: str
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Sweep:
    """One of Tables 2-5: which index of 'cfg' or 'steps' varies, and an optional fixed other index (Tables 2-5)."""

    table: int
    key: str
    index: int
    label: str
    fixed: tuple[int, float] | None = None


SWEEPS = (
    Sweep(2, "cfg", 0, "CFG scale 1", fixed=(1, 1.0)),
    Sweep(3, "cfg", 1, "CFG scale 2"),
    Sweep(4, "steps", 0, "steps scale 1"),
    Sweep(5, "steps", 1, "steps scale 2"),
)
TABLE_TEXT = {
    2: "FID vs the CFG scale of scale 1, scale 2's CFG fixed at 1.0",
    3: "FID vs the CFG scale of scale 2, scale 1's CFG fixed",
    4: "FID vs the sampling steps of scale 1, scale 2's steps fixed",
    5: "FID vs the sampling steps of scale 2, scale 1's steps fixed",
}


def _key(x: float) -> float:
    """A setting value as a dict key that matches the paper's printed settings (harness)."""
    return round(float(x), 6)


def sweep_series(groups: Sequence[Group], sw: Sweep) -> list[dict[float, Group]]:
    """Two-scale residual MSF groups equal in all but the swept setting, those with most points first (Tables 2-5)."""
    series: dict[tuple[Any, ...], dict[float, Group]] = defaultdict(dict)
    for g in groups:
        v = g.setting[sw.key]
        if g.setting["model"] != "msf" or g.setting["factorization"] != "residual" or v is None or len(v) != 2:
            continue
        if sw.fixed is not None and _key(v[sw.fixed[0]]) != _key(sw.fixed[1]):
            continue
        swept = v[: sw.index] + (None,) + v[sw.index + 1 :]
        rest = tuple((k, swept if k == sw.key else x) for k, x in g.setting.items())
        series[rest][_key(v[sw.index])] = g
    ranked = sorted(series.values(), key=len, reverse=True)
    return [s for s in ranked if len(s) >= 2] or ranked[:1]


def _setting_label(x: float, key: str) -> str:
    """A CFG scale with one decimal at least, a step count as an integer (harness)."""
    return str(int(x)) if key == "steps" else (f"{x:.1f}" if round(x, 1) == x else f"{x:g}")


def sweep_table(sw: Sweep, series: dict[float, Group], table_id: str) -> Table:
    """Tables 2-5 in the paper's layout (settings across), the paper's FID-5K above ours (Tables 2-5)."""
    published = {_key(x): y for x, y in paper.curve(sw.table).items()}
    xs = sorted(set(published) | set(series))
    rows = [
        ["paper FID-5K", *(fmt(published.get(x), "fid") for x in xs)],
        ["ours FID", *(fmt_stat(series[x].stat("fid"), "fid") if x in series else MISSING for x in xs)],
        ["ours seeds", *(str(len(series[x].runs)) if x in series else MISSING for x in xs)],
    ]
    caption = f"{PAPER_EVAL}. Not measured: all {MISSING}."
    if series:
        s = next(iter(series.values())).setting
        fixed = [*s[sw.key]]
        fixed[sw.index] = "·"
        other = "cfg" if sw.key == "steps" else "steps"
        caption = (
            f"{PAPER_EVAL}. Ours fixed: {sw.key} {slash(fixed, sw.key)}, {other} {slash(s[other], other)}, "
            f"scales {slash(s['scales'])}. {describe(list(series.values()))}"
        )
    return Table(table_id, TABLE_TEXT[sw.table], caption, [sw.label, *(_setting_label(x, sw.key) for x in xs)], rows)


PER_SETTING = ("params_m", "gflops_per_image")  # equal for every seed: shown without a std


def _mean(st: Stat | None) -> float | None:
    """The mean of a statistic, None when unmeasured (harness)."""
    return None if st is None else st.mean


TABLE1_OURS = (
    ("params_m", "Para ours (M)"),
    ("fid", "FID ours"),
    ("is_mean", "IS ours"),
    ("precision", "Pre ours"),
    ("recall", "Rec ours"),
    ("sample_time_per_64_s", "Time ours (s/64 img)"),
    ("gflops_per_image", "GFLOPs/img ours"),
)


def table1_row(g: Group) -> str | None:
    """The paper's Table 1 row that a measured setting reproduces, if any (Table 1)."""
    s = g.setting
    if s["model"] == "dit_xl2":
        return "DiT-XL/2 [38]"
    cfg: Sequence[float] = s["cfg"] or ()
    paper_model = s["model"] == "msf" and s["factorization"] == "residual" and s["conditioning"] == "adaln_zero"
    if paper_model and len(cfg) == 2 and _key(cfg[1]) == 1.0:
        return {1.4: "MSF(cfg=1.4)", 1.5: "MSF(cfg=1.5)"}.get(_key(cfg[0]))
    return None


def _table1_ours(g: Group) -> list[str]:
    """Our cells of one Table 1 row: setting, measured metrics, device, dtype, seeds (Table 1)."""
    ours = [fmt_stat(g.stat(k), k) if k not in PER_SETTING else fmt(_mean(g.stat(k)), k) for k, _ in TABLE1_OURS]
    seeds = ",".join(map(str, g.seeds))
    return [setting_text(g.setting), *ours, str(g.setting["device"]), str(g.setting["dtype"]), seeds]


def table1(groups: Sequence[Group]) -> Table:
    """Table 1: the paper's rows, each measured setting beside the row it reproduces, then our other models."""
    header = [
        "Model",
        "Setting",
        *(f"{c} paper" for c in paper.TABLE1_COLUMNS[:-1]),
        "Time paper (A800, batch 64)",
        *(label for _, label in TABLE1_OURS),
        "Device",
        "Dtype",
        "Seeds",
    ]
    matched: dict[str | None, list[Group]] = defaultdict(list)
    for g in groups:
        if g.setting["model"] != "msf" or table1_row(g) is not None:
            matched[table1_row(g)].append(g)
    rows = []
    for name in paper.table1_rows():
        printed = [paper.table1_cell(name, c).printed for c in paper.TABLE1_COLUMNS]
        ours = [_table1_ours(g) for g in matched.get(name, [])] or [[MISSING] * (len(TABLE1_OURS) + 4)]
        rows += [[name, *o[:1], *printed, *o[1:]] for o in ours]
    for g in matched.get(None, []):
        cells = _table1_ours(g)
        rows.append([f"{g.setting['model']} (ours)", cells[0], *[MISSING] * len(paper.TABLE1_COLUMNS), *cells[1:]])
    measured = [g for gs in matched.values() for g in gs]
    caption = (
        f"Paper: ImageNet 256x256, 50K samples, ADM's Inception evaluation; Para as printed; Time as printed (A800, "
        f"batch 64). Our MSF rows: residual factorization at the paper's CFG (1.4 or 1.5, then 1.0), every step "
        f"setting measured; time is sampling time per 64 images. {describe(measured) if measured else 'Ours: none.'}"
    )
    return Table("Table 1", "Class-conditional generation: the paper's comparison and ours", caption, header, rows)


def _factorization_order(r: Run) -> tuple[int, str]:
    """Recon nodes in the order of msf.factorize.FACTORIZATIONS, unknown names last (Fig. 2)."""
    name = (r.metrics or {})["factorization"]
    return (FACTORIZATIONS.index(name) if name in FACTORIZATIONS else len(FACTORIZATIONS), name)


def factorization_tables(runs: Sequence[Run], groups: Sequence[Group]) -> tuple[Table, Table, dict[str, Group]]:
    """Factorizations compared: reconstruction PSNR per scale (Fig. 2) and generation FID (Sec. 3.2) (harness)."""
    recons = sorted(done(runs, "recon"), key=_factorization_order)
    n_scales = max((len(r.metrics["scales"]) for r in recons if r.metrics), default=0)
    rows = []
    for r in recons:
        m = r.metrics or {}
        psnr = [
            fmt(m["psnr_per_scale"][i], "psnr") if i < len(m["psnr_per_scale"]) else MISSING for i in range(n_scales)
        ]
        rows.append([m["factorization"], slash(m["scales"]), *psnr, fmt(m["psnr_full"], "psnr")])
    recon = Table(
        "Table F1",
        "Factorizations: PSNR (dB) of the image decoded from the latent accumulated up to each scale (Fig. 2)",
        "The paper shows Fig. 2 qualitatively (no published numbers).",
        ["Factorization", "Scales", *(f"PSNR scale {i}" for i in range(n_scales)), "PSNR full"],
        rows,
    )
    series: dict[tuple[Any, ...], dict[str, Group]] = defaultdict(dict)
    for g in groups:
        if g.setting["model"] == "msf":
            series[tuple((k, v) for k, v in g.setting.items() if k != "factorization")][g.setting["factorization"]] = g
    best = max((s for s in series.values() if len(s) >= 2), key=len, default={})
    names = [*FACTORIZATIONS, *sorted(set(best) - set(FACTORIZATIONS))]
    rows = [
        [
            n,
            fmt_stat(best[n].stat("fid"), "fid") if n in best else MISSING,
            fmt_stat(best[n].stat("is_mean"), "is_mean") if n in best else MISSING,
            str(len(best[n].runs)) if n in best else MISSING,
        ]
        for n in names
    ]
    caption = f"No published numbers. No eval with two factorizations at equal settings: all {MISSING}."
    if best:
        common = {**next(iter(best.values())).setting, "factorization": "·"}
        caption = f"No published numbers. Fixed: {setting_text(common)}. {describe(list(best.values()))}"
    fid = Table(
        "Table F2",
        "Factorizations: generation FID at otherwise equal settings (Sec. 3.2)",
        caption,
        ["Factorization", "FID ours", "IS ours", "Seeds"],
        rows,
    )
    return recon, fid, best


def _base_and_rest(g: Group) -> tuple[Any, ...] | None:
    """(cfg, steps) of the base scale and of the residual scales when every residual scale shares them (harness)."""
    cfg, steps = g.setting["cfg"] or [], g.setting["steps"] or []
    if len(cfg) != len(steps) or len(cfg) < 2 or len({*map(_key, cfg[1:])}) > 1 or len(set(steps[1:])) > 1:
        return None
    return _key(cfg[0]), steps[0], _key(cfg[1]), steps[1]


def resolution_table(groups: Sequence[Group]) -> Table:
    """Scale resolutions compared: base size and scale count at an otherwise equal setting (Sec. 3.1, 4.1) (harness).

    Groups differing only in their scales (the per-scale CFG and steps written as base / every residual scale) form a
    series; the series with the most scale lists is shown.
    """
    series: dict[tuple[Any, ...], dict[tuple[int, ...], Group]] = defaultdict(dict)
    for g in groups:
        pattern = _base_and_rest(g)
        if g.setting["model"] == "msf" and pattern is not None:
            rest = tuple(_frozen(v) for k, v in g.setting.items() if k not in ("scales", "cfg", "steps"))
            series[(*rest, *pattern)][tuple(g.setting["scales"])] = g
    best = max((s for s in series.values() if len(s) >= 2), key=len, default={})
    rows = [
        [
            slash(scales),
            str(len(scales)),
            f"{scales[0] / scales[-1]:.3g}",
            fmt_stat(g.stat("fid"), "fid"),
            fmt_stat(g.stat("is_mean"), "is_mean"),
            fmt(_mean(g.stat("params_m")), "params_m"),
            fmt(_mean(g.stat("gflops_per_image")), "gflops"),
            str(len(g.runs)),
        ]
        for scales, g in sorted(best.items(), key=lambda kv: (len(kv[0]), kv[0]))
    ]
    caption = f"No published numbers (the paper uses a 192 px base for 256 px). No series: all {MISSING}."
    if best:
        g0 = next(iter(best.values()))
        cfg0, steps0, cfg1, steps1 = _base_and_rest(g0) or ()
        caption = (
            f"No published numbers (the paper uses a 192 px base for 256 px). Fixed: {g0.setting['factorization']}, "
            f"base scale cfg {cfg0} and {steps0} steps, every residual scale cfg {cfg1} and {steps1} steps. "
            f"{describe(list(best.values()))}"
        )
    header = [
        "Scales (latent sizes)",
        "Scales",
        "Base / full",
        "FID ours",
        "IS ours",
        "Params (M)",
        "GFLOPs/img",
        "Seeds",
    ]
    return Table("Table R1", "Scale resolutions: base size and number of scales (Sec. 3.1)", caption, header, rows)


def conditioning_table(groups: Sequence[Group]) -> Table:
    """MSF stages with adaLN-Zero (DiT, the paper) vs TD-LN (DiMR) blocks at an otherwise equal setting (harness)."""
    series: dict[tuple[Any, ...], dict[str, Group]] = defaultdict(dict)
    for g in groups:
        if g.setting["model"] == "msf":
            rest = tuple(_frozen(v) for k, v in g.setting.items() if k != "conditioning")
            series[rest][str(g.setting["conditioning"])] = g
    best = max((s for s in series.values() if len(s) >= 2), key=len, default={})
    rows = [
        [
            name,
            fmt(_mean(g.stat("params_m")), "params_m"),
            fmt(_mean(g.stat("gflops_per_image")), "gflops"),
            fmt_stat(g.stat("fid"), "fid"),
            fmt_stat(g.stat("is_mean"), "is_mean"),
            str(len(g.runs)),
        ]
        for name, g in sorted(best.items())
    ]
    caption = f"No published numbers. No eval with both conditionings at equal settings: all {MISSING}."
    if best:
        common = {**next(iter(best.values())).setting}
        caption = f"No published numbers. Fixed: {setting_text(common)}. {describe(list(best.values()))}"
    header = ["Conditioning", "Params (M)", "GFLOPs/img", "FID ours", "IS ours", "Seeds"]
    return Table("Table C1", "Stage conditioning: adaLN-Zero (DiT) vs TD-LN (DiMR)", caption, header, rows)


def speed_table(runs: Sequence[Run]) -> Table:
    """Counted FLOPs, measured speed and FLOP utilisation per model from speed nodes (Table 1 'Time', Sec. 4.2)."""
    rows: list[list[str]] = []
    by_model: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(done(runs, "speed"), key=lambda r: r.name):
        m = r.metrics or {}
        by_model.setdefault(m["model"], []).append(m)
        switches = ", ".join(f"{k}={v}" for k, v in sorted((m["switches"] or {}).items())) or MISSING
        rows.append(
            [
                r.name,
                m["model"],
                fmt(m["params_m"], "params_m"),
                " + ".join(f"{n}x{w:g}" for n, w in zip(m["steps"], m["cfg"], strict=True)),
                "/".join(fmt(x, "gflops") for x in m["gflops_per_forward"] or []) or MISSING,
                fmt(m["tflops_per_image"], "tflops"),
                fmt(m["sec_per_image"], "s"),
                fmt(64 * m["sec_per_image"], "s"),
                fmt(m["images_per_s"], "img/s"),
                fmt(m["matmul_tflops"], "tflops"),
                fmt(100 * m["mfu"], "mfu"),
                str(m["batch"]),
                str(m["method"]),
                str(m["device"]),
                str(m["dtype"]),
                switches,
            ]
        )
    header = ["Node", "Model", "Params (M)", "Steps x CFG", "GFLOPs/forward per stage", "TFLOPs/img", "s/img",
              "s/64 img", "img/s", "Matmul TFLOP/s", "MFU (%)", "Batch", "Method", "Device", "Dtype", "Switches"]
    caption = ("s/64 img = 64 x s/img; MFU = (TFLOPs/img / s/img) / the matmul rate measured on the same device and "
               "dtype. The paper: DiT-XL/2 145, MSF 68 (Table 1 'Time', A800, batch 64).")
    pairs = [(a, b) for a in by_model.get("msf", []) for b in by_model.get("dit_xl2", [])
             if all(a[k] == b[k] for k in ("device", "dtype", "batch", "method", "switches"))]
    for a, b in pairs:
        caption += (f" MSF vs DiT-XL/2 on {a['device']}, {a['dtype']}, batch {a['batch']}: "
                    f"{b['sec_per_image'] / a['sec_per_image']:.2f}x faster, "
                    f"{b['tflops_per_image'] / a['tflops_per_image']:.2f}x fewer FLOPs per image.")
    return Table("Table S1", "Sampling speed (speed nodes)", caption, header, rows)


def train_table(runs: Sequence[Run]) -> Table:
    """Per-stage training summary from train nodes (Sec. 4.1, Fig. 4)."""
    rows = []
    for r in sorted(done(runs, "train"), key=lambda r: (r.metrics or {}).get("stage", 0)):
        m = r.metrics or {}
        rows.append(
            [
                r.name,
                m["model"],
                str(m["stage"]),
                str(m["scale_size"]),
                str(m["steps"]),
                fmt(m["final_loss"], "loss"),
                fmt(m["final_loss_ema100"], "loss"),
                fmt(m["params_m"], "params_m"),
                fmt(m["sec_per_step"], "s"),
                fmt(m["data_wait_frac"], "frac"),
            ]
        )
    header = [
        "Node",
        "Model",
        "Stage",
        "Scale size",
        "Steps",
        "Final loss",
        "Final loss (EMA 100)",
        "Params (M)",
        "s/step",
        "Data wait fraction",
    ]
    caption = "The paper trains scale 1 for 400k and scale 2 for 250k iterations at batch 2560 (Sec. 4.1)."
    return Table("Table T1", "Training (train nodes)", caption, header, rows)


# ----------------------------------------------------------------------------------------------------------------------
# Figures (matplotlib's object API with the Agg canvas: no global backend state)


@dataclass(frozen=True)
class Plot:
    """A figure written beside the report (harness)."""

    name: str
    title: str
    path: Path


def _save(fig: Figure, out_dir: Path, name: str, title: str) -> Plot:
    """Write a figure as PNG (harness)."""
    path = out_dir / f"{name}.png"
    fig.savefig(path, dpi=80)
    return Plot(name, title, path)


def _sweep_axes(ax: Axes, sw: Sweep, series: dict[float, Group]) -> None:
    """The paper's curve (left axis) and ours with seed std (right axis) of one of Tables 2-5 (Tables 2-5)."""
    published = paper.curve(sw.table)
    lines = ax.plot(list(published), list(published.values()), "o--", color="0.5", label="paper")
    ax.set_ylabel("paper: Inception FID-5K, ImageNet 256")
    ax.set_xlabel(sw.label + (" (DiT convention: 1 = no guidance)" if sw.key == "cfg" else ""))
    ax.set_title(f"Table {sw.table}")
    if sw.key == "steps":
        ax.set_xscale("log")
    stats = {x: st for x, g in sorted(series.items()) if (st := g.stat("fid")) is not None}
    if stats:
        s = next(iter(series.values())).setting
        ours = ax.twinx()
        bars = ours.errorbar(
            list(stats),
            [st.mean for st in stats.values()],
            capsize=3,
            color="C0",
            fmt="s-",
            yerr=[0.0 if st.n < 2 else st.std for st in stats.values()],
        )
        ours.set_ylabel(f"ours: FID ({s['feature_extractor']}, {s['world']}, {s['dataset']}, n={s['n_samples']})")
        ours.legend([lines[0], bars], ["paper", "ours (mean ± seed std)"], loc="upper center")
    else:
        ax.text(0.5, 0.8, "ours: not measured", transform=ax.transAxes, ha="center")
        ax.legend(loc="upper center")


def plot_sweeps(
    name: str,
    sweeps: Sequence[Sweep],
    series: dict[int, dict[float, Group]],
    out_dir: Path,
) -> Plot | None:
    """FID vs CFG (Tables 2, 3) or vs steps (Tables 4, 5): paper and ours on one plot per scale (Tables 2-5)."""
    if not any(series.get(sw.table) for sw in sweeps):
        return None
    fig = Figure(figsize=(6 * len(sweeps), 4.2), layout="constrained")
    for ax, sw in zip(fig.subplots(1, len(sweeps), squeeze=False)[0], sweeps, strict=True):
        _sweep_axes(ax, sw, series.get(sw.table, {}))
    what = "CFG" if sweeps[0].key == "cfg" else "sampling steps"
    return _save(
        fig,
        out_dir,
        name,
        f"FID vs {what} per scale, paper and ours (Tables {sweeps[0].table}-{sweeps[-1].table}); error bars: seed std",
    )


def plot_loss(runs: Sequence[Run], out_dir: Path) -> Plot | None:
    """Training loss per scale from train nodes' stats.jsonl, raw and EMA-smoothed (Fig. 4)."""
    curves = [(r, train_stats(r)) for r in sorted(done(runs, "train"), key=lambda r: (r.metrics or {})["stage"])]
    curves = [(r, recs) for r, recs in curves if recs]
    if not curves:
        return None
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    for i, (r, recs) in enumerate(curves):
        step = np.array([rec["step"] for rec in recs], dtype=np.float64)
        loss = np.array([rec["loss"] for rec in recs], dtype=np.float64)
        ema = pd.Series(loss).ewm(span=100).mean().to_numpy()  # bias-corrected EMA, span 100
        ax.plot(step, loss, color=f"C{i}", alpha=0.25, lw=0.8)
        ax.plot(step, ema, color=f"C{i}", label=f"stage {(r.metrics or {})['stage']} ({r.name})")
    ax.set(xlabel="training step", ylabel="flow-matching loss (Eq. 5)", yscale="log")
    ax.legend()
    return _save(fig, out_dir, "fig_loss", "Training loss per scale (Fig. 4): faint raw, solid EMA (span 100)")


def plot_decomposition(runs: Sequence[Run], out_dir: Path) -> Plot | None:
    """Images decoded from the latent accumulated up to each scale, per factorization (Fig. 2)."""
    recons = [r for r in done(runs, "recon") if (r.path / "decomposition.npy").is_file()]
    if not recons:
        return None
    recons.sort(key=_factorization_order)
    arrays = [load_array(r.path / "decomposition.npy", 5)[:MAX_DECOMP_IMAGES] for r in recons]  # [n, S, H, W, 3]
    rows, cols = sum(len(a) for a in arrays), max(a.shape[1] for a in arrays)
    fig = Figure(figsize=(2.2 * cols, 2.2 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    row = 0
    for r, a in zip(recons, arrays, strict=True):
        m = r.metrics or {}
        for j, image in enumerate(a):
            for i, decoded in enumerate(image):
                ax = axes[row, i]
                ax.imshow(decoded)
                psnr = m["psnr_per_scale"][i] if i < len(m["psnr_per_scale"]) else None
                ax.set_title(
                    f"{m['factorization']} #{j}\nscale {i} ({m['scales'][i]}), {fmt(psnr, 'psnr')} dB", fontsize=8
                )
            row += 1
    return _save(
        fig,
        out_dir,
        "fig_decomposition",
        "Multi-scale decomposition decoded per scale, per factorization (Fig. 2; PSNR vs the original image)",
    )


def mosaic(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[classes, k, H, W, 3] -> one image, classes down and samples across (a subset of both) (harness)."""
    classes = np.unique(np.linspace(0, grid.shape[0] - 1, min(grid.shape[0], MAX_GRID_CLASSES)).round().astype(int))
    g = grid[classes, :MAX_GRID_SAMPLES]  # [c, k, H, W, 3]
    c, k, h, w, _ = g.shape
    return g.transpose(0, 2, 1, 3, 4).reshape(c * h, k * w, 3), classes


def plot_grids(runs: Sequence[Run], out_dir: Path) -> list[Plot]:
    """Samples per class from eval nodes' grid.npy (Figs. 6-12 style)."""
    plots = []
    evals = [r for r in done(runs, "eval") if (r.path / "grid.npy").is_file()]
    for n, r in enumerate(sorted(evals, key=lambda r: r.name)[:MAX_GRIDS]):
        image, classes = mosaic(load_array(r.path / "grid.npy", 5))
        h = image.shape[0] // len(classes)
        fig = Figure(figsize=(1.2 * image.shape[1] / h + 1.2, 1.2 * len(classes) + 0.6), layout="constrained")
        ax = fig.subplots()
        ax.imshow(image)
        ax.set_yticks((np.arange(len(classes)) + 0.5) * h, [f"class {c}" for c in classes], fontsize=7)
        ax.set_xticks([])
        m = r.metrics or {}
        setting = {k: _frozen(setting_value(m, k)) for k in SETTING}
        ax.set_title(f"{setting_text(setting)}, seed {m['seed']}", fontsize=8)
        plots.append(_save(fig, out_dir, f"fig_grid_{n}", f"Samples per class ({r.name}; Figs. 6-12 style)"))
    return plots


def plot_compute(groups: Sequence[Group], out_dir: Path) -> Plot | None:
    """Quality vs compute: FID against GFLOPs per image and sampling time per 64 images (Table 1, Sec. 4.2)."""
    axes_keys = (("gflops_per_image", "GFLOPs per image"), ("sample_time_per_64_s", "sampling time per 64 images (s)"))
    points = [(g, g.stat("fid")) for g in groups]
    if not any(st and any(g.stat(k) for k, _ in axes_keys) for g, st in points):
        return None
    models = sorted({g.setting["model"] for g in groups})
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    for ax, (key, label) in zip(fig.subplots(1, 2), axes_keys, strict=True):
        for g, st in points:
            x = g.stat(key)
            if st is None or x is None:
                continue
            color = f"C{models.index(g.setting['model'])}"
            ax.errorbar(x.mean, st.mean, yerr=0.0 if st.n < 2 else st.std, fmt="o", color=color, capsize=3)
        for i, model in enumerate(models):
            ax.plot([], [], "o", color=f"C{i}", label=model)
        features = "/".join(sorted({f"{g.setting['feature_extractor']}, {g.setting['world']}" for g in groups}))
        ax.set(xlabel=label, ylabel=f"FID ({features})", xscale="log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.legend()
    return _save(
        fig,
        out_dir,
        "fig_compute",
        "Quality vs compute: FID against GFLOPs per image and sampling time "
        "(one point per setting, error bars: seed std)",
    )


# ----------------------------------------------------------------------------------------------------------------------
# Claims evidence


def speed_pair(groups: Sequence[Group]) -> tuple[Timed, Timed] | None:
    """MSF at the paper's CFG vs DiT-XL/2 (else the flow DiT) evaluated alike, MSF's best FID first (Table 1)."""
    timed = sorted((t for g in groups if (t := _timed(g)) is not None), key=lambda t: t[1].fid.mean)
    msf = [(g, t) for g, t in timed if table1_row(g) == "MSF(cfg=1.4)"]
    for model in ("dit_xl2", "dit_flow"):
        for m, tm in msf:
            bases = [
                tb
                for b, tb in timed
                if b.setting["model"] == model and all(b.setting[k] == m.setting[k] for k in SAME_EVAL)
            ]
            if bases:
                return tm, bases[0]
    return None


def _timed(g: Group) -> tuple[Group, Timed] | None:
    """A group with its FID and time per 64 images, if both were measured (Table 1)."""
    fid, time = g.stat("fid"), g.stat("sample_time_per_64_s")
    if fid is None or time is None:
        return None
    return g, Timed(setting_text(g.setting), fid, time, str(g.setting["device"]), str(g.setting["dtype"]))


def evidence(
    runs: Sequence[Run],
    groups: Sequence[Group],
    series: dict[int, dict[float, Group]],
    factorizations: dict[str, Group],
) -> Evidence:
    """Collect what the claims are judged on (Secs. 3.2, 4.1, 4.2, 5)."""

    def fids(s: dict[Any, Group]) -> dict[Any, Stat]:
        return {x: st for x, g in s.items() if (st := g.stat("fid")) is not None}

    stage_loss: dict[int, list[float]] = defaultdict(list)
    for r in done(runs, "train"):
        m = r.metrics or {}
        if m["model"] == "msf" and m["num_stages"] == 2 and m["final_loss_ema100"] is not None:
            stage_loss[int(m["stage"])].append(float(m["final_loss_ema100"]))
    return Evidence(
        cfg_scale1=fids(series.get(2, {})),
        cfg_scale2=fids(series.get(3, {})),
        steps_scale1=fids(series.get(4, {})),
        steps_scale2=fids(series.get(5, {})),
        factorization_fid=fids(factorizations),
        stage_loss=dict(stage_loss),
        speed=speed_pair(groups),
        paper_range_cfg_scale2=paper.curve_range(3),
        paper_range_steps_scale2=paper.curve_range(5),
    )


# ----------------------------------------------------------------------------------------------------------------------
# Rendering: one list of sections, written as Markdown and as self-contained HTML

Block = str | Table | Plot


def md_table(t: Table) -> str:
    """A table as a Markdown pipe table under its bold id, title and caption (harness)."""

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "/") for c in cells) + " |"

    body = [line(t.header), "|" + "|".join("---" for _ in t.header) + "|", *map(line, t.rows)]
    return f"**{t.id}.** {t.title}. {t.caption}\n\n" + "\n".join(body)


def md_block(b: Block) -> str:
    """One block as Markdown; a figure links its PNG file beside the report (harness)."""
    if isinstance(b, Table):
        return md_table(b)
    if isinstance(b, Plot):
        return f"![{b.title}]({b.path.name})\n\n*{b.name}: {b.title}*"
    return b


def render_md(title: str, sections: Sequence[tuple[str, list[Block]]]) -> str:
    """The whole report as Markdown (harness)."""
    out = [f"# {title}"]
    for heading, blocks in sections:
        out += [f"## {heading}", *map(md_block, blocks)]
    return "\n\n".join(out) + "\n"


CSS = (
    "body{font-family:sans-serif;margin:1.5em;color:#111}table{border-collapse:collapse;margin:.4em 0 1.2em}"
    "td,th{border:1px solid #aaa;padding:2px 6px;font-size:12px;text-align:left}th{background:#eee}"
    "img{max-width:100%;border:1px solid #ddd}figcaption,.cap{font-size:13px;color:#333}"
)


def html_block(b: Block) -> str:
    """One block as HTML; figures embedded as base64 PNG data URIs (harness)."""
    esc = html.escape
    if isinstance(b, Plot):
        data = base64.b64encode(b.path.read_bytes()).decode("ascii")
        return (
            f'<figure><img alt="{esc(b.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{esc(b.name)} ({esc(b.path.name)}): {esc(b.title)}</figcaption></figure>"
        )
    if isinstance(b, Table):
        head = "".join(f"<th>{esc(c)}</th>" for c in b.header)
        body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in b.rows)
        return (
            f'<p class="cap"><b>{esc(b.id)}.</b> {esc(b.title)}. {esc(b.caption)}</p>'
            f"<table><tr>{head}</tr>{body}</table>"
        )
    return f"<p>{esc(b).replace('`', '')}</p>"


def render_html(title: str, sections: Sequence[tuple[str, list[Block]]]) -> str:
    """The whole report as one HTML file with no external resources (harness)."""
    body = "".join(f"<h2>{html.escape(h)}</h2>" + "".join(map(html_block, blocks)) for h, blocks in sections)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n"
    )


def _write(path: Path, text: str) -> None:
    """Write a file atomically (tmp + replace) (harness)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------------------------------
# Entry points


def inventory(runs: Sequence[Run]) -> list[Block]:
    """What was read: finished nodes per kind and the unfinished ones (harness)."""
    kinds = sorted({r.kind for r in runs})
    counts = ", ".join(f"{k} {len(done(runs, k))}" for k in kinds)
    unfinished = [r.name for r in runs if r.metrics is None]
    return [
        f"Run folders read: {len(runs)}; finished by kind: {counts or 'none'}.",
        f"Unfinished (no metrics.json yet, left out): {', '.join(unfinished) or 'none'}.",
        ROUNDING,
    ]


def build_report(run_dirs: Sequence[str | Path], out_dir: str | Path, title: str | None = None) -> dict[str, Any]:
    """Read run folders and write report.md, report.html and the figures into out_dir (harness).

    Args:
        run_dirs: run folders, or folders holding run folders.
        out_dir: where report.md, report.html and the PNG figures go (created if needed).
        title: the report's title; by default names the presets found.

    Returns:
        {"markdown", "html": paths, "figures": {name: path}, "missing_figures": {name: reason}, "tables": [ids],
         "claims": [{"claim", "evidence", "verdict"}], "runs": number of run folders read}.
    """
    runs = [load_run(d) for d in find_run_dirs(run_dirs)]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("fig_*.png"):  # figures of an earlier build whose data may be gone
        stale.unlink()
    groups = group_evals(runs)
    presets = sorted({str(g.setting["preset"]) for g in groups})
    title = title or f"MSF reproduction report ({', '.join(presets) or 'no eval'})"

    sweep_tables, series = [], {}
    for sw in SWEEPS:
        found = sweep_series(groups, sw)
        series[sw.table] = found[0] if found else {}
        for i, s in enumerate(found or [{}]):
            sweep_tables.append(sweep_table(sw, s, f"Table {sw.table}" + ("" if i == 0 else chr(ord("a") + i))))
    recon_t, fact_t, fact = factorization_tables(runs, groups)
    tables = [
        table1(groups),
        *sweep_tables,
        fact_t,
        recon_t,
        resolution_table(groups),
        conditioning_table(groups),
        speed_table(runs),
        train_table(runs),
    ]

    wanted: dict[str, tuple[Plot | None, str]] = {
        "fig_cfg": (plot_sweeps("fig_cfg", SWEEPS[:2], series, out), "no MSF eval for Tables 2-3"),
        "fig_steps": (plot_sweeps("fig_steps", SWEEPS[2:], series, out), "no MSF eval for Tables 4-5"),
        "fig_loss": (plot_loss(runs, out), "no train node with stats.jsonl"),
        "fig_decomposition": (plot_decomposition(runs, out), "no recon node with decomposition.npy"),
        "fig_compute": (plot_compute(groups, out), "no eval with FID and GFLOPs or sampling time"),
    }
    grids = plot_grids(runs, out)
    plots = [p for p, _ in wanted.values() if p is not None] + grids
    missing = {name: why for name, (p, why) in wanted.items() if p is None}
    if not grids:
        missing["fig_grid"] = "no eval with grid.npy"

    verdicts = judge_all(evidence(runs, groups, series, fact))
    claims = Table(
        "Claims",
        "Each claim of the paper, our evidence at this preset and a verdict",
        "Rules below. Our FIDs may use another feature extractor, dataset and sample count than the "
        "paper's Inception FID-5K: only differences within our runs are judged.",
        ["Claim", "Evidence", "Verdict"],
        [[v.claim, v.evidence, v.verdict] for v in verdicts],
    )
    sections: list[tuple[str, list[Block]]] = [
        ("Runs", inventory(runs)),
        ("Claims", [claims, *(f"Rule {i}: {rule}" for i, rule in enumerate(RULES, 1))]),
        ("Tables", list(tables)),
        (
            "Figures",
            [
                *plots,
                "Not produced (data absent): " + (", ".join(f"{k} ({v})" for k, v in missing.items()) or "none") + ".",
            ],
        ),
    ]
    _write(out / "report.md", render_md(title, sections))
    _write(out / "report.html", render_html(title, sections))
    return {
        "markdown": out / "report.md",
        "html": out / "report.html",
        "figures": {p.name: p.path for p in plots},
        "missing_figures": missing,
        "tables": [t.id for t in tables] + ["Claims"],
        "claims": [asdict(v) for v in verdicts],
        "runs": len(runs),
    }


def default_out(run_dirs: Sequence[str | Path]) -> Path:
    """report/ beside the run folders: under the deepest folder holding all of them (harness)."""
    parents = [d.parent for d in find_run_dirs(run_dirs)]
    return Path(os.path.commonpath(parents)) / "report"


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: python reports/build.py RUN_DIR... [--out DIR] [--title TEXT] (harness)."""
    parser = argparse.ArgumentParser(description="Build the MSF report (Tables 1-5, figures, claims) from run folders.")
    parser.add_argument("run_dirs", nargs="+", help="run folders, or folders holding run folders")
    parser.add_argument("--out", help="output folder (default: report/ beside the run folders)")
    parser.add_argument("--title", help="report title")
    args = parser.parse_args(argv)
    try:
        result = build_report(args.run_dirs, args.out or default_out(args.run_dirs), args.title)
    except ValueError as e:
        parser.error(str(e))
    missing = ", ".join(result["missing_figures"]) or "none"
    print(
        f"wrote {result['markdown']} and {result['html']} from {result['runs']} run folders; "
        f"{len(result['figures'])} figures, missing: {missing}"
    )


if __name__ == "__main__":
    main()
