"""Helper of tests/test_slurm_mock.py: a fake SLURM controller. ``python _fake_slurm.py STATE_DIR COMMAND ARGS...``
answers as ``sbatch``, ``sacct`` or ``scancel`` would, keeping the cluster in STATE_DIR/state.json; ``srun`` only
exists (submitit's SLURM executor looks for it on PATH) and refuses to run outside a job.

Time is counted in rounds: STATE_DIR/now holds the round (the test's clock advances it while the launcher sleeps
between its checks), and the cluster catches up with it at each command. Jobs take no time: a job starts as soon as
nothing holds it and ends at once, as STATE_DIR/plan.json says; its keys are ``NAME#N`` (the N-th submission named
NAME, from 0) or ``NAME#N_I`` (task I of that array), its values one of:

- ``ok`` (the default): every task writes submitit's result file; sacct says COMPLETED;
- ``error``: the call raised; every task's result file holds the trace (as submitit writes it); FAILED;
- ``oom``: killed without a result; the job's stderr says why (as slurmstepd writes it); OUT_OF_MEMORY;
- ``requeue``: preempted and requeued under the same job id: RUNNING, PREEMPTED, REQUEUED, PENDING, RUNNING, one
  state per round, then the job ends as ``ok``.

``"sacct": "disabled"`` in the plan is a cluster without accounting: sacct exits 1.
Dependencies: ``afterok:ID[:ID...]`` only, where ID is a job, a whole array or an array task (``ID_I``) submitted
before (else sbatch fails, as SLURM does). A job whose dependency failed stays PENDING until it is cancelled
(DependencyNeverSatisfied, SLURM's default without ``kill_invalid_depend``).

state.json: ``now``, ``jobs`` (by id: name, dependencies, state, outcome, tasks, when it started and ended, counted in
calls), ``submissions`` (id, name, options, job ids, script) and ``calls`` (every command with its arguments; sacct's
with the states it answered).
"""

from __future__ import annotations

import json
import pickle
import re
import shlex
import sys
from pathlib import Path
from typing import Any

REQUEUE = ["RUNNING", "PREEMPTED", "REQUEUED", "PENDING", "RUNNING"]
BROKEN = {"FAILED", "OUT_OF_MEMORY", "CANCELLED", "TIMEOUT"}
TRACE = """Traceback (most recent call last):
  File "ablations/engine/jobs.py", line 1, in run
    raise FloatingPointError(f"loss is nan at step 3 (job {job})")
FloatingPointError: loss is nan at step 3 (job {job})
"""


def options(script: str, argv: list[str]) -> dict[str, str]:
    """The options of a submission: the script's ``#SBATCH`` lines, then the command line's (a flag: "")."""
    words = [w for line in script.splitlines() if line.startswith("#SBATCH ") for w in shlex.split(line[8:])]
    out = {}
    for word in words + [a for a in argv if a.startswith("--")]:
        key, _, value = word[2:].partition("=")
        out[key] = value
    return out


def tasks_of(state: dict[str, Any], ref: str) -> list[dict[str, Any]]:
    """The jobs an id names: a job, every task of an array, or one array task."""
    return [j for jid, j in state["jobs"].items() if jid == ref or jid.split("_")[0] == ref]


def held(state: dict[str, Any], job: dict[str, Any]) -> str:
    """'' when the job may start, 'wait' while a dependency runs, 'never' once one failed."""
    states = [t["state"] for ref in job["deps"] for t in tasks_of(state, ref)]
    if any(s in BROKEN for s in states):
        return "never"
    return "wait" if any(s != "COMPLETED" for s in states) else ""


def finish(state: dict[str, Any], job: dict[str, Any], outcome: str) -> None:
    """End a job as its outcome says, writing what submitit's job process (or slurmstepd) would."""
    job["ended"] = len(state["calls"])
    if outcome == "oom":
        with open(job["stderr"], "a") as f:
            f.write(f"slurmstepd: error: Detected 1 oom_kill event in StepId={job['id']}.batch. Some of the step "
                    "tasks have been OOM Killed.\n")
        job["state"] = "OUT_OF_MEMORY"
        return
    done = ("success", {"status": "done", "metrics": {}})
    result = done if outcome == "ok" else ("error", TRACE.format(job=job["id"]))
    for task in range(job["tasks"]):
        with open(Path(job["folder"]) / f"{job['id']}_{task}_result.pkl", "wb") as f:
            pickle.dump(result, f)
    job["state"] = "COMPLETED" if outcome == "ok" else "FAILED"


def schedule(state: dict[str, Any]) -> None:
    """Start every job that nothing holds, until none is left to start (an ending job frees its dependents)."""
    started = True
    while started:
        started = False
        for job in state["jobs"].values():
            if job["state"] == "PENDING" and job["started"] is None and not held(state, job):
                started = True
                job["started"] = len(state["calls"])
                if job["outcome"] == "requeue":
                    job["state"], job["later"] = REQUEUE[0], REQUEUE[1:]
                else:
                    finish(state, job, job["outcome"])


