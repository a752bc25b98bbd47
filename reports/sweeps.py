"""Which eval runs make which table: the sweep files (ablations/sweeps/*.yaml), their ``table:`` field and their eval
points (Tables 1-5, Fig. 2, resolutions, conditioning).

Each point of a sweep is resolved as the runner resolves it (preset YAML < the sweep's base block < the point) into
the settings its eval runs record in metrics.json: model, cfg, steps and, for MSF, factorization, scales and
conditioning. A group of eval runs (reports/runs.py) belongs to a point when these settings are equal. The groups of
one sweep that were also scored alike (preset, dataset, features, sample counts, solver, device, dtype), and whose
models of one family and stage count were trained alike (``train_steps``), form a :class:`Series`; the series
covering most points is the sweep's table, the others become extra tables (Table 2b, ...). When no group matches the
resolved settings (runs made with command-line overrides of keys the sweep does not set), only the keys the sweep's
points set are matched and the others join the series' context.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ablations.config import (
    PRESETS_DIR,
    SWEEPS_DIR,
    Config,
    ConfigError,
    available,
    load_sweep,
    load_yaml,
    point_config,
)
from ablations.config import set_key as set_config_key
from ablations.config import typed as typed_config
from reports.runs import PROTOCOL, Group

TABLE_IDS = {  # the sweep file's `table:` -> the report's table
    "1": "Table 1",
    "2": "Table 2",
    "3": "Table 3",
    "4": "Table 4",
    "5": "Table 5",
    "fig2": "Table F2",
    "resolutions": "Table R1",
    "conditioning": "Table C1",
    "speed": "Table S1",
}
POINT_KEYS = {  # sweep-file key -> its name in metrics.json
    "model": "model",
    "sample.cfg": "cfg",
    "sample.steps": "steps",
    "msf.factorization": "factorization",
    "msf.scales": "scales",
    "msf.conditioning": "conditioning",
}
KEY_TITLES = {"model": "Model", "cfg": "CFG", "steps": "Steps", "factorization": "Factorization",
              "scales": "Scales (latent sizes)", "conditioning": "Conditioning"}
CONTEXT = PROTOCOL  # scored alike
NAMED = ("model", "factorization", "conditioning")  # settings whose value names itself in a label


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
    """One eval point of a sweep: the settings its runs record, resolved (strict), and those the point itself sets,
    which no command line can override (explicit)."""

    expected: dict[str, Any]
    explicit: dict[str, Any]

    def at(self, settings: dict[str, Any]) -> bool:
        """Whether the point's resolved settings equal ``settings``."""
        return all(settings.get(k) == v for k, v in self.expected.items())


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
    """The (key, index) of every setting that differs between points, in the sweep file's key order."""
    out: list[tuple[str, int | None]] = []
    keys = list(dict.fromkeys(k for p in points for k in p.explicit if k != "anchor"))
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


def _base_config(preset: str, base: dict[str, Any]) -> Config | None:
    """The runner's configuration of a sweep at a preset before its points: preset YAML < the sweep's base block;
    None when it does not resolve (an unknown preset, a changed key)."""
    data: dict[str, Any] = {}
    path = PRESETS_DIR / f"{preset}.yaml"
    try:
        for k, v in (load_yaml(path) if path.is_file() else {}).items():
            set_config_key(data, k, v)
        for k, v in base.items():
            set_config_key(data, k, v)
        return typed_config(data)
    except ConfigError:
        return None


def _resolved(cfg: Config | None, point: dict[str, Any]) -> dict[str, Any] | None:
    """The metrics-named model settings of one point resolved on a sweep's configuration."""
    if cfg is None:
        return None
    try:
        cfg = point_config(cfg, point)
    except ConfigError:
        return None
    model = point.get("model", "msf")
    out = {"model": model, "anchor": None, "cfg": cfg.sample.cfg, "steps": cfg.sample.steps}
    if model == "msf":
        out |= {"factorization": cfg.msf.factorization, "scales": cfg.msf.scales,
                "conditioning": cfg.msf.conditioning}
    return {k: norm(v) for k, v in out.items()}


def _points(cfg: Config | None, sweep_points: Sequence[dict[str, Any]]) -> list[Point]:
    """The sweep file's points, resolved on the sweep's configuration."""
    points = []
    for p in sweep_points:
        explicit = {"model": p.get("model", "msf"), "anchor": None}
        explicit |= {POINT_KEYS[k]: norm(v) for k, v in p.items() if k in POINT_KEYS}  # base keys may be overridden
        points.append(Point(_resolved(cfg, p) or explicit, explicit))
    return points


def _series(groups: Sequence[Group], preset: str, points: list[Point], strict: bool,
            reference: int | None) -> list[Series]:
    """Groups of one preset matched to points and split by what else they share."""
    found: dict[tuple[tuple[str, Any], ...], list[dict[int, Group]]] = defaultdict(list)
    for g in groups:
        if g.setting["preset"] != preset:
            continue
        for i, p in enumerate(points):
            want = p.expected if strict else p.explicit
            if all(norm(g.setting[k]) == v for k, v in want.items()):
                extra = () if strict else tuple(k for k in g.setting if k not in want and k not in CONTEXT)
                context = tuple((k, norm(g.setting[k])) for k in (*CONTEXT, *extra))
                place = next((s for s in found[context] if i not in s and _trained_alike(g, s.values())), None)
                if place is None:  # another training length of a model already here: a series of its own
                    place = {}
                    found[context].append(place)
                place[i] = g
    return [Series(preset, ctx, points, gs, reference) for ctx, series in found.items() for gs in series]


def _trained_alike(g: Group, others: Iterable[Group]) -> bool:
    """Whether ``g`` was trained as long as the groups of its model family with as many stages among ``others``."""
    steps = g.setting["train_steps"] or ()
    return all(h.setting["train_steps"] == g.setting["train_steps"] for h in others
               if h.setting["model"] == g.setting["model"] and len(h.setting["train_steps"] or ()) == len(steps))


def sweep_views(groups: Sequence[Group]) -> list[SweepView]:
    """Every sweep file with the series of eval groups found for it, in the report's table order."""
    presets = sorted({str(g.setting["preset"]) for g in groups}) or ["tiny"]
    views = []
    for name in available(SWEEPS_DIR):
        series: list[Series] = []
        first: list[Point] | None = None
        for preset in presets:
            sweep, base = load_sweep(name, preset)
            cfg = _base_config(preset, base)
            points = _points(cfg, sweep.points)
            first = points if first is None else first
            default = _resolved(cfg, {})
            reference = next((i for i, p in enumerate(points) if default is not None and p.at(default)), None)
            series += _series(groups, preset, points, True, reference) or _series(groups, preset, points, False,
                                                                                   reference)
        series.sort(key=lambda s: (-len(s.groups), -s.n_runs))
        views.append(SweepView(name, sweep.table, sweep.description, series[0].points if series else first or [],
                               series))
    order = list(TABLE_IDS)
    return sorted(views, key=lambda v: (order.index(v.table) if v.table in order else len(order), v.name))


def view_for(views: Sequence[SweepView], table: str) -> SweepView | None:
    """The sweep whose `table:` field is ``table``."""
    return next((v for v in views if v.table == table), None)
