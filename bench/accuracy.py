"""Metrics of every artifact on the same labelled data.

For each artifact: its label columns are aligned to the data (the data's columns are reordered
to the artifact's label order; a different label set is a :class:`DataError` naming the missing
and extra labels), its predictions are scored with :func:`compress.metrics.multilabel_metrics`
at the artifact's own thresholds (per-label and macro ROC-AUC, PR-AUC, F1, subset and label
accuracy), per level of the label hierarchy and conditional on each child's parent
(:mod:`compress.hierarchy_metrics`: OffensEval 2019's levels A / B / C, each task beside its
majority-class baseline), and its thresholded predictions are checked against the label hierarchy: a
row where a child label is predicted without its parent is a violation (counted per ``child->parent``
and as rows with any violation).

``split="val"`` / ``"test"`` reproduce the seeded stratified validation / test split ``compress train``
makes (:func:`compress.data.train_val_test_split` with the same ``val_fraction``, ``test_fraction`` and
``seed``; ``test_fraction=0`` for artifacts made before the test split existed), so an artifact trained
on the rest of the file is not scored on its own training rows.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from compress.artifact import read_info
from compress.data import LabeledData, LabelSchema, align_to_schema, hierarchy_violations, load_dataset
from compress.errors import ConfigError, DataError
from compress.hierarchy_metrics import level_cuts_of
from compress.metrics import multilabel_metrics

SPLITS = ("all", "val", "test")


def load_eval_data(path: str | os.PathLike[str], format: str | None = None, split: str = "all",
                   val_fraction: float = 0.1, seed: int = 0, max_rows: int | None = None,
                   test_fraction: float = 0.1) -> LabeledData:
    """The labelled rows to score: the whole file, or its validation or test split; optionally a seeded sample."""
    if split not in SPLITS:
        raise ConfigError(f"split: must be one of {', '.join(SPLITS)}, got {split!r}")
    if max_rows is not None and max_rows < 1:
        raise ConfigError(f"max_rows: must be >= 1, got {max_rows}")
    data = load_dataset(path, format=format)
    if split in ("val", "test"):
        from compress.data import train_val_test_split

        _, val, test = train_val_test_split(data, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
        if split == "test" and test is None:
            raise DataError(f"{path} has no test split at test_fraction={test_fraction} (too few rows, or 0); "
                            "pass --test-fraction > 0 or score --split all of a test file")
        data = val if split == "val" else test
    if max_rows is not None and max_rows < len(data):
        rng = np.random.default_rng(seed)
        data = data.subset(np.sort(rng.choice(len(data), max_rows, replace=False)))
    return data


def predicted_violations(preds: np.ndarray, schema: LabelSchema) -> dict[str, Any]:
    """Hierarchy violations of (N, L) 0/1 predictions: per ``child->parent`` and rows with any."""
    per_pair = hierarchy_violations(preds, schema)
    pos = np.asarray(preds) > 0.5
    rows = np.zeros(len(pos), dtype=bool)
    for child, parent in schema.parent_indices().items():
        rows |= pos[:, child] & ~pos[:, parent]
    return {"per_pair": per_pair, "rows": int(rows.sum()), "rate": float(rows.mean()) if len(rows) else 0.0}


def score(probs: np.ndarray, data: LabeledData, thresholds: Sequence[float] | np.ndarray,
          level_cuts: dict[str, float] | None = None) -> dict[str, Any]:
    """Metrics + predicted hierarchy violations of (N, L) ``probs`` against ``data`` (same label order), at the
    artifact's ``thresholds`` and its validation ``level_cuts`` (:func:`compress.hierarchy_metrics.level_cuts_of`;
    ``{}``: children cut at 0.5)."""
    thresholds = np.asarray(thresholds if len(thresholds) else [0.5] * data.schema.num_labels, dtype=np.float64)
    metrics = multilabel_metrics(data.labels, probs, data.schema.names, thresholds, data.schema,
                                 {} if level_cuts is None else level_cuts)
    preds = (np.asarray(probs) >= thresholds[None, :]).astype(np.int64)
    return {"metrics": metrics, "hierarchy_violations": predicted_violations(preds, data.schema)}


def predict_texts(directory: Path, info: Any, texts: Sequence[str], runtime: str = "auto", batch_size: int = 64,
                  threads: int | None = None) -> tuple[dict[str, Any], np.ndarray | None]:
    """The artifact's (N, L) probabilities of ``texts`` and its report row so far (name, kind, runtime, and
    ``status``: ``ok`` with ``seconds`` / ``examples_per_s``, or ``skipped`` with a ``reason`` and None)."""
    from bench.artifacts import Skipped, load_predictor

    row: dict[str, Any] = {"name": directory.name, "artifact": str(directory), "kind": info.kind,
                           "architecture": info.architecture, "runtime": runtime}
    try:
        predictor = load_predictor(directory, runtime, max_batch_size=batch_size, threads=threads)
    except Skipped as exc:
        return {**row, "status": "skipped", "reason": str(exc)}, None
    step = max(1, min(batch_size, int(getattr(predictor, "max_batch_size", batch_size) or batch_size)))
    t0 = time.perf_counter()
    parts = [np.asarray(predictor.predict(list(texts[i:i + step])), dtype=np.float32)
             for i in range(0, len(texts), step)]
    seconds = time.perf_counter() - t0
    probs = np.concatenate(parts) if parts else np.zeros((0, len(info.labels)), dtype=np.float32)
    row["runtime"] = str(getattr(predictor, "backend", runtime))
    return {**row, "status": "ok", "seconds": seconds,
            "examples_per_s": len(texts) / seconds if seconds else None}, probs


def evaluate_artifact(artifact: str | os.PathLike[str], data: LabeledData, runtime: str = "auto",
                      batch_size: int = 64, threads: int | None = None) -> dict[str, Any]:
    """Score one artifact on ``data``; ``status`` is ``ok`` or ``skipped`` (runtime does not apply).

    Raises:
        DataError: the data's labels are not the artifact's labels.
    """
    directory = Path(artifact)
    info = read_info(directory)
    aligned = align_to_schema(data, info.schema())
    row, probs = predict_texts(directory, info, aligned.texts, runtime, batch_size, threads)
    return row if probs is None else {**row, **score(probs, aligned, info.thresholds, level_cuts_of(info.metrics))}


def run(artifacts: Sequence[str | os.PathLike[str]], data_path: str | os.PathLike[str], format: str | None = None,
        runtime: str = "auto", split: str = "all", val_fraction: float = 0.1, seed: int = 0,
        max_rows: int | None = None, log: Callable[[str], None] = lambda _m: None,
        threads: int | None = None, test_fraction: float = 0.1) -> dict[str, Any]:
    """Score every artifact on the same rows; returns the JSON-ready report (``bench: accuracy``)."""
    from bench.artifacts import check_artifacts

    paths = check_artifacts(artifacts)
    data = load_eval_data(data_path, format, split, val_fraction, seed, max_rows, test_fraction)
    rows = []
    for path in paths:
        log(f"accuracy: {path.name} on {len(data)} rows")
        rows.append(evaluate_artifact(path, data, runtime, threads=threads))
    return {
        "bench": "accuracy",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "data": {"path": str(data_path), "format": format, "split": split, "val_fraction": val_fraction,
                 "test_fraction": test_fraction, "seed": seed, "rows": len(data), "fingerprint": data.fingerprint(),
                 "labels": list(data.schema.names)},
        "rows": rows,
    }


def format_cell(value: float | None) -> str:
    """A metric for a Markdown cell: 4 decimals, an em dash for a missing or NaN one."""
    return "—" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.4f}"


def markdown(report: dict[str, Any]) -> str:
    """Summary table (one row per artifact), then per-label ROC-AUC / PR-AUC / F1."""
    d = report["data"]
    lines = [f"Metrics on {d['path']} ({d['split']}, {d['rows']:,} rows) at each artifact's own thresholds.", "",
             "| artifact | runtime | macro ROC-AUC | macro PR-AUC | macro-F1 | micro-F1 | subset acc. | label acc. | "
             "rows violating hierarchy |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    ok = [r for r in report["rows"] if r["status"] == "ok"]
    for r in report["rows"]:
        if r["status"] != "ok":
            lines.append(f"| {r['name']} | {r['runtime']} | {r['status']}: {r['reason']} |" + " |" * 6)
            continue
        m, v = r["metrics"], r["hierarchy_violations"]
        lines.append(f"| {r['name']} | {r['runtime']} | {format_cell(m['macro_roc_auc'])} | {format_cell(m['macro_pr_auc'])} | "
                     f"{format_cell(m['macro_f1'])} | {format_cell(m['micro_f1'])} | {format_cell(m['subset_accuracy'])} | "
                     f"{format_cell(m['label_accuracy'])} | {v['rows']:,} ({100 * v['rate']:.1f}%) |")
    if ok:
        labels = list(ok[0]["metrics"]["per_label"])
        lines += ["", "Per label: ROC-AUC / PR-AUC / F1", "",
                  "| label | support | " + " | ".join(r["name"] for r in ok) + " |",
                  "|---|---:|" + "---|" * len(ok)]
        for label in labels:
            cells = []
            for r in ok:
                m = r["metrics"]["per_label"].get(label, {})
                cells.append(f"{format_cell(m.get('roc_auc'))} / {format_cell(m.get('pr_auc'))} / {format_cell(m.get('f1'))}")
            support = ok[0]["metrics"]["per_label"][label]["support"]
            lines.append(f"| {label} | {support:,} | " + " | ".join(cells) + " |")
        lines += _level_lines(ok) + _conditional_lines(ok)
        pairs = list(ok[0]["hierarchy_violations"]["per_pair"])
        if pairs:
            lines += ["", "Predicted child without its parent (rows):", "",
                      "| child->parent | " + " | ".join(r["name"] for r in ok) + " |", "|---|" + "---:|" * len(ok)]
            for pair in pairs:
                lines.append(f"| {pair} | " + " | ".join(f"{r['hierarchy_violations']['per_pair'][pair]:,}"
                                                        for r in ok) + " |")
    return "\n".join(lines) + "\n"


def _level_lines(ok: Sequence[dict[str, Any]]) -> list[str]:
    """The per-level table (OffensEval 2019 protocol): one row per task, one cell per artifact."""
    tasks = ok[0]["metrics"].get("levels", {}).get("tasks", [])
    if not tasks:
        return []
    lines = ["", "Per level (OffensEval 2019): A = each top-level label, 2-class, all rows; B, C, ... = a child "
             "on the rows whose gold parent is positive, 2-class, or an exclusive group of siblings as one "
             "multi-class task (argmax). 2-class decisions: each label's own probability at the artifact's "
             "threshold. Cells: macro-F1 / ROC-AUC / PR-AUC (multi-class: one-vs-rest macro).", "",
             "| task | rows | majority-class macro-F1 | " + " | ".join(r["name"] for r in ok) + " |",
             "|---|---:|---:|" + "---|" * len(ok)]
    for i, task in enumerate(tasks):
        cells = []
        for r in ok:
            t = r["metrics"]["levels"]["tasks"][i]
            cells.append(f"{format_cell(t['macro_f1'])} / {format_cell(t['roc_auc'])} / {format_cell(t['pr_auc'])}")
        name = task["name"].replace("|", "\\|")  # a pipe inside a Markdown cell
        lines.append(f"| {name} | {task['rows']:,} | {format_cell(task['majority_macro_f1'])} | "
                     + " | ".join(cells) + " |")
    for level in ok[0]["metrics"]["levels"]["by_level"]:
        lines.append(f"| level {level} (mean macro-F1) | | | "
                     + " | ".join(format_cell(r["metrics"]["levels"]["by_level"][level]) for r in ok) + " |")
    lines.append("| mean of the levels (level_macro_f1) | | | "
                 + " | ".join(format_cell(r["metrics"]["level_macro_f1"]) for r in ok) + " |")
    return lines


def _conditional_lines(ok: Sequence[dict[str, Any]]) -> list[str]:
    """Each child's metrics on its parent's positive rows beside the ones over all rows."""
    conditional = ok[0]["metrics"].get("conditional", {})
    if not conditional:
        return []
    lines = ["", "Conditional on the parent (rows whose gold parent is positive), then over all rows: "
             "ROC-AUC / PR-AUC / F1", "",
             "| child \\| parent | rows | " + " | ".join(r["name"] for r in ok) + " |", "|---|---:|" + "---|" * len(ok)]
    for child, c in conditional.items():
        cells = []
        for r in ok:
            m, u = r["metrics"]["conditional"][child], r["metrics"]["per_label"][child]
            cells.append(f"{format_cell(m['roc_auc'])} / {format_cell(m['pr_auc'])} / {format_cell(m['f1'])} "
                         f"(all rows {format_cell(u['roc_auc'])} / {format_cell(u['pr_auc'])} / {format_cell(u['f1'])})")
        lines.append(f"| {child} \\| {c['parent']} | {c['rows']:,} | " + " | ".join(cells) + " |")
    return lines


def dumps(report: dict[str, Any]) -> str:
    """JSON text of a report (NaN metrics become null)."""
    return json.dumps(_nan_to_none(report), indent=2)


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, np.generic):
        return _nan_to_none(value.item())
    return value
