"""Every run as one tidy table: a row per run folder, a column per setting and per measurement.

The report computes its numbers from this table (each group's statistics are column aggregates over its rows) and
writes it beside the report as ``runs.csv``, so that a notebook loads a whole sweep in one line::

    runs = pandas.read_csv("runs/tiny/reports/cfg_scale0/runs.csv")
    runs[runs.kind == "score"].groupby("cfg")["fid"].agg(["mean", "std", "count"])

Columns: ``name``, ``kind``, ``key``, ``code_version``, ``results_version``, ``finished``; ``deps.ROLE`` (the run
folders it read); ``spec.*`` (its job spec, nested keys joined with dots); and its metrics.json values under their own
names (``fid``, ``cfg``, ``train_seed``, ...; nested ones joined with dots). Per-scale settings such as ``cfg`` are
written as JSON lists (``[1.4, 1.0]``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from reports.runs import Run

SKIPPED = ("kind", "outputs")  # metrics.json keys that are the run's bookkeeping, not its measurements


def flat(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level, their keys joined with dots; other values as they are."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, Mapping):
            out |= flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def runs_frame(runs: Iterable[Run]) -> pd.DataFrame:
    """The tidy table of some runs, indexed by run folder name (see the module docstring)."""
    rows = []
    for r in runs:
        row: dict[str, Any] = {"name": r.name, "kind": r.kind, "key": r.config.get("key"),
                               "code_version": r.config.get("code_version"),
                               "results_version": r.config.get("results_version"), "finished": r.metrics is not None}
        row |= {f"deps.{role}": name for role, name in r.deps.items()}
        row |= flat(r.spec, "spec.")
        row |= flat({k: v for k, v in (r.metrics or {}).items() if k not in SKIPPED})
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(dict.fromkeys(k for row in rows for k in row)) or ["name"])
    return frame.set_index("name", drop=False).rename_axis(None)


def column(frame: pd.DataFrame, names: Sequence[str], key: str) -> pd.Series:
    """One measurement of the named runs that recorded it (as floats, in the order given)."""
    if key not in frame.columns:
        return pd.Series([], dtype=float)
    values = frame.loc[list(names), key]
    return values[values.notna()].astype(float)


def to_csv(frame: pd.DataFrame) -> str:
    """The table as CSV, lists and other non-scalar values as JSON."""
    def cell(v: Any) -> Any:
        return json.dumps(v) if isinstance(v, list | tuple | dict) else v

    return frame.map(cell).to_csv(index=False)
