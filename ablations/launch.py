"""Launchers: run a planned graph in process, as local subprocesses, or on SLURM, all through submitit (harness).

- ``inprocess``: submitit's DebugExecutor (the job runs in this process; errors are caught by the job wrapper so
  submitit's post-mortem debugger never starts).
- ``local``: submitit's LocalExecutor (one subprocess per job, in graph order).
- ``slurm``: submitit's AutoExecutor; trainings are multi-GPU jobs (one task per GPU, torch.distributed set up from
  SLURM's variables), every job waits on its dependencies with ``afterok``, eval points go out as one job array with a
  parallelism cap, and a preempted or requeued job re-runs, resuming from its own checkpoint.

What a job receives is its run folder's path: the job reads its typed spec back from the ``config.json`` written
there before submission (ablations/engine/jobs.py ``run``).
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import submitit

from ablations.config import Config
from ablations.engine.io import read_json, write_json
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
            with open(log, "a") as fh:
                fh.write(traceback.format_exc())
            return {"status": "failed", "error": f"{type(e).__name__}: {e}", "log": str(log)}


def prepare(job: Job, code: str) -> None:
    """Write the job's config.json (its typed spec) into its run folder, unless the same spec is already there."""
    job.run_dir.mkdir(parents=True, exist_ok=True)
    path = job.run_dir / "config.json"
    record = job.record(code)
    if path.exists():
        old = read_json(path)
        if {k: v for k, v in old.items() if k != "code_version"} == {k: v for k, v in record.items()
                                                                      if k != "code_version"}:
            return
        raise RuntimeError(f"{path} holds another spec under the same key; delete the folder to rerun it")
    write_json(path, record)


def _executor(cfg: Config, folder: Path, kind: str) -> submitit.Executor:
    if cfg.launcher == "inprocess":
        return submitit.DebugExecutor(folder=folder)
    if cfg.launcher == "local":
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(timeout_min=cfg.slurm.timeout_min)
        return ex
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
    s = cfg.slurm
    gpus = s.gpus_per_node if kind == "train" else min(1, s.gpus_per_node)
    extra = {k: v for k, v in {"account": s.account, "qos": s.qos, "constraint": s.constraint}.items() if v}
    params: dict[str, Any] = {"slurm_partition": s.partition} if s.partition else {}
    if gpus:
        params["gpus_per_node"] = gpus  # omitted on CPU-only clusters without GPU GRES
    ex.update_parameters(
        **params,
        nodes=s.nodes if kind == "train" else 1,
        tasks_per_node=max(gpus, 1),
        cpus_per_task=s.cpus_per_task,
        mem_gb=s.mem_gb,
        timeout_min=s.timeout_min,
        slurm_array_parallelism=s.array_parallelism,
        slurm_additional_parameters=extra,
        name=f"msf-{kind}",
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
    for job in todo:
        if any(status.get(d.key) != "done" for d in job.deps.values()):
            status[job.key] = "skipped"
            rows.append({"job": job.name, "status": "skipped", "error": "a dependency failed"})
            continue
        progress.show(f"running {job.name}")
        prepare(job, code)
        result = _executor(cfg, folder, job.kind).submit(JobCall(), str(job.run_dir), True).result()
        status[job.key] = result["status"]
        if result["status"] == "done":
            progress.done += 1
            progress.show(f"done    {job.name}")
        else:
            progress.failed += 1
            progress.show(f"FAILED  {job.name}: {result['error']} (log: {result['log']})")
        rows.append({"job": job.name, **result})
    return rows


def _run_slurm(cfg: Config, g: Graph, todo: list[Job], folder: Path, progress: Progress,
               code: str) -> list[dict[str, Any]]:
    """Submit the graph to SLURM: afterok dependencies, eval points as one array; then wait and report."""
    jobs: dict[str, submitit.Job] = {}

    def after(planned: list[Job]) -> dict[str, Any]:
        ids = sorted({jobs[d.key].job_id for j in planned for d in j.deps.values() if d.key in jobs})
        return {"dependency": "afterok:" + ":".join(ids)} if ids else {}

    for job in todo:
        prepare(job, code)
    for job in [j for j in todo if j.kind != "eval"]:
        ex = _executor(cfg, folder, job.kind)
        ex.update_parameters(slurm_additional_parameters={**ex.parameters.get("additional_parameters", {}),
                                                          **after([job])})
        jobs[job.key] = ex.submit(JobCall(), str(job.run_dir), False)
        progress.show(f"submitted {job.name} as job {jobs[job.key].job_id}")
    evals = [j for j in todo if j.kind == "eval"]
    if evals:
        ex = _executor(cfg, folder, "eval")
        ex.update_parameters(slurm_additional_parameters={**ex.parameters.get("additional_parameters", {}),
                                                          **after(evals)})
        with ex.batch():
            array = [ex.submit(JobCall(), str(j.run_dir), False) for j in evals]
        for j, sub in zip(evals, array, strict=True):
            jobs[j.key] = sub
        progress.show(f"submitted {len(evals)} eval point(s) as array {array[0].job_id.split('_')[0]}")
    rows = []
    for job in todo:
        sub = jobs[job.key]
        try:
            sub.result()
            progress.done += 1
            progress.show(f"done    {job.name}")
            rows.append({"job": job.name, "status": "done"})
        except Exception as e:  # noqa: BLE001 - a failed SLURM job: report it with its log
            progress.failed += 1
            log = job.run_dir / "log.txt"
            progress.show(f"FAILED  {job.name} (job {sub.job_id}): {str(e).splitlines()[0][:200]} (log: {log})")
            rows.append({"job": job.name, "status": "failed", "error": str(e), "log": str(log)})
    print(file=sys.stderr)
    return rows
