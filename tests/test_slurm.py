"""launcher=slurm against a real SLURM cluster (CI starts a one-node cluster with .ci/slurm-up and runs
`pytest -m slurm`; skipped without sbatch).

Covers: the smoke graph through submitit's AutoExecutor with afterok dependencies and the eval points as one job
array, and a training job requeued mid-run (scontrol requeue) that resumes from its checkpoint and ends with weights
identical to an uninterrupted run.
"""

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(shutil.which("sbatch") is None, reason="needs a SLURM cluster (sbatch on PATH)"),
]

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["sweep=cfg_scale1", "preset=smoke", "cpu_threads=1", "sample.steps=[3,2]", "slurm.gpus_per_node=0",
          "slurm.cpus_per_task=1", "slurm.mem_gb=2", "slurm.timeout_min=20"]


def runner(runs: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "ablations" / "run.py"), *COMMON, f"runs_dir={runs}", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=runs.parent)


def test_smoke_graph_on_slurm_with_array_and_requeued_training(tmp_path):
    long_train = ["msf.steps=[1500,4]", "train.ckpt_every=50"]
    proc = runner(tmp_path / "slurm", "launcher=slurm", *long_train)
    out, job = [], None
    assert proc.stdout is not None
    for line in proc.stdout:  # read until the stage-0 training job is submitted
        out.append(line)
        m = re.search(r"submitted (train-msf-\S+-s0-\S+) as job (\d+)", line)
        if m:
            run_dir, job = tmp_path / "slurm" / "smoke" / m.group(1), m.group(2)
            break
    assert job is not None, "".join(out)
    deadline = time.time() + 600
    stats = run_dir / "stats.jsonl"
    while time.time() < deadline:  # wait until the training is well under way, then requeue it
        lines = stats.read_text().splitlines() if stats.exists() else []
        if lines and json.loads(lines[-1])["step"] >= 300:
            break
        time.sleep(0.2)
    else:
        pytest.fail("training never reached step 300:\n" + "".join(out))
    subprocess.run(["scontrol", "requeue", job], check=True)  # SIGTERM, then SIGKILL after KillWait (2 s in CI)
    for _ in range(60):  # once the killed job is pending again, skip SLURM's requeue delay
        time.sleep(0.5)
        if subprocess.run(["scontrol", "update", f"JobId={job}", "BeginTime=now"], capture_output=True).returncode == 0:
            break
    rest, _ = proc.communicate(timeout=900)
    out.append(rest)
    text = "".join(out)
    assert proc.returncode == 0, text[-4000:]
    assert re.search(r"submitted \d+ sample job\(s\) as array \d+", text), text[-2000:]  # one per trained model
    log = (run_dir / "log.txt").read_text()
    assert "resumed from" in log, log[-2000:]  # the requeued job picked up its checkpoint

    # the uninterrupted twin: same autoencoder and cache (copied), stage 0 retrained in one go, in process
    twin_root = tmp_path / "twin"
    shutil.copytree(tmp_path / "slurm", twin_root)
    shutil.rmtree(twin_root / "smoke" / run_dir.name)
    for evaluated in (twin_root / "smoke").glob("eval-*"):
        shutil.rmtree(evaluated)
    local = subprocess.run([sys.executable, str(ROOT / "ablations" / "run.py"), *COMMON,
                            f"runs_dir={twin_root}", "launcher=inprocess", *long_train],
                           capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert local.returncode == 0, local.stdout[-3000:]
    twin = twin_root / "smoke" / run_dir.name
    assert "resumed from" not in (twin / "log.txt").read_text()
    assert (twin / "ema.safetensors").read_bytes() == (run_dir / "ema.safetensors").read_bytes()
