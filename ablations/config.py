"""The sweep configuration: presets, sweeps (YAML) and ``key=value`` overrides merged into one typed Config.

Order of precedence: dataclass defaults < preset YAML (``ablations/presets/NAME.yaml``) < the sweep's ``base`` block
< command-line ``key=value`` overrides, which the dry-run lists. A key that the sweep's eval points set (its
``grid`` or ``points``) cannot be given on the command line: that would be silently ignored. Every section type is
the engine's (ablations/engine/specs.py), so the planner hands settings to jobs without copying them field by field.
Every error is a :class:`ConfigError`: the runner prints it on one line and exits with code 2.
"""

from __future__ import annotations

import copy
import difflib
import importlib.util
import itertools
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ablations.engine import paths
from ablations.engine.assets import ASSETS
from ablations.engine.families import FAMILIES
from ablations.engine.specs import (
    AutoencoderConfig,
    BaselineConfig,
    CacheConfig,
    DataConfig,
    Device,
    EvalConfig,
    MSFConfig,
    SampleConfig,
    SeedsConfig,
    SpeedConfig,
    StageConfig,
    TrainConfig,
    latent_channels,
    latent_factor,
)
from ablations.engine.typed import NON_NEGATIVE, POSITIVE, TypedDataError, all_keys, checked, from_data, to_data

HERE = Path(__file__).resolve().parent
PRESETS_DIR = HERE / "presets"
SWEEPS_DIR = HERE / "sweeps"
RENAMED = {  # keys of earlier versions -> their names now
    "train.steps": "msf.steps",
    "train.seed": "seeds.train",
    "eval.seeds": "seeds.sample",
}


class ConfigError(ValueError):
    """A bad command line, preset or sweep: the runner prints it on one line and exits with code 2."""


@dataclass(frozen=True)
class SlurmConfig:
    """Resources of the SLURM jobs (launcher=slurm)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    nodes: int = checked(1, check=POSITIVE)  # training jobs: nodes per job
    gpus_per_node: int = checked(8, check=NON_NEGATIVE)  # training jobs: one task per GPU; other jobs use one GPU
    tasks_per_node: int = checked(0, check=NON_NEGATIVE)  # training jobs' processes per node (0: one per GPU)
    cpus_per_task: int = checked(8, check=POSITIVE)
    mem_gb: int = checked(64, check=POSITIVE)
    timeout_min: int = checked(60 * 24, check=POSITIVE)  # per job; longer work is requeued and resumes
    array_parallelism: int = checked(16, check=POSITIVE)
    gpu_tflops: float = checked(312.0, check=POSITIVE)  # the dry-run's estimate: a GPU's dense bf16 rate (A100)
    mfu: float = checked(0.4, check=POSITIVE)  # the dry-run's estimate: the share of it the jobs reach


@dataclass(frozen=True)
class Config:
    """Everything a sweep run is configured by (see the module docstring for where values come from)."""

    sweep: str = ""
    preset: str = "tiny"
    launcher: Literal["inprocess", "local", "slurm"] = "inprocess"  # inprocess | local (submitit) | slurm
    runs_dir: str = "runs"
    device: Device = "auto"  # auto | cpu | cuda: every job of the sweep runs there
    cpu_threads: int = checked(0, check=NON_NEGATIVE)  # torch intra-op threads per job (0: torch's default)
    workers: int = checked(0, check=NON_NEGATIVE)  # local launchers: jobs at once (0: as cores and memory allow)
    data: DataConfig = field(default_factory=DataConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    msf: MSFConfig = field(default_factory=MSFConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seeds: SeedsConfig = field(default_factory=SeedsConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)


@dataclass(frozen=True)
class Sweep:
    """A sweep: which models to train and which evaluation points to run (one paper table or figure)."""

    name: str
    description: str
    table: str
    points: list[dict[str, Any]]  # each: overrides of one eval point, e.g. {"sample.cfg": [1.2, 1.0]}
    models: list[str]  # families (ablations/engine/families.py)
    recon: bool = False  # factorization reconstruction jobs (Fig. 2)
    speed: bool = False  # timing/FLOP jobs at the paper's sizes
    overrides: dict[str, Any] = field(default_factory=dict)  # command-line keys that replaced preset/base values


KEYS = all_keys(Config)


# ----------------------------------------------------------------------------------------------------------------------
# Merging YAML and command-line values into a nested mapping, then into the typed Config.


def available(directory: Path) -> list[str]:
    """The names of the YAML files of a folder (presets, sweeps)."""
    return sorted(p.stem for p in directory.glob("*.yaml"))


def _unknown(key: str) -> ConfigError:
    """The error for a key Config does not have, with a suggestion."""
    if key in RENAMED:
        return ConfigError(f"key {key!r} is now {RENAMED[key]!r}")
    close = difflib.get_close_matches(key, KEYS, n=1)
    return ConfigError(f"unknown key {key!r}" + (f"; did you mean {close[0]!r}?" if close else ""))


def set_key(data: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted key (e.g. ``train.lr``) in a nested mapping; a mapping value merges into a section."""
    prefixes = {k.rsplit(".", i)[0] for k in KEYS for i in range(k.count(".") + 1)}
    if key not in prefixes:
        raise _unknown(key)
    *parents, leaf = key.split(".")
    node = data
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{key}: {p} is not a section")
    if isinstance(value, dict) and key not in KEYS:  # a whole section, e.g. data: {name: embedded, ...}
        for k, v in value.items():
            set_key(data, f"{key}.{k}", v)
    else:
        node[leaf] = copy.deepcopy(value)


