"""Launchers: run a planned graph on this machine (launcher=inprocess or local: ablations/pool.py) or on SLURM.

``slurm``: submitit's AutoExecutor; trainings are multi-GPU jobs (one task per GPU, torch.distributed set up from
SLURM's variables), every job waits on its dependencies with ``afterok``, eval points go out as two job arrays (samples,
then their scores) with a parallelism cap, and a preempted or requeued job re-runs, resuming from its own checkpoint.

What a job receives is its run folder's path: the job reads its typed spec back from the ``config.json`` written
there before submission (ablations/engine/jobs.py ``run``). While jobs run, the last line of each one's log is shown
with the time left, whatever the launcher.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import submitit

from ablations.config import Config
from ablations.costs import is_training
from ablations.graph import Graph, Job, code_version
from ablations.jobcall import JobCall, cause, prepare
from ablations.pool import run_pool
from ablations.progress import Progress, last_line


def _executor(cfg: Config, folder: Path, job: Job) -> submitit.Executor:
    """The SLURM executor of a job, with the configured resources (trainings get several GPUs and nodes, every other
    job one GPU)."""
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


def run_graph(cfg: Config, g: Graph) -> list[dict[str, Any]]:
    """Run every job that is not done yet; return one status row per job."""
    todo = [j for j in g if not g.done(j)]
    code = code_version()
    if cfg.launcher != "slurm":
        return run_pool(cfg, g, todo, code)
    progress = Progress(len(g.jobs), len(g.jobs) - len(todo))
    progress.show(f"{len(todo)} job(s) to run, {len(g.jobs) - len(todo)} already done")
    return _run_slurm(cfg, g, todo, Path(cfg.runs_dir) / cfg.preset / "_submitit", progress, code)


class _NoAccounting(logging.Filter):
    """Drops submitit's repeated warning on clusters without SLURM accounting (sacct fails, squeue serves)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Bypassing sacct error" not in record.getMessage()


def _run_slurm(cfg: Config, g: Graph, todo: list[Job], folder: Path, progress: Progress,
               code: str) -> list[dict[str, Any]]:
    """Submit the graph to SLURM: afterok dependencies, jobs of one kind that wait on the same jobs as one array
    (so a failed job holds back only the arrays that need it, and those are cancelled); then wait and report."""
    for handler in logging.getLogger("submitit").handlers:
        handler.addFilter(_NoAccounting())
    jobs: dict[str, submitit.Job] = {}

    def waits_on(job: Job) -> tuple[str, ...]:
        return tuple(sorted({jobs[d.key].job_id for d in job.deps.values() if d.key in jobs}))

    def after(planned: list[Job]) -> dict[str, Any]:
        ids = sorted({i for j in planned for i in waits_on(j)})
        return {"dependency": "afterok:" + ":".join(ids)} if ids else {}

    def submit_kind(kind: str) -> None:
        """The jobs of one kind, one array per set of jobs they wait on: an array's afterok covers all its tasks."""
        groups: dict[tuple[str, ...], list[Job]] = {}
        for job in [j for j in todo if j.kind == kind]:
            groups.setdefault(waits_on(job), []).append(job)
        for batch in groups.values():
            submit(batch)

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
    submit_kind("cache")  # the caches' parts
    for job in [j for j in todo if j.kind not in ("autoencoder", "cache", "sample", "score")]:  # graph order
        submit([job])
    submit_kind("sample")  # the eval points' samples: one array per trained model
    submit_kind("score")  # and their scores
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
                progress.show(f"FAILED  {job.name} (job {sub.job_id}): {cause(e)} (log: {log})")
                rows.append({"job": job.name, "status": "failed", "error": str(e), "log": str(log)})
                for dependent in [j for j in pending if j.needs(job)]:  # afterok never fires: cancel them
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
