"""Run one typed job in its run folder: read the spec back from config.json, do the work, write metrics.json last.

A run folder holds ``config.json`` (the job's kind, key, results version and spec, written by the launcher before the
job starts), ``log.txt``, the job's outputs, and ``metrics.json``, written last and atomically: its presence means the
job is done. Each kind of job is one function ``fn(spec, run_dir, deps, log) -> metrics``, where ``deps``
maps a dependency's role (autoencoder, cache, train0, train1, ...) to its run folder.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ablations.engine import autoencoders, committed, runfolder
from ablations.engine.allocator import keep_freed_memory
from ablations.engine.cache import TargetCache, build_cache, part_stats
from ablations.engine.data import dataset
from ablations.engine.evaluate import (
    compiled,
    decomposition,
    generate,
    sample_seeds,
    sampling_gflops,
    time_sampling,
)
from ablations.engine.families import FAMILIES, ModelFamily, SpeedStage, factorization_of, forward_gflops
from ablations.engine.flops import count_params
from ablations.engine.images import to_float, to_uint8
from ablations.engine.io import read_json, write_json
from ablations.engine.metrics import (
    ReferenceKey,
    bootstrap_fid,
    cached_reference,
    class_labels_for,
    embedded_extractor,
    extract_features,
    inception_extractor,
    load_adm_npz,
    load_adm_reference,
    metrics_from_features,
    save_adm_npz,
)
from ablations.engine.specs import (
    AutoencoderJob,
    CacheJob,
    ReconJob,
    Runtime,
    SampleJob,
    ScoreJob,
    SpeedJob,
    TrainJob,
    kind_of,
    read_spec,
)
from ablations.engine.speed import device_description, matmul_tflops, median_seconds, utilisation
from ablations.engine.train import train
from msf.dit import set_attention
from msf.factorize import Up

Log = Callable[[str], None]


def device_of(runtime: Runtime) -> torch.device:
    """The job's torch device: "auto" is CUDA where available, else the CPU."""
    if runtime.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if runtime.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but this machine has no CUDA device")
    return torch.device(runtime.device)


def features_file(features: str) -> Path:
    """The embedded world's feature network: a frozen one by name (assets.py, hash checked) or a file."""
    return committed.asset(features) if features in committed.ASSETS else Path(features)


# ----------------------------------------------------------------------------------------------------------------------
# One function per kind of job.


def autoencoder_job(spec: AutoencoderJob, run_dir: Path, deps: dict[str, Path], log: Log) -> dict[str, Any]:
    """Train the embedded preset's small AutoencoderKL and report its held-out reconstruction PSNR."""
    c = spec.autoencoder
    t0 = time.time()
    ae = autoencoders.train_small_autoencoder(
        dataset(spec.data, "train"), autoencoders.SmallAEConfig(
            block_out_channels=tuple(c.block_out_channels), latent_channels=c.latent_channels,
            steps=c.steps, batch_size=c.batch_size, lr=c.lr),
        torch.Generator().manual_seed(spec.data.seed), log=log)
    seconds = time.time() - t0
    autoencoders.save_autoencoder(ae, run_dir / "autoencoder")
    ref = dataset(spec.data, "ref")
    x = to_float(ref.make_batch(list(range(min(256, len(ref)))))[0])  # [B, 3, H, W] in [-1, 1]
    with torch.no_grad():
        psnr = autoencoders.psnr(((ae.decode(ae.encode(x)).clamp(-1, 1) - x) ** 2).mean().item())
    log(f"autoencoder: {seconds:.0f}s, held-out PSNR {psnr:.2f} dB")
    return {"psnr_ref_db": psnr, "train_seconds": seconds, "factor": ae.factor, "channels": ae.channels}


