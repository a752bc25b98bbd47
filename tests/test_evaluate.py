"""Evaluation gives a real signal: a trained embedded model scores far better than an untrained one (issue 6)."""

import json
import subprocess
import sys
from pathlib import Path

import torch

from msf.evaluate import sample_seeds, sampling_gflops

ROOT = Path(__file__).resolve().parents[1]


def eval_fid(runs: Path, train_steps: str) -> float:
    r = subprocess.run(
        [sys.executable, str(ROOT / "ablations" / "run.py"), "sweep=cfg_scale0", "preset=smoke", "cpu_threads=1",
         f"runs_dir={runs}", f"train.steps={train_steps}", "sample.steps=[20,10]", "eval.n_samples=128",
         "eval.classifier_steps=150", "eval.batch_size=64", "data.train_size=2048", "data.ref_size=256",
         "autoencoder.steps=300"],
        capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    fids = [json.loads(p.read_text()) for p in runs.glob("smoke/eval-*cfg1.4_1.0*/metrics.json")]
    assert len(fids) == 1
    return fids[0]["fid"]


def test_trained_model_is_far_better_than_untrained(tmp_path):
    untrained = eval_fid(tmp_path / "untrained", "[1,1]")
    trained = eval_fid(tmp_path / "trained", "[600,300]")
    # A usable autoencoder (300 steps) so that decoded samples can differ at all. Both FIDs use the same classifier features and reference set (same keys), so they are comparable; an untrained
    # adaLN-zero DiT outputs ~zero velocity, i.e. decoded noise. Demand a factor 2, far outside seed noise.
    assert trained < 0.5 * untrained, (trained, untrained)


def test_per_sample_seeds_and_gflops_bookkeeping():
    assert sample_seeds(2, 3) == [2_000_000, 2_000_001, 2_000_002]
    # CFG doubles the forward passes, w = 1 does not; Heun doubles every step (Table 1: 100 x 2 + 50 x 1)
    assert sampling_gflops([10.0, 20.0], [100, 50], [1.4, 1.0], "euler") == 10 * 100 * 2 + 20 * 50
    assert sampling_gflops([10.0], [10], [1.0], "heun") == 200
    assert torch.tensor(sample_seeds(0, 5)).unique().numel() == 5
