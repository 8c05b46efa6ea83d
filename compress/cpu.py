"""What this CPU can do: flags, physical cores, int8 dot-product instructions.

Read once per process from ``/proc/cpuinfo`` (Linux); elsewhere the flags are empty and the
callers fall back to the portable choice.
"""

from __future__ import annotations

import functools
import os
import platform
from collections.abc import MutableMapping

X86 = ("x86_64", "amd64", "i386", "i686")
# x86 int8 dot-product instructions: VPDPBUSD (AVX512-VNNI, AVX-VNNI) and AMX tiles
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
# What the OpenMP runtime does with an idle worker between parallel regions (see sleeping_openmp_workers).
OPENMP_WAIT_POLICY = "PASSIVE"


def sleeping_openmp_workers(env: MutableMapping[str, str]) -> bool:
    """Make OpenMP's idle workers sleep in a process started with ``env`` (or in this one, given ``os.environ``
    before PyTorch is imported), unless ``env`` already chose (``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``).

    GNU OpenMP (PyTorch's intra-op threads) makes an idle worker spin for ~300k pause instructions, tens
    of ms, waiting for the next parallel region. When anything else needs the core meanwhile (another
    job, or the clients, front and Triton of a served model between two batches) the spinning takes it:
    a TextCNN with 2 threads predicted batches of 8 at 33-43 texts/s spinning and 830-1050 sleeping on
    the shared 2-core VM (one other job running). On an idle machine a sleeping worker costs a wake-up
    per parallel region. ONNX Runtime's own pool sleeps too (:func:`export.ort.ort_session`).

    Returns:
        Whether it set the policy (False: ``env`` had chosen one).
    """
    if "OMP_WAIT_POLICY" in env or "GOMP_SPINCOUNT" in env:
        return False
    env["OMP_WAIT_POLICY"] = OPENMP_WAIT_POLICY
    return True


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
    return bool(cpu_flags() & VNNI_FLAGS)


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
