"""One training loop for a stage of an MSF model or the single-scale flow DiT (Sec. 3.3 Eq. 5, Sec. 4.1).

Stage i regresses the rectified-flow velocity of its target x1 = f_resi^{h_i} (Algorithm 1, read from the target
cache) given the teacher-forced input prior f_hat_{h_i} (Algorithm 2, computed from the cached targets of the coarser
scales). The stages are independent jobs, as in the paper (400k and 250k iterations); a single-scale DiT is the same
code with one scale. The loop reads top to bottom in :func:`train`, nanoGPT-style.

Randomness never comes from a global generator. Every random draw is a pure function of the step, so resuming needs
only the step number:

* data order: a permutation per epoch from a generator seeded by (seed, epoch), each global batch split by rank;
* time t, noise z0 and the label-dropout mask of step s on rank r: one CPU generator seeded by (seed, s, r);
* weight initialisation: a generator seeded by the seed alone, identical on every rank.

A checkpoint is ``checkpoints/step_XXXXXXXX.safetensors`` (model, EMA and flattened optimizer tensors) plus a JSON
manifest written last (step, sha256 of the tensors file, optimizer hyper-parameters, torch's CPU RNG state, resolved
config). The final EMA weights go to ``ema.safetensors`` with ``model.json`` (the model's constructor kwargs), which
is all :func:`load_stage` needs besides the architecture.

The architecture is the DiT of msf/dit.py unless the caller passes another :class:`Architecture` (a constructor and
its size table, e.g. DiMR from baselines/dimr.py): the loop, the loss and the files are the same for every model.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import safetensors.torch
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ablations.engine.flops import count_params
from ablations.engine.io import append_jsonl, atomic_write, file_sha256, read_jsonl, write_json
from ablations.engine.specs import TrainConfig, TrainJob
from ablations.engine.typed import to_data
from msf.dit import DIT_CONFIGS, DiT
from msf.factorize import Factorization
from msf.flow import flow_loss, sample_time

Log = Callable[[str], None]
# spec keys (dotted) a resume may change: they do not change what the remaining steps compute
RESUMABLE_CHANGES = ("steps", "train.ckpt_every", "train.keep_last", "train.log_every", "train.compile",
                     "train.prefetch", "runtime.threads")
DATA_STREAM, STEP_STREAM, INIT_STREAM = 0, 1, 2
T_SCALE = 1000.0  # flow time t in [0, 1] -> the DiT frequency range of t in [0, 1000) (msf/dit.py)


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed: unreadable, corrupt, or written by a different configuration."""


class DamagedCheckpoint(CheckpointError):
    """A checkpoint whose files are unreadable, corrupt or hold non-finite tensors: the previous one is tried."""


class NonFiniteLossError(RuntimeError):
    """The loss, the gradient norm or a weight became NaN/inf; the run stops and keeps its last finite checkpoint."""


DIVERGED = "diverged.json"  # written into the run folder when training stops on a non-finite value


# ----------------------------------------------------------------------------------------------------------------------
# Distributed setup: torchrun (or submitit on SLURM) environment -> process group.


@dataclass(frozen=True)
class Dist:
    """This process's place in a data-parallel job."""

    rank: int
    world: int
    device: torch.device


@contextlib.contextmanager
def distributed(device: str) -> Iterator[Dist]:
    """Join the job given by RANK/WORLD_SIZE/LOCAL_RANK (torchrun or submitit); gloo on CPU, NCCL on GPU."""
    if "SUBMITIT_EXECUTOR" in os.environ and "RANK" not in os.environ:
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise ValueError("device='cuda' but CUDA is not available")
    dev = torch.device("cpu")
    if use_cuda:  # one GPU per process; LOCAL_RANK modulo the visible count also covers one-GPU-per-task SLURM jobs
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    owner = world > 1 and not dist.is_initialized()
    if owner:
        dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world)
    try:
        yield Dist(rank, world, dev)
    finally:
        if owner:
            dist.destroy_process_group()


