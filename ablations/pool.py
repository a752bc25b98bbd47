"""The local pool (launcher=inprocess or local): up to ``workers`` jobs of a graph at once on this machine, each as
soon as its dependencies are done, each with its own ``cpu_threads`` (its spec's threads), so that results do not
depend on the number of workers.

- ``workers=1`` with launcher=inprocess: the jobs run in this process, one after the other (no executor, no pickles).
- more workers with launcher=inprocess: each job in a process of its own, forked from a server process that imported
  the engine once (multiprocessing's forkserver), so that a job starts in a fraction of a second.
- launcher=local: each job through submitit's LocalExecutor (a controller and a task process per job), polled.

Choosing a job and locking it is one step (:func:`pick`): the runner takes the run folder's lock without waiting and
holds it while the job runs, and the job is told so (``held``). Runners side by side on one runs folder thus share
the work from their first job on and never wait on a job another runner has just taken. A forked worker is given the
lock's open file (an flock lock belongs to the open file, which a child can share) and checks that it holds the lock;
submitit's processes cannot be given an open file, so there the runner alone holds it, and such a job stops once its
runner is gone.

Ctrl-C or SIGTERM stops every worker (SIGTERM, then SIGKILL after ``GRACE`` seconds) and reaches the caller as a
KeyboardInterrupt (:class:`~ablations.jobcall.Stopped` for SIGTERM). A stopped job leaves no metrics.json, and what it
wrote on the way (checkpoints, cache shards) is atomic, so a rerun continues where it stopped.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing import forkserver
from multiprocessing.connection import Connection
from multiprocessing.reduction import DupFd
from pathlib import Path
from typing import IO, Any

import submitit

from ablations.config import Config
from ablations.engine import runfolder
from ablations.graph import Graph, Job
from ablations.jobcall import JobCall, cause, prepare
from ablations.progress import Board

POLL = 0.2  # seconds between looks at the running jobs
GRACE = 10.0  # seconds a stopped worker has to unwind before it is killed


# ----------------------------------------------------------------------------------------------------------------------
# How many workers.


def available_gib() -> float:
    """Memory that new processes can use without swapping (MemAvailable), in GiB."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30


def on_gpu(cfg: Config) -> bool:
    """Whether the jobs run on a GPU."""
    if cfg.device != "auto":
        return cfg.device == "cuda"
    import torch

    return torch.cuda.is_available()


