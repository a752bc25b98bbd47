"""The report's tables as text cells: Table 1, Tables 2-5, the factorization, resolution, conditioning, speed and
training tables, each with the paper's printed values beside ours and a floor and ceiling row.

Every cell is text. A measured number over several runs is ``mean ± std`` (sample std, n - 1) over the runs of its
setting, and the row or column beside it says which runs (training seeds x sampling seeds); a point that was not
measured is shown as missing, never filled from the paper.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from reports import paper
from reports.claims import TREND_RULE, Interval, Verdict, paired
from reports.runs import (
    ANCHORS,
    AUTOENCODER_FLOOR,
    CEILING,
    REAL_FLOOR,
    Group,
    Run,
    Stat,
    anchor_group,
    done,
    seeds_short,
)
from reports.sweeps import KEY_TITLES, Point, Series, SweepView, point_value, value_text, view_for

MISSING = "—"
DECIMALS = {"fid": 2, "precision": 2, "recall": 2, "psnr": 2, "is_mean": 1}
SIGNIFICANT = 3  # every other number: parameters (M), GFLOPs, TFLOPs, seconds, losses
SEEDS = "Seeds (training x sampling)"
ROUNDING = (
    "Rounding: FID, precision, recall and PSNR (dB) to 2 decimals, IS to 1 decimal; parameters (M), GFLOPs, TFLOPs, "
    "seconds and losses to 3 significant digits. `mean ± std` is over the runs of one setting (sample std, n-1), and "
    f"the '{SEEDS}' beside it says which runs ('3 x 1': 3 training seeds x 1 sampling seed; '- x 3': a model without "
    f"a training seed, 3 sampling seeds); a single run shows its value alone; {MISSING} marks a point that was not "
    "measured (never filled from the paper). Intervals: 95% Student t of paired differences (Claims, Rule 1)."
)
PAPER_EVAL = "Paper: Inception FID-5K (ADM evaluation) on ImageNet 256x256, 5K samples"
CONTEXT = ("preset", "dataset", "world", "feature_extractor", "n_samples", "n_ref", "solver", "device", "dtype")
TABLE1_OURS = (
    ("params_m", "Para ours (M)"),
    ("fid", "FID ours"),
    ("is_mean", "IS ours"),
    ("precision", "Pre ours"),
    ("recall", "Rec ours"),
    ("sample_time_per_64_s", "Time ours (s/64 img)"),
    ("gflops_per_image", "GFLOPs/img ours"),
)
PER_SETTING = ("params_m", "gflops_per_image", "sample_time_per_64_s")  # one value per setting: shown without a std


@dataclass
class Table:
    """A report table: id ('Table 2'), title, caption, header and cells as text."""

    id: str
    title: str
    caption: str
    header: list[str]
    rows: list[list[str]]


def fmt(x: float | None, key: str) -> str:
    """One number rounded as ROUNDING says, or MISSING."""
    if x is None or not math.isfinite(x):
        return MISSING
    if key in DECIMALS:
        return f"{x:.{DECIMALS[key]}f}"
    return np.format_float_positional(x, precision=SIGNIFICANT, fractional=False, trim="-")


def fmt_stat(st: Stat | None, key: str) -> str:
    """'mean ± std' over runs, the value alone for one run, or MISSING."""
    if st is None:
        return MISSING
    return fmt(st.mean, key) if st.n < 2 else f"{fmt(st.mean, key)} ± {fmt(st.std, key)}"


def cell(g: Group | None, key: str) -> str:
    """One metric of a group: mean ± std, or the mean alone for per-setting quantities."""
    if g is None:
        return MISSING
    st = g.stat(key)
    if key in PER_SETTING and st is not None:
        return fmt(st.mean, key)
    return fmt_stat(st, key)


def seeds_cell(g: Group | None) -> str:
    """'3 x 1' (training x sampling seeds) of a group, or MISSING."""
    return MISSING if g is None else seeds_short(g.pairs)


def setting_text(s: dict[str, Any]) -> str:
    """A short description of one eval setting: model, factorization, scales, steps, CFG, solver, preset."""
    if s.get("anchor") == REAL_FLOOR:
        return f"real held-out images, {s['preset']} n={s['n_samples']}"
    if s.get("anchor") == AUTOENCODER_FLOOR:
        return f"the same images through the autoencoder, {s['preset']} n={s['n_samples']}"
    parts = [s["model"], s["factorization"]] if len(s.get("scales") or ()) > 1 else [s["model"]]
    parts += [s["conditioning"]] if s.get("conditioning") not in (None, "adaln_zero") else []
    parts += [f"scales {value_text('scales', s['scales'])}", f"steps {value_text('steps', s['steps'])}",
              f"cfg {value_text('cfg', s['cfg'])}", s["solver"], f"{s['preset']} n={s['n_samples']}"]
    if s.get("anchor") == CEILING:
        parts.insert(0, "untrained")
    return ", ".join(map(str, parts))


def describe(groups: Sequence[Group]) -> str:
    """The evaluation context of some groups (preset, dataset, features, samples, seeds) for a caption."""
    if not groups:
        return "Ours: none measured."
    parts = [f"{k} {'/'.join(sorted({str(g.setting[k]) for g in groups}))}" for k in CONTEXT]
    trains = sorted({t for g in groups for t, _ in g.pairs if t is not None})
    samples = sorted({s for g in groups for _, s in g.pairs})
    return (f"Ours: {'; '.join(parts)}; training seeds {', '.join(map(str, trains)) or 'none'}; sampling seeds "
            f"{', '.join(map(str, samples))}.")


def anchors_of(groups: Sequence[Group], like: dict[str, Any] | None) -> list[tuple[str, Group | None]]:
    """The two floors and the ceiling (label, group or None) scored like ``like`` (Tables 1-5 anchors)."""
    return [(ANCHORS[a], anchor_group(groups, a, like)) for a in (REAL_FLOOR, AUTOENCODER_FLOOR, CEILING)]


ANCHOR_NOTE = (f"Floors: held-out real images scored as if generated, and the same images through the run's "
               f"autoencoder (what no diffusion model on this latent can beat); ceiling: MSF with untrained stages; "
               f"all scored like our rows, {MISSING} when no such run exists.")


def autoencoder_share(model: Group | None, groups: Sequence[Group]) -> float | None:
    """The autoencoder's share of a model's FID above the real floor: (FID(reconstructions) - FID(real)) /
    (FID(model) - FID(real)), from the floors scored like the model; None when one is missing."""
    if model is None:
        return None
    fid = model.stat("fid")
    real, coded = (anchor_group(groups, a, model.setting) for a in (REAL_FLOOR, AUTOENCODER_FLOOR))
    floor, ae = (g.stat("fid") if g is not None else None for g in (real, coded))
    if fid is None or floor is None or ae is None or not fid.mean > floor.mean:
        return None
    return (ae.mean - floor.mean) / (fid.mean - floor.mean)


def share_note(model: Group | None, groups: Sequence[Group], what: str) -> str:
    """A caption sentence: which share of a model's FID above the real floor is the autoencoder's."""
    share = autoencoder_share(model, groups)
    if share is None:
        return ""
    return (f"The autoencoder's floor is {100 * share:.0f}% of {what}'s FID above the real floor"
            + (" (the autoencoder, not the diffusion model, decides most of it)." if share > 0.5 else "."))


def _title(view: SweepView) -> str:
    """A table title from the sweep file's description, without its 'Table N:' prefix."""
    text = view.description
    head, sep, rest = text.partition(": ")
    return rest if sep and head.lower().startswith(("table", "fig")) else text


