"""Inference latency and throughput over a grid: artifact x runtime x batch size x sequence length.

Each cell warms up first (``warmup`` calls, untimed), then times ``iters`` calls of
``predictor.predict(texts)`` (:func:`bench.measure.time_calls`) and reports the
p50 / p90 / p99 latency of one call (one batch) in milliseconds and the throughput in examples per
second (``batch_size * calls / total call time``). A call is end to end, as a server sees it:
tokenization, the model and the sigmoid. A cell stops early once it has run ``max_seconds`` (and
at least :data:`bench.measure.MIN_ITERS` calls), so a slow runtime (bf16 on a CPU without bf16 hardware is
~100x slower than fp32) cannot stall the run; the calls it really made are reported.

Inputs:

* **fixed length** (``seq_lengths``): synthetic texts that tokenize to exactly ``T`` tokens,
  special tokens included (:func:`bench.inputs.fixed_length_text`). Every text of a batch is the
  same length, so dynamic padding pads nothing.
  Artifacts without a tokenizer (baselines) get ``T`` whitespace-separated words; the length unit
  is then ``words``. A length over the artifact's ``max_length`` is skipped (it would be truncated).
* **real lengths** (``real_texts``): batches drawn (seeded) from real comments, so the cost of a
  realistic length mix (and of padding to the longest text of each batch) is measured.

Runtimes are :func:`export.runtime.load` backends (``auto``, ``torch``, ``torch-bf16``,
``torch-int8``, ``ort``, ``ort-text``, ``sklearn``, ...) and ``triton`` (the endpoint at ``url`` serving the
artifact under its directory name, through :class:`serve.client.ServeClient`). Rows are named
``artifact/backend`` with the backend the runtime resolved to (``auto`` -> ``torch`` for a
teacher/student, ``ort`` for an onnx artifact, ``sklearn`` for a baseline); two runtimes resolving
to the same backend are measured once. A baseline asked for ``torch`` runs in its own library
(``sklearn``). ``ort`` and ``ort-text`` side by side compare tokenize-then-run (the Hugging Face
tokenizer in Python, then ``model.onnx``) with the tokenizer inside the ONNX graph
(``model_with_tokenizer.onnx`` of an artifact exported ``--with-tokenizer``, strings in), on the
same texts. A runtime that does not apply to an artifact (no ``model.onnx``, no GPU, not served
at ``url``, ...) becomes a ``skipped`` row with the reason; an unexpected failure an ``error`` row;
neither stops the run.

For a teacher/student, ``auto`` is ``torch`` or ``torch-bf16``, whichever the runtime measured to be
faster for inference on this machine (:func:`export.runtime.auto_torch_backend`); the report's
``auto_choices`` (and a line under the table) say which and why, also when that backend's rows
were measured under its own name (``--runtimes torch,torch-bf16,auto`` gives both rows and the choice).

Ratios compare each row with the named baseline row (``artifact/runtime``) at the same batch size
and length in the same run: ``speedup`` = baseline p50 / row p50 and ``throughput_ratio`` =
row examples/s / baseline examples/s (both 1.0 for the baseline itself, > 1 means faster).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.artifacts import GPU_RUNTIMES, Skipped, check_artifacts, load_predictor
from bench.inputs import fixed_length_text, load_tokenizer, mean_length, real_batches
from bench.measure import CpuWatch, machine_notes, time_calls
from compress.artifact import ArtifactInfo, read_info
from compress.errors import ConfigError, UserError, one_line

TRITON = "triton"
REAL = "real"


def known_runtimes() -> tuple[str, ...]:
    """Runtime names: export.runtime's backends plus ``triton``."""
    from export.runtime import BACKENDS

    return (*BACKENDS, TRITON)


def check_runtimes(runtimes: Sequence[str]) -> list[str]:
    """Validate runtime names (typos are errors, not skips); returns them without duplicates."""
    names = [r.strip() for r in runtimes if r.strip()]
    if not names:
        raise ConfigError("runtimes: give at least one, e.g. --runtimes torch,ort")
    known = known_runtimes()
    bad = [r for r in names if r not in known]
    if bad:
        raise ConfigError(f"runtimes: unknown runtime {bad[0]!r}; known: {', '.join(known)}")
    return list(dict.fromkeys(names))


