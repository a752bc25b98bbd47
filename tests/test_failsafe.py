"""Failing safely (README "Bad input and faults"): every bad input is refused when the command is parsed with one line
and exit code 2, nothing under the runs folder changes, and no file a user points at can run code; faults (diverging
training, a damaged output, two runners at once, a full disk) stop cleanly without destroying finished results."""

from __future__ import annotations

import json
import os
import pickle
import resource
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from PIL import Image

from ablations.run import main

ROOT = Path(__file__).resolve().parents[1]
RUN = [sys.executable, str(ROOT / "ablations" / "run.py")]


class Crafted:
    """A pickle that runs a shell command when loaded (the attack: a "weights" file that executes code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """Bad files of every kind the harness is pointed at, and a marker that only a code execution would create."""
    d = tmp_path_factory.mktemp("bad")
    marker = d / "CODE-RAN"
    (d / "text.txt").write_text("not weights\n")
    torch.save({"w": Crafted(marker)}, d / "crafted.pt")  # torch's zip format holding a malicious object
    with open(d / "crafted.pkl", "wb") as f:
        pickle.dump(Crafted(marker), f)  # a plain pickle
    np.savez(d / "no_adm.npz", images=np.zeros((2, 4, 4, 3), np.uint8))
    (d / "empty").mkdir()
    (d / "no_images" / "n000").mkdir(parents=True)
    (d / "no_images" / "n000" / "README").write_text("")
    (d / "truncated" / "n000").mkdir(parents=True)
    Image.new("RGB", (64, 64), (9, 9, 9)).save(d / "png.png")
    (d / "truncated" / "n000" / "a.png").write_bytes((d / "png.png").read_bytes()[:60])
    (d / "vae_bin").mkdir()
    (d / "vae_bin" / "config.json").write_text(json.dumps(
        {"block_out_channels": [8, 8, 8, 8], "latent_channels": 4, "scaling_factor": 0.18}))
    torch.save({"w": torch.zeros(1)}, d / "vae_bin" / "diffusion_pytorch_model.bin")
    (d / "vae_noconfig").mkdir()
    (d / "features.safetensors").write_bytes(b"\x00" * 16)
    (d / "images" / "n01440764").mkdir(parents=True)
    Image.new("RGB", (300, 260), (120, 30, 200)).save(d / "images" / "n01440764" / "a.JPEG")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        AutoencoderKL(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                      up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=8).save_pretrained(d / "vae")
    torch.save({"pos_embed": torch.zeros(1, 4)}, d / "dit.pt")
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1)}, d / "inception.pth")
    return {"dir": str(d), "marker": str(marker), **{p.name.replace(".", "_"): str(p) for p in d.iterdir()}}


@pytest.fixture
def runs(tmp_path) -> Path:
    """A runs folder that already holds a finished job (which no refused command may touch)."""
    done = tmp_path / "runs" / "tiny" / "eval-old-12345678"
    done.mkdir(parents=True)
    (done / "metrics.json").write_text('{"kind": "eval"}')
    (done / "config.json").write_text('{"kind": "eval"}')
    return tmp_path / "runs"


def snapshot(root: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


I256 = ["preset=imagenet256", "launcher=inprocess", "eval.inception_weights={inception_pth}"]
CATALOGUE = [  # (arguments, the one line's expected content); {name} is a file of the fixture above
    (["sweep=nope"], "unknown sweep 'nope'; valid sweeps: cfg_scale0"),
    (["sweep=../sweeps/main"], "unknown sweep '../sweeps/main'"),
    (["sweep=cfg_scale0", "preset=huge"], "unknown preset 'huge'; valid presets:"),
    (["sweep=cfg_scale0", "preset=../../x"], "unknown preset '../../x'"),
    (["sweep=cfg_scale0", "train.lrr=1"], "unknown key 'train.lrr'; did you mean 'train.lr'?"),
    (["sweep=cfg_scale0", "train.steps=[1,1]"], "key 'train.steps' is now 'msf.steps'"),
    (["sweep=cfg_scale0", "train.lr=abc"], "train.lr='abc': expected a finite number"),
    (["sweep=cfg_scale0", "train.lr=-1"], "train.lr=-1.0: expected a value > 0"),
    (["sweep=cfg_scale0", "train.lr=0"], "train.lr=0.0: expected a value > 0"),
    (["sweep=cfg_scale0", "train.lr=nan"], "train.lr='nan': expected a finite number"),
    (["sweep=cfg_scale0", "train.lr=.inf"], "train.lr=inf: expected a finite number"),
    (["sweep=cfg_scale0", "train.batch_size=0"], "train.batch_size=0: expected a value > 0"),
    (["sweep=cfg_scale0", "train.ckpt_every=0"], "train.ckpt_every=0: expected a value > 0"),
    (["sweep=cfg_scale0", "train.ema_decay=1.5"], "train.ema_decay=1.5: expected a value in [0, 1]"),
    (["sweep=cfg_scale0", "train.betas=[0.9]"], "train.betas=[0.9]: expected 2 values"),
    (["sweep=cfg_scale0", "msf.steps=[0,1]"], "msf.steps=[0, 1]: expected a value > 0"),
    (["sweep=cfg_scale0", "msf.stages=[]"], "msf.stages=[]: expected at least one entry"),
    (["sweep=cfg_scale0", "msf.scales=[8,6]"], "strictly increasing"),
    (["sweep=cfg_scale0", "data.train_size=0"], "data.train_size=0: expected a value > 0"),
    (["sweep=cfg_scale0", "data.ref_size=0"], "data.ref_size=0: expected at least 2 images"),
    (["sweep=cfg_scale0", "data.image_size=36"], "not divisible by the autoencoder factor 4 times the patch size"),
    (["sweep=steps_scale0", "sample.cfg=[.nan,1]"], "sample.cfg[0]=nan: expected a finite number"),
    (["sweep=steps_scale0", "sample.cfg=[.inf,1]"], "sample.cfg[0]=inf: expected a finite number"),
    (["sweep=cfg_scale0", "sample.steps=[1.5,50]"], "sample.steps[0]=1.5: expected an integer"),
    (["sweep=cfg_scale0", "sample.cfg=[1.2,1.0]"], "sample.cfg is swept by sweep=cfg_scale0"),
    (["sweep=cfg_scale0", "seeds.train=[]"], "seeds.train=[]: expected a non-empty list"),
    (["sweep=cfg_scale0", "seeds.sample=[-1]"], "seeds.sample=[-1]: expected a value >= 0"),
    (["sweep=cfg_scale0", "eval.n_samples=5"], "eval.n_samples=5: expected at least 10 samples"),
    (["sweep=cfg_scale0", "cpu_threads=-1"], "cpu_threads=-1: expected a value >= 0"),
    (["sweep=cfg_scale0", "device=tpu"], "device='tpu' is not one of: auto, cpu, cuda"),
    (["sweep=cfg_scale0", "device=cpu", "eval.compile=reduce-overhead"], "needs device=cuda"),
    (["sweep=cfg_scale0", "autoencoder.frozen=nope"], "autoencoder.frozen='nope' is not one of the committed"),
    (["sweep=speed", "train.lr=1e-4"], "train.lr=0.0001 changes no job of sweep=speed"),
    (["sweep=cfg_scale0", "data.root={empty}"], "data.root='{empty}' is set but data.name=embedded ignores it"),
    (["sweep=cfg_scale0", "data.name=imagefolder"], "data.name=imagefolder needs data.root=DIR"),
    (["sweep=cfg_scale0", "data.name=imagefolder", "data.root={empty}"], "has no class folders"),
    (["sweep=cfg_scale0", "data.name=imagefolder", "data.root={no_images}"], "class folder 'n000' holds no images"),
    (["sweep=cfg_scale0", "data.name=imagefolder", "data.root={truncated}"], "a.png cannot be decoded"),
    (["sweep=cfg_scale0", "data.name=imagefolder", "data.root={text_txt}"], "is a file; expected a folder"),
    (["sweep=cfg_scale0", "autoencoder.kind=pretrained"], "autoencoder.kind=pretrained needs autoencoder.path"),
    (["sweep=cfg_scale0", "autoencoder.kind=pretrained", "autoencoder.path={text_txt}"],
     "is a file; expected a folder"),
    (["sweep=cfg_scale0", "autoencoder.kind=pretrained", "autoencoder.path={vae_noconfig}"], "no readable config.json"),
    (["sweep=cfg_scale0", "autoencoder.kind=pretrained", "autoencoder.path={vae_bin}"],
     "no diffusion_pytorch_model.safetensors (safetensors weights are required; .bin pickles are never loaded)"),
    (["sweep=cfg_scale0", "eval.features={text_txt}"], "is not a safetensors file"),
    (["sweep=cfg_scale0", "eval.features={features_safetensors}"], "is not a safetensors file"),
    (["sweep=cfg_scale0", "eval.inception_weights={text_txt}"], "eval.world=embedded ignores it"),
    (["sweep=cfg_scale0", "eval.world=inception", "eval.inception_weights={text_txt}"], "is not a torch-saved file"),
    (["sweep=cfg_scale0", "eval.world=inception", "eval.inception_weights={crafted_pt}"],
     "is not a plain state dict of tensors"),
    (["sweep=cfg_scale0", "eval.world=inception", "eval.inception_weights={crafted_pkl}"],
     "is not a plain state dict of tensors"),
    (["sweep=cfg_scale0", "eval.world=inception"], "eval.world=inception needs eval.inception_weights=FILE"),
    (["sweep=cfg_scale0", "eval.world=inception", "eval.inception_weights={inception_pth}",
      "eval.reference_npz={no_adm_npz}"], "lacks ADM's arrays mu, sigma"),
    (["sweep=cfg_scale0", "eval.world=inception", "eval.inception_weights={inception_pth}",
      "eval.reference_npz={text_txt}"], "is not an npz file"),
    (["sweep=main", *I256, "data.root={truncated}", "autoencoder.path={vae}", "baseline.dit_xl2_checkpoint={dit_pt}"],
     "data.root: {truncated}/n000/a.png cannot be decoded"),
    (["sweep=main", *I256, "data.root={images}", "autoencoder.path={vae}"], "needs baseline.dit_xl2_checkpoint=PATH"),
    (["sweep=main", *I256, "data.root={images}", "autoencoder.path={vae}", "baseline.dit_xl2_checkpoint={crafted_pt}"],
     "baseline.dit_xl2_checkpoint='{crafted_pt}' is not a plain state dict of tensors"),
    (["sweep=main", *I256, "data.root={images}", "autoencoder.path={vae}", "baseline.dit_xl2_checkpoint={text_txt}"],
     "is not a torch-saved file (expected the official DiT-XL-2-256x256.pt state dict)"),
    (["sweep=main", "baseline.dit_xl2_checkpoint={dit_pt}"], "changes no job of sweep=main at preset=tiny"),
    (["sweep=cfg_scale0", "runs_dir=/proc/msf-runs"], "runs_dir='/proc/msf-runs': cannot write in /proc"),
    (["sweep=cfg_scale0", "runs_dir={text_txt}"], "is a file; expected a folder for the run folders"),
    (["sweep=cfg_scale0", "--bogus"], "unknown option '--bogus'"),
    (["cfg_scale0"], "expected key=value"),
]


@pytest.mark.parametrize("args, message", CATALOGUE, ids=[" ".join(a)[:60] for a, _ in CATALOGUE])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(args, message, files, runs, capsys):
    args = [a.format(**files) for a in args]
    if not any(a.startswith("runs_dir=") for a in args):
        args.append(f"runs_dir={runs}")
    before = snapshot(runs)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message.format(**files) in err[0], err
    assert snapshot(runs) == before
    assert not Path(files["marker"]).exists(), "a user's file ran code"


def test_the_catalogue_is_long_enough():
    assert len(CATALOGUE) >= 30


def test_the_helps_own_example_and_scientific_notation_are_accepted(runs, capsys):
    assert main(["sweep=cfg_scale0", "train.lr=3e-4", "--dry-run", f"runs_dir={runs}"]) == 0
    assert main(["sweep=cfg_scale0", "train.lr=1e-4", "msf.steps=[1e3,5e2]", "--dry-run", f"runs_dir={runs}"]) == 0
    out = capsys.readouterr().out
    assert "override train.lr=0.0001" in out and "override msf.steps=[1000, 500]" in out


def test_a_real_process_exits_2_with_one_line(tmp_path):
    r = subprocess.run([*RUN, "sweep=cfg_scale0", "train.lr=nan", f"runs_dir={tmp_path}"], capture_output=True,
                       text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "train.lr='nan'" in r.stderr


# ----------------------------------------------------------------------------------------------------------------------
# No file a user points at runs code, through any key that names a weights or reference file


@pytest.mark.parametrize(
    "args, message",
    [
        (["sweep=cfg_scale0", "eval.world=inception", "eval.inception_weights={crafted_pt}"], "not a plain state dict"),
        (["sweep=cfg_scale0", "eval.world=inception", "eval.inception_weights={crafted_pkl}"],
         "not a plain state dict"),
        (["sweep=main", *I256, "data.root={images}", "autoencoder.path={vae}",
          "baseline.dit_xl2_checkpoint={crafted_pt}"], "not a plain state dict"),
        (["sweep=main", *I256, "data.root={images}", "autoencoder.path={vae}",
          "baseline.dit_xl2_checkpoint={crafted_pkl}"], "not a plain state dict"),
        (["sweep=cfg_scale0", "eval.features={crafted_pt}"], "is not a safetensors file"),
        (["sweep=cfg_scale0", "autoencoder.kind=pretrained", "autoencoder.path={vae_bin}"], ".bin pickles are never"),
        (["sweep=cfg_scale0", "eval.world=inception", "eval.inception_weights={inception_pth}",
          "eval.reference_npz={pickled_npz}"], "is not an npz file"),
    ],
)
def test_a_crafted_pickle_given_as_any_weights_key_runs_nothing(args, message, files, runs, capsys):
    np.save(Path(files["dir"]) / "pickled.npy", np.array([Crafted(Path(files["marker"]))], dtype=object),
            allow_pickle=True)
    os.replace(Path(files["dir"]) / "pickled.npy", Path(files["dir"]) / "pickled.npz")
    args = [a.format(**{**files, "pickled_npz": str(Path(files["dir"]) / "pickled.npz")}) for a in args]
    assert main([*args, f"runs_dir={runs}"]) == 2
    assert message in capsys.readouterr().err
    assert not Path(files["marker"]).exists(), "a user's file ran code"


def test_the_inception_weights_reach_torch_fidelity_only_as_our_own_copy(tmp_path):
    """Even past the parse-time check (e.g. a file swapped later), the loader refuses a crafted file: torch-fidelity
    (which unpickles with weights_only=False) only ever sees a copy we wrote from tensors."""
    from ablations.engine.metrics import inception_extractor

    marker = tmp_path / "CODE-RAN"
    torch.save({"w": Crafted(marker)}, tmp_path / "crafted.pt")
    with pytest.raises(pickle.UnpicklingError):
        inception_extractor(torch.device("cpu"), tmp_path / "crafted.pt")
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------------------------------
# Faults while running: they stop cleanly and never destroy or replace finished results

SMOKE = ["sweep=cfg_scale1", "preset=smoke", "sample.steps=[3,2]"]


def run_cli(*args: str, cwd: Path, env: dict | None = None, preexec=None) -> subprocess.CompletedProcess:
    return subprocess.run([*RUN, *args], capture_output=True, text=True, cwd=cwd, timeout=900,
                          env={**os.environ, **(env or {})}, preexec_fn=preexec)


def logs_by_job(root: Path) -> dict[str, str]:
    return {p.parent.name: p.read_text() for p in root.glob("*/log.txt")}


@pytest.mark.faults
def test_diverging_training_stops_keeps_finite_checkpoints_and_a_rerun_does_not_loop(tmp_path):
    runs = tmp_path / "runs"
    first = run_cli(*SMOKE, "train.lr=1e30", f"runs_dir={runs}", cwd=tmp_path)
    assert first.returncode == 1, first.stdout[-2000:]
    failed = [line for line in first.stdout.splitlines() if "FAILED" in line]
    assert failed and all("training diverged at step" in line and "lower train.lr" in line for line in failed)
    assert "Traceback" not in first.stdout + first.stderr
    for tensors in runs.rglob("checkpoints/*.safetensors"):
        from safetensors.torch import load_file

        assert all(torch.isfinite(v).all() for v in load_file(str(tensors)).values()), tensors
    evaluated = [p.parent.name for p in runs.rglob("eval-*/metrics.json")]
    assert evaluated and all("untrained" in n or "real" in n for n in evaluated)  # none on a diverged stage
    t0 = time.time()
    again = run_cli(*SMOKE, "train.lr=1e30", f"runs_dir={runs}", cwd=tmp_path)
    assert again.returncode == 1 and "a previous run; delete" in again.stdout
    assert time.time() - t0 < 60


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished smoke sweep (every job done), copied by the tests that damage it."""
    root = tmp_path_factory.mktemp("finished")
    r = run_cli(*SMOKE, f"runs_dir={root / 'runs'}", cwd=root)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return root / "runs"


