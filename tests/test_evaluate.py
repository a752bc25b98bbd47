"""Evaluation: per-sample seeds and GFLOPs bookkeeping, the compile switch, the CUDA-graph wrapper (a real signal,
trained against untrained and real images on every kernel path, is tests/test_reproduction.py)."""


import pytest
import torch

from ablations.engine.evaluate import ClonedOutputs, compiled, sample_seeds, sampling_gflops
from msf.dit import DiT
from msf.factorize import make_factorization, make_scales
from msf.pipeline import MSFModel, sample


def test_per_sample_seeds_and_gflops_bookkeeping():
    assert sample_seeds(2, 3) == [2_000_000, 2_000_001, 2_000_002]
    # CFG doubles the forward passes, w = 1 does not; Heun doubles every step (Table 1: 100 x 2 + 50 x 1)
    assert sampling_gflops([10.0, 20.0], [100, 50], [1.4, 1.0], "euler") == 10 * 100 * 2 + 20 * 50
    assert sampling_gflops([10.0], [10], [1.0], "heun") == 200
    assert torch.tensor(sample_seeds(0, 5)).unique().numel() == 5


def test_compile_modes_are_checked_and_none_is_the_eager_network():
    net = torch.nn.Linear(2, 2)
    assert compiled(net, "none", torch.device("cpu")) is net
    with pytest.raises(ValueError, match="unknown compile mode 'fast'"):
        compiled(net, "fast", torch.device("cpu"))
    with pytest.raises(ValueError, match="reduce-overhead .CUDA graphs. needs a CUDA device"):
        compiled(net, "reduce-overhead", torch.device("cpu"))


def test_cloned_outputs_do_not_alias_the_networks_buffers():
    """The CUDA-graph wrapper's contract, checked with a network that returns its own buffer (as a graph replay)."""

    class Replay(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("out", torch.zeros(2))

        def forward(self, x):
            return self.out.copy_(x)

    net = ClonedOutputs(Replay())
    first = net(torch.ones(2))
    second = net(torch.full((2,), 2.0))
    assert first.tolist() == [1.0, 1.0] and second.tolist() == [2.0, 2.0]  # without the clone first would read 2s


def test_compiled_msf_sampling_matches_eager():
    """The fast path (inductor-compiled stages, CFG batched in one 2B pass) against the plain eager float32 path."""
    factorization = make_factorization("residual", make_scales([2, 4], 4))
    stages = [
        DiT(input_size=h, patch_size=2, in_channels=4, hidden_size=32, depth=1, num_heads=2, num_classes=3,
            prior_channels=4 * (i > 0), learn_sigma=False, generator=torch.Generator().manual_seed(i)).eval()
        for i, h in enumerate([2, 4])
    ]
    for st in stages:  # adaLN-Zero starts at a zero velocity: random output layers make the test meaningful
        for p in st.parameters():
            torch.nn.init.normal_(p, std=0.05, generator=torch.Generator().manual_seed(p.numel()))
    y, seeds = torch.tensor([0, 1, 2, 0]), [0, 1, 2, 3]
    eager = sample(MSFModel(stages, factorization, 4, 3), y, seeds, [4, 3], [1.5, 1.0])
    fast = MSFModel([compiled(st, "default", torch.device("cpu")) for st in stages], factorization, 4, 3)
    # inductor fuses and reorders float32 elementwise work: rounding only, 7 network calls deep
    torch.testing.assert_close(sample(fast, y, seeds, [4, 3], [1.5, 1.0]), eager, rtol=1e-4, atol=1e-5)
    assert eager.abs().mean() > 0.1  # a real output, not zeros
