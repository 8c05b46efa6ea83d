"""`compress distill-report`: one table comparing a teacher, its students and the baselines.

Columns: parameters, validation macro ROC-AUC and macro-F1 (as stored in each artifact: thresholds
tuned on the same validation split) beside the test split's (scored once at the end, at those
thresholds; "-" for an artifact made without one), macro-F1 kept relative to the teacher on each,
batch-1 latency percentiles (PyTorch / scikit-learn, fp32, text in -> probabilities out, tokenization
included) over real validation texts after a warm-up, and throughput at batch 32. Reported as JSON
plus a Markdown table.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.measure import percentiles_ms, time_calls
from compress.config import DataConfig, build_config, recorded_data_values
from compress.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def _validation_texts(infos: Sequence[Any], data: DataConfig | None) -> list[str]:
    """Validation texts of ``data``, else of the first artifact that records its data config."""
    from compress.train import load_splits

    if data is None:
        for info in infos:
            recorded = (info.recipe or {}).get("data")
            if isinstance(recorded, dict) and recorded.get("data"):
                data = build_config(DataConfig, recorded_data_values(recorded))
                break
    if data is None:
        raise ConfigError("data: none of the artifacts records its data; pass --data PATH")
    return list(load_splits(data).val.texts)


def measure_latency(predict: Callable[[list[str]], np.ndarray], texts: Sequence[str], calls: int = 200,
                    warmup: int = 20) -> dict[str, float | None]:
    """Batch-1 latency of ``predict([text])`` over ``texts`` (cycled): ``warmup`` untimed calls, then ``calls`` timed
    on the texts after them; p50/p90/p99/mean in ms."""
    timing = time_calls(predict, [[t] for t in texts], warmup, calls, start=warmup)
    return percentiles_ms(timing.seconds)


def measure_throughput(predict: Callable[[list[str]], np.ndarray], texts: Sequence[str], batch_size: int = 32,
                       batches: int = 10, warmup: int = 2) -> float:
    """Examples per second of ``predict(batch)`` at ``batch_size`` over consecutive validation texts."""
    n = len(texts)
    chunks = [[texts[(i * batch_size + j) % n] for j in range(batch_size)] for i in range(warmup + batches)]
    return time_calls(predict, chunks, warmup, batches, start=warmup).examples_per_s


def distill_report(artifacts: Sequence[str | os.PathLike[str]], data: DataConfig | None = None, calls: int = 200,
                   warmup: int = 20, batch_size: int = 32, throughput_batches: int = 10,
                   num_threads: int | None = None) -> dict[str, Any]:
    """Measure every artifact; returns ``{"rows": [...], "environment": {...}, "settings": {...}}``.

    Rows keep the given order and hold ``name``, ``kind``, ``architecture``, ``parameters``,
    ``macro_roc_auc``, ``macro_f1``, ``level_macro_f1`` (validation, as stored), ``test`` (the same three
    on the test split, or None), ``f1_vs_teacher`` and ``test_f1_vs_teacher`` (fraction of the teacher's
    macro-F1, where a teacher is among the artifacts or is the students' parent), ``latency``
    percentiles (ms) and ``examples_per_s``.
    """
    import torch

    from bench.table import count_parameters
    from compress.artifact import read_info
    from compress.cpu import cpu_model
    from export.runtime import load

    if not artifacts:
        raise ConfigError("artifacts: pass at least one artifact directory")
    if calls < 1 or warmup < 0 or batch_size < 1 or throughput_batches < 1:
        raise ConfigError("calls, batch_size and throughput_batches must be >= 1 and warmup >= 0")
    if num_threads:
        torch.set_num_threads(num_threads)  # also for a fastText baseline, which export.runtime gives no threads
    paths = [Path(a) for a in artifacts]
    infos = [read_info(p, kinds=["teacher", "student", "baseline"]) for p in paths]
    texts = _validation_texts(infos, data)
    if not texts:
        raise DataError("the validation split is empty; pass --data with more rows")

    teacher = next((info for info in infos if info.kind == "teacher"), None)
    if teacher is None:
        parents = {i.parent for i in infos if i.parent}
        if len(parents) == 1:
            teacher = read_info(parents.pop())
    teacher_f1 = _stored(teacher.metrics, "macro_f1") if teacher else None
    teacher_test_f1 = _stored(teacher.metrics.get("test") or {}, "macro_f1") if teacher else None

    rows = []
    for path, info in zip(paths, infos, strict=True):
        log.info("measuring %s", path)
        # auto: PyTorch fp32 for a teacher / student, the baseline's own library for a baseline
        predictor = load(path, max_batch_size=batch_size, threads=num_threads)
        params, _ = count_parameters(path, info)  # teachers do not record it: counted from model.safetensors
        latency = measure_latency(predictor.predict, texts, calls, warmup)
        speed = measure_throughput(predictor.predict, texts, batch_size, throughput_batches)
        f1 = float(info.metrics.get("macro_f1", float("nan")))
        test = _test_metrics(info.metrics)
        rows.append({
            "name": path.name, "path": str(path), "kind": info.kind, "architecture": info.architecture,
            "parameters": int(params) if params is not None else None,
            "macro_roc_auc": float(info.metrics.get("macro_roc_auc", float("nan"))), "macro_f1": f1,
            "level_macro_f1": _stored(info.metrics, "level_macro_f1"), "test": test,
            "f1_vs_teacher": f1 / teacher_f1 if teacher_f1 else None,
            "test_f1_vs_teacher": (test["macro_f1"] / teacher_test_f1
                                   if test and test["macro_f1"] is not None and teacher_test_f1 else None),
            "alpha": (info.recipe or {}).get("alpha"), "temperature": (info.recipe or {}).get("temperature"),
            "latency": latency, "examples_per_s": speed,
        })
    return {
        "rows": rows,
        "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                        "cpu": cpu_model(), "device": "cpu", "precision": "fp32"},
        "settings": {"validation_texts": len(texts), "latency_calls": calls, "warmup": warmup,
                     "throughput_batch_size": batch_size, "throughput_batches": throughput_batches},
    }


def _stored(metrics: dict[str, Any], key: str) -> float | None:
    """A stored metric as a float; None when it is missing or null (an artifact.json NaN)."""
    value = metrics.get(key)
    return float(value) if isinstance(value, (int, float)) and not math.isnan(float(value)) else None


def _test_metrics(metrics: dict[str, Any]) -> dict[str, float | None] | None:
    """The headline test-split metrics an artifact stores (``metrics["test"]``), None when it has none."""
    test = metrics.get("test")
    if not isinstance(test, dict):
        return None
    return {"rows": test.get("n"), **{k: _stored(test, k) for k in ("macro_roc_auc", "macro_f1", "level_macro_f1")}}


def _cell(value: float | None, fmt: str = ".4f") -> str:
    return "-" if value is None else format(value, fmt)


def format_markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table (one row per artifact): validation and test side by side."""
    head = ("| artifact | kind | architecture | parameters | val macro ROC-AUC | val macro-F1 | test macro ROC-AUC "
            "| test macro-F1 | level macro-F1 (val / test) | F1 vs teacher (val / test) | p50 batch-1 (ms) | p99 batch-1 (ms) "
            "| examples/s (batch 32) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in report["rows"]:
        kept = " / ".join("-" if v is None else f"{100 * v:.1f}%" for v in (r["f1_vs_teacher"], r["test_f1_vs_teacher"]))
        params = f"{r['parameters']:,}" if r["parameters"] is not None else "-"
        test = r["test"] or {}
        levels = f"{_cell(r['level_macro_f1'])} / {_cell(test.get('level_macro_f1'))}"
        lines.append(f"| {r['name']} | {r['kind']} | {r['architecture']} | {params} | {r['macro_roc_auc']:.4f} "
                     f"| {r['macro_f1']:.4f} | {_cell(test.get('macro_roc_auc'))} | {_cell(test.get('macro_f1'))} "
                     f"| {levels} | {kept} | {r['latency']['p50_ms']:.2f} | {r['latency']['p99_ms']:.2f} "
                     f"| {r['examples_per_s']:.0f} |")
    s = report["settings"]
    env = report["environment"]
    lines.append("")
    lines.append(f"Latency: {s['latency_calls']} batch-1 calls after {s['warmup']} warm-up, real validation texts "
                 f"({s['validation_texts']}), text in -> probabilities out; {env['device']} {env['precision']}, "
                 f"torch {env['torch']}, {env['threads']} threads.")
    return "\n".join(lines) + "\n"
