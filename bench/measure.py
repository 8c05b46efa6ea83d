"""The measuring kit every benchmark uses: warm up, then time calls; percentiles; the machine; a busy-machine check.

* :func:`time_calls` warms up (untimed calls), then times calls one by one with
  :func:`time.perf_counter` and returns a :class:`Timing` (per-call seconds, examples, totals).
  One call is one batch: ``fn(batches[i])``. A time limit stops it early once ``min_iters`` calls
  are done, so a slow runtime cannot stall a run; the calls it really made are what it reports.
* :func:`percentiles_ms`: p50 / p90 / p99 (linear interpolation, as :func:`numpy.percentile`) and
  the mean of per-call seconds, in milliseconds.
* :func:`environment` and :func:`cpu_capabilities`: the CPU (model, SIMD flags, physical cores,
  from :mod:`compress.cpu`), threads and library versions that shape the numbers.
* :class:`CpuWatch` and :func:`machine_notes`: how much CPU *other* processes used during the
  run (from ``/proc/stat`` minus this process tree's own CPU time), and a note when that makes
  the numbers pessimistic.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from compress.cpu import cpu_flags, cpu_has_vnni, cpu_model, physical_cores

MIN_ITERS = 3
PROC_STAT = "/proc/stat"
ENVIRONMENT_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})

# ----------------------------------------------------------------------------------------------
# Timing


def percentiles_ms(seconds: Sequence[float] | np.ndarray, qs: Sequence[float] = (50, 90, 99)
                   ) -> dict[str, float | None]:
    """``{"p50_ms": ..., "p90_ms": ..., "p99_ms": ..., "mean_ms": ...}`` of per-call ``seconds`` (calls,).

    Linear interpolation between the closest ranks (:func:`numpy.percentile`'s default); every
    value is None when there are no calls.
    """
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    keys = [f"p{q:g}_ms" for q in qs]
    if ms.size == 0:
        return {**dict.fromkeys(keys), "mean_ms": None}
    values = np.percentile(ms, list(qs))
    return {**{k: float(v) for k, v in zip(keys, values, strict=True)}, "mean_ms": float(ms.mean())}


@dataclass
class Timing:
    """The timed calls of one measurement.

    Attributes:
        seconds: (calls,) wall seconds of each timed call.
        examples: inputs over all timed calls (the sum of ``len(batch)``).
    """

    seconds: np.ndarray
    examples: int

    @property
    def calls(self) -> int:
        return int(self.seconds.size)

    @property
    def total_s(self) -> float:
        """Seconds spent inside the timed calls."""
        return float(self.seconds.sum())

    @property
    def examples_per_s(self) -> float:
        """Examples / seconds inside the calls (inf when the calls took no measurable time)."""
        total = self.total_s
        return self.examples / total if total > 0 else float("inf")

    def summary(self) -> dict[str, float | int | None]:
        """``iters``, p50/p90/p99/mean in ms and ``throughput`` in examples/s."""
        return {"iters": self.calls, **percentiles_ms(self.seconds), "throughput": self.examples_per_s}


def warm_up(fn: Callable[[Any], Any], batches: Sequence[Any], calls: int, max_seconds: float = math.inf) -> None:
    """``calls`` untimed calls of ``fn`` on ``batches`` (cycled), stopped early after ``max_seconds``."""
    if not batches:
        return
    start = time.perf_counter()
    for i in range(calls):
        fn(batches[i % len(batches)])
        if time.perf_counter() - start > max_seconds:
            break


def time_calls(fn: Callable[[Any], Any], batches: Sequence[Any], warmup: int, iters: int,
               max_seconds: float = math.inf, min_iters: int = MIN_ITERS, start: int = 0) -> Timing:
    """Warm up, then time ``fn`` on ``batches`` (cycled) call by call.

    Args:
        fn: one call = one batch (e.g. ``predictor.predict`` on a list of texts).
        batches: inputs, each with a length (the examples it holds).
        warmup: untimed calls first, on ``batches[0], batches[1], ...`` (stopped after ``max_seconds / 2``).
        iters: timed calls, at most.
        max_seconds: stop timing after this long once ``min_iters`` calls are done.
        min_iters: calls made whatever the time limit.
        start: the first timed call takes ``batches[start]`` (e.g. ``warmup``, so timed calls see other inputs).
    """
    warm_up(fn, batches, warmup, max_seconds / 2)
    seconds: list[float] = []
    examples = 0
    begin = time.perf_counter()
    for i in range(iters if batches else 0):
        batch = batches[(start + i) % len(batches)]
        t0 = time.perf_counter()
        fn(batch)
        seconds.append(time.perf_counter() - t0)
        examples += len(batch)
        if len(seconds) >= min_iters and time.perf_counter() - begin > max_seconds:
            break
    return Timing(np.asarray(seconds, dtype=np.float64), examples)


# ----------------------------------------------------------------------------------------------
# The machine


def load_average() -> float | None:
    """The 1-minute load average (2 decimals), None where the platform has none."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def cpu_capabilities() -> dict[str, Any]:
    """The CPU model, its physical cores and the instruction sets int8 / bf16 speed depends on."""
    flags = cpu_flags()
    return {"cpu": cpu_model(), "physical_cores": physical_cores(), "vnni": cpu_has_vnni(),
            "avx512": any(f.startswith("avx512") for f in flags), "amx": any(f.startswith("amx") for f in flags),
            "avx2": "avx2" in flags}


def environment() -> dict[str, Any]:
    """Hardware and library facts that shape the numbers (CPU model and SIMD flags, threads, versions)."""
    flags = cpu_flags()
    env: dict[str, Any] = {"machine": platform.machine(), "logical_cpus": os.cpu_count(),
                           "python": platform.python_version(), "cpu": cpu_model(),
                           "cpu_flags": {f: f in flags for f in ENVIRONMENT_FLAGS},
                           "bf16_hardware": bool(flags & BF16_FLAGS)}
    load = load_average()
    if load is not None:
        env["load_average_1m"] = load
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
        env["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    try:
        import onnxruntime

        env["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return env


# ----------------------------------------------------------------------------------------------
# Was the machine busy?


def _cpu_seconds() -> float | None:
    """Busy CPU seconds of the whole machine so far (steal included), from /proc/stat; None where absent."""
    try:
        with open(PROC_STAT, encoding="ascii") as f:
            fields = [float(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0.0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    """CPU seconds used by this process and its reaped children (a served tritonserver, for one)."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class CpuWatch:
    """How much CPU *other* processes used while a benchmark ran.

    The 1-minute load average counts the benchmark's own threads (and the command that ran just
    before it), so it flags a quiet machine as busy; machine-wide busy time from /proc/stat minus
    this process tree's own CPU time does not.
    """

    def __init__(self) -> None:
        self._wall = time.perf_counter()
        self._machine = _cpu_seconds()
        self._own = _own_cpu_seconds()
        self._load_start = load_average()

    def stop(self) -> dict[str, float]:
        """``{"other_cpus": average logical CPUs busy with other work}`` ({} without /proc/stat)."""
        machine = _cpu_seconds()
        wall = time.perf_counter() - self._wall
        if machine is None or self._machine is None or wall <= 0:
            return {}
        other = (machine - self._machine) - (_own_cpu_seconds() - self._own)
        return {"other_cpus": round(max(other, 0.0) / wall, 2)}

    def environment(self) -> dict[str, Any]:
        """:func:`environment` at the end of the run, plus the load average at its start and ``other_cpus``."""
        env = environment()
        env["load_average_1m_start"] = self._load_start
        env.update(self.stop())
        return env


def machine_notes(env: dict[str, Any]) -> list[str]:
    """A warning when other work kept the CPUs busy during the run (numbers are then pessimistic)."""
    cpus = env.get("logical_cpus") or 1
    other = env.get("other_cpus")
    if other is not None:
        if other > 0.25 * cpus:
            return [f"the machine was busy with other work (other processes used {other:.2f} of {cpus} logical CPUs "
                    f"on average during the run), so these latencies are pessimistic and noisy; multi-threaded "
                    f"PyTorch suffers most (threads wait for cores), which --threads 1 avoids."]
        return []
    loads = [v for v in (env.get("load_average_1m_start"), env.get("load_average_1m")) if v is not None]
    if loads and max(loads) > 0.75 * cpus:
        return [f"the machine was busy with other work (1-minute load average up to {max(loads):.1f} on {cpus} "
                f"logical CPUs), so these latencies are pessimistic and noisy; multi-threaded PyTorch suffers most "
                f"(threads wait for cores), which --threads 1 avoids."]
    return []
