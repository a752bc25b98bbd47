"""The local pool (ablations/pool.py): workers=N jobs at once with the results of one after another, the atomic
choice of a job (runners started together share the work), a failing job beside good ones, and signals (a real
SIGINT or SIGTERM sent to a real runner, then a rerun that continues where it stopped)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ablations.config import resolve
from ablations.engine import runfolder
from ablations.graph import plan
from ablations.jobcall import prepare
from ablations.pool import pick, workers
from ablations.run import main

ROOT = Path(__file__).resolve().parents[1]
RUN = [sys.executable, str(ROOT / "ablations" / "run.py")]
SMOKE = ["sweep=cfg_scale1", "preset=smoke"]  # 21 jobs of a few seconds each
# wall-clock measurements: the only values of metrics.json (and of a training's stats.jsonl) that two runs of the same
# job may differ in; everything else, the hashes of every other output included, must be equal
TIMING = {"seconds", "images_per_s", "sample_time_per_64_s", "sec_per_step", "data_wait_frac", "img_per_s",
          "data_wait_s", "job_seconds"}


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*RUN, *args], capture_output=True, text=True, cwd=cwd, timeout=900)


def results(runs: Path) -> dict[str, dict]:
    """Every finished job's metrics.json by run folder name (which holds its key), timings left out; a training's
    stats.jsonl compared by content without its timings (its hash covers them)."""
    out = {}
    for path in sorted(runs.glob("smoke/*/metrics.json")):
        m = {k: v for k, v in json.loads(path.read_text()).items() if k not in TIMING}
        m["outputs"] = {rel: e for rel, e in m["outputs"].items() if rel != "stats.jsonl"}
        if (path.parent / "stats.jsonl").exists():
            m["stats"] = [{k: v for k, v in json.loads(line).items() if k not in TIMING}
                          for line in (path.parent / "stats.jsonl").read_text().splitlines()]
        out[path.parent.name] = m
    return out


def default_sigint() -> None:
    """Ctrl-C handled as in a terminal's foreground job, even under a test run started in the background (whose
    children inherit SIGINT ignored, which Python keeps)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def ran(stdout: str) -> list[str]:
    """The jobs a runner started, in order."""
    return re.findall(r"\] running (\S+)", stdout)


@pytest.fixture(scope="module")
def serial(tmp_path_factory) -> Path:
    """The smoke sweep run by one worker, in this process's way (no executor): the reference."""
    root = tmp_path_factory.mktemp("serial")
    r = run_cli(*SMOKE, "workers=1", f"runs_dir={root / 'runs'}", cwd=root)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "workers: 1 (given)" in r.stdout
    return root / "runs"


# ----------------------------------------------------------------------------------------------------------------------
# The setting


