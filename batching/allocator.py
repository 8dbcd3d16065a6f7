"""Let a solving process reuse the memory it frees, instead of faulting it in again.

A timeout's wait tables (`batching.spectral`) make a few megabytes of numpy
temporaries, arrays of 100 KB to 3 MB. glibc serves blocks above its mmap threshold
(128 KB at start) with fresh pages from the kernel and unmaps them on free, so every
solve pays the page faults anew: 30 to 40% of an online re-tune's time on this
machine (`python bench/tuning_report.py --only tuner`, with and without). A process
that solves (the gateway's solver process, `sluice tune`) raises the thresholds once,
so freed blocks stay in the heap for the next solve. Elsewhere (not glibc) it does
nothing.
"""

from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
KEPT_BYTES = 32 << 20  # glibc's largest mmap threshold on 64-bit


def retain_freed_memory(kept_bytes: int = KEPT_BYTES) -> bool:
    """Blocks up to `kept_bytes` come from the heap, and up to 4x that stays mapped
    when freed. True where the C library took it (glibc), False elsewhere."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, kept_bytes)) and bool(mallopt(M_TRIM_THRESHOLD, 4 * kept_bytes))
