"""What every long-running command shares about its process: tuning, devices, the precision
vocabulary, and graceful stops.

Precision is one word in every command and config key: `fp32 | bf16 | fp16 | auto`. `auto`
picks bf16 only where it is fast (a CUDA device with bf16, a CPU with AVX512-BF16 or AMX),
fp16 on CUDA devices without bf16, and fp32 otherwise: on an AVX2-only CPU bf16 autocast is
emulated and measured 15-60x slower than fp32 here. No torch at import time.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import warnings
from typing import Any

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# torch.backends.cpu.get_cpu_capability() names the kernels torch dispatches to ("AVX2",
# "AVX512", "DEFAULT", ...). bf16 runs natively only where those kernels are AVX512 (or AMX)
# *and* the CPU has the BF16 instructions; "AVX512" alone does not say so, hence the flags.
_BF16_KERNELS = ("AVX512", "AMX")
_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}
ACCELERATE_NAMES = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_native_bf16(capability: str | None = None, flags: set[str] | None = None) -> bool:
    """Whether torch's CPU kernels compute bf16 in hardware here (AVX512-BF16 or AMX)."""
    if capability is None:
        import torch

        capability = torch.backends.cpu.get_cpu_capability()
    if not capability.upper().startswith(_BF16_KERNELS):
        return False  # AVX2, NO AVX, DEFAULT, VSX, ZVECTOR, SVE...: bf16 is emulated
    flags = _cpu_flags() if flags is None else flags
    return bool(flags & _BF16_FLAGS)


def choose_precision(requested: str, device_type: str, *, cuda_bf16: bool = False,
                     cpu_capability: str | None = None,
                     cpu_flags: set[str] | None = None) -> tuple[str, str]:
    """(precision, reason) for `requested` on `device_type` ("cpu", "cuda", "mps", ...).

    An explicit choice is kept (fp16 on CPU is refused by the caller's device); `auto` follows
    the hardware. The reason is meant for logs and results, e.g. "cpu AVX2: no native bf16".
    """
    if requested not in PRECISIONS:
        from cyclestyle.options import invalid

        raise invalid("precision", requested, "not a known precision", " / ".join(PRECISIONS))
    if device_type == "cpu":
        if cpu_capability is None:
            import torch

            cpu_capability = torch.backends.cpu.get_cpu_capability()
        native = cpu_has_native_bf16(cpu_capability, cpu_flags)
        where = f"cpu {cpu_capability}" + (" with native bf16" if native else ": no native bf16")
        if requested == "auto":
            return ("bf16", where) if native else ("fp32", where)
        if requested == "bf16" and not native:
            warnings.warn(f"precision bf16 on a CPU without native bf16 ({cpu_capability}): "
                          "autocast is emulated and many times slower than fp32; use "
                          "precision auto or fp32", stacklevel=2)
        return requested, f"{where}; asked for {requested}"
    if device_type == "cuda":
        where = "cuda with bf16" if cuda_bf16 else "cuda without bf16"
        if requested == "auto":
            return ("bf16", where) if cuda_bf16 else ("fp16", where + ": fp16 with a grad scaler")
        return requested, f"{where}; asked for {requested}"
    return ("fp32" if requested == "auto" else requested), f"{device_type}"


def resolve_precision(requested: str, device: Any) -> tuple[str, str]:
    """`choose_precision` for a torch device, asking the device what it supports."""
    import torch

    device = torch.device(device)
    cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return choose_precision(requested, device.type, cuda_bf16=cuda_bf16)


def describe_precision(precision: str, reason: str) -> str:
    """`fp32 (cpu AVX2: no native bf16)`: the form stored in config.yaml and results."""
    return f"{precision} ({reason})"


def available_cores() -> int:
    """CPU cores this process may use: its affinity mask, capped by a cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def limit_threads(requested: int | None = None) -> int:
    """Never more torch compute threads than cores available to the process; returns the count."""
    import torch

    cores = available_cores()
    threads = min(requested or torch.get_num_threads(), cores)
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return threads


LOG_BAR_SECONDS = 30.0  # a progress bar written to a file or pipe redraws this often


def bar_interval(stream: Any = None) -> float:
    """Seconds between progress-bar redraws on `stream` (default stderr): tqdm's 0.1 on a
    terminal; LOG_BAR_SECONDS in a log file or CI pipe, where every redraw is kept and a run's
    bar would otherwise fill it with thousands of copies."""
    stream = sys.stderr if stream is None else stream
    try:
        interactive = stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        interactive = False
    return 0.1 if interactive else LOG_BAR_SECONDS


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


class StopRequested:
    """Turns SIGTERM/SIGINT into a flag that a long job checks between units of work.

    `finishing` says what the job does before it exits, for the warning the signal prints."""

    def __init__(self, finishing: str = "finishing this step and writing a checkpoint") -> None:
        self.finishing = finishing
        self.signal: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequested:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread: leave handlers alone
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None:  # second signal: stop the hard way
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name
        log.warning("%s received: %s", self.signal, self.finishing)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
