"""The layers of the code (README "Layout"): imports only point downward, and the method package holds the paper alone.

    msf/                 the method: factorize, flow, dit, pipeline, autoencoder (imports msf only)
    baselines/           DiT-XL/2, DiMR (import the method only)
    ablations/engine/    runs one typed job (imports the method, the baselines and itself)
    ablations/           the runner: config, graph, launch, run.py (imports the engine, never the reports)
    reports/             reads sweep manifests and run folders (imports the engine's file I/O and run-folder
                         protocol, never the runner, the method, the baselines or anything that imports torch)
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("msf", "baselines", "ablations", "reports")


def layer(module: str) -> str:
    """The layer a module belongs to: msf, baselines, engine, runner or reports."""
    if module.startswith("ablations.engine"):
        return "engine"
    if module.startswith("ablations"):
        return "runner"
    return module.split(".")[0]


ALLOWED = {  # layer -> the layers its modules may import (module-level or inside functions)
    "msf": {"msf"},
    "baselines": {"msf", "baselines"},
    "engine": {"msf", "baselines", "engine"},
    "runner": {"msf", "baselines", "engine", "runner", "reports"},  # run.py builds the report at the end
    "reports": {"reports", "engine-io"},
}


def project_imports(path: Path) -> list[str]:
    """Every project module a source file imports, anywhere in the file (at import time or inside functions), but
    under ``if TYPE_CHECKING:`` (never executed)."""
    found = []
    tree = ast.parse(path.read_text())
    typing_only = {id(sub) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and getattr(node.test, "id", None) == "TYPE_CHECKING" for sub in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            found += [n for n in names[:1] if n.split(".")[0] in PACKAGES]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in PACKAGES]
    return found


def sources() -> list[tuple[str, Path]]:
    """(module name, path) of every project source file."""
    out = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            out.append((".".join(rel.parts), path))
    return out


@pytest.mark.parametrize("module, path", sources(), ids=[m for m, _ in sources()])
def test_imports_point_downward(module, path):
    here = layer(module)
    for imported in project_imports(path):
        target = layer(imported)
        if here == "reports" and imported in ("ablations.engine.io", "ablations.engine.runfolder"):
            target = "engine-io"
        assert target in ALLOWED[here], f"{module} ({here}) imports {imported} ({target})"
    if here == "runner" and module != "ablations.run":
        assert not any(layer(i) == "reports" for i in project_imports(path)), f"{module} imports the reports"


def module_graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports (``from pkg.mod import name`` counts as pkg.mod, or as
    pkg.mod.name when that is a module)."""
    modules = {m for m, _ in sources()}

    def resolve(name: str) -> str | None:
        parts = name.split(".")
        return next((".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in modules), None)

    graph: dict[str, set[str]] = {}
    for module, path in sources():
        tree = ast.parse(path.read_text())
        typing_only = {id(sub) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and getattr(node.test, "id", None) == "TYPE_CHECKING" for sub in ast.walk(node)}
        targets = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {resolve(f"{node.module}.{a.name}") or resolve(node.module) for a in node.names}
            elif isinstance(node, ast.Import):
                targets |= {resolve(a.name) for a in node.names}
        graph[module] = {t for t in targets if t and t != module and not t.endswith("__init__")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_between_modules_or_packages():
    """No module imports, directly or through others (lazy imports included), a module that imports it back; nor
    does any package: the layers form a chain."""
    graph = module_graph()
    assert cycles(graph) == []
    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        packages.setdefault(layer(module), set()).update(layer(t) for t in targets if layer(t) != layer(module))
    assert cycles(packages) == []


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_method_package_holds_the_paper_alone():
    """msf/ is what a reader of the paper needs: the five modules of the method, nothing about files or runs."""
    assert sorted(p.stem for p in (ROOT / "msf").glob("*.py")) == [
        "__init__", "autoencoder", "dit", "factorize", "flow", "pipeline"]


def test_parsing_a_command_imports_no_model_code():
    """The runner's config and the reports are light: a bad command is refused without importing torch."""
    code = "import sys, ablations.config, reports.build; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.e2e
def test_jobs_that_build_no_autoencoder_run_without_diffusers(tmp_path):
    """diffusers takes seconds to import (torch's compiler with it), paid again by every job's own process under
    launcher=local or SLURM: a training job and a scoring job of the smoke preset, run in a fresh process, never import
    it; the sample job of the autoencoder's reconstructions, run after them, does."""
    from ablations.config import resolve
    from ablations.engine import jobs
    from ablations.graph import plan
    from ablations.jobcall import prepare

    cfg, sweep = resolve([("sweep", "cfg_scale1"), ("preset", "smoke"), ("runs_dir", str(tmp_path))])
    g = plan(cfg, sweep)
    named = {j.name: j for j in g}
    real, recon = (named[g.manifest["anchors"][a][0]["score"]] for a in ("real", "autoencoder"))
    train = next(j for j in g if j.kind == "train" and "cache" in j.deps)
    for job in (train.deps["cache"], real.deps["samples"]):  # what they read, run here
        prepare(job, "test")
        jobs.run(job.run_dir)
    order = (train, real, recon.deps["samples"])
    for job in order:
        prepare(job, "test")
    code = ("import sys\nfrom ablations.engine import jobs\n"
            "for d in sys.argv[1:]:\n    jobs.run(d)\n    print('diffusers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, *(str(j.run_dir) for j in order)], capture_output=True,
                         text=True, cwd=ROOT, check=True)
    assert out.stdout.split() == ["False", "False", "True"], out.stdout + out.stderr
    assert all((j.run_dir / "metrics.json").exists() for j in order)
