"""Reports (reports/: runs, sweeps, claims, tables, figures, render, build, publish; MSF Tables 1-5, Figs. 2, 4, 6-12):
built from synthetic run folders and sweep manifests that follow the schema (the manifests checked against the
planner's own functions), the Markdown tables parsed back with pandas and compared with numpy / scipy statistics of the
metrics.json files of the runs the manifests list, claim verdicts against the synthetic design and against rule inputs
built by hand, and the HTML rendered by headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import _runfolders as rf  # tests/ is on sys.path under pytest's default import mode
import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from scipy import stats as scipy_stats

from ablations.config import PRESETS_DIR, load_sweep, load_yaml, point_config, set_key, typed
from ablations.engine.families import ANCHOR_FAMILIES, FAMILIES
from ablations.graph import reported, setting_of
from ablations.run import main as run_main
from reports import figures, paper
from reports.build import build_report, main
from reports.claims import (
    CONTRADICTED,
    SUPPORTED,
    UNRESOLVED,
    Arm,
    Interval,
    LossPair,
    Timed,
    compare_trends,
    judge_best,
    judge_factorization,
    judge_flat,
    judge_loss,
    judge_speed,
    paired,
    t_interval,
    trend,
)
from reports.publish import MAX_STATS, copy_metadata, publish
from reports.sweeps import MANIFESTS, Point, norm, varying
from reports.tables import MISSING

ROUND_FID = 0.005 + 1e-9  # FID cells carry 2 decimals: half a unit of the last digit, plus float slack
ROUND_3G = 5e-3  # intervals and most other numbers carry 3 significant digits: relative half a unit
SEEDS_COL = "Seeds (training x sampling)"
SEEDS_ROW = "ours seeds (training x sampling)"
FLOOR, AE_FLOOR, CEILING = "floor: real images", "floor: autoencoder reconstructions", "ceiling: untrained MSF"
ANCHOR_OF = {FLOOR: "real", AE_FLOOR: "autoencoder", CEILING: "untrained"}  # row or column -> the runs' anchor


# ----------------------------------------------------------------------------------------------------------------------
# Helpers: parse report.md back, and recompute statistics straight from metrics.json


def parse_md_table(md: str, table_id: str) -> pd.DataFrame:
    """The pipe table that follows the '**<table_id>.**' line of report.md, as strings."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"**{table_id}.**"))
    first = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("|"))
    end = next((i for i in range(first, len(lines)) if not lines[i].startswith("|")), len(lines))
    text = "\n".join([lines[first], *lines[first + 2 : end]])  # drop the |---| separator line
    df = pd.read_csv(io.StringIO(text), sep="|", dtype=str, keep_default_na=False).iloc[:, 1:-1]
    df.columns = [c.strip() for c in df.columns]
    return df.apply(lambda col: col.str.strip())


def parse_cell(cell: str) -> tuple[float, float | None] | None:
    """'8.00 ± 0.10' -> (8.0, 0.1); '8.20' -> (8.2, None); '—' -> None."""
    if cell == MISSING:
        return None
    mean, _, std = cell.partition("±")
    return float(mean), float(std) if std else None


NUMBER = r"[+-]?[0-9.]+(?:e[+-]?\d+)?"


def parse_interval(text: str) -> tuple[float, float, float]:
    """'+0.496 [+0.451, +0.541], 95% t over 3 training seeds' -> (0.496, 0.451, 0.541)."""
    m = re.search(rf"({NUMBER}) \[({NUMBER}), ({NUMBER})\]", text)
    assert m, text
    return float(m.group(1)), float(m.group(2)), float(m.group(3))


def metrics_where(root: Path, **match) -> list[dict]:
    """The metrics.json of every finished run whose fields equal ``match`` (lists compared as lists; a missing
    field counts as None), each with its run folder's name under 'run'."""
    found = []
    for path in sorted(root.rglob("metrics.json")):
        m = json.loads(path.read_text())
        if all(m.get(k) == v for k, v in match.items()):
            found.append(m | {"run": path.parent.name})
    return found


def manifests_of(root: Path) -> list[dict]:
    """The sweep manifests under a runs folder, as JSON."""
    return [json.loads(p.read_text()) for p in sorted(root.glob(f"{MANIFESTS}/*.json"))]


def listed(root: Path) -> set[str]:
    """The score runs some manifest under root lists (its points' and its anchors' runs)."""
    names: set[str] = set()
    for m in manifests_of(root):
        for runs in [*(p["runs"] for p in m["points"]), *m["anchors"].values()]:
            names |= {r["score"] for r in runs}
    return names


def evals(root: Path, **match) -> list[dict]:
    """The finished score runs some manifest lists whose fields equal ``match`` (see metrics_where)."""
    names = listed(root)
    return [m for m in metrics_where(root, kind="score", **match) if m["run"] in names]


def inventory_line(md: str, start: str) -> list[str]:
    """The run folders named by one line of the report's Runs section ('Duplicates (...): a, b.'), none -> []."""
    line = next(x for x in md.split("## Runs")[1].split("## Claims")[0].splitlines() if x.startswith(start))
    text = line.split("): ", 1)[1].removesuffix(".")
    return [] if text == "none" else text.split(", ")


def dit_xl2_counted(root: Path, md: str) -> list[dict]:
    """DiT-XL/2's score runs the report counts: those listed, less the one it names as a duplicate."""
    duplicates = set(inventory_line(md, "Duplicates"))
    return [m for m in evals(root, model="dit_xl2") if m["run"] not in duplicates]


def caption(md: str, table_id: str) -> str:
    """The title and caption line of one table."""
    return md.split(f"**{table_id}.**")[1].split("\n")[0]


def share_sentence(root: Path, model: list[dict], what: str) -> str:
    """The caption's sentence on the autoencoder's share, its number computed from the metrics files: (FID(autoencoder
    floor) - FID(real floor)) / (FID(model) - FID(real floor)), each the mean over its runs."""
    real, coded = (np.mean(fids(evals(root, anchor=a))) for a in ("real", "autoencoder"))
    share = (coded - real) / (np.mean(fids(model)) - real)
    return f"The autoencoder's floor is {100 * share:.0f}% of {what}'s FID above the real floor"


def assert_cell_matches(cell: str, values: list[float], tol: float = ROUND_FID) -> None:
    """A parsed 'mean ± std' cell equals numpy's mean and sample std (ddof=1) of the per-run values."""
    parsed = parse_cell(cell)
    assert parsed is not None, f"measured point shown as missing: {values}"
    mean, std = parsed
    assert abs(mean - np.mean(values)) <= tol
    if len(values) == 1:
        assert std is None
    else:
        assert std is not None and abs(std - np.std(values, ddof=1)) <= tol


def expected_interval(a: list[dict], b: list[dict]) -> tuple[float, float, float]:
    """FID(a) - FID(b) paired by seeds, computed with pandas and scipy's one-sample t test: pairs on (training seed,
    sampling seed), or on the sampling seed when an arm has no training seed; averaged per training seed when there
    are 2 or more."""
    da, db = pd.DataFrame(a), pd.DataFrame(b)
    on = ["sample_seed"] if da["train_seed"].isna().all() or db["train_seed"].isna().all() else ["train_seed",
                                                                                                  "sample_seed"]
    both = da.merge(db, on=on, suffixes=("_a", "_b"))
    both["d"] = both["fid_a"] - both["fid_b"]
    train = both["train_seed_a"] if "train_seed_a" in both else both["train_seed"]
    if train.isna().all():
        train = both.get("train_seed_b", train)
    x = both.groupby(train)["d"].mean() if train.nunique() >= 2 else both["d"]
    ci = scipy_stats.ttest_1samp(x.to_numpy(), 0.0).confidence_interval(0.95)
    return float(x.mean()), float(ci.low), float(ci.high)


def assert_interval_matches(text: str, expected: tuple[float, float, float]) -> None:
    """A printed interval equals the independent one to 3 significant digits."""
    for got, want in zip(parse_interval(text), expected, strict=True):
        assert got == pytest.approx(want, rel=ROUND_3G, abs=1e-9)


def msf_runs(root: Path, **match) -> list[dict]:
    """Listed score runs of trained MSF at the synthetic preset's other settings (residual, 24/32, adaLN-Zero) by
    default."""
    base = {"model": "msf", "factorization": "residual", "scales": rf.SCALES, "conditioning": "adaln_zero",
            "anchor": None, "steps": list(rf.MAIN_STEPS), "cfg": list(rf.MAIN_CFG)}
    return evals(root, **(base | match))


def fids(runs: list[dict]) -> list[float]:
    """The FID of each run."""
    return [m["fid"] for m in runs]


# ----------------------------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The synthetic imagenet256 sweeps (runs and manifests) and the report built from them (built once: figures take
    a few seconds)."""
    base = tmp_path_factory.mktemp("reports")
    root = rf.make_runs(base / "runs")
    result = build_report([root], base / "out")
    return root, result, Path(result["markdown"]).read_text(encoding="utf-8")


@pytest.fixture
def unrendered(monkeypatch):
    """Figures drawn but not rendered to pixels (an empty PNG file), for tests of a rebuilt report's tables, claims
    and run listing: rendering is two thirds of a build's time. The figures themselves are checked on ``built``."""

    def save(fig, out_dir: Path, name: str, title: str) -> figures.Plot:
        path = out_dir / f"{name}.png"
        path.touch()
        return figures.Plot(name, title, path)

    monkeypatch.setattr(figures, "_save", save)


# ----------------------------------------------------------------------------------------------------------------------
# The paper's values


def test_paper_values_agree_with_the_papers_prose():
    # Each published number is checked against a statement elsewhere in the paper (text or caption), not the CSV.
    assert len(paper.table1_rows()) == 18 + 1  # + the DiMR peer row
    dimr = "DiMR-XL/2R (DiMR paper; not in MSF's Table 1)"
    assert (paper.table1_cell(dimr, "FID").value, paper.table1_cell(dimr, "Para").value) == (1.70, 505)  # DiMR abstract
    assert all(len([c for c in paper.cells() if c.table == 1 and c.row == r]) == 6 for r in paper.table1_rows())
    assert paper.table1_cell("MSF(cfg=1.4)", "FID").value == 2.2  # Sec. 4.2: "MSF achieves an FID of 2.2"
    assert paper.table1_cell("MSF(cfg=1.4)", "IS").value == pytest.approx(254.73, abs=0.05)  # "IS of 254.73"
    assert paper.table1_cell("MSF(cfg=1.4)", "Para").value == pytest.approx(435.9 + 331.2, abs=0.5)  # Sec. 4.1
    time = {r: paper.table1_cell(r, "Time").value for r in ("DiT-XL/2 [38]", "MSF(cfg=1.4)")}
    assert time["DiT-XL/2 [38]"] / time["MSF(cfg=1.4)"] == pytest.approx(2.0, abs=0.15)  # "2x times lower"
    assert min(paper.curve(2), key=paper.curve(2).get) == 1.4  # Table 2 caption: best at 1.4
    assert sorted(paper.curve(4), key=paper.curve(4).get)[:2] == [125.0, 100.0]  # Table 4: best at 100 and 125
    assert paper.curve_range(3) == 0.03  # Table 3: "no significant differences"; the claim's 0.03
    assert paper.curve_range(5) == 0.05  # Sec. 5: "fluctuates by only 0.05"
    assert sorted(paper.curve(5)) == [10, 20, 30, 40, 50, 100]
    with pytest.raises(ValueError, match="Tables 2-5"):
        paper.curve(1)


# ----------------------------------------------------------------------------------------------------------------------
# Paired differences and intervals


@given(st.lists(st.floats(-100, 100), min_size=2, max_size=8))
def test_t_interval_matches_scipys_one_sample_t_test(values):
    # Reference: scipy's ttest_1samp confidence interval (its own t quantile and standard error).
    iv = t_interval(values, "training seed", len(values))
    if np.std(values) == 0:
        assert iv.lo == pytest.approx(iv.mean) and iv.hi == pytest.approx(iv.mean)
        return
    ci = scipy_stats.ttest_1samp(values, 0.0).confidence_interval(0.95)
    # tolerance: float64 rounding of two implementations of the same formula, relative 1e-9 plus 1e-9 absolute
    assert (iv.lo, iv.hi) == pytest.approx((ci.low, ci.high), rel=1e-9, abs=1e-9)
    assert iv.mean == pytest.approx(np.mean(values), rel=1e-12, abs=1e-12)


