"""Keep freed host memory inside the process, so XLA:CPU stops page-faulting its buffers on every step.

XLA:CPU mallocs each execution's temporaries as one block, from a worker thread, and each output as a
block of its own. bench/train_step.py's d256 step needs a 563 MB block. glibc serves a thread's large
request with mmap and unmaps it on free, so every step touches fresh pages: 137,000 page faults and
about 0.3 s of kernel time per 0.9 s step on a 2-core Xeon. With one malloc arena, no mmap and no
trimming, the freed block stays in the heap and the next step reuses it. That step's MFU went from
51-56% to 61-62%, and the starter's step at its default size from 11.2-11.3k to 13.9-14.6k tokens/s,
with identical losses (bench/README.md).

The price: the process never hands freed memory back, so its resident size stays at its peak (PyTorch's
caching allocator makes the same trade). GRUG_KEEP_HOST_MEMORY=0 leaves malloc as it is.
"""

from __future__ import annotations

import ctypes
import os
import sys

# mallopt's parameter numbers, from glibc's <malloc.h>.
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
# glibc keeps the threshold as a size_t, so -1 is its largest value; 2**31 - 1 would still trim whenever
# 2 GiB lay free at the top of the heap, and a larger step would fault again.
NEVER_TRIM = -1
OPT_OUT = "GRUG_KEEP_HOST_MEMORY"


def keep_freed_host_memory() -> bool:
    """Tell glibc's malloc to reuse freed memory rather than return it to the kernel; True when mallopt
    accepted every setting (False off Linux, under another C library, or when GRUG_KEEP_HOST_MEMORY=0).

    It must run before JAX's first computation: by then XLA's threads have arenas of their own, which
    keep mmapping. Importing grug_core calls it, so a script that imports grug_core before it computes
    anything is covered, whether or not it imported jax first."""
    if os.environ.get(OPT_OUT, "1") == "0" or not sys.platform.startswith("linux"):
        return False
    # CDLL(None) is the running program with the libraries it links, glibc among them; unlike
    # ctypes.util.find_library it starts no subprocess.
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    # Arenas first: with one arena every thread allocates from the main heap, where the other two apply.
    settings = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, NEVER_TRIM))
    return all(mallopt(parameter, value) == 1 for parameter, value in settings)
