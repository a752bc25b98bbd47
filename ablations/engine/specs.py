"""Typed job specs: every setting a job uses, as plain dataclasses, and the run key that names its folder.

The sections (``DataConfig``, ``TrainConfig``, ...) are the building blocks of both the runner's sweep configuration
(ablations/config.py composes them) and the job specs below, so a setting has one type and one default everywhere.
A job spec is built once by the planner from the resolved configuration, hashed into the run folder's key, written
into the run folder as ``config.json``, and read back into the same dataclass by the job (:func:`read_spec`): no
setting is copied by hand between the runner and the engine.

A run key is the SHA-256 of the job kind, the kind's results version, the spec and the keys of the jobs it depends
on. ``RESULTS_VERSION`` is bumped whenever code changes what a kind of job computes (tests/test_results_version.py
fails until it is), so a run folder written by older code is never reused for newer results.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ablations.engine.runfolder import key_of
from ablations.engine.typed import NON_NEGATIVE, POSITIVE, UNIT, UNIT_OPEN, at_most, checked, from_data, to_data

Device = Literal["auto", "cpu", "cuda"]
Factorization = Literal["residual", "residual_latent_base", "latent_resize", "image_resize"]
ResizeMode = Literal["bilinear", "bicubic", "area", "nearest"]
Dtype = Literal["float32", "bfloat16"]
CompileMode = Literal["none", "default", "max-autotune", "reduce-overhead"]  # reduce-overhead adds CUDA graphs

# Bumped when code changes what a job of that kind computes (outputs on a fixed input; see the module docstring).
RESULTS_VERSION: dict[str, int] = {
    "autoencoder": 1,
    "cache": 1,
    "train": 1,
    "sample": 1,
    "score": 1,
    "recon": 1,
    "speed": 1,
}


# ----------------------------------------------------------------------------------------------------------------------
# Sections: shared by the sweep configuration and the job specs.

# Bounds on counts, far above any real use, so that a typo (1e12 samples, 1e30 steps) is refused when parsed.
STEPS = at_most(POSITIVE, 100_000_000, "steps of one training; the paper's longest is 400,000")
SOME_STEPS = at_most(NON_NEGATIVE, 100_000_000, "steps of one training; the paper's longest is 400,000")
SAMPLE_STEPS = at_most(POSITIVE, 10_000, "solver steps per scale; DiT-XL/2's DDPM sampler uses 250")
IMAGES_HELD = 1_000_000  # an eval holds its samples (uint8 3xHxW), their features and the reference images in memory


@dataclass(frozen=True)
class DataConfig:
    """Which images: the embedded procedural set, a class-per-folder tree (ImageNet) or CIFAR-10."""

    name: Literal["embedded", "photos", "imagefolder", "cifar10", "digits"] = "embedded"
    root: str | None = None  # dataset folder (imagefolder, cifar10; digits: where to make it, default a cache folder)
    ref_root: str | None = None  # imagefolder: a held-out class-per-folder tree for the reference (default: root)
    image_size: int = checked(32, check=at_most(POSITIVE, 4096, "pixels; the paper's are 256"))
    num_classes: int = checked(10, check=at_most((lambda n: n >= 2, "at least 2 classes"), 100_000,
                                                 "ImageNet has 1,000"))
    # embedded only: the images of the train split, and the reference images (every eval holds them in memory)
    train_size: int = checked(20000, check=at_most(POSITIVE, 100_000_000, "ImageNet's train split has 1,281,167"))
    ref_size: int = checked(5000, check=at_most((lambda n: n >= 2, "at least 2 images"), IMAGES_HELD, "held in memory"))
    seed: int = checked(0, check=NON_NEGATIVE)  # embedded only (also seeds the small AE's training)


@dataclass(frozen=True)
class AutoencoderConfig:
    """E / D of Sec. 3.2: a committed small KL autoencoder, one trained by a job, a pretrained VAE, or pixels."""

    kind: Literal["frozen", "small_kl", "pretrained", "pixel"] = "frozen"
    frozen: str = "embedded-ae"  # kind=frozen: a committed autoencoder (ablations/engine/assets.py)
    path: str | None = None  # kind=pretrained: a local diffusers AutoencoderKL folder (config.json + safetensors)
    block_out_channels: list[int] = checked(check=POSITIVE, factory=lambda: [16, 32, 32])  # small_kl: factor 2^(len-1)
    latent_channels: int = checked(4, check=POSITIVE)
    steps: int = checked(1500, check=STEPS)  # small_kl training
    batch_size: int = checked(16, check=POSITIVE)
    lr: float = checked(2e-3, check=POSITIVE)


@dataclass(frozen=True)
class StageConfig:
    """One stage network: a custom DiT (depth, width, heads, patch) or a size-table name of its family (``size``)."""

    size: str = ""  # "": the DiT below; else a name in the family's size table (e.g. DiMR-XL/2R, DiT-XL/2)
    depth: int = checked(4, check=POSITIVE)
    hidden_size: int = checked(128, check=POSITIVE)
    num_heads: int = checked(4, check=POSITIVE)
    patch_size: int = checked(2, check=POSITIVE)


@dataclass(frozen=True)
class MSFConfig:
    """The MSF model (Sec. 3.1, 4.1): factorization, latent sizes h_0 < ... < h_N, one stage network per scale."""

    factorization: Factorization = "residual"
    scales: list[int] = checked(check=POSITIVE, factory=lambda: [6, 8])  # latent sizes h_0 < ... < h_N
    mode: ResizeMode = "bilinear"  # the Up/Down filter
    prior_mode: Literal["concat", "add"] = "concat"  # how the input prior enters a stage network
    conditioning: Literal["adaln_zero", "tdln"] = "adaln_zero"  # adaLN-Zero (DiT, the paper) or TD-LN (DiMR)
    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig(), StageConfig(depth=2)])
    steps: list[int] = checked(check=STEPS, factory=lambda: [3000, 1500])  # per stage (paper: 400k, 250k)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation of one network, the same for every stage and training seed (Sec. 4.1; DiT's train.py).

    Paper values: lr 3e-4, global batch 2560 (Sec. 4.1); the rest follows DiT where the paper is silent.
    """

    batch_size: int = checked(256, check=POSITIVE)  # global batch over all ranks
    lr: float = checked(3e-4, check=POSITIVE)  # AdamW learning rate after warm-up (constant afterwards, as DiT)
    warmup_steps: int = checked(0, check=SOME_STEPS)  # linear warm-up from 0 to lr
    weight_decay: float = checked(0.0, check=NON_NEGATIVE)
    betas: tuple[float, float] = checked((0.9, 0.999), check=UNIT_OPEN)
    ema_decay: float = checked(0.9999, check=UNIT)  # EMA decay per step (DiT)
    grad_clip: float | None = checked(1.0, check=POSITIVE)  # max gradient norm (None: off); not in the paper
    label_dropout: float = checked(0.1, check=UNIT_OPEN)  # probability of the null class (CFG training, DiT)
    time_dist: Literal["uniform", "logit_normal"] = "uniform"  # distribution of t in Eq. 5
    bf16: bool = False  # bfloat16 autocast of the forward pass (CUDA, or CPUs with bf16 support)
    tf32: bool = True  # TF32 matmuls and convolutions on CUDA (DiT's train.py)
    ckpt_every: int = checked(1000, check=STEPS)  # checkpoint period in steps (the last step is always checkpointed)
    keep_last: int = checked(2, check=POSITIVE)  # checkpoints kept
    log_every: int = checked(0, check=SOME_STEPS)  # progress-line period in steps (0: a hundredth of the run)
    compile: bool = False  # torch.compile the model
    fused_adamw: bool | None = None  # None: fused AdamW on CPU and CUDA
    prefetch: bool | None = None  # None: prepare the next batch in a thread on CUDA only