def grid_arm(label: str, values: dict[tuple[int | None, int], float]) -> Arm:
    """An arm from explicit per-(training seed, sampling seed) values."""
    return Arm(label, values)


def test_paired_difference_averages_the_sampling_seeds_of_each_training_seed():
    a = grid_arm("a", {(t, s): 10.0 + t + 0.1 * s + 0.01 * t * s for t in range(3) for s in range(2)})
    b = grid_arm("b", {(t, s): 9.0 + t + 0.1 * s for t in range(3) for s in range(2)})
    iv = paired(a, b)
    per_train = [np.mean([a.values[t, s] - b.values[t, s] for s in range(2)]) for t in range(3)]
    ci = scipy_stats.ttest_1samp(per_train, 0.0).confidence_interval(0.95)
    assert (iv.n, iv.unit, iv.pairs) == (3, "training seed", 6)
    assert (iv.mean, iv.lo, iv.hi) == pytest.approx((np.mean(per_train), ci.low, ci.high), rel=1e-9)
    assert iv.lo > 0.9  # the +-1 training-seed offsets cancel in the pairs


def test_paired_difference_with_one_training_seed_or_a_pretrained_arm_runs_over_sampling_seeds():
    a = grid_arm("a", {(0, s): 8.0 + 0.1 * s for s in range(4)})
    b = grid_arm("b", {(0, s): 7.0 + 0.12 * s for s in range(4)})
    iv = paired(a, b)
    assert (iv.n, iv.unit) == (4, "sampling seed") and "sampling noise only" in iv.text()
    pretrained = grid_arm("p", {(None, s): 7.5 for s in range(4)})
    iv = paired(a, pretrained)  # every (t, s) of a meets (None, s) of the pretrained arm
    assert (iv.n, iv.pairs) == (4, 4) and iv.mean == pytest.approx(np.mean([0.5 + 0.1 * s for s in range(4)]))
    assert paired(a, grid_arm("c", {(1, 9): 1.0})) is None  # no common seeds: no comparison
    one = paired(grid_arm("x", {(0, 0): 1.0}), grid_arm("y", {(0, 0): 0.5}))
    assert one.n == 1 and not one.defined and "no interval" in one.text()


def seeded(mean: float, offsets=(-1.0, 0.0, 1.0)) -> Arm:
    """Three training seeds x one sampling seed: mean + an offset per training seed shared by every arm, + per-run
    noise of std 0.003 (seeded by the mean, so that two arms' noise differs)."""
    rng = np.random.default_rng(round(mean * 1000))
    return Arm("x", {(t, 0): mean + o + float(rng.normal(0, 0.003)) for t, o in enumerate(offsets)})


def noisy_runs(mean: float, std: float, seed: int) -> Arm:
    """Three training seeds x one sampling seed with independent per-run noise of the given std."""
    rng = np.random.default_rng(seed)
    return Arm("x", {(t, 0): mean + float(rng.normal(0, std)) for t in range(3)})


@pytest.mark.parametrize(
    ("arms", "verdict"),
    [
        ({1.2: seeded(9.0), 1.4: seeded(8.0), 1.5: seeded(8.5)}, SUPPORTED),  # 1.4 best in every seed
        ({1.2: seeded(7.0), 1.4: seeded(8.0)}, CONTRADICTED),  # 1.2 better in every seed
        ({1.2: noisy_runs(8.1, 1.0, 1), 1.4: noisy_runs(8.0, 1.0, 2)}, UNRESOLVED),  # 0.1 inside the noise
        ({1.2: seeded(9.0)}, UNRESOLVED),  # 1.4 not measured
        ({1.4: seeded(9.0)}, UNRESOLVED),  # nothing else measured
    ],
)
def test_best_setting_rule(arms, verdict):
    assert judge_best("best cfg 1.4", arms, (1.4,)).verdict == verdict


def test_best_setting_rule_resolves_a_series_monotone_in_every_seed():
    # FID rises with CFG by 0.2 per step in every training seed while the seeds differ by +-3: every paired
    # difference is 0.2 +- 0.01, so 1.0 beats the claimed 1.4; the seed spread itself (std 3) is 15x the effect.
    offsets = (-3.0, 0.5, 2.5)
    arms = {c: seeded(8.0 + 2 * (c - 1.0), offsets) for c in (1.0, 1.1, 1.2, 1.3, 1.4)}
    v = judge_best("best cfg 1.4", arms, (1.4,))
    assert v.verdict == CONTRADICTED
    d, lo, hi = parse_interval(v.interval)
    assert hi < 0 and d == pytest.approx(-0.8, abs=0.01)
    assert np.std([arms[1.0].values[t, 0] for t in range(3)], ddof=1) > 2.5  # the unpaired spread


def test_best_setting_rule_with_two_claimed_settings():
    steps = {25: seeded(9.5), 50: seeded(8.6), 100: seeded(8.0), 125: seeded(7.9), 200: seeded(7.7)}
    assert judge_best("steps", steps, (100.0, 125.0)).verdict == CONTRADICTED  # 200 beats both in every seed
    del steps[200]
    assert judge_best("steps", steps, (100.0, 125.0)).verdict == SUPPORTED  # 125 beats 25 and 50
    del steps[125]
    steps[200] = seeded(7.7)
    assert judge_best("steps", steps, (100.0, 125.0)).verdict == UNRESOLVED  # 125 (maybe best) not measured


@pytest.mark.parametrize(
    ("arms", "verdict"),
    [
        ({1.0: seeded(8.0), 1.2: seeded(8.005), 1.4: seeded(7.995)}, SUPPORTED),  # differences <= 0.01 +- 0.011
        ({1.0: seeded(8.0), 1.2: seeded(8.5)}, CONTRADICTED),  # 0.5 in every seed, far outside +-0.03
        ({1.0: noisy_runs(8.0, 3.0, 3), 1.2: noisy_runs(8.0, 3.0, 4)}, UNRESOLVED),  # huge noise never supports
        ({1.0: seeded(8.0), 1.2: Arm("one", {(0, 0): 7.0})}, UNRESOLVED),  # one pair: no interval
        ({1.0: seeded(8.0)}, UNRESOLVED),  # nothing swept
    ],
)
def test_flat_rule_is_an_equivalence_test(arms, verdict):
    assert judge_flat("flat", arms, tolerance=0.03).verdict == verdict


def test_flat_rule_with_huge_noise_is_never_supported_even_with_equal_means():
    # Equal means, noise std 5 per run: the old range-within-2s rule supported this; the equivalence rule cannot.
    for seed in range(20):
        arms = {x: noisy_runs(8.0, 5.0, seed * 10 + i) for i, x in enumerate((10.0, 20.0, 50.0, 100.0))}
        assert judge_flat("flat", arms, tolerance=0.05).verdict != SUPPORTED


@pytest.mark.parametrize(
    ("arms", "verdict"),
    [
        ({"residual": seeded(8.0), "latent_resize": seeded(9.0), "image_resize": seeded(8.5)}, SUPPORTED),
        ({"residual": seeded(8.0), "latent_resize": seeded(9.0), "image_resize": seeded(7.0)}, CONTRADICTED),
        ({"residual": seeded(8.0), "latent_resize": seeded(9.0)}, UNRESOLVED),  # image resizing not measured
        ({"residual": noisy_runs(8.0, 2.0, 5), "latent_resize": noisy_runs(8.1, 2.0, 6),
          "image_resize": noisy_runs(9.0, 2.0, 7)}, UNRESOLVED),
    ],
)
def test_factorization_rule(arms, verdict):
    assert judge_factorization("residual wins", arms).verdict == verdict


def test_factorization_rule_is_not_swamped_by_a_noisy_unrelated_arm():
    # image_resize beats residual by 0.45-0.51 in every seed; latent_resize is worse but with noise std 4. Each
    # resizing gets its own interval, so latent_resize's spread does not hide image_resize's consistent gain.
    residual = seeded(8.0, (-1.0, 0.0, 1.0))
    image = Arm("i", {k: v - g for (k, v), g in zip(residual.values.items(), (0.45, 0.48, 0.51), strict=True)})
    latent = Arm("l", {k: v + 3.0 + n for (k, v), n in zip(residual.values.items(), (-6.0, 5.0, 4.0), strict=True)})
    v = judge_factorization("residual wins", {"residual": residual, "latent_resize": latent, "image_resize": image})
    assert v.verdict == CONTRADICTED and "image_resize" in v.interval
    ci = scipy_stats.ttest_1samp([-0.45, -0.48, -0.51], 0.0).confidence_interval(0.95)
    assert_interval_matches(v.interval, (-0.48, ci.low, ci.high))


@pytest.mark.parametrize(
    ("ratios", "verdict"),
    [((0.3, 0.31, 0.29), SUPPORTED), ((0.7, 0.72, 0.69), UNRESOLVED), ((1.2, 1.25, 1.22), CONTRADICTED),
     ((0.3,), UNRESOLVED), ((0.1, 0.9, 0.5), UNRESOLVED)],  # one seed: no interval; wide: upper end above 0.5
)
def test_loss_rule(ratios, verdict):
    loss = {seed: LossPair(1.0, q, (f"s0-t{seed}", f"s1-t{seed}")) for seed, q in enumerate(ratios)}
    assert judge_loss("loss", loss).verdict == verdict
    assert judge_loss("loss", {}).verdict == UNRESOLVED


@pytest.mark.parametrize(
    ("msf", "base", "verdict"),
    [
        ((8.0, 10.0), (8.1, 40.0), SUPPORTED),  # equal FID within the interval, 4x faster
        ((8.0, 10.0), (8.0, 15.0), CONTRADICTED),  # equal FID, 1.5x only
        ((9.0, 10.0), (8.0, 40.0), CONTRADICTED),  # MSF worse in every seed
        ((7.0, 10.0), (8.0, 15.0), UNRESOLVED),  # MSF better, 1.5x: 'at equal FID' not established
        ((8.5, 10.0), (8.0, 40.0), CONTRADICTED),  # MSF worse by 0.5 in every seed: beyond the 5% margin (0.4)
        ((8.3, 10.0), (8.0, 40.0), SUPPORTED),  # worse by 0.3 in every seed: within the margin, 4x faster
    ],
)
def test_speed_rule(msf, base, verdict):
    def timed(fid_time, device="cpu", dtype="float32"):
        return Timed("x", seeded(fid_time[0]), fid_time[1], device, dtype)

    assert judge_speed("speed", (timed(msf), timed(base))).verdict == verdict
    noisy = Timed("x", noisy_runs(8.0, 3.0, 5), 10.0, "cpu", "float32")  # equal means, per-run noise of std 3
    assert judge_speed("speed", (noisy, timed(base))).verdict == UNRESOLVED  # large noise never supports it
    other = timed(base, "cuda", "bfloat16")
    assert judge_speed("speed", (timed(msf), other)).verdict == UNRESOLVED  # different devices
    assert judge_speed("speed", None).verdict == UNRESOLVED


# ----------------------------------------------------------------------------------------------------------------------
# The report from the synthetic imagenet256 sweep

ALL_TABLES = ["Table 1", "Table 2", "Table 3", "Table 4", "Table 5", "Table F2", "Table F1", "Table R1", "Table C1",
              "Table G1", "Table G2", "Table S1", "Table S2", "Table T1", "Claims"]
SWEEP_FILES = ("main", "cfg_scale0", "cfg_scale1", "steps_scale0", "steps_scale1", "factorization", "resolutions",
               "conditioning", "cfg_wide", "cfg_wide_flow")  # the sweeps with points: each gets a sample-grid figure
ROOT = Path(__file__).resolve().parents[1]
SWEEP_NAMES = sorted(p.stem for p in (ROOT / "ablations" / "sweeps").glob("*.yaml"))


