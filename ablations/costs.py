"""The cluster plan of a sweep before any GPU-hour is spent (``--dry-run`` with launcher=slurm).

Per job: the SLURM resources it asks for (nodes, GPUs, time limit), its counted FLOPs, the GPU-hours they take at a
stated utilisation (``slurm.mfu`` of ``slurm.gpu_tflops``, the dense bf16 rate of one GPU), and the disk a target
cache and the saved samples need. FLOPs are counted by torch's FlopCounterMode on the meta device (shapes only; no
weights, no memory):

- training: 3 x forward FLOPs x batch per step (forward, and a backward of twice the forward), x steps;
- target cache: one encoder pass per item (x 2 with flips; the residual factorization also encodes the
  down-sampled image for its base), the VAE's encoder at the configured image size;
- sample: sampling (forward FLOPs x steps x 2 under CFG, per scale) + one VAE decode per sample (an encode and a
  decode for the autoencoder's floor), and the disk of the saved uint8 samples;
- score: InceptionV3 features of every saved sample.

Norms, softmax and element-wise work are not counted (as DiT's GFLOPs), so the estimates are lower bounds of the work
and the utilisation is the knob that turns them into time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from statistics import median_high
from typing import Any

from ablations.config import Config
from ablations.engine.committed import ASSETS
from ablations.engine.families import FAMILIES
from ablations.engine.io import read_json
from ablations.engine.runfolder import AUTOENCODER_FLOOR
from ablations.engine.specs import (
    AutoencoderConfig,
    CacheJob,
    SampleJob,
    ScoreJob,
    TrainJob,
    latent_channels,
    latent_factor,
)
from ablations.graph import Graph, Job
from ablations.inputs import VAE_WEIGHTS

INCEPTION_GFLOPS = 11.5  # InceptionV3 at 299x299 (2 x 5.7 GMACs), counted once per scored image


@dataclass(frozen=True)
class Cost:
    """One job's row of the cluster plan."""

    name: str
    nodes: int
    gpus: int
    time_limit_h: float
    tflops: float
    gpu_hours: float
    disk_gb: float


_FORWARD: dict[str, float] = {}  # forward GFLOPs by network (the plan asks for each network several times)


def forward_gflops(spec: TrainJob, channels: int) -> float:
    """GFLOPs of one forward of a train job's stage network on one latent (meta device)."""
    import json

    import torch

    from ablations.engine.typed import to_data

    key = json.dumps([spec.family, spec.stage, to_data(spec.network), to_data(spec.factorization), spec.prior_mode,
                      spec.conditioning, spec.num_classes, channels])
    if key in _FORWARD:
        return _FORWARD[key]

    from ablations.engine.families import factorization_of
    from ablations.engine.flops import count_forward_flops, meta_inputs
    from ablations.engine.train import stage_kwargs

    family = FAMILIES[spec.family]
    assert family.architecture is not None
    arch = family.architecture()
    with torch.device("meta"):
        net = arch.build(**stage_kwargs(spec, factorization_of(spec.factorization), channels, arch)).eval()
    _FORWARD[key] = count_forward_flops(net, *meta_inputs(net)) / 1e9
    return _FORWARD[key]


def train_tflops(spec: TrainJob, channels: int) -> float:
    """Counted training TFLOPs: 3 x forward FLOPs x batch per step (a backward costs two forwards), x steps."""
    return 3 * forward_gflops(spec, channels) * spec.train.batch_size * spec.steps / 1e3


def _vae(cfg: AutoencoderConfig) -> Any:
    """The autoencoder's diffusers network on the meta device, from its config."""
    import json

    import torch
    from diffusers import AutoencoderKL

    if cfg.kind == "pixel":
        return None
    if cfg.kind == "small_kl":
        from ablations.engine.autoencoders import SmallAEConfig

        with torch.device("meta"):
            return SmallAEConfig(block_out_channels=tuple(cfg.block_out_channels),
                                 latent_channels=cfg.latent_channels).build(32)
    folder = ASSETS[cfg.frozen].location if cfg.kind == "frozen" else Path(str(cfg.path))
    config = {k: v for k, v in json.loads((folder / "config.json").read_text()).items() if not k.startswith("_")}
    with torch.device("meta"):
        return AutoencoderKL.from_config(config)


