"""DiMR (Liu et al. 2024, "Alleviating Distortion in Image Generation via Multi-Resolution Diffusion Models and
Time-Dependent Layer Normalization"): the multi-resolution baseline, as a stage model of the
harness's flow loop (ablations/engine/train.py).

Written from the paper (Sec. 3, Fig. 2 and 4) and its released code (qihao067/DiMR: ``libs/core/blocks.py``,
``libs/core/sigmoid/module.py`` and the ``DiMR-XL-2R`` / ``DiMR-G-2R`` configs), with our own code and names.

The multi-resolution network (Fig. 2) has R branches, from the lowest resolution to the input's:

- Branch r patchifies the noisy latent with a k = s = ratio_r convolution (input / ratio_r per side) and adds a
  learned position table. Branch 0 is a Transformer (qkv without bias, as released) whose label embedding is an extra
  first token (U-ViT style, null class ``num_classes`` for classifier-free guidance); the other branches are ConvNeXt
  stacks (7x7 depthwise convolution, then an MLP) and see the label only through the cascade.
- Every branch is a U-ViT stack of 2k + 1 blocks (``depths`` must be odd): the first k push their outputs, the last k
  pop them and fuse [x, skip] with a linear 2D -> D.
- Feature cascade: a branch's input tokens and all its block outputs (2k + 2 maps, concatenated along channels) go
  through TD-LN -> linear to D' r^2 channels -> pixel shuffle by r -> TD-LN and are added to the next branch's input.
- The last branch ends in TD-LN -> 3x3 convolution to C channels: the prediction.
- The MLP of both block kinds is gated: W2 (GELU(W0 x) * W1 x), hidden size ``mlp_dims``.
- Time enters only through the norms (no timestep embedding): TD-LN (msf/dit.py) with
  gamma(t), beta(t) = p1 + sigmoid(w tau + b) (p0 - p1) per channel, tau = msf.dit.td_time(t, t_scale) in [-1, 1].
  ``norm`` picks the blocks' norm: "tdln" (the paper's TD-LN) or "tdrms" (the released configs: RMSNorm with a
  time-dependent scale only, DiMR's ``TDRMSNorm``); the cascade and the output head use TD-LN (eps 1e-5) in both.

Left out of the released network, on purpose: the prediction heads of the lower branches, which only feed DiMR's
multi-scale loss (our loop trains the final output, so they would get no gradient and DDP rejects unused
parameters; 42K parameters in DiMR-XL/2R), dropout (0 in the released configs) and gradient checkpointing.
Initialisation as released, drawn from the passed generator: linears, position tables and the label table
trunc-normal(0.02) with zero biases, convolutions PyTorch's default, p0 = p1 = (1 or 0), w = 1, b = 0.

Training objective, and how it differs from DiMR's own (``train.py``): DiMR trains a discrete DDPM (Stable
Diffusion's scaled-linear betas 0.00085-0.012, 1000 steps, n ~ U{1..1000}) to predict the noise, with a multi-scale
loss sum_r c_r ||eps_r - pool_r(eps)||^2 over every branch's head (pool: 2x2 sum / 2, c = (1/4, 1) for 2R), AdamW
(lr 2e-4, betas (0.99, 0.99), weight decay 0.03, none on w and b) and samples with DPM-Solver at CFG 0.4 (U-ViT's
convention, = 1.4 in DiT's). Here the same network is trained by the
harness's loop (ablations/engine/train.py) with Eq. 5: rectified-flow velocity,
t ~ U(0, 1), the final output only, and sampled by msf/flow.py's Euler/Heun, as every model of the harness.

Published sizes (qihao067/DiMR README, ImageNet 256, 32x32x4 latents): DiMR-XL/2R 505M and DiMR-G/2R 1.06B
parameters; ``DIMR_CONFIGS`` restates their released configs (a released ``num_blocks`` of 20 builds 21 blocks).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from msf.dit import (
    Attention,
    AttnBackend,
    LabelEmbedder,
    TDLayerNorm,
    TimeDependent,
    check_stage_inputs,
    td_time,
)

Norm = Literal["tdln", "tdrms"]
HEAD_EPS = 1e-5  # DiMR's TD LayerNorm eps (cascade and output head; also the blocks' with norm="tdln")
RMS_EPS = 1e-8  # DiMR's TDRMSNorm eps


class TDRMSNorm(nn.Module):
    """RMSNorm with a time-dependent scale gamma(tau) and no shift (DiMR's released TDRMSNorm)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = TimeDependent(torch.ones(1, dim))  # [1, D]

    def forward(self, x: Tensor, tau: Tensor) -> Tensor:
        """x [B, N, D], tau [B] -> [B, N, D]: x / rms(x) * gamma(tau) (DiMR TDRMSNorm)."""
        return F.rms_norm(x, x.shape[-1:], eps=RMS_EPS) * self.scale(tau)  # gamma: [B, 1, D]


def make_norm(norm: Norm, dim: int) -> nn.Module:
    """The blocks' time-dependent norm: TD-LN (paper, Sec. 3.3) or TD-RMSNorm (released configs)."""
    return TDLayerNorm(dim, eps=HEAD_EPS) if norm == "tdln" else TDRMSNorm(dim)


def grid(tokens: Tensor) -> Tensor:
    """Row-major tokens [B, h*h, D] -> feature map [B, D, h, h]."""
    B, N, D = tokens.shape
    h = math.isqrt(N)
    return tokens.transpose(1, 2).reshape(B, D, h, h)


# ----------------------------------------------------------------------------------------------------------------------
# Blocks.


class GatedMlp(nn.Module):
    """norm -> W2 (GELU(W0 x) * W1 x) (DiMR MLPBlock; W0 and W1 fused in one linear)."""

    def __init__(self, dim: int, hidden: int, norm: Norm) -> None:
        super().__init__()
        self.norm = make_norm(norm, dim)
        self.fc1 = nn.Linear(dim, 2 * hidden)  # [W0; W1]
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor, tau: Tensor) -> Tensor:
        """[B, N, D] -> [B, N, D] (DiMR MLPBlock)."""
        gate, value = self.fc1(self.norm(x, tau)).chunk(2, dim=-1)  # [B, N, hidden] each
        return self.fc2(F.gelu(gate) * value)