def mean_over_ranks(x: Tensor, world: int) -> Tensor:
    """The average of a tensor over all ranks (identity for one process)."""
    if world > 1:
        x = x.clone()
        dist.all_reduce(x)
        x /= world
    return x


# ----------------------------------------------------------------------------------------------------------------------
# Data: teacher-forced pairs of one stage and the step's random draws, each a pure function of (seed, step, rank).


class TargetSource(Protocol):
    """Per-scale cached targets (e.g. TargetCache): ``batch(indices) -> (targets per scale, labels)``."""

    def __len__(self) -> int: ...

    def batch(self, indices: Sequence[int]) -> tuple[list[Tensor], Tensor]: ...


@dataclass
class Batch:
    """One rank's share of a training step: x1 [b,C,h,h], prior [b,C,h,h] or None, y [b], t [b], z0, drop [b]."""

    x1: Tensor
    prior: Tensor | None
    y: Tensor
    t: Tensor
    z0: Tensor
    drop: Tensor

    def map(self, fn: Callable[[Tensor], Tensor]) -> Batch:
        """The batch with ``fn`` applied to every tensor."""
        prior = None if self.prior is None else fn(self.prior)
        return Batch(fn(self.x1), prior, fn(self.y), fn(self.t), fn(self.z0), fn(self.drop))

    def pinned(self) -> Batch:
        """The batch in page-locked memory, so ``to(cuda)`` copies asynchronously."""
        return self.map(Tensor.pin_memory)

    def to(self, device: torch.device) -> Batch:
        """Move every tensor to ``device``."""
        return self.map(functools.partial(Tensor.to, device=device, non_blocking=True))


