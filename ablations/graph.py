"""The job graph of a sweep: autoencoder -> target cache -> trainings -> eval points -> report (harness).

Every node is keyed by a hash of its resolved config (which includes its dependencies' keys), so a node that already
has ``metrics.json`` for the same key is done and skipped. A node's folder is ``RUNS/PRESET/KIND-LABEL-KEY``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablations.config import Config, Sweep, point_config, to_dict


@dataclass
class Node:
    """One job: its kind, a readable label, its resolved config (hashed) and the keys of the nodes it needs."""

    kind: str
    label: str
    config: dict[str, Any]
    deps: list[str] = field(default_factory=list)
    key: str = ""
    run_dir: str = ""

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.label}-{self.key}"


def config_key(config: dict[str, Any]) -> str:
    """8 hex digits of the SHA-256 of the canonical JSON of a node config."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:8]


def code_version() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


class Graph:
    """Nodes in topological order (each node's deps come before it), deduplicated by key."""

    def __init__(self, runs_root: Path) -> None:
        self.root = runs_root
        self.nodes: dict[str, Node] = {}

    def add(self, kind: str, label: str, config: dict[str, Any], deps: list[Node] | None = None) -> Node:
        """Add a node (or return the existing one with the same key); ``deps`` must already be in the graph."""
        deps = deps or []
        config = {**config, "deps": [d.key for d in deps]}
        key = config_key({"kind": kind, **config})
        if key not in self.nodes:
            node = Node(kind, label, config, [d.key for d in deps], key)
            node.run_dir = str(self.root / node.name)
            self.nodes[key] = node
        return self.nodes[key]

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes.values())

    def done(self, node: Node) -> bool:
        return (Path(node.run_dir) / "metrics.json").exists()


# ----------------------------------------------------------------------------------------------------------------------
# Planning: which nodes a sweep needs.


def _data(cfg: Config) -> dict[str, Any]:
    return to_dict(cfg.data)


def _stage(cfg: Config, i: int) -> dict[str, Any]:
    return to_dict(cfg.msf.stages[min(i, len(cfg.msf.stages) - 1)])


