"""FLOP counts (ablations/engine/flops.py): DiT-XL/2's published size, closed-form per-block FLOPs, per-image table."""

from __future__ import annotations

import pytest
import torch

from ablations.engine.flops import count_forward_flops, count_params, flops_table, markdown, meta_inputs
from msf.dit import DiT, build_dit


def meta_flops(batch: int = 1, **kw) -> int:
    """FLOPs of one forward of a shape-only DiT with 10 classes and the given sizes."""
    with torch.device("meta"):
        model = DiT(num_classes=10, **kw).eval()
    return count_forward_flops(model, *meta_inputs(model, batch))


def test_dit_xl2_matches_the_dit_paper():
    with torch.device("meta"):
        model = build_dit("DiT-XL/2").eval()
    # DiT paper Table 4: 675M parameters and 118.6 G(multiply-accumulates); the counter reports 2 x MACs.
    assert count_params(model) == pytest.approx(675e6, rel=0.01)
    assert count_forward_flops(model, *meta_inputs(model)) == pytest.approx(2 * 118.6e9, rel=0.005)


@pytest.mark.parametrize("input_size, D, heads", [(8, 64, 4), (16, 64, 4), (16, 96, 6)])
def test_flops_per_block_closed_form(input_size, D, heads):
    """Adding blocks adds exactly 24 T D^2 (qkv, proj, MLP) + 4 T^2 D (attention) + 12 D^2 (adaLN) FLOPs each."""
    T = (input_size // 2) ** 2
    per_block = 24 * T * D**2 + 4 * T**2 * D + 12 * D**2
    f = {d: meta_flops(input_size=input_size, hidden_size=D, num_heads=heads, depth=d) for d in (1, 2, 4)}
    assert f[2] - f[1] == per_block  # exact integers: linear in depth, quadratic in tokens
    assert f[4] - f[2] == 2 * per_block


def test_real_cpu_tensors_count_the_same_as_the_meta_device():
    """SDPA's fused CPU kernel is counted (torch alone would drop attention's 4 T^2 D per block on CPU)."""
    kw = dict(input_size=8, hidden_size=64, num_heads=4, depth=2, num_classes=10)
    model = DiT(**kw).eval()
    x, t, y = torch.zeros(1, 4, 8, 8), torch.zeros(1), torch.zeros(1, dtype=torch.long)
    assert count_forward_flops(model, x, t, y) == meta_flops(**{k: v for k, v in kw.items() if k != "num_classes"})


def test_flops_scale_with_batch():
    kw = dict(input_size=8, hidden_size=64, num_heads=4, depth=2)
    assert meta_flops(batch=3, **kw) == 3 * meta_flops(**kw)


def test_table_rows_and_totals():
    rows = {r["model"]: r for r in flops_table()}
    dit, s1, s2, msf = (rows[k] for k in rows)
    assert dit["tflops_per_image"] == pytest.approx(250 * 2 * dit["gflops_per_forward"] / 1e3, rel=1e-12)
    msf_gflops = 100 * 2 * s1["gflops_per_forward"] + 50 * 1 * s2["gflops_per_forward"]  # Sec. 4.2 steps and CFG
    assert msf["tflops_per_image"] == pytest.approx(msf_gflops / 1e3, rel=1e-12)
    assert s1["params_M"] == pytest.approx(435.9, abs=0.05)  # the paper's stage-1 count (Sec. 4.1)
    # Stage 2 at the stated depth 10: 302.0M; the paper's 331.2M is one more width-1280 block (engine/flops.py).
    assert s2["params_M"] == pytest.approx(302.0, abs=0.05)
    assert msf["params_M"] == pytest.approx(s1["params_M"] + s2["params_M"])
    assert markdown(list(rows.values())).count("\n") == len(rows) + 1