@dataclass(frozen=True)
class SeedsConfig:
    """Training seeds (independent trainings of every model) and sampling seeds (independent sample sets per model)."""

    train: list[int] = checked(check=NON_NEGATIVE, factory=lambda: [0])
    sample: list[int] = checked(check=NON_NEGATIVE, factory=lambda: [0, 1, 2])


@dataclass(frozen=True)
class SampleConfig:
    """Sampling of one eval point (Algorithm 3, Eqs. 6-7): per-scale steps and CFG scales, the ODE solver."""

    steps: list[int] = checked(check=SAMPLE_STEPS, factory=lambda: [100, 50])  # per scale (paper Table 1)
    cfg: list[float] = checked(check=NON_NEGATIVE, factory=lambda: [1.4, 1.0])  # per scale, DiT convention (1: none)
    solver: Literal["euler", "heun"] = "euler"


@dataclass(frozen=True)
class EvalConfig:
    """How samples are scored and timed (Sec. 4.2)."""

    n_samples: int = checked(1000, check=at_most((lambda n: n >= 10, "at least 10 samples (IS uses 10 splits)"),
                                                 IMAGES_HELD, "held in memory; ADM's protocol uses 50,000"))
    world: Literal["embedded", "inception"] = "embedded"  # embedded classifier features, or the paper's Inception
    batch_size: int = checked(250, check=POSITIVE)  # samples per batch (results do not depend on it)
    inception_weights: str | None = None  # local InceptionV3 weights (torch-fidelity's file) for offline clusters
    reference_npz: str | None = None  # ADM's VIRTUAL_imagenet256_labeled.npz
    dtype: Dtype = "float32"  # the networks' sampling dtype (autocast on CUDA or CPU; the ODE state stays float32)
    attention: Literal["auto", "sdpa", "xformers"] = "auto"  # auto: xformers on CUDA when installed, else SDPA
    compile: CompileMode = "none"  # torch.compile of the networks for sampling
    features: str = "embedded-cnn"  # world=embedded: a frozen network (assets.py) or a classifier .safetensors
    bootstrap: int = checked(0, check=at_most(NON_NEGATIVE, 100_000, "resamples"))  # > 0: a 95% interval of FID


