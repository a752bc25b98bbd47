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
import json
import os
import shutil
from dataclasses import dataclass, field, fields, make_dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from ablations import inputs
from ablations.engine.committed import ASSETS, AssetError, asset
from ablations.engine.families import FAMILIES, METHOD
from ablations.engine.specs import (
    AutoencoderConfig,
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
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser where built in: the same data, faster
LOCAL = ("inprocess", "local")  # launchers that run the jobs on this machine
RENAMED = {  # keys of earlier versions -> their names now
    "train.steps": "msf.steps",
    "train.seed": "seeds.train",
    "eval.seeds": "seeds.sample",
    **{f"baseline.{name}_{key}": f"baseline.{name}.{key}"  # the flat baseline section: its own keys
       for name, f in FAMILIES.items() if f.section is not None
       for key in sorted({x.name for x in fields(f.section())} - {x.name for x in fields(StageConfig)})},
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


def baseline_sections() -> type:
    """The ``baseline`` section: one section per model family that has one (ablations/engine/families.py), named by
    the family."""
    sections = [(name, type(f.section()), field(default_factory=f.section)) for name, f in FAMILIES.items()
                if f.section is not None]
    cls = make_dataclass("BaselineConfig", sections, frozen=True)
    cls.__doc__ = "The baselines' sections, one per model family that has one (ablations/engine/families.py)."
    return cls


if TYPE_CHECKING:
    BaselineConfig = Any
else:
    BaselineConfig = baseline_sections()


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
    reference: int | None = None  # the point a points table pairs the others with, when not the preset's own setting
    overrides: dict[str, Any] = field(default_factory=dict)  # command-line keys that replaced preset/base values


KEYS = all_keys(Config)


# ----------------------------------------------------------------------------------------------------------------------
# Merging YAML and command-line values into a nested mapping, then into the typed Config.


def available(directory: Path) -> list[str]:
    """The names of the YAML files of a folder (presets, sweeps)."""
    return sorted(p.stem for p in directory.glob("*.yaml"))


REMOVED = {  # keys of earlier versions that no longer exist -> why
    "eval.save_npz": "every sample job saves its images (samples.npz, ADM's layout) for its score job",
}


def _unknown(key: str) -> ConfigError:
    """The error for a key Config does not have, with a suggestion."""
    if key in RENAMED:
        return ConfigError(f"key {key!r} is now {RENAMED[key]!r}")
    if key in REMOVED:
        return ConfigError(f"key {key!r} is gone: {REMOVED[key]}")
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
    if key not in KEYS and not isinstance(value, dict):
        keys = [k.rsplit(".", 1)[-1] for k in KEYS if k.startswith(f"{key}.") and k.count(".") == key.count(".") + 1]
        raise ConfigError(f"{key}={value!r}: {key} is a section; set its keys ({', '.join(keys)}), e.g. "
                          f"{key}.{keys[0]}=...")
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
        data = yaml.load(path.read_text(), Loader=SAFE_LOADER) or {}
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


SWEEP_FILE_KEYS = ("description", "table", "models", "base", "grid", "points", "reference", "recon", "speed",
                   "by_preset")
PRESET_BLOCK_KEYS = ("base", "grid", "points")


def load_sweep(name: str, preset: str) -> tuple[Sweep, dict[str, Any]]:
    """Read ``sweeps/NAME.yaml``: its description, models, eval points (``points`` and/or ``grid``), base block and
    optional ``reference`` (the settings of the point a points table pairs the others with)."""
    raw = load_yaml(_name("sweep", name, SWEEPS_DIR))
    _known_keys(f"sweep {name}", raw, SWEEP_FILE_KEYS)
    blocks = raw.get("by_preset", {})
    if not isinstance(blocks, dict):
        raise ConfigError(f"sweep {name}: by_preset must map preset names to blocks of {', '.join(PRESET_BLOCK_KEYS)}")
    for block_preset, block in blocks.items():
        _known_keys(f"sweep {name}, by_preset {block_preset}", block, PRESET_BLOCK_KEYS)
    by_preset = blocks.get(preset, {})
    grid = by_preset.get("grid", raw.get("grid", {}))
    points = list(by_preset.get("points", raw.get("points", [])))
    if grid:
        keys = list(grid)
        points += [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))]
    models = sorted({p.get("model", METHOD) for p in points} | set(raw.get("models", [])))
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
        reference=_reference(name, raw.get("reference"), points),
    )
    base = {**raw.get("base", {}), **by_preset.get("base", {})}
    return sweep, base


def _known_keys(where: str, block: Any, known: tuple[str, ...]) -> None:
    """A sweep file's mapping holds only the keys the loader reads: a misspelled one would be ignored."""
    if not isinstance(block, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(block).__name__}")
    unknown = [k for k in block if k not in known]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} in its file; expected one of {', '.join(known)}")


