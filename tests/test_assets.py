"""The committed frozen networks (ablations/engine/committed.py) and the builder of a pair for one's own images
(ablations/engine/assets.py --images)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from ablations.engine import committed
from ablations.engine.assets import build_for_images, measure_floors
from ablations.engine.autoencoders import load_pretrained_vae
from ablations.engine.classifier import load_classifier
from ablations.engine.data import ImageFolderDataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(committed.ASSETS))
def test_every_committed_network_matches_its_recorded_hash(name):
    assert committed.asset(name).exists()


def test_a_changed_network_is_refused(tmp_path, monkeypatch):
    name, a = next((n, a) for n, a in committed.ASSETS.items() if not a.folder)
    (tmp_path / a.path).parent.mkdir(parents=True, exist_ok=True)
    data = bytearray((committed.WEIGHTS / a.path).read_bytes())
    data[-1] ^= 1  # one flipped bit in the last tensor
    (tmp_path / a.path).write_bytes(bytes(data))
    monkeypatch.setattr(committed, "WEIGHTS", tmp_path)
    with pytest.raises(committed.AssetError, match="was changed: restore it"):
        committed.asset(name)


def image_set(root: Path, classes: int = 2, train: int = 12, ref: int = 6, size: int = 16) -> Path:
    """A small image set in the builder's layout: train/<class>/ and ref/<class>/, one colour and pattern per
    class."""
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", train), ("ref", ref)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                base = torch.full((size, size, 3), 60 + 120 * c, dtype=torch.int16)
                noise = torch.randint(-30, 30, (size, size, 3), generator=g, dtype=torch.int16)
                pixels = (base + noise).clamp(0, 255).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def test_the_builder_writes_a_pair_for_ones_own_images_with_its_floors(tmp_path, monkeypatch):
    # the builder's two torch threads (its command's choice) run 5-10x slower than one on a busy 2-core machine
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    images = image_set(tmp_path / "images")
    out = tmp_path / "out"
    result = build_for_images(images, out, size=16, log=lambda _: None, ae_steps=3, cnn_steps=3)
    assert result["classes"] == ["class0", "class1"] and (result["train_images"], result["ref_images"]) == (24, 12)
    assert 0.0 <= result["accuracy_ref"] <= 1.0
    assert json.loads((out / "floors.json").read_text()) == json.loads(json.dumps(result))
    # the written networks load as a preset loads them, and give the printed floors again
    ae = load_pretrained_vae(str(out / "autoencoder"))
    classifier = load_classifier(out / "features.safetensors")
    train = ImageFolderDataset(images / "train", 16)
    again = measure_floors(train, ImageFolderDataset(images / "ref", 16), 2, ae, classifier, n=result["n"])
    for key in ("real_floor", "autoencoder_floor", "noise_ceiling", "reconstruction_psnr_db"):
        assert again[key] == pytest.approx(result[key], rel=1e-5), key  # float32 round-off of a reload only
    assert result["real_floor"] < result["noise_ceiling"]


def run_builder(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ablations.engine.assets", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


@pytest.mark.e2e
@pytest.mark.parametrize("layout, message", [
    ("missing", "is not a folder: --images needs DIR/train/<class>/ and DIR/ref/<class>/"),
    ("no_ref", "is not a folder: --images needs"),
    ("other_classes", "must hold the same class folders"),
])
def test_the_builder_refuses_a_bad_image_set_in_one_line_and_writes_nothing(tmp_path, layout, message):
    images = image_set(tmp_path / "images")
    if layout == "missing":
        shutil.rmtree(images)
    elif layout == "no_ref":
        shutil.rmtree(images / "ref")
    else:
        (images / "ref" / "class0").rename(images / "ref" / "classX")
    r = run_builder("--images", str(images), str(tmp_path / "out"))
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.e2e
def test_the_builder_never_overwrites(tmp_path):
    (tmp_path / "out").mkdir()
    r = run_builder("--images", str(image_set(tmp_path / "images")), str(tmp_path / "out"))
    assert r.returncode == 2 and "exists; give a new path" in r.stderr
