"""The run-folder protocol: a run folder proves what it holds. Its ``config.json`` hashes to the key its name
ends with, and its job's outputs are recorded with their sizes and hashes in ``metrics.json``, so that a hand-edited
spec or a damaged output (a truncated checkpoint, a lost file) is noticed before anything trusts it.

A run folder ``KIND-LABEL-KEY`` holds ``config.json`` (written before the job starts: kind, name, key, results
version, spec, dependencies), ``log.txt``, the job's outputs and ``metrics.json`` (written last, atomically).
``metrics.json["outputs"]`` maps every output file (relative path) to its size and, for files up to
``HASHED_UP_TO`` bytes and the saved samples, its SHA-256. :func:`problems` is the one check that planning, the
runner and the reports share: sizes when planning (cheap, every command), hashes when a job loads a dependency's
files. No torch here: the runner plans with it and the reports read with it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ablations.engine.io import file_sha256, read_json

HASHED_UP_TO = 256 << 20  # larger outputs (a target cache's shards) are checked by size only
ALWAYS_HASHED = {"samples.npz"}  # the images a score job scores: hashed whatever their size
REQUIRED = {  # outputs without which a finished job of a kind is damaged, whatever its metrics.json says
    "autoencoder": ("autoencoder/diffusion_pytorch_model.safetensors",),
    "train": ("ema.safetensors", "model.json"),
    "sample": ("samples.npz",),
}
BOOKKEEPING = {"config.json", "log.txt", "metrics.json", ".lock", "diverged.json"}
SKIPPED_DIRS = {"checkpoints"}  # intermediate: a training job checks its own checkpoints when it resumes
# the anchors of every table as a sample run records them (metrics.json "anchor"): held-out real images (the floor),
# the same images through the run's autoencoder (the autoencoder's floor), the method's stages untrained (the ceiling)
REAL_FLOOR, AUTOENCODER_FLOOR, CEILING = "real", "autoencoder", "untrained"


def output_files(run_dir: Path) -> list[Path]:
    """The job's output files: everything in the folder but bookkeeping, checkpoints and temporary files."""
    files = []
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir)
        if not path.is_file() or rel.parts[0] in SKIPPED_DIRS or rel.name in BOOKKEEPING or ".tmp" in rel.name:
            continue
        if ".damaged-" in rel.name:  # an earlier run's record kept aside
            continue
        files.append(path)
    return files


def record_outputs(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Sizes and SHA-256 (up to HASHED_UP_TO bytes) of the job's output files, for metrics.json."""
    out: dict[str, dict[str, Any]] = {}
    for path in output_files(run_dir):
        size = path.stat().st_size
        entry: dict[str, Any] = {"size": size}
        if size <= HASHED_UP_TO or path.name in ALWAYS_HASHED:
            entry["sha256"] = file_sha256(path)
        out[str(path.relative_to(run_dir))] = entry
    return out


def key_of(record: dict[str, Any]) -> str:
    """The run key a config.json record names: 8 hex digits of the SHA-256 of its kind, results version, spec and
    dependencies (the folder names of its dependencies, by role)."""
    content = {k: record.get(k) for k in ("kind", "results_version", "spec", "deps")}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:8]


def spec_problems(run_dir: Path) -> list[str]:
    """What is wrong with a run folder's config.json: missing, unreadable, or not hashing to the key its name ends
    with (a hand-edited spec); [] when it proves what it holds."""
    path = run_dir / "config.json"
    try:
        record = read_json(path)
    except (OSError, ValueError) as e:
        return [f"{path} cannot be read ({e})"]
    if not isinstance(record, dict) or not {"kind", "name", "key", "spec", "deps"} <= set(record):
        return [f"{path} is not a run record (kind, name, key, spec, deps)"]
    key = key_of(record)
    if key != record["key"] or record["name"] != run_dir.name or not run_dir.name.endswith(f"-{key}"):
        return [f"{path} does not hash to the key of {run_dir.name} (edited by hand?)"]
    return []


