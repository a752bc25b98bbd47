"""Which runs make which table: the sweep manifests the planner wrote when it planned each sweep
(``RUNS/PRESET/_sweeps/SWEEP-HASH.json``: the sweep's table, its points, the score run of every point and seed, and
the anchors' runs).

A manifest's points become a :class:`Series` of :class:`Group` s, one group per point holding the runs the manifest
lists for it. Manifests of one sweep that differ only in their seeds (the same sweep run again with more seeds)
share their groups, whose runs are the union; manifests of other settings become further series (Table 2b, ...),
the series covering most points first. Nothing here resolves a configuration: what a point sets and what its runs
record was written by the planner.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ablations.engine.io import read_json
from reports.frame import runs_frame
from reports.runs import PROTOCOL, SETTING, Group, Run, group_key

MANIFESTS = "_sweeps"  # the folder of a preset's runs that holds its sweep manifests
TABLE_IDS = {  # the sweep file's `table:` -> the report's table
    "1": "Table 1",
    "2": "Table 2",
    "3": "Table 3",
    "4": "Table 4",
    "5": "Table 5",
    "fig2": "Table F2",
    "resolutions": "Table R1",
    "conditioning": "Table C1",
    "cfg_wide": "Table G1",
    "cfg_wide_flow": "Table G2",
    "speed": "Table S1",
}
KEY_TITLES = {"model": "Model", "cfg": "CFG", "steps": "Steps", "factorization": "Factorization",
              "scales": "Scales (latent sizes)", "conditioning": "Conditioning"}
CONTEXT = PROTOCOL  # scored alike
NAMED = ("model", "factorization", "conditioning")  # settings whose value names itself in a label
KEY_ORDER = ("model", "factorization", "scales", "conditioning", "cfg", "steps")  # rows are named by the first


def norm(v: Any) -> Any:
    """A setting value as a comparable, hashable key: lists as tuples, floats rounded to 6 decimals."""
    if isinstance(v, list | tuple):
        return tuple(map(norm, v))
    if isinstance(v, float):
        return round(v, 6)
    return v


def value_text(key: str, v: Any) -> str:
    """A setting as the report writes it: per-scale lists as '100/50', CFG scales with one decimal at least."""
    if isinstance(v, list | tuple):
        return "/".join(value_text(key, x) for x in v)
    if key == "cfg" and isinstance(v, int | float):
        return f"{v:.1f}" if round(v, 1) == v else f"{v:g}"
    return str(v)


@dataclass(frozen=True)
class Point:
    """One eval point of a sweep as the planner recorded it: the settings its runs record, resolved (expected), those
    the point itself sets (explicit), the row of the paper's Table 1 it reproduces, and its model's place among the
    baselines of the speed claim (ablations/engine/families.py)."""

    expected: dict[str, Any]
    explicit: dict[str, Any]
    paper_row: str | None = None
    speed_rank: int | None = None


@dataclass
class Series:
    """The groups of one sweep scored alike, by point index, with the points of its preset."""

    preset: str
    context: tuple[tuple[str, Any], ...]
    points: list[Point]
    groups: dict[int, Group]
    reference: int | None  # the point at the preset's own settings (the paper's arm), if among the points

    @property
    def n_runs(self) -> int:
        """Runs in the series."""
        return sum(len(g.runs) for g in self.groups.values())


@dataclass
class SweepView:
    """One sweep file read for the report: its table, points and the series of groups found."""

    name: str
    table: str
    description: str
    points: list[Point]
    series: list[Series]  # the table's series first

    @property
    def table_id(self) -> str:
        """'Table 2', 'Table F2', ...."""
        return TABLE_IDS.get(self.table, f"Table {self.table}")

    @property
    def primary(self) -> Series | None:
        """The series covering most points."""
        return self.series[0] if self.series else None

    @property
    def varying(self) -> list[tuple[str, int | None]]:
        """The settings that differ between points: (metrics key, list index or None for the whole value)."""
        return varying(self.points)


def varying(points: Sequence[Point]) -> list[tuple[str, int | None]]:
    """The (key, index) of every setting that differs between points, the model's settings before the sampler's
    (KEY_ORDER), then other keys by name (manifests store a point's keys sorted by name)."""
    out: list[tuple[str, int | None]] = []
    keys = sorted({k for p in points for k in p.explicit if k != "anchor"},
                  key=lambda k: (KEY_ORDER.index(k) if k in KEY_ORDER else len(KEY_ORDER), k))
    for k in keys:
        values = [p.explicit.get(k) for p in points]
        if len(set(values)) < 2:
            continue
        lists = [v for v in values if isinstance(v, tuple)]
        if len(lists) == len(values) and len({len(v) for v in lists}) == 1:
            out += [(k, i) for i in range(len(lists[0])) if len({v[i] for v in lists}) > 1]
        else:
            out.append((k, None))
    return out


def point_value(point: Point, key: str, index: int | None) -> Any:
    """The value of one setting of a point, or one scale's entry of it."""
    v: Any = point.explicit.get(key, point.expected.get(key))
    return v if index is None else v[index]


def point_label(view: SweepView, i: int, points: Sequence[Point] | None = None) -> str:
    """A short label of point i: its varying settings ('cfg 1.2/1.0', 'latent_resize', 'msf, cfg 1.4/1.0')."""
    p = (points or view.points)[i]
    keys = list(dict.fromkeys(k for k, _ in view.varying))
    return ", ".join(value_text(k, point_value(p, k, None)) if k in NAMED else
                     f"{k} {value_text(k, point_value(p, k, None))}" for k in keys)


def find_manifests(paths: Iterable[str | Path]) -> list[Path]:
    """The sweep manifests under the given folders (``*/_sweeps/*.json``, a folder holding run folders) or given
    as files."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_file() and p.suffix == ".json":
            found.append(p)
        elif p.is_dir() and p.name == MANIFESTS:
            found += sorted(p.glob("*.json"))
        elif p.is_dir():
            found += sorted(p.glob(f"{MANIFESTS}/*.json")) + sorted(p.glob(f"*/{MANIFESTS}/*.json"))
    return list(dict.fromkeys(f.resolve() for f in found))


MANIFEST_KEYS = ("sweep", "table", "description", "preset", "config", "points", "reference", "anchors")


def load_manifest(path: Path) -> dict[str, Any]:
    """A sweep manifest, its schema checked (one line naming the file on failure)."""
    data = read_json(path)
    missing = [k for k in MANIFEST_KEYS if not isinstance(data, dict) or k not in data]
    if missing:
        raise ValueError(f"{path} is not a sweep manifest (lacks {', '.join(missing)})")
    for point in data["points"]:
        if not isinstance(point, dict) or not {"explicit", "setting", "runs"} <= set(point):
            raise ValueError(f"{path}: a point lacks explicit, setting or runs")
    return dict(data)


def _context(manifest: Mapping[str, Any]) -> str:
    """What a manifest's runs depend on but their seeds: its preset and configuration without the seeds."""
    config = {k: v for k, v in manifest["config"].items() if k not in ("seeds", "sweep")}
    return json.dumps([manifest["preset"], config], sort_keys=True)


class Grouper:
    """Groups of runs, one per (manifest context, point), shared by the manifests of one context; a group with the
    same runs as another (the same point planned by two sweeps) is the same group."""

    def __init__(self, runs: Mapping[str, Run], table: pd.DataFrame) -> None:
        self.runs, self.table = runs, table
        self.groups: dict[Any, Group] = {}

    def group(self, context: str, extra: Mapping[str, Any], listed: Sequence[Mapping[str, Any]]) -> Group | None:
        """The group of one point's listed runs (None while none of them finished)."""
        finished = sorted((self.runs[r["score"]] for r in listed if r["score"] in self.runs
                           and self.runs[r["score"]].metrics is not None), key=lambda r: r.name)  # the first by name
        # counts when two runs share their seeds, whichever manifest lists it
        if not finished:
            return None
        key = (context, group_key(finished[0], extra))
        g = self.groups.get(key)
        if g is None:
            g = self.groups[key] = Group(dict(zip(SETTING, key[1][: len(SETTING)], strict=True)) | dict(extra), [],
                                         self.table)
        for r in finished:
            if r.name in {x.name for x in g.runs}:
                continue
            if r.seeds in {x.seeds for x in g.runs}:
                g.duplicates.append(r)
            else:
                g.runs.append(r)
        return g

    def unique(self) -> list[Group]:
        """Every group once, the same runs once."""
        seen: dict[frozenset[str], Group] = {}
        for g in self.groups.values():
            seen.setdefault(frozenset(r.name for r in g.runs), g)
        return list(seen.values())


def sweep_views(manifests: Sequence[Mapping[str, Any]], runs: Mapping[str, Run], table: pd.DataFrame | None = None
                ) -> tuple[list[SweepView], list[Group]]:
    """Every sweep of the manifests with its series of groups, in the report's table order, and every group (the
    anchors' included) once; the groups read their numbers from ``table`` (the runs' tidy table, reports/frame.py)."""
    grouper = Grouper(runs, runs_frame(runs.values()) if table is None else table)
    by_sweep: dict[str, list[Mapping[str, Any]]] = {}
    for m in manifests:
        by_sweep.setdefault(str(m["sweep"]), []).append(m)
    views = []
    for name, found in by_sweep.items():
        series: dict[str, Series] = {}
        for m in found:
            context = _context(m)
            points = [Point(_norm_map(p["setting"]), _norm_map(p["explicit"]), p.get("paper_row"), p.get("speed_rank"))
                      for p in m["points"]]
            s = series.setdefault(context, Series(str(m["preset"]), (), points, {}, m.get("reference")))
            for i, p in enumerate(m["points"]):
                extra = {k: norm(v) for k, v in p["explicit"].items() if k not in SETTING}
                g = grouper.group(context, extra, p["runs"])
                if g is not None:
                    s.groups[i] = g
            for listed in m["anchors"].values():
                grouper.group(context, {}, listed)
        for s in series.values():
            if s.groups:
                first = next(iter(s.groups.values()))
                s.context = tuple((k, norm(first.setting[k])) for k in CONTEXT)
        ordered = sorted(series.values(), key=lambda s: (-len(s.groups), -s.n_runs))
        m0 = found[0]
        views.append(SweepView(name, str(m0["table"]), str(m0["description"]),
                               ordered[0].points if ordered else [], [s for s in ordered if s.groups]))
    order = list(TABLE_IDS)
    views.sort(key=lambda v: (order.index(v.table) if v.table in order else len(order), v.name))
    return views, grouper.unique()


def _norm_map(values: Mapping[str, Any]) -> dict[str, Any]:
    """A point's settings as comparable keys (see :func:`norm`)."""
    return {k: norm(v) for k, v in values.items()}


def view_for(views: Sequence[SweepView], table: str) -> SweepView | None:
    """The sweep whose `table:` field is ``table``."""
    return next((v for v in views if v.table == table), None)