# ----------------------------------------------------------------------------------------------------------------------
# Table 1


def paper_row(point: Point) -> str | None:
    """The paper's Table 1 row that a main-sweep point reproduces, if any, as the planner recorded it (Table 1)."""
    return point.paper_row


def _table1_ours(g: Group | None) -> list[str]:
    """Our cells of one Table 1 row: measured metrics, seeds, device, dtype (Table 1)."""
    if g is None:
        return [MISSING] * (len(TABLE1_OURS) + 3)
    return [*(cell(g, k) for k, _ in TABLE1_OURS), seeds_cell(g), str(g.setting["device"]), str(g.setting["dtype"])]


def table1(view: SweepView | None, groups: Sequence[Group]) -> Table:
    """Table 1: the paper's rows once each, our main-sweep point beside the row it reproduces, then our other models
    and the floor and ceiling (Table 1)."""
    header = ["Model", "Setting", *(f"{c} paper" for c in paper.TABLE1_COLUMNS[:-1]), "Time paper (A800, batch 64)",
              *(label for _, label in TABLE1_OURS), SEEDS, "Device", "Dtype"]
    series = view.primary if view is not None else None
    matched: dict[str, Group] = {}
    others: list[Group] = []
    for i, g in sorted((series.groups if series else {}).items()):
        name = paper_row(series.points[i]) if series else None
        if name is not None:
            matched[name] = g
        else:
            others.append(g)
    rows = []
    for name in paper.table1_rows():
        printed = [paper.table1_cell(name, c).printed for c in paper.TABLE1_COLUMNS]
        found = matched.get(name)
        rows.append([name, setting_text(found.setting) if found else MISSING, *printed, *_table1_ours(found)])
    measured = [*matched.values(), *others]
    for g in others:
        rows.append([f"{g.setting['model']} (ours)", setting_text(g.setting), *[MISSING] * 6, *_table1_ours(g)])
    for label, anchor in anchors_of(groups, measured[0].setting if measured else None):
        rows.append([label, setting_text(anchor.setting) if anchor else MISSING, *[MISSING] * 6,
                     *_table1_ours(anchor)])
    caption = (
        "Paper: ImageNet 256x256, 50K samples, ADM's Inception evaluation; Para and Time as printed (Time: A800, "
        "batch 64). Ours: the points of the main sweep, each beside the paper's row it reproduces (the paper's rows "
        f"appear once); Time ours is sampling time per 64 images of one timed run per setting. {ANCHOR_NOTE} "
        f"{share_note(matched.get('MSF(cfg=1.4)'), groups, 'MSF(cfg=1.4)')} {describe(measured)}"
    )
    return Table("Table 1", "Class-conditional generation: the paper's comparison and ours", caption, header, rows)