class TransformerBlock(nn.Module):
    """x + attn(norm(x)), then x + mlp(x) (DiMR TransformerBlock, lowest-resolution branch)."""

    def __init__(self, dim: int, hidden: int, norm: Norm, num_heads: int, attn: AttnBackend) -> None:
        super().__init__()
        self.norm = make_norm(norm, dim)
        self.attn = Attention(dim, num_heads, attn, qkv_bias=False)
        self.mlp = GatedMlp(dim, hidden, norm)

    def forward(self, x: Tensor, tau: Tensor) -> Tensor:
        """[B, 1 + N, D] -> [B, 1 + N, D] (label token first) (DiMR TransformerBlock)."""
        x = x + self.attn(self.norm(x, tau))
        return x + self.mlp(x, tau)


class ConvNeXtBlock(nn.Module):
    """x + depthwise conv(x), then x + mlp(x) (DiMR ConvNeXtBlock, higher-resolution branches)."""

    def __init__(self, dim: int, hidden: int, norm: Norm, kernel_size: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.mlp = GatedMlp(dim, hidden, norm)

    def forward(self, x: Tensor, tau: Tensor) -> Tensor:
        """[B, N, D] -> [B, N, D] (DiMR ConvNeXtBlock)."""
        x = x + self.dwconv(grid(x)).flatten(2).transpose(1, 2)
        return x + self.mlp(x, tau)


class Cascade(nn.Module):
    """Lower-branch features -> this branch: TD-LN, linear to D r^2, pixel shuffle by r, TD-LN (DiMR Fig. 2)."""

    def __init__(self, low_channels: int, dim: int, ratio: int) -> None:
        super().__init__()
        self.ratio = ratio
        self.norm_in = TDLayerNorm(low_channels, eps=HEAD_EPS)
        self.proj = nn.Linear(low_channels, dim * ratio * ratio)
        self.norm_out = TDLayerNorm(dim, eps=HEAD_EPS)

    def forward(self, features: list[Tensor], tau: Tensor) -> Tensor:
        """2k + 2 maps [B, n, D_low] -> [B, n r^2, D] in row-major order (DiMR feature cascade)."""
        f = torch.cat(features, dim=-1)  # [B, n, (2k + 2) D_low]
        B, n, _ = f.shape
        g, r = math.isqrt(n), self.ratio
        h = self.proj(self.norm_in(f, tau))  # [B, n, r*r*D]
        h = h.reshape(B, g, g, r, r, -1).transpose(2, 3).reshape(B, n * r * r, -1)  # pixel shuffle: [B, n r^2, D]
        return self.norm_out(h, tau)


# ----------------------------------------------------------------------------------------------------------------------
# One resolution, and the network.


class Branch(nn.Module):
    """One resolution: patchify + positions (+ cascade), a U-ViT stack of 2k + 1 blocks (DiMR Stage)."""

    def __init__(
        self,
        in_channels: int,
        size: int,
        ratio: int,
        dim: int,
        make_block: Callable[[], nn.Module],
        depth: int,
        low: tuple[int, int] | None,
    ) -> None:
        super().__init__()
        self.patchify = nn.Conv2d(in_channels, dim, ratio, stride=ratio)
        self.pos_embed = nn.Parameter(torch.zeros(1, (size // ratio) ** 2, dim))  # learned
        self.cascade = None if low is None else Cascade(low[0], dim, low[1])
        self.blocks = nn.ModuleList(make_block() for _ in range(depth))
        self.skip_fuse = nn.ModuleList(nn.Linear(2 * dim, dim) for _ in range(depth // 2))

    def forward(
        self, x: Tensor, tau: Tensor, low: list[Tensor] | None = None, label: Tensor | None = None
    ) -> tuple[Tensor, list[Tensor]]:
        """x [B, C, H, W] -> (last tokens [B, N, D], the 2k + 2 maps [B, N, D] for the cascade) (DiMR Stage)."""
        h = self.patchify(x).flatten(2).transpose(1, 2) + self.pos_embed  # [B, N, D]
        N = h.shape[1]
        if self.cascade is not None:
            assert low is not None
            h = h + self.cascade(low, tau)
        if label is not None:
            h = torch.cat([label[:, None], h], dim=1)  # [B, 1 + N, D]
        k = len(self.skip_fuse)
        features, skips = [h], []
        for block in self.blocks[:k]:  # first half: push
            h = block(h, tau)
            features.append(h)
            skips.append(h)
        h = self.blocks[k](h, tau)  # middle block
        features.append(h)
        for fuse, block in zip(self.skip_fuse, self.blocks[k + 1 :], strict=True):  # second half: pop and fuse
            h = block(fuse(torch.cat([h, skips.pop()], dim=-1)), tau)
            features.append(h)
        return h[:, -N:], [f[:, -N:] for f in features]  # the label token dropped


def check_config(
    input_size: int,
    ratios: Sequence[int],
    widths: Sequence[Sequence[int]],
    depths: Sequence[int],
    norm: str,
    learn_sigma: bool,
    prior_channels: int,
) -> None:
    """Raise ValueError on a DiMR configuration the network cannot build."""
    if len({len(ratios), len(depths), *map(len, widths)}) != 1 or not ratios:
        raise ValueError("ratios, dims, mlp_dims and depths need one entry per branch")
    if ratios[-1] != 1 or any(a <= b or a % b for a, b in itertools.pairwise(ratios)) or input_size % ratios[0]:
        raise ValueError(f"ratios {list(ratios)} must decrease by integer factors to 1 and divide {input_size}")
    if any(d < 1 or d % 2 == 0 for d in depths):
        raise ValueError(f"depths {list(depths)} must be odd (a U-ViT stack of 2k + 1 blocks)")
    if norm not in ("tdln", "tdrms"):
        raise ValueError(f"unknown norm {norm!r}; expected tdln or tdrms")
    if learn_sigma or prior_channels:
        raise ValueError("DiMR is a single-scale velocity model: learn_sigma=False and prior_channels=0 only")


class DiMR(nn.Module):
    """DiMR's multi-resolution network as a velocity stage model: model(x, t, y) -> [B, C, H, W] (DiMR Sec. 3).

    Args:
        input_size: latent height = width.
        in_channels: latent channels C (also the output's).
        ratios: per branch, input size / branch size, from the lowest resolution down to 1.
        dims, mlp_dims: per branch, width D and gated-MLP hidden size.
        depths: per branch, number of blocks (odd: 2k + 1).
        num_heads: attention heads of the Transformer branch.
        kernel_size: depthwise kernel of the ConvNeXt branches.
        norm: the blocks' norm, "tdln" (paper) or "tdrms" (released configs).
        class_dropout_prob: label dropout for CFG; > 0 adds the null-class row ``num_classes``.
        num_classes: number of classes.
        learn_sigma, prior_channels: the stage-model interface's; only False and 0 (single-scale velocity).
        t_scale: t * t_scale is the DDPM-range time n of TD-LN's tau (1000 for flow t in [0, 1],
            ablations/engine/train.py).
        attn: attention backend of the Transformer branch (msf/dit.py).
        generator: RNG for the weight initialisation (None: torch's default generator).
    """

    def __init__(
        self,
        input_size: int = 32,
        in_channels: int = 4,
        ratios: Sequence[int] = (2, 1),
        dims: Sequence[int] = (960, 480),
        mlp_dims: Sequence[int] = (1920, 960),
        depths: Sequence[int] = (39, 21),
        num_heads: int = 16,
        kernel_size: int = 7,
        norm: Norm = "tdrms",
        class_dropout_prob: float = 0.1,
        num_classes: int = 1000,
        learn_sigma: bool = False,
        prior_channels: int = 0,
        t_scale: float = 1000.0,
        attn: AttnBackend = "auto",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        check_config(input_size, ratios, (dims, mlp_dims), depths, norm, learn_sigma, prior_channels)
        self.input_size, self.in_channels, self.out_channels = input_size, in_channels, in_channels
        self.prior_channels, self.t_scale = prior_channels, t_scale
        self.y_embedder = LabelEmbedder(num_classes, dims[0], class_dropout_prob)
        branches, low = [], None
        for r, (ratio, dim, hidden, depth) in enumerate(zip(ratios, dims, mlp_dims, depths, strict=True)):
            make_block = (
                functools.partial(TransformerBlock, dim, hidden, norm, num_heads, attn)
                if r == 0
                else functools.partial(ConvNeXtBlock, dim, hidden, norm, kernel_size)
            )
            branches.append(Branch(in_channels, input_size, ratio, dim, make_block, depth, low))
            low = (dim * (depth + 1), ratio // ratios[r + 1]) if r + 1 < len(ratios) else None
        self.branches = nn.ModuleList(branches)
        self.norm_out = TDLayerNorm(dims[-1], eps=HEAD_EPS)
        self.head = nn.Conv2d(dims[-1], in_channels, 3, padding=1)
        self.initialize_weights(generator)

    @torch.no_grad()
    def initialize_weights(self, generator: torch.Generator | None = None) -> None:
        """DiMR's init: trunc-normal(0.02) linears and tables, zero biases, PyTorch-default convolutions."""
        if self.head.weight.is_meta:  # shape-only model (parameter counts): nothing to fill
            return
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02, generator=generator)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):  # nn.Conv2d.reset_parameters, from the generator
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
                if m.bias is not None:
                    bound = 1 / math.sqrt(m.weight[0].numel())  # 1 / sqrt(fan_in)
                    nn.init.uniform_(m.bias, -bound, bound, generator=generator)
        tables = [
            self.y_embedder.embedding_table.weight,
            *(m.pos_embed for m in self.modules() if isinstance(m, Branch)),
        ]
        for table in tables:
            nn.init.trunc_normal_(table, std=0.02, generator=generator)

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        y: Tensor,
        prior: Tensor | None = None,
        *,
        force_drop_ids: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """DiMR forward: x [B, C, H, W], t [B] (flow time), y [B] -> velocity [B, C, H, W] (DiMR Fig. 2)."""
        check_stage_inputs(x, prior, self.in_channels, self.input_size, self.prior_channels)
        tau = td_time(t, self.t_scale)  # [B]: time enters through the TD norms only
        label = self.y_embedder(y, force_drop_ids, generator)  # [B, D_0]
        h, low = self.branches[0](x, tau, label=label)  # lowest resolution, Transformer
        for branch in self.branches[1:]:  # higher resolutions, ConvNeXt, fed by the cascade
            h, low = branch(x, tau, low)
        return self.head(grid(self.norm_out(h, tau)))  # [B, C, H, W]


# ----------------------------------------------------------------------------------------------------------------------
# Size table: the released ImageNet-256 configs (32x32x4 latents) and a tiny one for the embedded preset.


DIMR_CONFIGS: dict[str, dict[str, Any]] = {
    "DiMR-XL/2R": dict(
        ratios=(2, 1), dims=(960, 480), mlp_dims=(1920, 960), depths=(39, 21), num_heads=16, norm="tdrms"
    ),
    "DiMR-G/2R": dict(
        ratios=(2, 1), dims=(1152, 576), mlp_dims=(2304, 1152), depths=(57, 29), num_heads=16, norm="tdrms"
    ),
    # embedded preset, 8x8x4 latents: Transformer on 2x2 tokens, ConvNeXt on 4x4 and 8x8 (the paper's 3R layout)
    "DiMR-tiny": dict(
        ratios=(4, 2, 1), dims=(128, 64, 32), mlp_dims=(256, 128, 64), depths=(5, 3, 3), num_heads=4, norm="tdln"
    ),
}


def build_dimr(name: str, **overrides: Any) -> DiMR:
    """A DiMR from the size table DIMR_CONFIGS with constructor overrides (DiMR README / released configs)."""
    if name not in DIMR_CONFIGS:
        raise ValueError(f"unknown DiMR size {name!r}; expected one of {', '.join(DIMR_CONFIGS)}")
    return DiMR(**{**DIMR_CONFIGS[name], **overrides})
