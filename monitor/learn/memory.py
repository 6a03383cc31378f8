"""Give the memory a training run freed back to the system.

A retrain allocates a few hundred megabytes of tensors (the model, its serving copy, the teacher's
logits, activations) and frees them when it ends. glibc's allocator keeps much of it: after a large
block is freed it raises its mmap threshold, so the next run's blocks come from the heap, where
freed pages stay resident. Measured on a learning replay (bench/README.md, "Memory of the learning
loop"): resident memory grew by about 0.9 GB a run, 1.3 GB -> 6.8 GB after six refused runs. One
``malloc_trim(0)`` after each run returns the freed pages, so a daemon that retrains every day does
not grow until it is killed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable

__all__ = ["release_freed_memory"]


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


_TRIM = _malloc_trim()


def release_freed_memory() -> bool:
    """Collect cycles, then hand the allocator's free pages back to the system; False where it cannot."""
    gc.collect()
    return _TRIM is not None and bool(_TRIM(0))
