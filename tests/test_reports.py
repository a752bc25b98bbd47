"""Reports (reports/build.py, claims.py, paper.py; MSF Tables 1-5, Figs. 2, 4, 6-12): built from synthetic run folders
that follow the schema, the Markdown tables parsed back with pandas and compared with numpy statistics of the
metrics.json files, claim verdicts against the synthetic design, and the HTML rendered by headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import _runfolders as rf  # tests/ is on sys.path under pytest's default import mode
import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from ablations.run import main as run_main
from reports import paper
from reports.build import MISSING, build_report, main
from reports.claims import (
    CONTRADICTED,
    SUPPORTED,
    UNRESOLVED,
    Stat,
    Timed,
    judge_best,
    judge_factorization,
    judge_flat,
    judge_loss,
    judge_speed,
    pooled_std,
)
from reports.publish import publish

ROUND_FID = 0.005 + 1e-9  # FID cells carry 2 decimals: half a unit of the last digit, plus float slack


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


def metrics_where(root: Path, **match) -> list[dict]:
    """The metrics.json of every finished run whose fields equal ``match`` (lists compared as lists)."""
    found = []
    for path in root.rglob("metrics.json"):
        m = json.loads(path.read_text())
        if all(m.get(k) == v for k, v in match.items()):
            found.append(m)
    return found


def assert_cell_matches(cell: str, values: list[float], tol: float = ROUND_FID) -> None:
    """A parsed 'mean ± std' cell equals numpy's mean and sample std (ddof=1) of the per-seed values."""
    parsed = parse_cell(cell)
    assert parsed is not None, f"measured point shown as missing: {values}"
    mean, std = parsed
    assert abs(mean - np.mean(values)) <= tol
    if len(values) == 1:
        assert std is None
    else:
        assert std is not None and abs(std - np.std(values, ddof=1)) <= tol


# ----------------------------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The synthetic smoke sweep and the report built from it (built once: figures take a few seconds)."""
    base = tmp_path_factory.mktemp("reports")
    root = rf.make_runs(base / "runs")
    result = build_report([root], base / "out")
    return root, result, Path(result["markdown"]).read_text(encoding="utf-8")


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
# Claim rules


@given(st.lists(st.lists(st.floats(-100, 100), min_size=2, max_size=6), min_size=1, max_size=5))
def test_pooled_std_matches_within_group_sum_of_squares(groups):
    # Reference: sqrt(sum of squared deviations from each group's mean / (N - k)), computed by numpy in float64.
    ss = sum(float(np.sum((np.array(g) - np.mean(g)) ** 2)) for g in groups)
    dof = sum(len(g) for g in groups) - len(groups)
    expected = math.sqrt(ss / dof)
    # tolerance: statistics.stdev vs numpy differ by rounding only, relative 1e-9 plus 1e-9 absolute near 0
    assert pooled_std([Stat.of(g) for g in groups]) == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_pooled_std_is_undefined_with_a_single_seed():
    assert math.isnan(pooled_std([Stat.of([1.0, 2.0]), Stat.of([3.0])]))
    with pytest.raises(ValueError, match="at least one"):
        Stat.of([])


def three(mean: float) -> Stat:
    """Three seeds at mean -0.1, mean, mean +0.1: std 0.1, so 2s = 0.2."""
    return Stat.of([mean - 0.1, mean, mean + 0.1])


@pytest.mark.parametrize(
    ("fids", "verdict"),
    [
        ({1.2: three(9.0), 1.4: three(8.0), 1.5: three(8.5)}, SUPPORTED),  # 1.4 best by 0.5 > 0.2
        ({1.2: three(7.0), 1.4: three(8.0)}, CONTRADICTED),  # 1.2 better by 1.0
        ({1.2: three(8.1), 1.4: three(8.0)}, UNRESOLVED),  # 0.1 inside the spread
        ({1.2: three(9.0)}, UNRESOLVED),  # 1.4 not measured
    ],
)
def test_best_setting_rule(fids, verdict):
    assert judge_best("best cfg 1.4", fids, (1.4,)).verdict == verdict


