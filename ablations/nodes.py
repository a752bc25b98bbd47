"""What each kind of graph node does: a thin layer from a node's resolved config to the msf engine (harness).

Every function has the signature ``fn(node, run_dir, deps, log) -> metrics`` where ``deps`` maps a dependency's role
(autoencoder, classifier, cache, train0, train1, ...) to its run folder; the caller writes metrics.json last.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ablations.graph import Node
from msf import autoencoder as ae_lib
from msf.cache import TargetCache, build_cache
from msf.classifier import accuracy, save_classifier, train_classifier
from msf.data import build_dataset
from msf.dit import build_dit, set_attention
from msf.evaluate import generate, msf_sampler, sample_seeds, sampling_gflops, time_sampling
from msf.factorize import Up, make_factorization, make_scales
from msf.flops import count_forward_flops
from msf.metrics import (
    ReferenceKey,
    bootstrap_fid,
    cached_reference,
    class_labels_for,
    embedded_extractor,
    extract_features,
    inception_extractor,
    load_adm_reference,
    metrics_from_features,
    save_adm_npz,
    to_uint8,
)
from msf.pipeline import MSFModel, compiled
from msf.speed import device_description, matmul_tflops, median_seconds, utilisation
from msf.train import DIT, Architecture, TrainConfig, load_stage, train

Log = Callable[[str], None]


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _dataset(data: dict[str, Any], split: str):
    length = data["train_size"] if split == "train" else data["ref_size"]
    return build_dataset(data["name"], data["root"], split, data["image_size"], data["num_classes"], data["seed"],
                         length if data["name"] == "embedded" else None)


def load_autoencoder(config: dict[str, Any], deps: dict[str, str]) -> ae_lib.Autoencoder:
    """The node's autoencoder: trained small KL (from its node), the pretrained VAE (local path) or pixels."""
    kind = config["autoencoder"]["kind"]
    if kind == "pixel":
        return ae_lib.PixelAutoencoder()
    if kind == "pretrained":
        return ae_lib.load_pretrained_vae(config["autoencoder"]["path"])
    return ae_lib.load_autoencoder(Path(deps["autoencoder"]) / "autoencoder")


def node_autoencoder(node: Node, run_dir: Path, deps: dict[str, str], log: Log) -> dict[str, Any]:
    """Train the embedded preset's small AutoencoderKL and report its held-out reconstruction PSNR."""
    c = node.config["autoencoder"]
    t0 = time.time()
    ae = ae_lib.train_small_autoencoder(
        _dataset(node.config["data"], "train"), ae_lib.SmallAEConfig(
            block_out_channels=tuple(c["block_out_channels"]), latent_channels=c["latent_channels"],
            steps=c["steps"], batch_size=c["batch_size"], lr=c["lr"]),
        torch.Generator().manual_seed(node.config["data"]["seed"]), log=log)
    seconds = time.time() - t0
    ae_lib.save_autoencoder(ae, run_dir / "autoencoder")
    ref = _dataset(node.config["data"], "ref")
    x = ref.make_batch(list(range(min(256, len(ref)))))[0].float() / 127.5 - 1.0  # [B, 3, H, W] in [-1, 1]
    with torch.no_grad():
        psnr = ae_lib.psnr(((ae.decode(ae.encode(x)).clamp(-1, 1) - x) ** 2).mean().item())
    log(f"autoencoder: {seconds:.0f}s, held-out PSNR {psnr:.2f} dB")
    return {"psnr_ref_db": psnr, "train_seconds": seconds, "factor": ae.factor, "channels": ae.channels}


def node_classifier(node: Node, run_dir: Path, deps: dict[str, str], log: Log) -> dict[str, Any]:
    """Train the embedded feature extractor on the train split; report its held-out accuracy (target >= 95%)."""
    data = node.config["data"]
    train_set, ref_set = _dataset(data, "train"), _dataset(data, "ref")

    def batch_fn(g: torch.Generator):
        return train_set.make_batch(torch.randint(len(train_set), (64,), generator=g).tolist())

    g = torch.Generator().manual_seed(data["seed"])
    model = train_classifier(batch_fn, data["num_classes"], node.config["steps"], g, log)
    images, labels = ref_set.make_batch(list(range(len(ref_set))))
    acc = accuracy(model, images, labels)
    save_classifier(model, run_dir / "classifier.safetensors", {"accuracy_ref": f"{acc:.4f}"})
    log(f"classifier held-out accuracy {acc:.4f}")
    return {"accuracy_ref": acc}


