"""The cluster plan (ablations/costs.py, ``--dry-run`` with launcher=slurm): imagenet256's estimates against a hand
computation from the FLOP table (msf's sizes counted independently in tests/test_flops.py)."""

from __future__ import annotations

import pytest

from ablations.config import resolve
from ablations.costs import INCEPTION_GFLOPS, cluster_plan, job_cost
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
