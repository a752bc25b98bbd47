"""The embedded world's feature network: a small CNN classifier trained by the harness.

The paper measures FID/IS/precision/recall with ADM's InceptionV3 on ImageNet (Sec. 4.2). The embedded dataset is not
ImageNet, so Inception features say little about it; instead the harness trains this classifier on the embedded train
split and uses it the way Inception is used: ``features`` = the penultimate layer (global average pool of the last
convolution stage, ``4 * width`` = 128 dimensions by default, the analogue of Inception's 2048-d pool3), ``logits`` =
the last (linear) layer. FID over a 128-d feature space is a well-defined Fréchet distance; its values are not on the
Inception scale and are never reported as Inception numbers.

Inputs are uint8 images ``[B, 3, H, W]`` (any H, W; 32 and 64 are the embedded sizes), normalised inside. GroupNorm
(no BatchNorm, no dropout) makes features per-sample: deterministic and independent of the batch they are computed in.
Saved as one safetensors file whose header carries the JSON config (and any metadata such as held-out accuracy).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save, save_file
from torch import Tensor, nn

from ablations.engine.io import atomic_write

BatchFn = Callable[[torch.Generator], tuple[Tensor, Tensor]]


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    """Conv3x3 -> GroupNorm -> SiLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.GroupNorm(8, c_out), nn.SiLU())


class EmbeddedClassifier(nn.Module):
    """CNN on uint8 images returning (features [B, 4*width], logits [B, num_classes])."""

    def __init__(self, num_classes: int, width: int = 32):
        super().__init__()
        if num_classes < 2 or width < 8 or width % 8:
            raise ValueError(f"need num_classes >= 2 and width a multiple of 8, got {num_classes=} {width=}")
        self.num_classes, self.width = num_classes, width
        w = width
        self.trunk = nn.Sequential(
            _block(3, w, 1), _block(w, w, 1),  # [B, w, H, W]
            _block(w, 2 * w, 2), _block(2 * w, 2 * w, 1),  # [B, 2w, H/2, W/2]
            _block(2 * w, 4 * w, 2), _block(4 * w, 4 * w, 1),  # [B, 4w, H/4, W/4]
        )  # fmt: skip
        self.head = nn.Linear(4 * w, num_classes)

    @property
    def feature_dim(self) -> int:
        """Width of the penultimate features."""
        return 4 * self.width

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Uint8 [B, 3, H, W] -> (penultimate features [B, 4w], logits [B, num_classes])."""
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected uint8 images [B, 3, H, W], got {x.dtype} {tuple(x.shape)}")
        h = x.float() / 127.5 - 1.0  # [B, 3, H, W] in [-1, 1]
        features = self.trunk(h).mean(dim=(2, 3))  # [B, 4w] global average pool
        return features, self.head(features)  # [B, 4w], [B, num_classes]


def train_classifier(
    batch_fn: BatchFn,
    num_classes: int,
    steps: int,
    generator: torch.Generator,
    log: Callable[[str], None],
    width: int = 32,
    lr: float = 2e-3,
    device: torch.device | str = "cpu",
) -> EmbeddedClassifier:
    """Train the embedded classifier with AdamW and cross-entropy, cosine learning-rate decay.

    Args:
        batch_fn: draws one training batch ``(uint8 [B, 3, H, W], labels [B])`` using the generator it is given.
        num_classes: number of classes of the embedded dataset.
        steps: optimizer steps.
        generator: CPU generator for the initial weights and the batches (no global RNG is touched).
        log: receives a progress line about ten times per run.
        width: base channel count; features are ``4 * width`` wide.
        lr: peak AdamW learning rate.
        device: where to train.
    Returns:
        The trained classifier in eval mode, on ``device``.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        model = EmbeddedClassifier(num_classes, width).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    model.train()
    for step in range(steps):
        x, y = batch_fn(generator)
        x, y = x.to(device), y.to(device)
        logits = model(x)[1]  # [B, num_classes]
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % max(1, steps // 10) == 0 or step == steps - 1:
            acc = (logits.argmax(1) == y).float().mean().item()
            log(f"classifier step {step + 1}/{steps} loss {loss.item():.4f} batch_acc {acc:.3f}")
    return model.eval().requires_grad_(False)


@torch.no_grad()
def accuracy(model: EmbeddedClassifier, images: Tensor, labels: Tensor, batch_size: int = 256) -> float:
    """Top-1 accuracy of the classifier on held-out uint8 images [N, 3, H, W] with labels [N]."""
    device = next(model.parameters()).device
    correct = sum(
        int((model(x.to(device))[1].argmax(1).cpu() == y).sum())
        for x, y in zip(images.split(batch_size), labels.split(batch_size), strict=True)
    )
    return correct / len(labels)


def classifier_digest(model: EmbeddedClassifier) -> str:
    """12 hex digits of sha256 over the weights; names the feature extractor in every metric label."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return hashlib.sha256(save(state)).hexdigest()[:12]


def save_classifier(model: EmbeddedClassifier, path: str | Path, metadata: dict | None = None) -> Path:
    """Write weights + JSON config (+ metadata, e.g. held-out accuracy) to one safetensors file, atomically."""
    path = Path(path)
    header = {"config": json.dumps({"num_classes": model.num_classes, "width": model.width})}
    header["metadata"] = json.dumps(metadata or {})
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=header))  # readers never see a partial file
    return path


def _header(path: Path) -> dict[str, str]:
    """The string header of a safetensors file written by :func:`save_classifier`."""
    if not path.is_file():
        raise FileNotFoundError(f"embedded classifier weights not found: {path}")
    with safe_open(str(path), "pt") as f:
        header = f.metadata() or {}
    if "config" not in header:
        raise ValueError(f"{path} has no classifier config in its header; not written by save_classifier?")
    return header


def load_classifier(path: str | Path) -> EmbeddedClassifier:
    """Load a classifier written by :func:`save_classifier`, in eval mode on CPU."""
    model = EmbeddedClassifier(**json.loads(_header(Path(path))["config"]))
    model.load_state_dict(load_file(path))
    return model.eval().requires_grad_(False)


def classifier_metadata(path: str | Path) -> dict:
    """The metadata dict stored by :func:`save_classifier` (e.g. held-out accuracy, training split)."""
    return json.loads(_header(Path(path)).get("metadata", "{}"))
