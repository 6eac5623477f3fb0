"""Keep freed heap memory in the process (glibc ``mallopt``) so that each training step's large tensors reuse pages
instead of faulting fresh, zeroed ones in from the kernel."""

from __future__ import annotations

import ctypes
import logging
import sys

__all__ = ["MMAP_THRESHOLD_BYTES", "retain_freed_memory"]

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
"""Allocations below this come from the heap, not a fresh ``mmap``: glibc's maximum (32 MiB on 64-bit), above a
(16, 4, 32³) float32 map (8 MiB). glibc's default starts at 128 KiB and returns freed heap tops above 128 KiB, so
every step of Model-1 took 8-14 thousand minor page faults (~20 ms of system time per step of ~330 ms here)."""

_TRIM_THRESHOLD_BYTES = 1024**3  # return heap tops to the system only above 1 GiB free


def retain_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (once per process; later calls do nothing new).

    Peak memory is unchanged; freed memory stays with the process until it exits. Returns ``True`` when glibc took
    both settings, ``False`` elsewhere (macOS, Windows, musl), where nothing changes.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES)
    )
    logger.debug("glibc mallopt thresholds %s", "set" if done else "not set")
    return done