def by_cores(cfg: Config) -> tuple[int, str]:
    """How many jobs the cores this process may run on allow at ``cpu_threads`` threads per job (0: torch's default,
    a thread per core), and why."""
    cores = len(os.sched_getaffinity(0))
    threads = cfg.cpu_threads or cores
    return max(1, cores // threads), f"{cores} core(s) / {threads} thread(s) per job"


def workers(cfg: Config, todo: list[Job], estimate: bool = True) -> tuple[int, str]:
    """How many jobs run at once, and why (one line for the dry-run): ``cfg.workers`` if given, else as many as the
    cores allow (:func:`by_cores`), no more than the available memory allows at the largest job's estimated peak
    (ablations/costs.py), and no more than there are jobs to run; one on a GPU (the jobs would share it). Without
    ``estimate`` a given number is taken as it is (the memory estimate builds networks on the meta device: seconds)."""
    if cfg.workers and not estimate:
        return cfg.workers, "given"
    if not cfg.workers and on_gpu(cfg):
        return 1, "the jobs run on the GPU, one at a time"
    from ablations.costs import job_memory_gib

    cores, why = by_cores(cfg)  # jobs the cores allow
    peak = max((job_memory_gib(j) for j in todo), default=0.0)
    memory = max(1, int(available_gib() // peak)) if peak else cores
    basis = f"{why}; memory allows {memory} at {peak:.1f} GiB per job"
    if cfg.workers:
        return cfg.workers, f"given; {basis}"
    n = max(1, min(cores, memory, len(todo)))
    return n, basis + (f"; {len(todo)} job(s) to run" if n == len(todo) < min(cores, memory) else "")


# ----------------------------------------------------------------------------------------------------------------------
# One running job, in this process, a forked worker or a submitit process.


@contextlib.contextmanager
def held_back(ignore_sigint: bool = False) -> Iterator[None]:
    """SIGINT and SIGTERM held back while a worker starts, and raised once it has started (and is among the workers a
    stop stops). ``ignore_sigint``: Ctrl-C is ignored instead, so that the processes started now inherit that and Ctrl-C
    reaches the runner alone, which stops them with SIGTERM (a Ctrl-C in these milliseconds is lost)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []

    def record(signum: int, frame: Any) -> None:
        got.append(signum)

    sigint = signal.SIG_IGN if ignore_sigint else record
    old = {signal.SIGINT: signal.signal(signal.SIGINT, sigint), signal.SIGTERM: signal.signal(signal.SIGTERM, record)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if got:
            signal.raise_signal(got[0])


@contextlib.contextmanager
def output_to_devnull() -> Iterator[None]:
    """This process's stdout and stderr sent to /dev/null while a long-lived helper process starts, so that it holds
    no pipe of the caller's open (a caller reading our output would wait for it)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (null, *saved):
            os.close(fd)


def fork_context() -> Any:
    """multiprocessing's forkserver, its server started (Ctrl-C ignored, no pipe of ours held) with the engine and
    the autoencoders' diffusers code (which the engine imports only where an autoencoder is built) imported there
    once."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["__main__", "ablations.engine.jobs", "diffusers.models.autoencoders.autoencoder_kl"])
    with held_back(ignore_sigint=True), output_to_devnull():
        forkserver.ensure_running()
    return ctx


def stop_forkserver() -> None:
    """Stop the forkserver at once, on a stop: it may still be importing the engine, and would finish that first.
    (multiprocessing has no public call for this; its own tests use ``_stop``.)"""
    server = getattr(forkserver, "_forkserver", None)
    pid = getattr(server, "_forkserver_pid", None)
    if server is None or pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    server._stop()


class Worker:
    """A job this runner runs, with the run folder's lock it took when it chose the job. This base class runs the job
    in this process, to its end, when started."""

    def __init__(self, job: Job, lock: IO[str]) -> None:
        self.job, self.lock = job, lock
        self._result: dict[str, Any] = {}

    def start(self) -> None:
        self._result = JobCall()(str(self.job.run_dir), True, os.getpid())

    def finished(self) -> bool:
        return True

    def result(self) -> dict[str, Any]:
        return self._result

    def stop(self) -> None:
        """Ask the job to stop (SIGTERM)."""

    def kill(self) -> None:
        """Stop it now (SIGKILL)."""


def _work(run_dir: str, lock: Any, runner: int, out: Connection) -> None:
    """A forked worker: its output goes to the job's log; it checks that it holds the lock its runner took, runs the
    job and sends back its status row."""
    log = Path(run_dir) / "log.txt"
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    if not runfolder.holds(lock.detach(), Path(run_dir)):
        out.send({"status": "failed", "error": "the worker does not hold its run folder's lock", "log": str(log)})
        return
    out.send(JobCall()(run_dir, True, runner))


class Forked(Worker):
    """A job in a process forked from the forkserver, which shares the runner's lock."""

    def __init__(self, job: Job, lock: IO[str], ctx: Any) -> None:
        super().__init__(job, lock)
        self.pipe, self.out = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_work, args=(str(job.run_dir), DupFd(lock.fileno()), os.getpid(), self.out),
                                name=job.name)

    def start(self) -> None:
        with held_back():
            self.proc.start()
        self.out.close()

    def finished(self) -> bool:
        return self.proc.pid is None or self.proc.exitcode is not None

    def result(self) -> dict[str, Any]:
        self.proc.join()
        with self.pipe, contextlib.suppress(EOFError):
            if self.pipe.poll():
                return dict(self.pipe.recv())
        code = self.proc.exitcode or 0
        died = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        return {"status": "failed", "error": f"its worker process died ({died})",
                "log": str(self.job.run_dir / "log.txt")}

    def stop(self) -> None:
        if not self.finished():
            self.proc.terminate()

    def kill(self) -> None:
        if not self.finished():
            self.proc.kill()


class Submitted(Worker):
    """A job submitted to submitit's LocalExecutor; the runner keeps its lock (see the module docstring)."""

    def __init__(self, job: Job, lock: IO[str], executor: submitit.Executor) -> None:
        super().__init__(job, lock)
        self.executor = executor
        self.sub: submitit.Job[Any] | None = None

    def start(self) -> None:
        with held_back(ignore_sigint=True):
            self.sub = self.executor.submit(JobCall(), str(self.job.run_dir), True, os.getpid())

    def finished(self) -> bool:
        return self.sub is None or bool(self.sub.done())

    def result(self) -> dict[str, Any]:
        assert self.sub is not None
        try:
            return dict(self.sub.result())
        except Exception as e:  # noqa: BLE001 - the process died before it could return its row
            return {"status": "failed", "error": cause(e), "log": str(self.job.run_dir / "log.txt")}

    def _signal(self, sig: signal.Signals) -> None:
        if self.sub is not None and not self.finished():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(self.sub.job_id), sig)  # a local job's id is its controller's pid

    def stop(self) -> None:
        self._signal(signal.SIGTERM)  # the controller passes it on to the job's process

    def kill(self) -> None:
        self._signal(signal.SIGKILL)  # the job's process then stops by itself: its runner watch sees us gone


# ----------------------------------------------------------------------------------------------------------------------
# The pool.


def pick(pending: list[Job], status: dict[str, str]) -> tuple[Job, IO[str]] | None:
    """The next job this runner takes, with its run folder's lock: the first of ``pending`` (graph order) whose
    dependencies are done and whose lock it gets without waiting; None while every such job is another runner's."""
    for job in pending:
        if all(status.get(d.key) == "done" for d in job.deps.values()):
            lock = runfolder.try_lock(job.run_dir)
            if lock is not None:
                return job, lock
    return None


def _stop(running: list[Worker]) -> None:
    """Stop the running workers (SIGTERM, SIGKILL after GRACE seconds) and release their locks."""
    for w in running:
        w.stop()
    deadline = time.time() + GRACE
    while time.time() < deadline and not all(w.finished() for w in running):
        time.sleep(POLL)
    for w in running:
        w.kill()
        runfolder.unlock(w.lock)


def starter(cfg: Config, n: int, ctx: Any) -> Callable[[Job, IO[str]], Worker]:
    """How the pool runs a job: through submitit (launcher=local), in a forked worker (``ctx``, the forkserver), or
    here (one worker)."""
    if cfg.launcher == "local":
        executor = submitit.LocalExecutor(folder=Path(cfg.runs_dir) / cfg.preset / "_submitit")
        executor.update_parameters(timeout_min=cfg.slurm.timeout_min)
        return lambda job, lock: Submitted(job, lock, executor)
    if n > 1:
        assert ctx is not None, "the forkserver is started for more than one worker"
        return lambda job, lock: Forked(job, lock, ctx)
    return Worker


def run_pool(cfg: Config, g: Graph, todo: list[Job], code: str) -> list[dict[str, Any]]:
    """Run ``todo`` (the graph's jobs that are not done) on this machine; return one status row per job. A failed
    job's dependents are skipped; every other job runs. A signal stops the workers and the forkserver."""
    try:
        return _run_pool(cfg, g, todo, code)
    except BaseException:
        stop_forkserver()
        raise


def _run_pool(cfg: Config, g: Graph, todo: list[Job], code: str) -> list[dict[str, Any]]:
    could = min(len(todo), cfg.workers or (1 if on_gpu(cfg) else by_cores(cfg)[0]))
    ctx = fork_context() if cfg.launcher == "inprocess" and could > 1 else None  # its imports overlap the estimate
    n, why = workers(cfg, todo, estimate=False) if todo else (1, "")
    board = Board(len(g.jobs), len(g.jobs) - len(todo))
    board.show(f"{len(todo)} job(s) to run, {len(g.jobs) - len(todo)} already done" +
               (f"; workers: {n} ({why})" if todo else ""))
    start = starter(cfg, min(n, len(todo)), ctx)
    status = {j.key: "done" for j in g if g.done(j)}
    pending, rows = list(todo), []
    running: dict[str, Worker] = {}

    def record(job: Job, result: dict[str, Any]) -> None:
        status[job.key] = result["status"]
        rows.append({"job": job.name, **result})
        if result["status"] == "done":
            board.done += 1
            board.show(f"done    {job.name}")
            return
        board.failed += 1
        board.show(f"FAILED  {job.name}: {result['error']} (log: {result['log']})")
        damaged = [d for d in job.deps.values() if status.get(d.key) == "done" and not g.done(d)]  # set aside
        for failed in [job, *damaged]:
            status[failed.key] = "failed"
            why = "failed" if failed is job else "was damaged and set aside (the next run recomputes it)"
            for dependent in [j for j in pending if j.needs(failed)]:
                pending.remove(dependent)
                status[dependent.key] = "skipped"
                board.show(f"skipped {dependent.name}: it needs {failed.name}, which {why}")
                rows.append({"job": dependent.name, "status": "skipped", "error": f"{failed.name} {why}"})

    try:
        while pending or running:
            for key in [k for k, w in running.items() if w.finished()]:
                w = running.pop(key)
                result = w.result()
                runfolder.unlock(w.lock)
                board.remove(w.job.name)
                record(w.job, result)
            while len(running) < n and (picked := pick(pending, status)):
                job, lock = picked
                pending.remove(job)
                if g.done(job):  # another runner finished it
                    runfolder.unlock(lock)
                    status[job.key] = "done"
                    board.done += 1
                    board.show(f"done    {job.name} (by another runner)")
                    continue
                try:
                    prepare(job, code)
                except (RuntimeError, ValueError, OSError) as e:
                    runfolder.unlock(lock)
                    record(job, {"status": "failed", "error": str(e), "log": str(job.run_dir / "log.txt")})
                    continue
                board.show(f"running {job.name}")
                board.add(job.name, job.run_dir / "log.txt")
                running[job.key] = worker = start(job, lock)
                worker.start()
            waiting = pending[0] if pending and not running else None
            board.note = (f"waiting for {runfolder.holder(waiting.run_dir)}, another runner, writing {waiting.name}"
                          if waiting else "")
            if not any(w.finished() for w in running.values()):
                time.sleep(POLL)
    finally:
        _stop(list(running.values()))
        board.close()
    return rows
