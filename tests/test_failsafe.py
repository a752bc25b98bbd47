"""Failing safely (README "Bad input and faults"): every bad input is refused when the command is parsed with one line
and exit code 2, nothing under the runs folder changes, and no file a user points at can run code; faults (diverging
training, a damaged output, two runners at once, a full disk) stop cleanly without destroying finished results."""

from __future__ import annotations

import json
import math
import os
import pickle
import resource
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import _runfolders as rf  # tests/ is on sys.path under pytest's default import mode
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


def png(path: Path, colour: int = 9) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), (colour, colour, colour)).save(path)
    return path


def classes(root: Path, n: int, per_class: int = 2) -> Path:
    """A class-per-folder tree of ``n`` classes of small PNG files."""
    for c in range(n):
        for i in range(per_class):
            png(root / f"c{c}" / f"{i}.png", 10 * c + i)
    return root


def savez(path: Path, **arrays) -> Path:
    np.savez_compressed(path, **arrays)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """Bad files of every kind the harness is pointed at, and a marker that only a code execution would create."""
    from conftest import layout_file
    from safetensors.torch import save_file

    from ablations.engine.classifier import EmbeddedClassifier
    from ablations.engine.metrics import inception_layout
    from baselines.dit import dit_xl2

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
    png(d / "png.png")
    (d / "truncated" / "n000").mkdir(parents=True)
    (d / "truncated" / "n000" / "a.png").write_bytes((d / "png.png").read_bytes()[:60])
    png(d / "truncated" / "n001" / "b.png")
    # Datasets whose fault is past the first file of the first class (a probe of one file per class missed them)
    classes(d / "classes2", 2)
    classes(d / "classes6", 6)
    (classes(d / "later_text", 2) / "c1" / "2.png").write_text("not an image\n")
    (classes(d / "later_cut", 2) / "c1" / "2.png").write_bytes((d / "png.png").read_bytes()[:-20])
    (classes(d / "later_empty", 2) / "c1" / "2.jpg").write_bytes(b"")
    (classes(d / "empty_class", 2) / "c2").mkdir()
    (d / "empty_class" / "c2" / "notes.txt").write_text("")
    classes(d / "digits2" / "train", 2)
    classes(d / "digits2" / "ref", 2)
    # CIFAR-10's binary version: missing, empty, cut and whole (six files of one record each)
    (d / "cifar_nobin").mkdir()
    (d / "cifar_empty" / "cifar-10-batches-bin").mkdir(parents=True)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for folder, size in (("cifar_ok", 3073), ("cifar_cut", 3073), ("cifar_zero", 0)):
        (d / folder / "cifar-10-batches-bin").mkdir(parents=True)
        for name in names:
            (d / folder / "cifar-10-batches-bin" / name).write_bytes(bytes(size))
    (d / "cifar_cut" / "cifar-10-batches-bin" / "data_batch_3.bin").write_bytes(bytes(3073 + 100))
    # VAE folders
    (d / "vae_bin").mkdir()
    (d / "vae_bin" / "config.json").write_text(json.dumps(
        {"block_out_channels": [8, 8, 8, 8], "latent_channels": 4, "scaling_factor": 0.18}))
    torch.save({"w": torch.zeros(1)}, d / "vae_bin" / "diffusion_pytorch_model.bin")
    (d / "vae_noconfig").mkdir()
    (d / "features.safetensors").write_bytes(b"\x00" * 16)
    for c, synset in enumerate(("n01440764", "n01443537")):
        (d / "images" / synset).mkdir(parents=True)
        Image.new("RGB", (300, 260), (120, 30 * c, 200)).save(d / "images" / synset / "a.JPEG")
    vae_args = dict(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                    up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        AutoencoderKL(**vae_args).save_pretrained(d / "vae")
        AutoencoderKL(**vae_args, latent_channels=8).save_pretrained(d / "vae_other")  # then given vae's config
        dit = dit_xl2(depth=1, hidden_size=32, num_heads=2)
        torch.save(dit.state_dict(), d / "dit_small.pt")
        torch.save(dit_xl2(depth=2, hidden_size=32, num_heads=2).state_dict(), d / "dit_deeper.pt")
        torch.save(dit_xl2(depth=1, hidden_size=64, num_heads=2).state_dict(), d / "dit_wider.pt")
        net = EmbeddedClassifier(4, width=8)
        save_file(net.state_dict(), d / "features_other.safetensors", metadata={"config": json.dumps(
            {"num_classes": 4, "width": 16})})
        save_file(net.state_dict(), d / "features_badconfig.safetensors", metadata={"config": "{width: 8"})
        save_file(net.state_dict(), d / "features_16px.safetensors", metadata={  # as the own-image builder writes
            "config": json.dumps({"num_classes": 4, "width": 8}), "metadata": json.dumps({"image_size": "16"})})
    (d / "vae_other" / "config.json").write_text((d / "vae" / "config.json").read_text())
    shutil.copytree(d / "vae", d / "vae_garbage")
    (d / "vae_garbage" / "diffusion_pytorch_model.safetensors").write_bytes(b"\xff" * 64)
    shutil.copytree(d / "vae", d / "vae_groups")
    config = json.loads((d / "vae" / "config.json").read_text())
    (d / "vae_groups" / "config.json").write_text(json.dumps({**config, "norm_num_groups": 3}))
    torch.save({"pos_embed": torch.zeros(1, 4)}, d / "dit.pt")
    layout_file(inception_layout(), d / "inception.pth")  # torch-fidelity's layout, every tensor a broadcast zero
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1)}, d / "inception_one.pth")
    torch.save({k: torch.zeros(1) for k in inception_layout()}, d / "inception_shapes.pth")
    layout_file({**inception_layout(), "extra.weight": (1,)}, d / "inception_extra.pth")
    stats = {"mu": np.zeros(2048, np.float32), "sigma": np.zeros((2048, 2048), np.float32)}
    images = np.zeros((4, 8, 8, 3), np.uint8)
    savez(d / "adm.npz", **stats, arr_0=images)
    np.savez(d / "objects.npz", **stats, arr_0=np.array([Crafted(marker)], dtype=object))  # a pickled array
    savez(d / "adm_mu2d.npz", mu=np.zeros((4, 4)), sigma=stats["sigma"], arr_0=images)
    savez(d / "adm_float.npz", **stats, arr_0=images.astype(np.float32))
    # runs_dir paths too long for the file system: a name over PC_NAME_MAX; a path over PC_PATH_MAX; a path that
    # fits alone but not with the run folders and files the plan puts under it
    name_max, path_max = os.pathconf(d, "PC_NAME_MAX"), os.pathconf(d, "PC_PATH_MAX") - 1
    deep = str(d / "/".join(["d" * 200] * (path_max // 200 + 1)))
    fits_alone = str(d / "/".join(["d" * 200] * ((path_max - len(str(d)) - 120) // 201)))
    fits_alone += "/" + "e" * (path_max - 1 - 96 - 20 - len(fits_alone))  # its jobs' files need 96 bytes, + 20
    return {"dir": str(d), "marker": str(marker), "long_name": str(d / ("n" * (name_max + 1))), "deep": deep,
            "fits_alone": fits_alone, **{p.name.replace(".", "_"): str(p) for p in d.iterdir()}}


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


I256 = ["preset=imagenet256", "launcher=inprocess", "device=cpu", "data.num_classes=2",
        "eval.inception_weights={inception_pth}"]
MAIN = ["sweep=main", *I256, "data.root={images}", "autoencoder.path={vae}"]


def small_dit(checkpoint: str) -> str:
    """The rehearsal's DiT layout with the checkpoint named by a fixture's file (formatted later)."""
    return "baseline.dit_xl2={{size: '', depth: 1, hidden_size: 32, num_heads: 2, checkpoint: {" + checkpoint + "}}}"


IMAGES = ["sweep=cfg_scale0", "data.name=imagefolder", "data.num_classes=2"]
CIFAR = ["sweep=cfg_scale0", "data.name=cifar10"]
INCEPTION = ["sweep=cfg_scale0", "eval.world=inception"]
VAE = ["sweep=cfg_scale0", "autoencoder.kind=pretrained"]
CATALOGUE = [  # (arguments, the one line's expected content); {name} is a file of the fixture above
    # -- names: sweeps, presets, keys, options
    (["sweep=nope"], "unknown sweep 'nope'; valid sweeps: cfg_scale0"),
    (["sweep=../sweeps/main"], "unknown sweep '../sweeps/main'"),
    (["sweep=cfg_scale0", "preset=huge"], "unknown preset 'huge'; valid presets:"),
    (["sweep=cfg_scale0", "preset=../../x"], "unknown preset '../../x'"),
    (["sweep=cfg_scale0", "train.lrr=1"], "unknown key 'train.lrr'; did you mean 'train.lr'?"),
    (["sweep=cfg_scale0", "train.steps=[1,1]"], "key 'train.steps' is now 'msf.steps'"),
    (["sweep=cfg_scale0", "--bogus"], "unknown option '--bogus'"),
    (["cfg_scale0"], "expected key=value"),
    # -- a key given twice: the last would win silently
    (["sweep=cfg_scale0", "train.lr=1e-4", "train.lr=2e-4"],
     "train.lr is given twice (train.lr=1e-4 and train.lr=2e-4)"),
    (["sweep=cfg_scale0", "sweep=cfg_scale1"], "sweep is given twice (sweep=cfg_scale0 and sweep=cfg_scale1)"),
    (["sweep=cfg_scale0", "preset=tiny", "preset=smoke"], "preset is given twice"),
    (["sweep=cfg_scale0", "data={{name: embedded}}", "data.name=digits"],
     "data.name is given twice (data={{name: embedded}} and data.name=digits)"),
    (["sweep=cfg_scale0", "seeds.sample=[1,1]"], "seeds.sample=[1, 1] repeats 1"),
    (["sweep=cfg_scale0", "seeds.train=[0,0]"], "seeds.train=[0, 0] repeats 0"),
    (["sweep=cfg_scale0", "seeds.train=[0,1,2,1]"], "seeds.train=[0, 1, 2, 1] repeats 1"),
    # -- types, ranges, finiteness
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
    (["sweep=cfg_scale0", "data.name=digits", "data.image_size=36"],
     "not divisible by the autoencoder factor 2 times the patch size 4"),
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
    # -- bounds on counts and steps (far above any real use; a typo is refused before a job fails on it)
    (["sweep=cfg_scale0", "eval.n_samples=1000000000000"],
     "eval.n_samples=1000000000000: expected at least 10 samples (IS uses 10 splits) and at most 1,000,000"),
    (["sweep=cfg_scale0", "eval.n_samples=100.5"], "eval.n_samples=100.5: expected an integer"),
    (["sweep=cfg_scale0", "msf.steps=[1e30,2]"], "msf.steps[0]='1e30': expected an integer; beyond 2**53"),
    (["sweep=cfg_scale0", "msf.steps=[1e9,2]"], "msf.steps=[1000000000, 2]: expected a value > 0 and at most "
                                                "100,000,000"),
    (["sweep=cfg_scale0", "msf.steps=[1.5,2]"], "msf.steps[0]=1.5: expected an integer"),
    (["sweep=cfg_scale0", "msf.steps=[100000000000000000000,2]"], "expected an integer within 64 bits"),
    (["sweep=cfg_scale0", "sample.steps=[100000,50]"], "sample.steps=[100000, 50]: expected a value > 0 and at most"),
    (["sweep=cfg_scale0", "train.warmup_steps=1e12"], "train.warmup_steps=1000000000000: expected a value >= 0 and"),
    (["sweep=cfg_scale0", "baseline.dimr.steps=1e12"], "baseline.dimr.steps=1000000000000: expected a value > 0 and"),
    (["sweep=cfg_scale0", "data.ref_size=1e9"], "data.ref_size=1000000000: expected at least 2 images and at most"),
    (["sweep=cfg_scale0", "data.image_size=100000"], "data.image_size=100000: expected a value > 0 and at most 4,096"),
    (["sweep=cfg_scale0", "seeds.sample=[9223372036854775808]"], "expected an integer within 64 bits"),
    (["sweep=cfg_scale0", "preset=smoke", "data.image_size=48"],
     "data.image_size=48: the embedded dataset draws 32 or 64 px images"),
    (["sweep=cfg_scale0", "preset=smoke", "data.num_classes=30"],
     "data.num_classes=30: the embedded dataset has at most 20 classes"),
    (["sweep=cfg_scale0", "data.num_classes=30"], "data.num_classes=30: the photos dataset has at most 10 classes"),
    (["sweep=cfg_scale0", "data.image_size=64", "msf.scales=[24,32]"], "data.image_size=64: photo crops are reduced "
                                                                        "to 8-48 px"),
    (["sweep=cfg_scale0", "data.num_classes=1"], "data.num_classes=1: expected at least 2 classes"),
    # -- this machine, where a local launcher runs the jobs
    (["sweep=cfg_scale0", "cpu_threads=100000"], "cpu_threads=100000 but this machine gives this process"),
    (["sweep=cfg_scale0", "launcher=local", "cpu_threads=100000"], "(launcher=local runs the jobs here)"),
    (["sweep=cfg_scale0", "device=cuda"], "device=cuda but this machine has no CUDA device"),
    (["sweep=cfg_scale0", "eval.compile=reduce-overhead"], "eval.compile=reduce-overhead (device=auto) but this "
                                                           "machine has no CUDA device"),
    # -- datasets: class folders against data.num_classes, every image's header, CIFAR-10's files
    (["sweep=cfg_scale0", "data.root={empty}"], "data.root='{empty}' is set but data.name=photos ignores it"),
    (["sweep=cfg_scale0", "data.name=imagefolder"], "data.name=imagefolder needs data.root=DIR"),
    ([*IMAGES, "data.root={empty}"], "has no class folders"),
    ([*IMAGES, "data.root={no_images}"], "data.num_classes=2 but {no_images} has 1 class folders"),
    (["sweep=cfg_scale0", "data.name=imagefolder", "data.root={no_images}"],
     "data.num_classes=10 but {no_images} has 1 class folders"),
    ([*IMAGES, "data.root={empty_class}"], "data.num_classes=2 but {empty_class} has 3 class folders"),
    (["sweep=cfg_scale0", "data.name=imagefolder", "data.num_classes=3", "data.root={empty_class}"],
     "class folder 'c2' holds no images"),
    ([*IMAGES, "data.root={truncated}"], "{truncated}/n000/a.png cannot be read as an image"),
    (["sweep=cfg_scale0", "data.name=imagefolder", "data.num_classes=4", "data.root={classes2}"],
     "data.num_classes=4 but {classes2} has 2 class folders"),
    (["sweep=cfg_scale0", "data.name=imagefolder", "data.num_classes=4", "data.root={classes6}"],
     "data.num_classes=4 but {classes6} has 6 class folders"),
    ([*IMAGES, "data.root={later_text}"], "{later_text}/c1/2.png cannot be read as an image (cannot identify"),
    ([*IMAGES, "data.root={later_cut}"], "{later_cut}/c1/2.png cannot be read as an image (truncated: its last"),
    ([*IMAGES, "data.root={later_empty}"], "{later_empty}/c1/2.jpg cannot be read as an image"),
    ([*IMAGES, "data.root={text_txt}"], "is a file; expected a folder"),
    (["sweep=cfg_scale0", "data.name=digits", "data.num_classes=4"], "data.num_classes=4 but the digits have 10"),
    (["sweep=cfg_scale0", "data.name=digits", "data.root={digits2}"],
     "data.num_classes=10 but {digits2}/train has 2 class folders"),
    ([*CIFAR, "data.root={cifar_nobin}"], "has no cifar-10-batches-bin folder"),
    ([*CIFAR, "data.root={cifar_empty}"], "cifar-10-batches-bin lacks data_batch_1.bin"),
    ([*CIFAR, "data.root={cifar_zero}"], "cifar-10-batches-bin/data_batch_1.bin has 0 bytes; expected a non-zero "
                                         "multiple of CIFAR-10's 3073-byte records"),
    ([*CIFAR, "data.root={cifar_cut}"], "cifar-10-batches-bin/data_batch_3.bin has 3173 bytes"),
    ([*CIFAR, "data.root={cifar_ok}", "data.num_classes=4"], "data.num_classes=4 but CIFAR-10 has 10 classes"),
    # -- autoencoder folders: config.json, safetensors weights, tensor by tensor against the AutoencoderKL
    (["sweep=cfg_scale0", "autoencoder.kind=pretrained"], "autoencoder.kind=pretrained needs autoencoder.path"),
    ([*VAE, "autoencoder.path={text_txt}"], "is a file; expected a folder"),
    ([*VAE, "autoencoder.path={vae_noconfig}"], "no readable config.json"),
    ([*VAE, "autoencoder.path={vae_bin}"],
     "no diffusion_pytorch_model.safetensors (safetensors weights are required; .bin pickles are never loaded)"),
    ([*VAE, "autoencoder.path={vae_garbage}"], "diffusion_pytorch_model.safetensors is not a safetensors file"),
    ([*VAE, "autoencoder.path={vae_other}"], "does not fit the AutoencoderKL of its config.json: 7 of another "
                                             "shape (first 'encoder.conv_out.weight': [16, 8, 3, 3], expected "
                                             "[8, 8, 3, 3])"),
    ([*VAE, "autoencoder.path={vae_groups}"], "config.json does not build an AutoencoderKL"),
    # -- feature networks and Inception weights
    (["sweep=cfg_scale0", "eval.features={text_txt}"], "is not a safetensors file"),
    (["sweep=cfg_scale0", "eval.features={features_safetensors}"], "is not a safetensors file"),
    (["sweep=cfg_scale0", "eval.features={features_other_safetensors}"],
     "does not fit the EmbeddedClassifier of its config {{\"num_classes\": 4, \"width\": 16}}: 25 of another shape "
     "(first 'trunk.0.0.weight': [8, 3, 3, 3], expected [16, 3, 3, 3])"),
    (["sweep=cfg_scale0", "eval.features={features_16px_safetensors}"],
     "eval.features={features_16px_safetensors} was trained on 16 px images but data.image_size=32"),
    (["sweep=cfg_scale0", "preset=digits", "data.image_size=64", "msf.scales=[12,16]"],
     "autoencoder.frozen=digits-ae was trained on 32 px images but data.image_size=64"),
    (["sweep=cfg_scale0", "eval.features={features_badconfig_safetensors}"],
     "its header's config '{{width: 8' does not build an EmbeddedClassifier"),
    (["sweep=cfg_scale0", "eval.inception_weights={text_txt}"], "eval.world=embedded ignores it"),
    ([*INCEPTION, "eval.inception_weights={text_txt}"], "is not a torch-saved file"),
    ([*INCEPTION, "eval.inception_weights={crafted_pt}"],
     "is not a plain state dict of tensors (Trying to load unsupported GLOBAL posix.system"),
    ([*INCEPTION, "eval.inception_weights={crafted_pkl}"], "is not a plain state dict of tensors"),
    (INCEPTION, "eval.world=inception needs eval.inception_weights=FILE"),
    ([*INCEPTION, "eval.inception_weights={inception_one_pth}"],
     "does not fit torch-fidelity's InceptionV3: 471 of its 566 tensors missing (first 'Conv2d_1a_3x3.bn.weight'); "
     "1 of another shape (first 'Conv2d_1a_3x3.conv.weight': [1], expected [32, 3, 3, 3])"),
    ([*INCEPTION, "eval.inception_weights={inception_shapes_pth}"],
     "566 of another shape (first 'Conv2d_1a_3x3.conv.weight': [1], expected [32, 3, 3, 3])"),
    ([*INCEPTION, "eval.inception_weights={inception_extra_pth}"], "1 tensors it does not have (first 'extra.weight')"),
    # -- ADM's reference batch: arrays read from their headers, never unpickled
    ([*INCEPTION, "eval.inception_weights={inception_pth}", "eval.reference_npz={no_adm_npz}"],
     "lacks ADM's arrays mu, sigma"),
    ([*INCEPTION, "eval.inception_weights={inception_pth}", "eval.reference_npz={text_txt}"], "is not an npz file"),
    ([*INCEPTION, "eval.inception_weights={inception_pth}", "eval.reference_npz={objects_npz}"],
     "array 'arr_0' holds pickled Python objects; refusing to load it"),
    ([*INCEPTION, "eval.inception_weights={inception_pth}", "eval.reference_npz={adm_mu2d_npz}"],
     "mu is float64 [4, 4]; expected float [2048]"),
    ([*INCEPTION, "eval.inception_weights={inception_pth}", "eval.reference_npz={adm_float_npz}"],
     "arr_0 is float32 [4, 8, 8, 3]; expected uint8"),
    # -- the paper's configuration (imagenet256): dataset, VAE and Inception pass, then the DiT-XL/2 checkpoint
    (["sweep=main", *I256, "data.root={truncated}", "autoencoder.path={vae}", "baseline.dit_xl2.checkpoint={dit_pt}"],
     "data.root='{truncated}': {truncated}/n000/a.png cannot be read as an image"),
    (["sweep=main", *I256, "data.root={classes6}", "autoencoder.path={vae}", "baseline.dit_xl2.checkpoint={dit_pt}"],
     "data.num_classes=2 but {classes6} has 6 class folders"),
    ([*MAIN], "needs baseline.dit_xl2.checkpoint=PATH"),
    ([*MAIN, "baseline.dit_xl2.checkpoint={crafted_pt}"],
     "baseline.dit_xl2.checkpoint='{crafted_pt}' is not a plain state dict of tensors"),
    ([*MAIN, "baseline.dit_xl2.checkpoint={text_txt}"],
     "is not a torch-saved file (expected the official DiT-XL-2-256x256.pt state dict)"),
    ([*MAIN, "baseline.dit_xl2.checkpoint={dit_pt}"],
     "does not fit the network baseline.dit_xl2 (DiT-XL/2) configures: 291 of its 292 tensors missing"),
    ([*MAIN, "baseline.dit_xl2.checkpoint={dit_small_pt}"],
     "(DiT-XL/2) configures: 270 of its 292 tensors missing (first 'blocks.1.attn.qkv.weight'); 21 of another shape"),
    ([*MAIN, small_dit("dit_deeper_pt")],
     "(depth 1, width 32, patch 2) configures: 10 tensors it does not have (first 'blocks.1."),
    ([*MAIN, small_dit("dit_wider_pt")], "of another shape (first 'pos_embed'"),
    (["sweep=main", "baseline.dit_xl2.checkpoint={dit_pt}"], "changes no job of sweep=main at preset=tiny"),
    # -- the runs folder: writable, a folder, paths within the file system's limits (with the plan's run folders)
    (["sweep=cfg_scale0", "runs_dir=/proc/msf-runs"], "runs_dir='/proc/msf-runs': cannot write in /proc"),
    (["sweep=cfg_scale0", "runs_dir={text_txt}"], "is a file; expected a folder for the run folders"),
    (["sweep=cfg_scale0", "runs_dir={long_name}"], "bytes; this file system allows 255 (PC_NAME_MAX)"),
    (["sweep=cfg_scale0", "runs_dir={deep}"], "bytes; this file system allows 4095 (PC_PATH_MAX)"),
    (["sweep=cfg_scale0", "runs_dir={fits_alone}"], "the files its job writes would reach"),
]
CUDA_CASES = ("device=cuda", "eval.compile=reduce-overhead")


@pytest.mark.parametrize("args, message", CATALOGUE, ids=[" ".join(a)[:60] for a, _ in CATALOGUE])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(args, message, files, runs, capsys):
    if args[-1] in CUDA_CASES and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    args = [a.format(**files) for a in args]
    if not any(a.startswith("runs_dir=") for a in args):
        args.append(f"runs_dir={runs}")
    before = snapshot(runs)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message.format(**files) in err[0], err
    assert snapshot(runs) == before
    assert not Path(files["marker"]).exists(), "a user's file ran code"


FLOW_POINTS = "grid: {model: [dit_flow], sample.steps: [[250]], sample.cfg: [[1.5], [2.0], [2.5]]}\n"
SWEEP_FILES = [  # a sweep file's mistakes: each would otherwise be ignored or fail later
    ("description: x\ngrids: {sample.cfg: [[1.2, 1.0]]}\n",
     "sweep mine: unknown key 'grids' in its file; expected one of description, table, models"),
    ("by_preset: {tiny: {pionts: []}}\ngrid: {sample.cfg: [[1.2, 1.0]]}\n",
     "sweep mine, by_preset tiny: unknown key 'pionts' in its file; expected one of base, grid, points"),
    (FLOW_POINTS + "reference: {sample.cfg: [9.0]}\n",
     "sweep mine: reference {'sample.cfg': [9.0]} matches 0 of its points; expected one"),
    (FLOW_POINTS + "reference: 2\n", "sweep mine: reference must map settings to values"),
    ("by_preset: [tiny]\n" + FLOW_POINTS, "sweep mine: by_preset must map preset names to blocks of base, grid"),
    ("by_preset: {tiny: [1]}\n" + FLOW_POINTS, "sweep mine, by_preset tiny: expected a mapping, got list"),
    ("", "sweep mine has no eval points at preset tiny"),
    ("base: {sample.steps: [250]}\ngrid: {model: [dit_flow], sample.cfg: [[1.5], [2.0]]}\n",
     "the ceiling (untrained msf, sampled at the sweep's own settings): sample.steps=[250] has 1 entries but model "
     "msf has 2 scale(s)"),
]


@pytest.mark.parametrize("text, message", SWEEP_FILES, ids=[m[:50] for _, m in SWEEP_FILES])
def test_a_sweep_files_mistake_is_one_line_exit_2(text, message, runs, tmp_path, monkeypatch, capsys):
    from ablations import config

    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "mine.yaml").write_text(text)
    monkeypatch.setattr(config, "SWEEPS_DIR", tmp_path / "sweeps")
    before = snapshot(runs)
    assert main(["sweep=mine", f"runs_dir={runs}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert snapshot(runs) == before


def test_a_sweep_files_reference_names_the_point_its_table_pairs_with(tmp_path, monkeypatch):
    """``reference`` picks the one point whose settings include it, whatever the order of the points; without it the
    reference is the point at the preset's own settings (none here: the flow DiT has no MSF default)."""
    from ablations import config
    from ablations.graph import plan

    (tmp_path / "sweeps").mkdir()
    monkeypatch.setattr(config, "SWEEPS_DIR", tmp_path / "sweeps")
    for reference, index in (("{sample.cfg: [2.5]}", 2), ("{sample.cfg: [1.5], sample.steps: [250]}", 0),
                             (None, None)):
        (tmp_path / "sweeps" / "mine.yaml").write_text(FLOW_POINTS + (f"reference: {reference}\n" if reference else ""))
        cfg, sweep = config.resolve([("sweep", "mine"), ("runs_dir", str(tmp_path / "runs"))])
        assert sweep.reference == index and plan(cfg, sweep).manifest["reference"] == index


def test_a_sound_command_passes_every_check(files, runs, capsys):
    """The checks refuse what is wrong, not what is unusual: every kind of input above, made right, is accepted."""
    ok = [[*IMAGES, "data.root={classes2}"], [*CIFAR, "data.root={cifar_ok}"],
          [*VAE, "autoencoder.path={vae}", "data.name=embedded", "data.image_size=64", "msf.scales=[4,8]",
           "eval.world=inception", "eval.inception_weights={inception_pth}"],  # a VAE at any size (f = 8)
          [*INCEPTION, "eval.inception_weights={inception_pth}", "eval.reference_npz={adm_npz}"],
          [*MAIN, small_dit("dit_small_pt")]]
    for args in ok:
        assert main([*(a.format(**files) for a in args), f"runs_dir={runs}", "--dry-run"]) == 0, capsys.readouterr()


def test_a_dataset_probe_reads_every_image_header_quickly(tmp_path):
    """Every file of a 2,000-image tree is checked (a damaged last file is found), at well under a millisecond each."""
    from ablations.inputs import InputError, image_folder

    root = classes(tmp_path / "tree", 10, per_class=200)
    t0 = time.perf_counter()
    assert image_folder("data.root", root, 10) == 2000
    assert time.perf_counter() - t0 < 2.0
    (root / "c9" / "199.png").write_bytes((root / "c9" / "0.png").read_bytes()[:-1])
    with pytest.raises(InputError, match="c9/199.png cannot be read as an image"):
        image_folder("data.root", root, 10)


def test_the_helps_own_example_and_scientific_notation_are_accepted(runs, capsys):
    assert main(["sweep=cfg_scale0", "train.lr=3e-4", "--dry-run", f"runs_dir={runs}"]) == 0
    assert main(["sweep=cfg_scale0", "train.lr=1e-4", "msf.steps=[1e3,5e2]", "--dry-run", f"runs_dir={runs}"]) == 0
    out = capsys.readouterr().out
    assert "override train.lr=0.0001" in out and "override msf.steps=[1000, 500]" in out


@pytest.mark.e2e
def test_a_real_process_exits_2_with_one_line(tmp_path):
    r = subprocess.run([*RUN, "sweep=cfg_scale0", "train.lr=nan", f"runs_dir={tmp_path}"], capture_output=True,
                       text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "train.lr='nan'" in r.stderr


# ----------------------------------------------------------------------------------------------------------------------
# No file a user points at runs code, through any key that names a weights or reference file


PICKLED = [  # a crafted pickle (or an array of pickled objects) as every key that names a weights or reference file
    ([*INCEPTION, "eval.inception_weights={crafted_pt}"], "not a plain state dict"),
    ([*INCEPTION, "eval.inception_weights={crafted_pkl}"], "not a plain state dict"),
    ([*MAIN, "baseline.dit_xl2.checkpoint={crafted_pt}"], "not a plain state dict"),
    ([*MAIN, "baseline.dit_xl2.checkpoint={crafted_pkl}"], "not a plain state dict"),
    (["sweep=cfg_scale0", "eval.features={crafted_pt}"], "is not a safetensors file"),
    ([*VAE, "autoencoder.path={vae_bin}"], ".bin pickles are never"),
    ([*INCEPTION, "eval.inception_weights={inception_pth}", "eval.reference_npz={pickled_npz}"], "is not an npz file"),
    ([*INCEPTION, "eval.inception_weights={inception_pth}", "eval.reference_npz={objects_npz}"],
     "holds pickled Python objects"),
]


@pytest.mark.parametrize("args, message", PICKLED, ids=[" ".join(a)[-50:] for a, _ in PICKLED])
def test_a_crafted_pickle_given_as_any_weights_key_runs_nothing(args, message, files, runs, capsys):
    np.save(Path(files["dir"]) / "pickled.npy", np.array([Crafted(Path(files["marker"]))], dtype=object),
            allow_pickle=True)
    os.replace(Path(files["dir"]) / "pickled.npy", Path(files["dir"]) / "pickled.npz")
    args = [a.format(**{**files, "pickled_npz": str(Path(files["dir"]) / "pickled.npz")}) for a in args]
    assert main([*args, f"runs_dir={runs}"]) == 2
    assert message in capsys.readouterr().err
    assert not Path(files["marker"]).exists(), "a user's file ran code"


@pytest.mark.e2e
@pytest.mark.parametrize("weights", ["crafted_pkl", "crafted_pt"])
def test_the_refusal_of_a_crafted_pickle_is_the_only_line_on_stderr(weights, files, tmp_path):
    """torch's unpickler warns about a plain pickle's protocol: no warning reaches the user, only the refusal."""
    r = subprocess.run([*RUN, *INCEPTION, f"eval.inception_weights={files[weights]}", f"runs_dir={tmp_path}"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not a plain state dict of tensors" in r.stderr, r.stderr
    assert not Path(files["marker"]).exists()


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
# The report builder: a run folder whose metrics no table can show is refused in one line, never printed as "—" or
# "nan"; so are a missing folder and an --out that is a file


def report_runs(root: Path) -> Path:
    """A finished eval point (its sample and score runs, listed by Table 2's manifest) and a finished training of
    the synthetic imagenet256 sweep (tests/_runfolders.py)."""
    rf.write_sweep(root, "cfg_scale0", {rf.MAIN: {(0, 0): 8.0}})
    rf.write_run(root, "train", "train-one", rf.train_metrics("msf", 0, 0, 0.5, "residual", rf.SCALES))
    return root


def edit_json(root: Path, kind: str, name: str, **changes) -> None:
    (path,) = root.glob(f"{rf.PRESET}/{kind}-*/{name}")
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def drop_json(root: Path, kind: str, name: str, *keys: str) -> None:
    (path,) = root.glob(f"{rf.PRESET}/{kind}-*/{name}")
    path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k not in keys}))


REPORTS = [  # (what is done to a finished runs folder, extra arguments, the one line's expected content)
    (lambda r: edit_json(r, "score", "metrics.json", fid="twelve"), [], "metrics.json: fid='twelve' is not a finite"),
    (lambda r: edit_json(r, "score", "metrics.json", fid=math.nan), [], "metrics.json: fid=nan is not a finite number"),
    (lambda r: edit_json(r, "score", "metrics.json", fid=math.inf), [], "metrics.json: fid=inf is not a finite number"),
    (lambda r: edit_json(r, "score", "metrics.json", fid=True), [], "metrics.json: fid=True is not a finite number"),
    (lambda r: edit_json(r, "score", "metrics.json", precision=-math.inf), [], "precision=-inf is not a finite"),
    (lambda r: edit_json(r, "score", "metrics.json", cfg=[math.nan, 1.0]), [], "cfg=[nan, 1.0] is not a finite"),
    (lambda r: edit_json(r, "score", "metrics.json", steps=["many", 50]), [], "steps=['many', 50] is not a finite"),
    (lambda r: edit_json(r, "score", "metrics.json", n_samples="500"), [], "n_samples='500' is not a finite number"),
    (lambda r: edit_json(r, "train", "metrics.json", final_loss="low"), [], "final_loss='low' is not a finite"),
    (lambda r: edit_json(r, "train", "metrics.json", sec_per_step=math.nan), [], "sec_per_step=nan is not a finite"),
    (lambda r: next(r.glob("*/score-*/metrics.json")).write_text("{"), [], "metrics.json: Expecting property name"),
    (lambda r: next(r.glob("*/score-*/metrics.json")).write_text("[]"), [], "metrics.json is not a JSON object"),
    (lambda r: drop_json(r, "score", "metrics.json", "fid"), [], "metrics.json lacks fid"),
    (lambda r: (r / "out").write_text("a file"), ["--out", "{root}/out"], "/out is a file; expected a folder"),
    (lambda r: None, ["{root}/absent"], "not a directory: "),
    (lambda r: (r / "nothing").mkdir(), ["{root}/nothing"], "no run folder (config.json) in"),
    (lambda r: None, ["--bogus"], "unrecognized arguments: --bogus (see --help)"),
    (lambda r: (r / "nothing").mkdir(), ["--stand-in", "{root}/nothing"], "no run folder (config.json) in"),
]


@pytest.mark.parametrize("damage, extra, message", REPORTS, ids=[m[:40] for _, _, m in REPORTS])
def test_the_report_builder_refuses_in_one_line_exit_2_and_writes_nothing(damage, extra, message, tmp_path, capsys):
    from reports.build import main as build_main

    root = report_runs(tmp_path / "runs")
    damage(root)
    before = snapshot(tmp_path)
    argv = [a.format(root=root) for a in extra]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "report")]
    with pytest.raises(SystemExit) as exit_:
        build_main([str(root), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and message in err[0], err
    assert snapshot(tmp_path) == before


def test_the_report_builder_needs_its_arguments_in_one_line(capsys):
    from reports.build import main as build_main

    with pytest.raises(SystemExit) as exit_:
        build_main([])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and err == ["error: the following arguments are required: run_dirs (see --help)"]


def test_a_published_copy_inside_the_runs_folder_counts_each_run_once(tmp_path):
    """A run folder's name is its job (kind, label, key): found twice (the published metadata beside the run folders
    it came from), it is read once, from the folder that holds its outputs; Table T1 lists each training once."""
    from reports.build import build_report, find_run_dirs
    from reports.publish import publish

    root = report_runs(tmp_path / "runs")
    publish(root / rf.PRESET, root / "published")
    found = find_run_dirs([root])
    published = [d.name for d in (root / "published" / "runs").iterdir() if d.name != "_sweeps"]  # and manifests
    assert sorted(d.name for d in found) == sorted(published)
    assert all("published" not in d.parts for d in found)  # the originals (with log.txt), not the copies
    md = Path(build_report([root], tmp_path / "out")["markdown"]).read_text(encoding="utf-8")
    t1 = md[md.index("Table T1"):]
    assert t1.count("| train-train-one-") == 1 and "Run folders read: 3;" in md


def test_the_readme_counts_the_catalogue():
    """The README's catalogue states how many bad inputs and faults are here (the report builder's count includes the
    call without arguments)."""
    import re

    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    found = re.search(r"holds the catalogue: (\d+) bad inputs \((\d+) on the command line, (\d+) crafted pickles "
                      r"given as every weights or reference key, (\d+) for the report builder\) and (\d+) faults",
                      readme)
    assert found, "the README's catalogue sentence changed"
    faults = [f for f in globals().values() if any(m.name == "faults" for m in getattr(f, "pytestmark", []))]
    counts = [len(CATALOGUE) + len(PICKLED) + len(REPORTS) + 1, len(CATALOGUE), len(PICKLED), len(REPORTS) + 1,
              len(faults)]
    assert [int(g) for g in found.groups()] == counts and counts[0] >= 100


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
    evaluated = [p.parent.name for p in runs.rglob("score-*/metrics.json")]
    assert evaluated and all(any(w in n for w in ("untrained", "real", "reconstructed")) for n in evaluated)  # none
    # on a diverged stage: only the anchors
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
    points = sorted({p.name.rsplit("-", 1)[0].split("-", 1)[1] for p in runs.glob("smoke/sample-msf-residual-*-t0-*")
                     if "untrained" not in p.name})[:2]  # two eval points of that stage: their sample and score jobs
    for folder in [p for point in points for p in runs.glob(f"smoke/*-{point}-*")]:
        shutil.rmtree(folder)
    first = run_cli(*SMOKE, "workers=1", f"runs_dir={runs}", cwd=tmp_path)
    assert first.returncode == 1 and first.stdout.count("differs from what was written (sha256)") == 1
    # the other jobs that need the stage are skipped with the cause, never run against its set-aside record
    assert "was damaged and set aside (the next run recomputes it)" in first.stdout, first.stdout[-3000:]
    assert "damaged-2" not in first.stdout + first.stderr
    second = run_cli(*SMOKE, f"runs_dir={runs}", cwd=tmp_path)
    assert second.returncode == 0, second.stdout[-2000:]
    assert "5 job(s) to run" in second.stdout  # the damaged stage, then the two points' sample and score jobs


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
def test_a_hand_edited_metric_stops_the_report_in_one_line_and_keeps_the_last_one(finished, tmp_path):
    """"fid": "twelve" in a finished score's metrics.json: every job is done, the report refuses that run folder in one
    line naming the file and key (exit 1), and the last complete report stays in place."""
    runs = copy_runs(finished, tmp_path / "runs")
    metrics = next(runs.glob("smoke/score-msf-*/metrics.json"))
    metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "fid": "twelve"}))
    report = runs / "smoke" / "reports" / "cfg_scale1" / "report.md"
    before = report.read_bytes()
    r = run_cli(*SMOKE, f"runs_dir={runs}", cwd=tmp_path)
    assert r.returncode == 1 and "0 job(s) to run" in r.stdout and "Traceback" not in r.stdout + r.stderr
    assert r.stderr.strip().splitlines() == [f"error: {metrics}: fid='twelve' is not a finite number (nor a list of "
                                             "them), so no table can show it: delete the run folder to redo its job"]
    assert report.read_bytes() == before and not list((runs / "smoke" / "reports").glob(".*"))


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


@pytest.mark.faults
def test_a_hand_edited_config_of_a_finished_training_is_redone_never_reported(finished, tmp_path):
    # The broken case of the attack: batch_size 16 -> 999 and lr -> 0.5 in a finished training's config.json, then
    # the sweep again. The folder no longer proves its spec: the dry-run calls it damaged, the run sets the edited
    # record aside, trains again from the true spec, and the report never states the edited settings.
    runs = copy_runs(finished, tmp_path / "runs")
    (train,) = [p for p in runs.glob("smoke/train-msf-residual-*-s0-t0-*") if "untrained" not in p.name]
    config = json.loads((train / "config.json").read_text())
    config["spec"]["train"] |= {"batch_size": 999, "lr": 0.5}
    (train / "config.json").write_text(json.dumps(config))
    dry = run_cli(*SMOKE, f"runs_dir={runs}", "--dry-run", cwd=tmp_path)
    assert f"redo  train        {train}" in dry.stdout, dry.stdout
    again = run_cli(*SMOKE, "workers=1", f"runs_dir={runs}", cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert json.loads((train / "config.json").read_text())["spec"]["train"]["batch_size"] == 16
    assert (train / "config.json.damaged-1").is_file() and (train / "metrics.json.damaged-1").is_file()
    assert (train / "log.txt").read_text().count("] start ") == 2  # trained again
    report = (runs / "smoke" / "reports" / "cfg_scale1" / "report.md").read_text()
    assert "999" not in report and "batch 16" in report


@pytest.mark.faults
def test_a_hand_edited_config_of_an_unfinished_job_is_rewritten_and_the_run_goes_on(tmp_path):
    # A job that was planned (config.json written) but never finished, its spec edited: the runner rewrites the true
    # spec (the edited one kept aside) instead of stopping the whole run.
    runs = tmp_path / "runs"
    cfg, sw = resolve_smoke(runs)
    from ablations.graph import plan
    from ablations.jobcall import prepare

    job = next(j for j in plan(cfg, sw) if j.kind == "train")
    prepare(job, "test")
    config = json.loads((job.run_dir / "config.json").read_text())
    config["spec"]["train"]["lr"] = 0.5
    (job.run_dir / "config.json").write_text(json.dumps(config))
    r = run_cli(*SMOKE, f"runs_dir={runs}", cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert json.loads((job.run_dir / "config.json").read_text())["spec"]["train"]["lr"] == job.spec.train.lr
    assert (job.run_dir / "config.json.damaged-1").is_file()


def resolve_smoke(runs: Path):
    from ablations.config import resolve

    return resolve([tuple(a.split("=", 1)) for a in SMOKE] + [("runs_dir", str(runs))])  # type: ignore[misc]


@pytest.mark.faults
def test_a_finished_job_that_recorded_no_outputs_is_damaged_and_redone(finished, tmp_path):
    # metrics.json of a training without the outputs its dependents load (ema.safetensors, model.json): not done, so
    # the training runs again instead of its dependents failing on every rerun.
    runs = copy_runs(finished, tmp_path / "runs")
    (train,) = [p for p in runs.glob("smoke/train-msf-residual-*-s1-t0-*") if "untrained" not in p.name]
    metrics = json.loads((train / "metrics.json").read_text())
    (train / "metrics.json").write_text(json.dumps(metrics | {"outputs": {}}))
    dry = run_cli(*SMOKE, f"runs_dir={runs}", "--dry-run", cwd=tmp_path)
    assert f"redo  train        {train}" in dry.stdout and "1 to run (1 with damaged outputs)" in dry.stdout
    again = run_cli(*SMOKE, f"runs_dir={runs}", cwd=tmp_path)
    assert again.returncode == 0 and "1 job(s) to run" in again.stdout, again.stdout[-2000:]
    assert "ema.safetensors" in json.loads((train / "metrics.json").read_text())["outputs"]


@pytest.mark.faults
def test_a_score_that_vanishes_mid_sweep_leaves_a_partial_report_and_exit_1(finished, tmp_path):
    # A finished score's metrics.json is lost while the sweep runs (after planning counted it done): the run is not
    # complete, so the report goes to NAME.partial (the last complete report is kept) and the exit code says so.
    runs = copy_runs(finished, tmp_path / "runs")
    scores = sorted(runs.glob("smoke/score-msf-residual-*-t0-*"))
    lost, redone = scores[0], scores[-1]
    sample = runs / "smoke" / json.loads((redone / "config.json").read_text())["deps"]["samples"]
    shutil.rmtree(sample)  # one job to run, so that the sweep takes a moment
    proc = subprocess.Popen([*RUN, *SMOKE, "workers=1", f"runs_dir={runs}"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    deadline = time.time() + 300
    while not (sample / "log.txt").is_file() and time.time() < deadline:
        time.sleep(0.05)
    (lost / "metrics.json").unlink()
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, out[-2000:] + err[-2000:]
    reports = runs / "smoke" / "reports"
    assert (reports / "cfg_scale1.partial" / "report.md").is_file()
    assert (reports / "cfg_scale1" / "report.md").read_text() == (
        finished / "smoke" / "reports" / "cfg_scale1" / "report.md").read_text()
