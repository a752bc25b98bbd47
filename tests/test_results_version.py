"""Run keys follow the code (ablations/engine/specs.py RESULTS_VERSION): every kind of job runs on a fixed smoke input
and its outputs must equal the fingerprint recorded for its results version, so code that changes what a job computes
cannot reuse run folders of older code without bumping that kind's version.

When this test fails because a change was meant to change results: bump ``RESULTS_VERSION[kind]`` and record the new
outputs with ``python tests/test_results_version.py`` (the file tests/results_fingerprints.json is rewritten).

Tolerance: relative 2e-3. The same code on another CPU kernel path (``ATEN_CPU_CAPABILITY=default`` vs ``avx2``,
measured) moves these numbers by at most 1.1e-5 relative (six training steps, 32 samples); a change of the method,
a recipe or an initialisation moves them by far more. The small autoencoder is trained for 10 steps on purpose: the
kernel paths' trajectories part as its training goes on (measured: 1.4e-3 at 50 steps, 1.8e-2 at 200), and its
reconstructions are then too poor to show the samples' differences, so the main sweep decodes with the committed one.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FINGERPRINTS = Path(__file__).with_name("results_fingerprints.json")
REL = 2e-3
VALUES = {  # metrics.json keys fingerprinted per kind (deterministic outputs; never timings)
    "autoencoder": ("psnr_ref_db",),
    "cache": ("items", "target_rms"),
    "train": ("final_loss", "final_loss_ema100", "params_m"),
    "sample": ("params_m", "gflops_per_image"),  # the images themselves show in their scores
    "score": ("fid", "is_mean"),  # not precision/recall: counts of 32, one flip = 3%
    "recon": ("psnr_per_scale",),
    "speed": ("tflops_per_image", "gflops_per_forward", "params_m"),
}


def smoke_outputs(runs: Path) -> dict[str, dict[str, dict[str, object]]]:
    """Run every kind of job on the smoke preset (the main sweep on its committed autoencoder, the factorization
    sweep's reconstructions on a small autoencoder trained for 10 steps, the speed sweep) and collect the fingerprinted
    values by kind and job label."""
    sys.path.insert(0, str(ROOT))
    from ablations.config import resolve
    from ablations.graph import plan
    from ablations.launch import run_graph

    trained_ae = [("autoencoder.kind", "small_kl"), ("autoencoder.steps", "10")]
    for sweep, keep, extra in (("main", None, []), ("factorization", "recon", trained_ae), ("speed", None, [])):
        cfg, sw = resolve([("sweep", sweep), ("preset", "smoke"), ("runs_dir", str(runs)), *extra])
        g = plan(cfg, sw)
        if keep:
            g.jobs = {k: j for k, j in g.jobs.items() if j.kind in (keep, "autoencoder")}
        assert all(r["status"] == "done" for r in run_graph(cfg, g))
    out: dict[str, dict[str, dict[str, object]]] = {kind: {} for kind in VALUES}
    for metrics in sorted((runs / "smoke").glob("*/metrics.json")):
        m = json.loads(metrics.read_text())
        label = metrics.parent.name.rsplit("-", 1)[0]  # the folder name without its key
        out[m["kind"]][label] = {k: m[k] for k in VALUES[m["kind"]]}
    return out


def close(a: object, b: object) -> bool:
    """Equal within REL (numbers, recursively in dicts and lists), exactly otherwise."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=REL, abs_tol=1e-9)
    return a == b


def test_close_compares_numbers_within_the_tolerance_at_every_depth():
    recorded = {"fid": 100.0, "target_rms": [1.0, 0.5], "items": 512}
    assert close({"fid": 100.0 * (1 + REL / 2), "target_rms": [1.0, 0.5 * (1 - REL / 2)], "items": 512}, recorded)
    assert not close({"fid": 100.0 * (1 + 2 * REL), "target_rms": [1.0, 0.5], "items": 512}, recorded)
    assert not close({"fid": 100.0, "target_rms": [1.0, 0.5 * (1 + 2 * REL)], "items": 512}, recorded)
    assert not close({"fid": 100.0, "target_rms": [1.0, 0.5]}, recorded)  # a value missing


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    return smoke_outputs(tmp_path_factory.mktemp("fingerprint"))


@pytest.mark.numeric
@pytest.mark.parametrize("kind", sorted(VALUES))
def test_outputs_match_the_results_version(kind, outputs):
    from ablations.engine.specs import RESULTS_VERSION

    recorded = json.loads(FINGERPRINTS.read_text())[kind]
    assert recorded["version"] == RESULTS_VERSION[kind], (
        f"RESULTS_VERSION[{kind!r}] is {RESULTS_VERSION[kind]} but the fingerprint was recorded for "
        f"{recorded['version']}: record it with python tests/test_results_version.py")
    assert sorted(outputs[kind]) == sorted(recorded["outputs"]), "the smoke graph's jobs changed"
    wanted = {label: {k: v[k] for k in VALUES[kind]} for label, v in recorded["outputs"].items()}
    changed = {label: (wanted[label], values) for label, values in outputs[kind].items()
               if not close(values, wanted[label])}
    assert not changed, (
        f"{kind} jobs compute other results than version {RESULTS_VERSION[kind]} recorded: bump "
        f"RESULTS_VERSION[{kind!r}] and run python tests/test_results_version.py. (recorded, now): {changed}")


def main() -> None:
    """Record the fingerprints of the current code (after bumping the versions whose results changed)."""
    import tempfile

    sys.path.insert(0, str(ROOT))
    from ablations.engine.specs import RESULTS_VERSION

    with tempfile.TemporaryDirectory() as tmp:
        outs = smoke_outputs(Path(tmp))
    data = {kind: {"version": RESULTS_VERSION[kind], "outputs": outs[kind]} for kind in sorted(VALUES)}
    FINGERPRINTS.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote {FINGERPRINTS}")


if __name__ == "__main__":
    main()