# ----------------------------------------------------------------------------------------------------------------------
# Tables 2-5: one setting swept, settings across


def swept(view: SweepView) -> tuple[str, int]:
    """The one per-scale setting a Table 2-5 sweep varies: ('cfg' or 'steps', scale index) (Tables 2-5)."""
    found = [(k, i) for k, i in view.varying if i is not None]
    if len(found) != 1:
        raise ValueError(f"sweep {view.name} (table {view.table}) must vary one per-scale setting; varies {found}")
    return found[0]


def sweep_x(key: str, v: float) -> str:
    """A swept value as a column title: CFG with one decimal at least, steps as an integer (Tables 2-5)."""
    return str(int(v)) if key == "steps" else value_text("cfg", v)


def sweep_series(view: SweepView, series: Series | None) -> dict[float, Group]:
    """The groups of one series by the swept value (Tables 2-5)."""
    if series is None:
        return {}
    key, index = swept(view)
    return {float(point_value(series.points[i], key, index)): g for i, g in series.groups.items()}


def sweep_table(view: SweepView, series: Series | None, table_id: str, groups: Sequence[Group]) -> Table:
    """Tables 2-5 in the paper's layout (settings across, floor and ceiling last), the paper's FID-5K above ours."""
    key, index = swept(view)
    table = int(view.table)
    published = {round(x, 6): y for x, y in paper.curve(table).items()}
    ours = {round(x, 6): g for x, g in sweep_series(view, series).items()}
    planned = {round(float(point_value(p, key, index)), 6) for p in view.points}
    xs = sorted(set(published) | set(ours) | planned)
    like = next(iter(ours.values())).setting if ours else None
    anchors = anchors_of(groups, like)
    header = [f"{'CFG' if key == 'cfg' else 'steps'} scale {index + 1}", *(sweep_x(key, x) for x in xs),
              *(label for label, _ in anchors)]
    rows = [
        ["paper FID-5K", *(fmt(published.get(x), "fid") for x in xs), *[MISSING] * len(anchors)],
        ["ours FID", *(cell(ours.get(x), "fid") for x in xs), *(cell(g, "fid") for _, g in anchors)],
        [f"ours {SEEDS.lower()}", *(seeds_cell(ours.get(x)) for x in xs), *(seeds_cell(g) for _, g in anchors)],
    ]
    caption = f"{PAPER_EVAL}. Not measured: all {MISSING}. {ANCHOR_NOTE}"
    if ours:
        s = dict(next(iter(ours.values())).setting)
        fixed = list(s[key])
        fixed[index] = "·"
        other = "cfg" if key == "steps" else "steps"
        reference = series.groups.get(series.reference) if series and series.reference is not None else None
        caption = (f"{PAPER_EVAL}. Ours fixed: {key} {value_text(key, fixed)}, {other} {value_text(other, s[other])}, "
                   f"scales {value_text('scales', s['scales'])}, {s['factorization']}, {s['conditioning']}. "
                   f"{ANCHOR_NOTE} {share_note(reference or next(iter(ours.values())), groups, 'MSF')} "
                   f"{describe(list(ours.values()))}")
    return Table(table_id, _title(view), caption, header, rows)


