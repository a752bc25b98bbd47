"""What a launcher runs for one job: its config.json, written before it starts (:func:`prepare`), and the callable
(:class:`JobCall`) that runs it in whichever process the launcher chose; and how that process stops on a signal.

Signals: the runner turns SIGTERM into :class:`Stopped`, a KeyboardInterrupt, so that Ctrl-C and SIGTERM unwind
alike (temporary files removed, locks released). A job in a process of its own (a local worker) leaves Ctrl-C to
its runner, which stops it with SIGTERM, and stops by itself once its runner is gone: no job outlives the runner that
holds its run folder's lock.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import submitit

from ablations.engine.io import write_json
from ablations.engine.runfolder import reopen, set_aside, spec_problems
from ablations.graph import Job


class Stopped(KeyboardInterrupt):
    """SIGTERM asked this process to stop; handled as Ctrl-C is."""


def raise_stopped(signum: int, frame: Any) -> None:
    """The SIGTERM handler of the runner and of its workers."""
    raise Stopped(signal.Signals(signum).name)


def runner_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie, killed but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def worker_process(runner: int) -> None:
    """Set up a job's own process: Ctrl-C ignored (the runner decides and sends SIGTERM), SIGTERM raises
    :class:`Stopped`, and a watcher sends this process SIGTERM once ``runner`` (a pid) is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, raise_stopped)

    def watch() -> None:
        while runner_alive(runner):
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()


class JobCall(submitit.helpers.Checkpointable):
    """The callable submitted for one job; on preemption/timeout submitit requeues it with the same arguments."""

    def __call__(self, run_dir: str, catch: bool, runner: int = 0) -> dict[str, Any]:
        """Run the job of ``run_dir``; ``catch``: a failure is returned as a status row (its traceback appended to
        the job's log) instead of raised; ``runner``: the pid of the local runner that holds the run folder's lock
        for this job (0: the job takes the lock itself, as on SLURM)."""
        own = bool(runner) and runner != os.getpid()  # a worker process, not the runner itself
        if own:
            worker_process(runner)
        if "SLURM_JOB_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        try:
            from ablations.engine import jobs  # imported in the job's process

            return {"status": "done", "metrics": jobs.run(run_dir, held=bool(runner))}
        except KeyboardInterrupt:
            if not own:
                raise
            return {"status": "stopped"}  # the runner stopped this worker: it reports the stop itself
        except Exception as e:  # noqa: BLE001 - reported with the log path, never swallowed silently
            if not catch:
                raise
            log = Path(run_dir) / "log.txt"
            with contextlib.suppress(OSError):  # a full or read-only disk: the one-line error still reaches the user
                with open(log, "a") as fh:
                    fh.write(traceback.format_exc())
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            return {"status": "failed", "error": f"{type(e).__name__}: {first}", "log": str(log)}


def cause(e: BaseException) -> str:
    """The line of a failed job's trace that names the error (its last 'Type: message' line), shortened."""
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    named = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Interrupt)\b.*:", line)]
    return (named or lines or [type(e).__name__])[-1][:240]


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
