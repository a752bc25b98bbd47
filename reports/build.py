"""Regenerate the paper's Tables 1-5, figures (Figs. 2, 4, 6-12 style) and claim verdicts from run folders.

    python reports/build.py RUN_DIR... [--out DIR] [--title TEXT] [--stand-in DIR]

Each RUN_DIR is a run folder or a folder holding run folders and the sweep manifests the planner wrote
(``_sweeps/*.json``: which runs make which table). Only those files are read (config.json, metrics.json,
stats.jsonl, decomposition.npy, grid.npy), never models, never the runner's configuration code; a run folder whose
config.json does not hash to its key is left out and named. Writes ``report.md``, a self-contained ``report.html``
(figures embedded as data URIs, no network) and the figures as PNG files beside them. Points that were not measured
are shown as missing, never filled from the paper.

The package: runs.py (run folders, groups of runs), sweeps.py (manifests -> tables), claims.py (verdict rules),
paper.py (the paper's values), tables.py, figures.py, summary.py, render.py (Markdown / HTML), this file (what goes
where), publish.py (committing a reproduction).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, NoReturn

import pandas as pd

if __package__ in (None, ""):  # as a script: the repository root on the path, not reports/ (tables.py, ...)
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from ablations.engine.io import write_text  # noqa: E402
from ablations.engine.runfolder import spec_problems  # noqa: E402
from reports import paper  # noqa: E402
from reports.claims import RULES, Evidence, LossPair, Timed, compare_trends, judge_all, trend  # noqa: E402
from reports.figures import (  # noqa: E402
    Plot,
    plot_compute,
    plot_grids,
    plot_loss,
    plot_recon_decomposition,
    plot_sample_decomposition,
    sweep_figures,
)
from reports.frame import runs_frame, to_csv  # noqa: E402
from reports.render import Section, render_html, render_md  # noqa: E402
from reports.runs import Group, Run, done, find_run_dirs, load_run, same_eval  # noqa: E402
from reports.summary import inception_note, scale_table, share_summary, summary_blocks  # noqa: E402
from reports.sweeps import (  # noqa: E402
    SweepView,
    find_manifests,
    load_manifest,
    point_value,
    sweep_views,
    view_for,
)
from reports.tables import (  # noqa: E402
    ROUNDING,
    Table,
    autoencoder_margin,
    claims_table,
    paper_row,
    points_table,
    recon_table,
    setting_text,
    speed_ratios,
    speed_table,
    sweep_series,
    sweep_tables,
    table1,
    train_table,
    trends_table,
)

__all__ = ["build_report", "find_run_dirs", "load_run", "main"]


# ----------------------------------------------------------------------------------------------------------------------
# The paper's arm: the MSF setting of Table 1 and the training runs behind it


def paper_msf(views: Sequence[SweepView]) -> Group | None:
    """Our group at the paper's MSF setting: Table 1's MSF(cfg=1.4) point, else Table 2's CFG 1.4 point (Table 1)."""
    main = view_for(views, "1")
    if main is not None and main.primary is not None:
        for i, g in main.primary.groups.items():
            if paper_row(main.primary.points[i]) == "MSF(cfg=1.4)":
                return g
    t2 = view_for(views, "2")
    return sweep_series(t2, t2.primary).get(1.4) if t2 is not None else None


def paper_trains(runs: Sequence[Run], msf: Group | None) -> list[Run]:
    """The training runs of the paper's arm (2-scale residual MSF, adaLN-Zero), each folder once, one per (stage,
    training seed): the dependencies of the paper's MSF evals, else every trained run of that arm at the scales
    with the most runs (Fig. 4)."""
    trains = done(runs, "train")
    by_name = {r.path.name: r for r in trains}
    sampled = {r.path.name: r for r in done(runs, "sample")}  # a score run's trainings are its sample run's deps
    evals = [sampled.get(r.deps.get("samples", ""), r) for r in (msf.runs if msf else [])]
    chosen = [by_name[d] for r in evals for role, d in sorted(r.deps.items())
              if role.startswith("train") and d in by_name]
    if not chosen:
        arm = [r for r in trains if (r.metrics or {})["num_stages"] == 2
               and (r.metrics or {})["factorization"] == "residual" and r.spec.get("conditioning") == "adaln_zero"
               and (r.metrics or {})["steps"] > 0]  # 0 steps: the untrained ceiling's stages
        scales = [tuple((r.spec.get("factorization") or {}).get("scales") or ()) for r in arm]
        best = max(set(scales), key=lambda s: (scales.count(s), s), default=None)
        chosen = sorted((r for r, s in zip(arm, scales, strict=True) if s == best), key=lambda r: r.name)
    unique: dict[tuple[int, int], Run] = {}
    for r in chosen:
        m = r.metrics or {}
        unique.setdefault((int(m["stage"]), int(m["train_seed"])), r)
    return [unique[k] for k in sorted(unique)]