@dataclass(frozen=True)
class TrainedBaseline(StageConfig):
    """A single-scale baseline trained by the harness's loop (``baseline.NAME``, ablations/engine/families.py): its
    network (a custom DiT, or ``size`` from its family's size table) and its training steps."""

    steps: int = checked(4500, check=STEPS)  # the sum of the MSF stages' steps

    @property
    def network(self) -> StageConfig:
        """The network alone."""
        return StageConfig(self.size, self.depth, self.hidden_size, self.num_heads, self.patch_size)


@dataclass(frozen=True)
class PretrainedBaseline(StageConfig):
    """A baseline loaded from its published weights (``baseline.NAME``): the checkpoint file and the layout of the
    network it loads into (as released, unless a rehearsal loads a smaller network saved in the same layout)."""

    checkpoint: str | None = None

    @property
    def network(self) -> StageConfig:
        """The network alone."""
        return StageConfig(self.size, self.depth, self.hidden_size, self.num_heads, self.patch_size)


@dataclass(frozen=True)
class CacheConfig:
    """The target cache (Algorithm 1 run once per image): storage and batching."""

    batch_size: int = checked(256, check=POSITIVE)  # images per encoder call
    shard_size: int = checked(4096, check=POSITIVE)  # images per shard, the unit of resumption
    flip: Literal["both", "none"] = "both"  # both: every image and its mirror image are encoded
    dtype: Literal["float32", "float16"] = "float32"  # storage dtype
    workers: int = checked(0, check=NON_NEGATIVE)  # processes decoding images (0: the job's own)
    parts: int = checked(1, check=POSITIVE)  # cache jobs the encoding is split into (a SLURM job array)


@dataclass(frozen=True)
class SpeedConfig:
    """The speed jobs (paper sizes, random weights); dtype, attention and compile come from ``eval``."""

    method: Literal["auto", "forward", "sample"] = "auto"  # auto: sample on CUDA, else forward
    batch: int = checked(0, check=NON_NEGATIVE)  # images per timed batch; 0: 64 on CUDA (the paper's), 2 on CPU
    repeats: int = checked(0, check=NON_NEGATIVE)  # median of; 0: 5 calls (forward), 3 samples