def copy_runs(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.faults
def test_a_truncated_output_of_a_finished_job_reruns_that_job_alone(finished, tmp_path):
    runs = copy_runs(finished, tmp_path / "runs")
    (ema,) = [p for p in runs.rglob("train-*-s0-t0-*/ema.safetensors") if "untrained" not in str(p)]
    recorded = json.loads((ema.parent / "metrics.json").read_text())["outputs"]["ema.safetensors"]
    ema.write_bytes(ema.read_bytes()[: ema.stat().st_size // 2])
    stamps = {p.parent.name: p.stat().st_mtime_ns for p in runs.rglob("metrics.json") if p.parent != ema.parent}
    dry = run_cli(*SMOKE, f"runs_dir={runs}", "--dry-run", cwd=tmp_path)
    assert "redo  train" in dry.stdout and "1 to run (1 with damaged outputs)" in dry.stdout
    again = run_cli(*SMOKE, f"runs_dir={runs}", cwd=tmp_path)
    assert again.returncode == 0 and "1 job(s) to run" in again.stdout, again.stdout[-2000:]
    assert ema.stat().st_size == recorded["size"]  # rebuilt from its final checkpoint, the same bytes
    from ablations.engine.io import file_sha256

    assert file_sha256(ema) == recorded["sha256"]
    assert stamps == {p.parent.name: p.stat().st_mtime_ns for p in runs.rglob("metrics.json") if p.parent != ema.parent}


@pytest.mark.faults
def test_a_corrupted_output_is_noticed_by_the_job_that_loads_it(finished, tmp_path):
    import shutil

    runs = copy_runs(finished, tmp_path / "runs")
    (ema,) = [p for p in runs.rglob("train-*-s1-t0-*/ema.safetensors") if "untrained" not in str(p)]
    data = bytearray(ema.read_bytes())
    data[-5] ^= 0xFF  # same size: planning cannot see it
    ema.write_bytes(bytes(data))
    evals = sorted(p for p in runs.glob("smoke/eval-msf-residual-*-t0-*") if "untrained" not in p.name)
    shutil.rmtree(evals[0])
    first = run_cli(*SMOKE, f"runs_dir={runs}", cwd=tmp_path)
    assert first.returncode == 1 and "differs from what was written (sha256)" in first.stdout
    second = run_cli(*SMOKE, f"runs_dir={runs}", cwd=tmp_path)
    assert second.returncode == 0, second.stdout[-2000:]
    assert "2 job(s) to run" in second.stdout  # the damaged stage, then the eval that needs it


@pytest.mark.faults
def test_two_runners_on_one_sweep_compute_every_job_once(tmp_path):
    runs = tmp_path / "runs"
    procs = [subprocess.Popen([*RUN, *SMOKE, f"runs_dir={runs}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[0][-2000:] + o[1][-2000:] for o in outs]
    for name, log in logs_by_job(runs / "smoke").items():
        assert log.count("] start ") == 1, (name, log)  # computed once, and only its own run's lines
        assert "Traceback" not in log
    report = runs / "smoke" / "reports" / "cfg_scale1"
    assert (report / "report.md").is_file() and (report / "report.html").is_file()
    assert not list((runs / "smoke" / "reports").glob(".*"))  # no temporary report folders left


@pytest.mark.faults
def test_a_full_disk_is_one_line_and_leaves_no_temporary_files(finished, tmp_path):
    """A file-size limit (RLIMIT_FSIZE, no root needed) makes every large write fail as a full disk does."""
    import shutil

    runs = copy_runs(finished, tmp_path / "runs")
    for cache in runs.glob("smoke/cache-*"):
        shutil.rmtree(cache)  # its shards (0.5 MB) are the first write over the limit

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    r = run_cli(*SMOKE, f"runs_dir={runs}", cwd=tmp_path, preexec=limit)
    assert r.returncode == 1
    assert "Traceback" not in r.stdout + r.stderr
    failed = [line for line in r.stdout.splitlines() if "FAILED" in line]
    assert failed and "is the disk full or read-only?" in failed[0]
    assert not [p for p in runs.rglob("*") if ".tmp" in p.name or p.name.startswith(".msf-")]
    assert not list((runs / "smoke" / "reports").glob(".*"))
    assert (runs / "smoke" / "reports" / "cfg_scale1" / "report.md").is_file()  # the good report is kept


@pytest.mark.faults
def test_no_debugger_prompt_in_a_terminal(tmp_path):
    """A failing job in a terminal (a pseudo-terminal here): the runner reports it and exits; no (Pdb) prompt waits
    for input (the old in-process launcher's post-mortem debugger did)."""
    import pty

    main_fd, sub_fd = pty.openpty()
    proc = subprocess.Popen([*RUN, *SMOKE, "train.lr=1e30", f"runs_dir={tmp_path / 'runs'}"], stdin=sub_fd,
                            stdout=sub_fd, stderr=sub_fd, cwd=tmp_path)
    os.close(sub_fd)
    output = b""
    deadline = time.time() + 600
    while proc.poll() is None and time.time() < deadline:
        try:
            chunk = os.read(main_fd, 4096) if select.select([main_fd], [], [], 1)[0] else b""
        except OSError:
            break
        output += chunk
        assert b"(Pdb)" not in output, output[-2000:]
    proc.wait(timeout=60)
    os.close(main_fd)
    assert proc.returncode == 1 and b"(Pdb)" not in output
