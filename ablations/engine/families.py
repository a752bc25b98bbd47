"""The model families of Table 1, one registry entry each: how a family is trained, loaded, sampled, timed and
FLOP-counted.

=========  ==============================================  ===================================================
family     trained by the harness                          sampled by
=========  ==============================================  ===================================================
msf        one DiT stage per scale (Algorithm 2, Eq. 5)    Algorithm 3 (Euler / Heun per scale, CFG per scale)
dit_flow   one DiT at the full latent size, same loop      Algorithm 3 with one scale (a plain flow DiT)
dimr       one DiMR network at the full size, same loop    Algorithm 3 with one scale
dit_xl2    no: the official pretrained checkpoint          DiT's 250-step DDPM, guidance on 3 channels
=========  ==============================================  ===================================================

Adding a baseline is one :class:`ModelFamily` entry in :data:`FAMILIES`: its configuration section
(``baseline.NAME``), the inputs it needs and their checks, the networks it trains, how it is loaded, sampled, timed
and FLOP-counted, and the paper's row it reproduces all come from the entry; nothing else in the code names a
family (presets and sweep files name them as data).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ablations.engine.runfolder import AUTOENCODER_FLOOR, REAL_FLOOR
from ablations.engine.specs import (
    FactorizationSpec,
    PretrainedBaseline,
    SampleJob,
    StageConfig,
    TrainedBaseline,
    TrainJob,
)

if TYPE_CHECKING:  # the registry is read when a command is parsed: torch and the models load only when used
    import torch
    from torch import Tensor, nn

    from ablations.engine.evaluate import LatentSampler
    from ablations.engine.train import Architecture
    from msf.autoencoder import Autoencoder
    from msf.dit import DiT
    from msf.factorize import Factorization
    from msf.pipeline import MSFModel


def dit_architecture() -> Architecture:
    """MSF's stage network and the flow DiT: msf/dit.py's DiT."""
    from ablations.engine.train import DIT

    return DIT


def dimr_architecture() -> Architecture:
    """DiMR (baselines/dimr.py), named by its size table."""
    from ablations.engine.train import Architecture
    from baselines.dimr import DIMR_CONFIGS, DiMR

    return Architecture("dimr", DiMR, DIMR_CONFIGS, lambda job: {}, False)


def factorization_of(spec: FactorizationSpec) -> Factorization:
    """The factorization object of a spec (Algorithm 1): its name, validated scales and Up/Down filter."""
    from msf.factorize import make_factorization, make_scales

    return make_factorization(spec.name, make_scales(spec.scales, spec.scales[-1]), spec.mode)


def forward_gflops(net: nn.Module, channels: int, h: int, prior: bool, device: torch.device) -> float:
    """GFLOPs of one network call (x, t, y[, prior]) on one h x h latent (Table 1 'GFLOPs')."""
    import torch

    from ablations.engine.flops import count_forward_flops

    x = torch.zeros(1, channels, h, h, device=device)
    t, y = torch.zeros(1, device=device), torch.zeros(1, dtype=torch.long, device=device)
    return count_forward_flops(net, x, t, y, x if prior else None) / 1e9


@dataclass(frozen=True)
class Loaded:
    """A family's trained (or pretrained) model, ready to sample, with what Table 1 reports about it."""

    sampler: LatentSampler  # (labels [B], per-sample seeds) -> latents [B, C, h_N, h_N] (images when ``decoded``)
    forward_gflops: list[float]  # one network call per scale
    params_m: float | None
    factorization: str | None
    scales: list[int] | None
    conditioning: str | None  # the stage blocks' conditioning (msf), None for the baselines
    msf: MSFModel | None = None  # the multi-scale model, for the base / residual / sum figure
    decoded: bool = False  # the sampler returns images in [-1, 1] (the real-image floor), not latents


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


