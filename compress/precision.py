"""Mixed precision: autocast contexts, and what ``auto`` means on this machine for this model.

bf16 hardware is not enough: on a 2-core Sapphire Rapids MiniLM trained 22% slower under bf16
autocast than in fp32 (the casts cost more than AMX saves on small matmuls), while its inference ran
several times faster. So ``auto`` is decided per task (``training``: forward + backward + optimizer
step; ``inference``: a forward pass) by :func:`choose_precision`, first rule that applies:

1. an explicit precision is used as given (fp16 needs a GPU);
2. a GPU: bf16 where it supports it, else fp16 (not measured);
3. the environment forces it: ``MODCOMPRESS_AUTO_PRECISION`` (training) /
   ``MODCOMPRESS_AUTO_INFERENCE_PRECISION`` (inference) = ``no`` | ``fp32`` | ``bf16``. The test
   suite pins both, so it never measures and runs the same checks on any machine;
4. a CPU without bf16 hardware (AMX / AVX512-BF16): fp32, not measured (bf16 is emulated there and
   far slower);
5. a measurement (:class:`Probe`, :mod:`compress.precision_probe`): a few warm-up and timed steps of
   the model at hand on a real batch shape, fp32 and bf16 alternating. bf16 is kept only when it is
   at least :data:`BF16_MARGIN` faster (fp32 is exact). The medians are cached in
   ``precision.json`` under :func:`compress.cache.cache_root`, keyed by CPU model, torch version,
   threads, task, model signature and batch shape, so the next run with the same key does not
   measure.

Every choice comes with a one-line reason (logged, and recorded in the artifact / predictor).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch

from compress.cache import MeasurementCache, cache_key
from compress.cpu import cpu_model
from compress.errors import ConfigError, UserError, one_line

log = logging.getLogger(__name__)

TRAINING = "training"
INFERENCE = "inference"
AUTO_ENV = "MODCOMPRESS_AUTO_PRECISION"
AUTO_INFERENCE_ENV = "MODCOMPRESS_AUTO_INFERENCE_PRECISION"
AUTO_ENVS = {TRAINING: AUTO_ENV, INFERENCE: AUTO_INFERENCE_ENV}
BF16_MARGIN = 0.10  # bf16 must take <= 1 / 1.10 of fp32's time per step, or fp32 (exact) is kept
STEP_NAMES = {TRAINING: "training step", INFERENCE: "forward pass"}


def autocast(mixed_precision: str, device: torch.device | str = "cpu"):
    """An autocast context for ``bf16`` / ``fp16`` (no-op for ``no``)."""
    device_type = torch.device(device).type
    if mixed_precision == "bf16":
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
    if mixed_precision == "fp16":
        return torch.autocast(device_type=device_type, dtype=torch.float16)
    return contextlib.nullcontext()


def autocast_forward(forward: Callable, mixed_precision: str, device: torch.device | str = "cpu") -> Callable:
    """``forward`` run under :func:`autocast` (what Accelerate puts on a model's forward for training)."""

    @functools.wraps(forward)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with autocast(mixed_precision, device):
            return forward(*args, **kwargs)

    return wrapped


def fast_bf16() -> bool:
    """True where PyTorch's kernels have native bf16: a GPU, or a CPU with AMX / AVX512-BF16."""
    if torch.cuda.is_available():
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # noqa: BLE001 - private op may vanish
        return False


class Probe(Protocol):
    """What :func:`choose_precision` measures: one model on one batch shape for one task."""

    task: str  # TRAINING | INFERENCE

    def signature(self) -> dict[str, Any]:
        """The model and batch shape, as JSON-able fields (part of the cache key)."""
        ...

    def measure(self) -> tuple[float, float]:
        """(fp32 seconds, bf16 seconds) of one step, each the median of a few timed steps."""
        ...


@dataclass(frozen=True)
class PrecisionChoice:
    """What a requested precision resolved to, and why.

    Attributes:
        precision: ``no`` (fp32) | ``bf16`` | ``fp16``.
        requested: what was asked (``auto`` or an explicit precision).
        how: ``explicit`` | ``gpu`` | ``env`` | ``no-bf16-hardware`` | ``measured`` | ``cached`` |
            ``probe-failed`` | ``accuracy`` (bf16 was faster but moved the outputs too much).
        reason: one line, e.g. ``auto -> fp32: bf16 training step 1.27x slower here (measured bf16 31 vs fp32 25 ms)``.
        task: ``training`` | ``inference``.
        fp32_ms / bf16_ms: the measured medians per step (measured or cached choices only).
        key: the cache key fields (measured or cached choices only).
    """

    precision: str
    requested: str
    how: str
    reason: str
    task: str
    fp32_ms: float | None = None
    bf16_ms: float | None = None
    key: dict[str, Any] | None = None

    @property
    def bf16_speedup(self) -> float | None:
        """fp32 time / bf16 time (> 1: bf16 faster), when measured."""
        if self.fp32_ms is None or not self.bf16_ms:
            return None
        return self.fp32_ms / self.bf16_ms

    def record(self) -> dict[str, Any]:
        """JSON-able fields for artifact.json / reports."""
        return asdict(self)


def precision_name(precision: str) -> str:
    """``no`` -> ``fp32``; others unchanged."""
    return "fp32" if precision == "no" else precision


def _ms(seconds: float) -> str:
    """Milliseconds with 3 significant digits, without an exponent: 0.421, 25.4, 31, 20322."""
    ms = seconds * 1000
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.3g}"


