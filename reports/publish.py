"""Publish a reproduction: the small metadata of every finished run folder plus the report built from the runs.

``python reports/publish.py RUNS_ROOT DEST [--title TEXT]`` copies config.json, metrics.json and stats.jsonl of each
finished run folder under RUNS_ROOT to DEST/runs/<node>/ (never checkpoints, caches, sample arrays or logs with
machine paths) and writes DEST/report.md, DEST/report.html and the figures. Rebuilding the report from DEST/runs
reproduces its tables exactly (tests/test_reports.py checks the committed one); figures drawn from sample arrays
(the decomposition and the sample grids) need the full run folders.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reports.build import build_report, find_run_dirs  # noqa: E402

METADATA = ("config.json", "metrics.json", "stats.jsonl")


def copy_metadata(runs_root: Path, dest: Path) -> list[Path]:
    """Copy METADATA of each finished run folder under runs_root to dest/<folder name>/ (harness)."""
    if dest.exists():
        raise ValueError(f"{dest} exists: publish into a new destination (nothing is overwritten)")
    copied = []
    for run in find_run_dirs([runs_root]):
        if not (run / "metrics.json").is_file():
            continue  # unfinished: nothing to publish
        out = dest / run.name
        out.mkdir(parents=True)
        for name in METADATA:
            if (run / name).is_file():
                shutil.copy2(run / name, out / name)
        copied.append(out)
    return copied


def publish(runs_root: str | Path, dest: str | Path, title: str | None = None) -> dict[str, Any]:
    """Metadata to dest/runs, then the report from the full run folders to dest (harness)."""
    runs_root, dest = Path(runs_root), Path(dest)
    copied = copy_metadata(runs_root, dest / "runs")
    result = build_report([runs_root], dest, title)
    return {**result, "published_runs": len(copied)}


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: python reports/publish.py RUNS_ROOT DEST [--title TEXT] (harness)."""
    parser = argparse.ArgumentParser(description="Publish run metadata and the report built from the runs.")
    parser.add_argument("runs_root", help="folder holding the run folders (e.g. runs/tiny)")
    parser.add_argument("dest", help="destination folder (e.g. reports/tiny); its runs/ must not exist yet")
    parser.add_argument("--title", help="report title")
    args = parser.parse_args(argv)
    try:
        result = publish(args.runs_root, args.dest, args.title)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    n, figures = result["published_runs"], len(result["figures"])
    print(f"published {n} run folders and {result['markdown']} ({figures} figures)")


if __name__ == "__main__":
    main()
