"""The paper's configuration rehearsed end to end: ``preset=rehearsal`` (imagenet256 with its sizes cut, on CPUs) of the
main sweep through a real SLURM cluster, every input a stand-in in its real format (tests/_rehearsal.py). CI starts a
one-node cluster (.ci/slurm-up) and runs this with ``pytest -m rehearsal``; it skips where there is no sbatch.

Checked: every job finishes; trainings ran as 2 SLURM tasks (DDP over gloo) in bf16 autocast, the cache as a job
array of 2 parts decoding JPEGs in worker processes, the eval points as a job array; both floors (real images, and
real images through the VAE) were scored; every job recorded the device, dtype and world size it was configured with;
samples were written in ADM's npz format; the report was built, says that its Inception features come from random
weights, and states the autoencoder's margin.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _rehearsal import make_inputs

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.rehearsal, pytest.mark.slurm,
              pytest.mark.skipif(shutil.which("sbatch") is None, reason="needs a SLURM cluster (sbatch on PATH)")]


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    root = tmp_path_factory.mktemp("rehearsal")
    keys = make_inputs(root / "inputs")
    cmd = [sys.executable, str(ROOT / "ablations" / "run.py"), "sweep=main", "preset=rehearsal", *keys,
           f"runs_dir={root / 'runs'}"]
    dry = subprocess.run([*cmd, "--dry-run"], capture_output=True, text=True, cwd=root, timeout=600)
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=root, timeout=3000)
    return root / "runs" / "rehearsal", dry, r


def metrics(runs: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in runs.glob("*/metrics.json")}


def test_every_job_of_the_paper_path_finishes(rehearsal):
    runs, dry, r = rehearsal
    assert dry.returncode == 0 and "cluster plan:" in dry.stdout and "GPU-hours" in dry.stdout, dry.stdout[-2000:]
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    kinds = {m["kind"] for m in metrics(runs).values()}
    assert kinds == {"cache", "train", "sample", "score"}
    assert re.search(r"submitted 4 cache job\(s\) as array", r.stdout) and "sample job(s) as array" in r.stdout


def test_jobs_ran_as_configured(rehearsal):
    runs, _, _ = rehearsal
    for name, m in metrics(runs).items():
        if m["kind"] == "train" and m["steps"]:
            assert (m["device"], m["dtype"], m["world_size"]) == ("cpu", "bfloat16", 2), name
        if m["kind"] == "sample":
            assert m["device"].startswith("cpu") and m["dtype"] == "float32" and m["world_size"] == 1, name
        if m["kind"] == "score":
            assert m["world"] == "inception" and m["feature_extractor"].startswith("inception-v3-compat@"), name
            assert m["reference"] == "adm/VIRTUAL_imagenet256_labeled", name
        if m["kind"] == "cache":
            assert m["device"].startswith("cpu") and m["items"] == 2 * 24, name  # half of 48 JPEGs, flipped
    models = {m["model"] for m in metrics(runs).values() if m["kind"] == "score"}
    assert models == {"msf", "dit_flow", "dimr", "dit_xl2", "real", "reconstructed"}  # with both floors


def test_samples_are_written_in_adms_format(rehearsal):
    runs, _, _ = rehearsal
    (npz,) = list(runs.glob("sample-dit_xl2-*/samples.npz"))
    with np.load(npz, allow_pickle=False) as z:
        assert z["arr_0"].dtype == np.uint8 and z["arr_0"].shape == (16, 256, 256, 3)


def test_the_report_is_built_and_labelled(rehearsal):
    runs, _, _ = rehearsal
    report = (runs / "reports" / "main" / "report.md").read_text()
    assert "Table 1" in report and "not the official Inception weights" in report
    assert "FID(autoencoder floor) - FID(real floor)" in report  # the SD VAE's floor, rehearsed
