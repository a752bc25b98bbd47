"""Typed configuration of a sweep: presets and sweeps are YAML files merged into these dataclasses (harness).

Order of precedence: dataclass defaults < preset YAML (`ablations/presets/NAME.yaml`) < sweep's `base` block
< command-line `key=value` overrides. Unknown keys and wrongly typed values are errors (:class:`ConfigError`).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib.util
import itertools
import shutil
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
PRESETS_DIR = HERE / "presets"
SWEEPS_DIR = HERE / "sweeps"


class ConfigError(ValueError):
    """A bad command line, preset or sweep: the runner prints it on one line and exits with code 2."""


@dataclass
class DataConfig:
    name: str = "embedded"  # embedded | imagefolder | cifar10
    root: str | None = None  # dataset folder (imagefolder, cifar10)
    image_size: int = 32
    num_classes: int = 10
    train_size: int = 20000
    ref_size: int = 5000
    seed: int = 0


@dataclass
class AutoencoderConfig:
    kind: str = "small_kl"  # small_kl (trained by the harness) | pretrained (diffusers AutoencoderKL) | pixel
    path: str | None = None  # pretrained: a local folder or a hub name already in the local cache
    block_out_channels: list[int] = field(default_factory=lambda: [16, 32, 32])
    latent_channels: int = 4
    steps: int = 1500
    batch_size: int = 16
    lr: float = 2e-3


@dataclass
class StageConfig:
    depth: int = 4
    hidden_size: int = 128
    num_heads: int = 4
    patch_size: int = 2


@dataclass
class MSFConfig:
    factorization: str = "residual"  # residual | residual_latent_base | latent_resize | image_resize
    scales: list[int] = field(default_factory=lambda: [6, 8])  # latent sizes h_0 < ... < h_N
    mode: str = "bilinear"  # Up/Down filter
    prior_mode: str = "concat"  # how the input prior enters a stage model
    conditioning: str = "adaln_zero"  # of the stage models' blocks: adaln_zero (DiT, the paper) | tdln (DiMR's TD-LN)
    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig(), StageConfig(depth=2)])


@dataclass
class TrainConfig:
    steps: list[int] = field(default_factory=lambda: [3000, 1500])  # per stage (paper: 400k and 250k)
    batch_size: int = 64
    lr: float = 3e-4
    warmup_steps: int = 100
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    label_dropout: float = 0.1
    time_dist: str = "uniform"  # uniform | logit_normal
    seed: int = 0
    tf32: bool = False
    ckpt_every: int = 500


@dataclass
class SampleConfig:
    steps: list[int] = field(default_factory=lambda: [100, 50])  # per scale (paper Table 1)
    cfg: list[float] = field(default_factory=lambda: [1.4, 1.0])  # per scale, DiT convention: w=1 is no guidance
    solver: str = "euler"  # euler | heun


@dataclass
class EvalConfig:
    n_samples: int = 1000
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    world: str = "embedded"  # embedded (harness classifier features) | inception (the paper's protocol)
    batch_size: int = 250
    inception_weights: str | None = None  # local pt file for offline clusters
    reference_npz: str | None = None  # ADM's VIRTUAL_imagenet256_labeled.npz
    dtype: str = "float32"  # the networks' sampling dtype: float32 | bfloat16 (autocast on CUDA or CPU)
    attention: str = "auto"  # auto (xformers on CUDA when installed, else SDPA) | sdpa | xformers
    compile: str = "none"  # torch.compile: none | default | max-autotune | reduce-overhead (adds CUDA graphs)
    classifier_steps: int = 1500  # training steps of the embedded feature extractor (world=embedded)
    bootstrap: int = 0  # >0: a 95% bootstrap interval of FID over this many resamples of the generated samples
    save_npz: bool = False  # write samples.npz (ADM's format: uint8 NHWC under arr_0) for ADM's TF evaluator


@dataclass
class BaselineConfig:
    dit_flow: StageConfig = field(default_factory=lambda: StageConfig(depth=6, hidden_size=128))
    dit_flow_steps: int = 4500  # equal-recipe baseline: trained for the sum of the MSF stages' steps
    dimr: str = "DiMR-tiny"  # DiMR size (baselines/dimr.py DIMR_CONFIGS), trained by the same flow loop
    dimr_steps: int = 4500
    dit_xl2_checkpoint: str | None = None  # official DiT-XL-2-256x256.pt for the pretrained baseline


@dataclass
class SpeedConfig:
    """The speed nodes (paper sizes, random weights); dtype, attention and compile come from ``eval``."""

    method: str = "auto"  # auto: sample on CUDA, else forward (one call timed x steps); sample: the whole sampler
    batch: int = 0  # images per timed batch; 0: 64 on CUDA (the paper's), 2 on CPU
    repeats: int = 0  # timed repeats, median taken; 0: 5 network calls (forward) or 3 whole samples (sample)


@dataclass
class SlurmConfig:
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    nodes: int = 1
    gpus_per_node: int = 8
    cpus_per_task: int = 8
    mem_gb: int = 64
    timeout_min: int = 60 * 24
    array_parallelism: int = 16


@dataclass
class Config:
    sweep: str = ""
    preset: str = "tiny"
    launcher: str = "inprocess"  # inprocess (submitit debug executor) | local (subprocesses) | slurm
    runs_dir: str = "runs"
    device: str = "auto"  # auto | cpu | cuda
    cpu_threads: int = 0  # torch intra-op threads per job (0: torch's default); 1 avoids thrashing on a busy CPU
    data: DataConfig = field(default_factory=DataConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    msf: MSFConfig = field(default_factory=MSFConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)


@dataclass
class Sweep:
    """A sweep: which models to train and which evaluation points to run (one paper table or figure)."""

    name: str
    description: str
    table: str
    points: list[dict[str, Any]]  # each: overrides of one eval point, e.g. {"sample.cfg": [1.2, 1.0]}
    models: list[str]  # msf | dit_flow | dimr | dit_xl2
    recon: bool = False  # factorization reconstruction nodes (Fig. 2)
    speed: bool = False  # timing/FLOP nodes at the paper's sizes


# ----------------------------------------------------------------------------------------------------------------------
# Parsing and merging.


def available(directory: Path) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.yaml"))


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check and convert a YAML/CLI value to the declared type of ``key``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        obj = tp()
        for k, v in value.items():
            _set(obj, [k], v, f"{key}.{k}")
        return obj
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {tp}")


def all_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every settable dotted key (for --help and suggestions)."""
    keys = []
    for name, tp in _field_types(cls).items():
        if dataclasses.is_dataclass(tp):
            keys += all_keys(tp, f"{prefix}{name}.")  # type: ignore[arg-type]
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _set(obj: Any, path: list[str], value: Any, key: str) -> None:
    types = _field_types(type(obj))
    name = path[0]
    if name not in types:
        close = difflib.get_close_matches(key, all_keys(), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown key {key!r}{hint}")
    if len(path) > 1 and dataclasses.is_dataclass(types[name]):
        _set(getattr(obj, name), path[1:], value, key)
    elif len(path) > 1:
        raise ConfigError(f"unknown key {key!r}: {'.'.join(path[:1])} is not a section")
    else:
        setattr(obj, name, _coerce(value, types[name], key))


def set_key(cfg: Config, key: str, value: Any) -> None:
    """Set a dotted key (e.g. ``train.lr``) with type checking."""
    _set(cfg, key.split("."), value, key)


def merge_mapping(cfg: Config, mapping: dict[str, Any], prefix: str = "") -> None:
    """Merge a nested YAML mapping into ``cfg``."""
    for k, v in mapping.items():
        key = f"{prefix}{k}"
        types = _field_types(type(_resolve_parent(cfg, key)))
        leaf = key.split(".")[-1]
        if isinstance(v, dict) and leaf in types and dataclasses.is_dataclass(types[leaf]):
            merge_mapping(cfg, v, key + ".")
        else:
            set_key(cfg, key, v)


def _resolve_parent(cfg: Config, key: str) -> Any:
    obj: Any = cfg
    parts = key.split(".")
    for p in parts[:-1]:
        if not hasattr(obj, p):
            raise ConfigError(f"unknown key {key!r}")
        obj = getattr(obj, p)
    return obj


def parse_value(text: str) -> Any:
    """A command-line value, parsed as YAML (so 1.5, [100,50], true and null work)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse value {text!r}: {str(e).splitlines()[0]}") from None


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at top level")
    return data


def load_sweep(name: str, preset: str) -> tuple[Sweep, dict[str, Any]]:
    """Read ``sweeps/NAME.yaml``: its description, models, eval points (``points`` and/or ``grid``) and base block."""
    path = SWEEPS_DIR / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"unknown sweep {name!r}; valid sweeps: {', '.join(available(SWEEPS_DIR))}")
    raw = load_yaml(path)
    by_preset = raw.get("by_preset", {}).get(preset, {})
    grid = by_preset.get("grid", raw.get("grid", {}))
    points = list(by_preset.get("points", raw.get("points", [])))
    if grid:
        keys = list(grid)
        points += [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))]
    sweep = Sweep(
        name=name,
        description=raw.get("description", ""),
        table=str(raw.get("table", "")),
        points=points,
        models=sorted({p.get("model", "msf") for p in points} | set(raw.get("models", []))),
        recon=bool(raw.get("recon", False)),
        speed=bool(raw.get("speed", False)),
    )
    base = {**raw.get("base", {}), **by_preset.get("base", {})}
    return sweep, base


def resolve(argv_pairs: list[tuple[str, str]]) -> tuple[Config, Sweep]:
    """Build the resolved Config and Sweep from ``key=value`` pairs (``sweep=`` required)."""
    pairs = dict(argv_pairs)
    if "sweep" not in pairs:
        raise ConfigError(f"missing sweep=NAME; valid sweeps: {', '.join(available(SWEEPS_DIR))}")
    preset = pairs.get("preset", "tiny")
    preset_path = PRESETS_DIR / f"{preset}.yaml"
    if not preset_path.exists():
        raise ConfigError(f"unknown preset {preset!r}; valid presets: {', '.join(available(PRESETS_DIR))}")
    cfg = Config()
    merge_mapping(cfg, load_yaml(preset_path))
    sweep, base = load_sweep(pairs["sweep"], preset)
    for k, v in base.items():
        set_key(cfg, k, v)
    cfg.sweep, cfg.preset = sweep.name, preset
    for k, v in argv_pairs:
        if k in ("sweep", "preset"):
            continue
        set_key(cfg, k, parse_value(v))
    for point in sweep.points:  # every eval point must name real keys with the right types
        point_config(cfg, point)
    validate(cfg, sweep)
    return cfg, sweep


def validate(cfg: Config, sweep: Sweep) -> None:
    """Checks that can be made before anything runs (each a one-line ConfigError)."""
    from msf.factorize import FACTORIZATIONS, MODES, ScaleSpecError, make_scales
    from msf.pipeline import COMPILE_MODES

    choices = {
        "launcher": (cfg.launcher, ("inprocess", "local", "slurm")),
        "device": (cfg.device, ("auto", "cpu", "cuda")),
        "data.name": (cfg.data.name, ("embedded", "imagefolder", "cifar10")),
        "autoencoder.kind": (cfg.autoencoder.kind, ("small_kl", "pretrained", "pixel")),
        "msf.factorization": (cfg.msf.factorization, FACTORIZATIONS),
        "msf.mode": (cfg.msf.mode, MODES),
        "msf.prior_mode": (cfg.msf.prior_mode, ("concat", "add")),
        "msf.conditioning": (cfg.msf.conditioning, ("adaln_zero", "tdln")),
        "sample.solver": (cfg.sample.solver, ("euler", "heun")),
        "eval.world": (cfg.eval.world, ("embedded", "inception")),
        "eval.dtype": (cfg.eval.dtype, ("float32", "bfloat16")),
        "eval.attention": (cfg.eval.attention, ("auto", "sdpa", "xformers")),
        "eval.compile": (cfg.eval.compile, COMPILE_MODES),
        "speed.method": (cfg.speed.method, ("auto", "forward", "sample")),
        "train.time_dist": (cfg.train.time_dist, ("uniform", "logit_normal")),
    }
    for key, (value, valid) in choices.items():
        if value not in valid:
            raise ConfigError(f"{key}={value!r} is not one of: {', '.join(valid)}")
    factor = {"pixel": 1}.get(cfg.autoencoder.kind, 2 ** (len(cfg.autoencoder.block_out_channels) - 1))
    if cfg.autoencoder.kind == "pretrained":
        factor = 8
    patch = max(s.patch_size for s in cfg.msf.stages)
    if cfg.data.image_size % (factor * patch):
        raise ConfigError(
            f"data.image_size={cfg.data.image_size} is not divisible by the autoencoder factor {factor} "
            f"times the patch size {patch}"
        )
    full = cfg.data.image_size // factor
    scale_lists = [cfg.msf.scales] + [p["msf.scales"] for p in sweep.points if "msf.scales" in p]
    for scales in scale_lists:
        try:
            make_scales(scales, full, patch)
        except ScaleSpecError as e:
            raise ConfigError(f"msf.scales={scales}: {e}") from None
    for p in [{}] + sweep.points:
        steps, cfgs = p.get("sample.steps", cfg.sample.steps), p.get("sample.cfg", cfg.sample.cfg)
        if any(s < 1 for s in steps):
            raise ConfigError(f"sample.steps={steps}: every scale needs at least 1 step")
        if any(w < 0 for w in cfgs):
            raise ConfigError(f"sample.cfg={cfgs}: guidance scales must be >= 0")
    if cfg.eval.n_samples < 1:
        raise ConfigError(f"eval.n_samples={cfg.eval.n_samples}: need at least one sample")
    if cfg.speed.batch < 0:
        raise ConfigError(f"speed.batch={cfg.speed.batch}: give a positive batch, or 0 for 64 on CUDA and 2 on CPU")
    if cfg.speed.repeats < 0:
        raise ConfigError(f"speed.repeats={cfg.speed.repeats}: give a positive count, or 0 for the method's default")
    if not cfg.eval.seeds:
        raise ConfigError("eval.seeds is empty: give at least one seed")
    if cfg.data.name != "embedded":
        if not cfg.data.root or not Path(cfg.data.root).exists():
            raise ConfigError(f"data.root={cfg.data.root!r} does not exist (needed for data.name={cfg.data.name})")
    if cfg.autoencoder.kind == "pretrained" and not cfg.autoencoder.path:
        raise ConfigError("autoencoder.kind=pretrained needs autoencoder.path (a local folder with the VAE weights)")
    if cfg.autoencoder.kind == "pretrained" and not Path(str(cfg.autoencoder.path)).exists():
        raise ConfigError(
            f"autoencoder.path={cfg.autoencoder.path!r} does not exist; download stabilityai/sd-vae-ft-ema on a "
            "machine with internet (huggingface-cli download stabilityai/sd-vae-ft-ema --local-dir DIR) and pass DIR"
        )
    if cfg.eval.world == "inception" and cfg.eval.inception_weights and not Path(cfg.eval.inception_weights).exists():
        raise ConfigError(f"eval.inception_weights={cfg.eval.inception_weights!r} does not exist")
    if "dit_xl2" in sweep.models and not cfg.baseline.dit_xl2_checkpoint:
        raise ConfigError("this sweep needs baseline.dit_xl2_checkpoint=PATH (the official DiT-XL-2-256x256.pt)")
    for key, path in (("baseline.dit_xl2_checkpoint", cfg.baseline.dit_xl2_checkpoint),
                      ("eval.reference_npz", cfg.eval.reference_npz)):
        if path and not Path(path).exists():
            raise ConfigError(f"{key}={path!r} does not exist")
    if cfg.eval.compile == "reduce-overhead" and cfg.device == "cpu":
        raise ConfigError("eval.compile=reduce-overhead captures CUDA graphs: it needs device=cuda (or auto on a GPU)")
    if cfg.eval.attention == "xformers" and importlib.util.find_spec("xformers") is None:
        raise ConfigError("eval.attention=xformers but xformers is not installed (pip install -e '.[gpu]')")
    if cfg.launcher == "slurm" and shutil.which("sbatch") is None:
        raise ConfigError("launcher=slurm but no sbatch on PATH: run on a SLURM login node or use launcher=local")
    if len(cfg.train.steps) < 1 or any(s < 1 for s in cfg.train.steps):
        raise ConfigError(f"train.steps={cfg.train.steps}: every stage needs at least one step")
    for p in [{}] + sweep.points:
        n = len(p.get("msf.scales", cfg.msf.scales))
        for key in ("sample.steps", "sample.cfg"):
            value = p.get(key, getattr(cfg.sample, key.split(".")[1]))
            if p.get("model", "msf") == "msf" and len(value) != n:
                raise ConfigError(f"{key}={value} has {len(value)} entries but there are {n} scales")


def point_config(cfg: Config, point: dict[str, Any]) -> Config:
    """The config of one eval point: a deep copy of ``cfg`` with the point's overrides (all but ``model``)."""
    out = copy.deepcopy(cfg)
    for k, v in point.items():
        if k != "model":
            set_key(out, k, v)
    return out


def to_dict(obj: Any) -> Any:
    """A dataclass config as plain JSON-able data."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj  # type: ignore[arg-type]
