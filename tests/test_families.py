"""The family registry (ablations/engine/families.py) is the one place in code that names a model family: no other
source names one, and a family registered there alone goes through plan, train, sample, score and report."""

from __future__ import annotations

import ast
import json
import math
import os
import re
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import pytest

from ablations.config import Config, set_key, typed
from ablations.engine.families import FAMILIES
from ablations.engine.runfolder import REAL_FLOOR
from reports.tables import fmt

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = ROOT / "ablations" / "engine" / "families.py"
SECTIONS = {f.name for f in fields(Config)}  # e.g. ``msf``: the method's section, read by every multi-scale family
KEY = re.compile(r"^\w+(\.\w+)+$")  # a dotted configuration key
# the real-image floor's anchor as sample runs record it (metrics.json), spelled as the family that samples it
ALLOWED = {("ablations/engine/runfolder.py", REAL_FLOOR)}


def names_a_family(text: str) -> bool:
    """A string that is a family's name, or a dotted key with one in it (``baseline.NAME.steps``); a top-level
    configuration section (``msf.steps``) is a section, not a family."""
    if text in FAMILIES:
        return True
    if not KEY.match(text):
        return False
    first, *rest = text.split(".")
    return (first in FAMILIES and first not in SECTIONS) or any(part in FAMILIES for part in rest)


def family_names_in(source: str, rel: str) -> list[str]:
    """'line: text' of every string constant (f-string parts included) and attribute of a source file (``rel``: its
    path under the repository) that names a family."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and names_a_family(node.value):
            if (rel, node.value) not in ALLOWED:
                found.append(f"{node.lineno}: {node.value!r}")
        elif isinstance(node, ast.Attribute) and node.attr in FAMILIES and node.attr not in SECTIONS:
            found.append(f"{node.lineno}: .{node.attr}")
    return found


def test_the_scan_sees_a_hard_coded_family():
    """The check below fails on each way a family can be hard-coded, and not on prose or a section's keys."""
    name = next(n for n in FAMILIES if n not in SECTIONS)
    source = (f"A = {name!r}\nB = 'baseline.{name}.steps'\nC = cfg.baseline.{name}\nD = 'msf.steps'\n"
              f"E = 'real images'\nF = {REAL_FLOOR!r}\nG = f'{{A}} {name}'\n")
    lines = [int(hit.split(":")[0]) for hit in family_names_in(source, "ablations/x.py")]
    assert sorted(lines) == [1, 2, 3, 6]
    assert [int(hit.split(":")[0]) for hit in family_names_in(source, "ablations/engine/runfolder.py")] == [1, 2, 3]


@pytest.mark.parametrize("package", ["ablations", "reports", "baselines"])
def test_no_family_is_named_outside_the_registry(package):
    hits = {rel: found for p in sorted((ROOT / package).rglob("*.py")) if p != REGISTRY
            and (found := family_names_in(p.read_text(), rel := p.relative_to(ROOT).as_posix()))}
    assert not hits, f"family names outside {REGISTRY.relative_to(ROOT)}: {hits}"


@pytest.mark.parametrize("name", [n for n, f in FAMILIES.items() if f.section is not None])
def test_setting_one_key_of_a_section_keeps_the_familys_defaults(name):
    """``baseline.NAME.KEY=...`` alone: the section's other values stay the registry's (e.g. DiMR's size table name,
    DiT-XL/2's released size), not the section type's."""
    default = FAMILIES[name].section()
    key, value = ("steps", 7) if hasattr(default, "steps") else ("checkpoint", "/weights.pt")
    data: dict = {}
    set_key(data, f"baseline.{name}.{key}", value)
    assert getattr(typed(data).baseline, name) == replace(default, **{key: value})
    assert getattr(typed({}).baseline, name) == default


# ----------------------------------------------------------------------------------------------------------------------
# A toy family, registered in one place, end to end.

