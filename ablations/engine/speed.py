"""Measured speed (Table 1 'Time', Sec. 4.2): wall-clock timing, the device's dense matmul rate, and model FLOP
utilisation.

Utilisation follows the MFU convention: counted model FLOPs (matmuls and convolutions, :mod:`msf.flops`) per second
of sampling, divided by the rate the same device reaches on one large dense matmul in the same dtype, measured here
rather than taken from a data sheet.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def device_description(device: torch.device) -> str:
    """A readable device name recorded beside every timing."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def median_seconds(fn: Callable[[], Any], device: torch.device, repeats: int = 3, warmup: int = 1) -> float:
    """Median wall time of ``fn`` over ``repeats`` after ``warmup`` calls, CUDA synchronised around each."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int | None = None, repeats: int = 5) -> float:
    """The device's measured dense matmul rate in TFLOP/s: 2 n^3 FLOPs of an [n, n] @ [n, n] product over its
    median time (n = 8192 on CUDA, 1024 on CPU), the denominator of :func:`utilisation`."""
    n = n or (8192 if device.type == "cuda" else 1024)
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    with torch.no_grad():
        seconds = median_seconds(lambda: a @ b, device, repeats=repeats, warmup=2)
    return 2 * n**3 / seconds / 1e12


def utilisation(tflops_per_image: float, sec_per_image: float, peak_tflops: float) -> float:
    """Model FLOP utilisation: achieved TFLOP/s (counted FLOPs per image / seconds per image) over the matmul rate."""
    if sec_per_image <= 0 or peak_tflops <= 0:
        raise ValueError(f"need positive time and rate, got {sec_per_image} s/img and {peak_tflops} TFLOP/s")
    return tflops_per_image / sec_per_image / peak_tflops
