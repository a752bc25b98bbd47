"""Datasets: the embedded set's determinism, splits and class design; ADM centre crop; clear errors."""

import colorsys
import time

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from scipy import stats

from ablations.engine.data import (
    CIFAR10Dataset,
    EmbeddedDataset,
    ImageFolderDataset,
    build_dataset,
    center_crop_arr,
    hash_uniform,
    hsv_to_rgb,
    render_embedded,
)
from ablations.engine.images import to_float, to_uint8

# ----------------------------------------------------------------------------------------------------------------------
# Embedded dataset: determinism and splits.


def test_embedded_is_deterministic_and_index_local():
    a, b = EmbeddedDataset("train", seed=3), EmbeddedDataset("train", seed=3)
    xa, ya = a.make_batch(range(40))
    xb, yb = b.make_batch(list(reversed(range(40))))
    assert xa.dtype == torch.uint8 and xa.shape == (40, 3, 32, 32)
    assert torch.equal(xa, xb.flip(0)) and torch.equal(ya, yb.flip(0))  # same bytes, whatever the batch order
    x7, y7 = a[7]
    assert torch.equal(x7, xa[7]) and y7 == ya[7]  # a single item equals its row in any batch
    assert len({bytes(x.numpy()) for x in xa}) == 40  # different indices -> different images
    other, _ = EmbeddedDataset("train", seed=4).make_batch(range(40))
    assert not torch.equal(other, xa)


def test_embedded_splits_are_disjoint_and_balanced():
    train, ref = EmbeddedDataset("train", length=500), EmbeddedDataset("ref", length=500)
    assert train.offset + len(train) <= ref.offset  # disjoint global index ranges
    xt, yt = train.make_batch(range(500))
    xr, yr = ref.make_batch(range(500))
    assert not {bytes(x.numpy()) for x in xt} & {bytes(x.numpy()) for x in xr}
    assert torch.bincount(yt).tolist() == [50] * 10 and torch.bincount(yr).tolist() == [50] * 10
    assert (len(EmbeddedDataset("train")), len(EmbeddedDataset("ref"))) == (50_000, 10_000)


def test_embedded_64_is_the_same_picture_at_twice_the_resolution():
    x32, _ = EmbeddedDataset(size=32).make_batch(range(16))
    x64, _ = EmbeddedDataset(size=64).make_batch(range(16))
    assert x64.shape == (16, 3, 64, 64)
    # Tolerance 8/255 mean: the soft shape edge is sampled at different pixel centres; textures share their cells.
    assert (F.avg_pool2d(x64.float(), 2) - x32.float()).abs().mean() < 8


def test_hash_uniform_is_uniform_and_independent_of_batching():
    u = hash_uniform(0, np.arange(5000), 14)
    assert torch.equal(u[1234], hash_uniform(0, np.array([1234]), 14)[0])
    # Kolmogorov-Smirnov against U(0,1) over 70,000 draws; the hash is fixed, so the p-value is deterministic.
    assert stats.kstest(u.flatten().double().numpy(), "uniform").pvalue > 1e-3
    assert abs(np.corrcoef(u[:, 0], u[:, 1])[0, 1]) < 0.05  # 5000 pairs: |r| ~ N(0, 0.014) if independent


def test_hsv_to_rgb_matches_colorsys():
    g = torch.Generator().manual_seed(0)
    hsv = torch.rand(200, 3, generator=g, dtype=torch.float64)
    ours = hsv_to_rgb(hsv[:, 0], hsv[:, 1], hsv[:, 2])
    ref = torch.tensor([colorsys.hsv_to_rgb(*row.tolist()) for row in hsv], dtype=torch.float64)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)  # same formula in float64: rounding only


def test_uint8_round_trip():
    x, _ = EmbeddedDataset().make_batch(range(8))
    assert torch.equal(to_uint8(to_float(x)), x)
    assert to_float(x).min() >= -1 and to_float(x).max() <= 1


# ----------------------------------------------------------------------------------------------------------------------
# Embedded dataset: classes need both the coarse structure and the fine texture.


def test_texture_pairs_agree_at_low_resolution_and_differ_at_full_resolution():
    u = hash_uniform(0, np.arange(200), 13).repeat_interleave(2, 0)  # each nuisance draw used twice

    def pair_gap(a: int, b: int) -> tuple[float, float]:
        x = render_embedded(torch.tensor([a, b] * 200), u, 32)
        full = (x[0::2] - x[1::2]).abs().mean().item()
        coarse = (F.avg_pool2d(x[0::2], 4) - F.avg_pool2d(x[1::2], 4)).abs().mean().item()
        return full, coarse

    for a in range(0, 10, 2):  # classes 2k, 2k+1: same family, different texture
        full, coarse = pair_gap(a, a + 1)
        # Period-4 zero-mean textures cancel in every aligned 4x4 block; only the soft shape edge leaks (~0.008).
        assert coarse < 0.02 and full > 0.03
    full, coarse = pair_gap(0, 5)  # same texture, different family: differs at low resolution
    assert coarse > 0.05