# ----------------------------------------------------------------------------------------------
# The grid


@dataclass(frozen=True)
class LatencyConfig:
    """What ``bench latency`` measures.

    Attributes:
        runtimes: runtime names (see the module docstring).
        batch_sizes / seq_lengths: the grid (fixed-length mode).
        real_texts: comments for real-lengths mode (replaces ``seq_lengths``), or None.
        url: Triton endpoint for the ``triton`` runtime, or None.
        warmup / iters / max_seconds: per cell (see :func:`bench.measure.time_calls`).
        baseline: row name (``artifact/runtime``) the ratios compare with; None = first measured row.
        seed: sampling of real-length batches.
        threads: intra-op threads of PyTorch / ONNX Runtime (None: the runtime's default).
    """

    runtimes: tuple[str, ...] = ("auto",)
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    seq_lengths: tuple[int, ...] = (16, 64, 128)
    real_texts: tuple[str, ...] | None = None
    real_source: str | None = None
    url: str | None = None
    warmup: int = 5
    iters: int = 50
    max_seconds: float = 20.0
    baseline: str | None = None
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads: must be >= 1, got {self.threads}")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise ConfigError(f"batch_sizes: must be positive integers, got {list(self.batch_sizes)}")
        if self.real_texts is None and (not self.seq_lengths or any(t < 1 for t in self.seq_lengths)):
            raise ConfigError(f"seq_lengths: must be positive integers, got {list(self.seq_lengths)}")
        if self.warmup < 0:
            raise ConfigError(f"warmup: must be >= 0, got {self.warmup}")
        if self.iters < 1:
            raise ConfigError(f"iters: must be >= 1, got {self.iters}")
        if self.max_seconds <= 0:
            raise ConfigError(f"max_seconds: must be > 0, got {self.max_seconds}")
        if TRITON in self.runtimes and not self.url:
            raise ConfigError("runtimes: 'triton' needs --url http://127.0.0.1:PORT of a `serve start` endpoint")


def _row(artifact: Path, info: ArtifactInfo, runtime: str, backend: str | None = None, **fields: Any
         ) -> dict[str, Any]:
    backend = backend or runtime
    # an engine's precision (fp32 / fp16 / int8) is fixed when it is built: a TensorRT row says which
    precision = {"precision": info.extra["precision"]} if info.kind == "tensorrt" and "precision" in info.extra else {}
    return {"name": f"{artifact.name}/{backend}", "artifact": str(artifact), "artifact_name": artifact.name,
            "kind": info.kind, "architecture": info.architecture, "runtime": runtime, "backend": backend,
            **precision, **fields}


class _TritonPredictor:
    """The ``triton`` runtime: one served model through :class:`serve.client.ServeClient`."""

    backend = TRITON

    def __init__(self, url: str, model: str) -> None:
        from serve.client import ServeClient

        self.client = ServeClient(url, model=model)
        if not self.client.ready():
            try:
                served = ", ".join(self.client.models()) or "none"
            except UserError:
                self.client.close()
                raise Skipped(f"cannot reach {url}; is `serve start` running there?") from None
            self.client.close()
            raise Skipped(f"{url} does not serve a model named {model} (it serves: {served})")
        self.max_batch_size = self.client.max_batch_size

    def predict(self, texts: list[str]) -> np.ndarray:
        return self.client.predict(texts)

    def close(self) -> None:
        self.client.close()


def _open(artifact: Path, runtime: str, config: LatencyConfig) -> Any:
    if runtime == TRITON:
        assert config.url is not None
        from export.runtime import model_name

        return _TritonPredictor(config.url, model_name(artifact))
    return load_predictor(artifact, runtime, max_batch_size=max(max(config.batch_sizes), 32), threads=config.threads)


def _cells(config: LatencyConfig) -> list[int | str]:
    return [REAL] if config.real_texts is not None else list(config.seq_lengths)


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {one_line(exc)[:300]}"