def planned(sweep: str, preset: str = rf.PRESET) -> tuple[Any, list[dict], int | None]:
    """A sweep file at a preset as the planner plans it: the sweep, each point's explicit and setting
    (ablations/graph.py ``reported``, ``setting_of`` on the point's config) and the reference point. The config is
    merged as ablations.config.resolve merges it (preset < the sweep's base), without resolve's checks of the dataset
    and weight files that imagenet256 needs."""
    data: dict[str, Any] = {}
    for k, v in load_yaml(PRESETS_DIR / f"{preset}.yaml").items():
        set_key(data, k, v)
    sweep_, base = load_sweep(sweep, preset)
    for k, v in [*base.items(), ("sweep", sweep), ("preset", preset)]:
        set_key(data, k, v)
    cfg = typed(data)
    points = [{"explicit": reported(p, p.get("model", "msf")),
               "setting": setting_of(point_config(cfg, p), p.get("model", "msf"))} for p in sweep_.points]
    default = setting_of(cfg, "msf")
    if sweep_.reference is not None:  # the point the sweep file names
        return sweep_, points, sweep_.reference
    return sweep_, points, next((i for i, p in enumerate(points) if p["setting"] == default), None)


def test_synthetic_manifests_are_what_the_planner_writes(built):
    # Every sweep file has a manifest; its table, description, points (what each sets, the settings its runs record)
    # and reference are the planner's own; its runs cover the seeds the planner plans for each family; and every
    # listed run that finished records its point's setting and scored the sample run the manifest names beside it.
    root = built[0]
    manifests = manifests_of(root)
    assert sorted({m["sweep"] for m in manifests}) == SWEEP_NAMES
    assert Counter(m["sweep"] for m in manifests)["main"] == 2  # the second: the duplicate's (sampling seed 0)
    anchor_kinds = {str(FAMILIES[name].anchor) for name in ANCHOR_FAMILIES} | {"untrained"}
    assert anchor_kinds == set(ANCHOR_OF.values())
    for m in manifests:
        sweep, points, reference = planned(m["sweep"])
        assert (m["table"], m["description"], m["preset"]) == (sweep.table, sweep.description, rf.PRESET)
        assert [{k: p[k] for k in ("explicit", "setting")} for p in m["points"]] == points, m["sweep"]
        assert m["reference"] == reference, m["sweep"]
        trains, samples = m["config"]["seeds"]["train"], m["config"]["seeds"]["sample"]
        for p in m["points"]:
            model = p["setting"]["model"]
            planned_seeds = [(t, s) for t in (trains if FAMILIES[model].architecture else [None]) for s in samples]
            assert [(r["train_seed"], r["sample_seed"]) for r in p["runs"]] == planned_seeds
            for r in p["runs"]:
                assert r["score"].startswith("score-") and r["sample"].startswith("sample-")
                if (root / r["score"] / "metrics.json").is_file():
                    recorded = json.loads((root / r["score"] / "metrics.json").read_text())
                    assert {k: recorded[k] for k in p["setting"]} == p["setting"]
                    assert recorded["samples"] == r["sample"]
                    assert json.loads((root / r["score"] / "config.json").read_text())["deps"] == {
                        "samples": r["sample"]}
        assert set(m["anchors"]) == (anchor_kinds if m["points"] else set())
        for kind, runs in m["anchors"].items():
            expected = [(t, samples[0]) for t in trains] if kind == "untrained" else [(None, s) for s in samples]
            assert [(r["train_seed"], r["sample_seed"]) for r in runs] == expected
            for r in runs:
                assert json.loads((root / r["score"] / "metrics.json").read_text())["anchor"] == kind
    assert {m["sweep"]: bool(m["other"]["recon"]) for m in manifests} == {s: s == "factorization" for s in SWEEP_NAMES}
    assert {m["sweep"]: bool(m["other"]["speed"]) for m in manifests} == {s: s == "speed" for s in SWEEP_NAMES}


def test_report_has_every_table_and_figure(built):
    root, result, md = built
    assert result["tables"] == ALL_TABLES
    for table_id in [*ALL_TABLES, "Scale"]:
        assert len(parse_md_table(md, table_id)) > 0
    grids = {f"fig_grid_{s}" for s in SWEEP_FILES}
    assert set(result["figures"]) == {"fig_cfg", "fig_steps", "fig_loss", "fig_decomposition",
                                      "fig_sample_decomposition", "fig_compute"} | grids
    assert result["missing_figures"] == {}
    for path in result["figures"].values():
        with Image.open(path) as im:
            assert im.format == "PNG" and len(im.getcolors(1 << 24) or []) > 2  # drawn, not a blank canvas
        assert f"]({Path(path).name})" in md
    assert result["runs"] == len(list(root.rglob("config.json")))
    unfinished = [p.name for p in root.glob("score-*") if not (p / "metrics.json").is_file()]
    assert len(unfinished) == 1 and inventory_line(md, "Unfinished") == unfinished  # listed, not silently dropped
    seed0 = [m["run"] for m in evals(root, model="dit_xl2", sample_seed=0)]
    assert len(seed0) == 2  # the same seeds and settings, two folders listed by the two main manifests
    duplicates = inventory_line(md, "Duplicates")
    assert len(duplicates) == 1 and duplicates[0] in seed0  # counted once, the other listed as a duplicate
    assert md.index("## Summary") < md.index("## Runs") < md.index("## Claims") < md.index("## Tables")


TABLES_2_5 = {  # table id -> (swept key, scale index, design, the fixed other per-scale setting)
    "Table 2": ("cfg", 0, rf.CFG_SCALE1_FID, {"steps": list(rf.MAIN_STEPS)}),
    "Table 3": ("cfg", 1, rf.CFG_SCALE2_FID, {"steps": list(rf.MAIN_STEPS)}),
    "Table 4": ("steps", 0, rf.STEPS_SCALE1_FID, {"cfg": list(rf.MAIN_CFG)}),
    "Table 5": ("steps", 1, rf.STEPS_SCALE2_FID, {"cfg": list(rf.MAIN_CFG)}),
}


@pytest.mark.parametrize("table_id", sorted(TABLES_2_5))
def test_sweep_tables_parse_back_to_run_folders(built, table_id):
    root, _, md = built
    key, index, design, fixed = TABLES_2_5[table_id]
    df = parse_md_table(md, table_id)
    df = df.set_index(df.columns[0])
    assert list(df.index) == ["paper FID-5K", "ours FID", SEEDS_ROW]
    assert list(df.columns[-3:]) == [FLOOR, AE_FLOOR, CEILING]
    published = paper.curve(int(table_id[-1]))
    for column in df.columns[:-3]:
        x = float(column)
        ours = df.loc["ours FID", column]
        if any(math.isclose(x, d) for d in design):
            setting = list(rf.MAIN_CFG if key == "cfg" else rf.MAIN_STEPS)
            setting[index] = int(x) if key == "steps" else x
            runs = msf_runs(root, **{key: setting}, **fixed)
            assert_cell_matches(ours, fids(runs))
            n_train, n_sample = len({m["train_seed"] for m in runs}), len({m["sample_seed"] for m in runs})
            assert df.loc[SEEDS_ROW, column] == f"{n_train} x {n_sample}"
        else:  # never filled from the paper, nor from runs no manifest lists (Table 2's CFG 1.3)
            assert ours == MISSING and df.loc[SEEDS_ROW, column] == MISSING
        assert df.loc["paper FID-5K", column] == (f"{published[x]:.2f}" if x in published else MISSING)
    for column, seeds in ((FLOOR, "- x 2"), (AE_FLOOR, "- x 2"), (CEILING, "3 x 1")):
        assert_cell_matches(df.loc["ours FID", column], fids(evals(root, anchor=ANCHOR_OF[column])))
        assert df.loc["paper FID-5K", column] == MISSING and df.loc[SEEDS_ROW, column] == seeds
    # the share of the reference point's FID (the preset's own settings) above the real floor that is the autoencoder's
    assert share_sentence(root, msf_runs(root), "MSF") + "." in caption(md, table_id)


def test_table1_shows_each_paper_row_once_beside_the_main_sweeps_points(built):
    root, _, md = built
    df = parse_md_table(md, "Table 1")
    assert df["Model"].is_unique and list(df["Model"][: len(paper.table1_rows())]) == paper.table1_rows()
    dit = df[df["Model"] == "DiT-XL/2 [38]"].iloc[0]
    runs = dit_xl2_counted(root, md)
    assert len(runs) == 2 and len(evals(root, model="dit_xl2")) == 3
    assert_cell_matches(dit["FID ours"], fids(runs))  # the duplicate folder is not counted twice
    assert float(dit["Time ours (s/64 img)"]) == rf.DIT_XL2["time"]  # one timed run per setting
    assert dit["FID paper"] == "2.27" and dit["Time paper (A800, batch 64)"] == "145"  # printed values
    assert dit[SEEDS_COL] == "- x 2"  # pretrained: no training seed
    for cfg0, row_name in ((1.4, "MSF(cfg=1.4)"), (1.5, "MSF(cfg=1.5)")):
        row = df[df["Model"] == row_name].iloc[0]
        runs = msf_runs(root, cfg=[cfg0, 1.0])
        assert_cell_matches(row["FID ours"], fids(runs))
        assert_cell_matches(row["IS ours"], [m["is_mean"] for m in runs], tol=0.05 + 1e-9)  # IS: 1 decimal
        assert float(row["Para ours (M)"]) == pytest.approx(runs[0]["params_m"], rel=ROUND_3G)
        assert float(row["GFLOPs/img ours"]) == pytest.approx(runs[0]["gflops_per_image"], rel=ROUND_3G)
        assert (row["Device"], row["Dtype"], row[SEEDS_COL]) == ("cpu", "float32", "3 x 2")
        assert "steps 100/50" in row["Setting"] and f"cfg {cfg0}/1.0" in row["Setting"]
    msf = df[df["Model"] == "MSF(cfg=1.4)"].iloc[0]
    assert float(msf["Time ours (s/64 img)"]) == rf.MSF_TIME and msf["FID paper"] == "2.2"
    for model in ("dit_flow", "dimr"):
        row = df[df["Model"] == f"{model} (ours)"].iloc[0]
        assert_cell_matches(row["FID ours"], fids(evals(root, model=model)))
        assert row["FID paper"] == MISSING
    assert list(df["Model"][-3:]) == [FLOOR, AE_FLOOR, CEILING]
    for label, anchor in ANCHOR_OF.items():
        row = df[df["Model"] == label].iloc[0]
        assert_cell_matches(row["FID ours"], fids(evals(root, anchor=anchor)))
    assert df[df["Model"] == AE_FLOOR].iloc[0]["Setting"].startswith("the same images through the autoencoder")
    paper_only = df[df["Setting"] == MISSING]
    assert (paper_only["FID ours"] == MISSING).all() and len(paper_only) == 16  # 15 models + the DiMR peer row
    assert "embedded-net" in caption(md, "Table 1")  # the caption names the feature extractor
    assert share_sentence(root, msf_runs(root), "MSF(cfg=1.4)") + "." in caption(md, "Table 1")


def test_point_tables_parse_back_with_paired_differences(built):
    root, _, md = built
    fid = parse_md_table(md, "Table F2").set_index("Factorization")
    assert list(fid.index) == ["residual", "residual_latent_base", "latent_resize", "image_resize", FLOOR, AE_FLOOR,
                               CEILING]
    residual = msf_runs(root)
    versus = "FID - FID(residual) [95% CI]"
    for name in ("residual_latent_base", "latent_resize", "image_resize"):
        runs = msf_runs(root, factorization=name)
        assert_cell_matches(fid.loc[name, "FID ours"], fids(runs))
        assert_interval_matches(fid.loc[name, versus], expected_interval(runs, residual))
    assert fid.loc["residual", versus] == "reference (residual)"
    res = parse_md_table(md, "Table R1").set_index("Scales (latent sizes)")
    assert list(res.index) == ["16/32", "20/32", "24/32", "16/24/32", FLOOR, AE_FLOOR, CEILING]  # the preset's points
    assert (res.loc["20/32", "FID ours"], res.loc["24/32", "Number of scales"]) == (MISSING, "2")
    for scales, cfg, steps in (([16, 32], [1.4, 1.0], [100, 50]), ([16, 24, 32], [1.4, 1.0, 1.0], [100, 50, 50])):
        runs = msf_runs(root, scales=scales, cfg=cfg, steps=steps)
        label = "/".join(map(str, scales))
        assert_cell_matches(res.loc[label, "FID ours"], fids(runs))
        assert float(res.loc[label, "GFLOPs/img"]) == pytest.approx(runs[0]["gflops_per_image"], rel=ROUND_3G)
        assert_interval_matches(res.loc[label, "FID - FID(24/32) [95% CI]"], expected_interval(runs, residual))
    cond = parse_md_table(md, "Table C1").set_index("Conditioning")
    tdln = msf_runs(root, conditioning="tdln")
    assert_cell_matches(cond.loc["tdln", "FID ours"], fids(tdln))
    assert_interval_matches(cond.loc["tdln", "FID - FID(adaln_zero) [95% CI]"], expected_interval(tdln, residual))
    for table_id, table in (("Table F2", fid), ("Table R1", res), ("Table C1", cond)):
        assert list(table.index[-3:]) == [FLOOR, AE_FLOOR, CEILING]
        for row, anchor in ANCHOR_OF.items():
            assert_cell_matches(table.loc[row, "FID ours"], fids(evals(root, anchor=anchor)))
        # the reference row is the preset's own setting (residual, 24/32, adaLN-Zero): the main point's runs
        assert share_sentence(root, residual, "the reference row") + "." in caption(md, table_id)