def _factorization(config: dict[str, Any], factor: int):
    full = config["data"]["image_size"] // factor
    return make_factorization(config["factorization"], make_scales(config["scales"], full), config["mode"])


def node_cache(node: Node, run_dir: Path, deps: dict[str, str], log: Log) -> dict[str, Any]:
    """Pre-extract every training image's per-scale targets (Algorithm 1) into a resumable memory-mapped store."""
    ae = load_autoencoder(node.config, deps)
    t0 = time.time()
    cache = build_cache(run_dir / "cache", _dataset(node.config["data"], "train"), ae,
                        _factorization(node.config, ae.factor), batch_size=256, shard_size=4096, log=log)
    return {"items": len(cache), "seconds": time.time() - t0}


def _architecture(model: str) -> Architecture:
    """The network family a train node's model uses: DiMR for the dimr baseline, else the DiT (harness)."""
    if model != "dimr":
        return DIT
    from baselines.dimr import DIMR_CONFIGS, DiMR

    return Architecture("dimr", DiMR, DIMR_CONFIGS)


def node_train(node: Node, run_dir: Path, deps: dict[str, str], log: Log) -> dict[str, Any]:
    """Train one stage (or a single-scale baseline) on the cached targets with teacher forcing (Algorithm 2, Eq. 5)."""
    c, t = node.config, node.config["train"]
    cache = TargetCache(Path(deps["cache"]) / "cache")
    factor = c["data"]["image_size"] // c["scales"][-1]
    m = c["stage_model"]
    if c["model"] == "dimr":  # a size-table entry, trained by the same loop (baselines/dimr.py)
        size, overrides = m["size"], {}
    else:
        size = "DiT-S/2"
        overrides = {"depth": m["depth"], "hidden_size": m["hidden_size"], "num_heads": m["num_heads"],
                     "patch_size": m["patch_size"], "prior_mode": c["prior_mode"],
                     **({"conditioning": c["conditioning"]} if "conditioning" in c else {})}
    cfg = TrainConfig(
        stage=c["stage"], model=size, model_overrides=overrides,
        num_classes=c["data"]["num_classes"], batch_size=t["batch_size"], steps=t["steps"], lr=t["lr"],
        warmup_steps=t["warmup_steps"], weight_decay=t["weight_decay"], ema_decay=t["ema_decay"],
        grad_clip=t["grad_clip"], label_dropout=t["label_dropout"], time_dist=t["time_dist"], seed=t["seed"],
        tf32=t["tf32"], ckpt_every=t["ckpt_every"], log_every=max(t["steps"] // 20, 1),
    )
    return train(cfg, cache, _factorization(c, factor), run_dir, log, _architecture(c["model"]))


def _forward_gflops(net: torch.nn.Module, channels: int, h: int, prior: bool, device: torch.device) -> float:
    """GFLOPs of one stage-model call (x, t, y[, prior]) on one h x h latent (Table 1 'GFLOPs')."""
    x = torch.zeros(1, channels, h, h, device=device)
    t, y = torch.zeros(1, device=device), torch.zeros(1, dtype=torch.long, device=device)
    return count_forward_flops(net, x, t, y, x if prior else None) / 1e9


def _latent_sampler(c: dict[str, Any], deps: dict[str, str], channels: int, device: torch.device):
    """(sampler, per-scale forward GFLOPs, parameters in M, factorization name, scales) of the eval's model."""
    s, e = c["sample"], c["eval"]
    if c["model"] == "dit_xl2":  # the official pretrained baseline: 250-step DDPM, guidance on 3 channels
        from baselines.dit import dit_xl2, load_official_checkpoint, sample_ddpm

        net = set_attention(load_official_checkpoint(c["checkpoint"], dit_xl2()), e["attention"]).to(device).eval()
        gflops = [_forward_gflops(net, 4, 32, False, device)]
        fast = compiled(net, e["compile"], device)
        sampler = lambda y, seeds: sample_ddpm(fast, y, seeds, s["cfg"][0], s["steps"][0])  # noqa: E731
        return sampler, gflops, sum(p.numel() for p in net.parameters()) / 1e6, "none (DDPM)", [32]
    train_cfg = json.loads((Path(deps["train0"]) / "config.json").read_text())["config"]
    fac = _factorization(train_cfg, c["data"]["image_size"] // train_cfg["scales"][-1])
    arch = _architecture(c["model"])
    stages = [load_stage(Path(deps[f"train{i}"]), device, arch) for i in range(len(fac.scales))]
    for st in stages:
        set_attention(st, e["attention"])
    fast_stages = [compiled(st, e["compile"], device) for st in stages]
    msf = MSFModel(fast_stages, fac, channels, c["data"]["num_classes"]).to(device).eval()
    gflops = [_forward_gflops(st, channels, h, bool(st.prior_channels), device)
              for st, h in zip(stages, fac.scales.sizes, strict=True)]
    sampler = msf_sampler(msf, s["steps"], s["cfg"], s["solver"], device)
    return sampler, gflops, sum(p.numel() for p in msf.parameters()) / 1e6, fac.name, list(fac.scales.sizes)


def node_eval(node: Node, run_dir: Path, deps: dict[str, str], log: Log) -> dict[str, Any]:
    """One eval point: N samples (Algorithm 3 + decode) -> FID/IS/precision/recall, time per 64 images, GFLOPs."""
    c, s, e = node.config, node.config["sample"], node.config["eval"]
    device = _device(c["device"])
    dtype = getattr(torch, e["dtype"])  # the networks' autocast dtype (ODE state and decoding stay float32)
    ae = load_autoencoder(c, deps)
    decode = ae.to(device).decode if hasattr(ae, "to") else ae.decode
    sampler, gflops, params_m, fac_name, scales = _latent_sampler(c, deps, ae.channels, device)

    # ---- features: the embedded classifier or Inception, and the reference statistics (cached)
    if e["world"] == "embedded":
        extractor = embedded_extractor(Path(deps["classifier"]) / "classifier.safetensors", device)
    else:
        extractor = inception_extractor(device, e["inception_weights"])
    ref_set = _dataset(c["data"], "ref")
    key = ReferenceKey(dataset=getattr(ref_set, "key", c["data"]["name"]), split="ref", extractor=extractor.label,
                       n=len(ref_set))

    def ref_features() -> torch.Tensor:
        images, _ = ref_set.make_batch(list(range(len(ref_set))))
        return extract_features(images, extractor, e["batch_size"], device).features

    if e["reference_npz"]:  # the paper's protocol: ADM's ImageNet reference batch
        reference = load_adm_reference(e["reference_npz"], extractor, e["batch_size"], device)
    else:
        reference = cached_reference(Path(node.run_dir).parent / "_refstats", key, ref_features)

    # ---- samples: labels spread evenly over the classes, one seed per sample
    n, num_classes = e["n_samples"], c["data"]["num_classes"]
    labels = class_labels_for(n, num_classes)
    images = generate(sampler, decode, labels, sample_seeds(c["seed"], n), device, e["batch_size"], dtype, log)
    fake = extract_features(images, extractor, e["batch_size"], device)
    metrics = metrics_from_features(fake, reference, extractor, device=device)
    if e["bootstrap"] > 0:
        g = torch.Generator().manual_seed(c["seed"])
        metrics["fid_bootstrap_95"] = list(bootstrap_fid(fake.features, reference, e["bootstrap"], g))
    if e["save_npz"]:
        save_adm_npz(run_dir / "samples.npz", images.permute(0, 2, 3, 1).numpy())
    grid = torch.stack([images[labels == y][:8] for y in range(min(num_classes, 16))])  # [classes, 8, 3, H, W]
    np.save(run_dir / "grid.npy", grid.permute(0, 1, 3, 4, 2).numpy())

    # ---- compute: counted GFLOPs per image and (for the first seed only) time per 64 images
    timing: dict[str, Any] = {"sample_time_per_64_s": None}
    if c["seed"] == e["seeds"][0]:
        cpu = device.type == "cpu"
        timing = time_sampling(sampler, decode, num_classes, device, dtype, batch=16 if cpu else 64,
                               repeats=1 if cpu else 3)
    return {
        **metrics, **timing,
        "model": c["model"], "preset": c["preset"], "dataset": c["data"]["name"], "n_samples": n,
        "seed": c["seed"], "factorization": fac_name, "scales": scales, "steps": s["steps"],
        "cfg": s["cfg"], "cfg_convention": "dit: v_u + w (v_c - v_u), w=1 no guidance", "solver": s["solver"],
        "params_m": params_m, "gflops_per_image": sampling_gflops(gflops, s["steps"], s["cfg"], s["solver"]),
        "device": device_description(device), "dtype": str(dtype).replace("torch.", ""),
        "switches": {"attention": e["attention"], "compile": e["compile"]},
        "conditioning": _conditioning(c, deps),
    }


def _conditioning(config: dict[str, Any], deps: dict[str, str]) -> str | None:
    """How the MSF stages' blocks are conditioned (adaLN-Zero unless the train nodes say tdln); None for baselines."""
    if config["model"] != "msf":
        return None
    return json.loads((Path(deps["train0"]) / "config.json").read_text())["config"].get("conditioning", "adaln_zero")


def node_recon(node: Node, run_dir: Path, deps: dict[str, str], log: Log) -> dict[str, Any]:
    """Fig. 2: decode the accumulated latent after each scale; PSNR of each partial reconstruction vs the image."""
    c = node.config
    ae = load_autoencoder(c, deps)
    fac = _factorization(c, ae.factor)
    images, _ = _dataset(c["data"], "ref").make_batch(list(range(64)))
    x = images.float() / 127.5 - 1.0
    with torch.no_grad():
        targets = fac.targets(x, ae.encode, ae.factor)
        state, partial = None, []
        for i, f_i in enumerate(targets):
            state, _ = fac.step(state, f_i, i)
            partial.append(ae.decode(Up(state, fac.scales.full, fac.mode)).clamp(-1, 1))
    psnr = [float(10 * torch.log10(4.0 / ((p - x) ** 2).mean())) for p in partial]
    np.save(run_dir / "decomposition.npy",
            torch.stack([to_uint8(p[:4]) for p in partial], 1).permute(0, 1, 3, 4, 2).numpy())
    log(f"{fac.name}: PSNR per scale {[round(p, 2) for p in psnr]}")
    return {"factorization": fac.name, "scales": list(fac.scales.sizes), "psnr_per_scale": psnr,
            "psnr_full": psnr[-1]}


@dataclass(frozen=True)
class SpeedStage:
    """One network of a speed plan: its size-table name, latent size h, input prior or not, sampling steps and CFG
    scale (DiT convention, 1 = one pass per step), and constructor overrides (tests shrink the paper's sizes)."""

    size: str
    h: int
    prior: bool
    steps: int
    cfg: float
    overrides: tuple[tuple[str, Any], ...] = ()

    @property
    def passes(self) -> int:
        """Forward passes per image: steps x 2 under CFG (conditional and null halves in one 2B batch)."""
        return self.steps * (1 if self.cfg == 1.0 else 2)


SPEED_PLANS = {  # model -> its networks at the paper's sizes, steps and CFG (Table 1, Sec. 4.2)
    "dit_xl2": [SpeedStage("DiT-XL/2", 32, False, 250, 1.5)],  # the official 250-step DDPM sampler
    "msf": [SpeedStage("MSF-stage1", 24, False, 100, 1.4), SpeedStage("MSF-stage2", 32, True, 50, 1.0)],
    "dimr": [SpeedStage("DiMR-XL/2R", 32, False, 250, 1.5)],  # our flow sampler at DiT-XL/2's steps (not DPM-Solver)
}


def speed_network(model: str, stage: SpeedStage) -> torch.nn.Module:
    """A randomly initialised network of a speed plan (DiT-XL/2 as released, DiMR, or an MSF stage)."""
    from baselines.dimr import build_dimr
    from baselines.dit import dit_xl2

    kw = dict(stage.overrides)
    if model == "dit_xl2":
        return dit_xl2(input_size=stage.h, **kw)
    if model == "dimr":
        return build_dimr(stage.size, input_size=stage.h, **kw)
    return build_dit(stage.size, input_size=stage.h, learn_sigma=False, prior_channels=4 if stage.prior else 0, **kw)


def speed_sampler(model: str, nets: list[torch.nn.Module], plan: list[SpeedStage], device: torch.device):
    """The model's whole latent sampler at the plan's steps and CFG: DiT-XL/2's DDPM, else Algorithm 3 (Euler)."""
    if model == "dit_xl2":
        from baselines.dit import sample_ddpm

        (st,) = plan
        return lambda y, seeds: sample_ddpm(nets[0], y, seeds, st.cfg, st.steps, (4, st.h, st.h))
    fac = make_factorization("residual", make_scales([st.h for st in plan], plan[-1].h))
    msf = MSFModel(nets, fac, channels=4, num_classes=1000)
    return msf_sampler(msf, [st.steps for st in plan], [st.cfg for st in plan], "euler", device)


def speed_benchmark(model: str, plan: list[SpeedStage], device: torch.device, dtype: torch.dtype, attention: str,
                    compile_mode: str, method: str, batch: int, log: Log, repeats: int = 0) -> dict[str, Any]:
    """Counted FLOPs and measured time per image of one model's plan, and its utilisation of the matmul rate.

    method "forward": the median of ``repeats`` (default 5) timed network calls at the sampler's batch (2 x ``batch``
    under CFG) x steps, per image (cheap; CPU at the paper's sizes). method "sample": the whole sampler on one batch
    of ``batch`` images (noise, every step, CFG, the factorization; no VAE decode), the median of ``repeats``
    (default 3) after a warm-up sample.
    """
    nets = [set_attention(speed_network(model, st), attention).to(device).eval() for st in plan]
    gflops = [_forward_gflops(net, 4, st.h, st.prior, device) for net, st in zip(nets, plan, strict=True)]
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
                log(f"{model}: {st.size} forward of {nb} at {st.h}x{st.h} timed, {st.steps} calls per batch")
        else:
            sampler = speed_sampler(model, fast, plan, device)
            seconds = median_seconds(lambda: sampler(y, list(range(batch))), device, repeats=repeats or 3) / batch
            log(f"{model}: whole sampler timed on a batch of {batch}")
    peak = matmul_tflops(device, dtype)
    log(f"{model}: {seconds:.3g} s/img, {tflops:.3g} TFLOPs/img, matmul rate {peak:.3g} TFLOP/s")
    return {"model": model, "params_m": sum(p.numel() for n in nets for p in n.parameters()) / 1e6,
            "gflops_per_forward": gflops, "tflops_per_image": tflops, "steps": [st.steps for st in plan],
            "cfg": [st.cfg for st in plan], "sec_per_image": seconds, "images_per_s": 1 / seconds,
            "matmul_tflops": peak, "achieved_tflops": tflops / seconds, "mfu": utilisation(tflops, seconds, peak),
            "batch": batch, "device": device_description(device), "dtype": str(dtype).replace("torch.", ""),
            "method": {"forward": "median call time x steps", "sample": "whole sampler, one batch"}[method],
            "switches": {"attention": attention, "compile": compile_mode}}


def node_speed(node: Node, run_dir: Path, deps: dict[str, str], log: Log) -> dict[str, Any]:
    """One model at the paper's sizes, steps and CFG (MSF 100x2 + 50, DiT-XL/2 and DiMR-XL/2R 250x2), random
    weights: :func:`speed_benchmark` at batch 64 on CUDA (whole sampler by default), batch 2 on CPU (one timed call
    x steps by default) (Table 1 'Time')."""
    c = node.config
    device = _device(c["device"])
    method = c["method"] if c["method"] != "auto" else ("sample" if device.type == "cuda" else "forward")
    batch = c["batch"] or (64 if device.type == "cuda" else 2)
    return speed_benchmark(c["model"], SPEED_PLANS[c["model"]], device, getattr(torch, c["dtype"]), c["attention"],
                           c["compile"], method, batch, log, c["repeats"])


NODE_FUNCTIONS: dict[str, Callable[[Node, Path, dict[str, str], Log], dict[str, Any]]] = {
    "autoencoder": node_autoencoder,
    "classifier": node_classifier,
    "cache": node_cache,
    "train": node_train,
    "eval": node_eval,
    "recon": node_recon,
    "speed": node_speed,
}
