"""Typed job specs (ablations/engine/specs.py): every sweep at every preset plans jobs whose specs carry the configured
device, dtype, threads and sections; a spec survives config.json; every configuration key reaches some job."""

from __future__ import annotations

import dataclasses
import json
import typing

import pytest

from ablations.config import KEYS, PRESETS_DIR, SWEEPS_DIR, available, point_config, resolve
from ablations.engine.specs import (
    CacheJob,
    Factorization,
    ReconJob,
    ResizeMode,
    SampleJob,
    ScoreJob,
    SpeedJob,
    TrainJob,
    read_spec,
    sampling_of,
    scoring_of,
)
from ablations.engine.typed import to_data
from ablations.graph import plan
from msf.factorize import FACTORIZATIONS, MODES

PRESETS = available(PRESETS_DIR)
SWEEPS = available(SWEEPS_DIR)


def resolved(sweep: str, preset: str, extra: list[str]):
    pairs = [("sweep", sweep), ("preset", preset)] + [tuple(a.split("=", 1)) for a in extra]
    return resolve(pairs)  # type: ignore[arg-type]


@pytest.mark.parametrize("preset", PRESETS)
def test_every_job_carries_the_configured_device_dtype_threads_and_sections(preset, cluster_inputs, tmp_path):
    """Plan every sweep: each spec's device and threads are the config's, its dtype settings and whole sections are
    the point's (nothing left at a dataclass default that the config set otherwise)."""
    extra = cluster_inputs if preset in ("imagenet256", "rehearsal") else []  # presets whose inputs are the user's
    for sweep in SWEEPS:
        cfg, sw = resolved(sweep, preset, [*extra, f"runs_dir={tmp_path}"])
        points = [point_config(cfg, p) for p in sw.points] or [cfg]
        for job in plan(cfg, sw):
            spec = job.spec
            assert spec.runtime.device == cfg.device and spec.runtime.threads == cfg.cpu_threads, job.name
            if isinstance(spec, TrainJob):
                assert spec.train == cfg.train and spec.train.bf16 == cfg.train.bf16, job.name
            if isinstance(spec, SampleJob):
                assert spec.sampling in [sampling_of(p.eval) for p in points] and spec.sampling.dtype == cfg.eval.dtype
                assert spec.data == cfg.data and spec.autoencoder == cfg.autoencoder, job.name
                assert spec.sample is None or spec.sample in [p.sample for p in points] + [cfg.sample], job.name
                if spec.family == "dit_xl2":
                    assert (spec.network, spec.checkpoint) == (
                        cfg.baseline.dit_xl2.network, cfg.baseline.dit_xl2.checkpoint), job.name
            if isinstance(spec, ScoreJob):
                assert spec.scoring in [scoring_of(p.eval) for p in points] and spec.data == cfg.data, job.name
            if isinstance(spec, CacheJob):
                assert (spec.data, spec.autoencoder, spec.cache) == (cfg.data, cfg.autoencoder, cfg.cache), job.name
            if isinstance(spec, ReconJob):
                assert (spec.data, spec.autoencoder) == (cfg.data, cfg.autoencoder), job.name
            if isinstance(spec, SpeedJob):
                assert (spec.speed, spec.dtype, spec.attention, spec.compile) == (
                    cfg.speed, cfg.eval.dtype, cfg.eval.attention, cfg.eval.compile), job.name
        if preset == "imagenet256" and sweep == "main":
            kinds = {job.kind for job in plan(cfg, sw)}
            assert {"cache", "train", "sample", "score"} <= kinds
            assert all(job.spec.train.bf16 for job in plan(cfg, sw) if job.kind == "train")


def test_a_spec_survives_its_config_json(tmp_path):
    """The launcher writes a job's spec as JSON; the job reads back the very same dataclass (no field lost)."""
    cfg, sw = resolved("main", "tiny", [f"runs_dir={tmp_path}", "seeds.train=[0,1]"])
    jobs = list(plan(cfg, sw))
    assert {j.kind for j in jobs} == {"cache", "train", "sample", "score"}
    for job in jobs:
        record = json.loads(json.dumps(job.record("test")))
        assert read_spec(record) == job.spec, job.name


