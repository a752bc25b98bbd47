"""Autoencoders as files: the small KL autoencoder's training, saving and loading, and pretrained diffusers VAE
folders (an autoencoder's down-sampling factor is worked out from its configuration in specs.py, latent_factor).

The model code (encode / decode with the scaling factor) is msf/autoencoder.py; everything here reads or writes
files. A VAE folder is loaded from safetensors only: a folder without its config or its safetensors weights is an
error, never a pickle load.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

from ablations.engine.committed import asset
from ablations.engine.specs import AutoencoderConfig
from msf.autoencoder import Autoencoder, KLAutoencoder, PixelAutoencoder

if TYPE_CHECKING:  # imported where an autoencoder is built: jobs that never build one (training, scoring) do without it
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

Log = Callable[[str], None]
META_FILE = "msf_autoencoder.json"


class VAEWeightsNotFoundError(FileNotFoundError):
    """Pretrained VAE weights are neither a local folder nor in the Hugging Face cache."""


def load(cfg: AutoencoderConfig, trained_dir: Path | None = None) -> Autoencoder:
    """The autoencoder of a configuration: pixels, a pretrained folder, or the small one trained in ``trained_dir``."""
    if cfg.kind == "pixel":
        return PixelAutoencoder()
    if cfg.kind == "frozen":
        return load_pretrained_vae(str(asset(cfg.frozen)), name=cfg.frozen)
    if cfg.kind == "pretrained":
        return load_pretrained_vae(str(cfg.path))
    if trained_dir is None:
        raise ValueError("autoencoder.kind=small_kl needs the run folder of its autoencoder job")
    return load_autoencoder(trained_dir / "autoencoder")


def load_pretrained_vae(
    name_or_path: str = "stabilityai/sd-vae-ft-ema",
    local_files_only: bool = True,
    cache_dir: str | Path | None = None,
    subfolder: str | None = None,
    torch_dtype: torch.dtype = torch.float32,
    name: str | None = None,
) -> KLAutoencoder:
    """Load the paper's VAE (Sec. 4.1: SD's f=8 VAE) from a local folder or the Hugging Face cache.

    With ``local_files_only`` (the default) no network call is made. Raises VAEWeightsNotFoundError with download
    instructions when the weights are missing.
    """
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

    try:
        vae = AutoencoderKL.from_pretrained(
            str(name_or_path),
            local_files_only=local_files_only,
            cache_dir=cache_dir,
            subfolder=subfolder,
            torch_dtype=torch_dtype,
            use_safetensors=True,
            low_cpu_mem_usage=False,
        )
    except (OSError, ValueError) as err:
        raise VAEWeightsNotFoundError(
            f"VAE weights {name_or_path!r} not found locally ({type(err).__name__}); on a machine with internet run "
            f"`huggingface-cli download {name_or_path} --local-dir <folder>`, copy <folder> here and pass its path"
        ) from None
    return KLAutoencoder(vae, name=name or str(name_or_path))


# ----------------------------------------------------------------------------------------------------------------------
# A small AutoencoderKL trained by the harness (for the embedded preset, which has no pretrained VAE).


class BatchSource(Protocol):
    def __len__(self) -> int: ...

    def make_batch(self, indices: Sequence[int] | Tensor) -> tuple[Tensor, Tensor]: ...


@dataclass(frozen=True)
class SmallAEConfig:
    """A small AutoencoderKL and its training recipe (loss as SD's VAE minus the LPIPS and GAN terms).

    Loss per image: sum_pixels |x - D(z)| + kl_weight * KL(q(z|x) || N(0, I)), z ~ q(z|x), as Stable Diffusion's
    ``LPIPSWithDiscriminator`` with the perceptual and adversarial terms dropped (kl_weight 1e-6 is SD's value).
    """

    # Defaults measured on the 32-px embedded set (1 thread of a shared 2-core CPU, ~0.13 s/step): 0.24M params,
    # 1500 steps in 189 s, held-out PSNR 24.6 dB (colours and shapes right; period-4 textures mostly blurred).
    block_out_channels: tuple[int, ...] = (16, 32, 32)  # f = 2 ** (len - 1) = 4
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 8
    steps: int = 1500
    batch_size: int = 16  # more small steps beat fewer large ones at a fixed time budget (measured)
    lr: float = 2e-3
    weight_decay: float = 0.0
    kl_weight: float = 1e-6
    logvar_init: float = -8.0  # initial posterior log-variance (see build)
    scale_batch: int = 512  # images used to measure the latent std for the scaling factor

    def build(self, image_size: int) -> AutoencoderKL:
        """The untrained AutoencoderKL of this config (initialised from the global RNG: wrap in fork_rng).

        The posterior log-variance starts at ``logvar_init`` (bias of quant_conv's second half): at diffusers' 0 the
        unit-variance sampling noise swamps the small initial latents (measured: -3 dB after 500 steps).
        """
        from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

        n = len(self.block_out_channels)
        vae = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * n,
            up_block_types=("UpDecoderBlock2D",) * n,
            block_out_channels=self.block_out_channels,
            layers_per_block=self.layers_per_block,
            latent_channels=self.latent_channels,
            norm_num_groups=self.norm_num_groups,
            sample_size=image_size,
        )
        with torch.no_grad():
            vae.quant_conv.bias[self.latent_channels :] += self.logvar_init
        return vae


def psnr(mse: float) -> float:
    """PSNR in dB of images in [-1,1] (peak-to-peak 2) given their mean squared error."""
    return 10.0 * math.log10(4.0 / mse)


def _images(dataset: BatchSource, generator: torch.Generator, n: int) -> Tensor:
    """n uniformly drawn training images as float [n,3,H,W] in [-1,1]."""
    indices = torch.randint(len(dataset), (n,), generator=generator)
    return dataset.make_batch(indices)[0].to(torch.float32) / 127.5 - 1.0


def train_small_autoencoder(
    dataset: BatchSource, config: SmallAEConfig, generator: torch.Generator, log: Log = print
) -> KLAutoencoder:
    """Train a small AutoencoderKL with AdamW and set scaling_factor = 1 / std(latents) as SD does.

    Deterministic on CPU given the generator (init, batches and posterior samples all come from it).
    """
    if config.steps < 1 or config.batch_size < 1:
        raise ValueError(f"small AE needs steps >= 1 and batch_size >= 1, got {config.steps} and {config.batch_size}")
    image_size = dataset.make_batch([0])[0].shape[-1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        vae = config.build(image_size)
    opt = torch.optim.AdamW(vae.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / config.steps)))
    vae.train()
    for step in range(config.steps):
        x = _images(dataset, generator, config.batch_size)  # [B,3,H,W]
        posterior = vae.encode(x).latent_dist
        x_rec = vae.decode(posterior.sample(generator=generator)).sample  # [B,3,H,W]
        rec = (x - x_rec).abs().sum() / x.shape[0]
        kl = posterior.kl().mean()
        loss = rec + config.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        if step % 50 == 0 or step == config.steps - 1:
            mse = (x - x_rec).pow(2).mean().item()
            log(f"ae step {step + 1}/{config.steps} l1/img {rec.item():.1f} kl {kl.item():.0f} psnr {psnr(mse):.2f} dB")
    vae.eval()
    with torch.no_grad():
        std = vae.encode(_images(dataset, generator, config.scale_batch)).latent_dist.mean.std().item()
    vae.register_to_config(scaling_factor=1.0 / std)
    log(f"ae scaling_factor = 1/std(latents) = {1.0 / std:.4f}")
    return KLAutoencoder(vae, name="small-ae")


def save_autoencoder(ae: KLAutoencoder, directory: str | Path) -> None:
    """Save weights (safetensors), diffusers config and the name (JSON) into a folder."""
    directory = Path(directory)
    ae.vae.save_pretrained(directory, safe_serialization=True)
    (directory / META_FILE).write_text(json.dumps({"name": ae.name}))


def load_autoencoder(directory: str | Path) -> KLAutoencoder:
    """Load a folder written by :func:`save_autoencoder` (safetensors only, never unpickled)."""
    directory = Path(directory)
    meta = directory / META_FILE
    if not meta.is_file():
        raise FileNotFoundError(f"no saved autoencoder in {directory} (missing {META_FILE})")
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(directory, local_files_only=True, use_safetensors=True, low_cpu_mem_usage=False)
    return KLAutoencoder(vae, name=json.loads(meta.read_text())["name"])