@dataclass(frozen=True)
class ModelFamily:
    """One model family of Table 1 (see the module docstring), or one of the anchors every table has.

    Attributes:
        name: the family's name in sweeps, run keys and metrics.
        load: the sample job's model: (spec, dependency run folders by role, autoencoder, device) -> Loaded.
        architecture: the network the training loop builds for it (loaded on call), or None (pretrained weights, or
            an anchor made of real images).
        multi_scale: one network per MSF scale (the ``msf`` section), else one network at the full latent size.
        section: its configuration section ``baseline.NAME`` (its default value; a TrainedBaseline for a
            single-scale baseline the harness trains, a PretrainedBaseline for published weights), or None.
        latent: a pretrained family's fixed latent shape (C, h, w) (DiT-XL/2: 4 x 32 x 32, the SD VAE at 256 px).
        checkpoint_network: the network a pretrained family's checkpoint loads into (a StageConfig of its layout ->
            the module), so that the checkpoint can be checked tensor by tensor before anything runs.
        checkpoint_name: what its checkpoint is, for messages.
        speed_plan: its networks at the paper's sizes, steps and CFG (Table 1, Sec. 4.2); empty: not timed.
        speed_network: a random-weight network of one speed stage.
        speed_sampler: the whole latent sampler over the speed plan's networks.
        anchor: for the anchors made of real images, the anchor they are (REAL_FLOOR: the floor, AUTOENCODER_FLOOR:
            the autoencoder's floor); None for a model.
        paper_row: the row of the paper's Table 1 that the family reproduces at a sweep point's CFG scales, if any.
        speed_rank: its place among the baselines of the speed claim (Table 1 'Time'): the lowest ranked one
            evaluated alike is compared with MSF; None: never.
    """

    name: str
    load: Callable[[SampleJob, dict[str, Path], Autoencoder, torch.device], Loaded]
    architecture: Callable[[], Architecture] | None = None
    multi_scale: bool = False
    section: Callable[[], Any] | None = None
    latent: tuple[int, int, int] | None = None
    checkpoint_network: Callable[[StageConfig], nn.Module] | None = None
    checkpoint_name: str = ""
    speed_plan: tuple[SpeedStage, ...] = ()
    speed_network: Callable[[SpeedStage], nn.Module] | None = None
    speed_sampler: Callable[[list[nn.Module], Sequence[SpeedStage], torch.device], LatentSampler] | None = None
    anchor: str | None = None
    paper_row: Callable[[list[float]], str | None] = lambda cfg: None
    speed_rank: int | None = None

    @property
    def trained(self) -> bool:
        """Whether the harness trains it."""
        return self.architecture is not None

    @property
    def pretrained(self) -> bool:
        """Whether it loads published weights (its section names the checkpoint)."""
        return self.checkpoint_network is not None


# ----------------------------------------------------------------------------------------------------------------------
# Trained families (msf, dit_flow, dimr): stages trained by engine/train.py, sampled by Algorithm 3.


def trained_loader(
    architecture: Callable[[], Architecture],
) -> Callable[[SampleJob, dict[str, Path], Autoencoder, torch.device], Loaded]:
    """The eval-time loader of a family trained by the harness: its train jobs' EMA weights, Algorithm 3; a
    multi-scale family's loaded model records its stages' conditioning and keeps the MSF model for the base /
    residual / sum figure."""

    def load(job: SampleJob, deps: dict[str, Path], ae: Autoencoder, device: torch.device) -> Loaded:
        from ablations.engine.evaluate import compiled, msf_sampler
        from ablations.engine.flops import count_params
        from ablations.engine.io import read_json
        from ablations.engine.specs import read_spec
        from ablations.engine.train import load_stage
        from msf.dit import set_attention
        from msf.pipeline import MSFModel

        arch = architecture()
        train0: TrainJob = read_spec(read_json(deps["train0"] / "config.json"))
        fac = factorization_of(train0.factorization)
        stages = [load_stage(deps[f"train{i}"], device, arch) for i in range(len(fac.scales))]
        for st in stages:
            set_attention(st, job.sampling.attention)
        fast = [compiled(st, job.sampling.compile, device) for st in stages]
        msf = MSFModel(fast, fac, ae.channels, job.data.num_classes).to(device).eval()
        gflops = [forward_gflops(st, ae.channels, h, bool(st.prior_channels), device)
                  for st, h in zip(stages, fac.scales.sizes, strict=True)]
        assert job.sample is not None, "a trained family is sampled at an eval point's sample settings"
        sampler = msf_sampler(msf, job.sample.steps, job.sample.cfg, job.sample.solver, device)
        multi_scale = FAMILIES[job.family].multi_scale
        return Loaded(sampler, gflops, count_params(msf) / 1e6, fac.name, list(fac.scales.sizes),
                      train0.conditioning if multi_scale else None, msf if multi_scale else None)

    return load