@pytest.mark.parametrize(
    ("fids", "verdict"),
    [
        ({1.0: three(8.0), 1.2: three(8.1), 1.4: three(7.95)}, SUPPORTED),  # range 0.15 <= 2s = 0.2
        ({1.0: three(8.0), 1.2: three(8.5)}, CONTRADICTED),  # range 0.5 > 0.2
        ({1.0: three(8.0), 1.2: Stat.of([8.0])}, UNRESOLVED),  # one seed: no spread
        ({1.0: three(8.0)}, UNRESOLVED),  # nothing swept
    ],
)
def test_flat_rule(fids, verdict):
    assert judge_flat("flat", fids, paper_range=0.03).verdict == verdict


def test_flat_rule_accepts_the_papers_own_range_when_seeds_agree_closer():
    tight = {1.0: Stat.of([5.34, 5.341]), 1.4: Stat.of([5.315, 5.316])}  # 2s ~ 0.0014 < range 0.025 < 0.03
    assert judge_flat("flat", tight, paper_range=0.03).verdict == SUPPORTED
    assert judge_flat("flat", tight, paper_range=0.01).verdict == CONTRADICTED


@pytest.mark.parametrize(
    ("fids", "verdict"),
    [
        ({"residual": three(8.0), "latent_resize": three(9.0), "image_resize": three(8.5)}, SUPPORTED),
        ({"residual": three(8.0), "latent_resize": three(9.0), "image_resize": three(7.0)}, CONTRADICTED),
        ({"residual": three(8.0), "latent_resize": three(9.0)}, UNRESOLVED),  # image resizing not measured
        ({"residual": three(8.0), "latent_resize": three(8.1), "image_resize": three(9.0)}, UNRESOLVED),
    ],
)
def test_factorization_rule(fids, verdict):
    assert judge_factorization("residual wins", fids).verdict == verdict


@pytest.mark.parametrize(
    ("l0", "l1", "verdict"), [(1.0, 0.3, SUPPORTED), (1.0, 0.7, UNRESOLVED), (1.0, 1.2, CONTRADICTED)]
)
def test_loss_rule(l0, l1, verdict):
    assert judge_loss("loss", {0: [l0], 1: [l1]}).verdict == verdict
    assert judge_loss("loss", {0: [l0]}).verdict == UNRESOLVED


@pytest.mark.parametrize(
    ("msf", "base", "verdict"),
    [
        ((8.0, 10.0), (8.1, 40.0), SUPPORTED),  # equal FID, 4x faster
        ((8.0, 10.0), (8.0, 15.0), CONTRADICTED),  # equal FID, 1.5x only
        ((9.0, 10.0), (8.0, 40.0), CONTRADICTED),  # MSF worse by 1.0 > 2s
        ((7.0, 10.0), (8.0, 15.0), UNRESOLVED),  # MSF better, 1.5x: 'at equal FID' not established
    ],
)
def test_speed_rule(msf, base, verdict):
    def timed(fid_time):
        return Timed("x", three(fid_time[0]), three(fid_time[1]), "cpu", "float32")

    assert judge_speed("speed", (timed(msf), timed(base))).verdict == verdict
    other = Timed("x", three(base[0]), three(base[1]), "cuda", "bfloat16")
    assert judge_speed("speed", (timed(msf), other)).verdict == UNRESOLVED  # different devices
    assert judge_speed("speed", None).verdict == UNRESOLVED


# ----------------------------------------------------------------------------------------------------------------------
# The report from the synthetic smoke sweep


def test_report_has_every_table_and_figure(built):
    _, result, md = built
    expected = ["Table 1", "Table 2", "Table 3", "Table 4", "Table 5", "Table F1", "Table F2", "Table S1", "Table T1"]
    assert set(expected + ["Claims"]) <= set(result["tables"])
    for table_id in expected:
        assert len(parse_md_table(md, table_id)) > 0
    assert set(result["figures"]) == {
        "fig_cfg",
        "fig_steps",
        "fig_loss",
        "fig_decomposition",
        "fig_compute",
        "fig_grid_0",
    }
    assert result["missing_figures"] == {}
    for path in result["figures"].values():
        with Image.open(path) as im:
            assert im.format == "PNG" and len(im.getcolors(1 << 24) or []) > 2  # drawn, not a blank canvas
        assert f"]({Path(path).name})" in md
    assert result["runs"] == len(list(built[0].rglob("config.json")))
    assert "eval-unfinished" in md  # listed as unfinished, not silently dropped