# ----------------------------------------------------------------------------------------------------------------------
# One row per point: factorizations (Fig. 2), resolutions, conditioning


def _versus(g: Group, ref: Group | None, ref_label: str) -> str:
    """FID(g) - FID(ref) with its 95% interval, as a cell."""
    if ref is None:
        return MISSING
    if g is ref:
        return f"reference ({ref_label})"
    iv = paired(g.arm("this"), ref.arm("reference"))
    return MISSING if iv is None else iv.text()


def _resolution_cells(p: Point) -> list[str]:
    """Number of scales and base / full latent size of a point (Sec. 3.1)."""
    scales = p.expected.get("scales") or ()
    return [str(len(scales)), f"{scales[0] / scales[-1]:.3g}" if scales else MISSING]


POINT_TABLES: dict[str, tuple[list[str], Callable[[Point], list[str]] | None]] = {
    "resolutions": (["Number of scales", "Base / full"], _resolution_cells),
    "fig2": ([], None),
    "conditioning": ([], None),
}
POINT_TITLES = {
    "fig2": "Factorizations: generation FID at otherwise equal settings (Sec. 3.2, Fig. 2)",
    "resolutions": "Scale resolutions: base size and number of scales (Sec. 3.1)",
    "conditioning": "Stage conditioning: adaLN-Zero (DiT, the paper) vs TD-LN (DiMR)",
}


def points_table(view: SweepView, groups: Sequence[Group]) -> Table:
    """A sweep with one row per point (factorizations, resolutions, conditioning), the floor and the ceiling, and
    each point's paired FID difference to the preset's own setting (Sec. 3.1, 3.2, Fig. 2)."""
    extra_header, extra = POINT_TABLES.get(view.table, ([], None))
    series = view.primary
    points = series.points if series else view.points
    first = (view.varying or [("model", None)])[0][0]
    found = series.groups if series else {}
    ref_i = series.reference if series else None
    ref = found.get(ref_i) if ref_i is not None else None
    ref_label = value_text(first, point_value(points[ref_i], first, None)) if ref_i is not None else ""
    rows = []
    for i, p in enumerate(points):
        g = found.get(i)
        rows.append([value_text(first, point_value(p, first, None)), *(extra(p) if extra else []),
                     cell(g, "params_m"), cell(g, "gflops_per_image"), cell(g, "fid"), cell(g, "is_mean"),
                     seeds_cell(g), _versus(g, ref, ref_label) if g is not None else MISSING])
    like = next(iter(found.values())).setting if found else None
    for label, g in anchors_of(groups, like):
        rows.append([label, *[MISSING] * len(extra_header), cell(g, "params_m"), cell(g, "gflops_per_image"),
                     cell(g, "fid"), cell(g, "is_mean"), seeds_cell(g), MISSING])
    versus = f"FID - FID({ref_label or 'reference'}) [95% CI]"
    header = [KEY_TITLES.get(first, first), *extra_header, "Params (M)", "GFLOPs/img", "FID ours", "IS ours", SEEDS,
              versus]
    caption = f"No published numbers. Not measured: {MISSING}. {ANCHOR_NOTE}"
    if found:
        fixed = {k: v for k, v in next(iter(found.values())).setting.items()}
        for k, _ in view.varying:
            fixed[k] = "·"
        caption = (f"No published numbers. Fixed: {setting_text(fixed)}. The last column pairs each row's runs with "
                   f"the reference's by (training seed, sampling seed) (Claims, Rule 1). {ANCHOR_NOTE} "
                   f"{share_note(ref or next(iter(found.values())), groups, 'the reference row')} "
                   f"{describe(list(found.values()))}")
    return Table(view.table_id, POINT_TITLES.get(view.table, _title(view)), caption, header, rows)