def test_training_seeds_and_sampling_seeds_are_separate_dimensions(tmp_path):
    cfg, sw = resolved("cfg_scale0", "tiny", [f"runs_dir={tmp_path}", "seeds.train=[0,1,2]", "seeds.sample=[5]"])
    jobs = list(plan(cfg, sw))
    trains = [j.spec for j in jobs if j.kind == "train"]
    assert sorted({(t.stage, t.seed) for t in trains if t.steps}) == [(s, t) for s in (0, 1) for t in (0, 1, 2)]
    samples = [j.spec for j in jobs if j.kind == "sample" and j.spec.family == "msf"]
    assert {(e.train_seed, e.sample_seed) for e in samples} == {(t, 5) for t in (0, 1, 2)}
    assert sum(e.time_sampling for e in samples) == 6  # one timed eval per setting (first train and sample seed)


def test_spec_literals_name_the_methods_choices():
    """The spec's closed choices are the method's own lists (one source of truth checked both ways)."""
    assert typing.get_args(Factorization) == FACTORIZATIONS
    assert typing.get_args(ResizeMode) == MODES


# Every configuration key, a valid value other than the tiny preset's, and the sweep in which it must change a job.
# Keys that only steer the runner (where and how jobs are launched) change no job by design.
RUNNER_KEYS = {"sweep", "preset", "launcher", "runs_dir", "workers"} | {k for k in KEYS if k.startswith("slurm.")}
CHANGES = {
    "device": ("cpu", "cfg_scale0"),
    "cpu_threads": (2, "cfg_scale0"),
    "data.name": ("digits", "cfg_scale0"),
    "data.root": (None, None),  # only with imagefolder/cifar10 (tested with imagenet256's inputs above)
    "data.ref_root": (None, None),  # the same
    "data.image_size": (None, None),  # every committed network is trained at 32 px: another size is refused when
    # the command is parsed (test_failsafe), so no sweep of a preset plans it
    "data.num_classes": (5, "cfg_scale0"),
    "data.train_size": (1000, "cfg_scale0"),
    "data.ref_size": (100, "cfg_scale0"),
    "data.seed": (3, "cfg_scale0"),
    "autoencoder.kind": ("small_kl", "cfg_scale0", {"msf.scales": [4, 8]}),  # the small recipe's f = 4
    "autoencoder.frozen": ("digits-ae", "cfg_scale0", {"msf.scales": [4, 8]}),
    "autoencoder.path": (None, None),  # only with kind=pretrained (tested with imagenet256.s inputs above)
    "autoencoder.block_out_channels": ([8, 16, 16], "cfg_scale0",
                                       {"autoencoder.kind": "small_kl", "msf.scales": [4, 8]}),
    "autoencoder.latent_channels": (3, "cfg_scale0", {"autoencoder.kind": "small_kl", "msf.scales": [4, 8]}),
    "autoencoder.steps": (7, "cfg_scale0", {"autoencoder.kind": "small_kl", "msf.scales": [4, 8]}),
    "autoencoder.batch_size": (8, "cfg_scale0", {"autoencoder.kind": "small_kl", "msf.scales": [4, 8]}),
    "autoencoder.lr": (1e-3, "cfg_scale0", {"autoencoder.kind": "small_kl", "msf.scales": [4, 8]}),
    "msf.factorization": ("latent_resize", "cfg_scale0"),
    "msf.scales": ([8, 16], "cfg_scale0"),
    "msf.mode": ("bicubic", "cfg_scale0"),
    "msf.prior_mode": ("add", "cfg_scale0"),
    "msf.conditioning": ("tdln", "cfg_scale0"),
    "msf.stages": ([{"depth": 1}], "cfg_scale0"),
    "msf.steps": ([10, 5], "cfg_scale0"),
    "train.batch_size": (32, "cfg_scale0"),
    "train.lr": (1e-4, "cfg_scale0"),
    "train.warmup_steps": (3, "cfg_scale0"),
    "train.weight_decay": (0.01, "cfg_scale0"),
    "train.betas": ([0.8, 0.9], "cfg_scale0"),
    "train.ema_decay": (0.9, "cfg_scale0"),
    "train.grad_clip": (None, "cfg_scale0"),
    "train.label_dropout": (0.2, "cfg_scale0"),
    "train.time_dist": ("logit_normal", "cfg_scale0"),
    "train.bf16": (True, "cfg_scale0"),
    "train.tf32": (False, "cfg_scale0"),
    "train.ckpt_every": (7, "cfg_scale0"),
    "train.keep_last": (3, "cfg_scale0"),
    "train.log_every": (7, "cfg_scale0"),
    "train.compile": (True, "cfg_scale0"),
    "train.fused_adamw": (False, "cfg_scale0"),
    "train.prefetch": (True, "cfg_scale0"),
    "seeds.train": ([1], "cfg_scale0"),
    "seeds.sample": ([4], "cfg_scale0"),
    "sample.steps": ([10, 5], "conditioning"),
    "sample.cfg": ([1.2, 1.0], "conditioning"),
    "sample.solver": ("heun", "cfg_scale0"),
    "eval.n_samples": (100, "cfg_scale0"),
    "eval.world": (None, None),  # inception: tested by the rehearsal, which has Inception weights in their format
    "eval.batch_size": (10, "cfg_scale0"),
    "eval.inception_weights": (None, None),  # the same
    "eval.reference_npz": (None, None),  # the same
    "eval.dtype": ("bfloat16", "cfg_scale0"),
    "eval.attention": ("sdpa", "cfg_scale0"),
    "eval.compile": ("default", "cfg_scale0"),
    "eval.features": ("digits-cnn", "cfg_scale0"),
    "eval.bootstrap": (10, "cfg_scale0"),
    "baseline.dit_flow.size": ("DiT-S/2", "main"),
    "baseline.dit_flow.depth": (2, "main"),
    "baseline.dit_flow.hidden_size": (64, "main"),
    "baseline.dit_flow.num_heads": (2, "main"),
    "baseline.dit_flow.patch_size": (2, "main"),
    "baseline.dit_flow.steps": (10, "main"),
    "baseline.dimr.size": ("DiMR-XL/2R", "main"),
    "baseline.dimr.depth": (None, None),  # a DiMR is named by its size table (a custom one is not offered)
    "baseline.dimr.hidden_size": (None, None),
    "baseline.dimr.num_heads": (None, None),
    "baseline.dimr.patch_size": (None, None),
    "baseline.dimr.steps": (10, "main"),
    "baseline.dit_xl2.checkpoint": (None, None),  # only with a dit_xl2 point (imagenet256.s main, tested above)
    "baseline.dit_xl2.size": (None, None),  # the same
    "baseline.dit_xl2.depth": (None, None),
    "baseline.dit_xl2.hidden_size": (None, None),
    "baseline.dit_xl2.num_heads": (None, None),
    "baseline.dit_xl2.patch_size": (None, None),
    "cache.batch_size": (32, "cfg_scale0"),
    "cache.shard_size": (100, "cfg_scale0"),
    "cache.flip": ("both", "cfg_scale0"),
    "cache.dtype": ("float16", "cfg_scale0"),
    "cache.workers": (2, "cfg_scale0"),
    "cache.parts": (2, "cfg_scale0"),
    "speed.method": ("sample", "speed"),
    "speed.batch": (3, "speed"),
    "speed.repeats": (2, "speed"),
}


