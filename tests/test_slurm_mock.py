"""launcher=slurm against a fake SLURM (tests/_fake_slurm.py: sbatch, sacct, scancel and srun first on PATH; jobs end
the moment nothing holds them, as each test plans), so the launcher's side runs in seconds without a cluster: what it
submits (one array for the caches, one for the samples, one for the scores, a job for each training; ``afterok`` on
exactly the submitted dependencies; each kind's resources), a preempted and requeued training waited for, a rerun that
submits only what is not done, a failed job's cause on one line with its job id and log while the jobs that need it
are cancelled, and a cluster without accounting. The real cluster's tests are in tests/test_slurm.py (marked slurm);
workers=N with launcher=slurm is refused in tests/test_workers.py.

The submitted run folder of each job id is read back from submitit's pickle of the call, not from the launcher.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import shlex
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import submitit
from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob

from ablations import launch
from ablations.config import Config, resolve
from ablations.engine import runfolder
from ablations.engine.io import write_json
from ablations.graph import Graph, Job, plan
from ablations.jobcall import JobCall, prepare

FAKE = Path(__file__).with_name("_fake_slurm.py")
# autoencoder -> 2 cache parts -> 4 trainings (2 of them 0-step: the untrained ceiling) -> 8 samples -> 8 scores
SWEEP = ["sweep=cfg_scale1", "preset=smoke", "launcher=slurm", "autoencoder.kind=small_kl", "cache.parts=2",
         "slurm.nodes=2", "slurm.gpus_per_node=4", "slurm.array_parallelism=3", "slurm.partition=gpu",
         "slurm.account=lab", "slurm.timeout_min=90"]


class Hung(Exception):
    """The launcher was still waiting after many rounds although the fake cluster runs nothing for that long."""


class Clock:
    """The ``time`` module of the launcher and of submitit's waits: each nap is a round of the fake cluster (0.1 s; the
    watcher below asks sacct once per round), and :class:`Hung` ends the wait after ``rounds`` of them."""

    def __init__(self, root: Path, rounds: int = 10) -> None:
        self.now, self.rounds, self.file = 0, rounds, root / "now"

    @staticmethod
    def time() -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds:
            self.now += 1
            if self.now > self.rounds:
                raise Hung("the launcher still waits on jobs that the cluster will never run")
            self.file.write_text(str(self.now))
            time.sleep(0.1)


class Cluster:
    """The fake cluster of one test: its plan of outcomes and what it was asked."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def plan(self, outcomes: dict[str, str]) -> None:
        (self.root / "plan.json").write_text(json.dumps(outcomes))

    def state(self) -> dict[str, Any]:
        return json.loads((self.root / "state.json").read_text())

    def calls(self, command: str) -> list[dict[str, Any]]:
        return [c for c in self.state()["calls"] if c["command"] == command]


@pytest.fixture
def cluster(tmp_path, monkeypatch) -> Cluster:
    root = tmp_path / "cluster"
    root.mkdir()
    for command in ("sbatch", "sacct", "scancel", "srun"):
        exe = root / command
        exe.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -I {shlex.quote(str(FAKE))} "
                       f"{shlex.quote(str(root))} {command} \"$@\"\n")
        exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{root}{os.pathsep}{os.environ['PATH']}")
    # submitit's job-state cache is one per process: a fresh one per test, asking sacct at most every 0.1 s
    monkeypatch.setattr(SlurmJob, "watcher", SlurmInfoWatcher(delay_s=0.1))
    # submitit waits up to 15 s for a finished job's result file (a slow shared disk); the fake writes it at once
    monkeypatch.setattr(submitit.core.core.Job, "_results_timeout_s", 0)
    clock = Clock(root)
    monkeypatch.setattr(launch, "time", clock)
    monkeypatch.setattr(submitit.core.core, "_time", clock)
    return Cluster(root)


def planned(runs: Path, *extra: str) -> tuple[Config, Graph]:
    cfg, sweep = resolve([(k, v) for k, v in (a.split("=", 1) for a in [*SWEEP, f"runs_dir={runs}", *extra])])
    return cfg, plan(cfg, sweep)


def carried(cfg: Config) -> dict[str, str]:
    """Job id -> the name of the run folder that the submitted call carries (submitit's pickle of the call)."""
    folder = Path(cfg.runs_dir) / cfg.preset / "_submitit"
    return {p.name.removesuffix("_submitted.pkl"): Path(pickle.loads(p.read_bytes()).args[0]).name
            for p in folder.glob("*_submitted.pkl")}