def recon_table(runs: Sequence[Run], order: Sequence[str]) -> Table:
    """Factorizations: PSNR (dB) of the image decoded from the latent accumulated up to each scale (Fig. 2)."""
    recons = sorted(done(runs, "recon"), key=lambda r: (
        order.index(r.metrics["factorization"]) if r.metrics and r.metrics["factorization"] in order else len(order),
        r.name))
    n_scales = max((len(r.metrics["scales"]) for r in recons if r.metrics), default=0)
    rows = []
    for r in recons:
        m = r.metrics or {}
        psnr = [fmt(m["psnr_per_scale"][i], "psnr") if i < len(m["psnr_per_scale"]) else MISSING
                for i in range(n_scales)]
        rows.append([m["factorization"], value_text("scales", m["scales"]), *psnr, fmt(m["psnr_full"], "psnr")])
    return Table(
        "Table F1",
        "Factorizations: PSNR (dB) of the image decoded from the latent accumulated up to each scale (Fig. 2)",
        "The paper shows Fig. 2 qualitatively (no published numbers). One reconstruction run per factorization "
        "(no spread).",
        ["Factorization", "Scales", *(f"PSNR scale {i}" for i in range(n_scales)), "PSNR full"],
        rows,
    )


# ----------------------------------------------------------------------------------------------------------------------
# Speed, training, claims


SPEED_REASON = (
    "Counted FLOPs ignore memory-bound work (normalisation, softmax, element-wise ops, data movement), batch effects "
    "(how well a batch fills the device) and the implementation (kernels, fusion, precision), so a FLOP ratio need not "
    "equal a time ratio; the paper timed its own implementation on an A800 at batch 64."
)


def speed_table(runs: Sequence[Run]) -> Table:
    """Counted FLOPs, measured speed and FLOP utilisation per model from speed runs (Table 1 'Time', Sec. 4.2)."""
    rows: list[list[str]] = []
    for r in sorted(done(runs, "speed"), key=lambda r: r.name):
        m = r.metrics or {}
        switches = ", ".join(f"{k}={v}" for k, v in sorted((m["switches"] or {}).items())) or MISSING
        rows.append([
            r.name, m["model"], fmt(m["params_m"], "params_m"),
            " + ".join(f"{n}x{w:g}" for n, w in zip(m["steps"], m["cfg"], strict=True)),
            "/".join(fmt(x, "gflops") for x in m["gflops_per_forward"] or []) or MISSING,
            fmt(m["tflops_per_image"], "tflops"), fmt(m["sec_per_image"], "s"), fmt(64 * m["sec_per_image"], "s"),
            fmt(m["images_per_s"], "img/s"), fmt(m["matmul_tflops"], "tflops"), fmt(100 * m["mfu"], "mfu"),
            str(m["batch"]), str(m["method"]), str(m["device"]), str(m["dtype"]), switches,
        ])
    header = ["Node", "Model", "Params (M)", "Steps x CFG", "GFLOPs/forward per stage", "TFLOPs/img", "s/img",
              "s/64 img", "img/s", "Matmul TFLOP/s", "MFU (%)", "Batch", "Method", "Device", "Dtype", "Switches"]
    caption = ("Random weights at the paper's sizes (no trained model is timed here: the cost of a network does not "
               "depend on its weights); one timing per model (no spread). s/64 img = 64 x s/img; MFU = (TFLOPs/img / "
               "s/img) / the matmul rate measured on the same device and dtype. Ratios: Table S2.")
    return Table("Table S1", "Sampling speed at the paper's sizes (speed runs)", caption, header, rows)


