"""Launchers: run a planned graph in process, as local subprocesses, or on SLURM, all through submitit.

- ``inprocess``: each job runs in this process, one after the other (no executor: no debugger prompt on an error).
- ``local``: submitit's LocalExecutor (one subprocess per job, in graph order).
- ``slurm``: submitit's AutoExecutor; trainings are multi-GPU jobs (one task per GPU, torch.distributed set up from
  SLURM's variables), every job waits on its dependencies with ``afterok``, eval points go out as two job arrays
  (samples, then their scores) with a parallelism cap, and a preempted or requeued job re-runs, resuming from its
  own checkpoint.

What a job receives is its run folder's path: the job reads its typed spec back from the ``config.json`` written
there before submission (ablations/engine/jobs.py ``run``). While jobs run, the last line of each one's log is shown
with the time left (:class:`Watch`), whatever the launcher.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import submitit

from ablations.config import Config
from ablations.costs import is_training
from ablations.engine.io import write_json
from ablations.engine.runfolder import locked, reopen, set_aside, spec_problems
from ablations.graph import Graph, Job, code_version


class JobCall(submitit.helpers.Checkpointable):
    """The callable submitted for one job; on preemption/timeout submitit requeues it with the same arguments."""

    def __call__(self, run_dir: str, catch: bool) -> dict[str, Any]:
        from ablations.engine import jobs  # imported in the job's process

        if "SLURM_JOB_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        try:
            return {"status": "done", "metrics": jobs.run(run_dir)}
        except Exception as e:  # noqa: BLE001 - reported with the log path, never swallowed silently
            if not catch:
                raise
            log = Path(run_dir) / "log.txt"
            with contextlib.suppress(OSError):  # a full or read-only disk: the one-line error still reaches the user
                with open(log, "a") as fh:
                    fh.write(traceback.format_exc())
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            return {"status": "failed", "error": f"{type(e).__name__}: {first}", "log": str(log)}


def prepare(job: Job, code: str) -> None:
    """Write the job's config.json (its typed spec) into its run folder, unless the same spec is already there. A
    config.json that holds another spec (edited by hand) is set aside with the job's metrics.json, so that the job
    is computed again from its true spec: a folder never reports a spec it did not run."""
    job.run_dir.mkdir(parents=True, exist_ok=True)
    path = job.run_dir / "config.json"
    record = job.record(code)
    if path.exists():
        if not spec_problems(job.run_dir):  # it hashes to this job's key: the same spec
            return
        if (job.run_dir / "metrics.json").exists():
            reopen(job.run_dir)
        set_aside(path)
    write_json(path, record)


def _executor(cfg: Config, folder: Path, job: Job) -> submitit.Executor:
    """The submitit executor of a job: a local subprocess, or a SLURM job with the configured resources (trainings
    get several GPUs and nodes, every other job one GPU)."""
    if cfg.launcher == "local":
        local = submitit.LocalExecutor(folder=folder)
        local.update_parameters(timeout_min=cfg.slurm.timeout_min)
        return local
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
    s = cfg.slurm
    train = is_training(job)
    gpus = s.gpus_per_node if train else min(1, s.gpus_per_node)
    tasks = (s.tasks_per_node or max(gpus, 1)) if train else 1
    extra = {k: v for k, v in {"account": s.account, "qos": s.qos, "constraint": s.constraint}.items() if v}
    params: dict[str, Any] = {"slurm_partition": s.partition} if s.partition else {}
    if gpus:
        params["gpus_per_node"] = gpus  # omitted on CPU-only clusters without GPU GRES
    ex.update_parameters(
        **params,
        nodes=s.nodes if train else 1,
        tasks_per_node=tasks,
        cpus_per_task=s.cpus_per_task,
        mem_gb=s.mem_gb,
        timeout_min=s.timeout_min,
        slurm_array_parallelism=s.array_parallelism,
        slurm_additional_parameters=extra,
        name=f"msf-{job.kind}",
    )
    return ex


class Progress:
    """A live one-line-per-change display of jobs done / running / failed."""

    def __init__(self, total: int, already: int) -> None:
        self.total, self.done, self.failed = total, already, 0
        self.t0 = time.time()

    def show(self, msg: str) -> None:
        elapsed = time.time() - self.t0
        print(f"[{self.done}/{self.total} done, {self.failed} failed, {elapsed:6.0f}s] {msg}", flush=True)


FRACTION = re.compile(r"(\d+)/(\d+)")


def last_line(log: Path) -> str:
    """The last line of a job's log, without its time stamp ("" while there is none)."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            lines = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].split("] ", 1)[-1] if lines else ""