_VAE_GFLOPS: dict[str, float] = {}  # by autoencoder, side and part: counted once per process


def _vae_gflops(cfg: AutoencoderConfig, size: int, part: str) -> float:
    """GFLOPs of the VAE's encoder or decoder on one image of side ``size``."""
    import json

    import torch

    from ablations.engine.flops import count_forward_flops
    from ablations.engine.typed import to_data

    key = json.dumps([to_data(cfg), size, part])
    if key not in _VAE_GFLOPS:
        vae, f = _vae(cfg), latent_factor(cfg)
        with torch.device("meta"):
            if vae is None:
                _VAE_GFLOPS[key] = 0.0
            elif part == "encode":
                _VAE_GFLOPS[key] = count_forward_flops(vae.encoder, torch.empty(1, 3, size, size)) / 1e9
            else:
                z = torch.empty(1, vae.config.latent_channels, size // f, size // f)
                _VAE_GFLOPS[key] = count_forward_flops(vae.decoder, z) / 1e9
    return _VAE_GFLOPS[key]


def _cache(spec: CacheJob) -> tuple[float, float]:
    """(TFLOPs, disk GB) of one part of a target cache."""
    images = spec.data.train_size / spec.cache.parts
    items = images * (2 if spec.cache.flip == "both" else 1)
    f = latent_factor(spec.autoencoder)
    sizes = [spec.data.image_size] + ([spec.factorization.scales[0] * f] if spec.factorization.name == "residual"
                                      else [])
    tflops = items * sum(_vae_gflops(spec.autoencoder, s, "encode") for s in sizes) / 1e3
    channels = spec.autoencoder.latent_channels
    per_item = sum(channels * h * h for h in spec.factorization.scales) * (4 if spec.cache.dtype == "float32" else 2)
    return tflops, items * per_item / 1e9


def _sample_tflops(spec: SampleJob, job: Job) -> tuple[float, float]:
    """(Counted TFLOPs, disk GB) of one sample job: sampling and decoding every sample (encoding, for the
    autoencoder's floor), and its saved uint8 images."""
    import torch

    from ablations.engine.flops import count_forward_flops, meta_inputs

    n, size = spec.sampling.n_samples, spec.data.image_size
    disk = n * 3 * size * size / 1e9
    family = FAMILIES[spec.family]
    if family.anchor:  # real images (nothing to compute), or their reconstructions
        coded = family.anchor == AUTOENCODER_FLOOR
        return n * coded * (_vae_gflops(spec.autoencoder, size, "encode") +
                            _vae_gflops(spec.autoencoder, size, "decode")) / 1e3, disk
    per_sample = _vae_gflops(spec.autoencoder, size, "decode")
    assert spec.sample is not None, "a model is sampled at an eval point's settings"
    channels = latent_channels(spec.autoencoder)
    stages = [dep.spec for role, dep in sorted(job.deps.items()) if role.startswith("train")]
    forwards = [forward_gflops(stage, channels) for stage in stages]
    if family.checkpoint_network is not None and spec.network is not None:  # a pretrained network
        with torch.device("meta"):
            net = family.checkpoint_network(spec.network).eval()
        forwards = [count_forward_flops(net, *meta_inputs(net)[:3]) / 1e9]
    for i, forward in enumerate(forwards):
        per_sample += forward * spec.sample.steps[i] * (1 if spec.sample.cfg[i] == 1.0 else 2)
    return n * per_sample / 1e3, disk


def _score_tflops(job: Job) -> float:
    """Counted TFLOPs of one score job: the feature network on every saved sample."""
    return job.deps["samples"].spec.sampling.n_samples * INCEPTION_GFLOPS / 1e3


def is_training(job: Job) -> bool:
    """A job that gets the training resources (several GPUs and nodes); a 0-step training (an untrained
    network, the ceiling of the tables) needs one."""
    return isinstance(job.spec, TrainJob) and job.spec.steps > 0


def job_work(job: Job) -> tuple[float, float]:
    """(Counted TFLOPs, disk GB) of one job (see the module docstring); (0, 0) for the kinds not counted."""
    if isinstance(job.spec, TrainJob):
        (cache,) = [d for role, d in job.deps.items() if role.startswith("cache")][:1]
        return train_tflops(job.spec, latent_channels(cache.spec.autoencoder)), 0.0
    if isinstance(job.spec, CacheJob):
        return _cache(job.spec)
    if isinstance(job.spec, SampleJob):
        return _sample_tflops(job.spec, job)
    if isinstance(job.spec, ScoreJob):
        return _score_tflops(job), 0.0
    return 0.0, 0.0


def job_cost(job: Job, cfg: Config) -> Cost:
    """The cluster-plan row of one job (see the module docstring)."""
    s = cfg.slurm
    train = is_training(job)
    nodes = s.nodes if train else 1
    gpus = nodes * (s.gpus_per_node if train else min(1, s.gpus_per_node))
    tflops, disk = job_work(job)
    gpu_hours = tflops / (s.gpu_tflops * s.mfu) / 3600
    return Cost(job.name, nodes, gpus, s.timeout_min / 60, tflops, gpu_hours, disk)


def cluster_plan(g: Graph, cfg: Config) -> list[str]:
    """The dry-run's cluster plan as text lines: one per job, then the totals."""
    s = cfg.slurm
    rows = [job_cost(j, cfg) for j in g]
    lines = [f"cluster plan: estimates at {100 * s.mfu:.0f}% of {s.gpu_tflops:g} TFLOP/s per GPU (slurm.mfu, "
             "slurm.gpu_tflops); counted matmul/conv FLOPs only",
             f"  {'job':60s} {'nodes':>5s} {'GPUs':>4s} {'limit h':>7s} {'PFLOP':>10s} {'GPU-h':>9s} {'wall h':>8s} "
             f"{'requeues':>8s} {'disk GB':>8s}"]
    for r in rows:
        wall = r.gpu_hours / max(r.gpus, 1)
        requeues = max(0, math.ceil(wall / r.time_limit_h) - 1)
        lines.append(f"  {r.name[:60]:60s} {r.nodes:5d} {r.gpus:4d} {r.time_limit_h:7.1f} {r.tflops / 1e3:10.3g} "
                     f"{r.gpu_hours:9.3g} {wall:8.3g} {requeues:8d} {r.disk_gb:8.3g}")
    total = sum(r.gpu_hours for r in rows)
    lines.append(f"total: {sum(r.tflops for r in rows) / 1e3:.4g} PFLOP, {total:.4g} GPU-hours, "
                 f"{sum(r.disk_gb for r in rows):.4g} GB of target caches and samples")
    return lines


# ----------------------------------------------------------------------------------------------------------------------
# Time on this machine: what the finished jobs took, and what the jobs left will take at the same rate.


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def estimate_seconds(tflops: float, family: str | None,
                     measured: list[tuple[float, str | None, float]]) -> float | None:
    """A job's time from the finished jobs of its kind, each (counted TFLOPs, family, job_seconds): its counted
    TFLOPs at their median seconds per TFLOP, over its own family's jobs when one was measured (the norms and
    element-wise work left uncounted differ by family: per TFLOP, a tiny DiMR training took 1.8 times as long as a
    flow DiT's), so a job with nothing to count (an untrained network, real images) takes no time; for a kind whose
    work is not counted (speed, reconstruction, autoencoder jobs), the median of its measured times; None when nothing
    of the kind was measured."""
    if not measured:
        return None
    counted = [(f, s / t) for t, f, s in measured if t > 0]
    if not counted:
        return median_high([s for _, _, s in measured])
    return tflops * median_high([rate for f, rate in counted if f == family] or [rate for _, rate in counted])


def time_per_kind(g: Graph) -> list[str]:
    """Where a sweep's time goes, for --dry-run: per job kind, the measured seconds of its finished jobs
    (metrics.json's job_seconds, one process's wall time), and the jobs left as :func:`estimate_seconds` puts them
    (FLOPs are counted only then: counting the autoencoder's imports diffusers, seconds)."""
    lines = []
    for kind in dict.fromkeys(j.kind for j in g):
        jobs = [j for j in g if j.kind == kind]
        finished = {j.key: g.done(j) for j in jobs}
        done = [(j, float(read_json(j.run_dir / "metrics.json").get("job_seconds", "nan"))) for j in jobs
                if finished[j.key]]
        done = [(j, s) for j, s in done if math.isfinite(s)]
        left = [j for j in jobs if not finished[j.key]]
        line = f"  time {kind:6s} {len(jobs):3d} job(s)"
        if done:
            total, median = sum(s for _, s in done), median_high([s for _, s in done])
            line += f": {len(done)} measured, {_duration(total)} (median {median:.1f} s)"
            if left:
                measured = [(job_work(j)[0], _family(j), s) for j, s in done]
                estimate = sum(estimate_seconds(job_work(j)[0], _family(j), measured) or 0.0 for j in left)
                line += (f"; {len(left)} to run, about {_duration(estimate)} at their family's measured seconds per "
                         "counted TFLOP, else their kind's")
        elif left:
            line += f": {len(left)} to run, none measured yet"
        lines.append(line)
    return lines


def _family(job: Job) -> str | None:
    """The model family a job computes with (a score job: its samples'), for its seconds per TFLOP."""
    spec = job.deps["samples"].spec if isinstance(job.spec, ScoreJob) else job.spec
    return getattr(spec, "family", None)


# ----------------------------------------------------------------------------------------------------------------------
# Memory: how many jobs fit on one machine at once (the local pool's workers).

# a job's process: torch, diffusers and the engine imported (0.88 GiB resident), and the smoke and tiny presets' jobs,
# whose peaks measured 0.88-1.29 GiB with freed memory kept for reuse (allocator.py; tiny's target cache the largest)
PROCESS_GIB = 1.3


def _file_gib(path: str | Path | None) -> float:
    """The size of a weights file in GiB (0 when there is none to read)."""
    try:
        return Path(str(path)).stat().st_size / 2**30 if path else 0.0
    except OSError:
        return 0.0


def _loaded_gib(autoencoder: AutoencoderConfig | None, features: str | None = None) -> float:
    """GiB of the autoencoder's and the feature network's weights (their files' sizes; a small_kl autoencoder is
    trained by the sweep and not counted)."""
    gib = 0.0
    if autoencoder is not None and autoencoder.kind == "frozen":
        gib += _file_gib(ASSETS[autoencoder.frozen].location / VAE_WEIGHTS)
    elif autoencoder is not None and autoencoder.kind == "pretrained":
        gib += _file_gib(Path(str(autoencoder.path)) / VAE_WEIGHTS)
    if features is not None:
        gib += _file_gib(ASSETS[features].location if features in ASSETS else features)
    return gib


_NETWORK: dict[str, tuple[int, int]] = {}  # by network, as _FORWARD


def _network(spec: TrainJob, channels: int) -> tuple[int, int]:
    """A train job's stage network: its parameter count, and the bytes of every layer's output in one forward of one
    latent (leaf modules, float32), what autograd keeps for the backward (meta device: shapes only)."""
    import json

    import torch

    from ablations.engine.typed import to_data

    key = json.dumps([spec.family, spec.stage, to_data(spec.network), to_data(spec.factorization), spec.prior_mode,
                      spec.conditioning, spec.num_classes, channels])
    if key in _NETWORK:
        return _NETWORK[key]

    from ablations.engine.families import factorization_of
    from ablations.engine.flops import count_params, meta_inputs
    from ablations.engine.train import stage_kwargs

    family = FAMILIES[spec.family]
    assert family.architecture is not None
    arch = family.architecture()
    outputs = [0]

    def count(module: Any, inputs: Any, out: Any) -> None:
        outputs[0] += sum(4 * t.numel() for t in (out if isinstance(out, tuple) else (out,))
                          if isinstance(t, torch.Tensor))

    with torch.device("meta"):
        net = arch.build(**stage_kwargs(spec, factorization_of(spec.factorization), channels, arch)).eval()
        for m in net.modules():
            if not list(m.children()):
                m.register_forward_hook(count)
        with torch.no_grad():
            net(*meta_inputs(net))
    _NETWORK[key] = count_params(net), outputs[0]
    return _NETWORK[key]


def job_memory_gib(job: Job) -> float:
    """A job's estimated peak resident memory in GiB: its process (PROCESS_GIB) plus its largest tensors, by kind.

    - training: 20 bytes per parameter (float32 weights, gradients, AdamW's two moments, EMA) and, per image of a
      batch, twice its layers' outputs (what autograd keeps, and as much again for the backward's temporaries);
    - sample: its stages' float32 weights and the samples as uint8 (the real-image anchors: the train split);
    - score: the samples and the reference images as uint8, and one batch of the feature network's input as float32
      (Inception's 299 x 299, else the image size);
    - target cache: one batch of images through the encoder (x 16 for its activations, as float32);
    - speed: the paper-size networks' float32 weights;
    - every job that loads the autoencoder or the feature network: their weights files' sizes.
    """
    from ablations.engine.specs import ReconJob, SpeedJob

    spec, extra = job.spec, 0.0
    if isinstance(spec, TrainJob):
        (cache,) = [d for role, d in job.deps.items() if role.startswith("cache")][:1]
        params, activations = _network(spec, latent_channels(cache.spec.autoencoder))
        extra = 20 * params + spec.train.batch_size * 2 * activations
    elif isinstance(spec, SampleJob):
        stages = [d for role, d in job.deps.items() if role.startswith("train")]
        pixels = 3 * spec.data.image_size ** 2
        extra = (4 * sum(_network(d.spec, latent_channels(spec.autoencoder))[0] for d in stages)
                 + (spec.sampling.n_samples + spec.data.train_size * (FAMILIES[spec.family].anchor is not None))
                 * pixels)
        if spec.network is not None:  # a pretrained network from its checkpoint
            extra += _file_gib(spec.checkpoint) * 2**30
        extra += _loaded_gib(spec.autoencoder) * 2**30
    elif isinstance(spec, ScoreJob):
        sampled = job.deps["samples"].spec
        pixels = 3 * spec.data.image_size ** 2
        side = 299 if spec.scoring.world == "inception" else spec.data.image_size
        extra = ((sampled.sampling.n_samples + spec.data.ref_size) * pixels
                 + spec.scoring.batch_size * 3 * side ** 2 * 4)
        extra += _loaded_gib(None, spec.scoring.features if spec.scoring.world == "embedded" else None) * 2**30
    elif isinstance(spec, CacheJob):
        extra = spec.cache.batch_size * 3 * spec.data.image_size ** 2 * 4 * 16 + _loaded_gib(spec.autoencoder) * 2**30
    elif isinstance(spec, ReconJob):
        extra = _loaded_gib(spec.autoencoder) * 2**30
    elif isinstance(spec, SpeedJob):
        import torch

        from ablations.engine.flops import count_params

        family = FAMILIES[spec.family]
        assert family.speed_network is not None
        with torch.device("meta"):
            extra = 4 * sum(count_params(family.speed_network(st)) for st in family.speed_plan)
    return PROCESS_GIB + extra / 2**30
