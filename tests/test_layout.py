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
    """Every project module a source file imports, anywhere in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
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


def test_the_method_package_holds_the_paper_alone():
    """msf/ is what a reader of the paper needs: the five modules of the method, nothing about files or runs."""
    assert sorted(p.stem for p in (ROOT / "msf").glob("*.py")) == [
        "__init__", "autoencoder", "dit", "factorize", "flow", "pipeline"]


def test_parsing_a_command_imports_no_model_code():
    """The runner's config and the reports are light: a bad command is refused without importing torch."""
    code = "import sys, ablations.config, reports.build; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"