@pytest.mark.parametrize(
    ("table_id", "key", "index", "fixed", "design"),
    [
        ("Table 2", "cfg", 0, {"steps": list(rf.MAIN_STEPS)}, rf.CFG_SCALE1_FID),
        ("Table 3", "cfg", 1, {"steps": list(rf.MAIN_STEPS)}, rf.CFG_SCALE2_FID),
        ("Table 4", "steps", 0, {"cfg": list(rf.MAIN_CFG)}, rf.STEPS_SCALE1_FID),
        ("Table 5", "steps", 1, {"cfg": list(rf.MAIN_CFG)}, rf.STEPS_SCALE2_FID),
    ],
)
def test_sweep_tables_parse_back_to_run_folders(built, table_id, key, index, fixed, design):
    root, _, md = built
    df = parse_md_table(md, table_id).set_index(parse_md_table(md, table_id).columns[0])
    published = paper.curve(int(table_id[-1]))
    for column in df.columns:
        x = float(column)
        ours = df.loc["ours FID", column]
        if any(math.isclose(x, d) for d in design):
            other = list(rf.MAIN_CFG if key == "cfg" else rf.MAIN_STEPS)
            other[index] = int(x) if key == "steps" else x
            runs = metrics_where(root, kind="eval", model="msf", factorization="residual", **{key: other}, **fixed)
            assert_cell_matches(ours, [m["fid"] for m in runs])
            assert df.loc["ours seeds", column] == str(len(runs))
        else:
            assert ours == MISSING  # never filled from the paper
        paper_cell = df.loc["paper FID-5K", column]
        assert paper_cell == (f"{published[x]:.2f}" if x in published else MISSING)


def test_table1_parses_back_to_run_folders(built):
    root, _, md = built
    df = parse_md_table(md, "Table 1")
    dit = df[df["Model"] == "DiT-XL/2 [38]"].iloc[0]
    runs = metrics_where(root, kind="eval", model="dit_xl2")
    assert_cell_matches(dit["FID ours"], [m["fid"] for m in runs])
    assert_cell_matches(dit["Time ours (s/64 img)"], [m["sample_time_per_64_s"] for m in runs], tol=0.05)
    assert dit["FID paper"] == "2.27" and dit["Time paper (A800, batch 64)"] == "145"  # printed values
    msf = df[df["Model"] == "MSF(cfg=1.4)"]
    assert len(msf) == 1 + len(rf.STEPS_SCALE1_FID) - 1 + len(rf.STEPS_SCALE2_FID) - 1  # every step setting once
    row = msf[msf["Setting"].str.contains("steps 20/5")].iloc[0]
    runs = metrics_where(root, kind="eval", model="msf", steps=[20, 5], cfg=[1.4, 1.0], factorization="residual")
    assert_cell_matches(row["FID ours"], [m["fid"] for m in runs])
    assert_cell_matches(row["IS ours"], [m["is_mean"] for m in runs], tol=0.05 + 1e-9)  # IS: 1 decimal
    assert float(row["Para ours (M)"]) == pytest.approx(runs[0]["params_m"], rel=5e-3)  # 3 significant digits
    assert float(row["GFLOPs/img ours"]) == pytest.approx(runs[0]["gflops_per_image"], rel=5e-3)
    assert (row["Device"], row["Dtype"], row["Seeds"]) == ("cpu", "float32", "0,1,2")
    baselines = df[df["Setting"] == MISSING]
    assert (baselines["FID ours"] == MISSING).all() and len(baselines) == 16  # paper-only rows (+ DiMR) unfilled
    assert "dit_flow (ours)" in set(df["Model"])
    assert "embedded-net" in md.split("**Table 1.**")[1].split("\n")[0]  # caption names the feature extractor