@pytest.mark.parametrize(("sweep", "preset", "first"), [
    ("resolutions", "smoke", "scales"),  # cfg and steps follow the number of scales: two values each, like scales
    ("resolutions", rf.PRESET, "scales"),
    ("main", rf.PRESET, "model"),
    ("factorization", rf.PRESET, "factorization"),
])
def test_a_sweeps_rows_are_named_by_the_model_setting_it_sweeps(sweep, preset, first):
    # The planner's points as a manifest stores them (keys sorted by name: 'cfg' before 'scales'): the first varying
    # setting, which names a points table's rows and heads its first column, is the model setting the sweep varies.
    _, points, _ = planned(sweep, preset)
    stored = json.loads(json.dumps(points, sort_keys=True))
    view_points = [Point({k: norm(v) for k, v in p["setting"].items()}, {k: norm(v) for k, v in p["explicit"].items()})
                   for p in stored]
    assert list(stored[0]["explicit"]) == sorted(stored[0]["explicit"])
    assert varying(view_points)[0] == (first, None)


def test_recon_train_and_speed_tables_parse_back(built):
    root, _, md = built
    recon = parse_md_table(md, "Table F1").set_index("Factorization")
    for m in metrics_where(root, kind="recon"):
        assert float(recon.loc[m["factorization"], "PSNR scale 0"]) == pytest.approx(m["psnr_per_scale"][0], abs=0.005)
    train = parse_md_table(md, "Table T1").set_index("Node")
    folders = [p.parent for p in root.glob("train-*/metrics.json")]
    assert sorted(train.index) == sorted(p.name for p in folders)  # one row per run folder
    for p in folders:
        m = json.loads((p / "metrics.json").read_text())
        row = train.loc[p.name]
        if m["steps"] == 0:  # the ceiling's stages: trained 0 steps, no loss
            assert row["Final loss (EMA 100)"] == MISSING and m["final_loss_ema100"] is None
        else:
            assert float(row["Final loss (EMA 100)"]) == pytest.approx(m["final_loss_ema100"], rel=ROUND_3G)
        assert (row["Stage"], row["Training seed"]) == (str(m["stage"]), str(m["train_seed"]))
    assert sum(json.loads((p / "metrics.json").read_text())["steps"] == 0 for p in folders) == 2 * len(rf.TRAIN_SEEDS)
    speed = parse_md_table(md, "Table S1").set_index("Model")
    speeds = {m["model"]: m for m in metrics_where(root, kind="speed")}
    for m in speeds.values():
        assert float(speed.loc[m["model"], "s/64 img"]) == pytest.approx(64 * m["sec_per_image"], rel=ROUND_3G)
        assert float(speed.loc[m["model"], "img/s"]) == pytest.approx(m["images_per_s"], rel=ROUND_3G)
        assert float(speed.loc[m["model"], "MFU (%)"]) == pytest.approx(100 * m["mfu"], rel=ROUND_3G)
    assert speed.loc["msf", "Steps x CFG"] == "100x1.4 + 50x1" and speed.loc["dit_xl2", "Steps x CFG"] == "250x1.5"
    assert "Random weights" in md.split("**Table S1.**")[1].split("\n")[0]
    ratios = parse_md_table(md, "Table S2").set_index("Ratio")
    paper_ratio = paper.table1_cell("DiT-XL/2 [38]", "Time").value / paper.table1_cell("MSF(cfg=1.4)", "Time").value
    assert ratios.loc["paper: time per 64 images (Table 1)", "Ratio (x)"] == f"{paper_ratio:.2f}x" == "2.13x"
    flops = speeds["dit_xl2"]["tflops_per_image"] / speeds["msf"]["tflops_per_image"]
    assert ratios.loc["ours: counted FLOPs per image", "Ratio (x)"] == f"{flops:.2f}x"
    time = speeds["dit_xl2"]["sec_per_image"] / speeds["msf"]["sec_per_image"]
    assert ratios.loc["ours: measured time per image", "Ratio (x)"] == f"{time:.2f}x"
    caption = md.split("**Table S2.**")[1].split("\n")[0]
    assert all(word in caption for word in ("memory-bound", "batch", "implementation", "A800"))


EXPECTED_VERDICTS = {
    "Residual factorization beats latent and image resizing": CONTRADICTED,  # image_resize better in every run
    "Scale-2 training loss is much lower than scale-1": SUPPORTED,
    "MSF is 2x faster than DiT-XL/2 at equal FID": SUPPORTED,
    "Best scale-1 CFG is 1.4": SUPPORTED,
    "Scale 2 needs no CFG: FID-5K changes by <= 0.03 across CFG 1.0-1.4": CONTRADICTED,
    "Scale-1 FID is best around 100-125 steps": CONTRADICTED,  # 200 steps better in every seed
    "Scale 2 is robust to 10 steps: FID-5K fluctuates by <= 0.05 over 10-100 steps": UNRESOLVED,  # huge noise
}


def test_claims_get_the_verdicts_the_data_implies(built):
    root, result, md = built
    verdicts = {c["claim"].split(" (")[0]: c["verdict"] for c in result["claims"]}
    assert verdicts == EXPECTED_VERDICTS
    claims = parse_md_table(md, "Claims")
    assert list(claims["Verdict"]) == [c["verdict"] for c in result["claims"]]
    assert [cell.split(" (smaller than")[0] for cell in claims["Deciding difference [95% CI]"]] == [
        c["interval"] for c in result["claims"]]
    assert "Rule 1:" in md and "Student t" in md
    by_claim = {c["claim"].split(" (")[0]: c for c in result["claims"]}
    image = msf_runs(root, factorization="image_resize")
    deciding = by_claim["Residual factorization beats latent and image resizing"]["interval"]
    assert deciding.startswith("FID(image_resize) - FID(residual)")
    assert_interval_matches(deciding, expected_interval(image, msf_runs(root)))
    deciding = by_claim["Scale-1 FID is best around 100-125 steps"]["interval"]
    assert deciding.startswith("FID(200) - FID(125)")
    assert_interval_matches(deciding, expected_interval(msf_runs(root, steps=[200, 50]),
                                                        msf_runs(root, steps=[125, 50])))
    speed = by_claim["MSF is 2x faster than DiT-XL/2 at equal FID"]
    assert_interval_matches(speed["interval"], expected_interval(msf_runs(root), dit_xl2_counted(root, md)))
    assert f"speedup S = {rf.DIT_XL2['time'] / rf.MSF_TIME:.3g}" in speed["evidence"]


def test_loss_claim_counts_the_papers_arm_once_per_training_seed(built):
    root, result, _ = built
    (loss,) = [c for c in result["claims"] if c["claim"].startswith("Scale-2 training loss")]
    paper_arm = set()  # the trainings behind the main point: the deps of the sample runs its score runs scored
    for m in msf_runs(root):
        paper_arm |= set(json.loads((root / m["samples"] / "config.json").read_text())["deps"].values())
    assert len(paper_arm) == 2 * len(rf.TRAIN_SEEDS)
    assert all(name in loss["evidence"] for name in paper_arm)
    (stray,) = root.glob(f"train-*-t0-{rf.STRAY_PREFIX}*")  # the same arm, stage and seed: its name sorts first
    assert stray.name not in loss["evidence"] and "latent_resize" not in loss["evidence"]
    assert "untrained" not in loss["evidence"]
    ratios = []
    for seed in rf.TRAIN_SEEDS:
        stage = {json.loads((root / n / "config.json").read_text())["spec"]["stage"]: n for n in paper_arm
                 if json.loads((root / n / "metrics.json").read_text())["train_seed"] == seed}
        l0, l1 = (json.loads((root / stage[s] / "metrics.json").read_text())["final_loss_ema100"] for s in (0, 1))
        ratios.append(l1 / l0)
    ci = scipy_stats.ttest_1samp(ratios, 0.0).confidence_interval(0.95)
    assert_interval_matches(loss["interval"], (float(np.mean(ratios)), ci.low, ci.high))


def test_summary_says_what_held_and_how_this_scale_differs(built):
    root, result, md = built
    summary = md.split("## Summary")[1].split("## Runs")[0]
    sections = re.split(r"\*\*(Held|Did not hold|Could not be resolved)[^*]*\*\*", summary)
    held, failed, open_ = (sections[i + 1] for i in range(1, len(sections), 2))
    for c in result["claims"]:
        where = {SUPPORTED: held, CONTRADICTED: failed, UNRESOLVED: open_}[c["verdict"]]
        assert c["claim"] in where
    scale = parse_md_table(md, "Scale").set_index("Aspect")
    assert scale.loc["Generated samples per FID", "Ours"] == "64"
    assert scale.loc["Reference images", "Ours"] == "256"
    assert scale.loc["Feature network of FID / IS / precision / recall", "Ours"] == "embedded-net (world embedded)"
    assert scale.loc["Dataset", "Ours"] == "embedded, 32x32, 4 classes"
    assert scale.loc["MSF training per stage", "Ours"] == "300 + 300 steps at batch 64"
    assert scale.loc["Runs per number", "Ours"] == "3 training seeds x 2 sampling seeds"
    assert "767.1M" in scale.loc["MSF parameters", "Paper"]
    model, real, coded = (np.mean(fids(runs)) for runs in (msf_runs(root), evals(root, anchor="real"),
                                                          evals(root, anchor="autoencoder")))
    share = (coded - real) / (model - real)
    assert share < 0.5  # the synthetic design: 1.5 / 7.5
    assert (f"MSF(cfg=1.4) scores FID {model:.2f}, held-out real images {real:.2f} and their autoencoder "
            f"reconstructions {coded:.2f}: the autoencoder's floor is {100 * share:.0f}% of MSF's FID above the real "
            "floor; the rest is the diffusion model's.") in summary


MARKED = " (smaller than the autoencoder's margin {:.2f})"


def marked_claims(root: Path, result: dict, md: str) -> set[str]:
    """Check every deciding cell of Claims: the claim's interval, marked exactly when it is an FID difference whose
    mean (read back from the interval) is smaller in size than the autoencoder's margin FID(autoencoder floor) -
    FID(real floor), computed from the floors' metrics files; the caption states the margin. Returns the marked
    claims."""
    margin = np.mean(fids(evals(root, anchor="autoencoder"))) - np.mean(fids(evals(root, anchor="real")))
    assert f"FID(autoencoder floor) - FID(real floor) = {margin:.2f}" in caption(md, "Claims")
    cells = parse_md_table(md, "Claims")["Deciding difference [95% CI]"]
    marked = set()
    for c, cell in zip(result["claims"], cells, strict=True):
        d = re.match(rf"FID\(.+?\) - FID\(.+?\) = ({NUMBER})", c["interval"])
        small = d is not None and abs(float(d.group(1))) < margin
        assert cell == c["interval"] + (MARKED.format(margin) if small else ""), cell
        if small:
            marked.add(c["claim"].split(" (")[0])
    return marked