def time_left(line: str, elapsed: float) -> str:
    """'~Ns left' from the first 'a/b' progress fraction of a log line and the time since the job started."""
    m = FRACTION.search(line)
    if not m or int(m[1]) == 0 or int(m[1]) > int(m[2]):
        return ""
    a, b = int(m[1]), int(m[2])
    return f", ~{elapsed * (b - a) / a:.0f}s left"


class Watch:
    """While a job runs, show the last line of its log with the elapsed time and the time left, every ``every``
    seconds: on one rewritten line in a terminal, as new lines (only when changed) otherwise."""

    def __init__(self, name: str, log: Path, every: float = 2.0) -> None:
        self.name, self.log, self.every = name, log, every
        self.tty = sys.stdout.isatty()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.t0 = time.time()

    def _loop(self) -> None:
        shown = ""
        while not self.stop.wait(self.every if self.tty else 5 * self.every):
            line = last_line(self.log)
            if not line or (line == shown and not self.tty):
                continue
            elapsed = time.time() - self.t0
            text = f"  {self.name}: {line} ({elapsed:.0f}s{time_left(line, elapsed)})"
            print(f"\r{text[:200]}\x1b[K" if self.tty else text, end="" if self.tty else "\n", flush=True)
            shown = line

    def __enter__(self) -> Watch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        if self.tty:
            print("\r\x1b[K", end="", flush=True)


def run_graph(cfg: Config, g: Graph) -> list[dict[str, Any]]:
    """Run every job that is not done yet; return one status row per job."""
    folder = Path(cfg.runs_dir) / cfg.preset / "_submitit"
    todo = [j for j in g if not g.done(j)]
    progress = Progress(len(g.jobs), len(g.jobs) - len(todo))
    progress.show(f"{len(todo)} job(s) to run, {len(g.jobs) - len(todo)} already done")
    code = code_version()
    if cfg.launcher == "slurm":
        return _run_slurm(cfg, g, todo, folder, progress, code)
    status: dict[str, str] = {j.key: "done" for j in g if g.done(j)}
    rows = []
    pending = list(todo)
    while pending:
        job = next_job(pending, status, lambda j: locked(j.run_dir))
        pending.remove(job)
        if any(status.get(d.key) != "done" for d in job.deps.values()):
            status[job.key] = "skipped"
            rows.append({"job": job.name, "status": "skipped", "error": "a dependency failed"})
            continue
        progress.show(f"running {job.name}")
        prepare(job, code)
        with Watch(job.name, job.run_dir / "log.txt"):
            if cfg.launcher == "inprocess":
                result = JobCall()(str(job.run_dir), True)
            else:
                result = _executor(cfg, folder, job).submit(JobCall(), str(job.run_dir), True).result()
        status[job.key] = result["status"]
        if result["status"] == "done":
            progress.done += 1
            progress.show(f"done    {job.name}")
        else:
            progress.failed += 1
            progress.show(f"FAILED  {job.name}: {result['error']} (log: {result['log']})")
        rows.append({"job": job.name, **result})
    return rows


def next_job(pending: list[Job], status: dict[str, str], busy: Callable[[Job], bool]) -> Job:
    """The job a local runner takes next from ``pending`` (in graph order): the first whose dependencies are done
    and that no other runner is writing (``busy``), so that runners side by side on one sweep share its work; else
    the first whose dependencies are done (waiting for the runner writing it); else the first, whose dependency
    failed."""
    ready = [j for j in pending if all(status.get(d.key) == "done" for d in j.deps.values())]
    return next((j for j in ready if not busy(j)), ready[0] if ready else pending[0])