def cache_job(spec: CacheJob, run_dir: Path, deps: dict[str, Path], log: Log) -> dict[str, Any]:
    """Pre-extract every training image's per-scale targets (Algorithm 1) into a resumable memory-mapped store."""
    device = device_of(spec.runtime)
    ae = autoencoders.load(spec.autoencoder, deps.get("autoencoder")).to(device)
    t0 = time.time()
    c = spec.cache
    build_cache(run_dir / "cache", dataset(spec.data, "train"), ae, factorization_of(spec.factorization),
                batch_size=c.batch_size, shard_size=c.shard_size, flip=c.flip, dtype=c.dtype, device=device, log=log,
                workers=c.workers, part=spec.part, parts=c.parts)
    seconds = time.time() - t0
    items, rms = part_stats(run_dir / "cache")  # the RMS of each scale's first targets: a cheap check
    return {"items": items, "seconds": seconds, "images_per_s": items / (2 if c.flip == "both" else 1) / seconds,
            "target_rms": rms, "device": device_description(device), "part": spec.part, "parts": c.parts}


def train_job(spec: TrainJob, run_dir: Path, deps: dict[str, Path], log: Log) -> dict[str, Any]:
    """Train one stage (or a single-scale baseline) on the cached targets with teacher forcing (Algorithm 2, Eq. 5)."""
    family = FAMILIES[spec.family]
    assert family.architecture is not None, f"{spec.family} is not trained by the harness"
    cache = TargetCache(*(deps[role] / "cache" for role in sorted(deps) if role.startswith("cache")))
    return train(spec, cache, factorization_of(spec.factorization), run_dir, log, family.architecture())


SAMPLES = "samples.npz"  # a sample job's images: ADM's layout, uint8 NHWC under arr_0, labels under arr_1


def sample_job(spec: SampleJob, run_dir: Path, deps: dict[str, Path], log: Log) -> dict[str, Any]:
    """One eval point's images: N samples (Algorithm 3 + decode), saved once as uint8 in ADM's npz layout, with
    counted GFLOPs per image and (for one seed per setting) the time per 64 images (Sec. 4.2).

    The anchors of every table are sampled alike: held-out real images (the floor), the same images through the
    run's autoencoder (the autoencoder's floor), both families whose registry entry names the anchor, and an MSF
    whose stages were trained for 0 steps (the ceiling); ``anchor`` says which.
    """
    s, e = spec.sample, spec.sampling
    device = device_of(spec.runtime)
    dtype = getattr(torch, e.dtype)  # the networks' autocast dtype (ODE state and decoding stay float32)
    ae = autoencoders.load(spec.autoencoder, deps.get("autoencoder")).to(device)
    family = FAMILIES[spec.family]
    model = family.load(spec, deps, ae, device)
    decode = (lambda x: x) if model.decoded else ae.decode  # noqa: E731
    train_steps = [read_spec(read_json(deps[f"train{i}"] / "config.json")).steps
                   for i in range(len(model.scales or [])) if f"train{i}" in deps] or None
    anchor = family.anchor or (runfolder.CEILING if train_steps and not any(train_steps) else None)

    # ---- samples: labels spread evenly over the classes, one seed per sample
    n, num_classes = e.n_samples, spec.data.num_classes
    labels = class_labels_for(n, num_classes)
    images = generate(model.sampler, decode, labels, sample_seeds(spec.sample_seed, n), device, e.batch_size,
                      dtype, log)
    save_adm_npz(run_dir / SAMPLES, images.permute(0, 2, 3, 1).numpy(), labels.numpy())
    grid = torch.stack([images[labels == y][:8] for y in range(min(num_classes, 16))])  # [classes, 8, 3, H, W]
    np.save(run_dir / "grid.npy", grid.permute(0, 1, 3, 4, 2).numpy())
    titles = None
    if model.msf is not None and s is not None and len(model.msf.factorization.scales) > 1:
        k = min(4, n)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            parts, titles = decomposition(model.msf, ae.decode, labels[:k], sample_seeds(spec.sample_seed, k),
                                          s.steps, s.cfg, s.solver, device)
        np.save(run_dir / "decomposition.npy", parts.numpy())

    # ---- compute: counted GFLOPs per image and (for one seed per setting) time per 64 images
    timing: dict[str, Any] = {"sample_time_per_64_s": None}
    if spec.time_sampling:
        cpu = device.type == "cpu"
        timing = time_sampling(model.sampler, decode, num_classes, device, dtype, batch=16 if cpu else 64,
                               repeats=1 if cpu else 3)
    return {
        **timing,
        "model": spec.family, "anchor": anchor, "preset": spec.preset, "dataset": spec.data.name, "n_samples": n,
        "sample_seed": spec.sample_seed, "train_seed": spec.train_seed, "train_steps": train_steps,
        "autoencoder": ae.name, "factorization": model.factorization, "scales": model.scales,
        "steps": None if s is None else s.steps, "cfg": None if s is None else s.cfg,
        "cfg_convention": "dit: v_u + w (v_c - v_u), w=1 no guidance", "solver": None if s is None else s.solver,
        "params_m": model.params_m,
        "gflops_per_image": None if s is None else sampling_gflops(model.forward_gflops, s.steps, s.cfg, s.solver),
        "device": device_description(device), "dtype": e.dtype, "world_size": 1,
        "switches": {"attention": e.attention, "compile": e.compile},
        "conditioning": model.conditioning, "decomposition_columns": titles,
    }