def output_problems(run_dir: Path, hashes: bool = False) -> list[str]:
    """What is wrong with a finished job's recorded outputs: an unreadable metrics.json, an output its kind needs
    that was not recorded, missing files, other sizes, other hashes (with ``hashes``); [] when intact."""
    try:
        metrics = read_json(run_dir / "metrics.json")
        recorded = metrics["outputs"]
        kind = read_json(run_dir / "config.json").get("kind")
        if not isinstance(recorded, dict):
            raise ValueError("its outputs are not a mapping")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return [f"{run_dir / 'metrics.json'} is not a finished job's record ({e})"]
    problems = [f"{run_dir / rel} was not recorded as an output" for rel in REQUIRED.get(str(kind), ())
                if rel not in recorded]
    for rel, entry in recorded.items():
        path = run_dir / rel
        if not path.is_file():
            problems.append(f"{path} is missing")
        elif path.stat().st_size != entry["size"]:
            problems.append(f"{path} has {path.stat().st_size} bytes, {entry['size']} were written")
        elif hashes and "sha256" in entry and file_sha256(path) != entry["sha256"]:
            problems.append(f"{path} differs from what was written (sha256)")
    return problems


def problems(run_dir: Path, hashes: bool = False) -> list[str]:
    """Everything wrong with a finished run folder (:func:`spec_problems`, then :func:`output_problems`)."""
    return spec_problems(run_dir) or output_problems(run_dir, hashes)


def done(run_dir: Path) -> bool:
    """A job is done when its metrics.json exists, its config.json hashes to its key and its recorded outputs are
    intact (sizes)."""
    return (run_dir / "metrics.json").is_file() and not problems(run_dir)


def set_aside(path: Path) -> Path:
    """Keep a damaged file as ``NAME.damaged-N`` (the first free N) and return where it went."""
    n = 1
    while path.with_name(f"{path.name}.damaged-{n}").exists():
        n += 1
    target = path.with_name(f"{path.name}.damaged-{n}")
    os.replace(path, target)
    return target


def reopen(run_dir: Path) -> Path:
    """Set a damaged job's metrics.json aside (kept as metrics.json.damaged-N) so that the job runs again."""
    return set_aside(run_dir / "metrics.json")


class JobLocked(RuntimeError):
    """Another runner is writing this run folder right now."""


def _stamp(fh: IO[str]) -> None:
    """Write who holds a run folder's lock into its lock file (what a waiting runner shows)."""
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    fh.flush()


def holder(run_dir: Path) -> str:
    """Who holds the run folder's lock, as its lock file says ("another process" when it says nothing)."""
    try:
        return (run_dir / ".lock").read_text().strip() or "another process"
    except OSError:
        return "another process"


def try_lock(run_dir: Path) -> IO[str] | None:
    """Take the run folder's lock unless another runner holds it, without waiting: choosing a job and locking it is
    one step. Returns the open lock file, which holds the lock until :func:`unlock` (or this process's exit, and
    that of every process given this open file), or None when the lock is held elsewhere."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fh = open(run_dir / ".lock", "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    _stamp(fh)
    return fh


def unlock(fh: IO[str]) -> None:
    """Release a lock taken with :func:`try_lock`."""
    with contextlib.suppress(OSError, ValueError):  # a full disk or an already closed file: the lock goes anyway
        fh.seek(0)
        fh.truncate()
    fh.close()


def holds(fd: int, run_dir: Path) -> bool:
    """Whether the open file ``fd`` is the run folder's lock file and holds its lock: a job's process checks so the
    lock its runner took and handed over (flock locks belong to the open file, which a child process can share)."""
    try:
        mine, there = os.fstat(fd), os.stat(run_dir / ".lock")
        if (mine.st_dev, mine.st_ino) != (there.st_dev, there.st_ino):
            return False
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a no-op on the open file that holds it; fails elsewhere
    except OSError:
        return False
    return True


@contextlib.contextmanager
def job_lock(run_dir: Path, wait: bool = True, on_wait: Any = None) -> Iterator[None]:
    """An exclusive lock on a run folder, held by the process running its job.

    Args:
        wait: block until the other runner releases it (else raise JobLocked at once).
        on_wait: called with a message once, before blocking.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            who = fh.read().strip() or "another process"
            if not wait:
                raise JobLocked(f"{run_dir} is being written by another runner ({who})") from None
            if on_wait is not None:
                on_wait(f"waiting for another runner ({who}) to finish {run_dir.name}")
            fcntl.flock(fh, fcntl.LOCK_EX)
        _stamp(fh)
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)
