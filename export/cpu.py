"""What this CPU can do: flags, physical cores, int8 dot-product instructions.

Read once per process from ``/proc/cpuinfo`` (Linux); elsewhere the flags are empty and the
callers fall back to the portable choice.
"""

from __future__ import annotations

import functools
import os
import platform

X86 = ("x86_64", "amd64", "i386", "i686")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The ``flags`` of the first processor in ``/proc/cpuinfo``; empty when unreadable (not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return frozenset(next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), []))
    except OSError:  # pragma: no cover - not Linux
        return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()`` or the machine type."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover - not Linux
        pass
    return platform.processor() or platform.machine()


def is_x86() -> bool:
    return platform.machine().lower() in X86


def cpu_has_vnni() -> bool:
    """True when this CPU has an int8 dot-product instruction (AVX512-VNNI, AVX-VNNI, AMX) or is not x86."""
    if not is_x86():
        return True  # ARM & co. have their own int8 dot products; the u8s8 saturation is an x86 matter
    return bool(cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})


def physical_cores() -> int:
    """Physical cores this process may use (SMT siblings do not speed up GEMMs)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 1
    try:
        import psutil

        physical = psutil.cpu_count(logical=False) or usable
    except ImportError:  # pragma: no cover - psutil comes with accelerate
        physical = usable
    return max(1, min(usable, physical))
