"""The cluster plan (ablations/costs.py, ``--dry-run`` with launcher=slurm): imagenet256's estimates against a hand
computation from the FLOP table (msf's sizes counted independently in tests/test_flops.py); and the time a local
``--dry-run`` gives the jobs left."""

from __future__ import annotations

import json

import pytest

import ablations.graph
from ablations.config import resolve
from ablations.costs import INCEPTION_GFLOPS, cluster_plan, estimate_seconds, job_cost, job_work, time_per_kind
from ablations.engine.flops import flops_table
from ablations.graph import plan

IMAGES, BATCH, STEPS = 1_281_167, 2560, (400_000, 250_000)  # imagenet256: ImageNet's train set, Sec. 4.1


@pytest.fixture(scope="module")
def imagenet256(cluster_inputs, tmp_path_factory):
    pairs = [("sweep", "cfg_scale0"), ("preset", "imagenet256"), ("runs_dir", str(tmp_path_factory.mktemp("runs")))]
    cfg, sweep = resolve(pairs + [tuple(a.split("=", 1)) for a in cluster_inputs])  # type: ignore[misc]
    return cfg, plan(cfg, sweep)


def test_training_flops_are_three_forwards_times_batch_times_steps(imagenet256):
    cfg, g = imagenet256
    gflops = {r["model"]: r["gflops_per_forward"] for r in flops_table()}  # MSF stage 1 and 2 at the paper's sizes
    per_forward = [gflops["MSF stage 1 (192 px)"], gflops["MSF stage 2 (256 px)"]]
    trains = sorted((j for j in g if j.kind == "train" and j.spec.steps), key=lambda j: j.spec.stage)
    assert [j.spec.steps for j in trains] == list(STEPS) and all(j.spec.train.batch_size == BATCH for j in trains)
    for job, forward, steps in zip(trains, per_forward, STEPS, strict=True):
        cost = job_cost(job, cfg)
        hand = 3 * forward * 1e9 * BATCH * steps  # forward + backward (2 forwards) per image, every step
        assert cost.tflops * 1e12 == pytest.approx(hand, rel=1e-9)
        assert cost.gpu_hours == pytest.approx(hand / (312e12 * 0.4) / 3600, rel=1e-9)  # slurm.gpu_tflops, .mfu
        assert (cost.nodes, cost.gpus, cost.time_limit_h) == (1, 8, 24.0)


def test_cache_disk_and_eval_flops(imagenet256):
    cfg, g = imagenet256
    (cache,) = [j for j in g if j.kind == "cache"]
    # every image and its mirror, float32 latents of 4 channels at 24x24 and 32x32
    assert job_cost(cache, cfg).disk_gb == pytest.approx(IMAGES * 2 * 4 * (24 * 24 + 32 * 32) * 4 / 1e9)
    gflops = {r["model"]: r["gflops_per_forward"] for r in flops_table()}
    samples = [j for j in g if j.kind == "sample" and j.spec.family == "msf" and j.spec.sample.cfg == [1.4, 1.0]]
    sampling = 100 * 2 * gflops["MSF stage 1 (192 px)"] + 50 * gflops["MSF stage 2 (256 px)"]  # CFG on scale 1
    per_image = job_cost(samples[0], cfg).tflops * 1e3 / 5000
    decode = per_image - sampling
    assert 0 < decode < 2000  # the VAE decoder's counted share (the stand-in VAE is smaller than the SD VAE)
    (score,) = [j for j in g if j.kind == "score" and j.deps["samples"] is samples[0]]
    assert job_cost(score, cfg).tflops * 1e3 / 5000 == pytest.approx(INCEPTION_GFLOPS)  # the features alone


def test_the_plan_prints_every_job_and_the_totals(imagenet256):
    cfg, g = imagenet256
    lines = cluster_plan(g, cfg)
    assert len(lines) == len(g.jobs) + 3 and lines[-1].startswith("total: ")
    assert "GPU-hours" in lines[-1] and "GB of target caches" in lines[-1]


# ----------------------------------------------------------------------------------------------------------------------
# --dry-run's time per kind on this machine: jobs left at the measured seconds per counted TFLOP


def test_a_job_left_is_estimated_at_its_own_familys_rate_else_its_kinds():
    measured = [(2.0, "msf", 60.0), (4.0, "msf", 140.0), (1.0, "msf", 30.0), (10.0, "dimr", 600.0)]
    assert estimate_seconds(3.0, "dimr", measured) == pytest.approx(3.0 * 60.0)  # DiMR's own 60 s per TFLOP
    assert estimate_seconds(3.0, "msf", measured) == pytest.approx(3.0 * 30.0)  # median of 30, 35, 30
    assert estimate_seconds(3.0, "dit_flow", measured) == pytest.approx(3.0 * 35.0)  # none measured: the kind's median
    assert estimate_seconds(0.0, "msf", measured) == 0.0  # an untrained network: nothing to compute
    assert estimate_seconds(0.0, None, [(0.0, None, 7.0), (0.0, None, 9.0), (0.0, None, 8.0)]) == 8.0  # uncounted kind
    assert estimate_seconds(3.0, "msf", []) is None


def test_the_dry_run_puts_the_baselines_trainings_at_their_counted_flops(tmp_path, monkeypatch):
    # Table 1 on the tiny preset: its DiMR trainings count 1.7x the flow DiT's FLOPs and took 1.8x its seconds per
    # TFLOP (measured: 57 against 32); the median time of the MSF stages (1 to 2.5 minutes) said 6.5 minutes for six
    # trainings of 9 to 28 minutes.
    cfg, sweep = resolve([("sweep", "main"), ("runs_dir", str(tmp_path))])
    g = plan(cfg, sweep)
    trains = [j for j in g if j.kind == "train" and j.spec.steps]
    rate = {"msf": 30.0, "dimr": 60.0}
    finished = [j for j in trains if j.spec.family == "msf"] + [j for j in trains if j.spec.family == "dimr"][:1]
    for j in finished:
        j.run_dir.mkdir(parents=True)
        (j.run_dir / "metrics.json").write_text(json.dumps({"job_seconds": job_work(j)[0] * rate[j.spec.family]}))
    monkeypatch.setattr(ablations.graph.runfolder, "done", lambda d: (d / "metrics.json").exists())
    left = [j for j in g if j.kind == "train" and not g.done(j)]
    assert {j.spec.family for j in left} == {"msf", "dit_flow", "dimr"}  # the untrained stages, 3 DiTs, 2 DiMRs
    hand = sum(job_work(j)[0] * rate.get(j.spec.family, 30.0) for j in left)  # the DiTs at the MSF stages' rate
    assert hand > 60 * 60
    line = next(x for x in time_per_kind(g) if x.startswith("  time train "))
    assert f"{len(left)} to run, about {hand / 60:.1f} min" in line, line