def test_factorization_train_and_speed_tables_parse_back(built):
    root, _, md = built
    fid = parse_md_table(md, "Table F2").set_index("Factorization")
    for name, _ in rf.FACTORIZATION_FID.items():
        runs = metrics_where(
            root, kind="eval", model="msf", factorization=name, steps=list(rf.MAIN_STEPS), cfg=list(rf.MAIN_CFG)
        )
        assert_cell_matches(fid.loc[name, "FID ours"], [m["fid"] for m in runs])
    recon = parse_md_table(md, "Table F1").set_index("Factorization")
    for m in metrics_where(root, kind="recon"):
        assert float(recon.loc[m["factorization"], "PSNR scale 0"]) == pytest.approx(m["psnr_per_scale"][0], abs=0.005)
    train = parse_md_table(md, "Table T1").set_index("Stage")
    for m in metrics_where(root, kind="train"):
        assert float(train.loc[str(m["stage"]), "Final loss (EMA 100)"]) == pytest.approx(
            m["final_loss_ema100"], rel=5e-3
        )
    speed = parse_md_table(md, "Table S1").set_index("Model")
    for m in metrics_where(root, kind="speed"):
        assert float(speed.loc[m["model"], "s/64 img"]) == pytest.approx(64 * m["sec_per_image"], rel=5e-3)
        assert float(speed.loc[m["model"], "img/s"]) == pytest.approx(m["images_per_s"], rel=5e-3)
        assert float(speed.loc[m["model"], "MFU (%)"]) == pytest.approx(100 * m["mfu"], rel=5e-3)
    assert speed.loc["msf", "Steps x CFG"] == "100x1.4 + 50x1" and speed.loc["dit_xl2", "Steps x CFG"] == "250x1.5"
    caption = md.split("**Table S1.**")[1].split("\n")[0]
    assert "MSF vs DiT-XL/2 on cpu, float32, batch 8: 6.00x faster, 1.00x fewer FLOPs per image." in caption


def test_claims_get_the_verdicts_the_data_implies(built):
    _, result, md = built
    verdicts = {c["claim"].split(" (")[0]: c["verdict"] for c in result["claims"]}
    assert verdicts == {
        "Residual factorization beats latent and image resizing": SUPPORTED,
        "Scale-2 training loss is much lower than scale-1": SUPPORTED,
        "MSF is 2x faster than DiT-XL/2 at equal FID": SUPPORTED,
        "Best scale-1 CFG is 1.4": SUPPORTED,
        "Scale 2 needs no CFG: FID-5K changes by <= 0.03 across CFG 1.0-1.4": CONTRADICTED,
        "Scale-1 FID is best around 100-125 steps": UNRESOLVED,  # 100 and 125 steps not measured
        "Scale 2 is robust to 10 steps: FID-5K fluctuates by <= 0.05 over 10-100 steps": UNRESOLVED,  # one seed
    }
    claims = parse_md_table(md, "Claims")
    assert list(claims["Verdict"]) == [c["verdict"] for c in result["claims"]]
    assert "Rule 1:" in md and "pooled" in md


def test_a_subset_of_runs_is_shown_as_missing_never_filled(tmp_path, built):
    root = built[0]
    # only Table 2's points at CFG 1.0 / 1.4 / 1.5 (1.2 dropped): no train, recon, speed, grid or other sweep
    keep = [
        p.parent
        for p in root.rglob("metrics.json")
        if (m := json.loads(p.read_text()))["kind"] == "eval"
        and m["model"] == "msf"
        and m["factorization"] == "residual"
        and m["steps"] == list(rf.MAIN_STEPS)
        and m["cfg"][1] == 1.0
        and m["cfg"][0] != 1.2
    ]
    assert len(keep) == 3 * len(rf.SEEDS)
    result = build_report(keep, tmp_path / "out")
    md = Path(result["markdown"]).read_text(encoding="utf-8")
    t2 = parse_md_table(md, "Table 2").set_index("CFG scale 1")
    assert t2.loc["ours FID", "1.2"] == MISSING and t2.loc["paper FID-5K", "1.2"] == "7.69"
    assert parse_cell(t2.loc["ours FID", "1.4"]) is not None
    for table_id in ("Table 3", "Table 4", "Table 5"):  # one point each: shown, all else missing
        ours = parse_md_table(md, table_id).iloc[1, 1:]
        assert (ours != MISSING).sum() == 1
    assert set(result["missing_figures"]) == {"fig_loss", "fig_decomposition"}  # the grid's eval is kept
    assert set(result["figures"]) == {"fig_cfg", "fig_steps", "fig_compute", "fig_grid_0"}
    assert (parse_md_table(md, "Table F2")["FID ours"] == MISSING).all()
    assert all(v in (SUPPORTED, CONTRADICTED, UNRESOLVED) for v in (c["verdict"] for c in result["claims"]))
    assert md.count("not resolvable at this preset") >= 5


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