def _reference(name: str, reference: Any, points: list[dict[str, Any]]) -> int | None:
    """The index of the one point whose settings include every key and value of the sweep file's ``reference``."""
    if reference is None:
        return None
    if not isinstance(reference, dict) or not reference:
        raise ConfigError(f"sweep {name}: reference must map settings to values, e.g. {{sample.cfg: [1.5]}}")
    found = [i for i, p in enumerate(points) if all(k in p and p[k] == v for k, v in reference.items())]
    if len(found) != 1:
        raise ConfigError(f"sweep {name}: reference {reference} matches {len(found)} of its points; expected one")
    return found[0]


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
        validate_point(point_config(cfg, point), point.get("model", METHOD), sweep)
    if sweep.points:  # every table's ceiling: untrained MSF stages sampled at the sweep's own settings
        try:
            validate_point(cfg, METHOD, sweep)
        except ConfigError as e:
            raise ConfigError(f"the ceiling (untrained {METHOD}, sampled at the sweep's own settings): {e}") from None
    fits_image_size(cfg)
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
    if cfg.data.name in ("embedded", "photos") and cfg.data.root:
        raise ConfigError(f"data.root={cfg.data.root!r} is set but data.name={cfg.data.name} ignores it; add "
                          "data.name=imagefolder (or cifar10)")
    if cfg.data.ref_root and cfg.data.name != "imagefolder":
        raise ConfigError(f"data.ref_root={cfg.data.ref_root!r} is set but data.name={cfg.data.name} ignores it "
                          "(only an imagefolder takes a held-out reference tree)")
    if cfg.autoencoder.kind == "pretrained" and not cfg.autoencoder.path:
        raise ConfigError("autoencoder.kind=pretrained needs autoencoder.path (a local folder with the VAE weights)")
    frozen_aes = [name for name, a in ASSETS.items() if a.folder]
    if cfg.autoencoder.kind == "frozen" and cfg.autoencoder.frozen not in frozen_aes:
        raise ConfigError(f"autoencoder.frozen={cfg.autoencoder.frozen!r} is not one of the committed autoencoders: "
                          f"{', '.join(frozen_aes)} (autoencoder.kind=pretrained loads a folder)")
    if cfg.eval.world == "embedded" and cfg.eval.features not in ASSETS:
        try:
            inputs.classifier_file("eval.features", cfg.eval.features)
        except inputs.InputError as e:
            raise ConfigError(f"{e}; or name a frozen network: {', '.join(ASSETS)}") from None
    if cfg.eval.world != "inception":
        for key in ("inception_weights", "reference_npz"):
            if getattr(cfg.eval, key):
                raise ConfigError(f"eval.{key} is set but eval.world={cfg.eval.world} ignores it; add "
                                  "eval.world=inception")
    for name in sweep.models:
        family = FAMILIES[name]
        if family.pretrained and not section_of(cfg, name).checkpoint:
            raise ConfigError(f"this sweep needs baseline.{name}.checkpoint=PATH ({family.checkpoint_name})")
    for key in ("seeds.train", "seeds.sample"):
        seeds = getattr(cfg.seeds, key.split(".")[1])
        repeats = sorted({s for s in seeds if seeds.count(s) > 1})
        if repeats:
            raise ConfigError(f"{key}={seeds} repeats {', '.join(map(str, repeats))}: each seed once (a repeat "
                              "would be one run counted twice)")
    if cfg.data.name in ("embedded", "photos"):
        procedural_data(cfg)
    if cfg.launcher in LOCAL:
        this_machine(cfg)
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
    except (inputs.InputError, AssetError) as e:
        raise ConfigError(str(e)) from None


def procedural_data(cfg: Config) -> None:
    """The drawn datasets' own limits (embedded, photo crops): their image sizes and numbers of classes."""
    from ablations.engine.data import CROP_SIDES, EMBEDDED_SIZES, MAX_CLASSES, PHOTOS  # torch: only for these

    size, classes = cfg.data.image_size, cfg.data.num_classes
    if cfg.data.name == "embedded" and size not in EMBEDDED_SIZES:
        raise ConfigError(f"data.image_size={size}: the embedded dataset draws "
                          f"{' or '.join(map(str, EMBEDDED_SIZES))} px images")
    if cfg.data.name == "photos" and not 8 <= size <= CROP_SIDES[0]:
        raise ConfigError(f"data.image_size={size}: photo crops are reduced to 8-{CROP_SIDES[0]} px")
    most = MAX_CLASSES if cfg.data.name == "embedded" else len(PHOTOS)
    if classes > most:
        raise ConfigError(f"data.num_classes={classes}: the {cfg.data.name} dataset has at most {most} classes")