def decide(task: str, fp32_s: float, bf16_s: float, margin: float = BF16_MARGIN) -> tuple[str, str]:
    """(precision, reason) from measured seconds per step: bf16 only when it is ``margin`` faster."""
    step = STEP_NAMES[task]
    measured = f"measured bf16 {_ms(bf16_s)} vs fp32 {_ms(fp32_s)} ms"
    speedup = fp32_s / bf16_s if bf16_s > 0 else float("inf")
    if speedup >= 1 + margin:
        return "bf16", f"auto -> bf16: bf16 {step} {speedup:.2f}x faster here ({measured})"
    if speedup >= 1:
        return "no", (f"auto -> fp32: bf16 {step} only {speedup:.2f}x faster here ({measured}; "
                      f"fp32 is kept unless bf16 is {1 + margin:.2f}x faster)")
    return "no", f"auto -> fp32: bf16 {step} {1 / speedup:.2f}x slower here ({measured})"


def forced_auto(task: str) -> str | None:
    """``no`` / ``bf16`` when the task's environment variable forces ``auto``; None when unset."""
    name = AUTO_ENVS[task]
    forced = os.environ.get(name, "").strip().lower()
    if not forced:
        return None
    if forced not in ("no", "fp32", "bf16"):
        raise ConfigError(f"{name}: must be no, fp32 or bf16, got {forced!r}; unset it to let auto decide")
    return "bf16" if forced == "bf16" else "no"


def probe_key(probe: Probe) -> dict[str, Any]:
    """What a measurement depends on: CPU model, torch version and threads, task, model and batch shape."""
    return {"cpu": cpu_model(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "task": probe.task, **probe.signature()}


def measured_choice(probe: Probe, cache: MeasurementCache | None = None) -> PrecisionChoice:
    """fp32 or bf16 as measured on ``probe`` (or as measured before: the cache), with the reason."""
    cache = cache or MeasurementCache.default()
    key = probe_key(probe)
    name = cache_key(key)
    entry = cache.get(name)
    try:
        fp32_s, bf16_s = float(entry["fp32_ms"]) / 1000, float(entry["bf16_ms"]) / 1000  # type: ignore[index]
        if not (fp32_s > 0 and bf16_s > 0):
            raise ValueError("not positive")
        how = "cached"
    except (TypeError, KeyError, ValueError):
        try:
            fp32_s, bf16_s = probe.measure()
        except Exception as exc:  # noqa: BLE001 - a failed probe must not stop the run: fp32 always works
            reason = f"auto -> fp32: the bf16 {STEP_NAMES[probe.task]} probe failed ({type(exc).__name__}: " \
                     f"{one_line(exc)[:120]})"
            log.warning(reason)
            return PrecisionChoice("no", "auto", "probe-failed", reason, probe.task, key=key)
        how = "measured"
        cache.put(name, {**key, "fp32_ms": fp32_s * 1000, "bf16_ms": bf16_s * 1000,
                         "measured": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
    precision, reason = decide(probe.task, fp32_s, bf16_s)
    if how == "cached":
        reason += f" [cached in {cache.path}]"
    return PrecisionChoice(precision, "auto", how, reason, probe.task, fp32_s * 1000, bf16_s * 1000, key)


def choose_precision(requested: str, device: torch.device, probe: Probe,
                     cache: MeasurementCache | None = None) -> PrecisionChoice:
    """Resolve ``requested`` (``auto`` | ``no`` | ``bf16`` | ``fp16``) for ``probe.task`` (see the module docstring).

    ``probe`` is measured only when rule 5 applies and the cache has no entry for its key.

    Raises:
        UserError: fp16 on a CPU. ConfigError: the environment variable holds something else than no/fp32/bf16.
    """
    task = probe.task
    if requested != "auto":
        if requested == "fp16" and device.type == "cpu":
            raise UserError("mixed_precision=fp16 needs a GPU; use bf16 (fast on AMX CPUs) or no")
        return PrecisionChoice(requested, requested, "explicit", f"{precision_name(requested)} as requested", task)
    if device.type == "cuda":
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return PrecisionChoice(precision, "auto", "gpu", f"auto -> {precision}: a GPU ({precision} is its fast path)",
                               task)
    forced = forced_auto(task)
    if forced:
        return PrecisionChoice(forced, "auto", "env", f"auto -> {precision_name(forced)}: set by {AUTO_ENVS[task]}",
                               task)
    if not fast_bf16():
        return PrecisionChoice("no", "auto", "no-bf16-hardware",
                               "auto -> fp32: this CPU has no bf16 hardware (AMX / AVX512-BF16), not measured", task)
    choice = measured_choice(probe, cache)
    log.info(choice.reason)
    return choice