def score_job(spec: ScoreJob, run_dir: Path, deps: dict[str, Path], log: Log) -> dict[str, Any]:
    """Score one sample job's saved images: features -> statistics -> FID, IS, precision/recall against the
    reference set (Sec. 4.2). Its metrics repeat what the sample job recorded, so that each score run describes the
    images it scored."""
    e = spec.scoring
    device = device_of(spec.runtime)
    samples = deps["samples"]
    images = torch.from_numpy(load_adm_npz(samples / SAMPLES)).permute(0, 3, 1, 2)  # uint8 [N, 3, H, W]
    if e.world == "embedded":
        extractor = embedded_extractor(features_file(e.features), device)
    else:
        extractor = inception_extractor(device, e.inception_weights)
    if e.reference_npz:  # the paper's protocol: ADM's ImageNet reference batch
        reference = load_adm_reference(e.reference_npz, extractor, e.batch_size, device)
    else:
        ref_set = dataset(spec.data, "ref")
        key = ReferenceKey(dataset=ref_set.key, split="ref", extractor=extractor.label, n=len(ref_set))

        def ref_features() -> torch.Tensor:
            ref_images, _ = ref_set.make_batch(list(range(len(ref_set))))
            return extract_features(ref_images, extractor, e.batch_size, device).features

        reference = cached_reference(run_dir.parent / "_refstats", key, ref_features)
    fake = extract_features(images, extractor, e.batch_size, device)
    metrics = metrics_from_features(fake, reference, extractor, device=device)
    log(f"scored {len(images)} images of {samples.name}: FID {metrics['fid']:.4g}")
    if e.bootstrap > 0:
        sampled = read_json(samples / "metrics.json")
        g = torch.Generator().manual_seed(int(sampled["sample_seed"]))
        metrics["fid_bootstrap_95"] = list(bootstrap_fid(fake.features, reference, e.bootstrap, g))
    described = {k: v for k, v in read_json(samples / "metrics.json").items() if k not in ("kind", "outputs")}
    return {**described, **metrics, "samples": samples.name}


def recon_job(spec: ReconJob, run_dir: Path, deps: dict[str, Path], log: Log) -> dict[str, Any]:
    """Fig. 2: decode the accumulated latent after each scale; PSNR of each partial reconstruction vs the image."""
    device = device_of(spec.runtime)
    ae = autoencoders.load(spec.autoencoder, deps.get("autoencoder")).to(device)
    fac = factorization_of(spec.factorization)
    images, _ = dataset(spec.data, "ref").make_batch(list(range(64)))
    x = to_float(images).to(device)
    with torch.no_grad():
        targets = fac.targets(x, ae.encode, ae.factor)
        state, partial_images = None, []
        for i, f_i in enumerate(targets):
            state, _ = fac.step(state, f_i, i)
            partial_images.append(ae.decode(Up(state, fac.scales.full, fac.mode)).clamp(-1, 1))
    psnr = [float(10 * torch.log10(4.0 / ((p - x) ** 2).mean())) for p in partial_images]
    np.save(run_dir / "decomposition.npy",
            torch.stack([to_uint8(p[:4]).cpu() for p in partial_images], 1).permute(0, 1, 3, 4, 2).numpy())
    log(f"{fac.name}: PSNR per scale {[round(p, 2) for p in psnr]}")
    return {"factorization": fac.name, "scales": list(fac.scales.sizes), "psnr_per_scale": psnr,
            "psnr_full": psnr[-1]}


