"""Multi-scale latent factorization (MSF Sec. 3.2-3.4, Algorithms 1-3, Fig. 2).

Notation follows the paper. Scales are indexed i = 0..N with spatial sizes h_0 < ... < h_N (square latents; h_N is
the full latent size). ``f_hat`` is the full latent E(I_h); ``f_resi[i]`` the residual target at scale i (Algorithm 1);
``priors[i]`` the input prior of scale i (Algorithm 2; ``None`` for scale 0, which is conditioned on the class alone).

Four factorizations share one interface (:class:`Factorization`):

=====================  =============================================  ==============================================
name                   targets                                        composition
=====================  =============================================  ==============================================
residual               Algorithm 1, base f_0 = E(Down_pixel(I))       sum_i Up(f_resi[i], h_N)  (the paper's MSF)
residual_latent_base   Algorithm 1, base f_0 = Down(E(I), h_0)        sum_i Up(f_resi[i], h_N)
latent_resize          f_i = Down(E(I), h_i)          (Eq. 2, Fig 2a)  f_N (a cascade: scale i+1 sees Up(f_i))
image_resize           f_i = E(Down_pixel(I, H_i))    (Eq. 3-4, 2b)    f_N (a cascade: scale i+1 sees Up(f_i))
=====================  =============================================  ==============================================

Shapes: latents are ``[B, C, h, h]``; images ``[B, 3, H, H]`` in [-1, 1] with H = factor * h.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

Mode = Literal["bilinear", "bicubic", "area", "nearest"]
MODES: tuple[Mode, ...] = ("bilinear", "bicubic", "area", "nearest")
FACTORIZATIONS = ("residual", "residual_latent_base", "latent_resize", "image_resize")
Encoder = Callable[[Tensor], Tensor]


class ScaleSpecError(ValueError):
    """An invalid list of scale sizes."""


# ----------------------------------------------------------------------------------------------------------------------
# Up / Down operators (Algorithms 1-3 write them Up(., h, w) and Down(., h, w)).


def resize(x: Tensor, size: int, mode: Mode) -> Tensor:
    """Resize ``[B, C, h, w]`` to ``[B, C, size, size]``; identity when the size already matches (Algorithms 1-3)."""
    if mode not in MODES:
        raise ValueError(f"unknown resize mode {mode!r}; expected one of {', '.join(MODES)}")
    if x.shape[-2:] == (size, size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=(size, size), mode="nearest-exact")
    if mode == "area":
        return F.interpolate(x, size=(size, size), mode="area")
    # antialias matters when shrinking (it low-passes before sampling); it is a no-op when enlarging.
    return F.interpolate(x, size=(size, size), mode=mode, align_corners=False, antialias=True)


def Up(x: Tensor, size: int, mode: Mode = "bilinear") -> Tensor:
    """Up(f, h_N, w_N) of Algorithms 1-3: enlarge a latent to ``size``."""
    if x.shape[-1] > size:
        raise ValueError(f"Up: input size {x.shape[-1]} is larger than the target {size}")
    return resize(x, size, mode)


def Down(x: Tensor, size: int, mode: Mode = "bilinear") -> Tensor:
    """Down(f, h_i, w_i) of Algorithms 1-3: shrink a latent to ``size``."""
    if x.shape[-1] < size:
        raise ValueError(f"Down: input size {x.shape[-1]} is smaller than the target {size}")
    return resize(x, size, mode)


# ----------------------------------------------------------------------------------------------------------------------
# Scale specification (Sec. 4.1: two scales, 192 and 256 pixels, i.e. 24 and 32 latent positions with f=8).


@dataclass(frozen=True)
class Scales:
    """Increasing latent sizes h_0 < ... < h_N; h_N is the full latent size (Sec. 3.1)."""

    sizes: tuple[int, ...]

    @property
    def N(self) -> int:
        """Index of the last scale (the paper's N: scales are 0..N)."""
        return len(self.sizes) - 1

    @property
    def full(self) -> int:
        return self.sizes[-1]

    def __len__(self) -> int:
        return len(self.sizes)


def make_scales(sizes: Sequence[int], full: int, multiple: int = 1) -> Scales:
    """Validate a scale list against the full latent size and a divisibility ``multiple`` (e.g. the patch size).

    Raises:
        ScaleSpecError: empty, non-integer, non-positive, not strictly increasing, last != full, or not divisible.
    """
    sizes = tuple(sizes)
    if not sizes:
        raise ScaleSpecError("scale list is empty; give at least the full latent size")
    if any(isinstance(s, bool) or not isinstance(s, int) for s in sizes):
        raise ScaleSpecError(f"scale sizes must be integers, got {list(sizes)}")
    if any(s <= 0 for s in sizes):
        raise ScaleSpecError(f"scale sizes must be positive, got {list(sizes)}")
    if any(b <= a for a, b in zip(sizes, sizes[1:], strict=False)):
        raise ScaleSpecError(f"scale sizes must be strictly increasing, got {list(sizes)}")
    if sizes[-1] != full:
        raise ScaleSpecError(f"last scale size must equal the full latent size {full}, got {list(sizes)}")
    bad = [s for s in sizes if s % multiple]
    if bad:
        raise ScaleSpecError(f"scale sizes {bad} are not divisible by {multiple} (the patch size)")
    return Scales(sizes)


# ----------------------------------------------------------------------------------------------------------------------
# Algorithms 1-3 in the paper's notation, for any number of scales.


def residual_latents(f_hat: Tensor, f_0: Tensor, scales: Scales, mode: Mode = "bilinear") -> list[Tensor]:
    """Algorithm 1 (lines 3-9): multi-scale residual latents R = {f_resi^{h_i}} from f_hat and the base f_0."""
    R = [f_0]  # line 3
    for i in range(scales.N):  # line 4
        f_hat = f_hat - Up(R[i], scales.full, mode)  # line 5
        R.append(Down(f_hat, scales.sizes[i + 1], mode))  # lines 6-7
    return R


def input_priors(R: Sequence[Tensor], scales: Scales, mode: Mode = "bilinear") -> list[Tensor | None]:
    """Algorithm 2: teacher-forced input priors; entry i is f_hat_{h_i} (None for scale 0, which has no prior)."""
    f_hat = torch.zeros_like(Up(R[0], scales.full, mode))  # line 2
    P: list[Tensor | None] = [None]
    for i in range(scales.N):  # line 3
        f_hat = f_hat + Up(R[i], scales.full, mode)  # lines 4-5
        P.append(Down(f_hat, scales.sizes[i + 1], mode))  # lines 6-7
    return P


def accumulate(
    f_hat: Tensor | None, f_resi_i: Tensor, i: int, scales: Scales, mode: Mode = "bilinear"
) -> tuple[Tensor, Tensor | None]:
    """Algorithm 3 (lines 9-12): add scale i's residual; return (f_hat, prior of scale i+1 or None after the last)."""
    up = Up(f_resi_i, scales.full, mode)
    f_hat = up if f_hat is None else f_hat + up  # line 9 (f_hat starts at 0, line 2)
    prior = Down(f_hat, scales.sizes[i + 1], mode) if i < scales.N else None  # lines 10-12
    return f_hat, prior


def cascade_priors(targets: Sequence[Tensor], scales: Scales, mode: Mode = "bilinear") -> list[Tensor | None]:
    """Input priors of the resize cascades (Fig. 2a/b): scale i+1 is conditioned on Up(f_i, h_{i+1})."""
    return [None] + [Up(targets[i], scales.sizes[i + 1], mode) for i in range(scales.N)]


# ----------------------------------------------------------------------------------------------------------------------
# The Factorization interface: targets (training), priors (teacher forcing), step/compose (sampling).


class Factorization(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def scales(self) -> Scales: ...

    @property
    def mode(self) -> Mode: ...

    def targets(self, image: Tensor, encode: Encoder, factor: int) -> list[Tensor]:
        """Per-scale training targets of an image batch ([B,3,H,H] in [-1,1]); ``encode`` maps images to latents."""
        ...

    def priors(self, targets: Sequence[Tensor]) -> list[Tensor | None]:
        """Teacher-forced input prior of each scale (None for scale 0)."""
        ...

    def step(self, state: Tensor | None, f_i: Tensor, i: int) -> tuple[Tensor, Tensor | None]:
        """Sampling: fold scale i's output into the running state; return (state, prior of scale i+1)."""
        ...

    def compose(self, targets: Sequence[Tensor]) -> Tensor:
        """The full-resolution latent that the per-scale outputs stand for."""
        ...


def downsample_image(image: Tensor, latent_size: int, factor: int) -> Tensor:
    """I_l of Algorithm 1 / x_i of Eq. 3: the image resized to latent_size * factor pixels (bilinear, antialiased)."""
    return resize(image, latent_size * factor, "bilinear")


@dataclass(frozen=True)
class Residual:
    """MSF's residual factorization (Algorithms 1-3); ``latent_base`` picks f_0 = Down(E(I)) instead of E(I_l)."""

    scales: Scales
    mode: Mode = "bilinear"
    latent_base: bool = False

    @property
    def name(self) -> str:
        return "residual_latent_base" if self.latent_base else "residual"

    def targets(self, image: Tensor, encode: Encoder, factor: int) -> list[Tensor]:
        """Algorithm 1 line 2 (the two encoder passes), then lines 3-9."""
        f_hat = encode(image)
        if self.latent_base:
            f_0 = Down(f_hat, self.scales.sizes[0], self.mode)
        elif len(self.scales) == 1:
            f_0 = f_hat
        else:
            f_0 = encode(downsample_image(image, self.scales.sizes[0], factor))
        return residual_latents(f_hat, f_0, self.scales, self.mode)

    def priors(self, targets: Sequence[Tensor]) -> list[Tensor | None]:
        """Algorithm 2."""
        return input_priors(targets, self.scales, self.mode)

    def step(self, state: Tensor | None, f_i: Tensor, i: int) -> tuple[Tensor, Tensor | None]:
        """Algorithm 3 lines 9-12."""
        return accumulate(state, f_i, i, self.scales, self.mode)

    def compose(self, targets: Sequence[Tensor]) -> Tensor:
        """Residual accumulation: f_hat = sum_i Up(f_resi^{h_i}, h_N) (Algorithm 3 line 9 over all i)."""
        f_hat: Tensor | None = None
        for i, f in enumerate(targets):
            f_hat, _ = self.step(f_hat, f, i)
        assert f_hat is not None
        return f_hat


@dataclass(frozen=True)
class Resize:
    """The resize cascades of Fig. 2: latent_resize (Eq. 2, ``in_image=False``) or image_resize (Eq. 3-4)."""

    scales: Scales
    mode: Mode = "bilinear"
    in_image: bool = False

    @property
    def name(self) -> str:
        return "image_resize" if self.in_image else "latent_resize"

    def targets(self, image: Tensor, encode: Encoder, factor: int) -> list[Tensor]:
        """Eq. 2 (f_i = Down(E(I), h_i)) or Eqs. 3-4 (f_i = E(Down_pixel(I, H_i)))."""
        if self.in_image:
            return [encode(downsample_image(image, h, factor)) for h in self.scales.sizes]
        f_hat = encode(image)
        return [Down(f_hat, h, self.mode) for h in self.scales.sizes]

    def priors(self, targets: Sequence[Tensor]) -> list[Tensor | None]:
        """Cascade conditioning: scale i+1 sees Up(f_i, h_{i+1})."""
        return cascade_priors(targets, self.scales, self.mode)

    def step(self, state: Tensor | None, f_i: Tensor, i: int) -> tuple[Tensor, Tensor | None]:
        """The state is the latest scale's output; the next prior is its enlargement."""
        prior = Up(f_i, self.scales.sizes[i + 1], self.mode) if i < self.scales.N else None
        return f_i, prior

    def compose(self, targets: Sequence[Tensor]) -> Tensor:
        """The last scale is the output."""
        return targets[-1]


def make_factorization(name: str, scales: Scales, mode: Mode = "bilinear") -> Factorization:
    """Build a factorization by name (one of FACTORIZATIONS)."""
    if name == "residual":
        return Residual(scales, mode)
    if name == "residual_latent_base":
        return Residual(scales, mode, latent_base=True)
    if name == "latent_resize":
        return Resize(scales, mode)
    if name == "image_resize":
        return Resize(scales, mode, in_image=True)
    raise ValueError(f"unknown factorization {name!r}; expected one of {', '.join(FACTORIZATIONS)}")