def speed_ratios(runs: Sequence[Run]) -> Table:
    """DiT-XL/2 over MSF: the paper's time ratio beside our counted FLOP ratio and measured time ratio (Table 1
    'Time', Sec. 4.2)."""
    t_dit, t_msf = paper.table1_cell("DiT-XL/2 [38]", "Time"), paper.table1_cell("MSF(cfg=1.4)", "Time")
    rows = [["paper: time per 64 images (Table 1)", f"{t_dit.printed} s / {t_msf.printed} s",
             f"{(t_dit.value or math.nan) / (t_msf.value or math.nan):.2f}x",
             "trained weights, the paper's implementation, A800, batch 64"]]
    by_model: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(done(runs, "speed"), key=lambda r: r.name):
        by_model.setdefault(str((r.metrics or {}).get("paper_row")), []).append(r.metrics or {})
    for a in by_model.get("MSF(cfg=1.4)", []):
        for b in by_model.get("DiT-XL/2 [38]", []):
            if any(a[k] != b[k] for k in ("device", "dtype", "batch", "method", "switches")):
                continue
            where = f"random weights, {a['device']}, {a['dtype']}, batch {a['batch']}, {a['method']}"
            rows += [
                ["ours: counted FLOPs per image", f"{fmt(b['tflops_per_image'], 't')} / "
                 f"{fmt(a['tflops_per_image'], 't')} TFLOPs", f"{b['tflops_per_image'] / a['tflops_per_image']:.2f}x",
                 "counted (the paper's sizes, steps and CFG)"],
                ["ours: measured time per image",
                 f"{fmt(b['sec_per_image'], 's')} s / {fmt(a['sec_per_image'], 's')} s",
                 f"{b['sec_per_image'] / a['sec_per_image']:.2f}x", where],
            ]
    return Table("Table S2", "DiT-XL/2 over MSF: time and FLOP ratios", SPEED_REASON,
                 ["Ratio", "DiT-XL/2 / MSF", "Ratio (x)", "Basis"], rows)


def train_table(runs: Sequence[Run]) -> Table:
    """Per-stage training summary from train runs, one row per run folder (Sec. 4.1, Fig. 4)."""
    rows = []
    for r in sorted(done(runs, "train"), key=lambda r: train_order(r)):
        m = r.metrics or {}
        rows.append([r.name, m["model"], m["factorization"], value_text("scales", train_scales(r)),
                     str(r.spec.get("conditioning", MISSING)), str(m["stage"]), str(m["train_seed"]),
                     str(m["scale_size"]), str(m["steps"]), fmt(m["final_loss"], "loss"),
                     fmt(m["final_loss_ema100"], "loss"), fmt(m["params_m"], "params_m"), fmt(m["sec_per_step"], "s"),
                     fmt(m["data_wait_frac"], "frac")])
    header = ["Node", "Model", "Factorization", "Scales", "Conditioning", "Stage", "Training seed", "Scale size",
              "Steps", "Final loss", "Final loss (EMA 100)", "Params (M)", "s/step", "Data wait fraction"]
    caption = ("One row per run folder (single values, no spread). The paper trains scale 1 for 400k and scale 2 "
               "for 250k iterations at batch 2560 (Sec. 4.1).")
    return Table("Table T1", "Training (train runs)", caption, header, rows)


def train_scales(r: Run) -> list[int]:
    """The latent scales of a train run, from its spec's factorization."""
    return list((r.spec.get("factorization") or {}).get("scales") or [])


def train_order(r: Run) -> tuple[Any, ...]:
    """Train runs ordered by arm (model, factorization, scales, conditioning), then stage and training seed."""
    m = r.metrics or {}
    return (m["model"], m["factorization"], tuple(train_scales(r)), str(r.spec.get("conditioning")), m["stage"],
            m["train_seed"], r.name)


def autoencoder_margin(model: Group | None, groups: Sequence[Group]) -> float | None:
    """FID(autoencoder floor) - FID(real floor) scored like ``model``: what the autoencoder alone costs."""
    if model is None:
        return None
    real, coded = (anchor_group(groups, a, model.setting) for a in (REAL_FLOOR, AUTOENCODER_FLOOR))
    stats = [g.stat("fid") if g is not None else None for g in (real, coded)]
    return None if stats[0] is None or stats[1] is None else stats[1].mean - stats[0].mean


