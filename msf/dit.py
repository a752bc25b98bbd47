"""The DiT backbone (Peebles & Xie, "Scalable Diffusion Models with Transformers") used by every MSF stage (Sec. 4.1).

Written from the official facebookresearch/DiT ``models.py``; parameter names and shapes follow its checkpoints
exactly (``x_embedder.proj``, ``t_embedder.mlp.0/2``, ``y_embedder.embedding_table``, ``blocks.N.attn.qkv/proj``,
``blocks.N.mlp.fc1/fc2``, ``blocks.N.adaLN_modulation.1``, ``final_layer.linear``, ``final_layer.adaLN_modulation.1``
and the frozen ``pos_embed`` parameter), so an official DiT-XL/2 state dict loads with ``strict=True``.

Choices the MSF paper leaves open (Sec. 4.1 gives only depth and width per stage), and what we use:

- Patch size 2 for both stages (as DiT-XL/2, the baseline they are compared with).
- 16 heads at widths 1152 and 1280, i.e. head dimension 72 (as DiT-XL) and 80.
- MLP ratio 4, adaLN-Zero conditioning on t + y, learn_sigma=False for the flow stages (a velocity has no variance).
- ``conditioning="tdln"`` (an option; adaLN-Zero stays the default) replaces adaLN-Zero by DiMR's Time-Dependent
  LayerNorm (Liu et al. 2024, Sec. 3.3, code qihao067/DiMR): every LayerNorm's scale and shift are learned functions
  of t, gamma(t), beta(t) = p1 + sigmoid(w tau + b) (p0 - p1) per channel, with no MLP, no gates and no timestep
  embedder. The class label enters as DiMR's Transformer branch does: its embedding (null class included) is an extra
  first token, attended to by the patch tokens and dropped before the final layer. The TD-LN time is DiMR's
  tau = log_snr / 4 = 2 n / 1000 - 1 in [-1, 1] with n = t * t_scale (its ``train.py``); the direction of time is
  irrelevant (w and b are learned), as it is for the frequency embedding. LayerNorm eps stays DiT's 1e-6.
- The input prior (Algorithm 2/3) enters through ``prior_mode``: ``"concat"`` (default) stacks it with x along
  channels before the patch embedding (x_embedder takes in_channels + prior_channels); ``"add"`` embeds it with a
  separate zero-initialised ``prior_embedder`` and adds its tokens to x's, so a fresh model ignores the prior.
- Time: the frequency embedding sees ``t * t_scale``. The official DDPM model uses t in {0..999} and t_scale=1;
  MSF's rectified-flow stages use t in [0, 1] (t=0 noise, t=1 data) and t_scale=1000, the same frequency range.
- Class-label dropout for classifier-free guidance replaces a label by the null class ``num_classes``; its randomness
  comes from a passed-in generator (or explicit ``force_drop_ids``), never from the global RNG. As in the official
  code the null-class row exists only when ``class_dropout_prob > 0``.

Shapes: x ``[B, C, H, W]`` (H = W = input_size), tokens ``[B, T, D]`` with T = (H / p)^2, conditioning ``c: [B, D]``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

try:  # optional: xformers kernels on CUDA (pyproject extra "gpu")
    from xformers.ops import memory_efficient_attention as _xformers_attention
except ImportError:
    _xformers_attention = None

AttnBackend = Literal["auto", "sdpa", "xformers"]
PriorMode = Literal["concat", "add"]
Conditioning = Literal["adaln_zero", "tdln"]
FREQ_DIM = 256  # size of the sinusoidal timestep embedding (official DiT)
NUM_TIMESTEPS = 1000  # the DDPM timestep range that t * t_scale spans (DiT, DiMR)


# ----------------------------------------------------------------------------------------------------------------------
# Fixed sin-cos embeddings.


def sincos_1d(dim: int, pos: Tensor) -> Tensor:
    """1-D sin-cos position embedding [sin(pos w), cos(pos w)], w_k = 10000^(-2k/dim) (DiT / MAE positional code)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64, device=pos.device) / (dim / 2))  # [dim/2]
    out = pos.reshape(-1, 1).double() * omega  # [M, dim/2]
    return torch.cat([out.sin(), out.cos()], dim=1)  # [M, dim]