# ----------------------------------------------------------------------------------------------------------------------
# Claims evidence


def _arms(view: SweepView | None) -> dict[float, Any]:
    """FID per run of each point of a Table 2-5 sweep, by the swept value (Tables 2-5)."""
    if view is None:
        return {}
    return {x: g.arm(f"{x:g}") for x, g in sweep_series(view, view.primary).items()}


def speed_pair(msf: Group | None, views: Sequence[SweepView]) -> tuple[Timed, Timed] | None:
    """MSF at the paper's setting vs the baseline ranked first for the speed claim (DiT-XL/2, else the flow DiT:
    ablations/engine/families.py) among Table 1's points scored alike and timed (another sweep's point of the same
    model, e.g. at another CFG, is not Table 1's setting) (Table 1)."""

    def timed(g: Group) -> Timed | None:
        """A group's FID per run and mean sampling time, if it was timed."""
        time = g.stat("sample_time_per_64_s")
        if time is None or not g.values("fid"):
            return None
        return Timed(setting_text(g.setting), g.arm(g.setting["model"]), time.mean, str(g.setting["device"]),
                     str(g.setting["dtype"]))

    t_msf = timed(msf) if msf is not None else None
    if msf is None or t_msf is None:
        return None
    ranked = sorted(((p.speed_rank, g.setting["model"], g) for v in views if v.table == "1" for s in v.series
                     for i, g in s.groups.items() if (p := s.points[i]).speed_rank is not None), key=lambda x: x[:2])
    for _, _, g in ranked:
        t = timed(g) if same_eval(g.setting, msf.setting) else None
        if t is not None:
            return t_msf, t
    return None


def evidence(views: Sequence[SweepView], groups: Sequence[Group], msf: Group | None, trains: Sequence[Run]) -> Evidence:
    """Collect what the claims are judged on, from the sweeps' tables and the paper's arm (Secs. 3.2, 4.1, 4.2, 5)."""
    fig2 = view_for(views, "fig2")
    factorization = {}
    if fig2 is not None and fig2.primary is not None:
        factorization = {str(point_value(fig2.primary.points[i], "factorization", None)): g.arm("f")
                         for i, g in fig2.primary.groups.items()}
    stages: dict[int, dict[int, Run]] = {}
    for r in trains:
        m = r.metrics or {}
        stages.setdefault(int(m["train_seed"]), {})[int(m["stage"])] = r
    loss = {seed: LossPair(float(s[0].metrics["final_loss_ema100"]), float(s[1].metrics["final_loss_ema100"]),
                           (s[0].name, s[1].name))
            for seed, s in stages.items() if 0 in s and 1 in s and s[0].metrics and s[1].metrics}
    return Evidence(
        tolerance_cfg_scale2=paper.curve_range(3),
        tolerance_steps_scale2=paper.curve_range(5),
        cfg_scale1=_arms(view_for(views, "2")),
        cfg_scale2=_arms(view_for(views, "3")),
        steps_scale1=_arms(view_for(views, "4")),
        steps_scale2=_arms(view_for(views, "5")),
        factorization=factorization,
        loss=loss,
        speed=speed_pair(msf, views),
    )


