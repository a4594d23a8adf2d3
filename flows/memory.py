"""Give freed heap memory back to the operating system between batches.

glibc's malloc keeps the pages of freed buffers (COPY streams, CSV text) in per-thread arenas;
over many batches they fragment and the process's RSS creeps up with the number of batches,
not with the batch size. ``malloc_trim(0)`` after each batch keeps the RSS bounded by the batch.
Elsewhere (macOS, musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Callable
from functools import cache


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def release_freed_memory() -> bool:
    """Return freed heap pages to the OS (glibc ``malloc_trim``); whether it could."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
