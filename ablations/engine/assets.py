"""Frozen networks shipped with the harness, so that every machine measures with the same ruler.

Numbers computed on two machines are comparable only if both use the same feature network and autoencoder. These
are trained once, committed under ``ablations/engine/weights/`` as safetensors with their SHA-256 below, and loaded
(never retrained) by every run; a file whose hash differs is refused. Each is rebuilt by the documented command

    python -m ablations.engine.assets NAME OUT

which trains it from scratch on the CPU (deterministic on one machine; another CPU's kernels give other bits, which
is why the weights are committed rather than retrained).

============  ==================================================================================================
photos-cnn    the default world's feature network: the CNN on crops of the 10 photos at 32 px (dataset seed 7,
              other crops than the experiments' seed 0)
photos-ae     the tiny preset's small AutoencoderKL (f=2, 8 channels: 16x16x8 latents) on the photos' crops
embedded-cnn  the embedded world's feature network (its "Inception"): ablations/engine/classifier.py's CNN on all
              20 classes of the embedded set at 32 px (dataset seed 7, disjoint from the experiments' seed 0)
digits-cnn    the same CNN on the handwritten digits' train split (the real-image stand-in's feature network)
embedded-ae   the smoke preset's small AutoencoderKL (f=4, 4 channels) on the embedded set at 32 px (tiny's
              before the photos), in diffusers' folder format (config.json and
              diffusion_pytorch_model.safetensors), loaded like the SD VAE; so are the other two
digits-ae     the same autoencoder on the digits' train split (the embedded one reconstructs digits at 13 dB)
============  ==================================================================================================
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ablations.engine.committed import ASSETS, sha256_of

if TYPE_CHECKING:  # the hash check runs when a command is parsed: torch and the models load only when used
    from ablations.engine.autoencoders import SmallAEConfig
    from ablations.engine.classifier import EmbeddedClassifier
    from ablations.engine.data import ImageDataset
    from msf.autoencoder import KLAutoencoder

# ----------------------------------------------------------------------------------------------------------------------
# Building them (the documented commands).


def build_embedded_cnn(out: Path, log: Callable[[str], None] = print, steps: int = 2000) -> None:
    """Train the embedded feature network on 20 classes at 32 px, dataset seed 7; report held-out accuracy."""
    import torch

    from ablations.engine.classifier import accuracy, save_classifier, train_classifier
    from ablations.engine.data import MAX_CLASSES, EmbeddedDataset

    torch.set_num_threads(2)
    train = EmbeddedDataset("train", 32, MAX_CLASSES, seed=7, length=50_000)
    ref = EmbeddedDataset("ref", 32, MAX_CLASSES, seed=7, length=4000)

    def batch(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return train.make_batch(torch.randint(len(train), (64,), generator=g).tolist())

    model = train_classifier(batch, MAX_CLASSES, steps, torch.Generator().manual_seed(7), log)
    acc = accuracy(model, *ref.make_batch(range(len(ref))))
    log(f"embedded-cnn: held-out accuracy {acc:.4f} over {len(ref)} images")
    save_classifier(model, out, {"accuracy_ref": f"{acc:.4f}", "recipe": f"embedded 20 classes seed 7, {steps} steps"})


def build_digits_cnn(out: Path, log: Callable[[str], None] = print, steps: int = 1500) -> None:
    """Train the digits feature network on the digits' train split; report accuracy on the ref split."""
    import torch

    from ablations.engine.classifier import accuracy, save_classifier, train_classifier
    from ablations.engine.data import build_dataset

    torch.set_num_threads(2)
    train, ref = build_dataset("digits", split="train"), build_dataset("digits", split="ref")
    images, labels = train.make_batch(range(len(train)))

    def batch(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        i = torch.randint(len(train), (64,), generator=g)
        return images[i], labels[i]

    model = train_classifier(batch, 10, steps, torch.Generator().manual_seed(7), log)
    acc = accuracy(model, *ref.make_batch(range(len(ref))))
    log(f"digits-cnn: held-out accuracy {acc:.4f} over {len(ref)} images")
    save_classifier(model, out, {"accuracy_ref": f"{acc:.4f}", "recipe": f"digits train split, {steps} steps"})


def build_digits_ae(out: Path, log: Callable[[str], None] = print) -> None:
    """Train the small AutoencoderKL (the same recipe) on the digits' train split (no flips: digits are not
    mirror-symmetric)."""
    import torch

    from ablations.engine.autoencoders import SmallAEConfig, save_autoencoder, train_small_autoencoder
    from ablations.engine.data import build_dataset

    torch.set_num_threads(2)
    ae = train_small_autoencoder(build_dataset("digits", split="train"), SmallAEConfig(),
                                 torch.Generator().manual_seed(0), log)
    ae.name = "digits-ae"
    save_autoencoder(ae, out)


def build_embedded_ae(out: Path, log: Callable[[str], None] = print) -> None:
    """Train the small AutoencoderKL (the tiny recipe: 1500 steps, batch 16) on 20 embedded classes, dataset seed 0."""
    import torch

    from ablations.engine.autoencoders import SmallAEConfig, save_autoencoder, train_small_autoencoder
    from ablations.engine.data import MAX_CLASSES, EmbeddedDataset

    torch.set_num_threads(2)
    train = EmbeddedDataset("train", 32, MAX_CLASSES, seed=0, length=20_000)
    ae = train_small_autoencoder(train, SmallAEConfig(), torch.Generator().manual_seed(0), log)
    ae.name = "embedded-ae"
    save_autoencoder(ae, out)


def photo_ae_recipe() -> SmallAEConfig:
    """The photos' autoencoder: f=2 (block_out_channels 32, 64), 8 latent channels, 4500 steps.

    Chosen by its floor (results/README.md): at f=4 a pixel loss blurs the texture the feature network keys on."""
    from ablations.engine.autoencoders import SmallAEConfig

    return SmallAEConfig(block_out_channels=(32, 64), latent_channels=8, steps=4500)


def build_photos_cnn(out: Path, log: Callable[[str], None] = print, steps: int = 2000) -> None:
    """Train the photos' feature network on crops of all 10 photos at 32 px, dataset seed 7 (other crops than the
    experiments' seed 0); report held-out accuracy."""
    import torch

    from ablations.engine.classifier import accuracy, save_classifier, train_classifier
    from ablations.engine.data import PHOTOS, PhotosDataset

    torch.set_num_threads(1)
    train = PhotosDataset("train", 32, len(PHOTOS), seed=7, length=50_000)
    ref = PhotosDataset("ref", 32, len(PHOTOS), seed=7, length=4000)

    def batch(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return train.make_batch(torch.randint(len(train), (64,), generator=g).tolist())

    model = train_classifier(batch, len(PHOTOS), steps, torch.Generator().manual_seed(7), log)
    acc = accuracy(model, *ref.make_batch(range(len(ref))))
    log(f"photos-cnn: held-out accuracy {acc:.4f} over {len(ref)} images")
    save_classifier(model, out, {"accuracy_ref": f"{acc:.4f}", "recipe": f"photos 10 classes seed 7, {steps} steps"})


def build_photos_ae(out: Path, log: Callable[[str], None] = print) -> None:
    """Train the photos' autoencoder (:func:`photo_ae_recipe`) on crops of the 10 photos, dataset seed 0."""
    import torch

    from ablations.engine.autoencoders import save_autoencoder, train_small_autoencoder
    from ablations.engine.data import PHOTOS, PhotosDataset

    torch.set_num_threads(1)
    train = PhotosDataset("train", 32, len(PHOTOS), seed=0, length=20_000)
    ae = train_small_autoencoder(train, photo_ae_recipe(), torch.Generator().manual_seed(0), log)
    ae.name = "photos-ae"
    save_autoencoder(ae, out)


BUILDERS: dict[str, Callable[[Path], None]] = {
    "photos-cnn": build_photos_cnn,
    "photos-ae": build_photos_ae,
    "embedded-cnn": build_embedded_cnn,
    "digits-cnn": build_digits_cnn,
    "embedded-ae": build_embedded_ae,
    "digits-ae": build_digits_ae,
}


# ----------------------------------------------------------------------------------------------------------------------
# Your own images: the same pair of networks for any class-per-folder image set, with its floors measured.


def measure_floors(train: ImageDataset, ref: ImageDataset, num_classes: int, ae: KLAutoencoder,
                   classifier: EmbeddedClassifier, n: int = 500) -> dict[str, float]:
    """FID of the anchors every table has, scored exactly as samples are (the classifier's features, the reference
    split's statistics, n held-out images picked by per-sample seeds): real images (the floor), the same images
    through the autoencoder (its floor), and decoded unit-Gaussian latents (what a flow model that learned nothing
    produces: the ceiling); and the autoencoder's reconstruction PSNR on those images."""
    import torch

    from ablations.engine.autoencoders import psnr
    from ablations.engine.data import held_out
    from ablations.engine.evaluate import sample_seeds
    from ablations.engine.images import to_float, to_uint8
    from ablations.engine.metrics import (
        ReferenceKey,
        ReferenceStats,
        class_labels_for,
        embedded_extractor,
        extract_features,
        metrics_from_features,
    )

    cpu = torch.device("cpu")
    extractor = embedded_extractor(classifier, cpu)
    reference = ReferenceStats.from_features(
        ReferenceKey(ref.key, "ref", extractor.label, len(ref)),
        extract_features(ref.make_batch(range(len(ref)))[0], extractor, 250, cpu).features)
    labels = class_labels_for(n, num_classes)
    real = held_out(train, num_classes)(labels, sample_seeds(0, n))  # uint8 [n, 3, H, W]
    with torch.no_grad():
        coded = torch.cat([to_uint8(ae.decode(ae.encode(to_float(x))).clamp(-1, 1)) for x in real.split(100)])
        h = real.shape[-1] // ae.factor
        noise = torch.randn(n, ae.channels, h, h, generator=torch.Generator().manual_seed(0))
        ceiling = torch.cat([to_uint8(ae.decode(z).clamp(-1, 1)) for z in noise.split(100)])

    def fid(images: torch.Tensor) -> float:
        return float(metrics_from_features(extract_features(images, extractor, 250, cpu), reference, extractor)["fid"])

    mse = ((to_float(coded) - to_float(real)) ** 2).mean().item()
    return {"real_floor": fid(real), "autoencoder_floor": fid(coded), "noise_ceiling": fid(ceiling),
            "reconstruction_psnr_db": psnr(mse), "n": n, "n_ref": len(ref)}


def build_for_images(images: Path, out: Path, size: int = 32, log: Callable[[str], None] = print,
                     ae_steps: int | None = None, cnn_steps: int | None = None) -> dict[str, Any]:
    """An autoencoder and a feature network for any image set laid out as ``images/train/<class>/`` and
    ``images/ref/<class>/`` (the same class folders; ref held out), trained by the committed recipes on this CPU
    (``ae_steps`` and ``cnn_steps`` shorten them, for tests): writes ``out/autoencoder/`` (a diffusers AutoencoderKL
    folder), ``out/features.safetensors`` and ``out/floors.json``, and returns what it measured (held-out accuracy,
    reconstruction PSNR, floors)."""
    import json
    import time

    import torch

    from ablations.engine.autoencoders import save_autoencoder, train_small_autoencoder
    from ablations.engine.classifier import accuracy, save_classifier, train_classifier
    from ablations.engine.data import ImageFolderDataset

    train, ref = ImageFolderDataset(images / "train", size), ImageFolderDataset(images / "ref", size)
    if train.classes != ref.classes:
        raise ValueError(f"{images / 'train'} and {images / 'ref'} must hold the same class folders "
                         f"({len(train.classes)} vs {len(ref.classes)})")
    num_classes = len(train.classes)
    torch.set_num_threads(2)
    t0 = time.time()
    recipe = photo_ae_recipe() if ae_steps is None else replace(photo_ae_recipe(), steps=ae_steps)
    ae = train_small_autoencoder(train, recipe, torch.Generator().manual_seed(0), log)
    ae.name = f"{images.name}-ae"
    ae_seconds = time.time() - t0
    pixels, labels = train.make_batch(range(len(train)))

    def batch(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        i = torch.randint(len(train), (64,), generator=g)
        return pixels[i], labels[i]

    t0 = time.time()
    classifier = train_classifier(batch, num_classes, cnn_steps or CNN_STEPS, torch.Generator().manual_seed(7), log)
    cnn_seconds = time.time() - t0
    acc = accuracy(classifier, *ref.make_batch(range(len(ref))))
    floors = measure_floors(train, ref, num_classes, ae, classifier, n=min(500, len(train)))
    result = {"images": str(images), "classes": train.classes, "train_images": len(train), "ref_images": len(ref),
              "size": size, "accuracy_ref": acc, "autoencoder_seconds": ae_seconds, "classifier_seconds": cnn_seconds,
              **floors}
    out.mkdir(parents=True)
    save_autoencoder(ae, out / "autoencoder")
    save_classifier(classifier, out / "features.safetensors",
                    {"accuracy_ref": f"{acc:.4f}", "images": str(images), "image_size": str(size)})
    (out / "floors.json").write_text(json.dumps(result, indent=1))
    return result


CNN_STEPS = 1500  # the digits recipe: the feature network of a small real image set


def preset_for(result: dict[str, Any], out: Path) -> str:
    """The preset lines that make a sweep use an image set and the networks built for it."""
    images = Path(result["images"]).resolve()
    return "\n".join([
        f"data: {{name: imagefolder, root: {images / 'train'}, ref_root: {images / 'ref'}, "
        f"image_size: {result['size']}, num_classes: {len(result['classes'])}}}",
        f"autoencoder: {{kind: pretrained, path: {out.resolve() / 'autoencoder'}}}",
        f"eval: {{world: embedded, features: {out.resolve() / 'features.safetensors'}}}",
    ])


def main(argv: list[str] | None = None) -> int:
    """python -m ablations.engine.assets NAME OUT: rebuild one frozen network into OUT (a file, or a folder);
    python -m ablations.engine.assets --images DIR OUT: build the pair for your own images (DIR/train, DIR/ref)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", nargs="?", choices=sorted(BUILDERS), help="a committed network to rebuild")
    parser.add_argument("out", type=Path, help="where to write; must not exist")
    parser.add_argument("--images", type=Path, help="an image set with train/<class>/ and ref/<class>/ folders: "
                        "build an autoencoder and a feature network for it, and measure its floors")
    parser.add_argument("--size", type=int, default=32, help="--images: image side in pixels (default 32)")
    args = parser.parse_args(argv)

    def refuse(message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        return 2

    if args.out.exists():
        return refuse(f"{args.out} exists; give a new path")
    if (args.name is None) == (args.images is None):
        return refuse("give either NAME (a committed network) or --images DIR")
    if args.images is not None:
        for split in ("train", "ref"):
            if not (args.images / split).is_dir():
                return refuse(f"{args.images / split} is not a folder: --images needs DIR/train/<class>/ and "
                              "DIR/ref/<class>/")
        if not 8 <= args.size <= 256:
            return refuse(f"--size={args.size}: expected 8 to 256 pixels")
    try:
        if args.images is not None:
            r = build_for_images(args.images, args.out, args.size)
            print(f"{len(r['classes'])} classes, {r['train_images']} train / {r['ref_images']} held-out images at "
                  f"{r['size']} px")
            print(f"feature network: held-out accuracy {r['accuracy_ref']:.4f} ({r['classifier_seconds']:.0f} s)")
            print(f"autoencoder: reconstruction PSNR {r['reconstruction_psnr_db']:.2f} dB "
                  f"({r['autoencoder_seconds']:.0f} s)")
            print(f"FID over {r['n']} held-out images against {r['n_ref']} reference images: real-image floor "
                  f"{r['real_floor']:.3f}, autoencoder floor {r['autoencoder_floor']:.3f}, noise ceiling "
                  f"{r['noise_ceiling']:.3f}")
            print(f"a preset using them (ablations/presets/NAME.yaml, beside the tiny preset's other keys):\n"
                  f"{preset_for(r, args.out)}")
            return 0
        BUILDERS[args.name](args.out)
    except (ValueError, FileNotFoundError) as e:
        return refuse(str(e).splitlines()[0])
    except BaseException:
        if args.out.is_dir():
            shutil.rmtree(args.out)
        args.out.unlink(missing_ok=True)
        raise
    target = args.out / Path(ASSETS[args.name].path).name if ASSETS[args.name].folder else args.out
    print(f"{args.name}: sha256 {sha256_of(target)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