def read_evidence(runs: Sequence[Run], manifests: Sequence[dict[str, Any]], table: pd.DataFrame
                  ) -> tuple[list[Group], list[SweepView], Group | None, list[Run], Evidence]:
    """Groups, sweep views, the paper's MSF arm, its training runs and the claims' evidence of a set of runs, the
    sweep manifests that name them and the runs' tidy table (reports/frame.py)."""
    views, groups = sweep_views(manifests, {r.name: r for r in runs}, table)
    msf = paper_msf(views)
    trains = paper_trains(runs, msf)
    return groups, views, msf, trains, evidence(views, groups, msf, trains)


def dataset_name(groups: Sequence[Group]) -> str:
    """The dataset(s) of the model evals, as 'embedded' or 'a / b'."""
    return " / ".join(sorted({str(g.setting["dataset"]) for g in groups if g.anchor is None})) or "no eval"


TREND_SWEEPS = (  # (label, Evidence field) of the sweeps whose trends are set beside a stand-in's
    ("Table 2: FID against scale-1 CFG", "cfg_scale1"),
    ("Table 3: FID against scale-2 CFG", "cfg_scale2"),
    ("Table 4: FID against scale-1 steps", "steps_scale1"),
    ("Table 5: FID against scale-2 steps", "steps_scale2"),
)


def trend_rows(ours: Evidence, theirs: Evidence, names: tuple[str, str]) -> list[tuple[str, str, Any, Any, str]]:
    """Each Table 2-5 sweep's fitted FID change here and on the stand-in over the settings both measured, and how
    they relate (TREND_RULE; Tables 2-5)."""
    rows = []
    for label, name in TREND_SWEEPS:
        a, b = getattr(ours, name), getattr(theirs, name)
        xs = sorted(set(a) & set(b))
        if len(xs) >= 2:
            ta, tb = trend({x: a[x] for x in xs}), trend({x: b[x] for x in xs})
            settings = ", ".join(f"{x:g}" for x in xs)
        else:  # fewer than 2 settings in common: each side's own trend where it has one
            ta, tb = trend(a), trend(b)
            settings = "; ".join(f"{n}: {', '.join(f'{x:g}' for x in sorted(v)) or 'none'}"
                                 for n, v in zip(names, (a, b), strict=True))
        rows.append((label, settings, ta, tb, compare_trends(ta, tb, names)))
    return rows


# ----------------------------------------------------------------------------------------------------------------------
# Entry points


def read_runs(run_dirs: Sequence[str | Path]) -> tuple[list[Run], dict[str, str]]:
    """The run folders under ``run_dirs`` that prove what they hold, and the others (left out) with the reason: a
    config.json that does not hash to its folder's key is never reported (the runner checks the outputs as well;
    a published folder holds the metadata only)."""
    runs, damaged = [], {}
    for d in find_run_dirs(run_dirs):
        wrong = spec_problems(d)
        if wrong:
            damaged[d.name] = wrong[0]
        else:
            runs.append(load_run(d))
    return runs, damaged


def inventory(runs: Sequence[Run], groups: Sequence[Group], planned: Sequence[str] = (),
              damaged: Mapping[str, str] | None = None) -> list[str]:
    """What was read: finished runs per kind, the unfinished ones (read, or planned and never finished), the
    duplicates and the damaged folders left out."""
    kinds = sorted({r.kind for r in runs})
    counts = ", ".join(f"{k} {len(done(runs, k))}" for k in kinds)
    unfinished = sorted({r.name for r in runs if r.metrics is None} | set(planned))
    duplicates = [r.name for g in groups for r in g.duplicates]
    finished = [r for r in runs if r.metrics is not None]
    commits = Counter(str(r.config.get("code_version") or "unknown") for r in finished)
    versions = sorted({(r.kind, r.config.get("results_version")) for r in finished})
    return [
        f"Run folders read: {len(runs)}; finished by kind: {counts or 'none'}.",
        "Code that ran the finished jobs (commit: jobs): "
        + (", ".join(f"{c}: {n}" for c, n in sorted(commits.items())) or "none")
        + "; results version by kind: " + (", ".join(f"{k} {v}" for k, v in versions) or "none")
        + " (jobs of one kind and results version compute the same results, tests/test_results_version.py).",
        f"Unfinished (planned, no metrics.json: failed, skipped or not run yet; left out): "
        f"{', '.join(unfinished) or 'none'}.",
        f"Duplicates (an eval with the seeds and settings of another, left out): {', '.join(duplicates) or 'none'}.",
        "Damaged (left out, never reported): "
        + ("; ".join(f"{name}: {why}" for name, why in sorted((damaged or {}).items())) or "none") + ".",
        ROUNDING,
    ]