def benchmark_artifact(artifact: Path, runtime: str, config: LatencyConfig,
                       log: Callable[[str], None] = lambda _m: None, seen: set[str] | None = None,
                       auto_choices: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """All rows (batch x length) of one artifact on one runtime; skipped/error rows instead of raising.

    Rows are named ``artifact/backend`` with the backend the runtime resolved to (``auto`` ->
    ``torch`` or ``torch-bf16``, ``ort``, ``sklearn``...). A runtime resolving to a backend already in
    ``seen`` is not measured twice: it returns no rows. How ``auto`` chose between torch and torch-bf16
    is appended to ``auto_choices``.
    """
    info = read_info(artifact)
    try:
        predictor = _open(artifact, runtime, config)
    except Skipped as exc:
        return [_row(artifact, info, runtime, status="skipped", reason=str(exc), batch_size=None, seq_length=None)]
    except Exception as exc:  # noqa: BLE001 - one broken runtime must not stop the grid
        return [_row(artifact, info, runtime, status="error", batch_size=None, seq_length=None,
                     reason=_one_line(exc))]
    backend = str(getattr(predictor, "backend", runtime))
    choice = getattr(predictor, "precision_choice", None)
    if choice and auto_choices is not None:
        auto_choices.append({"artifact": str(artifact), "artifact_name": artifact.name, "backend": backend, **choice})
        log(f"{artifact.name}: auto is {backend} ({choice['reason']})")
    rows: list[dict[str, Any]] = []
    try:
        if seen is not None:
            if backend in seen:
                log(f"{artifact.name}: runtime {runtime} is {backend}, measured already")
                return []
            seen.add(backend)
        tokenizer = load_tokenizer(artifact)
        unit = "tokens" if tokenizer is not None else "words"
        max_batch = int(getattr(predictor, "max_batch_size", 0) or 0)
        for length in _cells(config):
            for batch_size in config.batch_sizes:
                base = {"batch_size": batch_size, "seq_length": length, "length_unit": unit}
                if max_batch and batch_size > max_batch:
                    rows.append(_row(artifact, info, runtime, backend, status="skipped", **base,
                                     reason=f"batch {batch_size} > this runtime's max batch size {max_batch}"))
                    continue
                if length != REAL and tokenizer is not None and info.max_length and length > info.max_length:
                    rows.append(_row(artifact, info, runtime, backend, status="skipped", **base,
                                     reason=f"length {length} > the artifact's max_length {info.max_length} "
                                            f"(inputs would be truncated)"))
                    continue
                if length == REAL:
                    assert config.real_texts is not None
                    batches = real_batches(config.real_texts, batch_size, max(config.iters, 1), config.seed)
                    mean = mean_length([t for b in batches for t in b], tokenizer)
                else:
                    batches = [[fixed_length_text(int(length), tokenizer)] * batch_size]
                    mean = float(length)
                log(f"{artifact.name}/{backend}: batch {batch_size}, length {length}")
                try:
                    timing = time_calls(predictor.predict, batches, config.warmup, config.iters, config.max_seconds)
                except Exception as exc:  # noqa: BLE001 - report and go on with the grid
                    rows.append(_row(artifact, info, runtime, backend, status="error", **base,
                                     reason=_one_line(exc)))
                    continue
                rows.append(_row(artifact, info, runtime, backend, status="ok", **base, mean_length=round(mean, 2),
                                 **timing.summary()))
    finally:
        close = getattr(predictor, "close", None)
        if callable(close):
            close()
    return rows


def add_ratios(rows: list[dict[str, Any]], baseline: str | None) -> str | None:
    """Add ``speedup`` and ``throughput_ratio`` vs the ``baseline`` row name to every ok row.

    Returns the baseline name used (the first ok row's name when ``baseline`` is None), or None if
    no row was measured.

    Raises:
        ConfigError: ``baseline`` names no measured row.
    """
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return None
    names = list(dict.fromkeys(r["name"] for r in ok))
    if baseline is None:
        baseline = names[0]
    elif baseline not in names:
        raise ConfigError(f"baseline: no measured row is named {baseline!r}; measured rows: {', '.join(names)}")
    reference = {(r["batch_size"], r["seq_length"]): r for r in ok if r["name"] == baseline}
    for row in ok:
        ref = reference.get((row["batch_size"], row["seq_length"]))
        row["speedup"] = ref["p50_ms"] / row["p50_ms"] if ref and row["p50_ms"] > 0 else None
        row["throughput_ratio"] = row["throughput"] / ref["throughput"] if ref and ref["throughput"] > 0 else None
    return baseline


def run(artifacts: Sequence[str | os.PathLike[str]], config: LatencyConfig,
        log: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Measure the grid; returns the JSON-ready report (``bench: latency``)."""
    paths = check_artifacts(artifacts)
    watch = CpuWatch()
    rows: list[dict[str, Any]] = []
    auto_choices: list[dict[str, Any]] = []
    for artifact in paths:
        seen: set[str] = set()
        for runtime in config.runtimes:
            rows.extend(benchmark_artifact(artifact, runtime, config, log, seen, auto_choices))
    baseline = add_ratios(rows, config.baseline)
    env = watch.environment()
    notes = machine_notes(env)
    if any(r.endswith("bf16") for r in config.runtimes) and not env.get("bf16_hardware"):
        notes.append(f"bf16 runs here without bf16 hardware ({env.get('cpu')}: no AVX-512 BF16 / AMX), so "
                     f"PyTorch emulates it and it is far slower than fp32; on a CPU with AMX it is the fast path.")
    return {
        "bench": "latency",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "environment": env,
        "settings": {"runtimes": list(config.runtimes), "batch_sizes": list(config.batch_sizes),
                     "seq_lengths": _cells(config), "real_lengths": config.real_source, "url": config.url,
                     "warmup": config.warmup, "iters": config.iters, "max_seconds_per_cell": config.max_seconds,
                     "seed": config.seed, "threads": config.threads},
        "baseline": baseline,
        "notes": notes,
        "auto_choices": auto_choices,
        "rows": rows,
    }


# ----------------------------------------------------------------------------------------------
# Output


def _fmt(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{suffix}"


def _label(row: dict[str, Any]) -> str:
    return f"{row['name']} ({row['precision']})" if row.get("precision") else row["name"]


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: measured rows, then skipped/error rows with reasons, then notes."""
    base = report.get("baseline")
    env = report.get("environment", {})
    ok = [r for r in report["rows"] if r["status"] == "ok"]
    other = [r for r in report["rows"] if r["status"] != "ok"]
    gpu = f", GPU {env['cuda']}" if env.get("cuda") and any(r["backend"] in GPU_RUNTIMES for r in ok) else ""
    lines = [f"Latency of one `predict` call (one batch, tokenization included); {env.get('cpu', '?')}{gpu}, "
             f"{env.get('torch_threads', '?')} torch threads. Ratios vs `{base}` at the same batch and length "
             f"(> 1 = faster).", ""]
    if ok:
        lines += ["| row | batch | length | p50 ms | p90 ms | p99 ms | examples/s | speed-up (p50) | throughput ratio |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in ok:
            length = f"real (mean {r['mean_length']:.0f})" if r["seq_length"] == REAL else str(r["seq_length"])
            lines.append(f"| {_label(r)} | {r['batch_size']} | {length} {r['length_unit']} | {r['p50_ms']:.2f} | "
                         f"{r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {r['throughput']:.1f} | "
                         f"{_fmt(r.get('speedup'), '.2f', 'x')} | {_fmt(r.get('throughput_ratio'), '.2f', 'x')} |")
    else:
        lines.append("No cell was measured.")
    if other:
        lines += ["", "| row | batch | length | status | reason |", "|---|---:|---:|---|---|"]
        for r in other:
            lines.append(f"| {_label(r)} | {r.get('batch_size') or 'all'} | {r.get('seq_length') or 'all'} | "
                         f"{r['status']} | {r['reason']} |")
    for choice in report.get("auto_choices", []):
        lines += ["", f"auto on `{choice['artifact_name']}`: {choice['backend']} ({choice['reason']})."]
    for note in report.get("notes", []):
        lines += ["", f"Note: {note}"]
    return "\n".join(lines) + "\n"


def dumps(report: dict[str, Any]) -> str:
    """JSON text of a report."""
    return json.dumps(report, indent=2, default=float)