def _needs(job: Job, failed: Job) -> bool:
    """Whether ``job`` depends on ``failed``, directly or through other jobs."""
    return any(d.key == failed.key or _needs(d, failed) for d in job.deps.values())


def _cause(e: BaseException) -> str:
    """The line of a failed job's trace that names the error (its last 'Type: message' line), shortened."""
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    named = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Interrupt)\b.*:", line)]
    return (named or lines or [type(e).__name__])[-1][:240]


class _NoAccounting(logging.Filter):
    """Drops submitit's repeated warning on clusters without SLURM accounting (sacct fails, squeue serves)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Bypassing sacct error" not in record.getMessage()


def _run_slurm(cfg: Config, g: Graph, todo: list[Job], folder: Path, progress: Progress,
               code: str) -> list[dict[str, Any]]:
    """Submit the graph to SLURM: afterok dependencies, eval points as one array; then wait and report."""
    for handler in logging.getLogger("submitit").handlers:
        handler.addFilter(_NoAccounting())
    jobs: dict[str, submitit.Job] = {}

    def after(planned: list[Job]) -> dict[str, Any]:
        ids = sorted({jobs[d.key].job_id for j in planned for d in j.deps.values() if d.key in jobs})
        return {"dependency": "afterok:" + ":".join(ids)} if ids else {}

    def submit(batch: list[Job]) -> None:
        """One job, or several of one kind as a job array, after their dependencies."""
        if not batch:
            return
        ex = _executor(cfg, folder, batch[0])
        ex.update_parameters(slurm_additional_parameters={**ex.parameters.get("additional_parameters", {}),
                                                          **after(batch)})
        if len(batch) == 1:
            jobs[batch[0].key] = ex.submit(JobCall(), str(batch[0].run_dir), False)
            progress.show(f"submitted {batch[0].name} as job {jobs[batch[0].key].job_id}")
            return
        with ex.batch():
            array = [ex.submit(JobCall(), str(j.run_dir), False) for j in batch]
        for j, sub in zip(batch, array, strict=True):
            jobs[j.key] = sub
        progress.show(f"submitted {len(batch)} {batch[0].kind} job(s) as array {array[0].job_id.split('_')[0]}")

    for job in todo:
        prepare(job, code)
    for job in [j for j in todo if j.kind == "autoencoder"]:
        submit([job])
    submit([j for j in todo if j.kind == "cache"])  # the cache's parts (all caches of the sweep) as one array
    for job in [j for j in todo if j.kind not in ("autoencoder", "cache", "sample", "score")]:  # graph order
        submit([job])
    submit([j for j in todo if j.kind == "sample"])  # the eval points' samples as one array
    submit([j for j in todo if j.kind == "score"])  # and their scores as another
    rows, pending, shown = [], list(todo), 0.0
    while pending:
        for job in [j for j in pending if jobs[j.key].done()]:
            pending.remove(job)
            sub = jobs[job.key]
            try:
                sub.results() if sub.num_tasks > 1 else sub.result()  # a training's tasks: one result each
                progress.done += 1
                progress.show(f"done    {job.name}")
                rows.append({"job": job.name, "status": "done"})
            except Exception as e:  # noqa: BLE001 - a failed SLURM job: report it with its log
                progress.failed += 1
                log = job.run_dir / "log.txt"
                progress.show(f"FAILED  {job.name} (job {sub.job_id}): {_cause(e)} (log: {log})")
                rows.append({"job": job.name, "status": "failed", "error": str(e), "log": str(log)})
                for dependent in [j for j in pending if _needs(j, job)]:  # afterok never fires: cancel them
                    pending.remove(dependent)
                    jobs[dependent.key].cancel(check=False)
                    progress.show(f"skipped {dependent.name}: it needs {job.name}")
                    rows.append({"job": dependent.name, "status": "skipped", "error": f"{job.name} failed"})
        if pending and time.time() - shown > 30:  # the running jobs' progress, from their logs
            shown = time.time()
            for job in pending:
                line = last_line(job.run_dir / "log.txt")
                if line:
                    print(f"  {job.name} (job {jobs[job.key].job_id}): {line}", flush=True)
        time.sleep(1 if pending else 0)
    return rows