def build_report(run_dirs: Sequence[str | Path], out_dir: str | Path, title: str | None = None,
                 unfinished: Sequence[str] = (), stand_in: Sequence[str | Path] = (),
                 manifests: Sequence[str | Path] | None = None, figures: bool = True) -> dict[str, Any]:
    """Read run folders and write report.md, report.html and the figures into out_dir.

    Args:
        run_dirs: run folders, or folders holding run folders.
        out_dir: where report.md, report.html and the PNG figures go (created if needed).
        title: the report's title; by default names the presets found.
        unfinished: the names of planned jobs that did not finish (listed with the unfinished runs).
        stand_in: run folders of another dataset's runs of the same sweeps (e.g. the real-image stand-in
            ``preset=digits``): its verdicts go beside ours in Claims and its trends beside ours in Table D1.
        manifests: the sweep manifests that say which runs make which table (default: those found under
            ``run_dirs``, in ``*/_sweeps/``).
        figures: draw the figures (most of a build's time); without, the report says that none were drawn.

    Returns:
        {"markdown", "html": paths, "figures": {name: path}, "missing_figures": {name: reason}, "tables": [ids],
         "claims": [{"claim", "evidence", "verdict", "interval"}], "runs": number of run folders read}.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; expected a folder for the report")
    runs, damaged = read_runs(run_dirs)
    found = [load_manifest(m) for m in find_manifests(run_dirs if manifests is None else manifests)]
    if not found:
        raise ValueError(f"no sweep manifest (_sweeps/*.json) in {', '.join(map(str, run_dirs))}: run the sweep "
                         "with ablations/run.py, which writes it")
    other = read_runs(stand_in)[0] if stand_in else []
    other_found = [load_manifest(m) for m in find_manifests(stand_in)]
    if stand_in and not (done(other, "score") and other_found):
        raise ValueError(f"no finished score run or no sweep manifest in the stand-in {', '.join(map(str, stand_in))}")
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("fig_*.png"):  # figures of an earlier build whose data may be gone
        stale.unlink()
    table = runs_frame(runs)
    groups, views, msf, trains, ours = read_evidence(runs, found, table)
    presets = sorted({str(g.setting["preset"]) for g in groups})
    title = title or f"MSF reproduction report ({', '.join(presets) or 'no eval'})"
    fig2 = view_for(views, "fig2")
    order = [str(point_value(p, "factorization", None)) for p in fig2.points] if fig2 else []

    tables: list[Table] = [table1(view_for(views, "1"), groups), *sweep_tables(views, groups)]
    tables += [points_table(fig2, groups)] if fig2 is not None else []
    tables.append(recon_table(runs, order))
    dedicated = {"1", "2", "3", "4", "5", "fig2", "speed"}  # the tables above, and the speed tables below
    tables += [points_table(v, groups) for v in views if v.table not in dedicated]  # one row per point
    verdicts = judge_all(ours)
    margin = autoencoder_margin(msf, groups)
    notes = [*inception_note(groups), *share_summary(msf, groups)]
    claims = claims_table(verdicts, margin=margin)
    if other:
        other_groups, _, _, _, theirs = read_evidence(other, other_found, runs_frame(other))
        names = (dataset_name(groups), dataset_name(other_groups))
        rows = trend_rows(ours, theirs, names)
        readings = {label.split(":")[0]: reading for label, _, _, _, reading in rows}
        claims = claims_table(verdicts, judge_all(theirs), names[1], readings, margin)
        tables.append(trends_table(rows, names))
        notes = [*notes, f"Beside a stand-in ({names[1]}, run folders {', '.join(map(str, stand_in))}): the same "
                 "sweeps' trends (Table D1) read " + "; ".join(f"{label.split(':')[0]}: {reading}"
                                                          for label, _, _, _, reading in rows)
                 + ". Its verdicts stand beside ours in Claims."]
    tables += [speed_table(runs), speed_ratios(runs), train_table(runs)]

    plots: list[Plot] = []
    missing: dict[str, str] = {}
    if figures:
        wanted: dict[str, tuple[Plot | None, str]] = {
            **{k: (p, "no MSF eval for " + ("Tables 2-3" if k == "fig_cfg" else "Tables 4-5"))
               for k, p in sweep_figures(views, out).items()},
            "fig_loss": (plot_loss(runs, trains, out), "no train run with stats.jsonl"),
            "fig_decomposition": (plot_recon_decomposition(runs, order, out), "no recon run with decomposition.npy"),
            "fig_sample_decomposition": (plot_sample_decomposition(msf, out),
                                         "no eval at the paper's MSF setting with decomposition.npy"),
            "fig_compute": (plot_compute(views, out), "no eval with FID and GFLOPs or sampling time"),
        }
        grids = plot_grids(views, out)
        plots = [p for p, _ in wanted.values() if p is not None] + grids
        missing = {name: why for name, (p, why) in wanted.items() if p is None}
        if not grids:
            missing["fig_grid"] = "no eval of a sweep point with grid.npy"
    figure_note = ("Not produced (data absent): " + (", ".join(f"{k} ({v})" for k, v in missing.items()) or "none")
                   + "." if figures else "Not drawn: this report was built with --no-figures.")

    sections: list[Section] = [
        ("Summary", summary_blocks(verdicts, scale_table(groups, msf, trains, {r.name: r for r in done(runs, "cache")}),
                                   notes)),
        ("Runs", list(inventory(runs, groups, unfinished, damaged))),
        ("Claims", [claims, *(f"Rule {i}: {rule}" for i, rule in enumerate(RULES, 1))]),
        ("Tables", list(tables)),
        ("Figures", [*plots, figure_note]),
    ]
    write_text(out / "report.md", render_md(title, sections))
    write_text(out / "report.html", render_html(title, sections))
    write_text(out / "runs.csv", to_csv(table))
    return {
        "markdown": out / "report.md",
        "html": out / "report.html",
        "table": out / "runs.csv",
        "figures": {p.name: p.path for p in plots},
        "missing_figures": missing,
        "tables": [t.id for t in tables] + ["Claims"],
        "claims": [asdict(v) for v in verdicts],
        "runs": len(runs),
    }


def default_out(run_dirs: Sequence[str | Path]) -> Path:
    """report/ beside the run folders: under the deepest folder holding all of them."""
    parents = [d.parent for d in find_run_dirs(run_dirs)]
    return Path(os.path.commonpath(parents)) / "report"


class OneLineParser(argparse.ArgumentParser):
    """argparse whose refusals are one line on stderr, exit code 2 (no usage block)."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: python reports/build.py RUN_DIR... [--out DIR] [--title TEXT] [--stand-in DIR] [--no-figures]."""
    parser = OneLineParser(description="Build the MSF report (Tables 1-5, figures, claims) from run folders.")
    parser.add_argument("run_dirs", nargs="+", help="run folders, or folders holding run folders")
    parser.add_argument("--out", help="output folder (default: report/ beside the run folders)")
    parser.add_argument("--title", help="report title")
    parser.add_argument("--stand-in", action="append", default=[], metavar="DIR",
                        help="run folders of the same sweeps on another dataset (e.g. runs/digits), set beside ours")
    parser.add_argument("--no-figures", action="store_true",
                        help="tables, claims and runs.csv only: draw no figure (a few seconds faster)")
    args = parser.parse_args(argv)
    try:
        result = build_report(args.run_dirs, args.out or default_out(args.run_dirs), args.title,
                              stand_in=args.stand_in, figures=not args.no_figures)
    except ValueError as e:  # a missing or refused run folder, an --out that is a file
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # a read-only or full disk
        print(f"error: {e.filename or args.out}: {e.strerror or e}", file=sys.stderr)
        sys.exit(1)
    missing = ", ".join(result["missing_figures"]) or "none"
    drawn = f"{len(result['figures'])} figures, missing: {missing}" if not args.no_figures else "no figures drawn"
    print(f"wrote {result['markdown']} and {result['html']} from {result['runs']} run folders; {drawn}")


if __name__ == "__main__":
    main()