def _fit_classifier(x_train, y_train, x_test, y_test, seed: int = 0, steps: int = 600) -> float:
    """Train a two-conv CNN (4x4 patches, then 3x3) with global pooling; return held-out accuracy."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = nn.Sequential(
            nn.Conv2d(3, 16, 4, stride=4),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(32, 10),
        )
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        i = torch.randint(len(x_train), (64,), generator=g)
        loss = F.cross_entropy(net(x_train[i]), y_train[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return (net(x_test).argmax(1) == y_test).float().mean().item()


@pytest.mark.e2e
def test_classes_are_separable_but_not_from_the_coarse_view_alone():
    x_train, y_train = EmbeddedDataset("train", length=2000).make_batch(range(2000))
    x_test, y_test = EmbeddedDataset("ref", length=500).make_batch(range(500))
    x_train, x_test = to_float(x_train), to_float(x_test)

    def coarse(x):  # the 4x-downsampled view, brought back to 32 px so the same network applies
        return F.interpolate(F.avg_pool2d(x, 4), scale_factor=4, mode="nearest")

    full_acc = _fit_classifier(x_train, y_train, x_test, y_test)
    coarse_acc = _fit_classifier(coarse(x_train), y_train, coarse(x_test), y_test)
    # Measured (3 seeds): full 0.99-1.0, coarse 0.48-0.52 (the coarse view finds the family, then guesses among 2).
    assert full_acc >= 0.8
    assert coarse_acc <= 0.65 and full_acc - coarse_acc >= 0.25


# ----------------------------------------------------------------------------------------------------------------------
# Image folders and ADM's centre crop.


def _rgb(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_center_crop_arr_box_halving_and_centre():
    arr = _rgb(16, 16, 0)
    big = Image.fromarray(arr.repeat(4, axis=0).repeat(4, axis=1))  # 64x64, each pixel a 4x4 block
    # Two BOX halvings average constant 2x2 blocks, so they give back the 16x16 image exactly; no resize is left.
    assert np.array_equal(np.array(center_crop_arr(big, 16)), arr)
    wide = _rgb(16, 24, 1)  # H=16, W=24: already the right short side, so only the centre crop acts
    assert np.array_equal(np.array(center_crop_arr(Image.fromarray(wide), 16)), wide[:, 4:20])
    assert center_crop_arr(Image.fromarray(_rgb(50, 37, 2)), 16).size == (16, 16)  # odd sizes: bicubic + crop


def test_image_folder_dataset(tmp_path):
    for c, name in enumerate(["cat", "dog"]):
        (tmp_path / name / "sub").mkdir(parents=True)
        for j in range(3):
            Image.fromarray(_rgb(40 + j, 48, 10 * c + j)).save(tmp_path / name / f"{j}.png")
        Image.fromarray(_rgb(20, 20, 99)).save(tmp_path / name / "sub" / "x.JPEG")
        (tmp_path / name / "notes.txt").write_text("not an image")
    ds = build_dataset("imagefolder", tmp_path, image_size=16)
    assert len(ds) == 8 and ds.classes == ["cat", "dog"]
    x, y = ds.make_batch(range(8))
    assert x.shape == (8, 3, 16, 16) and x.dtype == torch.uint8 and y.tolist() == [0] * 4 + [1] * 4
    expected = center_crop_arr(Image.open(tmp_path / "dog" / "1.png").convert("RGB"), 16)
    assert np.array_equal(x[5].permute(1, 2, 0).numpy(), np.array(expected))


def test_missing_and_empty_folders_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
        ImageFolderDataset(tmp_path / "nope", 32)
    with pytest.raises(ValueError, match="no class subdirectories"):
        ImageFolderDataset(tmp_path, 32)
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "readme.txt").write_text("")
    with pytest.raises(ValueError, match=f"{tmp_path}.*no images"):
        ImageFolderDataset(tmp_path, 32)


def test_cifar10_without_files_says_where_to_put_them(tmp_path):
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'cifar-10-batches-bin'}.*never downloads"):
        CIFAR10Dataset(tmp_path)
    assert time.perf_counter() - start < 5  # no download attempt (the network is closed; a try would hang)


def test_cifar10_binary_records_decode_to_their_pixels(tmp_path):
    """CIFAR-10's binary layout (label byte, then the R, G and B planes of 32x32), written here, read back exactly."""
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)  # HWC, as PIL sees them
    labels = np.arange(6, dtype=np.uint8) % 10
    records = np.concatenate([labels[:, None], images.transpose(0, 3, 1, 2).reshape(6, -1)], axis=1)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        records.tofile(folder / name)
    train, ref = CIFAR10Dataset(tmp_path, "train"), CIFAR10Dataset(tmp_path, "ref")
    assert len(train) == 30 and len(ref) == 6
    x, y = ref.make_batch(range(6))
    assert y.tolist() == labels.tolist() and np.array_equal(x.permute(0, 2, 3, 1).numpy(), images)


def test_digits_are_a_real_image_set_read_through_the_image_folder_path(tmp_path):
    """scikit-learn's digits become PNG class folders (train 1500, ref 297), read back by ImageFolderDataset."""
    train = build_dataset("digits", tmp_path / "digits", "train")
    ref = build_dataset("digits", tmp_path / "digits", "ref")
    assert isinstance(train, ImageFolderDataset) and (len(train), len(ref)) == (1500, 297)
    assert train.classes == [str(d) for d in range(10)]
    x, y = ref.make_batch(range(len(ref)))
    assert x.shape == (297, 3, 32, 32) and torch.equal(x[:, 0], x[:, 1])  # grey, stored as RGB
    assert set(y.tolist()) == set(range(10))
    assert build_dataset("digits", tmp_path / "digits", "ref").key == ref.key  # made once, then reused


def test_build_dataset_rejects_bad_arguments():
    assert isinstance(build_dataset("embedded", split="ref", length=10), EmbeddedDataset)
    with pytest.raises(ValueError, match="unknown dataset"):
        build_dataset("imagenet21k", "/data")
    with pytest.raises(ValueError, match="needs a root"):
        build_dataset("cifar10")
    with pytest.raises(ValueError, match="split"):
        EmbeddedDataset("val")
    with pytest.raises(ValueError, match="size"):
        EmbeddedDataset(size=48)
    with pytest.raises(IndexError):
        EmbeddedDataset(length=10).make_batch([10])