def parse_value(text: str) -> Any:
    """A command-line value, parsed as YAML (so 1.5, 3e-4, [100,50], true and null work)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse value {text!r}: {str(e).splitlines()[0]}") from None


def load_yaml(path: Path) -> dict[str, Any]:
    """A YAML file holding a mapping, read safely (no Python objects)."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at top level")
    return data


def _name(kind: str, name: str, directory: Path) -> Path:
    """The YAML file of a preset or sweep given by name (never a path)."""
    names = available(directory)
    if name not in names:
        raise ConfigError(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(names)}")
    return directory / f"{name}.yaml"


def load_sweep(name: str, preset: str) -> tuple[Sweep, dict[str, Any]]:
    """Read ``sweeps/NAME.yaml``: its description, models, eval points (``points`` and/or ``grid``) and base block."""
    raw = load_yaml(_name("sweep", name, SWEEPS_DIR))
    by_preset = raw.get("by_preset", {}).get(preset, {})
    grid = by_preset.get("grid", raw.get("grid", {}))
    points = list(by_preset.get("points", raw.get("points", [])))
    if grid:
        keys = list(grid)
        points += [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))]
    models = sorted({p.get("model", "msf") for p in points} | set(raw.get("models", [])))
    unknown = [m for m in models if m not in FAMILIES]
    if unknown:
        raise ConfigError(f"sweep {name}: unknown model {unknown[0]!r}; expected one of {', '.join(FAMILIES)}")
    sweep = Sweep(
        name=name,
        description=raw.get("description", ""),
        table=str(raw.get("table", "")),
        points=points,
        models=models,
        recon=bool(raw.get("recon", False)),
        speed=bool(raw.get("speed", False)),
    )
    base = {**raw.get("base", {}), **by_preset.get("base", {})}
    return sweep, base


def typed(data: dict[str, Any]) -> Config:
    """The Config of a nested mapping, every value checked against its type and range."""
    try:
        return from_data(Config, data)
    except TypedDataError as e:
        raise ConfigError(str(e)) from None


def resolve(argv_pairs: list[tuple[str, str]]) -> tuple[Config, Sweep]:
    """Build the resolved Config and Sweep from ``key=value`` pairs (``sweep=`` required)."""
    pairs = dict(argv_pairs)
    if "sweep" not in pairs:
        raise ConfigError(f"missing sweep=NAME; valid sweeps: {', '.join(available(SWEEPS_DIR))}")
    preset = pairs.get("preset", "tiny")
    data: dict[str, Any] = {}
    for k, v in load_yaml(_name("preset", preset, PRESETS_DIR)).items():
        set_key(data, k, v)
    sweep, base = load_sweep(pairs["sweep"], preset)
    for k, v in base.items():
        set_key(data, k, v)
    swept = {k for p in sweep.points for k in p if k != "model"}
    overrides = {}
    for k, v in argv_pairs:
        if k in ("sweep", "preset"):
            continue
        if k in swept:
            raise ConfigError(f"{k} is swept by sweep={sweep.name} (its eval points set it); drop {k}=... or "
                              "choose another sweep")
        value = parse_value(v)
        set_key(data, k, value)
        overrides[k] = value
    set_key(data, "sweep", sweep.name)
    set_key(data, "preset", preset)
    cfg = typed(data)
    resolved = to_data(cfg)
    for k in overrides:  # as typed: 3e-4 -> 0.0003, [1e3, 5e2] -> [1000, 500]
        overrides[k] = lookup(resolved, k)
    sweep = Sweep(**{**sweep.__dict__, "overrides": overrides})
    validate(cfg, sweep)
    for point in sweep.points:
        validate_point(point_config(cfg, point), point.get("model", "msf"), sweep)
    return cfg, sweep


