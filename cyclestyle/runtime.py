"""Process-level tuning shared by the long-running commands."""

from __future__ import annotations

import ctypes
import sys


def retain_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse instead of returning it to the OS (Linux).

    By default glibc maps big blocks in and out per allocation, so every forward pass faults
    its activations in again: a third of the time at 1024x1024 on CPU, half that at 256x256
    (system time; scripts/bench_translate.py). With both thresholds at 1 GiB the blocks stay in
    the heap. The cost: RSS stays near its peak until the process exits, which suits a command
    that translates and exits. Returns whether glibc accepted the settings.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the process runs on
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return all([mallopt(m_trim_threshold, 1 << 30), mallopt(m_mmap_threshold, 1 << 30)])
