"""Publish a reproduction: the small metadata of every finished run folder plus the report built from the runs.

``python reports/publish.py RUNS_ROOT DEST [--title TEXT] [--stand-in DIR]`` copies the sweep manifests of RUNS_ROOT
(``_sweeps/*.json``) to DEST/runs/_sweeps/ and config.json and metrics.json of each finished run folder under
RUNS_ROOT to DEST/runs/<folder>/, with its stats.jsonl thinned to at most MAX_STATS records (the first and the last
kept, the others evenly spaced: per-step logs would otherwise be most of the repository), and writes DEST/report.md,
DEST/report.html and the figures, built from the full run folders; a stand-in (another published reproduction's
runs/, e.g. the real-image digits) has its verdicts and trends set beside ours. Checkpoints, caches, samples, sample
arrays and logs with machine paths are never copied. Rebuilding the report from DEST/runs (and the same stand-in)
reproduces its tables exactly (tests/test_reports.py checks the committed one, results/tiny); the figures drawn
from sample arrays (decompositions, sample grids) need the full run folders, and the loss curves drawn from thinned
logs are coarser.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # as a script: the repository root on the path, not reports/ (tables.py, ...)
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from reports.build import OneLineParser, build_report, find_run_dirs  # noqa: E402
from reports.sweeps import MANIFESTS, find_manifests  # noqa: E402

METADATA = ("config.json", "metrics.json")
MAX_STATS = 100  # stats.jsonl records kept per run


def thin(lines: Sequence[str], limit: int = MAX_STATS) -> list[str]:
    """At most ``limit`` of the JSON lines, evenly spaced by position, the first and the last always kept; torn or
    blank lines dropped."""
    complete = []
    for line in lines:
        try:
            json.loads(line)
        except json.JSONDecodeError:
            continue
        complete.append(line)
    if len(complete) <= limit:
        return complete
    keep = np.unique(np.linspace(0, len(complete) - 1, limit).round().astype(int))
    return [complete[i] for i in keep]


def copy_metadata(runs_root: Path, dest: Path) -> list[Path]:
    """Copy config.json, metrics.json and thinned stats.jsonl of each finished run folder to dest/<folder>."""
    if dest.exists():
        raise ValueError(f"{dest} exists: publish into a new destination (nothing is overwritten)")
    copied = []
    for run in find_run_dirs([runs_root]):
        if not (run / "metrics.json").is_file():
            continue  # unfinished: nothing to publish
        out = dest / run.name
        out.mkdir(parents=True)
        for name in METADATA:
            shutil.copy2(run / name, out / name)
        if (run / "stats.jsonl").is_file():
            lines = thin((run / "stats.jsonl").read_text(encoding="utf-8").splitlines())
            (out / "stats.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        copied.append(out)
    for manifest in find_manifests([runs_root]):
        (dest / MANIFESTS).mkdir(parents=True, exist_ok=True)
        shutil.copy2(manifest, dest / MANIFESTS / manifest.name)
    return copied


def publish(runs_root: str | Path, dest: str | Path, title: str | None = None,
            stand_in: Sequence[str | Path] = ()) -> dict[str, Any]:
    """Metadata to dest/runs, then the report from the full run folders to dest, with a published stand-in's
    verdicts and trends beside ours."""
    runs_root, dest = Path(runs_root), Path(dest)
    for d in [runs_root, *stand_in]:  # refuse a missing folder or one without manifests before anything is written
        find_run_dirs([d])
        if not find_manifests([d]):
            raise ValueError(f"no sweep manifest ({MANIFESTS}/*.json) in {d}: run its sweeps with ablations/run.py")
    copied = copy_metadata(runs_root, dest / "runs")
    result = build_report([runs_root], dest, title, stand_in=stand_in)
    return {**result, "published_runs": len(copied)}


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: python reports/publish.py RUNS_ROOT DEST [--title TEXT]."""
    parser = OneLineParser(description="Publish run metadata and the report built from the runs.")
    parser.add_argument("runs_root", help="folder holding the run folders (e.g. runs/tiny)")
    parser.add_argument("dest", help="destination folder (e.g. results/tiny); its runs/ must not exist yet")
    parser.add_argument("--title", help="report title")
    parser.add_argument("--stand-in", action="append", default=[], metavar="DIR",
                        help="a published stand-in's run metadata (e.g. results/digits/runs), set beside ours; "
                        "rebuilding the report from dest/runs with it reproduces every table")
    args = parser.parse_args(argv)
    try:
        result = publish(args.runs_root, args.dest, args.title, args.stand_in)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # a read-only or full disk
        print(f"error: {e.filename or args.dest}: {e.strerror or e}", file=sys.stderr)
        sys.exit(1)
    n, figures = result["published_runs"], len(result["figures"])
    print(f"published {n} run folders and {result['markdown']} ({figures} figures)")


if __name__ == "__main__":
    main()