def lookup(data: dict[str, Any], key: str) -> Any:
    """The value of a dotted key in nested config data."""
    for part in key.split("."):
        data = data[part]
    return data


def point_config(cfg: Config, point: dict[str, Any]) -> Config:
    """The config of one eval point: ``cfg`` with the point's overrides (all but ``model``)."""
    data = to_data(cfg)
    for k, v in point.items():
        if k != "model":
            set_key(data, k, v)
    return typed(data)


def per_scale(values: list[Any], n: int, key: str) -> list[Any]:
    """One entry per scale: a shorter list repeats its last entry; a longer one is an error."""
    if not values:
        raise ConfigError(f"{key}=[]: expected at least one entry (one per scale)")
    if len(values) > n:
        raise ConfigError(f"{key} has {len(values)} entries but there are only {n} scales")
    return [values[min(i, len(values) - 1)] for i in range(n)]


# ----------------------------------------------------------------------------------------------------------------------
# Checks that need several keys or the file system: all made before anything is written.


def validate_point(cfg: Config, model: str, sweep: Sweep) -> None:
    """Checks of one eval point's settings."""
    from msf.factorize import ScaleSpecError, make_scales  # torch: imported once a command got this far

    family = FAMILIES[model]
    try:
        factor = latent_factor(cfg.autoencoder)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if family.multi_scale:
        stages = per_scale(cfg.msf.stages, len(cfg.msf.scales), "msf.stages")
        per_scale(cfg.msf.steps, len(cfg.msf.scales), "msf.steps")
        patch = max(s.patch_size for s in stages)
        if cfg.data.image_size % (factor * patch):
            raise ConfigError(f"data.image_size={cfg.data.image_size} is not divisible by the autoencoder factor "
                              f"{factor} times the patch size {patch}")
        try:
            make_scales(cfg.msf.scales, cfg.data.image_size // factor, patch)
        except ScaleSpecError as e:
            raise ConfigError(f"msf.scales={cfg.msf.scales}: {e}") from None
        n = len(cfg.msf.scales)
    else:
        n = 1
        if cfg.data.image_size % factor:
            raise ConfigError(f"data.image_size={cfg.data.image_size} is not divisible by the autoencoder factor "
                              f"{factor}")
    for key in ("sample.steps", "sample.cfg"):
        value = getattr(cfg.sample, key.split(".")[1])
        if len(value) != n:
            raise ConfigError(f"{key}={value} has {len(value)} entries but model {model} has {n} scale(s)")
    if family.latent is not None:
        c, h, _ = family.latent
        if cfg.data.image_size // factor != h or latent_channels(cfg.autoencoder) != c:
            raise ConfigError(f"model {model} samples {c}x{h}x{h} latents: it needs data.image_size={h * 8} with "
                              "the SD VAE (autoencoder.kind=pretrained)")


def validate(cfg: Config, sweep: Sweep) -> None:
    """Checks across keys, and of every path, made when the command is parsed."""
    if cfg.data.name in ("imagefolder", "cifar10") and not cfg.data.root:
        raise ConfigError(f"data.name={cfg.data.name} needs data.root=DIR (the dataset folder)")
    if cfg.data.name == "embedded" and cfg.data.root:
        raise ConfigError(f"data.root={cfg.data.root!r} is set but data.name=embedded ignores it; add "
                          "data.name=imagefolder (or cifar10)")
    if cfg.autoencoder.kind == "pretrained" and not cfg.autoencoder.path:
        raise ConfigError("autoencoder.kind=pretrained needs autoencoder.path (a local folder with the VAE weights)")
    frozen_aes = [name for name, a in ASSETS.items() if a.folder]
    if cfg.autoencoder.kind == "frozen" and cfg.autoencoder.frozen not in frozen_aes:
        raise ConfigError(f"autoencoder.frozen={cfg.autoencoder.frozen!r} is not one of the committed autoencoders: "
                          f"{', '.join(frozen_aes)} (autoencoder.kind=pretrained loads a folder)")
    if cfg.eval.world == "embedded" and cfg.eval.features not in ASSETS:
        try:
            paths.classifier_file("eval.features", cfg.eval.features)
        except paths.PathError as e:
            raise ConfigError(f"{e}; or name a frozen network: {', '.join(ASSETS)}") from None
    if cfg.eval.world != "inception":
        for key in ("inception_weights", "reference_npz"):
            if getattr(cfg.eval, key):
                raise ConfigError(f"eval.{key} is set but eval.world={cfg.eval.world} ignores it; add "
                                  "eval.world=inception")
    if "dit_xl2" in sweep.models and not cfg.baseline.dit_xl2_checkpoint:
        raise ConfigError("this sweep needs baseline.dit_xl2_checkpoint=PATH (the official DiT-XL-2-256x256.pt)")
    if cfg.eval.compile == "reduce-overhead" and cfg.device == "cpu":
        raise ConfigError("eval.compile=reduce-overhead captures CUDA graphs: it needs device=cuda (or auto on a GPU)")
    if cfg.eval.attention == "xformers" and importlib.util.find_spec("xformers") is None:
        raise ConfigError("eval.attention=xformers but xformers is not installed (pip install -e '.[gpu]')")
    if cfg.launcher == "slurm" and "workers" in sweep.overrides:
        raise ConfigError(f"workers={cfg.workers} applies to the local launchers (inprocess, local); with "
                          "launcher=slurm every job is a SLURM job (slurm.array_parallelism caps the eval array)")
    if cfg.launcher == "slurm" and shutil.which("sbatch") is None:
        raise ConfigError("launcher=slurm but no sbatch on PATH: run on a SLURM login node or use launcher=local")
    if not sweep.points and not sweep.recon and not sweep.speed:
        raise ConfigError(f"sweep {sweep.name} has no eval points at preset {cfg.preset}")
    try:
        check_paths(cfg, sweep)
    except paths.PathError as e:
        raise ConfigError(str(e)) from None


def check_paths(cfg: Config, sweep: Sweep) -> None:
    """Every path key the sweep uses: exists, right kind, right format, opened without running code."""
    paths.writable_folder("runs_dir", cfg.runs_dir)
    if cfg.data.name == "imagefolder":
        paths.image_folder("data.root", str(cfg.data.root))
    if cfg.data.name == "cifar10":
        paths.cifar10_folder("data.root", str(cfg.data.root))
    if cfg.autoencoder.kind == "pretrained":
        paths.vae_folder("autoencoder.path", str(cfg.autoencoder.path))
    if cfg.eval.world == "inception":  # the given file, or torch-fidelity's download in torch's hub cache
        weights = cfg.eval.inception_weights or paths.hub_inception_weights()
        if weights is None:
            raise paths.PathError("eval.world=inception needs eval.inception_weights=FILE (torch-fidelity's "
                                  "pt_inception-2015-12-05-6726825d.pth; nothing is downloaded here)")
        paths.torch_state_dict("eval.inception_weights", str(weights),
                               "torch-fidelity's InceptionV3 weights, pt_inception-2015-12-05")
    if cfg.eval.reference_npz:
        paths.adm_reference("eval.reference_npz", cfg.eval.reference_npz)
    if "dit_xl2" in sweep.models and cfg.baseline.dit_xl2_checkpoint:
        paths.torch_state_dict("baseline.dit_xl2_checkpoint", cfg.baseline.dit_xl2_checkpoint,
                               "the official DiT-XL-2-256x256.pt state dict")


def stage_of(cfg: Config, i: int) -> StageConfig:
    """The network of MSF stage i (a shorter stage list repeats its last entry)."""
    return per_scale(cfg.msf.stages, len(cfg.msf.scales), "msf.stages")[i]