def test_claims_mark_deciding_differences_smaller_than_the_autoencoders_margin(built, tmp_path):
    # The margin is 1.5 FID: Table 4's -0.2 and Fig. 2's -0.48 are marked, Tables 2-3's +2 and the speed claim's
    # -3.5 are not, nor the loss claim (a loss ratio, no FID difference) although its 0.25 is smaller.
    root, result, md = built
    assert marked_claims(root, result, md) == {
        "Residual factorization beats latent and image resizing", "Scale-1 FID is best around 100-125 steps",
        "Scale 2 is robust to 10 steps: FID-5K fluctuates by <= 0.05 over 10-100 steps"}
    # The same runs with reconstructions scoring FID 7: the margin (6.5) exceeds every deciding FID difference, the
    # autoencoder is most of MSF's FID above the real floor, and the summary and captions say so; no verdict changes.
    raised = tmp_path / "raised"
    shutil.copytree(root, raised)
    for m in evals(raised, anchor="autoencoder"):
        path = raised / m["run"] / "metrics.json"
        path.write_text(json.dumps(json.loads(path.read_text()) | {"fid": m["fid"] + 5.0}))
    result2 = build_report([raised], tmp_path / "out", figures=False)
    md2 = Path(result2["markdown"]).read_text(encoding="utf-8")
    assert [c["verdict"] for c in result2["claims"]] == [c["verdict"] for c in result["claims"]]
    assert marked_claims(raised, result2, md2) == set(EXPECTED_VERDICTS) - {
        "Scale-2 training loss is much lower than scale-1"}
    share = share_sentence(raised, msf_runs(raised), "MSF")
    assert share.startswith("The autoencoder's floor is 87%")  # (7.0 - 0.5) / (8.0 - 0.5)
    for table_id in ("Table 2", "Table 3", "Table 4", "Table 5"):
        assert share + " (the autoencoder, not the diffusion model, decides most of it)." in caption(md2, table_id)
    summary = md2.split("## Summary")[1].split("## Runs")[0]
    assert "of MSF's FID above the real floor, so these numbers measure the autoencoder more than the diffusion model" \
        in summary and "87%" in summary


def test_our_feature_network_is_never_called_inception(built):
    _, _, md = built
    for clause in re.split(r"[|.;\n]", md):  # a table cell or a sentence: never our network and 'Inception' together
        assert not ("embedded-net" in clause and "Inception" in clause), clause


def test_sample_grids_show_every_point_of_every_sweep(built):
    # Each setting's grid.npy is one solid colour (rf.grid_color): a sweep's figure must show exactly its points.
    _, result, _ = built

    def colours(name: str) -> set[tuple[int, int, int]]:
        with Image.open(result["figures"][name]) as im:
            return {c for _, c in im.convert("RGB").getcolors(1 << 24)}

    points = rf.eval_points()
    t2 = {p for p in points if p[1] == rf.MAIN_STEPS and p[2][1] == 1.0 and p[3] == "residual" and p[5] == "adaln_zero"
          and p[4] == tuple(rf.SCALES) and p[0] == "msf"}
    assert len(t2) == len(rf.CFG_SCALE1_FID)
    shown = colours("fig_grid_cfg_scale0")
    assert {rf.grid_color(p) for p in t2} <= shown
    assert not {rf.grid_color(p) for p in points if p not in t2} & shown
    assert rf.grid_color(("orphan", *rf.msf(cfg=rf.ORPHAN_CFG))) not in shown  # a run no manifest lists
    main = colours("fig_grid_main")
    assert rf.grid_color(rf.MAIN) in main and rf.grid_color(("dimr", (250,), (1.5,), "residual", (32,),
                                                             "adaln_zero")) in main
    assert rf.grid_color(rf.DIT_XL2_POINT) in main
    unfinished = rf.grid_color(rf.msf(steps=(rf.MAIN_STEPS[0], rf.UNFINISHED_STEPS_SCALE2)))
    assert unfinished not in colours("fig_grid_steps_scale1")  # sampled, but its score run never finished
    assert rf.grid_color(rf.msf(steps=(rf.MAIN_STEPS[0], 10))) in colours("fig_grid_steps_scale1")


def test_a_run_no_manifest_lists_is_in_no_table(built):
    # Table 2's CFG 1.3 was run by older code only: six finished runs recording exactly the settings of the planned
    # point, FID 1 (it would be the best CFG in every seed), under keys no manifest lists. They are read, and shown
    # nowhere: the planned point stays missing and the Table 2 claim keeps its verdict.
    root, result, md = built
    orphans = metrics_where(root, kind="score", cfg=list(rf.ORPHAN_CFG))
    assert len(orphans) == len(rf.TRAIN_SEEDS) * len(rf.SAMPLE_SEEDS) and fids(orphans) == [rf.ORPHAN_FID] * 6
    (planned_point,) = [p for m in manifests_of(root) if m["sweep"] == "cfg_scale0" for p in m["points"]
                        if p["explicit"]["cfg"] == list(rf.ORPHAN_CFG)]
    assert all({k: o[k] for k in planned_point["setting"]} == planned_point["setting"] for o in orphans)
    assert not {o["run"] for o in orphans} & listed(root) and not evals(root, cfg=list(rf.ORPHAN_CFG))
    t2 = parse_md_table(md, "Table 2").set_index("CFG scale 1")
    assert (t2.loc["ours FID", "1.3"], t2.loc[SEEDS_ROW, "1.3"]) == (MISSING, MISSING)
    assert t2.loc["paper FID-5K", "1.3"] != MISSING  # the paper's point, not ours
    best = next(c for c in result["claims"] if c["claim"].startswith("Best scale-1 CFG"))
    assert best["verdict"] == SUPPORTED and "FID(1.3)" not in best["evidence"]
    for table in md_tables(md).values():  # no cell anywhere shows the orphans' FID
        assert f"| {rf.ORPHAN_FID:.2f} ±" not in table


def test_a_subset_of_runs_is_shown_as_missing_never_filled(tmp_path, built):
    root = built[0]
    # only Table 2's points at CFG 1.0 / 1.4 / 1.5 (1.2 dropped), their score and sample runs, with every manifest:
    # no train, recon, speed, anchor or other sweep's run
    scored = [m for c in (1.0, 1.4, 1.5) for m in msf_runs(root, cfg=[c, 1.0])]
    keep = [root / name for m in scored for name in (m["run"], m["samples"])]
    assert len(keep) == 2 * 3 * len(rf.TRAIN_SEEDS) * len(rf.SAMPLE_SEEDS)
    result = build_report(keep, tmp_path / "out", manifests=sorted(root.glob(f"{MANIFESTS}/*.json")))
    md = Path(result["markdown"]).read_text(encoding="utf-8")
    t2 = parse_md_table(md, "Table 2").set_index("CFG scale 1")
    assert t2.loc["ours FID", "1.2"] == MISSING and t2.loc["paper FID-5K", "1.2"] == "7.69"
    assert parse_cell(t2.loc["ours FID", "1.4"]) is not None
    assert (t2.loc["ours FID", [FLOOR, AE_FLOOR, CEILING]] == MISSING).all()  # no anchor runs
    assert "The autoencoder's floor is" not in md and "autoencoder's margin" not in md  # nothing without floors
    for table_id in ("Table 3", "Table 4", "Table 5"):  # one point each: shown, all else missing
        ours = parse_md_table(md, table_id).iloc[1, 1:]
        assert (ours != MISSING).sum() == 1
    assert set(result["missing_figures"]) == {"fig_loss", "fig_decomposition"}  # the grids' evals are kept
    assert {"fig_cfg", "fig_steps", "fig_compute", "fig_sample_decomposition", "fig_grid_cfg_scale0"} <= set(
        result["figures"])
    f2 = parse_md_table(md, "Table F2").set_index("Factorization")
    assert (f2.drop(index="residual")["FID ours"] == MISSING).all()
    t1 = parse_md_table(md, "Table 1").set_index("Model")
    assert (t1.loc[[FLOOR, AE_FLOOR, CEILING], "FID ours"] == MISSING).all()
    assert all(v in (SUPPORTED, CONTRADICTED, UNRESOLVED) for v in (c["verdict"] for c in result["claims"]))
    assert md.count("not resolvable at this preset") >= 5


def test_manifests_of_other_settings_become_their_own_series_never_mixed(tmp_path):
    # Table 3's sweep planned three times with sample.steps=[3,2] (overriding its base block's 100/50): as configured,
    # scored with 128 samples (another protocol), and trained longer; each manifest lists its own runs, and the runs of
    # the three record the same settings but n_samples or train_steps. A fourth manifest is the first planned again
    # with a second sampling seed (only its seeds differ): its runs join the first's points. So Table 3 is the first
    # configuration (the most runs), Tables 3b and 3c the two others, each one manifest's runs, never a mix.
    root = tmp_path / "runs"
    variants = {  # name -> (config changes, what its runs record differently, FID offset)
        "as configured": ({}, {}, 0.0),
        "128 samples": ({"eval.n_samples": 128}, {"n_samples": 128}, 1.0),
        "trained longer": ({"msf.steps": [600, 300]}, {"train_steps": [600, 300]}, 2.0),
    }
    runs_of: dict[tuple[str, float], list[dict]] = {}  # (variant, scale-2 CFG) -> the runs written so far
    for name, (changes, recorded, offset) in variants.items():
        for sample_seeds in ((0,), (0, 1)) if name == "as configured" else ((0,),):
            points = []
            for c in (1.0, 1.2):
                point = rf.msf(steps=(3, 2), cfg=(1.4, c))
                written = runs_of.setdefault((name, c), [])
                seeds = {(t, s) for t in (0, 1) for s in sample_seeds} - {(r["train_seed"], r["sample_seed"])
                                                                          for r in written}
                written += rf.write_point(root, point, {(t, s): 8.0 + c + offset + t / 10 + s / 30
                                                        for t, s in sorted(seeds)}, recorded, salt=name)
                points.append({"explicit": {"model": "msf", "anchor": None, "cfg": [1.4, c]},
                               "setting": rf.setting_of(point),
                               "runs": sorted(written, key=lambda r: (r["train_seed"], r["sample_seed"]))})
            overrides = {"sample.steps": [3, 2], **changes}
            cfg = rf.config("cfg_scale1", (0, 1), sample_seeds, **overrides)
            rf.write_manifest(root, rf.manifest("cfg_scale1", points, {}, cfg, overrides | rf.seeds_overrides(
                (0, 1), sample_seeds), 0))
    assert len(list(root.glob(f"{rf.PRESET}/{MANIFESTS}/cfg_scale1-*.json"))) == 4
    result = build_report([root], tmp_path / "out")
    md = Path(result["markdown"]).read_text(encoding="utf-8")
    assert [t for t in result["tables"] if t.startswith("Table 3")] == ["Table 3", "Table 3b", "Table 3c"]

    def cells(runs: list[dict]) -> list[str]:
        """A variant's 'ours FID' cells at scale-2 CFG 1.0 and 1.2, from its metrics.json files."""
        by_cfg = [[m["fid"] for m in runs if m["cfg"][1] == c] for c in (1.0, 1.2)]
        return [f"{np.mean(x):.2f} ± {np.std(x, ddof=1):.2f}" for x in by_cfg]

    expected = {  # each variant's runs, recognised by what they record
        "as configured": cells(evals(root / rf.PRESET, n_samples=64, train_steps=[300, 300])),
        "128 samples": cells(evals(root / rf.PRESET, n_samples=128)),
        "trained longer": cells(evals(root / rf.PRESET, train_steps=[600, 300])),
    }
    assert len(evals(root / rf.PRESET, n_samples=64, train_steps=[300, 300])) == 8  # both manifests' runs, once
    shown = {t: parse_md_table(md, t).set_index("CFG scale 2").loc["ours FID", ["1.0", "1.2"]].tolist()
             for t in ("Table 3", "Table 3b", "Table 3c")}
    assert shown["Table 3"] == expected["as configured"]  # the series with the most runs
    assert sorted(shown.values()) == sorted(expected.values())  # every series is one variant, each variant once
    assert parse_md_table(md, "Table 3").set_index("CFG scale 2").loc[SEEDS_ROW, "1.0"] == "2 x 2"
    assert "n_samples 128" in caption(md, "Table 3b") + caption(md, "Table 3c")
    assert "n_samples 128" not in caption(md, "Table 3")
    assert inventory_line(md, "Duplicates") == []  # the runs both manifests list are the same runs, not duplicates