def tick(state: dict[str, Any]) -> None:
    """A round passes: a requeued job moves on by one state (and ends after the last) unless it was cancelled."""
    for job in state["jobs"].values():
        if "later" not in job or job["state"] in BROKEN | {"COMPLETED"}:
            continue
        if job["later"]:
            job["state"] = job["later"].pop(0)
        else:
            finish(state, job, "ok")
    schedule(state)


def sbatch(state: dict[str, Any], plan: dict[str, str], argv: list[str]) -> int:
    path = next(a for a in argv if not a.startswith("--"))
    script = Path(path).read_text()
    opts = options(script, argv)
    deps = []
    if "dependency" in opts:
        if not re.fullmatch(r"afterok(:\d+(_\d+)?)+", opts["dependency"]):
            print(f"sbatch: error: fake sbatch takes afterok only, got {opts['dependency']!r}", file=sys.stderr)
            return 1
        deps = opts["dependency"].split(":")[1:]
        if any(not tasks_of(state, ref) for ref in deps):
            print("sbatch: error: Batch job submission failed: Job dependency problem", file=sys.stderr)
            return 1
    indices: list[int | None] = [None]
    if "array" in opts:
        m = re.fullmatch(r"(\d+)-(\d+)(%\d+)?", opts["array"])
        if not m:
            print(f"sbatch: error: fake sbatch cannot read --array={opts['array']}", file=sys.stderr)
            return 1
        indices = list(range(int(m[1]), int(m[2]) + 1))
    command = next(line for line in script.splitlines() if "submitit.core._submit" in line)
    folder = shlex.split(command)[-1]
    number, name = state["next"], opts.get("job-name", "sbatch")
    state["next"] += 1
    nth = sum(s["name"] == name for s in state["submissions"])
    ids = []
    for i in indices:
        jid = str(number) if i is None else f"{number}_{i}"
        stderr = opts.get("error", "").replace("%A", str(number)).replace("%a", str(i)).replace("%j", jid)
        state["jobs"][jid] = {
            "id": jid, "name": name, "deps": deps, "state": "PENDING", "started": None, "ended": None,
            "outcome": plan.get(f"{name}#{nth}" if i is None else f"{name}#{nth}_{i}", "ok"), "folder": folder,
            "stderr": stderr, "tasks": int(opts.get("nodes", 1)) * int(opts.get("ntasks-per-node", 1)),
        }
        ids.append(jid)
    state["submissions"].append({"id": str(number), "name": name, "options": opts, "jobs": ids, "script": script})
    schedule(state)
    print(f"Submitted batch job {number}")
    return 0


def sacct(state: dict[str, Any], plan: dict[str, str], argv: list[str]) -> int:
    if plan.get("sacct") == "disabled":
        print("sacct: error: Slurm accounting storage is disabled", file=sys.stderr)
        return 1
    refs = [argv[i + 1] for i, a in enumerate(argv) if a == "-j"]
    answer = {j["id"]: j["state"] for ref in refs for j in tasks_of(state, ref)}
    state["calls"][-1]["answer"] = answer
    print("JobID|State|NodeList")
    for jid, s in answer.items():
        print(f"{jid}|{s}|{'None assigned' if s == 'PENDING' else 'node1'}")
        if s == "COMPLETED":
            print(f"{jid}.batch|{s}|node1")
    return 0


def scancel(state: dict[str, Any], plan: dict[str, str], argv: list[str]) -> int:
    for ref in [a for a in argv if not a.startswith("-")]:
        for job in tasks_of(state, ref):
            if job["state"] not in BROKEN | {"COMPLETED"}:
                job["state"], job["ended"] = "CANCELLED", len(state["calls"])
    return 0


def srun(state: dict[str, Any], plan: dict[str, str], argv: list[str]) -> int:
    print("srun: error: fake srun runs no job steps", file=sys.stderr)
    return 1


def main() -> int:
    root, command, argv = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    path = root / "state.json"
    state = json.loads(path.read_text()) if path.exists() else {"now": 0, "next": 1000, "jobs": {},
                                                                 "submissions": [], "calls": []}
    plan = json.loads((root / "plan.json").read_text()) if (root / "plan.json").exists() else {}
    state["calls"].append({"command": command, "args": argv})
    now = int((root / "now").read_text()) if (root / "now").exists() else 0
    while state["now"] < now:
        state["now"] += 1
        tick(state)
    code = {"sbatch": sbatch, "sacct": sacct, "scancel": scancel, "srun": srun}[command](state, plan, argv)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(path)
    return code


if __name__ == "__main__":
    sys.exit(main())