def sincos_2d(dim: int, grid_size: int) -> Tensor:
    """2-D sin-cos position table [grid^2, dim] in row-major token order: first half columns, second half rows (DiT)."""
    if dim % 4:
        raise ValueError(f"hidden size {dim} must be divisible by 4 for the 2-D sin-cos position embedding")
    pos = torch.arange(grid_size, dtype=torch.float64)
    row, col = torch.meshgrid(pos, pos, indexing="ij")  # [g, g] each
    return torch.cat([sincos_1d(dim // 2, col), sincos_1d(dim // 2, row)], dim=1)  # [g*g, dim]


def timestep_frequencies(t: Tensor, dim: int = FREQ_DIM, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal timestep features [cos(t w), sin(t w)], w_k = max_period^(-k/(dim/2)), in float32 (official DiT)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]  # [B, half]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # [B, dim]


# ----------------------------------------------------------------------------------------------------------------------
# Embedders.


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> tokens by a strided convolution (ViT / DiT patchify)."""

    def __init__(self, in_channels: int, hidden_size: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        """[B, C, H, W] -> [B, T, D] (DiT patchify)."""
        return self.proj(x).flatten(2).transpose(1, 2)


class TimestepEmbedder(nn.Module):
    """t -> MLP(frequency features of t * t_scale) (DiT TimestepEmbedder; t_scale is MSF's time convention)."""

    def __init__(self, hidden_size: int, t_scale: float = 1.0) -> None:
        super().__init__()
        self.t_scale = t_scale
        self.mlp = nn.Sequential(nn.Linear(FREQ_DIM, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, t: Tensor) -> Tensor:
        """[B] -> [B, D] (DiT TimestepEmbedder)."""
        freq = timestep_frequencies(t * self.t_scale)  # [B, 256] float32
        return self.mlp(freq.to(next(self.mlp.parameters()).dtype))


class LabelEmbedder(nn.Module):
    """Class labels -> vectors, with a null class ``num_classes`` for classifier-free guidance (DiT LabelEmbedder)."""

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), hidden_size)

    def drop_ids(self, y: Tensor, force_drop_ids: Tensor | None, generator: torch.Generator | None) -> Tensor | None:
        """Which labels become the null class: forced, or Bernoulli(dropout_prob) from ``generator`` in training."""
        if force_drop_ids is not None:
            return force_drop_ids.to(y.device).bool()
        if not (self.training and self.dropout_prob > 0):
            return None
        if generator is None:
            raise ValueError("label dropout in training mode needs a torch.Generator (or force_drop_ids)")
        return (torch.rand(y.shape[0], generator=generator, device=generator.device) < self.dropout_prob).to(y.device)

    def forward(
        self, y: Tensor, force_drop_ids: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """[B] long -> [B, D]; dropped labels use the null-class row (DiT LabelEmbedder, CFG training)."""
        drop = self.drop_ids(y, force_drop_ids, generator)
        if drop is not None:
            if self.dropout_prob == 0:
                raise ValueError("this model has no null class (class_dropout_prob=0); cannot drop labels")
            y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        return self.embedding_table(y)


# ----------------------------------------------------------------------------------------------------------------------
# Transformer parts.


def check_backend(backend: str) -> AttnBackend:
    """A valid attention backend name, or a one-line error."""
    if backend not in ("auto", "sdpa", "xformers"):
        raise ValueError(f"unknown attention backend {backend!r}; expected auto, sdpa or xformers")
    if backend == "xformers" and _xformers_attention is None:
        raise ValueError("attn='xformers' but xformers is not importable; install the 'gpu' extra or use sdpa")
    return backend  # type: ignore[return-value]


def set_attention(model: nn.Module, backend: str) -> nn.Module:
    """Select the attention kernel of every block of a built model, e.g. one loaded from a checkpoint."""
    check_backend(backend)
    for m in model.modules():
        if isinstance(m, Attention):
            m.backend = backend  # type: ignore[assignment]
    return model


class Attention(nn.Module):
    """Multi-head self-attention softmax(q k^T / sqrt(d)) v with fused qkv (timm Attention, as DiT)."""

    def __init__(self, hidden_size: int, num_heads: int, backend: AttnBackend = "auto", qkv_bias: bool = True) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden size {hidden_size} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.backend = check_backend(backend)
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=qkv_bias)  # DiT: bias; DiMR: none
        self.proj = nn.Linear(hidden_size, hidden_size)

    def use_xformers(self, x: Tensor) -> bool:
        """xformers only when importable and on CUDA; 'auto' falls back to SDPA."""
        if self.backend == "xformers" and not x.is_cuda:
            raise ValueError(f"attn='xformers' needs CUDA tensors, got device {x.device}")
        return self.backend != "sdpa" and _xformers_attention is not None and x.is_cuda

    def forward(self, x: Tensor) -> Tensor:
        """[B, T, D] -> [B, T, D] (DiT / timm Attention)."""
        B, T, D = x.shape
        q, k, v = self.qkv(x).reshape(B, T, 3, self.num_heads, D // self.num_heads).unbind(2)  # [B, T, H, d] each
        if self.use_xformers(x):
            assert _xformers_attention is not None
            o = _xformers_attention(q, k, v)  # [B, T, H, d]
        else:
            o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # [B, H, T, d]
            o = o.transpose(1, 2)  # [B, T, H, d]
        return self.proj(o.reshape(B, T, D))


class Mlp(nn.Module):
    """fc1 -> GELU(tanh) -> fc2 (timm Mlp as used by DiT)."""

    def __init__(self, hidden_size: int, mlp_hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, mlp_hidden)
        self.fc2 = nn.Linear(mlp_hidden, hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        """[B, T, D] -> [B, T, D] (DiT Mlp)."""
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: x * (1 + scale) + shift, per sample (DiT Sec. 3.2)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)  # [B, T, D]


class DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero conditioning on c (DiT Sec. 3.2, Fig. 3)."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, attn: AttnBackend) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads, attn)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        """x [B, T, D], c [B, D] -> [B, T, D] (DiT adaLN-Zero block)."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        return x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm + linear to p*p*C_out values per token (DiT FinalLayer)."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        """x [B, T, D], c [B, D] -> [B, T, p*p*C_out] (DiT FinalLayer)."""
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


# ----------------------------------------------------------------------------------------------------------------------
# Time-Dependent LayerNorm (DiMR Sec. 3.3): the conditioning="tdln" option, also used by baselines/dimr.py.


def td_time(t: Tensor, t_scale: float) -> Tensor:
    """TD-LN time tau = 2 n / 1000 - 1 in [-1, 1] for n = t * t_scale (DiMR train.py: log_snr = 8 n/1000 - 4, /4)."""
    return 2 * t.float() * t_scale / NUM_TIMESTEPS - 1  # [B]


class TimeDependent(nn.Module):
    """K per-channel vectors p(tau) = p1 + sigmoid(w tau + b) * (p0 - p1) (DiMR's time-dependent parameters)."""

    def __init__(self, init: Tensor) -> None:
        super().__init__()
        self.p0 = nn.Parameter(init.clone())  # [K, D]; p0 = p1 at init: a time-independent start
        self.p1 = nn.Parameter(init.clone())
        self.w = nn.Parameter(torch.ones_like(init))  # DiMR: w = 1 + nodecay_weight (0 at init), b = 0
        self.b = nn.Parameter(torch.zeros_like(init))

    def forward(self, tau: Tensor) -> Tensor:
        """[B] -> [B, K, D] (DiMR TimeDependentParameter)."""
        s = torch.sigmoid(self.w * tau[:, None, None].to(self.w.dtype) + self.b)  # [B, K, D]
        return self.p1 + s * (self.p0 - self.p1)


class TDLayerNorm(nn.Module):
    """LayerNorm over the last dim with time-dependent scale gamma(tau) and shift beta(tau) (DiMR TD-LN, Sec. 3.3)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.affine = TimeDependent(torch.stack([torch.ones(dim), torch.zeros(dim)]))  # [2, D]: gamma, beta

    def forward(self, x: Tensor, tau: Tensor) -> Tensor:
        """x [B, N, D], tau [B] -> [B, N, D]: LN(x) * gamma(tau) + beta(tau) (DiMR TD-LN)."""
        gamma, beta = self.affine(tau).split(1, dim=1)  # [B, 1, D] each
        return torch.addcmul(beta, gamma, F.layer_norm(x, x.shape[-1:], eps=self.eps))


class TDBlock(nn.Module):
    """Transformer block conditioned by TD-LN only: x + attn(TDLN(x)), then x + mlp(TDLN(x)) (DiMR Fig. 4 right)."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, attn: AttnBackend) -> None:
        super().__init__()
        self.norm1 = TDLayerNorm(hidden_size)
        self.attn = Attention(hidden_size, num_heads, attn)
        self.norm2 = TDLayerNorm(hidden_size)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))

    def forward(self, x: Tensor, tau: Tensor) -> Tensor:
        """x [B, T, D], tau [B] -> [B, T, D] (DiMR TD-LN block)."""
        x = x + self.attn(self.norm1(x, tau))
        return x + self.mlp(self.norm2(x, tau))


class TDFinalLayer(nn.Module):
    """TD-LN + linear to p*p*C_out values per token (DiT FinalLayer with TD-LN in place of adaLN)."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = TDLayerNorm(hidden_size)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)

    def forward(self, x: Tensor, tau: Tensor) -> Tensor:
        """x [B, T, D], tau [B] -> [B, T, p*p*C_out] (TD-LN final layer)."""
        return self.linear(self.norm_final(x, tau))


# ----------------------------------------------------------------------------------------------------------------------
# The model.


def check_stage_inputs(x: Tensor, prior: Tensor | None, in_channels: int, input_size: int, prior_channels: int) -> None:
    """Raise ValueError on a latent or prior that does not fit a stage model's shape."""
    want = (in_channels, input_size, input_size)
    if x.ndim != 4 or tuple(x.shape[1:]) != want:
        raise ValueError(f"x must have shape [B, {', '.join(map(str, want))}], got {list(x.shape)}")
    if prior_channels == 0:
        if prior is not None:
            raise ValueError("this model has prior_channels=0 but a prior was passed")
        return
    want_p = (x.shape[0], prior_channels, input_size, input_size)
    if prior is None or tuple(prior.shape) != want_p:
        got = None if prior is None else list(prior.shape)
        raise ValueError(f"prior must have shape {list(want_p)}, got {got}")


class DiT(nn.Module):
    """Diffusion transformer: patchify, adaLN-Zero (or TD-LN) blocks, final layer, unpatchify (DiT; MSF Sec. 4.1).

    Args:
        input_size: latent height = width.
        patch_size: p.
        in_channels: latent channels C.
        hidden_size: width D.
        depth: number of DiT blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden size / D.
        class_dropout_prob: label dropout for CFG; > 0 adds the null-class row ``num_classes``.
        num_classes: number of classes.
        learn_sigma: output 2C channels (eps and variance values, official DDPM) instead of C.
        prior_channels: channels of the input prior (0: no prior, stage 1).
        prior_mode: how the prior enters ("concat" or "add", see the module docstring).
        t_scale: n = t * t_scale is the time in DDPM steps (1 for DDPM t in [0, 1000), 1000 for flow t in [0, 1]):
            the input of the frequency embedding (adaLN-Zero) or of TD-LN's tau = 2 n / 1000 - 1 (TD-LN).
        attn: attention backend ("auto": xformers on CUDA when importable, else SDPA).
        conditioning: "adaln_zero" (DiT) or "tdln" (DiMR's TD-LN and a label token, see the module docstring).
        generator: RNG for the weight initialisation (None: torch's default generator, as the official code).
    """

    def __init__(
        self,
        input_size: int = 32,
        patch_size: int = 2,
        in_channels: int = 4,
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        class_dropout_prob: float = 0.1,
        num_classes: int = 1000,
        learn_sigma: bool = True,
        prior_channels: int = 0,
        prior_mode: PriorMode = "concat",
        t_scale: float = 1.0,
        attn: AttnBackend = "auto",
        conditioning: Conditioning = "adaln_zero",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if input_size % patch_size:
            raise ValueError(f"input size {input_size} is not divisible by patch size {patch_size}")
        if prior_mode not in ("concat", "add"):
            raise ValueError(f"unknown prior_mode {prior_mode!r}; expected concat or add")
        if conditioning not in ("adaln_zero", "tdln"):
            raise ValueError(f"unknown conditioning {conditioning!r}; expected adaln_zero or tdln")
        self.input_size, self.patch_size, self.in_channels = input_size, patch_size, in_channels
        self.out_channels = 2 * in_channels if learn_sigma else in_channels
        self.prior_channels, self.prior_mode = prior_channels, prior_mode
        self.conditioning, self.t_scale = conditioning, t_scale
        tdln = conditioning == "tdln"
        concat = prior_mode == "concat"
        self.x_embedder = PatchEmbed(in_channels + prior_channels * concat, hidden_size, patch_size)
        add = prior_channels > 0 and not concat
        self.prior_embedder = PatchEmbed(prior_channels, hidden_size, patch_size) if add else None
        self.t_embedder = None if tdln else TimestepEmbedder(hidden_size, t_scale)  # TD-LN: t enters the norms only
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
        num_patches = (input_size // patch_size) ** 2
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, hidden_size), requires_grad=False)  # fixed sin-cos
        block = TDBlock if tdln else DiTBlock
        self.blocks = nn.ModuleList(block(hidden_size, num_heads, mlp_ratio, attn) for _ in range(depth))
        final = TDFinalLayer if tdln else FinalLayer
        self.final_layer: FinalLayer | TDFinalLayer = final(hidden_size, patch_size, self.out_channels)
        self.initialize_weights(generator)

    @torch.no_grad()
    def initialize_weights(self, generator: torch.Generator | None = None) -> None:
        """Official DiT init: xavier linears, sin-cos positions, N(0, 0.02) embeddings, adaLN-Zero and zero output."""
        if self.pos_embed.is_meta:  # shape-only model (FLOP counting, key checks): nothing to fill
            return
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):  # xavier on the flattened kernel, zero bias
                nn.init.xavier_uniform_(m.weight.view(m.weight.shape[0], -1), generator=generator)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.pos_embed.copy_(sincos_2d(self.pos_embed.shape[-1], self.input_size // self.patch_size)[None])
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02, generator=generator)
        for m in self.t_embedder.mlp if self.t_embedder is not None else ():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02, generator=generator)
        adaln = [m.adaLN_modulation for m in self.modules() if isinstance(m, (DiTBlock, FinalLayer))]
        zero: list[nn.Module] = [*adaln, self.final_layer.linear]  # adaLN-Zero and a zero output layer
        if self.prior_embedder is not None:
            zero.append(self.prior_embedder.proj)  # "add" prior: no effect at init
        for p in (p for m in zero for p in m.parameters()):
            nn.init.zeros_(p)

    def embed(self, x: Tensor, prior: Tensor | None) -> Tensor:
        """Patch tokens of x (and of the input prior, Algorithm 3 line 6) plus positions: [B, T, D]."""
        if prior is not None and self.prior_mode == "concat":
            x = torch.cat([x, prior], dim=1)  # [B, C + C_prior, H, W]
        tokens = self.x_embedder(x) + self.pos_embed  # [B, T, D]
        if self.prior_embedder is not None:
            tokens = tokens + self.prior_embedder(prior)
        return tokens

    def unpatchify(self, x: Tensor) -> Tensor:
        """[B, T, p*p*C_out] -> [B, C_out, H, W] (DiT unpatchify)."""
        p, c, g = self.patch_size, self.out_channels, self.input_size // self.patch_size
        x = x.reshape(x.shape[0], g, g, p, p, c)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(x.shape[0], c, g * p, g * p)

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
        """DiT forward: x [B, C, H, W], t [B], y [B] -> [B, C_out, H, W] (eps(+var) for DDPM, velocity for MSF)."""
        check_stage_inputs(x, prior, self.in_channels, self.input_size, self.prior_channels)
        tokens = self.embed(x, prior)  # [B, T, D]
        label = self.y_embedder(y, force_drop_ids, generator)  # [B, D]
        if self.t_embedder is not None:  # adaLN-Zero: c = t embedding + label embedding (DiT)
            c = self.t_embedder(t) + label  # [B, D]
        else:  # TD-LN: c is the time tau; the label is an extra first token (DiMR)
            c, tokens = td_time(t, self.t_scale), torch.cat([label[:, None], tokens], dim=1)  # [B], [B, 1 + T, D]
        for block in self.blocks:
            tokens = block(tokens, c)  # [B, (1 +) T, D]
        tokens = tokens[:, -self.pos_embed.shape[1] :]  # the patch tokens: [B, T, D]
        return self.unpatchify(self.final_layer(tokens, c))  # [B, C_out, H, W]


# ----------------------------------------------------------------------------------------------------------------------
# Size table: DiT's S/B/L/XL x patch 2/4/8 (DiT Table 1) and the MSF stages (Sec. 4.1).


def _sizes(depth: int, hidden_size: int, num_heads: int) -> dict[str, dict[str, int]]:
    return {f"/{p}": dict(depth=depth, hidden_size=hidden_size, num_heads=num_heads, patch_size=p) for p in (2, 4, 8)}


DIT_CONFIGS: dict[str, dict[str, int]] = {
    **{f"DiT-XL{k}": v for k, v in _sizes(28, 1152, 16).items()},
    **{f"DiT-L{k}": v for k, v in _sizes(24, 1024, 16).items()},
    **{f"DiT-B{k}": v for k, v in _sizes(12, 768, 12).items()},
    **{f"DiT-S{k}": v for k, v in _sizes(12, 384, 6).items()},
    "MSF-stage1": dict(depth=18, hidden_size=1152, num_heads=16, patch_size=2),
    "MSF-stage2": dict(depth=10, hidden_size=1280, num_heads=16, patch_size=2),
}


def build_dit(name: str, **overrides: Any) -> DiT:
    """A DiT from the size table DIT_CONFIGS with constructor overrides (DiT Table 1, MSF Sec. 4.1)."""
    if name not in DIT_CONFIGS:
        raise ValueError(f"unknown DiT size {name!r}; expected one of {', '.join(DIT_CONFIGS)}")
    return DiT(**{**DIT_CONFIGS[name], **overrides})