def generator(seed: int, *key: int) -> torch.Generator:
    """A CPU generator seeded by a hash of (seed, *key): one independent stream per key."""
    digest = hashlib.blake2b(repr((seed, *key)).encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


@functools.lru_cache(maxsize=2)
def epoch_order(seed: int, epoch: int, n: int) -> Tensor:
    """The data order of one epoch, a permutation of range(n) seeded by (seed, epoch)."""
    return torch.randperm(n, generator=generator(seed, DATA_STREAM, epoch))


def rank_indices(step: int, batch_size: int, seed: int, n: int, rank: int, world: int) -> list[int]:
    """Dataset indices of step ``step``'s global batch (drop-last epochs) that belong to ``rank``."""
    epoch, j = divmod(step, n // batch_size)
    b = batch_size // world
    start = j * batch_size + rank * b
    return epoch_order(seed, epoch, n)[start : start + b].tolist()


def make_batch(
    step: int,
    job: TrainJob,
    source: TargetSource,
    factorization: Factorization,
    rank: int,
    world: int,
    pin: bool = False,
) -> Batch:
    """Algorithm 2 (teacher forcing): stage i's target and prior, plus Eq. 5's t, z0 and the CFG label-dropout mask."""
    targets, y = source.batch(rank_indices(step, job.train.batch_size, job.seed, len(source), rank, world))
    x1 = targets[job.stage]  # [b, C, h_i, h_i]
    prior = factorization.priors(targets)[job.stage]  # [b, C, h_i, h_i] or None at scale 0
    g = generator(job.seed, STEP_STREAM, step, rank)
    t = sample_time(x1.shape[0], g, job.train.time_dist)  # [b]
    z0 = torch.randn(x1.shape, generator=g)  # [b, C, h_i, h_i]
    drop = torch.rand(x1.shape[0], generator=g) < job.train.label_dropout  # [b] bool: label -> null class
    batch = Batch(x1.float(), None if prior is None else prior.float(), y.long(), t, z0, drop)
    return batch.pinned() if pin else batch


class InlineExecutor:
    """``submit`` runs the call at once and returns its finished future: batch loading without a thread."""

    def submit(self, fn: Callable[..., Batch], *args: Any) -> Future[Batch]:
        """Run ``fn(*args)`` now."""
        future: Future[Batch] = Future()
        future.set_result(fn(*args))
        return future


@contextlib.contextmanager
def batch_loader(prefetch: bool) -> Iterator[ThreadPoolExecutor | InlineExecutor]:
    """One loader thread that prepares the next batch during the step, or inline loading."""
    if not prefetch:
        yield InlineExecutor()
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool


# ----------------------------------------------------------------------------------------------------------------------
# Model, EMA and learning rate.


@dataclass(frozen=True)
class Architecture:
    """A network the loop can train: a name, a constructor, its size table and its own options.

    ``build(**kwargs, generator=g)`` returns a velocity model ``model(x, t, y, prior=None, *, force_drop_ids=None)``
    with attributes ``input_size``, ``in_channels``, ``prior_channels``, and accepts :func:`stage_kwargs`' keys
    (input_size, in_channels, prior_channels, num_classes, class_dropout_prob, learn_sigma, t_scale) plus its sizes.
    ``options(job)`` are the architecture's own constructor options taken from the job (e.g. DiT's prior_mode).
    ``custom`` says whether a network may be given by depth/width/heads/patch instead of a size-table name.
    """

    name: str
    build: Callable[..., nn.Module]
    sizes: Mapping[str, Mapping[str, Any]]
    options: Callable[[TrainJob], dict[str, Any]]
    custom: bool


DIT = Architecture(
    "dit", DiT, DIT_CONFIGS, lambda job: {"prior_mode": job.prior_mode, "conditioning": job.conditioning}, True
)


def stage_kwargs(
    job: TrainJob, factorization: Factorization, channels: int, arch: Architecture = DIT
) -> dict[str, Any]:
    """Constructor kwargs of stage i (Sec. 4.1): network size, the architecture's options, the stage's latent shape."""
    net = job.network
    if net.size and net.size not in arch.sizes:
        raise ValueError(f"unknown {arch.name} size {net.size!r}; expected one of {', '.join(arch.sizes)}")
    if not net.size and not arch.custom:
        raise ValueError(f"{arch.name} networks are named by size; expected one of {', '.join(arch.sizes)}")
    if job.stage >= len(factorization.scales):
        raise ValueError(f"stage {job.stage} does not exist: the factorization has {len(factorization.scales)} scales")
    size = dict(arch.sizes[net.size]) if net.size else dict(
        depth=net.depth, hidden_size=net.hidden_size, num_heads=net.num_heads, patch_size=net.patch_size
    )
    shape = dict(
        input_size=factorization.scales.sizes[job.stage],
        in_channels=channels,
        prior_channels=channels if job.stage > 0 else 0,
        num_classes=job.num_classes,
        class_dropout_prob=job.train.label_dropout,  # > 0 creates the null-class row used by CFG
        learn_sigma=False,  # a velocity has no variance
        t_scale=T_SCALE,
    )
    return {**size, **arch.options(job), **shape}


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """EMA of the weights (DiT train.py's update_ema): theta_ema <- decay * theta_ema + (1 - decay) * theta."""
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.mul_(decay).add_(p.detach(), alpha=1 - decay)


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to cfg.lr over cfg.warmup_steps, then constant (DiT and Sec. 4.1 use a constant lr)."""
    return cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr


def autocast_dtype(job: TrainJob, device: torch.device) -> torch.dtype | None:
    """bfloat16 when the job asks for it (``train.bf16``) and the device has it, else None: float32."""
    if not job.train.bf16:
        return None
    if device.type == "cpu" and not torch.backends.mkldnn.is_available():
        raise ValueError("train.bf16=true but this CPU build of torch has no bfloat16 kernels (oneDNN)")
    return torch.bfloat16


# ----------------------------------------------------------------------------------------------------------------------
# The training loop.


def train(
    job: TrainJob,
    source: TargetSource,
    factorization: Factorization,
    run_dir: Path,
    log: Log = print,
    arch: Architecture = DIT,
) -> dict[str, Any]:
    """Train stage job.stage with Eq. 5 on Algorithm 2's teacher-forced priors (Sec. 3.3, 4.1); resumes from run_dir.

    Args:
        job: the stage's spec: family network, stage, steps, training seed, optimisation, device and threads.
        source: per-scale cached targets and labels (all scales; the priors are built from the coarser ones).
        factorization: the factorization the targets came from (its ``priors`` and ``scales``).
        run_dir: the run folder: checkpoints/, stats.jsonl, and at the end ema.safetensors + model.json.
        log: where human-readable lines go (rank 0 only).
        arch: the stage model's constructor and size table (default: msf/dit.py's DiT).

    Returns:
        The train metrics of the run-folder schema (the caller writes metrics.json from rank 0).

    Raises:
        NonFiniteLossError: the loss or gradient norm became NaN/inf (the last good checkpoint is kept).
        CheckpointError: the latest checkpoint is unreadable, corrupt, or from a different configuration.
    """
    cfg = job.train
    run_dir = Path(run_dir)
    ckpt_dir, stats_path = run_dir / "checkpoints", run_dir / "stats.jsonl"
    with contextlib.ExitStack() as stack:
        env = stack.enter_context(distributed(job.runtime.device))
        cuda = env.device.type == "cuda"
        loader = stack.enter_context(batch_loader(cuda if cfg.prefetch is None else cfg.prefetch))
        main = env.rank == 0
        log = log if main else lambda _: None
        if cfg.batch_size % env.world or len(source) < cfg.batch_size:
            raise ValueError(f"batch_size {cfg.batch_size}: needs a multiple of {env.world} ranks, <= {len(source)}")
        if cuda:  # numerics of the matmuls: an explicit option
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg.tf32
        run_dir.mkdir(parents=True, exist_ok=True)

        # ---- the stage model (identical initialisation on every rank), its EMA, and AdamW
        kwargs = stage_kwargs(job, factorization, source.batch([0])[0][job.stage].shape[1], arch)
        raw_model = arch.build(**kwargs, generator=generator(job.seed, INIT_STREAM)).to(env.device)
        ema = copy.deepcopy(raw_model).requires_grad_(False).eval()
        fused = env.device.type in ("cpu", "cuda") if cfg.fused_adamw is None else cfg.fused_adamw
        params = [p for p in raw_model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, fused=fused)
        params_m = count_params(raw_model) / 1e6
        log(f"stage {job.stage} ({job.family}, seed {job.seed}): {kwargs}, {params_m:.2f}M parameters")

        # ---- a run that diverged before stops again at once (delete diverged.json to retry the same settings)
        if (run_dir / DIVERGED).is_file():
            raise NonFiniteLossError(json.loads((run_dir / DIVERGED).read_text())["message"] + f" (a previous run; "
                                     f"delete {run_dir / DIVERGED} to retry these settings)")

        # ---- resume from the newest intact checkpoint (damaged ones are skipped; none intact is an error)
        step, latest, damage = 0, None, []
        for manifest in reversed(checkpoints(ckpt_dir)):
            try:
                step = load_checkpoint(manifest, raw_model, ema, opt, job, kwargs, len(source))
            except DamagedCheckpoint as e:
                log(f"{e}; trying the previous checkpoint")
                damage.append(str(e))
                continue
            latest = manifest
            log(f"resumed from {latest} at step {step}")
            break
        if damage and latest is None:
            raise DamagedCheckpoint(f"every checkpoint is damaged, the newest: {damage[0]}; delete {ckpt_dir} to "
                                    "train this stage from the start")
        if main:
            truncate_stats(stats_path, step)  # drop lines logged after the checkpoint by a killed run

        # ---- wrappers: compile, then data parallel (gradients averaged over ranks)
        model: nn.Module = torch.compile(raw_model) if cfg.compile else raw_model  # type: ignore[assignment]
        if env.world > 1:
            model = DistributedDataParallel(model, device_ids=[env.device.index] if cuda else None)
        model.train()
        amp = autocast_dtype(job, env.device)
        autocast = torch.autocast(env.device.type, dtype=amp or torch.float32, enabled=amp is not None)
        fetch = lambda s: loader.submit(make_batch, s, job, source, factorization, env.rank, env.world, cuda)  # noqa: E731
        log_every = cfg.log_every or max(job.steps // 100, 1)
        times: list[tuple[float, float]] = []  # (step seconds, data-wait seconds) of this process
        pending = fetch(step) if step < job.steps else None
        while pending is not None:
            t0 = time.perf_counter()
            # -- data: this step's batch was prepared by the loader thread during the previous step
            batch = pending.result().to(env.device)
            pending = fetch(step + 1) if step + 1 < job.steps else None
            data_wait = time.perf_counter() - t0
            lr = learning_rate(step, cfg)
            for group in opt.param_groups:
                group["lr"] = lr

            # -- forward: Eq. 5's velocity regression; dropped labels are replaced by the null class (CFG)
            with autocast:
                v_model = functools.partial(model, force_drop_ids=batch.drop)
                loss = flow_loss(v_model, batch.x1, batch.t, batch.z0, batch.y, batch.prior).mean()
            loss_value = mean_over_ranks(loss.detach().float(), env.world).item()
            if not math.isfinite(loss_value):
                diverged(run_dir, main, f"the loss is {loss_value}", step + 1, latest, cfg)

            # -- backward, gradient clipping, AdamW, EMA
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = nn.utils.clip_grad_norm_(params, cfg.grad_clip or math.inf).item()
            if not math.isfinite(grad_norm):
                diverged(run_dir, main, f"the gradient norm is {grad_norm}", step + 1, latest, cfg)
            opt.step()
            ema_update(ema, raw_model, cfg.ema_decay)
            step += 1

            # -- stats, progress, checkpoint
            dt = time.perf_counter() - t0
            times.append((dt, data_wait))
            stats = dict(step=step, loss=loss_value, lr=lr, grad_norm=grad_norm, img_per_s=cfg.batch_size / dt)
            line = f"step {step}/{job.steps} loss {loss_value:.4f} lr {lr:.2e} grad {grad_norm:.3f} "
            line += f"{stats['img_per_s']:.1f} img/s data {100 * data_wait / dt:.1f}%"
            if main:
                append_jsonl(stats_path, {**stats, "data_wait_s": data_wait})
                if step % log_every == 0 or step == job.steps:  # the runner shows the latest line as progress
                    log(line)
            if step % cfg.ckpt_every == 0 or step == job.steps:
                if not finite(raw_model, ema):
                    diverged(run_dir, main, "a weight is not finite", step, latest, cfg)
                if main:
                    latest = save_checkpoint(ckpt_dir, step, raw_model, ema, opt, job, kwargs, len(source))
                    prune_checkpoints(ckpt_dir, cfg.keep_last)
                else:
                    latest = ckpt_dir / manifest_name(step)

        # ---- the deliverable: final EMA weights and the constructor kwargs that rebuild the model
        if main:
            save_stage(run_dir, ema, kwargs)
        if env.world > 1:
            dist.barrier()  # rank 0's files are complete before anyone returns
        return train_metrics(job, factorization, read_jsonl(stats_path), raw_model, times, env, amp)


def finite(*modules: nn.Module) -> bool:
    """Whether every parameter and buffer of the modules is finite (no checkpoint is written otherwise)."""
    return all(bool(torch.isfinite(t).all()) for m in modules for t in m.state_dict().values()
               if t.is_floating_point())


def diverged(run_dir: Path, main: bool, what: str, step: int, latest: Path | None, cfg: TrainConfig) -> None:
    """Stop a run whose loss, gradient or weights became non-finite: say where, what is kept, and what to change;
    record it in diverged.json so that a rerun of the same settings stops at once."""
    kept = f"the last finite checkpoint {latest} is kept" if latest else "no checkpoint was written"
    message = (f"training diverged at step {step}: {what} (train.lr={cfg.lr:g}, train.warmup_steps="
               f"{cfg.warmup_steps}, train.grad_clip={cfg.grad_clip}); {kept}; lower train.lr or add warm-up steps")
    if main:
        write_json(run_dir / DIVERGED, {"step": step, "message": message, "checkpoint": str(latest)})
    raise NonFiniteLossError(message)


def train_metrics(
    job: TrainJob,
    factorization: Factorization,
    stats: list[dict],
    model: nn.Module,
    times: list[tuple[float, float]],
    env: Dist,
    amp: torch.dtype | None,
) -> dict[str, Any]:
    """The run-folder schema's train metrics (final_loss_ema100: EMA of the loss with decay 1 - 1/100).

    Besides the losses and timings it records where the run went: device, autocast dtype, world size and threads.
    """
    losses = [s["loss"] for s in stats]
    smooth = functools.reduce(lambda m, x: 0.99 * m + 0.01 * x, losses[1:], losses[0]) if losses else None
    timed = times[1:] or times  # the first step of a process includes start-up (no prefetch yet)
    step_s = sum(dt for dt, _ in timed)
    return {
        "kind": "train",
        "model": job.family,
        "stage": job.stage,
        "train_seed": job.seed,
        "factorization": factorization.name,
        "num_stages": len(factorization.scales),
        "scale_size": factorization.scales.sizes[job.stage],
        "steps": job.steps,
        "final_loss": losses[-1] if losses else None,
        "final_loss_ema100": smooth,
        "params_m": count_params(model) / 1e6,
        "sec_per_step": step_s / len(timed) if timed else None,
        "data_wait_frac": sum(w for _, w in timed) / step_s if timed else None,
        "device": str(env.device),
        "dtype": "bfloat16" if amp is not None else "float32",
        "world_size": env.world,
        "threads": torch.get_num_threads(),
    }


# ----------------------------------------------------------------------------------------------------------------------
# Files: stats.jsonl, checkpoints (safetensors + JSON manifest, atomic), the final stage.


def truncate_stats(path: Path, step: int) -> None:
    """Keep only the stats lines of steps <= ``step`` (the resumed run re-logs the rest)."""
    kept = [r for r in read_jsonl(path) if r["step"] <= step]
    atomic_write(path, lambda tmp: tmp.write_text("".join(json.dumps(r) + "\n" for r in kept)))


def manifest_name(step: int) -> str:
    """The manifest file of the checkpoint after ``step`` steps."""
    return f"step_{step:08d}.json"


def save_checkpoint(
    ckpt_dir: Path,
    step: int,
    model: nn.Module,
    ema: nn.Module,
    opt: torch.optim.Optimizer,
    job: TrainJob,
    kwargs: dict,
    data_len: int,
) -> Path:
    """Tensors to safetensors, then the JSON manifest that names them (written last); returns the manifest."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    optim = opt.state_dict()
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    tensors |= {f"ema/{k}": v for k, v in ema.state_dict().items()}
    tensors |= {f"optim/{i}/{k}": v for i, s in optim["state"].items() for k, v in s.items()}
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    tensors_path = ckpt_dir / f"step_{step:08d}.safetensors"
    atomic_write(tensors_path, lambda tmp: safetensors.torch.save_file(tensors, str(tmp)))
    manifest = {
        "step": step,
        "tensors": tensors_path.name,
        "sha256": file_sha256(tensors_path),
        "param_groups": optim["param_groups"],
        "torch_cpu_rng": torch.get_rng_state().tolist(),
        "config": to_data(job),
        "model_kwargs": kwargs,
        "data_len": data_len,
    }
    path = ckpt_dir / manifest_name(step)
    write_json(path, manifest)
    return path


def checkpoints(ckpt_dir: Path) -> list[Path]:
    """The manifests of the checkpoints in a folder, oldest first."""
    return sorted(ckpt_dir.glob("step_*.json")) if ckpt_dir.is_dir() else []


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The manifest of the newest checkpoint, or None when there is none."""
    manifests = checkpoints(ckpt_dir)
    return manifests[-1] if manifests else None


def prune_checkpoints(ckpt_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (manifest first, so no half-deleted one looks valid)."""
    for manifest in sorted(ckpt_dir.glob("step_*.json"))[:-keep]:
        manifest.unlink()
        manifest.with_suffix(".safetensors").unlink(missing_ok=True)


def load_checkpoint(
    path: Path,
    model: nn.Module,
    ema: nn.Module,
    opt: torch.optim.Optimizer,
    job: TrainJob,
    kwargs: dict,
    data_len: int,
) -> int:
    """Restore model, EMA, optimizer and RNG state from a manifest; return its step.

    Raises:
        DamagedCheckpoint: unreadable or corrupt files, or non-finite tensors (nothing is loaded).
        CheckpointError: a checkpoint of a different config, model or dataset.
    """
    try:
        manifest = json.loads(path.read_text())
        tensors_path = path.parent / manifest["tensors"]
        if file_sha256(tensors_path) != manifest["sha256"]:
            raise DamagedCheckpoint(f"checkpoint {tensors_path} is corrupt (sha256 differs from {path.name})")
        tensors = safetensors.torch.load_file(str(tensors_path))
    except (OSError, KeyError, ValueError, safetensors.SafetensorError) as e:
        if isinstance(e, DamagedCheckpoint):
            raise
        raise DamagedCheckpoint(f"cannot read checkpoint {path}: {e}") from e
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise DamagedCheckpoint(f"checkpoint {tensors_path} holds non-finite tensors ({bad[0]}, ...)")
    old, new = _flat(manifest["config"]), _flat(to_data(job))
    changed = sorted(k for k in old.keys() | new.keys() if k not in RESUMABLE_CHANGES and old.get(k) != new.get(k))
    if changed:
        diffs = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        raise CheckpointError(f"checkpoint {path} was written with a different config ({diffs})")
    if manifest["model_kwargs"] != json.loads(json.dumps(kwargs)) or manifest["data_len"] != data_len:
        raise CheckpointError(f"checkpoint {path} was written for a different model or dataset size")
    part = lambda prefix: {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}  # noqa: E731
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in part("optim/").items():
        i, name = key.split("/")
        state.setdefault(int(i), {})[name] = value
    try:
        model.load_state_dict(part("model/"))
        ema.load_state_dict(part("ema/"))
        opt.load_state_dict({"state": state, "param_groups": manifest["param_groups"]})
    except (RuntimeError, ValueError, KeyError) as e:
        raise CheckpointError(f"checkpoint {path} does not fit the model: {e}") from e
    torch.set_rng_state(torch.tensor(manifest["torch_cpu_rng"], dtype=torch.uint8))
    return int(manifest["step"])


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as {dotted key: leaf value}."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[prefix + k] = v
    return out


def save_stage(run_dir: Path, ema: nn.Module, kwargs: dict) -> None:
    """The final EMA weights (ema.safetensors) and the model's constructor kwargs (model.json)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in ema.state_dict().items()}
    atomic_write(run_dir / "ema.safetensors", lambda tmp: safetensors.torch.save_file(tensors, str(tmp)))
    write_json(run_dir / "model.json", kwargs)


def load_stage(run_dir: Path, device: torch.device | str = "cpu", arch: Architecture = DIT) -> nn.Module:
    """Rebuild a trained stage's EMA model from ema.safetensors + model.json (no unpickling), in eval mode.

    Raises:
        ValueError: model.json holds kwargs that ``arch`` does not take (a run of another architecture).
    """
    run_dir = Path(run_dir)
    kwargs = json.loads((run_dir / "model.json").read_text())
    try:
        model = arch.build(**kwargs)
    except TypeError as e:
        raise ValueError(f"{run_dir / 'model.json'} is not a {arch.name} model ({e}); pass its Architecture") from e
    model.load_state_dict(safetensors.torch.load_file(str(run_dir / "ema.safetensors")))
    return model.to(device).eval()