@pytest.mark.parametrize("args, message", [
    (["workers=2", "launcher=slurm"], "workers=2 applies to the local launchers (inprocess, local); with "
                                      "launcher=slurm"),
    (["workers=0", "launcher=slurm"], "workers=0 applies to the local launchers"),
    (["workers=-1"], "workers=-1: expected a value >= 0"),
    (["workers=abc"], "workers='abc': expected an integer"),
    (["workers=1.5"], "workers=1.5: expected an integer"),
    (["workers=[2]"], "workers=[2]: expected an integer"),
])
def test_bad_workers_are_one_line_exit_2_and_write_nothing(args, message, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["sweep=cfg_scale0", "preset=smoke", *args, f"runs_dir={runs}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not runs.exists()


def test_the_number_of_workers_enters_no_run_key_or_spec(tmp_path):
    records = []
    for n in (1, 3):
        cfg, s = resolve([("sweep", "cfg_scale0"), ("preset", "smoke"), ("runs_dir", str(tmp_path)),
                          ("workers", str(n))])
        records.append([j.record("code") for j in plan(cfg, s)])  # key, name, spec and dependencies of every job
    assert records[0] == records[1]


def test_the_dry_run_says_how_many_workers_and_why(tmp_path, capsys):
    cores = len(os.sched_getaffinity(0))
    runs = tmp_path / "runs"
    assert main(["sweep=cfg_scale0", "preset=smoke", "--dry-run", f"runs_dir={runs}"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    n = min(cores, 13)  # 1 thread per job (the smoke preset), 13 jobs, ample memory (about 1.3 GiB per job)
    assert line.startswith(f"workers: {n} ({cores} core(s) / 1 thread(s) per job; memory allows "), line
    assert main(["sweep=cfg_scale0", "preset=smoke", "--dry-run", "workers=3", "cpu_threads=2",
                 f"runs_dir={runs}"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"workers: 3 (given; {cores} core(s) / 2 thread(s) per job; memory allows "), line
    assert not runs.exists()


def test_auto_workers_follow_cores_threads_and_memory(tmp_path, monkeypatch):
    import ablations.pool as pool

    cfg, s = resolve([("sweep", "cfg_scale0"), ("preset", "smoke"), ("runs_dir", str(tmp_path))])
    todo = list(plan(cfg, s))
    monkeypatch.setattr(pool.os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setattr(pool, "on_gpu", lambda cfg: False)
    monkeypatch.setattr(pool, "available_gib", lambda: 100.0)
    assert len(todo) == 23 and workers(cfg, todo)[0] == 16  # 16 cores at 1 thread
    assert workers(cfg, todo[:13])[0] == 13  # only 13 jobs
    assert workers(cfg, todo[:5])[0] == 5
    assert workers(cfg.__class__(**{**cfg.__dict__, "cpu_threads": 4}), todo)[0] == 4  # 16 cores / 4 threads
    assert workers(cfg.__class__(**{**cfg.__dict__, "cpu_threads": 0}), todo)[0] == 1  # torch's default: every core
    monkeypatch.setattr(pool, "available_gib", lambda: 4.5)
    n, why = workers(cfg, todo)
    assert n == 3 and "memory allows 3 at 1.3 GiB per job" in why  # about 1.35 GiB each (a process with the engine)
    monkeypatch.setattr(pool, "on_gpu", lambda cfg: True)
    assert workers(cfg, todo) == (1, "the jobs run on the GPU, one at a time")


def test_the_memory_estimate_counts_weights_optimiser_and_images(tmp_path):
    """Against hand arithmetic: beyond its process, a training holds 20 bytes per parameter of its network (built here
    on the CPU) and more with a larger batch; an eval at least its samples and reference images as uint8; every
    smoke job at least the 0.88-1.29 GiB measured as the peak resident memory of smoke and tiny jobs' processes."""
    from ablations.costs import PROCESS_GIB, job_memory_gib
    from ablations.engine.families import FAMILIES, factorization_of
    from ablations.engine.flops import count_params
    from ablations.engine.train import stage_kwargs

    cfg, s = resolve([("sweep", "cfg_scale0"), ("preset", "smoke"), ("runs_dir", str(tmp_path))])
    big, _ = resolve([("sweep", "cfg_scale0"), ("preset", "smoke"), ("runs_dir", str(tmp_path)),
                      ("eval.n_samples", "100000"), ("train.batch_size", "4096")])
    for small, large in zip(plan(cfg, s), plan(big, s), strict=True):
        assert job_memory_gib(small) >= 1.29 and job_memory_gib(large) >= job_memory_gib(small)
        if small.kind == "train":
            arch = FAMILIES[small.spec.family].architecture()
            net = arch.build(**stage_kwargs(small.spec, factorization_of(small.spec.factorization), 4, arch))
            assert (job_memory_gib(small) - PROCESS_GIB) * 2**30 >= 20 * count_params(net)
            assert job_memory_gib(large) > job_memory_gib(small)
        if small.kind == "score":  # the samples and the reference images
            assert (job_memory_gib(large) - PROCESS_GIB) * 2**30 >= (100000 + 64) * 3 * 32 * 32
        if small.kind == "sample" and small.spec.sample is not None:
            assert (job_memory_gib(large) - PROCESS_GIB) * 2**30 >= 100000 * 3 * 32 * 32


# ----------------------------------------------------------------------------------------------------------------------
# Choosing a job takes its lock


def test_choosing_a_job_takes_its_lock(tmp_path):
    """pick() returns a job with its run folder's lock held; another runner (another open file of the lock: another
    process, or this one opening it again) then takes the next ready job, and gets None once all are taken."""
    cfg, s = resolve([("sweep", "cfg_scale0"), ("preset", "smoke"), ("runs_dir", str(tmp_path))])
    jobs = list(plan(cfg, s))
    for job in jobs:
        prepare(job, "test")
    ready = [j for j in jobs if not j.deps]
    assert len(ready) >= 2, [j.name for j in ready]  # the target cache and the real-image floor
    taken = []
    for expected in ready:
        picked = pick(jobs, {})
        assert picked is not None and picked[0] is expected
        assert runfolder.try_lock(expected.run_dir) is None  # held: nobody else can take it
        assert runfolder.holder(expected.run_dir) == f"pid {os.getpid()} on {os.uname().nodename}"
        taken.append(picked[1])
    assert pick(jobs, {}) is None  # every ready job is being written: nothing to take, nothing to wait on
    runfolder.unlock(taken[0])
    picked = pick(jobs, {})
    assert picked is not None and picked[0] is ready[0]
    for lock in [picked[1], *taken[1:]]:
        runfolder.unlock(lock)
    waiting = [j for j in jobs if j.deps]
    assert pick(waiting, {}) is None  # their dependencies are not done
    picked = pick(waiting, {d.key: "done" for d in ready})
    assert picked is not None and picked[0] is waiting[0]  # then, in graph order
    runfolder.unlock(picked[1])


def test_a_forked_worker_holds_its_runners_lock(tmp_path):
    """flock locks belong to an open file: a worker process given the runner's open file holds the same lock, which
    stays taken while either has it open."""
    import multiprocessing
    from multiprocessing.reduction import DupFd

    run_dir = tmp_path / "job"
    lock = runfolder.try_lock(run_dir)
    assert lock is not None
    ctx = multiprocessing.get_context("forkserver")
    here, there = ctx.Pipe()
    child = ctx.Process(target=_hold, args=(DupFd(lock.fileno()), run_dir, there))
    child.start()
    assert here.recv() is True  # the child holds it
    runfolder.unlock(lock)
    assert runfolder.try_lock(run_dir) is None  # still taken: by the child's copy of the open file
    here.send("exit")
    child.join(timeout=60)
    mine = runfolder.try_lock(run_dir)
    assert mine is not None  # free once nobody has the open file
    runfolder.unlock(mine)


def _hold(lock, run_dir: Path, conn) -> None:
    """A worker given the lock's open file: says whether it holds the lock, then waits to be told to exit."""
    conn.send(runfolder.holds(lock.detach(), run_dir))
    conn.recv()


@pytest.mark.e2e
def test_two_runners_started_together_share_the_work_from_the_first_job(serial, tmp_path):
    """Started at the same moment on one runs folder, each runner takes a different first job, and no job is ever
    taken by both (with choosing and locking as two steps, one waited on the job the other had just taken)."""
    runs = tmp_path / "runs"
    procs = [subprocess.Popen([*RUN, *SMOKE, "workers=1", f"runs_dir={runs}"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[0][-2000:] + o[1][-2000:] for o in outs]
    picks = [ran(out) for out, _ in outs]
    assert picks[0] and picks[1] and picks[0][0] != picks[1][0], picks
    assert not set(picks[0]) & set(picks[1]), picks
    for log in (runs / "smoke").glob("*/log.txt"):
        assert log.read_text().count("] start ") == 1, log  # computed once
    assert results(runs) == results(serial)


# ----------------------------------------------------------------------------------------------------------------------
# Whole sweeps: parallel equals serial, a failing job, signals


def overlap(stdout: str) -> int:
    """The most jobs that were running at once, from a runner's event lines."""
    running: set[str] = set()
    most = 0
    for event, name in re.findall(r"\] (running|done   |FAILED ) (\S+?):?(?: |$)", stdout, re.M):
        if event == "running":
            running.add(name)
        else:
            running.discard(name)
        most = max(most, len(running))
    return most


@pytest.mark.e2e
def test_parallel_equals_serial(serial, tmp_path):
    """Two workers: two jobs at once, the same run folders and the same metrics.json numbers and outputs (hashes) as
    one worker in this process."""
    runs = tmp_path / "runs"
    r = run_cli(*SMOKE, "workers=2", f"runs_dir={runs}", cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "workers: 2 (given)" in r.stdout and overlap(r.stdout) == 2
    parallel, reference = results(runs), results(serial)
    assert len(reference) == 21 and parallel == reference


@pytest.mark.e2e
def test_a_failing_job_skips_its_dependents_and_nothing_else(tmp_path):
    """Both trained stages diverge (train.lr=1e30): each failure is one line naming its log; the evals that need them
    are skipped with one line each; the floor and the ceiling (which do not need them) finish; exit code 1."""
    runs = tmp_path / "runs"
    r = run_cli(*SMOKE, "workers=2", "train.lr=1e30", f"runs_dir={runs}", cwd=tmp_path)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Traceback" not in r.stdout + r.stderr
    failed = re.findall(r"FAILED  (train-\S+): NonFiniteLossError: training diverged at step .*\(log: (\S+)\)$",
                        r.stdout, re.M)
    assert len(failed) == 2, r.stdout
    for name, log in failed:
        assert log == str(runs / "smoke" / name / "log.txt") and "Traceback" in Path(log).read_text()
    skipped = re.findall(r"skipped ((?:sample|score)-\S+): it needs (\S+), which failed$", r.stdout, re.M)
    points = [p.name for p in (runs / "smoke").iterdir() if p.name.startswith(("sample-msf-residual-steps",
                                                                             "score-msf-residual-steps"))]
    assert sorted(n for n, _ in skipped) == sorted(set(n for n, _ in skipped)) and len(skipped) == 10
    assert {need for _, need in skipped} <= {name for name, _ in failed} and not points
    finished = sorted(p.parent.name.rsplit("-", 1)[0] for p in (runs / "smoke").glob("*/metrics.json"))
    assert finished == sorted(["cache-residual-4x8", "train-msf-residual-4x8-untrained-s0-t0",
                               "train-msf-residual-4x8-untrained-s1-t0"] + [
        f"{kind}-{point}" for kind in ("sample", "score") for point in (
            "msf-residual-untrained-steps100_50-cfg1.4_1.0-t0-seed0", "real-seed0", "reconstructed-seed0")])


@pytest.mark.e2e
@pytest.mark.parametrize("sig, n, code", [(signal.SIGINT, 2, 130), (signal.SIGTERM, 1, 143)],
                         ids=["SIGINT-2-workers", "SIGTERM-in-process"])
def test_a_signal_stops_every_job_then_a_rerun_continues(sig, n, code, serial, tmp_path):
    """A real signal to a real runner while evals run: every running job stops within seconds, one line on stderr,
    the exit code of the signal; no stopped job counts as done, no temporary file or lock stays; the rerun runs what
    is left and ends with the results of an uninterrupted run."""
    runs = tmp_path / "runs"
    proc = subprocess.Popen([*RUN, *SMOKE, f"workers={n}", f"runs_dir={runs}"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path, preexec_fn=default_sigint)
    assert proc.stdout is not None
    seen = ""
    for line in proc.stdout:
        seen += line
        if "] running sample-msf-residual-steps" in line:
            break
    t0 = time.time()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    took, out = time.time() - t0, seen + out
    assert proc.returncode == code and took < 20, (proc.returncode, took, out[-2000:], err)
    assert err.strip().splitlines() == [f"stopped by {sig.name}: the running jobs were stopped and none of them "
                                        "counts as done; run the same command again to continue where it stopped"]
    assert "Traceback" not in out
    # a job that ran and was not reported done was stopped, unless it finished in the instant between the signal and
    # the runner's report (a 0-step training takes milliseconds): then it is whole, never half-written
    unreported = set(ran(out)) - set(re.findall(r"\] done    (\S+)", out))
    stopped = {name for name in unreported if not (runs / "smoke" / name / "metrics.json").exists()}
    assert stopped and all(runfolder.done(runs / "smoke" / name) for name in unreported - stopped), unreported
    assert not [p for p in runs.rglob("*") if ".tmp" in p.name]
    for folder in (runs / "smoke").iterdir():  # no worker outlived its runner: every lock is free
        lock = runfolder.try_lock(folder) if (folder / ".lock").exists() else None
        assert lock is not None or not (folder / ".lock").exists(), folder
        if lock:
            runfolder.unlock(lock)
    finished = results(runs)
    assert all(runfolder.done(runs / "smoke" / name) for name in finished)
    again = run_cli(*SMOKE, f"workers={n}", f"runs_dir={runs}", cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"{21 - len(finished)} job(s) to run" in again.stdout
    assert results(runs) == results(serial)


@pytest.mark.faults
def test_a_signal_mid_training_resumes_from_the_last_checkpoint(tmp_path):
    """Ctrl-C while two trainings run (2 workers) after their first checkpoints: the rerun resumes each from its last
    checkpoint and ends with the results of an uninterrupted run (weights' hashes, losses, metrics)."""
    longer = [*SMOKE, "sample.steps=[3,2]", "msf.steps=[3000,2000]", "train.ckpt_every=100", "workers=2"]
    ref = run_cli(*longer, f"runs_dir={tmp_path / 'ref'}", cwd=tmp_path)
    assert ref.returncode == 0, ref.stdout[-3000:] + ref.stderr[-3000:]
    runs = tmp_path / "runs"
    proc = subprocess.Popen([*RUN, *longer, f"runs_dir={runs}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path, preexec_fn=default_sigint)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "] running train-msf-residual-4x8-s1-t0" in line:
            break
    trainings = [p for p in (runs / "smoke").glob("train-msf-residual-4x8-s?-t0-*")]
    deadline = time.time() + 120
    while time.time() < deadline and not all(list(p.glob("checkpoints/step_*.json")) for p in trainings):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and len(err.strip().splitlines()) == 1, err
    assert not any((p / "metrics.json").exists() for p in trainings)  # stopped before their 2000 steps
    again = run_cli(*longer, f"runs_dir={runs}", cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert all("] resumed from " in (p / "log.txt").read_text() for p in trainings)
    assert results(runs) == results(tmp_path / "ref")