def claims_table(verdicts: Sequence[Verdict], stand_in: Sequence[Verdict] = (), stand_in_name: str = "",
                 trends: Mapping[str, str] | None = None, margin: float | None = None) -> Table:
    """Each claim, its evidence, the deciding paired difference with its 95% interval, and the verdict; with a
    stand-in, its verdict, deciding difference (else its evidence) and, for Tables 2-5, how its trend reads beside
    ours (trends: 'Table 2' -> reading) (Claims). A deciding FID difference smaller than ``margin`` (what the
    autoencoder alone costs) says so."""
    caption = ("Rules below. Differences are paired by (training seed, sampling seed) and judged by their 95% "
               "Student-t intervals (Rule 1). Our FIDs may use another feature network, dataset and sample count than "
               "the paper's Inception FID-5K: only differences within our runs are judged.")
    if margin is not None:
        caption += (f" The autoencoder's margin, FID(autoencoder floor) - FID(real floor) = {fmt(margin, 'fid')}, is "
                    "what the autoencoder alone costs; a deciding difference smaller than it is marked: at this scale "
                    "the autoencoder could produce or hide a difference of that size.")

    def deciding(v: Verdict) -> str:
        small = margin is not None and v.fid_difference is not None and abs(v.fid_difference) < margin
        return v.interval + (f" (smaller than the autoencoder's margin {fmt(margin, 'fid')})" if small else "")

    header = ["Claim", "Evidence", "Deciding difference [95% CI]", "Verdict"]
    rows = [[v.claim, v.evidence, deciding(v), v.verdict] for v in verdicts]
    if stand_in:
        caption += f" The last column judges the same claim by the same rules on the stand-in ({stand_in_name})."
        header.append(f"On the stand-in ({stand_in_name})")
        other = {v.claim: v for v in stand_in}

        def cell(v: Verdict) -> str:
            """The stand-in's verdict and deciding difference, and its trend's reading beside ours."""
            if v.claim not in other:
                return MISSING
            o = other[v.claim]
            text = f"{o.verdict}: {o.interval if o.interval != MISSING else o.evidence}"
            table = re.search(r"(Table \d)\)$", v.claim)
            reading = (trends or {}).get(table.group(1)) if table else None
            return text + (f"; trend (Table D1): {reading}" if reading else "")

        rows = [row + [cell(v)] for row, v in zip(rows, verdicts, strict=True)]
    return Table("Claims", "Each claim of the paper, our evidence at this preset and a verdict", caption, header, rows)


def trends_table(rows: Sequence[tuple[str, str, Interval | None, Interval | None, str]],
                 names: tuple[str, str]) -> Table:
    """Each sweep's fitted FID change here and on the stand-in, and how they relate (TREND_RULE; Tables 2-5)."""

    def text(iv: Interval | None) -> str:
        return MISSING if iv is None else iv.text()

    return Table("Table D1", f"Trends here ({names[0]}) and on the stand-in ({names[1]})",
                 TREND_RULE + " FIDs of the two datasets come from different feature networks: only the direction of "
                 "each trend is compared, never the values.",
                 ["Sweep", "Settings", f"FID change here ({names[0]})", f"On the stand-in ({names[1]})", "Reading"],
                 [[sweep, settings, text(a), text(b), reading] for sweep, settings, a, b, reading in rows])


def sweep_tables(views: Sequence[SweepView], groups: Sequence[Group]) -> list[Table]:
    """Tables 2-5 from their sweep files, an extra table (2b, ...) for each further series of 2+ points."""
    out = []
    for table in ("2", "3", "4", "5"):
        view = view_for(views, table)
        if view is None:
            continue
        extra = [s for s in view.series[1:] if len(s.groups) >= 2]
        out.append(sweep_table(view, view.primary, view.table_id, groups))
        out += [sweep_table(view, s, f"{view.table_id}{chr(ord('b') + i)}", groups) for i, s in enumerate(extra)]
    return out