def _flow_speed_sampler(nets: list[nn.Module], plan: Sequence[SpeedStage], device: torch.device) -> LatentSampler:
    """Algorithm 3 (Euler) over a speed plan's networks: the residual factorization at the plan's sizes."""
    from ablations.engine.evaluate import msf_sampler
    from msf.factorize import make_factorization, make_scales
    from msf.pipeline import MSFModel

    fac = make_factorization("residual", make_scales([st.h for st in plan], plan[-1].h))
    msf = MSFModel(nets, fac, channels=4, num_classes=1000)
    return msf_sampler(msf, [st.steps for st in plan], [st.cfg for st in plan], "euler", device)


def _dit_speed_network(stage: SpeedStage) -> nn.Module:
    """A random MSF stage or flow DiT of the speed plan (velocity output: no learned sigma)."""
    from msf.dit import build_dit

    return build_dit(stage.size, input_size=stage.h, learn_sigma=False, prior_channels=4 if stage.prior else 0,
                     **dict(stage.overrides))


def _dimr_speed_network(stage: SpeedStage) -> nn.Module:
    """A random DiMR of the speed plan."""
    from baselines.dimr import build_dimr

    return build_dimr(stage.size, input_size=stage.h, **dict(stage.overrides))


# ----------------------------------------------------------------------------------------------------------------------
# The pretrained DiT-XL/2 baseline (baselines/dit.py): official weights, 250-step DDPM, guidance on 3 channels.

DIT_XL2_LATENT = (4, 32, 32)


def _load_dit_xl2(job: SampleJob, deps: dict[str, Path], ae: Autoencoder, device: torch.device) -> Loaded:
    """The official DiT-XL/2 checkpoint (state dict only) with its DDPM sampler at the eval point's steps and CFG."""
    from ablations.engine.evaluate import compiled
    from ablations.engine.flops import count_params
    from baselines.dit import load_official_checkpoint, sample_ddpm
    from msf.dit import set_attention

    assert job.network is not None, "the DiT-XL/2 baseline names its network"
    net = set_attention(load_official_checkpoint(str(job.checkpoint), dit_xl2_network(job.network)),
                        job.sampling.attention).to(device).eval()
    fast = compiled(net, job.sampling.compile, device)
    assert job.sample is not None, "DiT-XL/2 is sampled at an eval point's sample settings"
    steps, cfg = job.sample.steps[0], job.sample.cfg[0]
    c, h, _ = DIT_XL2_LATENT

    def sampler(y: Tensor, seeds: Sequence[int]) -> Tensor:
        return sample_ddpm(fast, y, seeds, cfg, steps)

    return Loaded(sampler, [forward_gflops(net, c, h, False, device)], count_params(net) / 1e6, "none (DDPM)", [h],
                  None)


def dit_xl2_network(network: StageConfig) -> DiT:
    """DiT-XL/2's network as released (32x32x4 latents, 1000 classes, learned sigma), or a network of the same
    layout with another depth/width (a rehearsal's stand-in checkpoint)."""
    from baselines.dit import dit_xl2
    from msf.dit import DIT_CONFIGS

    if network.size:
        return dit_xl2(**DIT_CONFIGS[network.size])
    return dit_xl2(depth=network.depth, hidden_size=network.hidden_size, num_heads=network.num_heads,
                   patch_size=network.patch_size)


def _dit_xl2_speed_network(stage: SpeedStage) -> nn.Module:
    """DiT-XL/2 as released, random weights."""
    from baselines.dit import dit_xl2

    return dit_xl2(input_size=stage.h, **dict(stage.overrides))


def _dit_xl2_speed_sampler(nets: list[nn.Module], plan: Sequence[SpeedStage], device: torch.device) -> LatentSampler:
    """DiT-XL/2's DDPM sampler at the plan's steps and CFG."""
    from baselines.dit import sample_ddpm

    (st,) = plan
    return lambda y, seeds: sample_ddpm(nets[0], y, seeds, st.cfg, st.steps, (4, st.h, st.h))


