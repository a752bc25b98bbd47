"""The report's figures (matplotlib's object API with the Agg canvas: no global backend state).

FID vs CFG and steps with the paper's curve and ours on separate panels (Tables 2-5), training loss per arm (Fig. 4),
the factorizations decoded per scale (Fig. 2), base / residual / sum of generated MSF samples, sample grids per sweep
point (Figs. 6-12 style) and quality vs compute with labelled points (Table 1, Sec. 4.2).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter, ScalarFormatter

from reports import paper
from reports.runs import Group, Run, Stat, done, load_array, order_key, train_stats
from reports.sweeps import SweepView, point_label, view_for
from reports.tables import fmt, sweep_series, sweep_x, swept, train_order

MAX_GRID_CLASSES, MAX_GRID_SAMPLES, MAX_DECOMP_IMAGES = 4, 4, 2
EMA_SPAN = 100  # training steps, as final_loss_ema100


@dataclass(frozen=True)
class Plot:
    """A figure written beside the report."""

    name: str
    title: str
    path: Path


def _save(fig: Figure, out_dir: Path, name: str, title: str) -> Plot:
    """Write a figure as PNG."""
    path = out_dir / f"{name}.png"
    fig.savefig(path, dpi=80)
    return Plot(name, title, path)


def features_text(s: dict[str, Any]) -> str:
    """How our FID was scored: the feature network by name, the dataset and the sample count."""
    return f"features {s['feature_extractor']}, {s['dataset']}, n={s['n_samples']}"


# ----------------------------------------------------------------------------------------------------------------------
# Tables 2-5


def plot_sweeps(name: str, views: Sequence[SweepView], out_dir: Path) -> Plot | None:
    """FID vs CFG (Tables 2, 3) or vs steps (Tables 4, 5): the paper's curve above, ours below, each panel with its
    own y-axis (Tables 2-5)."""
    if not any(v.primary for v in views):
        return None
    fig = Figure(figsize=(6.5 * len(views), 7.5))  # fixed margins: constrained layout costs seconds here
    axes = fig.subplots(2, len(views), squeeze=False, sharex="col")
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.07, top=0.95, wspace=0.22, hspace=0.28)
    for col, view in enumerate(views):
        key, index = swept(view)
        published = paper.curve(int(view.table))
        top, bottom = axes[0, col], axes[1, col]
        top.plot(list(published), list(published.values()), "o--", color="0.4")
        top.set(title=f"{view.table_id}: paper", ylabel="paper: Inception FID-5K, ImageNet 256")
        ours = sweep_series(view, view.primary)
        stats = {x: st for x, g in sorted(ours.items()) if (st := g.stat("fid")) is not None}
        for x, g in ours.items():  # every run, faint
            values = list(g.values("fid").values())
            bottom.plot([x] * len(values), values, ".", color="C0", alpha=0.35)
        if stats:
            bottom.errorbar(list(stats), [st.mean for st in stats.values()], capsize=3, color="C0", fmt="s-",
                            yerr=[0.0 if st.n < 2 else st.std for st in stats.values()])
            scored = features_text(next(iter(ours.values())).setting)
        else:
            bottom.text(0.5, 0.5, "ours: not measured", transform=bottom.transAxes, ha="center")
            scored = "not measured"
        bottom.ticklabel_format(axis="y", useOffset=False)
        bottom.set_title(f"{view.table_id}: ours (mean ± std over runs; dots: runs)\n{scored}", fontsize=9)
        bottom.set(ylabel="ours: FID",
                   xlabel=f"{'CFG' if key == 'cfg' else 'steps'} of scale {index + 1}"
                   + (" (DiT convention: 1 = no guidance)" if key == "cfg" else ""))
        if key == "steps":
            bottom.set_xscale("log")
            bottom.xaxis.set_major_formatter(ScalarFormatter())
            bottom.xaxis.set_minor_formatter(NullFormatter())
        xs = sorted(set(published) | set(ours))
        bottom.set_xticks(xs, [sweep_x(key, x) for x in xs])
    what = "CFG" if swept(views[0])[0] == "cfg" else "sampling steps"
    return _save(fig, out_dir, name, f"FID vs {what} per scale: the paper (top) and ours (bottom), separate y-axes "
                 f"({', '.join(v.table_id for v in views)}); error bars: std over runs")


# ----------------------------------------------------------------------------------------------------------------------
# Fig. 4: training loss


def ema_by_step(steps: np.ndarray, values: np.ndarray, span: int = EMA_SPAN) -> np.ndarray:
    """An exponential moving average with a time constant in training steps, so that thinned logs (every k-th step)
    smooth like full ones: weight (1 - alpha)^gap with alpha = 2 / (span + 1) (Fig. 4)."""
    decay = 1.0 - 2.0 / (span + 1)
    out = np.empty_like(values)
    out[0] = values[0]
    for i in range(1, len(values)):
        w = decay ** max(float(steps[i] - steps[i - 1]), 0.0)
        out[i] = w * out[i - 1] + (1 - w) * values[i]
    return out


def _curves(runs: Sequence[Run]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Mean, min and max over runs of the smoothed loss on a common step grid (Fig. 4)."""
    curves = []
    for r in runs:
        recs = train_stats(r)
        if len(recs) < 2:
            continue
        step = np.array([rec["step"] for rec in recs], dtype=np.float64)
        curves.append((step, ema_by_step(step, np.array([rec["loss"] for rec in recs], dtype=np.float64))))
    if not curves:
        return None
    grid = np.linspace(max(c[0][0] for c in curves), min(c[0][-1] for c in curves), 200)
    ys = np.stack([np.interp(grid, s, y) for s, y in curves])
    return grid, ys.mean(0), ys.min(0), ys.max(0)


