"""Run an ablation sweep: ``python ablations/run.py sweep=NAME [preset=NAME] [key=value ...] [--dry-run]``.

Plans the sweep's job graph (autoencoder -> target cache -> trainings -> eval points), runs what is not done yet with
the chosen launcher, and builds the sweep's report. Bad input is one line on stderr and exit code 2.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ablations import inputs  # noqa: E402
from ablations.config import (  # noqa: E402
    KEYS,
    PRESETS_DIR,
    SWEEPS_DIR,
    Config,
    ConfigError,
    Sweep,
    available,
    load_sweep,
    resolve,
)
from ablations.graph import Graph, check_overrides, plan, plan_summary, write_manifest  # noqa: E402
from ablations.jobcall import Stopped, raise_stopped  # noqa: E402

USAGE = """usage: python ablations/run.py sweep=NAME [preset=NAME] [key=value ...] [--dry-run] [--help]

sweeps:  {sweeps}
presets: {presets}  (default: tiny)
keys:    {keys}

Values are YAML: sample.cfg=[1.4,1.0] train.lr=3e-4 seeds.train=[0,1,2] data.root=/datasets/imagenet launcher=slurm.
workers=N runs N jobs at once on this machine (default: as many as its cores and memory allow).
--dry-run prints the planned jobs (done / todo / redo: damaged outputs) and how many run at once, and exits without
running anything. Ctrl-C or SIGTERM stops every job (exit 130 or 143); the same command then continues."""


def usage() -> str:
    descr = []
    for name in available(SWEEPS_DIR):
        sweep, _ = load_sweep(name, "tiny")
        descr.append(f"\n  {name:14s} {sweep.description}")
    return USAGE.format(
        sweeps="".join(descr), presets=", ".join(available(PRESETS_DIR)), keys=" ".join(KEYS)
    )


def parse_args(argv: list[str]) -> tuple[list[tuple[str, str]], bool]:
    """The ``key=value`` pairs and whether ``--dry-run`` was given; a key given twice (or a section and a key inside
    it, ``data={...}`` and ``data.name=...``) is refused: the last would win silently."""
    pairs: list[tuple[str, str]] = []
    dry = False
    for arg in argv:
        if arg == "--dry-run":
            dry = True
        elif arg.startswith("-"):
            raise ConfigError(f"unknown option {arg!r} (options: --dry-run, --help)")
        elif "=" not in arg:
            raise ConfigError(f"expected key=value, got {arg!r}")
        else:
            k, v = arg.split("=", 1)
            k = k.strip()
            for other, w in pairs:
                if k == other or k.startswith(f"{other}.") or other.startswith(f"{k}."):
                    raise ConfigError(f"{k} is given twice ({other}={w} and {k}={v}); give it once")
            pairs.append((k, v))
    return pairs, dry


def main(argv: list[str] | None = None) -> int:
    """The command: exit code 0 (done), 1 (a job failed or the disk refused), 2 (bad input), 130 (Ctrl-C), 143
    (SIGTERM); a signal stops every running job, and a rerun continues where it stopped."""
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(usage())
        return 0
    old = signal.signal(signal.SIGTERM, raise_stopped)
    try:
        return sweep_command(argv)
    except KeyboardInterrupt as e:
        sig = signal.SIGTERM if isinstance(e, Stopped) else signal.SIGINT
        print(f"stopped by {sig.name}: the running jobs were stopped and none of them counts as done; run the same "
              "command again to continue where it stopped", file=sys.stderr)
        return 128 + sig
    finally:
        signal.signal(signal.SIGTERM, old)


def sweep_command(argv: list[str]) -> int:
    """Parse, plan, and print the plan (--dry-run) or run it and write the report."""
    try:
        pairs, dry = parse_args(argv)
        cfg, sweep = resolve(pairs)
        check_overrides(pairs, cfg, sweep)
        graph = plan(cfg, sweep)
        inputs.run_folders("runs_dir", cfg.runs_dir, graph.root, [j.name for j in graph])
    except (ConfigError, inputs.InputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = plan_summary(graph)
    if dry:
        print(f"sweep {sweep.name} (preset {cfg.preset}, launcher {cfg.launcher}): {sweep.description}")
        for key, value in sweep.overrides.items():
            print(f"  override {key}={value}")
        for r in rows:
            print(f"  {r['status']:5s} {r['kind']:12s} {r['run_dir']}")
        todo = sum(r["status"] != "done" for r in rows)
        redo = sum(r["status"] == "redo" for r in rows)
        print(f"{len(rows)} job(s): {len(rows) - todo} done, {todo} to run" +
              (f" ({redo} with damaged outputs)" if redo else ""))
        from ablations.costs import cluster_plan, time_per_kind

        print("\n".join(time_per_kind(graph)))
        if cfg.launcher == "slurm":
            print("\n".join(cluster_plan(graph, cfg)))
        else:
            from ablations.pool import workers

            n, why = workers(cfg, [j for j in graph if not graph.done(j)])
            print(f"workers: {n} ({why})")
        return 0
    from ablations.launch import run_graph

    try:
        manifest = write_manifest(graph)
        results = run_graph(cfg, graph)
        failed = [r["job"] for r in results if r["status"] != "done"]
        failed += [j.name for j in graph if not graph.done(j) and j.name not in failed]  # e.g. damaged meanwhile
        out = write_report(cfg, sweep, graph, manifest, partial=bool(failed))
    except OSError as e:  # a full or read-only disk, a vanished folder: one line, the jobs' logs have the rest
        print(f"error: {e.filename or cfg.runs_dir}: {e.strerror or e}", file=sys.stderr)
        return 1
    except ValueError as e:  # a run folder the report refuses (its metrics.json edited or damaged): one line
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"report: {out / 'report.md'} and {out / 'report.html'}")
    if failed:
        print(f"{len(failed)} job(s) failed or were skipped; see the logs above. The report of what finished is "
              f"{out} (an earlier complete report, if any, is kept)", file=sys.stderr)
        return 1
    return 0


def write_report(cfg: Config, sweep: Sweep, graph: Graph, manifest: Path, partial: bool) -> Path:
    """Build the sweep's report into a temporary folder, then rename it into place: readers never see a half-built
    report, and a failed run writes ``NAME.partial`` instead of replacing the last complete report."""
    from reports.build import build_report

    root = Path(cfg.runs_dir) / cfg.preset / "reports"
    root.mkdir(parents=True, exist_ok=True)
    final = root / (f"{sweep.name}.partial" if partial else sweep.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=root))
    old = root / f".{final.name}.old-{os.getpid()}"
    try:
        runs = [j.run_dir for j in graph if (j.run_dir / "metrics.json").exists()]
        unfinished = [j.name for j in graph if not (j.run_dir / "metrics.json").exists()]
        build_report(runs, tmp, title=f"{sweep.name}: {sweep.description} (preset {cfg.preset})",
                     unfinished=unfinished, manifests=[manifest])
        for _ in range(10):  # another runner may swap its report in at the same moment: the last one wins
            with contextlib.suppress(FileNotFoundError):
                os.replace(final, old)
            try:
                os.replace(tmp, final)
                break
            except OSError:
                shutil.rmtree(old, ignore_errors=True)
        if not partial:
            shutil.rmtree(root / f"{sweep.name}.partial", ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return final


if __name__ == "__main__":
    sys.exit(main())
