"""Parameters and FLOPs per sampled image: DiT-XL/2 (250 DDPM steps with CFG) vs MSF's two stages (Sec. 4.1-4.2).

``python -m msf.flops`` prints the table. Counting rules:

- FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` on the meta device (shapes only: no memory, no
  weights) or on real tensors: every matmul and convolution counts 2 x MACs, including attention's two batched
  matmuls (on the meta device SDPA decomposes into bmm; torch counts its fused CUDA kernels, and this module registers
  the same formula for the fused CPU kernel, which torch leaves uncounted). Norms, activations, softmax and
  additions are not counted, as in DiT's fvcore numbers. DiT-XL/2 gives 237.2 GFLOPs = 2 x 118.6 GMACs, i.e. the
  "118.6 Gflops" of the DiT paper, which counts multiply-accumulates.
- A step with classifier-free guidance costs two forward passes (conditional and null class): DiT-XL/2 250 x 2;
  MSF stage 1 100 x 2 (CFG 1.4) and stage 2 50 x 1 (CFG 1.0, no guidance), as in Sec. 4.2.
- Parameters include the frozen sin-cos ``pos_embed`` (a Parameter in the official layout).

Against the paper's parameter counts (Sec. 4.1), with 16 heads and patch 2 (see msf/dit.py):

- Stage 1 (depth 18, width 1152, 24x24 latent): 435.93M, matching the paper's 435.9M. A block has 18 D^2 + 15 D
  parameters (attention 4 D^2, MLP 8 D^2, adaLN modulation 6 D^2) = 23.9M at D = 1152, not the 12 D^2 = 15.9M of
  attention and MLP alone.
- Stage 2 (depth 10, width 1280, 32x32 latent, 4-channel concatenated prior): 302.0M, NOT the paper's 331.2M. The
  29.2M gap is one width-1280 block (29.5M): depth 11 would give 331.5M (331.2M without the 0.33M frozen
  ``pos_embed``). We keep the stated depth 10 and report the difference rather than guess the paper's exact model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode, flop_registry, register_flop_formula, sdpa_flop_count

from msf.dit import build_dit

# (row label, DIT_CONFIGS name, constructor overrides, sampling steps, forward passes per step)
MODELS: list[tuple[str, str, dict[str, Any], int, int]] = [
    ("DiT-XL/2 (256 px)", "DiT-XL/2", dict(input_size=32, learn_sigma=True), 250, 2),
    ("MSF stage 1 (192 px)", "MSF-stage1", dict(input_size=24, learn_sigma=False), 100, 2),
    ("MSF stage 2 (256 px)", "MSF-stage2", dict(input_size=32, learn_sigma=False, prior_channels=4), 50, 1),
]


_SDPA_CPU = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
if _SDPA_CPU not in flop_registry:  # torch counts the CUDA SDPA kernels but not the CPU one: same formula

    @register_flop_formula(_SDPA_CPU, get_raw=True)
    def _sdpa_cpu_flops(query: Tensor, key: Tensor, value: Tensor, *args: Any, **kwargs: Any) -> int:
        """2 x MACs of q k^T and (softmax) v, as torch's formula for the CUDA kernels."""
        return sdpa_flop_count(query.shape, key.shape, value.shape)


def count_forward_flops(model: nn.Module, *inputs: Any) -> int:
    """FLOPs (2 x MACs of matmuls and convolutions) of one ``model(*inputs)`` call."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(*inputs)
    return counter.get_total_flops()


def count_params(model: nn.Module) -> int:
    """Number of parameters, frozen ones included."""
    return sum(p.numel() for p in model.parameters())


def meta_inputs(model: nn.Module, batch: int = 1) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Shape-only (x, t, y, prior) for a stage network (DiT, DiMR: ``input_size``, ``in_channels``,
    ``prior_channels``) on the meta device."""
    h, c, cp = (int(getattr(model, name)) for name in ("input_size", "in_channels", "prior_channels"))
    with torch.device("meta"):
        x, t, y = torch.empty(batch, c, h, h), torch.empty(batch), torch.zeros(batch, dtype=torch.long)
        prior = torch.empty(batch, cp, h, h) if cp else None
    return x, t, y, prior


def flops_table() -> list[dict[str, Any]]:
    """Per-model params, GFLOPs per forward (batch 1), steps, passes and TFLOPs per image; MSF summed (Table 1)."""
    rows: list[dict[str, Any]] = []
    for label, name, overrides, steps, passes in MODELS:
        with torch.device("meta"):
            model = build_dit(name, **overrides).eval()
        flops = count_forward_flops(model, *meta_inputs(model))
        row = dict(model=label, params_M=count_params(model) / 1e6, gflops_per_forward=flops / 1e9)
        rows.append(row | dict(steps=steps, passes_per_step=passes, tflops_per_image=flops * steps * passes / 1e12))
    msf = [r for r in rows if r["model"].startswith("MSF")]
    total = dict(model="MSF total", params_M=sum(r["params_M"] for r in msf), gflops_per_forward=None)
    rows.append(
        total | dict(steps=None, passes_per_step=None, tflops_per_image=sum(r["tflops_per_image"] for r in msf))
    )
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table as markdown."""
    head = "| model | params (M) | GFLOPs / forward | steps | forwards / step | TFLOPs / image |"
    lines = [head, "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        g = "" if r["gflops_per_forward"] is None else f"{r['gflops_per_forward']:.1f}"
        cells = [r["model"], f"{r['params_M']:.1f}", g, str(r["steps"] or ""), str(r["passes_per_step"] or "")]
        lines.append("| " + " | ".join(cells) + f" | {r['tflops_per_image']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(flops_table()))