def test_a_sweep_without_a_dedicated_table_gets_a_points_table_whose_rows_are_not_merged(tmp_path):
    # A sweep file the report knows nothing of: table "lr", sweeping train.lr. Both points' runs record the same
    # settings (the learning rate is no metrics key); only the manifest says which runs are which point's.
    root = tmp_path / "runs"
    points, runs_of = [], {}
    for lr, fid in ((1e-4, 9.0), (3e-4, 8.0)):
        runs = rf.write_point(root, rf.MAIN, {(t, s): fid + t / 10 + s / 100 + fid * t * s / 100 for t in (0, 1)
                                              for s in (0, 1)}, salt=f"lr{lr}")
        runs_of[lr] = [m for m in metrics_where(root, kind="score") if m["run"] in {r["score"] for r in runs}]
        points.append({"explicit": {"model": "msf", "anchor": None, "train.lr": lr}, "setting": rf.setting_of(rf.MAIN),
                       "runs": runs})
    assert [{k: m[k] for k in rf.setting_of(rf.MAIN)} for m in runs_of[1e-4]] == [rf.setting_of(rf.MAIN)] * 4
    assert [{k: m[k] for k in rf.setting_of(rf.MAIN)} for m in runs_of[3e-4]] == [rf.setting_of(rf.MAIN)] * 4
    rf.write_manifest(root, rf.manifest("lr", points, {}, rf.config("lr", (0, 1)), rf.seeds_overrides((0, 1)), 1,
                                        table="lr", description="Learning rate: FID at otherwise equal settings"))
    result = build_report([root], tmp_path / "out")
    md = Path(result["markdown"]).read_text(encoding="utf-8")
    assert "Table lr" in result["tables"]
    assert caption(md, "Table lr").startswith(" Learning rate: FID at otherwise equal settings.")
    table = parse_md_table(md, "Table lr").set_index("train.lr")
    assert list(table.index) == ["0.0001", "0.0003", FLOOR, AE_FLOOR, CEILING]
    for row, lr in (("0.0001", 1e-4), ("0.0003", 3e-4)):
        assert_cell_matches(table.loc[row, "FID ours"], fids(runs_of[lr]))
        assert table.loc[row, SEEDS_COL] == "2 x 2"
    versus = "FID - FID(0.0003) [95% CI]"
    assert table.loc["0.0003", versus] == "reference (0.0003)"  # the manifest's reference: the preset's rate
    assert_interval_matches(table.loc["0.0001", versus], expected_interval(runs_of[1e-4], runs_of[3e-4]))
    assert inventory_line(md, "Duplicates") == []  # same settings and seeds, but other points: not duplicates