def this_machine(cfg: Config) -> None:
    """What a local launcher needs of this machine: CUDA for device=cuda, the cores for cpu_threads (a SLURM job's
    device and cores are its node's, not this machine's)."""
    # the cores this process may use (Linux: its container's or taskset's share), elsewhere the machine's
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if cfg.cpu_threads > cores:
        raise ConfigError(f"cpu_threads={cfg.cpu_threads} but this machine gives this process {cores} cores "
                          f"(launcher={cfg.launcher} runs the jobs here); use cpu_threads<={cores} (0: torch's "
                          "default)")
    if cfg.device == "cuda" or (cfg.device == "auto" and cfg.eval.compile == "reduce-overhead"):
        import torch  # only for a command that asks for CUDA

        if not torch.cuda.is_available():
            needs = "device=cuda" if cfg.device == "cuda" else "eval.compile=reduce-overhead (device=auto)"
            raise ConfigError(f"{needs} but this machine has no CUDA device (launcher={cfg.launcher} runs the jobs "
                              "here); use device=cpu, or launcher=slurm for GPU nodes")


def fits_image_size(cfg: Config) -> None:
    """The committed autoencoder and feature network (or a features file that records its size) were trained on
    images of ``data.image_size``."""
    for key, name in (("autoencoder.frozen", cfg.autoencoder.frozen if cfg.autoencoder.kind == "frozen" else None),
                      ("eval.features", cfg.eval.features if cfg.eval.world == "embedded" else None)):
        size = trained_size(name) if name else None
        if size is not None and size != cfg.data.image_size:
            raise ConfigError(f"{key}={name} was trained on {size} px images but data.image_size="
                              f"{cfg.data.image_size}; build one for this size (python -m ablations.engine.assets)")


def trained_size(name: str) -> int | None:
    """The image size a frozen network or a features file (as the own-image builder writes it) was trained on."""
    if name in ASSETS:
        return ASSETS[name].image_size
    metadata = (inputs.safetensors_header("eval.features", Path(name)).get("__metadata__") or {}).get("metadata")
    try:
        size = json.loads(metadata or "{}").get("image_size")
        return int(size) if size is not None else None
    except (ValueError, TypeError, AttributeError):  # metadata written by another tool: its size is not known
        return None


def check_paths(cfg: Config, sweep: Sweep) -> None:
    """Every path key the sweep uses: exists, right kind, right format, opened without running code, and every
    weights file tensor by tensor against the network that loads it."""
    inputs.writable_folder("runs_dir", cfg.runs_dir)
    data = cfg.data
    if data.name == "imagefolder":
        inputs.image_dataset("data.root", str(data.root), data.num_classes)
        if data.ref_root:
            inputs.image_dataset("data.ref_root", str(data.ref_root), data.num_classes)
    if data.name == "digits":
        inputs.digits(data.root, data.num_classes)
    if data.name == "cifar10":
        inputs.cifar10_folder("data.root", str(data.root), data.num_classes)
    if cfg.autoencoder.kind == "frozen":
        asset(cfg.autoencoder.frozen)  # the committed weights, hash-checked
    if cfg.autoencoder.kind == "pretrained":
        inputs.vae_folder("autoencoder.path", str(cfg.autoencoder.path))
    if cfg.eval.world == "embedded" and cfg.eval.features in ASSETS:
        asset(cfg.eval.features)
    if cfg.eval.world == "inception":  # the given file, or torch-fidelity's download in torch's hub cache
        weights = cfg.eval.inception_weights or inputs.hub_inception_weights()
        if weights is None:
            raise inputs.InputError("eval.world=inception needs eval.inception_weights=FILE (torch-fidelity's "
                                    "pt_inception-2015-12-05-6726825d.pth; nothing is downloaded here)")
        inputs.inception_weights("eval.inception_weights", str(weights))
    if cfg.eval.reference_npz:
        inputs.adm_reference("eval.reference_npz", cfg.eval.reference_npz)
    for name in sweep.models:
        build = FAMILIES[name].checkpoint_network
        if build is not None:
            section = section_of(cfg, name)
            net = section.network
            shape = net.size or f"depth {net.depth}, width {net.hidden_size}, patch {net.patch_size}"
            inputs.checkpoint(f"baseline.{name}.checkpoint", section.checkpoint, FAMILIES[name].checkpoint_name,
                              partial(build, net), f"baseline.{name} ({shape})")


def stage_of(cfg: Config, i: int) -> StageConfig:
    """The network of MSF stage i (a shorter stage list repeats its last entry)."""
    return per_scale(cfg.msf.stages, len(cfg.msf.scales), "msf.stages")[i]


def section_of(cfg: Config, family: str) -> Any:
    """A model family's configuration section (``baseline.NAME``)."""
    return getattr(cfg.baseline, family)
