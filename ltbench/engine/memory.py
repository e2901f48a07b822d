"""The C allocator's habit of returning freed memory to the system, undone for training processes.

glibc's malloc hands a freed block of more than its (adaptive) mmap threshold back with munmap and trims the
heap top above M_TRIM_THRESHOLD, so a CPU training step that frees its activations (tens of MB at batch 128)
faults the same pages in again on the next step: 10.5 million minor page faults in two CIFAR-10-LT epochs,
10 % of the run's time in the kernel (#29). Keeping freed memory in the process (the same memory every step)
removes that; it changes no number. ``LTBENCH_KEEP_FREED_MEMORY=0`` turns it off.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from functools import lru_cache

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc malloc.h
MMAP_THRESHOLD_MAX = 32 << 20  # glibc refuses more (HEAP_MAX_SIZE / 2 on 64-bit); larger blocks still mmap
ENV = "LTBENCH_KEEP_FREED_MEMORY"


@lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Once per process, on Linux with glibc: never trim the heap, serve blocks up to 32 MB from it. Returns
    whether the allocator took the settings (False elsewhere, or when switched off)."""
    if not sys.platform.startswith("linux") or os.environ.get(ENV, "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
