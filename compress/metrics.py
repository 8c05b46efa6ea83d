"""Multi-label metrics: per-label and macro ROC-AUC, PR-AUC, F1 at tuned thresholds.

A label whose validation column holds only one class has no ROC-AUC; it is reported as NaN and
left out of the macro average (``labels_without_auc`` names them) rather than silently counted.
Given the label schema, the per-level and conditional metrics of :mod:`compress.hierarchy_metrics`
are added (``levels``, ``level_macro_f1``, ``conditional``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import f1_score, precision_recall_curve

from compress.hierarchy_metrics import hierarchy_metrics, nanmean, roc_pr_auc


def tune_thresholds(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per-label threshold that maximises F1 on (validation) data.

    Args:
        y_true: (N, L) 0/1 labels.
        probs: (N, L) predicted probabilities.

    Returns:
        (L,) float64 thresholds (float32 would round a cut above its own score); 0.5 for a label
        with no positives.
    """
    y_true = np.asarray(y_true)
    thresholds = np.full(y_true.shape[1], 0.5, dtype=np.float64)
    for j in range(y_true.shape[1]):
        if y_true[:, j].sum() == 0:
            continue
        precision, recall, cuts = precision_recall_curve(y_true[:, j], probs[:, j])
        # precision/recall have one more entry than cuts (the (1, 0) end point); drop it.
        f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
        thresholds[j] = float(cuts[int(np.argmax(f1))])
    return thresholds


def multilabel_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    labels: Sequence[str],
    thresholds: np.ndarray | None = None,
    schema: Any = None,
    level_cuts: dict[str, float] | None = None,
) -> dict:
    """All validation metrics for (N, L) labels and probabilities.

    Returns a dict with ``macro_roc_auc``, ``macro_pr_auc``, ``macro_f1``, ``micro_f1``,
    ``subset_accuracy``, ``label_accuracy`` and ``per_label`` ({name: {roc_auc, pr_auc, f1,
    threshold, support}}). ``thresholds`` default to 0.5. With ``schema`` (a ``LabelSchema`` whose
    names are ``labels``) also ``levels``, ``level_macro_f1`` and, for a hierarchy, ``conditional``
    (:func:`compress.hierarchy_metrics.hierarchy_metrics`: top-level labels at the same thresholds, a child
    at its cut on P(child | parent), an exclusive group by its offsets: ``level_cuts`` for held-out data,
    None = tuned here, on validation).
    """
    y_true = np.asarray(y_true).astype(np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if y_true.shape != probs.shape or y_true.ndim != 2 or y_true.shape[1] != len(labels):
        raise ValueError(f"shape mismatch: labels {y_true.shape}, probs {probs.shape}, {len(labels)} names")
    if schema is not None and list(schema.names) != list(labels):
        raise ValueError(f"schema labels {list(schema.names)} are not the metric's labels {list(labels)}")
    if thresholds is None:
        thresholds = np.full(len(labels), 0.5, dtype=np.float32)
    preds = (probs >= np.asarray(thresholds)[None, :]).astype(np.int64)
    per_label: dict[str, dict[str, float]] = {}
    no_auc = []
    for j, name in enumerate(labels):
        col = y_true[:, j]
        roc, pr = roc_pr_auc(col, probs[:, j])
        if math.isnan(roc):
            no_auc.append(name)
        per_label[name] = {
            "roc_auc": roc,
            "pr_auc": pr,
            "f1": float(f1_score(col, preds[:, j], zero_division=0)),
            "threshold": float(thresholds[j]),
            "support": int(col.sum()),
        }
    metrics = {
        "macro_roc_auc": nanmean([m["roc_auc"] for m in per_label.values()]),
        "macro_pr_auc": nanmean([m["pr_auc"] for m in per_label.values()]),
        "macro_f1": float(np.mean([m["f1"] for m in per_label.values()])),
        "micro_f1": float(f1_score(y_true, preds, average="micro", zero_division=0)),
        "subset_accuracy": float((preds == y_true).all(axis=1).mean()),
        "label_accuracy": float((preds == y_true).mean()),
        "labels_without_auc": no_auc,
        "per_label": per_label,
        "n": int(len(y_true)),
    }
    if schema is not None:
        metrics.update(hierarchy_metrics(y_true, probs, thresholds, schema, level_cuts))
    return metrics


def summary(metrics: dict) -> dict[str, float]:
    """The scalar headline metrics (for MLflow and one-line prints)."""
    keys = ("macro_roc_auc", "macro_pr_auc", "macro_f1", "micro_f1", "subset_accuracy", "level_macro_f1")
    return {k: float(metrics[k]) for k in keys if k in metrics}