def _arm(r: Run) -> tuple[Any, ...]:
    """A training arm: model, factorization, scales, conditioning."""
    return train_order(r)[:4]


def _arm_label(arm: tuple[Any, ...]) -> str:
    """'msf residual 6/8 adaln_zero'."""
    model, fac, scales, cond = arm
    return f"{model} {fac} {'/'.join(map(str, scales))}" + ("" if cond in ("adaln_zero", "None") else f" {cond}")


def plot_loss(runs: Sequence[Run], paper_arm: Sequence[Run], out_dir: Path) -> Plot | None:
    """Training loss per scale: the paper's arm (Fig. 4) and every arm, each a mean over training seeds with a band
    from the lowest to the highest seed (Fig. 4)."""
    trains = [r for r in done(runs, "train") if len(train_stats(r)) >= 2]
    if not trains:
        return None
    fig = Figure(figsize=(13, 4.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    styles = ("-", "--", ":", "-.")
    by_stage: dict[int, list[Run]] = defaultdict(list)
    for r in paper_arm:
        by_stage[int((r.metrics or {})["stage"])].append(r)
    for stage, rs in sorted(by_stage.items()):
        c = _curves(rs)
        if c is not None:
            left.plot(c[0], c[1], color=f"C{stage}", label=f"stage {stage} (the paper's scale {stage + 1}), "
                      f"{len(rs)} training seed(s)")
            left.fill_between(c[0], c[2], c[3], color=f"C{stage}", alpha=0.2)
    if by_stage:
        left.legend(fontsize=8)
    else:
        left.text(0.5, 0.5, "the paper's arm was not trained", transform=left.transAxes, ha="center")
    left.set(title="Fig. 4: the paper's arm (2-scale residual MSF, adaLN-Zero)", xlabel="training step",
             ylabel=f"flow-matching loss (Eq. 5), EMA span {EMA_SPAN} steps")
    arms: dict[tuple[Any, ...], dict[int, list[Run]]] = defaultdict(lambda: defaultdict(list))
    chosen = {id(r) for r in paper_arm}
    seen: set[tuple[Any, ...]] = set()  # (arm, stage, training seed): each counted once, the paper's arm as chosen
    for r in sorted(trains, key=lambda r: (id(r) not in chosen, r.name)):
        m = r.metrics or {}
        key = (_arm(r), int(m["stage"]), m["train_seed"])
        if key not in seen:
            seen.add(key)
            arms[key[0]][key[1]].append(r)
    cmap = colormaps["tab10" if len(arms) <= 10 else "tab20"]
    handles = []
    for k, (arm, stages) in enumerate(sorted(arms.items())):
        color = cmap(k % cmap.N)
        seeds = {(r.metrics or {})["train_seed"] for rs in stages.values() for r in rs}
        for stage, rs in sorted(stages.items()):
            c = _curves(rs)
            if c is not None:
                right.plot(c[0], c[1], color=color, ls=styles[stage % len(styles)], lw=1.2)
                right.fill_between(c[0], c[2], c[3], color=color, alpha=0.12)
        handles.append(Line2D([], [], color=color, label=f"{_arm_label(arm)} ({len(seeds)} seed(s))"))
    n_stages = max(len(s) for s in arms.values())
    handles += [Line2D([], [], color="0.3", ls=styles[i % len(styles)], label=f"stage {i}") for i in range(n_stages)]
    right.set(title="Every arm: mean over training seeds, band min-max", xlabel="training step")
    fig.legend(handles=handles, loc="outside right upper", fontsize=7)
    return _save(fig, out_dir, "fig_loss", "Training loss per scale (Fig. 4): the paper's arm (left) and every arm "
                 f"(right), smoothed with an EMA of span {EMA_SPAN} steps, mean over training seeds, min-max band")


# ----------------------------------------------------------------------------------------------------------------------
# Images: Fig. 2 per scale, base / residual / sum of samples, sample grids


def plot_recon_decomposition(runs: Sequence[Run], order: Sequence[str], out_dir: Path) -> Plot | None:
    """Images decoded from the latent accumulated up to each scale, per factorization (Fig. 2)."""
    recons = [r for r in done(runs, "recon") if (r.path / "decomposition.npy").is_file()]
    if not recons:
        return None
    recons.sort(key=lambda r: (order.index(str((r.metrics or {})["factorization"]))
                               if (r.metrics or {})["factorization"] in order else len(order), r.name))
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
                ax.set_title(f"{m['factorization']} #{j}\nscale {i} ({m['scales'][i]}), {fmt(psnr, 'psnr')} dB",
                             fontsize=8)
            row += 1
    return _save(fig, out_dir, "fig_decomposition",
                 "Multi-scale decomposition decoded per scale, per factorization (Fig. 2; PSNR vs the original image)")


def plot_sample_decomposition(group: Group | None, out_dir: Path) -> Plot | None:
    """Generated MSF samples split into the decoded base, residual(s) and their sum, from decomposition.npy
    (Figs. 1, 3)."""
    runs = sorted((r for r in (group.runs if group else []) if (r.images / "decomposition.npy").is_file()),
                  key=lambda r: order_key(r.seeds))
    if not runs:
        return None
    r = runs[0]
    a = load_array(r.images / "decomposition.npy", 5)  # [samples, columns, H, W, 3]
    m = r.metrics or {}
    titles = list(m.get("decomposition_columns") or []) + [f"column {i}" for i in range(a.shape[1])]
    fig = Figure(figsize=(2.2 * a.shape[1], 2.3 * a.shape[0] + 0.5), layout="constrained")
    axes = fig.subplots(a.shape[0], a.shape[1], squeeze=False)
    for j, sample in enumerate(a):
        for i, image in enumerate(sample):
            ax = axes[j, i]
            ax.imshow(image)
            ax.set_axis_off()
            if j == 0:
                ax.set_title(titles[i], fontsize=8)
    t, s = r.seeds
    fig.suptitle(f"{group.setting['model'] if group else ''}, cfg {'/'.join(map(str, m['cfg']))}, steps "
                 f"{'/'.join(map(str, m['steps']))}; training seed {t}, sampling seed {s}", fontsize=9)
    return _save(fig, out_dir, "fig_sample_decomposition",
                 "Generated MSF samples: decoded base, residual(s) and their sum (one row per sample; Figs. 1, 3)")


def mosaic(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[classes, k, H, W, 3] -> one image, classes down and samples across (a subset of both)."""
    classes = np.unique(np.linspace(0, grid.shape[0] - 1, min(grid.shape[0], MAX_GRID_CLASSES)).round().astype(int))
    g = grid[classes, :MAX_GRID_SAMPLES]  # [c, k, H, W, 3]
    c, k, h, w, _ = g.shape
    return g.transpose(0, 2, 1, 3, 4).reshape(c * h, k * w, 3), classes


def plot_grids(views: Sequence[SweepView], out_dir: Path) -> list[Plot]:
    """Samples per class of every point of every sweep, one panel per point from its first run with grid.npy
    (Figs. 6-12 style)."""
    plots = []
    for view in views:
        series = view.primary
        panels = []
        for i, g in sorted((series.groups if series else {}).items()):
            runs = sorted((r for r in g.runs if (r.images / "grid.npy").is_file()), key=lambda r: order_key(r.seeds))
            if runs:
                panels.append((point_label(view, i, series.points if series else None), runs[0]))
        if not panels:
            continue
        cols = min(3, len(panels))
        rows = math.ceil(len(panels) / cols)
        fig = Figure(figsize=(2.6 * cols, 3.1 * rows))  # fixed margins: images only, no ticks to lay out
        axes = fig.subplots(rows, cols, squeeze=False)
        fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.55 / (3.1 * rows), wspace=0.08,
                            hspace=0.4)
        for ax in axes.flat:
            ax.set_axis_off()
        for ax, (label, r) in zip(axes.flat, panels, strict=False):
            image, classes = mosaic(load_array(r.images / "grid.npy", 5))
            ax.imshow(image, interpolation="nearest")
            t, s = r.seeds
            rows_text = f"classes {', '.join(map(str, classes))} (rows)"
            ax.set_title(f"{label}\n{rows_text}\ntraining seed {t}, sampling seed {s}", fontsize=6.5)
        plots.append(_save(fig, out_dir, f"fig_grid_{view.name}",
                           f"{view.table_id} ({view.name}): samples per class for every point, one run each "
                           "(rows: classes; Figs. 6-12 style)"))
    return plots


# ----------------------------------------------------------------------------------------------------------------------
# Quality vs compute


def plot_compute(views: Sequence[SweepView], out_dir: Path) -> Plot | None:
    """Quality vs compute: FID against GFLOPs per image and sampling time per 64 images, every point numbered and
    named in a key beside the plot (Table 1, Sec. 4.2)."""
    points: dict[int, tuple[str, Group]] = {}
    for view in views:
        series = view.primary
        for i, g in sorted((series.groups if series else {}).items()):
            label = point_label(view, i, series.points if series else None)
            points.setdefault(id(g), (f"{view.table_id}: {label}", g))
    axes_keys = (("gflops_per_image", "GFLOPs per image"), ("sample_time_per_64_s", "sampling time per 64 images (s)"))
    shown = [(text, g) for text, g in points.values() if g.stat("fid") and any(g.stat(k) for k, _ in axes_keys)]
    if not shown:
        return None
    models = sorted({g.setting["model"] for _, g in shown})
    fig = Figure(figsize=(16, 6.5), layout="constrained")
    for ax, (key, label) in zip(fig.subplots(1, 2), axes_keys, strict=True):
        xy: dict[int, tuple[float, float, Stat, Group]] = {}
        for n, (_, g) in enumerate(shown, 1):
            fid, cost = g.stat("fid"), g.stat(key)
            if fid is not None and cost is not None:
                xy[n] = (cost.mean, fid.mean, fid, g)
                color = f"C{models.index(g.setting['model']) % 10}"
                ax.errorbar(cost.mean, fid.mean, yerr=0.0 if fid.n < 2 else fid.std, fmt="o", color=color, capsize=3)
        ax.set(xlabel=label, ylabel="ours: FID", title=features_text(shown[0][1].setting))
        if not xy:
            ax.text(0.5, 0.5, "not measured", transform=ax.transAxes, ha="center")
            continue
        xs, ys = np.array([v[0] for v in xy.values()]), np.array([v[1] for v in xy.values()])
        log = len(xs) > 0 and xs.min() > 0 and xs.max() / xs.min() > 20  # log only where the points span decades
        if log:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
        u = np.log10(xs) if log else xs
        cx, cy = (u - u.min()) / (np.ptp(u) or 1.0), (ys - ys.min()) / (np.ptp(ys) or 1.0)  # 0..1 across the axes
        clusters: list[tuple[float, float, list[int]]] = []  # a point under an earlier label joins that label
        for n, px, py in sorted(zip(xy, cx, cy, strict=True), key=lambda p: (p[1], p[2])):
            near = next((c for c in clusters if abs(c[1] - py) < 0.05 and
                         c[0] - 0.02 <= px <= c[0] + 0.012 * (len(",".join(map(str, c[2]))) + 2)), None)
            if near is None:
                clusters.append((px, py, [n]))
            else:
                near[2].append(n)
        for _, _, numbers in clusters:
            ax.annotate(",".join(map(str, sorted(numbers))), xy[numbers[0]][:2], xytext=(4, 3),
                        textcoords="offset points", fontsize=7)
        ax.legend(handles=[Line2D([], [], marker="o", ls="", color=f"C{i % 10}", label=m)
                           for i, m in enumerate(models)], fontsize=8, loc="best")
        ax.ticklabel_format(axis="y", useOffset=False)
    key_handles = [Line2D([], [], ls="", label=f"{n}: {text}") for n, (text, _) in enumerate(shown, 1)]
    fig.legend(handles=key_handles, loc="outside right upper", fontsize=6, handlelength=0, handletextpad=0,
               title="points", title_fontsize=7)
    return _save(fig, out_dir, "fig_compute", "Quality vs compute: FID against GFLOPs per image and sampling time, one "
                 "numbered point per sweep point, named in the key (error bars: std over runs)")


def sweep_figures(views: Sequence[SweepView], out_dir: Path) -> dict[str, Plot | None]:
    """fig_cfg (Tables 2-3) and fig_steps (Tables 4-5) (Tables 2-5)."""
    out: dict[str, Plot | None] = {}
    for name, tables in (("fig_cfg", ("2", "3")), ("fig_steps", ("4", "5"))):
        found = [v for t in tables if (v := view_for(views, t)) is not None]
        out[name] = plot_sweeps(name, found, out_dir) if found else None
    return out