def test_the_change_table_covers_every_key():
    assert sorted(CHANGES) == sorted(set(KEYS) - RUNNER_KEYS)


@pytest.mark.parametrize("key", sorted(k for k, v in CHANGES.items() if v[1]))
def test_every_key_changes_some_job(key, tmp_path):
    """No setting is dropped on the way to the engine: changing it changes the key of a job of its sweep."""
    value, sweep, *context = CHANGES[key]
    base = [f"runs_dir={tmp_path}"]
    cfg0, sw0 = resolved(sweep, "tiny", base)
    # a key whose new value needs other keys changed with it (an image size and its scales) also has its value checked
    # in the specs, so that the other keys' change alone cannot pass the test
    together = [f"{k}={json.dumps(v)}" for k, v in (context[0] if context else {}).items()]
    cfg1, sw1 = resolved(sweep, "tiny", [*base, *together, f"{key}={json.dumps(value)}"])
    jobs = list(plan(cfg1, sw1))
    assert {j.key for j in jobs} != {j.key for j in plan(cfg0, sw0)}
    if context:
        section, field = key.split(".")
        assert all(getattr(getattr(j.spec, section), field) == value for j in jobs if hasattr(j.spec, section))


def test_specs_are_frozen_plain_data():
    for cls in (TrainJob, SampleJob, ScoreJob, CacheJob, ReconJob, SpeedJob):
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
    cfg, sw = resolved("cfg_scale0", "smoke", [])
    job = next(j for j in plan(cfg, sw) if j.kind == "train")
    assert json.loads(json.dumps(to_data(job.spec)))["train"]["lr"] == cfg.train.lr