def test_cli_writes_report_beside_the_run_folders(tmp_path, capsys):
    root = tmp_path / "runs"
    metrics = rf.eval_metrics("msf", rf.MAIN_STEPS, rf.MAIN_CFG, 8.0, 0)
    rf.write_run(root, "eval", "eval-one", metrics)
    main([str(root / rf.PRESET)])
    out = root / rf.PRESET / "report"
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
    assert capsys.readouterr().out.startswith(f"wrote {out / 'report.md'}")
    md = (out / "report.md").read_text(encoding="utf-8")
    assert parse_md_table(md, "Table 2").iloc[1, 1:].tolist().count("8.00") == 1  # one seed: no '±'


def test_unmeasured_metrics_show_as_missing(tmp_path):
    metrics = rf.eval_metrics("msf", rf.MAIN_STEPS, rf.MAIN_CFG, 8.0, 0)
    metrics |= {"fid": None, "is_mean": None, "sample_time_per_64_s": None}  # schema: null when not measured
    rf.write_run(tmp_path, "eval", "eval-nofid", metrics)
    result = build_report([tmp_path], tmp_path / "out")
    md = Path(result["markdown"]).read_text(encoding="utf-8")
    row = parse_md_table(md, "Table 1").query("Model == 'MSF(cfg=1.4)'").iloc[0]
    assert (row["FID ours"], row["IS ours"], row["Time ours (s/64 img)"]) == (MISSING, MISSING, MISSING)
    assert row["Pre ours"] == "0.50" and row["FID paper"] == "2.2"
    assert parse_md_table(md, "Table 2").iloc[1, 1:].eq(MISSING).all()
    assert {c["verdict"] for c in result["claims"]} == {UNRESOLVED}


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(SystemExit):  # the command line turns the ValueError into a one-line usage error
        main([str(tmp_path / "absent")])
    with pytest.raises(ValueError, match="not a directory"):
        build_report([tmp_path / "absent"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no run folder"):
        build_report([tmp_path / "empty"], tmp_path / "out")
    metrics = rf.eval_metrics("msf", rf.MAIN_STEPS, rf.MAIN_CFG, 8.0, 0)
    del metrics["fid"]
    bad = rf.write_run(tmp_path / "a", "eval", "eval-nofid", metrics)
    with pytest.raises(ValueError, match="lacks fid"):
        build_report([bad], tmp_path / "out")
    recon = {"kind": "recon", "factorization": "residual", "scales": [4, 8], "psnr_per_scale": [1, 2], "psnr_full": 2}
    bad = rf.write_run(tmp_path / "b", "recon", "recon-float", recon, decomposition=np.zeros((1, 2, 4, 4, 3)))
    with pytest.raises(ValueError, match="expected uint8"):
        build_report([bad], tmp_path / "out")


# ----------------------------------------------------------------------------------------------------------------------
# The report from real run folders: every sweep of the smoke preset run by the runner into one runs folder

ROOT = Path(__file__).resolve().parents[1]
SWEEP_NAMES = sorted(p.stem for p in (ROOT / "ablations" / "sweeps").glob("*.yaml"))
# Tables 2-5 of the sweeps as run: (varied key, its index, the other index's value, the fixed key and its value)
REAL_SWEEPS = {
    "Table 2": ("cfg", 0, 1.0, "steps", [100, 50]),
    "Table 3": ("cfg", 1, 1.4, "steps", [100, 50]),
    "Table 4": ("steps", 0, 50, "cfg", [1.4, 1.0]),
    "Table 5": ("steps", 1, 100, "cfg", [1.4, 1.0]),
}


@pytest.fixture(scope="module")
def smoke_sweeps(tmp_path_factory):
    """The runner's main (`python ablations/run.py sweep=NAME preset=smoke`) for every sweep (shared nodes run once),
    then one report of the whole runs folder."""
    base = tmp_path_factory.mktemp("smoke-sweeps")
    runs = base / "runs"
    for sweep in SWEEP_NAMES:  # in this process: one torch import for all sweeps
        assert run_main([f"sweep={sweep}", "preset=smoke", "cpu_threads=1", f"runs_dir={runs}"]) == 0, sweep
    result = build_report([runs / "smoke"], base / "report")
    return runs / "smoke", result, Path(result["markdown"]).read_text(encoding="utf-8")


def test_every_sweep_of_the_smoke_preset_reports_every_table_and_figure(smoke_sweeps):
    root, result, md = smoke_sweeps
    for sweep in SWEEP_NAMES:  # each sweep's own report, built by the runner at its end
        assert {p.name for p in (root / "reports" / sweep).iterdir()} >= {"report.md", "report.html"}
    tables = ["Table 1", "Table 2", "Table 3", "Table 4", "Table 5", "Table F2", "Table F1", "Table R1", "Table C1",
              "Table S1", "Table T1", "Claims"]
    assert result["tables"] == tables  # one series per sweep table: no 'Table 2b'
    for table_id in tables:
        df = parse_md_table(md, table_id)
        assert len(df) > 0 and not (df == MISSING).all(axis=None), table_id
    assert result["missing_figures"] == {}
    assert {"fig_cfg", "fig_steps", "fig_loss", "fig_decomposition", "fig_compute"} <= set(result["figures"])
    assert any(name.startswith("fig_grid") for name in result["figures"])
    for path in result["figures"].values():
        with Image.open(path) as im:
            assert im.format == "PNG" and len(im.getcolors(1 << 24) or []) > 2  # drawn, not a blank canvas
    assert result["runs"] == len(list(root.glob("*/config.json")))


@pytest.mark.parametrize("table_id", sorted(REAL_SWEEPS))
def test_real_sweep_tables_parse_back_to_their_run_folders(smoke_sweeps, table_id):
    root, _, md = smoke_sweeps
    key, index, other_value, fixed_key, fixed = REAL_SWEEPS[table_id]
    df = parse_md_table(md, table_id)
    df = df.set_index(df.columns[0])
    for column in df.columns:  # the sweeps use the paper's grids: every column is measured
        setting = [other_value, other_value]
        setting[index] = int(column) if key == "steps" else float(column)
        found = metrics_where(root, kind="eval", model="msf", factorization="residual", scales=[4, 8],
                              conditioning="adaln_zero", **{key: setting, fixed_key: fixed})
        assert found, (table_id, column)
        assert_cell_matches(df.loc["ours FID", column], [m["fid"] for m in found])
        assert df.loc["ours seeds", column] == str(len(found))


def test_real_table1_factorization_resolution_speed_and_train_tables_parse_back(smoke_sweeps):
    root, _, md = smoke_sweeps
    t1 = parse_md_table(md, "Table 1")
    for cfg0, row_name in ((1.4, "MSF(cfg=1.4)"), (1.5, "MSF(cfg=1.5)")):
        row = t1[(t1["Model"] == row_name) & t1["Setting"].str.contains("steps 100/50")].iloc[0]
        found = metrics_where(root, kind="eval", model="msf", factorization="residual", scales=[4, 8],
                              steps=[100, 50], cfg=[cfg0, 1.0], conditioning="adaln_zero")
        assert_cell_matches(row["FID ours"], [m["fid"] for m in found])
    flow = t1[t1["Model"] == "dit_flow (ours)"].iloc[0]
    assert_cell_matches(flow["FID ours"], [m["fid"] for m in metrics_where(root, kind="eval", model="dit_flow")])

    fid = parse_md_table(md, "Table F2").set_index("Factorization")
    recon = parse_md_table(md, "Table F1").set_index("Factorization")
    for name in ("residual", "residual_latent_base", "latent_resize", "image_resize"):
        found = metrics_where(root, kind="eval", model="msf", factorization=name, scales=[4, 8], steps=[100, 50],
                              cfg=[1.4, 1.0], conditioning="adaln_zero")
        assert_cell_matches(fid.loc[name, "FID ours"], [m["fid"] for m in found])
        (m,) = metrics_where(root, kind="recon", factorization=name)
        assert float(recon.loc[name, "PSNR full"]) == pytest.approx(m["psnr_full"], abs=0.005)

    res = parse_md_table(md, "Table R1").set_index("Scales (latent sizes)")
    assert list(res.index) == ["4/8", "2/4/8"]  # the smoke preset's resolutions sweep
    for scales, cfg, steps in (([4, 8], [1.4, 1.0], [3, 2]), ([2, 4, 8], [1.4, 1.0, 1.0], [3, 2, 2])):
        found = metrics_where(root, kind="eval", model="msf", scales=scales, cfg=cfg, steps=steps)
        assert_cell_matches(res.loc[slash_text(scales), "FID ours"], [m["fid"] for m in found])
        assert float(res.loc[slash_text(scales), "GFLOPs/img"]) == pytest.approx(found[0]["gflops_per_image"], rel=5e-3)

    speed = parse_md_table(md, "Table S1").set_index("Model")
    speeds = metrics_where(root, kind="speed")
    assert sorted(m["model"] for m in speeds) == ["dimr", "dit_xl2", "msf"]
    for m in speeds:
        assert float(speed.loc[m["model"], "TFLOPs/img"]) == pytest.approx(m["tflops_per_image"], rel=5e-3)
        assert float(speed.loc[m["model"], "s/64 img"]) == pytest.approx(64 * m["sec_per_image"], rel=5e-3)
        assert float(speed.loc[m["model"], "MFU (%)"]) == pytest.approx(100 * m["mfu"], rel=5e-3)
        assert m["method"] == "median call time x steps" and m["batch"] == 1  # CPU default method, smoke batch
    assert speeds[0]["tflops_per_image"] > 20  # the paper's sizes even in the smoke preset (MSF 22.1, DiT-XL/2 118.6)
    cond = parse_md_table(md, "Table C1").set_index("Conditioning")
    for name in ("adaln_zero", "tdln"):
        found = [m for m in metrics_where(root, kind="eval", model="msf", scales=[4, 8], steps=[100, 50],
                                          cfg=[1.4, 1.0], factorization="residual") if m["conditioning"] == name]
        assert_cell_matches(cond.loc[name, "FID ours"], [m["fid"] for m in found])
    assert float(cond.loc["tdln", "Params (M)"]) < float(cond.loc["adaln_zero", "Params (M)"])  # no adaLN MLPs
    dimr = t1[t1["Model"] == "dimr (ours)"].iloc[0]
    assert_cell_matches(dimr["FID ours"], [m["fid"] for m in metrics_where(root, kind="eval", model="dimr")])
    train = parse_md_table(md, "Table T1")
    assert len(train) == len(metrics_where(root, kind="train"))


def slash_text(values: list[int]) -> str:
    """[2, 4, 8] -> '2/4/8', as the report writes per-scale settings."""
    return "/".join(map(str, values))


# ----------------------------------------------------------------------------------------------------------------------
# The committed small-scale reproduction (reports/tiny): its tables regenerate exactly from its committed metadata

PUBLISHED = ROOT / "reports" / "tiny"


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


def test_committed_report_tables_regenerate_from_committed_metadata(tmp_path):
    assert (PUBLISHED / "report.md").is_file(), "the committed reproduction is missing (reports/tiny)"
    for path in (PUBLISHED / "runs").rglob("*"):  # metadata only: no checkpoints, caches or sample arrays
        assert path.is_dir() or path.name in ("config.json", "metrics.json", "stats.jsonl"), path
    rebuilt = build_report([PUBLISHED / "runs"], tmp_path)
    committed = md_tables((PUBLISHED / "report.md").read_text(encoding="utf-8"))
    assert set(committed) >= {"Table 1", "Table 2", "Table 3", "Table 4", "Table 5", "Table R1", "Claims"}
    assert md_tables(Path(rebuilt["markdown"]).read_text(encoding="utf-8")) == committed


def test_publish_refuses_an_existing_destination_and_writes_nothing(tmp_path):
    root = tmp_path / "runs"
    rf.write_run(root, "eval", "eval-one", rf.eval_metrics("msf", rf.MAIN_STEPS, rf.MAIN_CFG, 8.0, 0))
    (tmp_path / "dest" / "runs").mkdir(parents=True)
    cmd = [sys.executable, str(ROOT / "reports" / "publish.py"), str(root), str(tmp_path / "dest")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "exists" in r.stderr, r.stderr
    assert list((tmp_path / "dest").rglob("*")) == [tmp_path / "dest" / "runs"]  # nothing copied, no report
    publish(root, tmp_path / "fresh")
    (folder,) = (tmp_path / "fresh" / "runs").iterdir()
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "metrics.json"]  # metadata only
