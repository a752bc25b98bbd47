"""Autoencoders E / D of MSF (Sec. 3.2, Sec. 4.1): a diffusers AutoencoderKL (the SD VAE or a small one) or raw pixels.

Every autoencoder has ``factor`` (spatial downsampling), ``channels``, ``name``, ``fingerprint()`` (a digest of its
weights, so caches built with other weights are never reused) and deterministic ``encode`` / ``decode``:
``encode(x) = mean(q(z|x)) * scaling_factor`` and ``decode(z) = D(z / scaling_factor)``, images [B,3,H,W] in [-1,1].
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

if TYPE_CHECKING:  # diffusers takes seconds to import: only whoever builds or loads a VAE needs it at run time
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL


class Autoencoder(Protocol):
    factor: int
    channels: int
    name: str

    def encode(self, x: Tensor) -> Tensor:
        """Images [B,3,H,W] in [-1,1] -> scaled latents [B,C,H/f,W/f]."""
        ...

    def decode(self, z: Tensor) -> Tensor:
        """Scaled latents [B,C,h,w] -> images [B,3,h*f,w*f]."""
        ...

    def fingerprint(self) -> str:
        """A short digest naming the weights."""
        ...

    def to(self, device: torch.device | str) -> Autoencoder:
        """Move the weights to ``device`` (encode/decode run there); returns self."""
        ...


class PixelAutoencoder:
    """The raw-RGB variant of MSF (Sec. 3.2, "raw RGB pixels"): identity, factor 1, 3 channels, scaling 1.

    In pixel space E is the identity, so ``latent_resize`` and ``image_resize`` coincide, and so do ``residual`` and
    ``residual_latent_base`` (up to the resize filter): the factorization ablation needs a VAE.
    """

    factor = 1
    channels = 3
    name = "pixel"

    def encode(self, x: Tensor) -> Tensor:
        """E = identity (Sec. 3.2, raw RGB)."""
        return x

    def decode(self, z: Tensor) -> Tensor:
        """D = identity (Sec. 3.2, raw RGB)."""
        return z

    def fingerprint(self) -> str:
        """No weights."""
        return "identity"

    def to(self, device: torch.device | str) -> PixelAutoencoder:
        """No weights to move."""
        return self


class KLAutoencoder:
    """A diffusers AutoencoderKL as E / D (Sec. 4.1, following Stable Diffusion); scaling factor from its config.

    Args:
        vae: the AutoencoderKL (its dtype and device are used for encode/decode).
        name: a readable name (e.g. the hub id or "small-ae").
        chunk: encode/decode at most this many images at a time (None: all at once).
    """

    def __init__(self, vae: AutoencoderKL, name: str, chunk: int | None = None):
        self.vae = vae.eval().requires_grad_(False)
        self.name, self.chunk = name, chunk
        self.factor = 2 ** (len(vae.config["block_out_channels"]) - 1)
        self.channels = int(vae.config["latent_channels"])

    def to(self, device: torch.device | str) -> KLAutoencoder:
        """Move the VAE to ``device``; encode/decode move their inputs there."""
        torch.nn.Module.to(self.vae, torch.device(device))
        return self

    @property
    def scaling_factor(self) -> float:
        """The latent scale of Stable Diffusion's LDM recipe, read from the VAE config (Sec. 4.1)."""
        return float(self.vae.config["scaling_factor"])

    def _chunked(self, fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        """Apply ``fn`` over chunks of the batch."""
        p = next(self.vae.parameters())
        x = x.to(device=p.device, dtype=p.dtype)
        if self.chunk is None or x.shape[0] <= self.chunk:
            return fn(x)
        return torch.cat([fn(c) for c in x.split(self.chunk)])

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """f = E(I): posterior mean times the scaling factor, [B,3,H,W] -> [B,C,H/f,W/f] (Algorithm 1 line 2)."""
        return self._chunked(lambda c: self.vae.encode(c).latent_dist.mean * self.scaling_factor, x)

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """I = D(f / scaling factor), [B,C,h,w] -> [B,3,h*f,w*f] (Algorithm 3 line 14)."""
        return self._chunked(lambda c: self.vae.decode(c / self.scaling_factor).sample, z)

    def fingerprint(self) -> str:
        """SHA-256 over the config (less diffusers' bookkeeping "_" keys) and every weight's bytes."""
        config = {k: v for k, v in self.vae.config.items() if not k.startswith("_")}
        h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
        for key, value in sorted(self.vae.state_dict().items()):
            h.update(key.encode())
            h.update(value.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:16]
