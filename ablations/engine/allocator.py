"""How a job's process hands out memory: on glibc, freed blocks are kept for the next tensor instead of going back to
the kernel.

By default glibc serves a block above its mmap threshold (128 KiB at first, raised as large blocks are freed) from a
fresh mapping that it unmaps on free, and gives the heap's top back to the kernel once more than its trim threshold is
free there. A sampling or training step allocates and frees tensors of the same few sizes, megabytes each, hundreds of
times: each time the kernel maps them again and zeroes them page by page. Sampling the 250 images of a tiny-preset
sample job (batch 250) took 45 s, 8 of them in the kernel that way; with the two thresholds below, 1.3 s. Float
results do not change: torch aligns every tensor itself, whichever allocator serves it.
"""

from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (glibc's malloc.h)
MMAP_THRESHOLD = 32 * 2**20  # blocks up to 32 MiB come from the heap: glibc's largest threshold on 64-bit systems
TRIM_THRESHOLD = 2**30  # the heap is given back to the kernel only above 1 GiB free


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds in this process (and the processes it forks later); False where the C
    library has no ``mallopt`` (not glibc) or refuses a value."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
