"""CPU training keeps the memory it frees (glibc's malloc), instead of handing each step's activations back
to the operating system and faulting them in again at the next step.

Why: glibc serves a block of more than its mmap threshold (128 KiB, raised dynamically up to 32 MiB)
with a fresh ``mmap`` and unmaps it when freed, and it trims the top of the heap once more than the
trim threshold is free. A training step frees nearly everything it allocated (activations, their
gradients, attention scores of tens of MiB), so every step asked the kernel for the same memory again
and touched it page by page: on 30 steps of a MiniLM IMDB job, 9.6% of the training loop
(BENCHMARKS.md section 4.0: 35.6 s against 32.1 s, same losses to the bit). With
``M_MMAP_MAX = 0`` every block comes from the heap, and with ``M_TRIM_THRESHOLD = -1`` the heap is
never trimmed, so the next step reuses the pages it already has; the peak resident memory is the same
(3.1 GB both ways in that run), but it is held until the block ends.

How: ``mallopt`` through ``ctypes`` for the duration of the block (training and evaluation); on exit
glibc's default limits are set again and ``malloc_trim(0)`` returns the free memory, so a process
that goes on after ``train`` (a sweep, a notebook) gets it back. (Once a limit has been set by hand
glibc no longer raises its mmap threshold by itself; the threshold stays where it was.) Nothing happens where the C library
is not glibc (macOS, musl), on CUDA (activations live on the GPU) or with
``train.reuse_freed_memory=false``.
"""

from __future__ import annotations

import ctypes
import logging
import platform
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
KEEP = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: -1}
"""No mmap-served blocks; never trim the heap (mallopt(3): -1 disables trimming)."""
GLIBC_DEFAULTS = {M_MMAP_MAX: 65536, M_TRIM_THRESHOLD: 128 * 1024}
"""glibc's documented defaults (mallopt(3)), set again on exit."""


def glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (it has ``mallopt`` and ``malloc_trim``), else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    libc = ctypes.CDLL(None)
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


@contextmanager
def freed_memory_kept(enabled: bool, device_type: str, libc: ctypes.CDLL | None = None) -> Iterator[bool]:
    """Keep freed memory in the process inside the block (see the module docstring); yields whether it does."""
    libc = (libc or glibc()) if enabled and device_type == "cpu" else None
    if libc is None:
        yield False
        return
    _set(libc, KEEP)
    try:
        yield True
    finally:
        _set(libc, GLIBC_DEFAULTS)
        libc.malloc_trim(0)


def _set(libc: ctypes.CDLL, options: dict[int, int]) -> None:
    for option, value in options.items():
        if libc.mallopt(ctypes.c_int(option), ctypes.c_int(value)) != 1:
            log.debug("mallopt(%d, %d) was refused", option, value)