# ----------------------------------------------------------------------------------------------------------------------
# Real images: the floor of every table (real vs real at the same sample count), sampled like a model.


def _load_real(job: SampleJob, deps: dict[str, Path], ae: Autoencoder, device: torch.device) -> Loaded:
    """The floor of every table: held-out real images, returned in [-1, 1]."""
    from ablations.engine.data import dataset, held_out
    from ablations.engine.images import to_float

    pick = held_out(dataset(job.data, "train"), job.data.num_classes)
    return Loaded(lambda y, seeds: to_float(pick(y, seeds)).to(device), [], None, None, None, None, decoded=True)


def _load_reconstructed(job: SampleJob, deps: dict[str, Path], ae: Autoencoder, device: torch.device) -> Loaded:
    """The autoencoder's floor of every table: the same held-out images as the real floor (same seeds), encoded by
    the run's autoencoder; decoding them is what no diffusion model on this latent can beat (Sec. 3.2)."""
    from ablations.engine.data import dataset, held_out
    from ablations.engine.images import to_float

    pick = held_out(dataset(job.data, "train"), job.data.num_classes)
    return Loaded(lambda y, seeds: ae.encode(to_float(pick(y, seeds)).to(device)), [], None, None, None, None)


# ----------------------------------------------------------------------------------------------------------------------
# The registry.

def _msf_row(cfg: list[float]) -> str | None:
    """MSF's rows of Table 1: CFG 1.4 or 1.5 on the base scale, none on the residual (Table 1)."""
    return {1.4: "MSF(cfg=1.4)", 1.5: "MSF(cfg=1.5)"}.get(cfg[0]) if len(cfg) == 2 and cfg[1] == 1.0 else None


METHOD = "msf"  # the paper's model: every table's ceiling is it, untrained
FAMILIES: dict[str, ModelFamily] = {
    f.name: f
    for f in (
        ModelFamily(
            name=METHOD,
            load=trained_loader(dit_architecture),
            architecture=dit_architecture,
            multi_scale=True,
            speed_plan=(SpeedStage("MSF-stage1", 24, False, 100, 1.4), SpeedStage("MSF-stage2", 32, True, 50, 1.0)),
            speed_network=_dit_speed_network,
            speed_sampler=_flow_speed_sampler,
            paper_row=_msf_row,
        ),
        ModelFamily(
            name="dit_flow",
            load=trained_loader(dit_architecture),
            architecture=dit_architecture,
            section=lambda: TrainedBaseline(depth=6, hidden_size=128),
            speed_rank=1,  # not timed at the paper's size (it is DiT-XL/2's network under a flow sampler)
        ),
        ModelFamily(
            name="dimr",
            load=trained_loader(dimr_architecture),
            architecture=dimr_architecture,
            section=lambda: TrainedBaseline(size="DiMR-tiny"),
            speed_plan=(SpeedStage("DiMR-XL/2R", 32, False, 250, 1.5),),  # our flow sampler at DiT-XL/2's steps
            speed_network=_dimr_speed_network,
            speed_sampler=_flow_speed_sampler,
        ),
        ModelFamily(
            name="dit_xl2",
            load=_load_dit_xl2,
            section=lambda: PretrainedBaseline(size="DiT-XL/2"),
            latent=DIT_XL2_LATENT,
            checkpoint_network=dit_xl2_network,
            checkpoint_name="the official DiT-XL-2-256x256.pt state dict",
            speed_plan=(SpeedStage("DiT-XL/2", 32, False, 250, 1.5),),  # the official 250-step DDPM sampler
            speed_network=_dit_xl2_speed_network,
            speed_sampler=_dit_xl2_speed_sampler,
            paper_row=lambda cfg: "DiT-XL/2 [38]",
            speed_rank=0,
        ),
        ModelFamily(name="real", load=_load_real, anchor=REAL_FLOOR),  # held-out real images: every table's floor
        ModelFamily(name="reconstructed", load=_load_reconstructed, anchor=AUTOENCODER_FLOOR),  # the same, via E, D
    )
}
SPEED_FAMILIES = tuple(name for name, f in FAMILIES.items() if f.speed_plan)  # the speed sweep's rows
ANCHOR_FAMILIES = tuple(name for name, f in FAMILIES.items() if f.anchor)  # every table's floors