TOY = """
import sys
from pathlib import Path

from ablations.engine.families import FAMILIES, ModelFamily, dit_architecture, trained_loader
from ablations.engine.specs import TrainedBaseline

# the whole registration: a single-scale flow DiT of its own size, with its own section baseline.toy
FAMILIES["toy"] = ModelFamily(
    name="toy",
    load=trained_loader(dit_architecture),
    architecture=dit_architecture,
    section=lambda: TrainedBaseline(depth=1, hidden_size=16, num_heads=2, patch_size=2, steps=5),
    speed_rank=7,
)

from ablations import config, run  # noqa: E402  (read the registry when imported: after the registration)

config.SWEEPS_DIR = Path(sys.argv[1])  # the sweep file below, beside the test's runs
sys.exit(run.main(sys.argv[2:]))
"""

SWEEP = """description: "a toy family registered by the test"
models: [toy]
points:
  - {model: toy, sample.cfg: [1.5], sample.steps: [3]}
"""


@pytest.mark.e2e
def test_a_family_registered_in_one_place_runs_end_to_end(tmp_path):
    """plan -> train -> sample -> score -> report of a family that exists only in the registry (and its sweep file),
    on the smoke preset, in process (workers=1: forked workers would import the registry without it)."""
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "toy.yaml").write_text(SWEEP)
    (tmp_path / "toy.py").write_text(TOY)
    runs = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def toy(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(tmp_path / "toy.py"), str(tmp_path / "sweeps"), "sweep=toy",
                               "preset=smoke", "cpu_threads=1", "workers=1", f"runs_dir={runs}", *args],
                              capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)

    bad = toy("baseline.toy.depth=0")  # its section is checked like any other, when the command is parsed
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "baseline.toy.depth" in bad.stderr, bad.stderr
    assert not runs.exists()

    done = toy("baseline.toy.steps=4")  # its section is the configuration's: overridden like any key
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    smoke = runs / "smoke"
    metrics = {p.parent.name: json.loads(p.read_text()) for p in smoke.glob("*/metrics.json")}
    trains = [m for name, m in metrics.items() if name.startswith("train-toy-")]
    assert len(trains) == 1 and trains[0]["model"] == "toy" and trains[0]["steps"] == 4
    (network,) = [json.loads((smoke / n / "config.json").read_text())["spec"]["network"] for n in metrics
                  if n.startswith("train-toy-")]
    assert (network["depth"], network["hidden_size"]) == (1, 16)  # the rest of its section: the registry's default
    assert math.isfinite(trains[0]["final_loss"])
    scores = [m for name, m in metrics.items() if name.startswith("score-") and m["model"] == "toy"]
    assert len(scores) == 1 and scores[0]["anchor"] is None and scores[0]["scales"] == [8]
    assert math.isfinite(scores[0]["fid"]) and scores[0]["fid"] > 0
    assert scores[0]["steps"] == [3] and scores[0]["cfg"] == [1.5] and scores[0]["conditioning"] is None

    (manifest,) = smoke.glob("_sweeps/toy*.json")
    m = json.loads(manifest.read_text())
    (point,) = m["points"]
    assert point["setting"]["model"] == "toy" and point["speed_rank"] == 7 and point["paper_row"] is None
    assert {r["score"] for r in point["runs"]} == {n for n in metrics if n.startswith("score-") and
                                                    metrics[n]["model"] == "toy"}
    assert set(m["anchors"]) == {"real", "autoencoder", "untrained"}  # every table's floors and ceiling, as always

    report = (smoke / "reports" / "toy" / "report.md").read_text().splitlines()
    (row,) = [i for i, line in enumerate(report) if line.startswith("| toy |")]  # the sweep's table, one row
    header = next(report[i - 1] for i in range(row, 0, -1) if report[i].startswith("|---"))
    cells = dict(zip(header.strip("|").split(" | "), report[row].strip("|").split(" | "), strict=True))
    assert cells["FID ours"].strip() == fmt(scores[0]["fid"], "fid"), cells