def plan(cfg: Config, sweep: Sweep) -> Graph:
    """The graph of a sweep for a resolved config (see module docstring)."""
    g = Graph(Path(cfg.runs_dir) / cfg.preset)
    ae_deps: list[Node] = []
    if cfg.autoencoder.kind == "small_kl":
        ae_deps = [g.add("autoencoder", "small_kl", {"data": _data(cfg), "autoencoder": to_dict(cfg.autoencoder)})]
    ae = {"autoencoder": to_dict(cfg.autoencoder)}
    clf_deps: list[Node] = []
    if cfg.eval.world == "embedded":
        clf_deps = [g.add("classifier", cfg.data.name, {"data": _data(cfg), "steps": cfg.eval.classifier_steps})]

    def trained(model: str, pcfg: Config) -> list[Node]:
        if model == "msf":
            fac, scales = pcfg.msf.factorization, pcfg.msf.scales
            stages = [_stage(pcfg, i) for i in range(len(scales))]
            steps = [pcfg.train.steps[min(i, len(pcfg.train.steps) - 1)] for i in range(len(scales))]
        elif model == "dit_flow":
            fac, scales = "residual", [pcfg.data.image_size // _factor(pcfg)]
            stages, steps = [to_dict(pcfg.baseline.dit_flow)], [pcfg.baseline.dit_flow_steps]
        elif model == "dimr":
            fac, scales = "residual", [pcfg.data.image_size // _factor(pcfg)]
            stages, steps = [{"size": pcfg.baseline.dimr}], [pcfg.baseline.dimr_steps]
        else:
            return []
        cache = g.add(
            "cache",
            f"{fac}-{'x'.join(map(str, scales))}",
            {"data": _data(pcfg), **ae, "factorization": fac, "scales": scales, "mode": pcfg.msf.mode},
            ae_deps,
        )
        train = to_dict(pcfg.train)
        # the default conditioning stays out of the key, so stages trained before the option existed are reused
        conditioning = pcfg.msf.conditioning if model == "msf" else "adaln_zero"
        tdln = {"conditioning": conditioning} if conditioning != "adaln_zero" else {}
        return [
            g.add(
                "train",
                f"{model}-{fac}-{'x'.join(map(str, scales))}{'-tdln' if tdln else ''}-s{i}",
                {"model": model, "stage": i, "num_stages": len(scales), "stage_model": stages[i],
                 "prior_mode": pcfg.msf.prior_mode, "train": {**train, "steps": steps[i]},
                 "factorization": fac, "scales": scales, "mode": pcfg.msf.mode, "data": _data(pcfg), **tdln},
                [cache],
            )
            for i in range(len(scales))
        ]

    for point in sweep.points:
        model = point.get("model", "msf")
        pcfg = point_config(cfg, point)
        stages = trained(model, pcfg)
        for seed in pcfg.eval.seeds:
            g.add(
                "eval",
                f"{model}-{pcfg.msf.factorization if model == 'msf' else 'single'}"
                f"{'-tdln' if model == 'msf' and pcfg.msf.conditioning == 'tdln' else ''}"
                f"-steps{'_'.join(map(str, pcfg.sample.steps))}-cfg{'_'.join(map(str, pcfg.sample.cfg))}-seed{seed}",
                {"model": model, "preset": cfg.preset, "sample": to_dict(pcfg.sample), "eval": to_dict(pcfg.eval),
                 "seed": seed, "data": _data(pcfg), **ae, "device": cfg.device,
                 **({"checkpoint": cfg.baseline.dit_xl2_checkpoint} if model == "dit_xl2" else {})},
                ae_deps + clf_deps + stages,
            )
    if sweep.recon:
        for fac in ("residual", "residual_latent_base", "latent_resize", "image_resize"):
            g.add("recon", fac, {"factorization": fac, "scales": cfg.msf.scales, "mode": cfg.msf.mode,
                                 "data": _data(cfg), **ae}, ae_deps)
    if sweep.speed:
        for model in ("dit_xl2", "msf", "dimr"):
            g.add("speed", model, {"model": model, "device": cfg.device, "dtype": cfg.eval.dtype,
                                   "attention": cfg.eval.attention, "compile": cfg.eval.compile,
                                   "method": cfg.speed.method, "batch": cfg.speed.batch,
                                   "repeats": cfg.speed.repeats})
    return g


def _factor(cfg: Config) -> int:
    if cfg.autoencoder.kind == "pixel":
        return 1
    if cfg.autoencoder.kind == "pretrained":
        return 8
    return 2 ** (len(cfg.autoencoder.block_out_channels) - 1)


# ----------------------------------------------------------------------------------------------------------------------
# Executing one node: lock, config.json, log, metrics.json last and atomically.


class NodeLocked(RuntimeError):
    """Another runner is writing this node right now."""


@contextlib.contextmanager
def node_lock(run_dir: Path) -> Iterator[None]:
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise NodeLocked(f"{run_dir} is being written by another runner (lock held)") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def execute(node: Node, deps: dict[str, str], fn: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """Run ``fn(node, run_dir, deps, log)`` under the node's lock, unless its metrics.json already exists."""
    run_dir = Path(node.run_dir)
    done = run_dir / "metrics.json"
    if done.exists():
        return json.loads(done.read_text())
    with node_lock(run_dir):
        if done.exists():  # finished by another runner while we waited
            return json.loads(done.read_text())
        write_json_atomic(run_dir / "config.json", {"kind": node.kind, "name": node.name, "key": node.key,
                                                    "config": node.config, "code_version": code_version()})
        with open(run_dir / "log.txt", "a") as log_fh:

            def log(msg: str) -> None:
                line = f"[{time.strftime('%H:%M:%S')}] {msg}"
                log_fh.write(line + "\n")
                log_fh.flush()

            log(f"start {node.name}")
            metrics = fn(node, run_dir, deps, log)
            log(f"done {node.name}")
        write_json_atomic(done, {"kind": node.kind, **metrics})
        return metrics


def dep_dirs(g: Graph, node: Node) -> dict[str, str]:
    """A node's dependencies' run folders by role: autoencoder, classifier, cache, train0, train1, ..."""
    out = {}
    for d in node.deps:
        dep = g.nodes[d]
        out[dep.kind + (str(dep.config["stage"]) if dep.kind == "train" else "")] = dep.run_dir
    return out


def plan_summary(g: Graph) -> list[dict[str, Any]]:
    """One row per node for --dry-run: kind, name, status (done / todo), run folder."""
    return [{"kind": n.kind, "name": n.name, "status": "done" if g.done(n) else "todo", "run_dir": n.run_dir}
            for n in g]

