"""The ablation runner: command line, planning, skip-what-is-done, locks, and a smoke sweep end to end."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ablations.config import resolve
from ablations.engine.runfolder import JobLocked, job_lock
from ablations.graph import plan
from ablations.jobcall import prepare

ROOT = Path(__file__).resolve().parents[1]
RUN = [sys.executable, str(ROOT / "ablations" / "run.py")]
SMOKE = ["preset=smoke", "cpu_threads=1", "eval.bootstrap=20"]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*RUN, *args], capture_output=True, text=True, cwd=cwd, timeout=900)


@pytest.mark.e2e
@pytest.mark.parametrize(
    "args, message",
    [
        (["sweep=nope"], "unknown sweep 'nope'; valid sweeps: cfg_scale0"),
        (["sweep=cfg_scale0", "preset=huge"],
         "unknown preset 'huge'; valid presets: digits, imagenet256, rehearsal, smoke, tiny"),
        (["sweep=cfg_scale0", "train.lrr=1"], "unknown key 'train.lrr'; did you mean 'train.lr'?"),
        (["sweep=cfg_scale0", "train.lr=abc"], "train.lr='abc': expected a finite number"),
        (["sweep=cfg_scale0", "train.steps=[1,1]"], "key 'train.steps' is now 'msf.steps'"),
        (["sweep=cfg_scale0", "msf.scales=[8,6]"], "strictly increasing"),
        (["sweep=cfg_scale0", "data.name=digits", "data.image_size=36"],
         "not divisible by the autoencoder factor 2 times the patch size 4"),
        (["sweep=cfg_scale0", "sample.steps=[0,50]"], "sample.steps=[0, 50]: expected a value > 0"),
        (["sweep=steps_scale0", "sample.cfg=[-1,1]"], "sample.cfg=[-1.0, 1.0]: expected a value >= 0"),
        (["sweep=cfg_scale0", "sample.cfg=[1,1]"], "sample.cfg is swept by sweep=cfg_scale0"),
        (["sweep=cfg_scale0", "preset=imagenet256"], "data.name=imagefolder needs data.root=DIR"),
        (["sweep=cfg_scale0", "preset=imagenet256", "data.root=/"], "autoencoder.kind=pretrained needs"),
        (["sweep=main", "preset=imagenet256", "launcher=inprocess", "device=cpu", "data.root=/dev/null",
          "autoencoder.path=/", "baseline.dit_xl2.checkpoint=/"],
         "data.root='/dev/null' is a file; expected a folder of class folders holding images"),
        (["sweep=cfg_scale0", "eval.compile=fast"], "eval.compile='fast' is not one of: none, default"),
        (["sweep=cfg_scale0", "device=cpu", "eval.compile=reduce-overhead"], "needs device=cuda"),
        (["sweep=speed", "speed.method=full"], "speed.method='full' is not one of: auto, forward, sample"),
        (["sweep=speed", "speed.batch=-2"], "speed.batch=-2: expected a value >= 0"),
        (["sweep=speed", "speed.repeats=-1"], "speed.repeats=-1: expected a value >= 0"),
        (["sweep=cfg_scale0", "--bogus"], "unknown option '--bogus'"),
        (["cfg_scale0"], "expected key=value"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, message):
    r = run_cli(*args, f"runs_dir={tmp_path / 'runs'}", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.e2e
def test_slurm_without_sbatch_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    r = subprocess.run([*RUN, "sweep=cfg_scale0", "launcher=slurm"], capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "PATH": "/nonexistent"})
    assert r.returncode == 2 and "no sbatch on PATH" in r.stderr


@pytest.mark.e2e
def test_help_lists_sweeps_presets_and_keys(tmp_path):
    r = run_cli("--help", cwd=tmp_path)
    assert r.returncode == 0
    for word in ("cfg_scale0", "steps_scale1", "factorization", "imagenet256", "smoke", "train.lr", "sample.cfg"):
        assert word in r.stdout


def test_tables_2_to_5_share_their_trainings():
    """The CFG and step sweeps evaluate the same trained stages: same train keys, so nothing is trained twice."""
    keys = {}
    for sweep in ("cfg_scale0", "cfg_scale1", "steps_scale0", "steps_scale1"):
        cfg, s = resolve([("sweep", sweep)])
        keys[sweep] = sorted(n.key for n in plan(cfg, s) if n.kind == "train")
    # two stages per training seed, and the ceiling's two untrained stages (0-step trainings) at the first seed
    assert len(set(map(tuple, keys.values()))) == 1
    assert len(keys["cfg_scale0"]) == 2 * len(cfg.seeds.train) + 2


def test_paper_grid_values():
    """Tables 2-5's grid values are the paper's."""
    grids = {}
    for sweep in ("cfg_scale0", "cfg_scale1", "steps_scale0", "steps_scale1"):
        _, s = resolve([("sweep", sweep)])
        grids[sweep] = s.points
    assert [p["sample.cfg"][0] for p in grids["cfg_scale0"]] == [1.0, 1.1, 1.2, 1.3, 1.4, 1.5]
    assert [p["sample.cfg"][1] for p in grids["cfg_scale1"]] == [1.0, 1.1, 1.2, 1.3, 1.4]
    assert [p["sample.steps"][0] for p in grids["steps_scale0"]] == [25, 50, 100, 125, 200]
    assert [p["sample.steps"][1] for p in grids["steps_scale1"]] == [10, 20, 30, 40, 50, 100]


def test_lock_prevents_two_writers(tmp_path):
    cfg, s = resolve([("sweep", "cfg_scale0"), ("preset", "smoke"), ("runs_dir", str(tmp_path))])
    job = next(iter(plan(cfg, s)))
    prepare(job, "test")
    with job_lock(job.run_dir):
        with pytest.raises(JobLocked, match=r"being written by another runner \(pid \d+ on "):
            with job_lock(job.run_dir, wait=False):
                pass


@pytest.mark.e2e
def test_smoke_sweep_end_to_end_then_nothing_recomputed(tmp_path):
    """The whole graph on the smoke preset; a second run recomputes nothing; a lost node is redone alone."""
    runs = tmp_path / "runs"
    dry = run_cli("sweep=cfg_scale1", *SMOKE, f"runs_dir={runs}", "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0 and "0 done" in dry.stdout and not runs.exists()

    first = run_cli("sweep=cfg_scale1", *SMOKE, f"runs_dir={runs}", cwd=tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    folders = sorted(p for p in (runs / "smoke").iterdir() if (p / "metrics.json").exists())
    kinds = [json.loads((p / "config.json").read_text())["kind"] for p in folders]
    # the autoencoder and feature network are committed; each eval point is a sample job and a score job
    assert sorted(set(kinds)) == ["cache", "sample", "score", "train"]
    for p in folders:  # every run folder describes itself
        assert (p / "config.json").exists() and (p / "log.txt").exists()
    evals = [p for p, k in zip(folders, kinds, strict=True) if k == "score"]
    m = json.loads((evals[0] / "metrics.json").read_text())
    assert m["world"] == "embedded" and m["n_samples"] == 32 and m["fid"] > 0
    lo, hi = m["fid_bootstrap_95"]
    assert 0 < lo < hi
    with np.load(runs / "smoke" / m["samples"] / "samples.npz") as z:  # ADM's sample-batch format, with labels
        assert z["arr_0"].dtype == np.uint8 and z["arr_0"].shape == (32, 32, 32, 3)
        assert z["arr_1"].tolist() == [i % 4 for i in range(32)]
    assert {m["anchor"] for m in (json.loads((p / "metrics.json").read_text()) for p in evals)} == {
        None, "real", "autoencoder", "untrained"}
    report = runs / "smoke" / "reports" / "cfg_scale1" / "report.md"
    assert report.exists() and "Table 3" in report.read_text()

    stamps = {p: (p / "metrics.json").stat().st_mtime_ns for p in folders}
    t0 = time.time()
    again = run_cli("sweep=cfg_scale1", *SMOKE, f"runs_dir={runs}", cwd=tmp_path)
    assert again.returncode == 0 and "0 job(s) to run" in again.stdout
    assert time.time() - t0 < 60
    assert stamps == {p: (p / "metrics.json").stat().st_mtime_ns for p in folders}  # nothing rewritten
    # where the time went: each kind's jobs measured (one process's wall time), the sums those of metrics.json
    dry = run_cli("sweep=cfg_scale1", *SMOKE, f"runs_dir={runs}", "--dry-run", cwd=tmp_path)
    seconds = {k: [json.loads((p / "metrics.json").read_text())["job_seconds"] for p, kk in zip(folders, kinds,
                                                                                             strict=True) if kk == k]
               for k in set(kinds)}
    for kind, values in seconds.items():
        assert all(v > 0 for v in values)
        line = next(x for x in dry.stdout.splitlines() if x.startswith(f"  time {kind} "))
        assert f"{len(values)} measured, {sum(values):.0f} s" in line, (line, values)

    lost = evals[-1]
    shutil.rmtree(lost)
    redo = run_cli("sweep=cfg_scale1", *SMOKE, f"runs_dir={runs}", cwd=tmp_path)
    assert redo.returncode == 0 and "1 job(s) to run" in redo.stdout
    assert (lost / "metrics.json").exists()
    assert all(stamps[p] == (p / "metrics.json").stat().st_mtime_ns for p in folders if p != lost)


@pytest.mark.e2e
def test_local_launcher_runs_the_graph_in_subprocesses(tmp_path):
    """launcher=local: submitit's LocalExecutor, one subprocess per job, same run folders as in process: 5 CFG
    points and the two floors (real images, their reconstructions), a sample and a score job each, the ceiling
    (untrained: 2 stages, a sample and a score job), the 2 trained stages, the cache."""
    runs = tmp_path / "runs"
    r = run_cli("sweep=cfg_scale1", "preset=smoke", "cpu_threads=1", "launcher=local", "sample.steps=[3,2]",
                f"runs_dir={runs}", cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    done = list((runs / "smoke").glob("*/metrics.json"))
    assert len(done) == 7 * 2 + 4 + 2 + 1 and any((runs / "smoke" / "_submitit").glob("*_log.out"))
    n = min(len(os.sched_getaffinity(0)), len(done))  # several jobs submitted at once, as the cores allow
    assert f"workers: {n} (" in r.stdout