@dataclass(frozen=True)
class Runtime:
    """Where a job runs: the device and torch's intra-op thread count (0: torch's default)."""

    device: Device = "auto"
    threads: int = checked(0, check=NON_NEGATIVE)


@dataclass(frozen=True)
class FactorizationSpec:
    """A factorization of the latent into scales (Algorithm 1): its name, latent sizes and Up/Down filter."""

    name: Factorization
    scales: list[int]
    mode: ResizeMode


def _vae_config(cfg: AutoencoderConfig) -> dict[str, Any]:
    """The config.json of a committed or pretrained autoencoder folder."""
    if cfg.kind == "frozen":
        from ablations.engine.committed import ASSETS

        folder = ASSETS[cfg.frozen].location
    else:
        folder = Path(str(cfg.path))
    config = folder / "config.json"
    try:
        data = json.loads(config.read_text())
        return {"block_out_channels": list(data["block_out_channels"]), "latent_channels": int(data["latent_channels"])}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"autoencoder.path={cfg.path!r}: cannot read its shape from {config} ({e})") from None


def latent_factor(cfg: AutoencoderConfig) -> int:
    """The spatial down-sampling factor f of an autoencoder configuration: 1 for pixels, 2^(levels - 1) for a KL
    autoencoder (its ``block_out_channels``: the small one's setting, or a VAE folder's config.json) (Sec. 3.2)."""
    if cfg.kind == "pixel":
        return 1
    levels = cfg.block_out_channels if cfg.kind == "small_kl" else _vae_config(cfg)["block_out_channels"]
    return 2 ** (len(levels) - 1)


def latent_channels(cfg: AutoencoderConfig) -> int:
    """The latent channels C of an autoencoder configuration: 3 for pixels, else its latent_channels (Sec. 3.2)."""
    if cfg.kind == "pixel":
        return 3
    return cfg.latent_channels if cfg.kind == "small_kl" else int(_vae_config(cfg)["latent_channels"])


# ----------------------------------------------------------------------------------------------------------------------
# Job specs, one per kind of job.


@dataclass(frozen=True)
class AutoencoderJob:
    """Train the small KL autoencoder on the train split (seeded by the dataset seed)."""

    data: DataConfig
    autoencoder: AutoencoderConfig
    runtime: Runtime


@dataclass(frozen=True)
class CacheJob:
    """Encode every training image once into per-scale targets (Algorithm 1)."""

    data: DataConfig
    autoencoder: AutoencoderConfig
    factorization: FactorizationSpec
    cache: CacheConfig
    part: int  # this job encodes the shards k with k % cache.parts == part
    inputs: dict[str, str]  # fingerprints of the files read (role -> digest): keys follow their content
    runtime: Runtime


@dataclass(frozen=True)
class TrainJob:
    """Train one stage network of a family on the cached targets (Algorithm 2, Eq. 5)."""

    family: str  # a trained family of ablations/engine/families.py
    stage: int
    steps: int
    seed: int  # training seed: initialisation, data order, t / noise / label-dropout draws
    network: StageConfig
    prior_mode: Literal["concat", "add"]
    conditioning: Literal["adaln_zero", "tdln"]
    factorization: FactorizationSpec
    num_classes: int
    train: TrainConfig
    runtime: Runtime


@dataclass(frozen=True)
class Sampling:
    """How an eval point's images are made (the ``eval`` section's sampling keys): count, batch, the networks'
    dtype, attention and compilation."""

    n_samples: int
    batch_size: int
    dtype: Dtype
    attention: Literal["auto", "sdpa", "xformers"]
    compile: CompileMode


@dataclass(frozen=True)
class Scoring:
    """How saved images are scored (the ``eval`` section's scoring keys): the feature network and its reference."""

    world: Literal["embedded", "inception"]
    features: str
    inception_weights: str | None
    reference_npz: str | None
    batch_size: int
    bootstrap: int


def sampling_of(e: EvalConfig) -> Sampling:
    """The sampling keys of an ``eval`` section."""
    return Sampling(e.n_samples, e.batch_size, e.dtype, e.attention, e.compile)