def speed_benchmark(family: ModelFamily, plan: tuple[SpeedStage, ...], device: torch.device, dtype: torch.dtype,
                    attention: str, compile_mode: str, method: str, batch: int, log: Log,
                    repeats: int = 0) -> dict[str, Any]:
    """Counted FLOPs and measured time per image of one family's speed plan, and its utilisation of the matmul rate.

    method "forward": the median of ``repeats`` (default 5) timed network calls at the sampler's batch (2 x ``batch``
    under CFG) x steps, per image (cheap; CPU at the paper's sizes). method "sample": the whole sampler on one batch
    of ``batch`` images (noise, every step, CFG, the factorization; no VAE decode), the median of ``repeats``
    (default 3) after a warm-up sample.
    """
    assert family.speed_network is not None and family.speed_sampler is not None, f"{family.name} is not timed"
    nets = [set_attention(family.speed_network(st), attention).to(device).eval() for st in plan]
    gflops = [forward_gflops(net, 4, st.h, st.prior, device) for net, st in zip(nets, plan, strict=True)]
    tflops = sum(g * st.passes for g, st in zip(gflops, plan, strict=True)) / 1e3
    fast = [compiled(net, compile_mode, device) for net in nets]
    y = torch.arange(batch, device=device) % 1000
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        if method == "forward":
            seconds = 0.0
            for net, st in zip(fast, plan, strict=True):
                nb = batch * st.passes // st.steps  # the sampler's batch: 2B under CFG (both halves in one call)
                x = torch.randn(nb, 4, st.h, st.h, device=device)
                args = (x, torch.rand(nb, device=device), y.repeat(nb // batch), x if st.prior else None)
                seconds += median_seconds(partial(net, *args), device, repeats=repeats or 5) / batch * st.steps
                log(f"{family.name}: {st.size} forward of {nb} at {st.h}x{st.h} timed, {st.steps} calls per batch")
        else:
            sampler = family.speed_sampler(fast, plan, device)
            seconds = median_seconds(lambda: sampler(y, list(range(batch))), device, repeats=repeats or 3) / batch
            log(f"{family.name}: whole sampler timed on a batch of {batch}")
    peak = matmul_tflops(device, dtype)
    log(f"{family.name}: {seconds:.3g} s/img, {tflops:.3g} TFLOPs/img, matmul rate {peak:.3g} TFLOP/s")
    return {"model": family.name, "paper_row": family.paper_row([st.cfg for st in plan]),
            "params_m": sum(count_params(n) for n in nets) / 1e6,
            "gflops_per_forward": gflops, "tflops_per_image": tflops, "steps": [st.steps for st in plan],
            "cfg": [st.cfg for st in plan], "sec_per_image": seconds, "images_per_s": 1 / seconds,
            "matmul_tflops": peak, "achieved_tflops": tflops / seconds, "mfu": utilisation(tflops, seconds, peak),
            "batch": batch, "device": device_description(device), "dtype": str(dtype).replace("torch.", ""),
            "method": {"forward": "median call time x steps", "sample": "whole sampler, one batch"}[method],
            "switches": {"attention": attention, "compile": compile_mode}}


def speed_job(spec: SpeedJob, run_dir: Path, deps: dict[str, Path], log: Log) -> dict[str, Any]:
    """One family at the paper's sizes, steps and CFG (MSF 100x2 + 50, DiT-XL/2 and DiMR-XL/2R 250x2), random
    weights: :func:`speed_benchmark` at batch 64 on CUDA (whole sampler by default), batch 2 on CPU (one timed call
    x steps by default) (Table 1 'Time')."""
    device = device_of(spec.runtime)
    method = spec.speed.method if spec.speed.method != "auto" else ("sample" if device.type == "cuda" else "forward")
    batch = spec.speed.batch or (64 if device.type == "cuda" else 2)
    family = FAMILIES[spec.family]
    return speed_benchmark(family, family.speed_plan, device, getattr(torch, spec.dtype), spec.attention,
                           spec.compile, method, batch, log, spec.speed.repeats)


JOBS: dict[str, Callable[[Any, Path, dict[str, Path], Log], dict[str, Any]]] = {
    "autoencoder": autoencoder_job,
    "cache": cache_job,
    "train": train_job,
    "sample": sample_job,
    "score": score_job,
    "recon": recon_job,
    "speed": speed_job,
}


# ----------------------------------------------------------------------------------------------------------------------
# Running a job in its run folder: lock, log, metrics.json last and atomically.


class DependencyDamaged(RuntimeError):
    """A dependency's recorded output differs from what its job wrote; it is set aside to be recomputed."""


def run(run_dir: str | Path, say: Log = print, held: bool = False) -> dict[str, Any]:
    """Run the job whose spec is in ``run_dir/config.json``, unless it is done with intact outputs.

    Returns the job's metrics. The spec is read back into its dataclass; the dependencies' run folders are the
    folders named in config.json's ``deps``, beside this one, and the outputs this job loads from them are checked
    against their recorded hashes first. The job takes the run folder's lock, waiting for another runner that holds
    it (``say`` tells the user), after which its finished result is used; ``held``: the caller (the local runner,
    which took the lock when it chose this job) holds it already. metrics.json is written last, with the sizes and
    hashes of the outputs.
    """
    run_dir = Path(run_dir)
    done = run_dir / "metrics.json"
    if runfolder.done(run_dir):
        return read_json(done)
    wrong = runfolder.spec_problems(run_dir)
    if wrong:
        raise ValueError(wrong[0])
    record = read_json(run_dir / "config.json")
    spec = read_spec(record)
    deps = {role: run_dir.parent / name for role, name in record["deps"].items()}
    if spec.runtime.threads > 0:
        torch.set_num_threads(spec.runtime.threads)
    keep_freed_memory()  # glibc: freed tensors' memory reused, not mapped and zeroed again (a speed, not a result)
    if int(os.environ.get("RANK", "0")) > 0:  # a data-parallel peer: rank 0 holds the lock, writes log and metrics
        return JOBS[kind_of(spec)](spec, run_dir, deps, lambda _: None)
    with contextlib.nullcontext() if held else runfolder.job_lock(run_dir, on_wait=say):
        if runfolder.done(run_dir):  # finished by another runner while we waited
            return read_json(done)
        if done.exists():
            say(f"{record['name']}: damaged outputs ({'; '.join(runfolder.problems(run_dir))}); recomputing it")
            runfolder.reopen(run_dir)
        for role, dep in deps.items():
            problems = runfolder.problems(dep, hashes=True)
            if problems:
                runfolder.reopen(dep)
                raise DependencyDamaged(f"{problems[0]} ({role} of {record['name']}); it was set aside: run the "
                                        "command again to recompute it")
        with open(run_dir / "log.txt", "a") as log_fh:

            def log(msg: str) -> None:
                log_fh.write(f"[{time.strftime('%H:%M:%S')}] {msg}\n")
                log_fh.flush()

            log(f"start {record['name']}")
            t0 = time.time()
            metrics = JOBS[kind_of(spec)](spec, run_dir, deps, log)
            seconds = time.time() - t0
            log(f"done {record['name']}")
        write_json(done, {"kind": record["kind"], **metrics, "job_seconds": seconds,
                          "outputs": runfolder.record_outputs(run_dir)})
        return metrics
