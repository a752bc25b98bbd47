"""Images as the harness stores and scores them: uint8 [B, 3, H, W] in [0, 255], float [B, 3, H, W] in [-1, 1].

One quantization for everything that is scored: generated samples, decoded reconstructions and reference images
all become uint8 through :func:`to_uint8`, DiT's ``sample_ddp.py`` convention.
"""

from __future__ import annotations

import torch
from torch import Tensor


def to_uint8(x: Tensor) -> Tensor:
    """DiT sample_ddp.py's conversion: clamp(127.5 x + 128, 0, 255) truncated to uint8; x in [-1, 1], any shape.

    The +128 makes the truncation a rounding of 127.5 (x + 1) with ties rounded up. ADM's image_sample.py truncates
    (x + 1) * 127.5 instead, half a level lower. MSF builds on DiT's code, so DiT's formula is the one used here.
    """
    return torch.clamp(127.5 * x + 128.0, 0, 255).to(torch.uint8)


def to_float(images: Tensor) -> Tensor:
    """uint8 [B, 3, H, W] in [0, 255] -> float32 [B, 3, H, W] in [-1, 1] (the shared image convention)."""
    return images.to(torch.float32) / 127.5 - 1.0