def scoring_of(e: EvalConfig) -> Scoring:
    """The scoring keys of an ``eval`` section."""
    return Scoring(e.world, e.features, e.inception_weights, e.reference_npz, e.batch_size, e.bootstrap)


@dataclass(frozen=True)
class SampleJob:
    """Sample one eval point of one model and save its images once, uint8 in ADM's npz layout (Algorithm 3,
    Sec. 4.2); the anchors of a table (held-out real images, their autoencoder reconstructions) are sampled alike."""

    family: str  # a family of ablations/engine/families.py
    sample: SampleConfig | None  # None for the anchors made of real images
    sampling: Sampling
    sample_seed: int
    train_seed: int | None  # None for the pretrained DiT-XL/2 and the real-image anchors
    time_sampling: bool  # time sampling and decoding of one batch (one point per setting)
    data: DataConfig
    autoencoder: AutoencoderConfig
    checkpoint: str | None  # a pretrained family: its published weights
    network: StageConfig | None  # a pretrained family: the network its checkpoint loads into
    preset: str
    inputs: dict[str, str]  # fingerprints of the files read (role -> digest): keys follow their content
    runtime: Runtime


@dataclass(frozen=True)
class ScoreJob:
    """Score one sample job's saved images against the reference set: FID, IS, precision/recall (Sec. 4.2)."""

    scoring: Scoring
    data: DataConfig  # the reference split
    inputs: dict[str, str]  # fingerprints of the feature network and reference files
    runtime: Runtime


@dataclass(frozen=True)
class ReconJob:
    """Reconstruct held-out images through a factorization, scale by scale (Fig. 2)."""

    factorization: FactorizationSpec
    data: DataConfig
    autoencoder: AutoencoderConfig
    inputs: dict[str, str]  # fingerprints of the files read (role -> digest): keys follow their content
    runtime: Runtime


@dataclass(frozen=True)
class SpeedJob:
    """Time one family at the paper's sizes, steps and CFG with random weights (Table 1 'Time', Sec. 4.2)."""

    family: str
    speed: SpeedConfig
    dtype: Dtype
    attention: Literal["auto", "sdpa", "xformers"]
    compile: CompileMode
    runtime: Runtime


Spec = AutoencoderJob | CacheJob | TrainJob | SampleJob | ScoreJob | ReconJob | SpeedJob
SPECS: dict[str, type] = {
    "autoencoder": AutoencoderJob,
    "cache": CacheJob,
    "train": TrainJob,
    "sample": SampleJob,
    "score": ScoreJob,
    "recon": ReconJob,
    "speed": SpeedJob,
}
KINDS = tuple(SPECS)


def kind_of(spec: Any) -> str:
    """The job kind of a spec."""
    for kind, cls in SPECS.items():
        if type(spec) is cls:
            return kind
    raise TypeError(f"not a job spec: {type(spec).__name__}")


def run_key(kind: str, spec: Any, deps: dict[str, str]) -> str:
    """The key of a job: :func:`ablations.engine.runfolder.key_of` of the config.json it will write (its kind,
    results version, spec and dependencies' folder names by role)."""
    return key_of({"kind": kind, "results_version": RESULTS_VERSION[kind], "spec": to_data(spec), "deps": deps})


def spec_record(kind: str, name: str, key: str, spec: Any, deps: dict[str, str], code_version: str) -> dict[str, Any]:
    """The content of a run folder's ``config.json``: kind, name, key, results version, spec and deps.

    ``deps`` maps a dependency's role (autoencoder, cache, train0, ...) to its run folder's name in the same parent.
    """
    return {"kind": kind, "name": name, "key": key, "results_version": RESULTS_VERSION[kind], "spec": to_data(spec),
            "deps": deps, "code_version": code_version}


def read_spec(record: dict[str, Any]) -> Any:
    """The job spec of a ``config.json`` record, read back into its dataclass."""
    kind = record.get("kind")
    if kind not in SPECS:
        raise ValueError(f"config.json names an unknown job kind {kind!r}")
    return from_data(SPECS[kind], record["spec"], kind)
