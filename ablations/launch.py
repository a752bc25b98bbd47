"""Launchers: run a planned graph in process, as local subprocesses, or on SLURM, all through submitit (harness).

- ``inprocess``: submitit's DebugExecutor (the job runs in this process; errors are caught by the job wrapper so
  submitit's post-mortem debugger never starts).
- ``local``: submitit's LocalExecutor (one subprocess per node, in graph order).
- ``slurm``: submitit's AutoExecutor; trainings are multi-GPU jobs (one task per GPU, torch.distributed set up from
  SLURM's variables), every job waits on its dependencies with ``afterok``, eval points go out as one job array with a
  parallelism cap, and a preempted or requeued job re-runs the node, which resumes from its own checkpoint.
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
from ablations.graph import Graph, Node, dep_dirs, execute


class NodeJob(submitit.helpers.Checkpointable):
    """The callable submitted for one node; on preemption/timeout submitit requeues it with the same arguments."""

    def __call__(self, node: Node, deps: dict[str, str], catch: bool, threads: int = 0) -> dict[str, Any]:
        import torch

        from ablations.nodes import NODE_FUNCTIONS  # imported in the job's process

        if threads > 0:
            torch.set_num_threads(threads)

        if node.kind == "train" and "SLURM_JOB_ID" in os.environ:
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        try:
            return {"status": "done", "metrics": execute(node, deps, NODE_FUNCTIONS[node.kind])}
        except Exception as e:  # noqa: BLE001 - reported with the log path, never swallowed silently
            if not catch:
                raise
            log = Path(node.run_dir) / "log.txt"
            with open(log, "a") as fh:
                fh.write(traceback.format_exc())
            return {"status": "failed", "error": f"{type(e).__name__}: {e}", "log": str(log)}


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
    """A live one-line-per-change display of nodes done / running / failed."""

    def __init__(self, total: int, already: int) -> None:
        self.total, self.done, self.failed, self.running = total, already, 0, ""
        self.t0 = time.time()

    def show(self, msg: str) -> None:
        elapsed = time.time() - self.t0
        print(f"[{self.done}/{self.total} done, {self.failed} failed, {elapsed:6.0f}s] {msg}", flush=True)


def run_graph(cfg: Config, g: Graph) -> list[dict[str, Any]]:
    """Run every node that is not done yet; return one status row per node."""
    folder = Path(cfg.runs_dir) / cfg.preset / "_submitit"
    todo = [n for n in g if not g.done(n)]
    progress = Progress(len(g.nodes), len(g.nodes) - len(todo))
    progress.show(f"{len(todo)} node(s) to run, {len(g.nodes) - len(todo)} already done")
    if cfg.launcher == "slurm":
        return _run_slurm(cfg, g, todo, folder, progress)
    status: dict[str, str] = {n.key: "done" for n in g if g.done(n)}
    rows = []
    for node in todo:
        bad = [d for d in node.deps if status.get(d) != "done"]
        if bad:
            status[node.key] = "skipped"
            rows.append({"node": node.name, "status": "skipped", "error": "a dependency failed"})
            continue
        progress.show(f"running {node.name}")
        job = _executor(cfg, folder, node.kind).submit(NodeJob(), node, dep_dirs(g, node), True, cfg.cpu_threads)
        result = job.result()
        status[node.key] = result["status"]
        if result["status"] == "done":
            progress.done += 1
            progress.show(f"done    {node.name}")
        else:
            progress.failed += 1
            progress.show(f"FAILED  {node.name}: {result['error']} (log: {result['log']})")
        rows.append({"node": node.name, **result})
    return rows


def _run_slurm(cfg: Config, g: Graph, todo: list[Node], folder: Path, progress: Progress) -> list[dict[str, Any]]:
    """Submit the graph to SLURM: afterok dependencies, eval points as one array; then wait and report."""
    jobs: dict[str, submitit.Job] = {}

    def after(nodes: list[Node]) -> dict[str, Any]:
        ids = sorted({jobs[d].job_id for n in nodes for d in n.deps if d in jobs})
        return {"dependency": "afterok:" + ":".join(ids)} if ids else {}

    for node in [n for n in todo if n.kind != "eval"]:
        ex = _executor(cfg, folder, node.kind)
        ex.update_parameters(slurm_additional_parameters={**ex.parameters.get("additional_parameters", {}),
                                                          **after([node])})
        jobs[node.key] = ex.submit(NodeJob(), node, dep_dirs(g, node), False, cfg.cpu_threads)
        progress.show(f"submitted {node.name} as job {jobs[node.key].job_id}")
    evals = [n for n in todo if n.kind == "eval"]
    if evals:
        ex = _executor(cfg, folder, "eval")
        ex.update_parameters(slurm_additional_parameters={**ex.parameters.get("additional_parameters", {}),
                                                          **after(evals)})
        with ex.batch():
            array = [ex.submit(NodeJob(), n, dep_dirs(g, n), False, cfg.cpu_threads) for n in evals]
        for n, job in zip(evals, array, strict=True):
            jobs[n.key] = job
        progress.show(f"submitted {len(evals)} eval point(s) as array {array[0].job_id.split('_')[0]}")
    rows = []
    for node in todo:
        job = jobs[node.key]
        try:
            job.result()
            progress.done += 1
            progress.show(f"done    {node.name}")
            rows.append({"node": node.name, "status": "done"})
        except Exception as e:  # noqa: BLE001 - a failed SLURM job: report it with its log
            progress.failed += 1
            log = Path(node.run_dir) / "log.txt"
            progress.show(f"FAILED  {node.name} (job {job.job_id}): {str(e).splitlines()[0][:200]} (log: {log})")
            rows.append({"node": node.name, "status": "failed", "error": str(e), "log": str(log)})
    print(file=sys.stderr)
    return rows