def needing(g: Graph, failed: Job) -> set[str]:
    """The names of the jobs that need ``failed``, directly or through others."""
    out: set[str] = set()
    grown = True
    while grown:
        grown = False
        for j in g:
            if j.name not in out and any(d.key == failed.key or d.name in out for d in j.deps.values()):
                out.add(j.name)
                grown = True
    return out


def finish(job: Job) -> None:
    """Leave a job's run folder as its finished job does: config.json, its kind's outputs, metrics.json."""
    prepare(job, "earlier")
    for rel in runfolder.REQUIRED.get(job.kind, ()):
        (job.run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (job.run_dir / rel).write_bytes(b"weights")
    write_json(job.run_dir / "metrics.json", {"outputs": runfolder.record_outputs(job.run_dir)})
    assert runfolder.done(job.run_dir)


class Shown(logging.Handler):
    """The messages a handler of submitit's logger lets through."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def failed_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if "FAILED" in line]


def check_submissions(cluster: Cluster, cfg: Config, g: Graph, todo: list[Job]) -> dict[str, str]:
    """Every job to run went out once: caches, samples and scores in one sbatch per set of jobs they wait on (an
    array when there are several, every task waiting on the same jobs), one sbatch per job otherwise; each with
    afterok on exactly its jobs' submitted dependencies and its kind's resources. Returns the job id of each job's
    name."""
    ids = carried(cfg)
    assert sorted(ids.values()) == sorted(j.name for j in todo)
    of_name = {name: jid for jid, name in ids.items()}
    jobs = {j.name: j for j in g}
    subs = cluster.state()["submissions"]
    sizes: dict[str, list[int]] = {}
    for sub in subs:
        batch = [jobs[ids[jid]] for jid in sub["jobs"]]
        opts, kind, n = sub["options"], batch[0].kind, len(batch)
        assert {j.kind for j in batch} == {kind} and opts["job-name"] == f"msf-{kind}", sub["jobs"]
        sizes.setdefault(kind, []).append(n)
        assert opts.get("array") == (f"0-{n - 1}%{min(n, 3)}" if n > 1 else None), (kind, opts.get("array"))
        waits = {tuple(sorted({of_name[d.name] for d in j.deps.values() if d.name in of_name})) for j in batch}
        assert len(waits) == 1, (kind, waits)  # an array's afterok covers all its tasks: they wait on the same jobs
        wanted = sorted(next(iter(waits)))
        given = opts["dependency"].removeprefix("afterok:").split(":") if "dependency" in opts else []
        assert sorted(given) == wanted and (not given or opts["dependency"].startswith("afterok:")), (kind, opts)
        trained = [j.kind == "train" and j.spec.steps > 0 for j in batch]
        assert len(set(trained)) == 1
        nodes, gpus = (2, 4) if trained[0] else (1, 1)
        assert (opts["nodes"], opts["ntasks-per-node"], opts["gpus-per-node"]) == (str(nodes), str(gpus), str(gpus))
        assert (opts["partition"], opts["account"], opts["time"]) == ("gpu", "lab", "90"), opts
    count = Counter(j.kind for j in todo)
    arrays = {"cache", "sample", "score"}
    for kind, n in count.items():
        sets = {frozenset(d.name for d in j.deps.values() if d.name in of_name) for j in todo if j.kind == kind}
        assert sum(sizes[kind]) == n and len(sizes[kind]) == (len(sets) if kind in arrays else n), (kind, sizes)
    return of_name


# ----------------------------------------------------------------------------------------------------------------------


def test_the_graph_goes_out_as_arrays_with_afterok_on_what_each_job_needs(cluster, tmp_path, capsys):
    cfg, g = planned(tmp_path / "runs")
    rows = launch.run_graph(cfg, g)
    out = capsys.readouterr().out
    assert rows == [{"job": j.name, "status": "done"} for j in g], out
    of_name = check_submissions(cluster, cfg, g, list(g))
    subs = cluster.state()["submissions"]
    names = [s["name"] for s in subs]
    assert names[:6] == ["msf-autoencoder", "msf-cache"] + ["msf-train"] * 4
    assert names[6:] == sorted(names[6:], key=["msf-sample", "msf-score"].index)  # then the samples, the scores
    # the samples of each trained model as one array: two trained MSFs (4 + 1 points), the untrained one, the anchors
    assert sorted(len(s["jobs"]) for s in subs if s["name"] == "msf-sample") == [1, 2, 5]
    for sub in subs:  # what the user reads: each job's id, each array's id and size
        jid = sub["id"]
        if len(sub["jobs"]) == 1:
            assert f"submitted {carried(cfg)[jid]} as job {jid}\n" in out
        else:
            assert f"submitted {len(sub['jobs'])} {sub['name'][4:]} job(s) as array {jid}\n" in out
    assert "FAILED" not in out and not cluster.calls("scancel")
    assert len(of_name) == len(g.jobs) == 23


def test_a_preempted_and_requeued_training_is_waited_for_under_the_same_job_id(cluster, tmp_path, capsys):
    cluster.plan({"msf-train#0": "requeue"})
    cfg, g = planned(tmp_path / "runs")
    rows = launch.run_graph(cfg, g)
    out = capsys.readouterr().out
    assert sorted(r["job"] for r in rows if r["status"] == "done") == sorted(j.name for j in g), out
    state = cluster.state()
    train = state["submissions"][2]
    assert train["name"] == "msf-train"  # and nothing was submitted again:
    assert sum(len(s["jobs"]) for s in state["submissions"]) == len(g.jobs)
    jid = train["id"]
    seen = [c["answer"][jid] for c in cluster.calls("sacct") if jid in c.get("answer", {})]
    assert {"PREEMPTED", "REQUEUED", "PENDING"} & set(seen), seen  # the launcher asked while it was away
    requeued = next(j for j in g if j.name == carried(cfg)[jid])
    samples = [state["jobs"][t] for s in state["submissions"] if s["name"] == "msf-sample" for t in s["jobs"]
               if next(j for j in g if j.name == carried(cfg)[t]).needs(requeued)]
    assert samples and min(s["started"] for s in samples) >= state["jobs"][jid]["ended"]  # afterok held them
    assert not cluster.calls("scancel") and "FAILED" not in out
    # what SLURM requeues: the same call with the same run folder (it resumes from its checkpoints), and the
    # signal before the time limit that makes submitit requeue it
    call = pickle.loads((Path(cfg.runs_dir) / cfg.preset / "_submitit" / f"{jid}_submitted.pkl").read_bytes())
    assert isinstance(call.function, JobCall) and call.args == (str(g.root / carried(cfg)[jid]), False)
    again = call.function.checkpoint(*call.args, **call.kwargs)
    assert isinstance(again.function, JobCall) and again.args == call.args and again.kwargs == call.kwargs
    assert call._timeout_min == 90 and call._timeout_countdown > 0
    assert re.fullmatch(r"USR2@\d+", train["options"]["signal"])


def test_a_rerun_submits_only_what_is_not_done_and_leaves_finished_folders_alone(cluster, tmp_path, capsys):
    cfg, g = planned(tmp_path / "runs")
    first_train = next(j for j in g if j.kind == "train" and j.spec.steps > 0)
    earlier = [j for j in g if j.kind in ("autoencoder", "cache")] + [first_train]
    for job in earlier:
        finish(job)

    def files() -> dict[Path, bytes]:
        return {p: p.read_bytes() for j in earlier for p in j.run_dir.rglob("*") if p.is_file()}

    kept = files()
    todo = [j for j in g if j not in earlier]
    rows = launch.run_graph(cfg, g)
    out = capsys.readouterr().out
    assert rows == [{"job": j.name, "status": "done"} for j in todo], out
    assert f"{len(todo)} job(s) to run, {len(earlier)} already done" in out
    check_submissions(cluster, cfg, g, todo)
    trains = [s for s in cluster.state()["submissions"] if s["name"] == "msf-train"]
    assert len(trains) == 3 and not any("dependency" in s["options"] for s in trains)  # their caches are done
    assert files() == kept


def test_a_failed_array_task_is_one_line_with_its_job_id_cause_and_log(cluster, tmp_path, capsys):
    cfg, g = planned(tmp_path / "runs")
    waits = [frozenset(d.key for d in j.deps.values()) for j in g if j.kind == "sample"]
    groups = list(dict.fromkeys(waits))  # the sample arrays in the order they go out
    largest = max(range(len(groups)), key=lambda i: waits.count(groups[i]))
    cluster.plan({f"msf-sample#{largest}_4": "error"})
    rows = launch.run_graph(cfg, g)
    out = capsys.readouterr().out
    array = [s for s in cluster.state()["submissions"] if s["name"] == "msf-sample"][largest]["id"]
    jid = f"{array}_4"
    name = carried(cfg)[jid]
    log = g.root / name / "log.txt"
    lines = failed_lines(out)
    assert len(lines) == 1 and lines[0].endswith(
        f"FAILED  {name} (job {jid}): FloatingPointError: loss is nan at step 3 (job {jid}) (log: {log})"), out
    failed = [r for r in rows if r["status"] != "done"]
    score = next(j for j in g if j.kind == "score" and j.deps["samples"].name == name)
    assert len(rows) == len(g.jobs) and [(r["job"], r["status"]) for r in failed] == [
        (name, "failed"), (score.name, "skipped")], rows
    assert failed[0]["log"] == str(log) and "FloatingPointError: loss is nan at step 3" in failed[0]["error"]
    assert [c["args"][0] for c in cluster.calls("scancel")] == [of_job(cluster, cfg, score.name)]


def of_job(cluster: Cluster, cfg: Config, name: str) -> str:
    """The SLURM job id a job's name went out under."""
    return next(jid for jid, n in carried(cfg).items() if n == name)


def test_a_job_killed_without_a_result_fails_with_slurms_reason_and_its_dependents_are_cancelled(
        cluster, tmp_path, capsys):
    cluster.plan({"msf-autoencoder#0": "oom"})
    cfg, g = planned(tmp_path / "runs")
    rows = launch.run_graph(cfg, g)
    out = capsys.readouterr().out
    ae = next(j for j in g if j.kind == "autoencoder")
    state = cluster.state()
    jid = state["submissions"][0]["id"]
    lines = failed_lines(out)
    assert len(lines) == 1 and lines[0].endswith(
        f"FAILED  {ae.name} (job {jid}): slurmstepd: error: Detected 1 oom_kill event in StepId={jid}.batch. Some of "
        f"the step tasks have been OOM Killed. (log: {ae.run_dir / 'log.txt'})"), out
    others = [j for j in g if j is not ae]
    assert {j.name for j in others} == needing(g, ae)
    assert rows[0]["status"] == "failed" and rows[1:] == [
        {"job": j.name, "status": "skipped", "error": f"{ae.name} failed"} for j in others]
    assert out.count(f": it needs {ae.name}\n") == len(others)
    cancelled = sorted(c["args"][0] for c in cluster.calls("scancel"))
    assert cancelled == sorted(j for j in state["jobs"] if j != jid)  # each job and array task that waits on it
    assert all(j["state"] == "CANCELLED" and j["started"] is None for i, j in state["jobs"].items() if i != jid)


def test_a_failed_training_leaves_the_eval_points_that_do_not_need_it(cluster, tmp_path, capsys):
    """An array's afterok covers every task: the eval points of each trained model go out as arrays of their own,
    so a failed training holds back (and the launcher cancels) only the points that need it."""
    cluster.plan({"msf-train#0": "error"})
    cfg, g = planned(tmp_path / "runs")
    train = next(j for j in g if j.kind == "train")
    rows = launch.run_graph(cfg, g)
    status = {r["job"]: r["status"] for r in rows}
    assert status.pop(train.name) == "failed"
    skipped = needing(g, train)
    assert status == {j.name: "skipped" if j.name in skipped else "done" for j in g if j is not train}


def test_without_accounting_jobs_end_by_their_result_files_and_sacct_warnings_stay_quiet(cluster, tmp_path, caplog):
    cluster.plan({"sacct": "disabled", "msf-train#0": "requeue"})
    cfg, g = planned(tmp_path / "runs")
    shown = Shown()  # beside submitit's own handlers, which the launcher filters
    logging.getLogger("submitit").addHandler(shown)
    try:
        rows = launch.run_graph(cfg, g)
    finally:
        logging.getLogger("submitit").removeHandler(shown)
    assert sorted(r["job"] for r in rows if r["status"] == "done") == sorted(j.name for j in g)
    assert cluster.state()["now"] >= 5  # the requeued training ended after the fifth round
    assert any("Bypassing sacct error" in r.getMessage() for r in caplog.records)  # submitit did warn
    assert not any("Bypassing sacct error" in m for m in shown.messages)  # the runner's output does not repeat it