def test_reports_import_neither_torch_nor_the_method():
    # A fresh interpreter: the report reads run folders and sweep files only (no model, no torch, no msf).
    code = ("import sys, reports.build, reports.publish; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'msf', 'baselines')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


# ----------------------------------------------------------------------------------------------------------------------
# HTML


def test_html_is_self_contained(built):
    _, result, _ = built
    page = Path(result["html"]).read_text(encoding="utf-8")
    assert not re.search(r"(?:src|href)=\"(?!data:)", page) and "http://" not in page and "https://" not in page
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(uris) == len(result["figures"])
    on_disk = {Path(p).read_bytes() for p in result["figures"].values()}
    for data in uris:
        raw = base64.b64decode(data)
        assert raw in on_disk  # the embedded image is the PNG written beside the report
        Image.open(io.BytesIO(raw)).verify()
    assert page.count("<li>") >= len(result["claims"])  # the summary's lists


def test_html_renders_in_headless_chromium(built, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed (Debian: apt-get install -y chromium)")
    shot = tmp_path / "shot.png"
    cmd = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
        f"--screenshot={shot}",
        "--window-size=1200,2000",
        Path(built[1]["html"]).resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert ":CONSOLE" not in proc.stderr  # no script or console errors (the page has no script at all)
    with Image.open(shot) as im:
        rgb = im.convert("RGB")
        assert rgb.size == (1200, 2000)
        assert any(lo != hi for lo, hi in rgb.getextrema()) and len(rgb.getcolors(1 << 24) or []) > 50


# ----------------------------------------------------------------------------------------------------------------------
# Command line and bad input


def edit_metrics(run: Path, **changes) -> None:
    """Change some fields of a run folder's metrics.json."""
    path = run / "metrics.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


def one_run(root: Path, sweeps: tuple[str, ...] = ("cfg_scale0",), fid: float | None = 8.0) -> Path:
    """Sweeps planned with one training and one sampling seed, of which one run finished: the main point's (every
    sweep lists it); returns its score run folder."""
    for i, sweep in enumerate(sweeps):
        rf.write_sweep(root, sweep, {rf.MAIN: {(0, 0): fid}} if i == 0 else {})
    (score,) = (root / rf.PRESET).glob("score-*")
    return score


def test_cli_writes_report_beside_the_run_folders(tmp_path, capsys):
    root = tmp_path / "runs"
    one_run(root)
    main([str(root / rf.PRESET)])
    out = root / rf.PRESET / "report"
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
    assert capsys.readouterr().out.startswith(f"wrote {out / 'report.md'}")
    md = (out / "report.md").read_text(encoding="utf-8")
    t2 = parse_md_table(md, "Table 2").set_index("CFG scale 1")
    assert t2.loc["ours FID"].tolist().count("8.00") == 1 and t2.loc[SEEDS_ROW, "1.4"] == "1 x 1"  # one run: no '±'
    assert "**Table 3.**" not in md and "**Table F2.**" not in md  # tables of sweeps with a manifest only
    main([str(root / rf.PRESET), "--out", str(tmp_path / "tables"), "--no-figures"])
    assert capsys.readouterr().out.endswith("; no figures drawn\n") and not list((tmp_path / "tables").glob("*.png"))
    assert md_tables((tmp_path / "tables" / "report.md").read_text(encoding="utf-8")) == md_tables(md)


def test_the_speed_claim_pairs_msf_with_table_1s_baseline_only(tmp_path):
    """The flow DiT timed at another CFG (Table G2's 2.0) is not Table 1's baseline: with no main sweep the speed
    claim has none; once the main sweep lists the flow DiT at 1.5, the claim pairs MSF with that point."""
    root = tmp_path / "runs"
    timed = {"sample_time_per_64_s": 10.0}
    rf.write_point(root, rf.MAIN, {(0, 0): 8.0}, timed)
    rf.write_point(root, ("dit_flow", (250,), (2.0,), *rf.BASELINE_POINT[2:]), {(0, 0): 7.0}, timed)
    rf.write_sweep(root, "cfg_scale0", {})
    rf.write_sweep(root, "cfg_wide_flow", {})

    def speed_claim() -> dict:
        result = build_report([root / rf.PRESET], tmp_path / "out", figures=False)
        return next(c for c in result["claims"] if c["claim"].startswith("MSF is 2x faster"))

    assert speed_claim()["evidence"] == "no MSF and baseline evals with FID and timing evaluated alike"
    rf.write_point(root, ("dit_flow", *rf.BASELINE_POINT), {(0, 0): 9.0}, timed)
    rf.write_sweep(root, "main", {})
    assert "dit_flow, scales 32, steps 250, cfg 1.5," in speed_claim()["evidence"]


def test_unmeasured_metrics_show_as_missing(tmp_path):
    score = one_run(tmp_path, ("main", "cfg_scale0"), fid=None)
    edit_metrics(score, is_mean=None, sample_time_per_64_s=None)  # schema: null when not measured
    result = build_report([tmp_path], tmp_path / "out")
    md = Path(result["markdown"]).read_text(encoding="utf-8")
    row = parse_md_table(md, "Table 1").query("Model == 'MSF(cfg=1.4)'").iloc[0]
    assert (row["FID ours"], row["IS ours"], row["Time ours (s/64 img)"]) == (MISSING, MISSING, MISSING)
    assert row["Pre ours"] == "0.50" and row["FID paper"] == "2.2"
    assert parse_md_table(md, "Table 2").iloc[1, 1:].eq(MISSING).all()
    assert {c["verdict"] for c in result["claims"]} == {UNRESOLVED}


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(SystemExit):  # the command line turns the ValueError into a usage error
        main([str(tmp_path / "absent")])
    with pytest.raises(ValueError, match="not a directory"):
        build_report([tmp_path / "absent"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no run folder"):
        build_report([tmp_path / "empty"], tmp_path / "out")
    bad = one_run(tmp_path / "a")
    metrics = json.loads((bad / "metrics.json").read_text())
    del metrics["fid"]
    (bad / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(ValueError, match="lacks fid"):
        build_report([bad], tmp_path / "out")
    old = one_run(tmp_path / "c")
    (old / "config.json").write_text(json.dumps({"kind": "score", "name": old.name, "config": {}}))  # old schema
    result = build_report([old.parent], tmp_path / "out-c")  # left out, and said so: never reported
    listed = Path(result["markdown"]).read_text(encoding="utf-8").split("## Runs")[1].split("## Claims")[0]
    assert f"{old.name}: {old / 'config.json'} is not a run record" in listed
    assert result["runs"] == len(list(old.parent.glob("*/config.json"))) - 1
    shutil.rmtree(tmp_path / "out-c")
    recon = {"factorization": "residual", "scales": [4, 8], "psnr_per_scale": [1, 2], "psnr_full": 2}
    bad = rf.write_run(tmp_path / "b", "recon", "float", recon, decomposition=np.zeros((1, 2, 4, 4, 3)))
    one_run(tmp_path / "b")
    with pytest.raises(ValueError, match="expected uint8"):
        build_report([bad.parent], tmp_path / "out")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("report.*"))


def test_a_report_without_sweep_manifests_fails_with_one_clear_error(tmp_path, built):
    # Run folders without the manifests that say which runs make which table: one error naming the folder and what
    # writes manifests, nothing written; likewise a manifest that is not one.
    bare = tmp_path / "bare"
    for run in sorted(built[0].glob("score-real-*")):
        shutil.copytree(run, bare / run.name)
    with pytest.raises(ValueError) as error:
        build_report([bare], tmp_path / "out")
    message = str(error.value)
    assert message == (f"no sweep manifest ({MANIFESTS}/*.json) in {bare}: run the sweep with ablations/run.py, which "
                       "writes it")
    assert not (tmp_path / "out").exists()
    r = subprocess.run([sys.executable, str(ROOT / "reports" / "build.py"), str(bare)], capture_output=True,
                       text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [f"error: {message}"], r.stderr
    assert r.stderr.count("error") == 1 and not (bare / "report").exists()
    (bare / MANIFESTS).mkdir()
    for content, expected in (({"sweep": "main"}, "is not a sweep manifest \\(lacks table, description, preset, "
                                                  "config, points, reference, anchors\\)"),
                              ("{", "cannot read"),
                              (rf.manifest("main", [{"explicit": {}, "setting": {}}], {}, rf.config("main"), {}, None),
                               "a point lacks explicit, setting or runs")):
        path = bare / MANIFESTS / "main-00000000.json"
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        with pytest.raises(ValueError, match=expected):
            build_report([bare], tmp_path / "out")
        assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------------------------------
# Trends beside a stand-in (another dataset's runs of the same sweeps)


def fitted_change(xs: list[float], ys: list[float]) -> float:
    """numpy's least-squares slope times the swept range: the independent reference for trend()."""
    return float(np.polyfit(xs, ys, 1)[0]) * (max(xs) - min(xs))


def test_trend_is_the_fitted_change_per_training_seed_with_a_t_interval():
    # FID rises by 0.1 per 0.1 CFG in every training seed; seeds differ by +-3 and sampling seeds by 0.05.
    rng = np.random.default_rng(3)
    xs = [1.0, 1.2, 1.3, 1.5]
    arms = {x: Arm("x", {(t, s): 40 + x + 3 * (t - 1) + 0.05 * s + float(rng.normal(0, 0.01))
                         for t in range(3) for s in range(2)}) for x in xs}
    iv = trend(arms)
    per_seed = [fitted_change(xs, [np.mean([arms[x].values[t, s] for s in range(2)]) for x in xs]) for t in range(3)]
    ci = scipy_stats.ttest_1samp(per_seed, 0.0).confidence_interval(0.95)
    assert (iv.n, iv.unit, iv.pairs) == (3, "training seed", 24)
    assert (iv.mean, iv.lo, iv.hi) == pytest.approx((np.mean(per_seed), ci.low, ci.high), rel=1e-9)
    assert iv.lo > 0.4  # +0.5 over the range, resolved although the seed offsets are 6x larger
    one = trend({x: Arm("x", {(0, s): x + 0.01 * s * x for s in range(3)}) for x in xs})
    assert (one.n, one.unit) == (3, "sampling seed") and "sampling noise only" in one.text()
    assert trend({1.0: arms[1.0]}) is None  # one setting: no trend
    assert trend({1.0: Arm("a", {(0, 0): 1.0}), 1.5: Arm("b", {(1, 0): 2.0})}) is None  # no run unit in common
    assert not trend({1.0: Arm("a", {(0, 0): 1.0}), 1.5: Arm("b", {(0, 0): 2.0})}).defined  # one unit: no interval


def resolved(mean: float) -> Interval:
    return Interval(mean, mean - 0.1, mean + 0.1, 3, "training seed", 9)


@pytest.mark.parametrize(
    ("ours", "theirs", "reading"),
    [
        (resolved(1.0), resolved(2.0), "same direction"),
        (resolved(-1.0), resolved(2.0), "reversed: FID falls on a, rises on b"),
        (resolved(1.0), resolved(0.05), "FID rises on a; no resolved trend on b"),
        (resolved(0.0), resolved(-1.0), "FID falls on b; no resolved trend on a"),
        (resolved(0.05), resolved(-0.05), "no resolved trend on either"),
        (resolved(1.0), None, "not measured on b"),
        (Interval(1.0, math.nan, math.nan, 1, "training seed", 4), resolved(1.0), "no interval on a"),
    ],
)
def test_trend_readings(ours, theirs, reading):
    assert compare_trends(ours, theirs, ("a", "b")) == reading


def test_a_stand_in_with_reversed_trends_is_set_beside_ours(built, tmp_path):
    root, _, _ = built
    stand_in = tmp_path / "digits"
    shutil.copytree(root, stand_in)
    for path in stand_in.glob("score-*/metrics.json"):  # the stand-in: another dataset whose every FID is negated
        m = json.loads(path.read_text())
        path.write_text(json.dumps(m | {"dataset": "digits", "fid": -m["fid"]}))
    result = build_report([root], tmp_path / "out", stand_in=[stand_in], figures=False)
    md = Path(result["markdown"]).read_text(encoding="utf-8")
    table = parse_md_table(md, "Table D1")
    row = table[table["Sweep"].str.startswith("Table 2")].iloc[0]
    assert row["Settings"] == ", ".join(f"{x:g}" for x in sorted(rf.CFG_SCALE1_FID))
    assert row["Reading"] == "reversed: FID falls on embedded, rises on digits"

    def expected(sign: float) -> list[float]:
        """Per training seed: the fitted change of the sampling-seed means over Table 2's settings."""
        out = []
        for t in rf.TRAIN_SEEDS:
            ys = [np.mean([sign * m["fid"] for m in msf_runs(root, cfg=[x, 1.0], steps=list(rf.MAIN_STEPS),
                                                             train_seed=t)]) for x in sorted(rf.CFG_SCALE1_FID)]
            out.append(fitted_change(sorted(rf.CFG_SCALE1_FID), ys))
        return out

    for column, sign in (("FID change here (embedded)", 1.0), ("On the stand-in (digits)", -1.0)):
        per_seed = expected(sign)
        ci = scipy_stats.ttest_1samp(per_seed, 0.0).confidence_interval(0.95)
        assert_interval_matches(row[column], (float(np.mean(per_seed)), ci.low, ci.high))
    claims = parse_md_table(md, "Claims")
    assert list(claims.columns)[-1] == "On the stand-in (digits)"
    best = claims[claims["Claim"].str.contains("Table 2")].iloc[0]
    assert best["Verdict"] == SUPPORTED and best["On the stand-in (digits)"].startswith(CONTRADICTED)
    reading = "trend (Table D1): reversed: FID falls on embedded, rises on digits"
    assert best["On the stand-in (digits)"].endswith(reading)
    loss = claims[claims["Claim"].str.contains("Fig. 4")].iloc[0]
    assert "trend" not in loss["On the stand-in (digits)"]  # Tables 2-5 only
    assert "Beside a stand-in (digits" in md and "Table 2: reversed" in md
    with pytest.raises(ValueError, match="no finished score run or no sweep manifest in the stand-in"):
        build_report([root], tmp_path / "out2", stand_in=[stand_in / next(stand_in.glob("train-*")).name])
    shutil.rmtree(stand_in / MANIFESTS)
    with pytest.raises(ValueError, match="no finished score run or no sweep manifest in the stand-in"):
        build_report([root], tmp_path / "out2", stand_in=[stand_in])
    with pytest.raises(ValueError, match="not a directory"):
        publish(root, tmp_path / "never", stand_in=[tmp_path / "absent"])
    with pytest.raises(ValueError, match=f"no sweep manifest .* in {stand_in}"):
        publish(root, tmp_path / "never", stand_in=[stand_in])
    assert not (tmp_path / "never").exists()  # refused before anything was written


# ----------------------------------------------------------------------------------------------------------------------
# Publishing: metadata only, stats thinned, tables regenerate from the metadata


def test_publish_refuses_an_existing_destination_or_no_manifest_and_writes_nothing(tmp_path, unrendered):
    root = tmp_path / "runs"
    score = one_run(root)
    (tmp_path / "dest" / "runs").mkdir(parents=True)
    cmd = [sys.executable, str(ROOT / "reports" / "publish.py"), str(root), str(tmp_path / "dest")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "exists" in r.stderr, r.stderr
    assert list((tmp_path / "dest").rglob("*")) == [tmp_path / "dest" / "runs"]  # nothing copied, no report
    bare = tmp_path / "bare"  # run folders without their manifest: refused before anything is written
    shutil.copytree(score, bare / score.name)
    cmd = [sys.executable, str(ROOT / "reports" / "publish.py"), str(bare), str(tmp_path / "never")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "no sweep manifest" in r.stderr, r.stderr
    assert not (tmp_path / "never").exists()
    publish(root, tmp_path / "fresh")
    published = tmp_path / "fresh" / "runs"
    assert sorted(p.name for p in published.iterdir()) == sorted([MANIFESTS, score.name, json.loads(
        (score / "metrics.json").read_text())["samples"]])
    for folder in (p for p in published.iterdir() if p.name != MANIFESTS):  # metadata only: no samples.npz, grid.npy
        assert sorted(p.name for p in folder.iterdir()) == ["config.json", "metrics.json"]
    ((manifest,), (copied,)) = (list(d.glob(f"{MANIFESTS}/*.json")) for d in (root / rf.PRESET, published))
    assert copied.name == manifest.name and copied.read_bytes() == manifest.read_bytes()


def test_publish_thins_stats_keeping_the_first_and_last_records(tmp_path):
    root = tmp_path / "runs"
    records = [{"step": i, "loss": 1.0 / i, "lr": 3e-4} for i in range(1, 1001)]
    metrics = rf.train_metrics("msf", 0, 0, 0.5, "residual", rf.SCALES)
    run = rf.write_run(root, "train", "train-long", metrics, {"stage": 0}, stats=records)
    with (run / "stats.jsonl").open("a") as f:
        f.write('{"step": 1001, "loss"')  # a torn last line (killed writer): dropped
    copied = copy_metadata(root, tmp_path / "dest")
    lines = (copied[0] / "stats.jsonl").read_text().splitlines()
    original = (run / "stats.jsonl").read_text().splitlines()
    assert 2 <= len(lines) <= MAX_STATS
    assert lines[0] == original[0] and lines[-1] == original[-2]  # first and last complete records
    positions = [original.index(line) for line in lines]
    assert positions == sorted(positions)  # original records, in order
    assert max(np.diff(positions)) <= 2 * 1000 / MAX_STATS  # evenly spread


def test_published_metadata_regenerates_the_reports_tables(built, tmp_path, unrendered):
    # Publishing copies every manifest beside the run metadata; the report rebuilt from the published folder alone
    # has every table of the published report, which has every table of the report of the full run folders.
    root, result, md = built
    published = publish(root, tmp_path / "pub")
    manifests = sorted(root.glob(f"{MANIFESTS}/*.json"))
    copies = sorted((tmp_path / "pub" / "runs").glob(f"{MANIFESTS}/*.json"))
    assert [p.name for p in copies] == [p.name for p in manifests] and len(manifests) == len(SWEEP_NAMES) + 1
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(manifests, copies, strict=True))
    assert md_tables(Path(published["markdown"]).read_text(encoding="utf-8")) == md_tables(md)
    rebuilt = build_report([tmp_path / "pub" / "runs"], tmp_path / "out")
    assert rebuilt["tables"] == result["tables"]
    assert md_tables(Path(rebuilt["markdown"]).read_text(encoding="utf-8")) == md_tables(md)
    assert set(rebuilt["missing_figures"]) == {"fig_decomposition", "fig_sample_decomposition", "fig_grid"}


# ----------------------------------------------------------------------------------------------------------------------
# The report from real run folders: every sweep of the smoke preset run by the runner into one runs folder

# Tables 2-5 of the sweeps as run: (varied key, its index, the other index's value, the fixed key and its value)
REAL_SWEEPS = {
    "Table 2": ("cfg", 0, 1.0, "steps", [100, 50]),
    "Table 3": ("cfg", 1, 1.4, "steps", [100, 50]),
    "Table 4": ("steps", 0, 50, "cfg", [1.4, 1.0]),
    "Table 5": ("steps", 1, 100, "cfg", [1.4, 1.0]),
}


@pytest.fixture(scope="module")
def smoke_sweeps(tmp_path_factory):
    """The runner's main (`python ablations/run.py sweep=NAME preset=smoke`) for every sweep (shared runs once),
    then one report of the whole runs folder."""
    base = tmp_path_factory.mktemp("smoke-sweeps")
    runs = base / "runs"
    for sweep in SWEEP_NAMES:  # in this process: one torch import for all sweeps
        assert run_main([f"sweep={sweep}", "preset=smoke", "cpu_threads=1", f"runs_dir={runs}"]) == 0, sweep
    result = build_report([runs / "smoke"], base / "report")
    return runs / "smoke", result, Path(result["markdown"]).read_text(encoding="utf-8")


def real_msf(root: Path, **match) -> list[dict]:
    """The smoke preset's listed score runs of trained MSF (residual, 4/8, adaLN-Zero) matching ``match``."""
    base = {"model": "msf", "factorization": "residual", "scales": [4, 8], "conditioning": "adaln_zero", "anchor": None}
    return evals(root, **(base | match))


@pytest.mark.e2e
def test_every_sweep_of_the_smoke_preset_reports_every_table_and_figure(smoke_sweeps):
    root, result, md = smoke_sweeps
    for sweep in SWEEP_NAMES:  # each sweep's own report, built by the runner at its end
        assert {p.name for p in (root / "reports" / sweep).iterdir()} >= {"report.md", "report.html"}
    assert result["tables"] == ALL_TABLES  # one series per sweep table: no 'Table 2b'
    for table_id in [*ALL_TABLES, "Scale"]:
        df = parse_md_table(md, table_id)
        assert len(df) > 0 and not (df == MISSING).all(axis=None), table_id
    assert list(root.glob("sample-msf-*/decomposition.npy"))  # MSF's sample runs save their decomposition
    assert result["missing_figures"] == {}
    assert {"fig_cfg", "fig_steps", "fig_loss", "fig_decomposition", "fig_compute"} <= set(result["figures"])
    assert {f"fig_grid_{s}" for s in SWEEP_NAMES if s != "speed"} <= set(result["figures"])
    for path in result["figures"].values():
        with Image.open(path) as im:
            assert im.format == "PNG" and len(im.getcolors(1 << 24) or []) > 2  # drawn, not a blank canvas
    assert result["runs"] == len(list(root.glob("*/config.json")))
    commits = Counter(json.loads(p.read_text())["code_version"] for p in root.glob("*/config.json")
                      if (p.parent / "metrics.json").is_file())
    named = ", ".join(f"{c}: {n}" for c, n in sorted(commits.items()))
    assert f"Code that ran the finished jobs (commit: jobs): {named};" in md  # the report names its code version
    t1 = parse_md_table(md, "Table 1").set_index("Model")
    for label, anchor in ANCHOR_OF.items():  # the ceiling scored like Table 1's MSF: steps 100/50
        found = evals(root, anchor=anchor, **({"steps": [100, 50]} if anchor == "untrained" else {}))
        assert found, label
        assert_cell_matches(t1.loc[label, "FID ours"], fids(found))
    manifests = manifests_of(root)
    assert sorted(m["sweep"] for m in manifests) == SWEEP_NAMES  # one manifest per sweep run
    assert listed(root) == {p.name for p in root.glob("score-*")}  # every score run a sweep planned, and only those


@pytest.mark.e2e
@pytest.mark.parametrize("table_id", sorted(REAL_SWEEPS))
def test_real_sweep_tables_parse_back_to_their_run_folders(smoke_sweeps, table_id):
    root, _, md = smoke_sweeps
    key, index, other_value, fixed_key, fixed = REAL_SWEEPS[table_id]
    df = parse_md_table(md, table_id)
    df = df.set_index(df.columns[0])
    assert list(df.columns[-3:]) == [FLOOR, AE_FLOOR, CEILING]
    for column in df.columns[:-3]:  # the sweeps use the paper's grids: every column is measured
        setting = [other_value, other_value]
        setting[index] = int(column) if key == "steps" else float(column)
        found = real_msf(root, **{key: setting, fixed_key: fixed})
        assert found, (table_id, column)
        assert_cell_matches(df.loc["ours FID", column], fids(found))
        n_train, n_sample = len({m["train_seed"] for m in found}), len({m["sample_seed"] for m in found})
        assert df.loc[SEEDS_ROW, column] == f"{n_train} x {n_sample}"


@pytest.mark.e2e
def test_real_table1_factorization_resolution_speed_and_train_tables_parse_back(smoke_sweeps):
    root, _, md = smoke_sweeps
    t1 = parse_md_table(md, "Table 1")
    assert t1["Model"].is_unique
    for cfg0, row_name in ((1.4, "MSF(cfg=1.4)"), (1.5, "MSF(cfg=1.5)")):
        row = t1[t1["Model"] == row_name].iloc[0]
        assert "steps 100/50" in row["Setting"]
        assert_cell_matches(row["FID ours"], fids(real_msf(root, steps=[100, 50], cfg=[cfg0, 1.0])))
    for model in ("dit_flow", "dimr"):
        row = t1[t1["Model"] == f"{model} (ours)"].iloc[0]
        assert_cell_matches(row["FID ours"], fids(evals(root, model=model, cfg=[1.5])))  # Table 1: CFG 1.5

    fid = parse_md_table(md, "Table F2").set_index("Factorization")
    recon = parse_md_table(md, "Table F1").set_index("Factorization")
    for name in ("residual", "residual_latent_base", "latent_resize", "image_resize"):
        found = real_msf(root, factorization=name, steps=[100, 50], cfg=[1.4, 1.0])
        assert_cell_matches(fid.loc[name, "FID ours"], fids(found))
        (m,) = metrics_where(root, kind="recon", factorization=name)
        assert float(recon.loc[name, "PSNR full"]) == pytest.approx(m["psnr_full"], abs=0.005)

    res = parse_md_table(md, "Table R1").set_index("Scales (latent sizes)")
    assert list(res.index) == ["4/8", "2/4/8", FLOOR, AE_FLOOR, CEILING]  # the smoke preset's resolutions sweep
    for scales, cfg, steps in (([4, 8], [1.4, 1.0], [3, 2]), ([2, 4, 8], [1.4, 1.0, 1.0], [3, 2, 2])):
        found = real_msf(root, scales=scales, cfg=cfg, steps=steps)
        assert_cell_matches(res.loc[slash_text(scales), "FID ours"], fids(found))
        assert float(res.loc[slash_text(scales), "GFLOPs/img"]) == pytest.approx(found[0]["gflops_per_image"],
                                                                                 rel=ROUND_3G)

    speed = parse_md_table(md, "Table S1").set_index("Model")
    speeds = metrics_where(root, kind="speed")
    assert sorted(m["model"] for m in speeds) == ["dimr", "dit_xl2", "msf"]
    for m in speeds:
        assert float(speed.loc[m["model"], "TFLOPs/img"]) == pytest.approx(m["tflops_per_image"], rel=ROUND_3G)
        assert float(speed.loc[m["model"], "s/64 img"]) == pytest.approx(64 * m["sec_per_image"], rel=ROUND_3G)
        assert float(speed.loc[m["model"], "MFU (%)"]) == pytest.approx(100 * m["mfu"], rel=ROUND_3G)
        assert m["method"] == "median call time x steps" and m["batch"] == 1  # CPU default method, smoke batch
    assert speeds[0]["tflops_per_image"] > 20  # the paper's sizes even in the smoke preset (MSF 22.1, DiT-XL/2 118.6)
    ratios = parse_md_table(md, "Table S2").set_index("Ratio")
    by_model = {m["model"]: m for m in speeds}
    flops = by_model["dit_xl2"]["tflops_per_image"] / by_model["msf"]["tflops_per_image"]
    assert ratios.loc["ours: counted FLOPs per image", "Ratio (x)"] == f"{flops:.2f}x"
    cond = parse_md_table(md, "Table C1").set_index("Conditioning")
    for name in ("adaln_zero", "tdln"):
        found = real_msf(root, conditioning=name, steps=[100, 50], cfg=[1.4, 1.0])
        assert_cell_matches(cond.loc[name, "FID ours"], fids(found))
    assert float(cond.loc["tdln", "Params (M)"]) < float(cond.loc["adaln_zero", "Params (M)"])  # no adaLN MLPs
    train = parse_md_table(md, "Table T1")
    assert len(train) == len(metrics_where(root, kind="train"))


@pytest.mark.e2e
def test_real_guidance_range_tables_parse_back(smoke_sweeps):
    """Tables G1 and G2 (sweeps cfg_wide, cfg_wide_flow): a row per CFG of the sweep file, each with its runs' FID;
    MSF's rows paired with the preset's own CFG (1.4, shared with Table 2), the flow DiT's with the one its file names
    (1.5, Table 1's)."""
    root, _, md = smoke_sweeps
    g1 = parse_md_table(md, "Table G1").set_index("CFG")
    cfgs = [1.4, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0]
    labels = [f"{c:.1f}/1.0" if round(c, 1) == c else f"{c:g}/1.0" for c in cfgs]
    assert list(g1.index) == [*labels, FLOOR, AE_FLOOR, CEILING]
    for c, label in zip(cfgs, labels, strict=True):
        found = real_msf(root, steps=[100, 50], cfg=[c, 1.0])
        assert len(found) == 1, label  # one training seed, one sampling seed at the smoke preset
        assert_cell_matches(g1.loc[label, "FID ours"], fids(found))
    assert g1.loc["1.4/1.0", "FID - FID(1.4/1.0) [95% CI]"] == "reference (1.4/1.0)"
    g2 = parse_md_table(md, "Table G2").set_index("CFG")  # the flow DiT's (sweep cfg_wide_flow), paired with 1.5
    assert list(g2.index) == ["1.5", "2.0", "2.5", "3.0", "4.0", FLOOR, AE_FLOOR, CEILING]
    for label in g2.index[:-3]:
        found = evals(root, model="dit_flow", steps=[10], cfg=[float(label)])
        assert len(found) == 1, label
        assert_cell_matches(g2.loc[label, "FID ours"], fids(found))
    assert g2.loc["1.5", "FID - FID(1.5) [95% CI]"] == "reference (1.5)"


def slash_text(values: list[int]) -> str:
    """[2, 4, 8] -> '2/4/8', as the report writes per-scale settings."""
    return "/".join(map(str, values))


# ----------------------------------------------------------------------------------------------------------------------
# The committed small-scale reproduction (results/tiny): its tables regenerate exactly from its committed metadata

PUBLISHED = ROOT / "results" / "tiny"
STAND_IN = ROOT / "results" / "digits"  # the real-image stand-in, published on its own and set beside tiny's report


def md_tables(md: str) -> dict[str, str]:
    """Every table block of report.md ('**Table X.** title. caption' and its pipe rows), by table id."""
    blocks: dict[str, str] = {}
    current = None
    for block in md.split("\n\n"):
        match = re.match(r"\*\*(.+?)\.\*\*", block)
        if match:
            current = match.group(1)
            blocks[current] = block
        elif block.startswith("|") and current is not None:
            blocks[current] += "\n\n" + block
            current = None
    return blocks


@pytest.mark.parametrize(("published", "stand_in", "tables"), [
    (PUBLISHED, STAND_IN, {"Table 1", "Table 2", "Table 3", "Table 4", "Table 5", "Table F2", "Table D1", "Claims"}),
    (STAND_IN, None, {"Table 2", "Table 4", "Claims"}),
])
def test_committed_report_tables_regenerate_from_committed_metadata(tmp_path, published, stand_in, tables):
    assert (published / "report.md").is_file(), f"the committed reproduction is missing ({published})"
    for path in (published / "runs").rglob("*"):  # metadata only: no checkpoints, caches or sample arrays
        assert path.is_dir() or path.name in ("config.json", "metrics.json", "stats.jsonl") or (
            path.parent.name == MANIFESTS and path.suffix == ".json"), path
    for path in (published / "runs").rglob("stats.jsonl"):  # thinned by reports/publish.py
        assert len(path.read_text().splitlines()) <= MAX_STATS, path
    rebuilt = build_report([published / "runs"], tmp_path, stand_in=[stand_in / "runs"] if stand_in else [],
                           figures=False)
    committed = md_tables((published / "report.md").read_text(encoding="utf-8"))
    assert set(committed) >= tables
    assert md_tables(Path(rebuilt["markdown"]).read_text(encoding="utf-8")) == committed


def test_a_hand_edited_config_is_left_out_and_never_reported(tmp_path, built):
    # A finished training whose config.json was edited by hand (batch 64 -> 999, lr -> 0.5) no longer hashes to the
    # key its folder is named by: the report leaves it out, names it as damaged, and never states the edited setting.
    root = tmp_path / "runs"
    shutil.copytree(built[0].parent, root)
    (train,) = [p for p in (root / rf.PRESET).glob("train-msf-residual-24x32-s0-t1-*")]
    config = json.loads((train / "config.json").read_text())
    config["spec"]["train"] |= {"batch_size": 999, "lr": 0.5}
    (train / "config.json").write_text(json.dumps(config))
    result = build_report([root / rf.PRESET], tmp_path / "out", figures=False)
    md = Path(result["markdown"]).read_text(encoding="utf-8")
    listed = md.split("## Runs")[1].split("## Claims")[0]
    assert f"{train.name}: {train / 'config.json'} does not hash to the key of {train.name}" in listed
    assert "999" not in md and train.name not in md.replace(listed, "")
    assert result["runs"] == built[1]["runs"] - 1
    assert "Not drawn: this report was built with --no-figures." in md and not list((tmp_path / "out").glob("*.png"))
    assert result["figures"] == result["missing_figures"] == {}


def test_the_runs_table_holds_every_run_read_and_the_tables_numbers(built):
    # runs.csv beside the report: one row per run folder read, loaded by the documented one-liner; its FIDs are the
    # metrics files' and a pandas aggregate over its rows gives Table 2's cells.
    root, result, md = built
    runs = pd.read_csv(result["table"])
    assert len(runs) == result["runs"] and runs["name"].is_unique
    scores = runs[runs.kind == "score"].set_index("name")
    for m in metrics_where(root, kind="score"):
        if m["fid"] is not None:
            assert scores.loc[m["run"], "fid"] == pytest.approx(m["fid"], rel=1e-12)
    t2 = parse_md_table(md, "Table 2").set_index(parse_md_table(md, "Table 2").columns[0])
    for cfg in (1.0, 1.2, 1.4):
        names = [m["run"] for m in msf_runs(root, cfg=[cfg, 1.0])]
        mean, std = runs.set_index("name").loc[names, "fid"].agg(["mean", "std"])
        assert t2.loc["ours FID", f"{cfg:.1f}"] == f"{mean:.2f} ± {std:.2f}"
    by_run = {m["run"]: m for m in metrics_where(root, kind="score")}
    assert all(json.loads(cfg) == by_run[name]["cfg"] for name, cfg in scores["cfg"].dropna().items())  # as JSON
