"""Metrics of a label hierarchy the way the field scores one: per level, and conditional on the parent.

A flat macro over all rows hides a hierarchy's lower levels: a child label is mostly negative because its
parent is, so "not offensive -> not targeted" makes its ROC-AUC look good while, among offensive texts, the
model may rank untargeted above targeted. OffensEval 2019 (Zampieri et al.) scores each level on its own
rows, and so does :func:`level_tasks`:

* level A: each top-level label as a 2-class task (macro-F1 over the positive AND the negative class) on
  all rows;
* level B, C, ... (the depth of the labels in the hierarchy): under each parent, on the rows whose parent
  is positive in the gold labels, a child as a 2-class task, or a group of mutually exclusive children
  (``LabelSchema.exclusive``) as one multi-class task over the argmax of the group's probabilities
  (OLID: offensive -> targeted vs untargeted -> individual / group / other). A multi-class task scores
  the rows with exactly one member positive (OLID: every targeted tweet); a top-level exclusive group is
  a level-A multi-class task on such rows.

Scores: a top-level label is scored by its own probability as the artifact outputs it, decided at its
threshold (the artifact's tuned one). A task under a parent asks what OffensEval's subtasks B and C ask:
given that the parent holds, which child? So it is scored by the conditional probability
P(child | parent) = P(child) / P(parent) (:func:`conditional_scores`; exact for a model with conditional
heads, whose marginal outputs are P(parent) * P(child | parent); for a flat model the best estimate its
outputs give, clipped to [0, 1]). The marginal P(child) would mix the model's doubt about the parent into
a question that takes the parent as given: on OLID's held-out rows a conditional MiniLM ranks targeted
above untargeted tweets with ROC-AUC 0.71 by the marginal and 0.79 by the conditional. A child's 2-class
decision is ``P(child | parent) >= cut``, its cut tuned on validation for that task's macro-F1
(:func:`best_macro_f1_cut`) and then carried, unchanged, to held-out data (``level_cuts``); a group's
decision is the argmax of its members' log-probabilities plus one offset per member (the parent's factor
does not change it), the offsets tuned on validation for the task's macro-F1
(:func:`best_macro_f1_offsets`: plain argmax under-predicts a rare member, as a 0.5 cut does a rare
label) and carried to held-out data the same way (artifacts without them: plain argmax). ROC-AUC / PR-AUC rank the
task's score on its rows (multi-class: the macro over members, one-vs-rest). Each task also gets the
macro-F1 of always predicting its majority class, the baseline a level must beat.
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score


def nanmean(values: Sequence[float]) -> float:
    """Mean of the non-NaN ``values``; NaN when there are none."""
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def roc_pr_auc(y: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(ROC-AUC, PR-AUC) of 0/1 ``y`` (n,) against ``scores`` (n,); NaN where undefined."""
    positives = int(y.sum())
    roc = float(roc_auc_score(y, scores)) if 0 < positives < len(y) else float("nan")
    pr = float(average_precision_score(y, scores)) if positives > 0 else float("nan")
    return roc, pr


def _class_f1s(y: np.ndarray, pred: np.ndarray, classes: int) -> np.ndarray:
    """(classes,) F1 of each class id from one confusion matrix of (n,) class ids ``y`` and ``pred``:
    2 TP / (2 TP + FP + FN), 0 for a class neither present nor predicted (sklearn's ``zero_division=0``).
    Without sklearn's checks: the offset search (:func:`best_macro_f1_offsets`) calls it hundreds of times."""
    confusion = np.bincount(y * classes + pred, minlength=classes * classes).reshape(classes, classes)
    tp = np.diag(confusion).astype(np.float64)
    denominator = confusion.sum(axis=0) + confusion.sum(axis=1)
    return np.divide(2 * tp, denominator, out=np.zeros(classes), where=denominator > 0)


def _macro_f1(y: np.ndarray, pred: np.ndarray, classes: int) -> tuple[float, list[float]]:
    """Macro-F1 over all ``classes`` class ids (an absent class that is never predicted scores 0, as
    OffensEval counts it) and the per-class F1s; NaN for an empty task."""
    if len(y) == 0:
        return float("nan"), [float("nan")] * classes
    per = _class_f1s(np.asarray(y, dtype=np.int64), np.asarray(pred, dtype=np.int64), classes)
    return float(np.mean(per)), [float(v) for v in per]


def _majority_macro_f1(y: np.ndarray, classes: int) -> float:
    """Macro-F1 of always predicting the most frequent class of ``y`` (lowest class id on a tie)."""
    if len(y) == 0:
        return float("nan")
    majority = int(np.argmax(np.bincount(y, minlength=classes)))
    return _macro_f1(y, np.full_like(y, majority), classes)[0]


def best_macro_f1_cut(y: np.ndarray, scores: np.ndarray) -> float:
    """The cut c maximising the 2-class macro-F1 of ``scores >= c`` against 0/1 ``y`` (both (n,)).

    Every distinct score is tried (plus "nothing positive" above the highest); ties go to the lowest cut.
    O(n log n): true/false positives above each cut come from one sort. 0.5 when ``y`` is empty.
    """
    y = np.asarray(y, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if len(y) == 0:
        return 0.5
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], y[order]
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]  # predicting positive up to each distinct score
    tp = np.cumsum(t)[last].astype(np.float64)
    fp = (last + 1) - tp
    pos, neg = float(t.sum()), float(len(t) - t.sum())
    tn, fn = neg - fp, pos - tp
    f1_pos = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros_like(tp), where=(2 * tp + fp + fn) > 0)
    f1_neg = np.divide(2 * tn, 2 * tn + fn + fp, out=np.zeros_like(tn), where=(2 * tn + fn + fp) > 0)
    macro = np.r_[(f1_pos + f1_neg) / 2, 0.5 * (2 * neg / (2 * neg + pos) if neg else 0.0)]
    cuts = np.r_[s[last], np.nextafter(s[0], np.inf)]
    best = np.flatnonzero(macro >= macro.max() - 1e-12)
    return float(cuts[best].min())


# Offsets tried per member (log-probability units), and sweeps over the members.
_OFFSETS = np.round(np.arange(-3.0, 3.0001, 0.05), 2)
_SWEEPS = 3


def group_decision(probs: np.ndarray, offsets: np.ndarray | None = None) -> np.ndarray:
    """(n,) member index decided for an exclusive group: argmax of log(``probs``) (n, k) + ``offsets`` (k,)."""
    probs = np.asarray(probs, dtype=np.float64)
    if offsets is None or not np.any(offsets):
        return np.argmax(probs, axis=1)
    return np.argmax(np.log(np.maximum(probs, 1e-12)) + np.asarray(offsets, dtype=np.float64), axis=1)


def best_macro_f1_offsets(y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per-member offsets (k,) maximising the macro-F1 of :func:`group_decision` against class ids ``y`` (n,).

    Coordinate ascent from all zeros (plain argmax): each member but the first in turn takes the offset of
    ``_OFFSETS`` with the best macro-F1 given the others (ties: the one nearest 0), ``_SWEEPS`` times. The
    first member stays at 0 (only differences between offsets change a decision). Zeros when ``y`` is empty.
    """
    y = np.asarray(y, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    k = probs.shape[1]
    offsets = np.zeros(k)
    if len(y) == 0 or k < 2:
        return offsets
    logp = np.log(np.maximum(probs, 1e-12))
    best = float(np.mean(_class_f1s(y, np.argmax(logp, axis=1), k)))
    by_distance = _OFFSETS[np.argsort(np.abs(_OFFSETS), kind="stable")]
    for _ in range(_SWEEPS):
        moved = False
        for j in range(1, k):
            for value in by_distance:
                trial = offsets.copy()
                trial[j] = value
                score = float(np.mean(_class_f1s(y, np.argmax(logp + trial, axis=1), k)))
                if score > best + 1e-12:
                    best, offsets, moved = score, trial, True
        if not moved:
            break
    return offsets


def conditional_scores(probs: np.ndarray, schema: Any) -> np.ndarray:
    """(N, L) scores of the level tasks: a top-level label's own probability, a child's P(child | parent).

    Args:
        probs: (N, L) marginal probabilities in ``schema.names`` order.
        schema: the ``LabelSchema``.

    Returns:
        (N, L) float64: ``probs[:, c] / probs[:, parent]`` for each child (0 where the parent's probability
        is 0), clipped to [0, 1]; top-level columns unchanged.
    """
    probs = np.asarray(probs, dtype=np.float64)
    out = probs.copy()
    index = {n: i for i, n in enumerate(schema.names)}
    for child, parent in schema.hierarchy:
        c, p = index[child], index[parent]
        out[:, c] = np.clip(np.divide(probs[:, c], probs[:, p], out=np.zeros(len(probs)), where=probs[:, p] > 0),
                            0.0, 1.0)
    return out


def level_cuts_of(metrics: dict[str, Any] | None) -> dict[str, float]:
    """What validation chose for the level tasks in ``metrics`` (validation metrics made by
    :func:`hierarchy_metrics`), to decide held-out data the same way: ``{child: cut}`` of the 2-class tasks
    under a parent and ``{member: offset}`` of the exclusive groups (a label is in one or the other). ``{}``
    for metrics without them (older artifacts: those children are decided at 0.5, groups by plain argmax)."""
    tasks = ((metrics or {}).get("levels") or {}).get("tasks") or []
    cuts = {t["labels"][0]: float(t["threshold"]) for t in tasks
            if t.get("kind") == "binary" and t.get("parent") and "threshold" in t}
    for t in tasks:
        if t.get("kind") == "multiclass" and isinstance(t.get("offsets"), dict):
            cuts.update({str(m): float(v) for m, v in t["offsets"].items()})
    return cuts


def _depths(names: Sequence[str], parent_of: dict[str, str]) -> dict[str, int]:
    depths = {}
    for name in names:
        depth, node = 0, name
        while node in parent_of:
            node, depth = parent_of[node], depth + 1
        depths[name] = depth
    return depths


def _binary_task(name: str, level: str, child: int, parent: str | None, rows: np.ndarray, y_true: np.ndarray,
                 scores: np.ndarray, cut: float | None, label: str) -> dict[str, Any]:
    """A child (or top-level label) as a 2-class task on ``rows`` (N,) bool, scored by ``scores`` (N, L)
    (:func:`conditional_scores`). Class 1 = the label is positive. ``cut`` None = tune it here for the
    task's macro-F1 (validation); the cut used is returned as ``threshold``."""
    y = y_true[rows, child].astype(np.int64)
    s = scores[rows, child]
    if cut is None:
        cut = best_macro_f1_cut(y, s)
    pred = (s >= cut).astype(np.int64)
    macro, (f1_neg, f1_pos) = _macro_f1(y, pred, 2)
    roc, pr = roc_pr_auc(y, s)
    return {"name": name, "level": level, "kind": "binary", "labels": [label], "parent": parent,
            "rows": int(rows.sum()), "macro_f1": macro, "majority_macro_f1": _majority_macro_f1(y, 2),
            "roc_auc": roc, "pr_auc": pr, "threshold": float(cut),
            "classes": {label: {"f1": f1_pos, "support": int(y.sum())},
                        f"not {label}": {"f1": f1_neg, "support": int(len(y) - y.sum())}}}


def _group_task(name: str, level: str, members: list[int], parent: str | None, rows: np.ndarray,
                y_true: np.ndarray, probs: np.ndarray, conditional: np.ndarray, labels: Sequence[str],
                offsets: np.ndarray | None) -> dict[str, Any]:
    """An exclusive group as one multi-class task decided by :func:`group_decision` over the members' (N, L)
    marginal ``probs`` (the same as over P(member | parent); the clipped ratios of a flat model could tie),
    ranked for ROC-AUC / PR-AUC by the (N, L) ``conditional`` scores, on the ``rows`` (N,) bool with exactly
    one member positive (``rows_without_class`` counts the rows of the parent with none). ``offsets`` (k,)
    None = tune them here for the task's macro-F1 (validation); the ones used are returned as ``offsets``."""
    group = y_true[:, members] > 0.5  # (N, k)
    scored = rows & (group.sum(axis=1) == 1)
    y = np.argmax(group[scored], axis=1)
    member_probs = probs[scored][:, members]
    if offsets is None:
        offsets = best_macro_f1_offsets(y, member_probs)
    pred = group_decision(member_probs, offsets) if len(y) else y
    scores = conditional[scored][:, members]  # (n, k)
    k = len(members)
    macro, per = _macro_f1(y, pred, k)
    aucs = [roc_pr_auc((y == j).astype(np.int64), scores[:, j]) for j in range(k)]
    names = [labels[m] for m in members]
    return {"name": name, "level": level, "kind": "multiclass", "labels": names, "parent": parent,
            "rows": int(scored.sum()), "rows_without_class": int((rows & (group.sum(axis=1) == 0)).sum()),
            "macro_f1": macro, "majority_macro_f1": _majority_macro_f1(y, k),
            "roc_auc": nanmean([a[0] for a in aucs]), "pr_auc": nanmean([a[1] for a in aucs]),
            "offsets": {n: float(offsets[j]) for j, n in enumerate(names)},
            "classes": {n: {"f1": per[j], "support": int((y == j).sum())} for j, n in enumerate(names)}}


def level_tasks(y_true: np.ndarray, probs: np.ndarray, thresholds: np.ndarray, schema: Any,
                level_cuts: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """Every task of every level (see the module docstring), level by level, in label order.

    Args:
        y_true: (N, L) 0/1 gold labels in ``schema.names`` order.
        probs: (N, L) marginal probabilities.
        thresholds: (L,) decision thresholds of the top-level 2-class tasks.
        schema: a ``compress.data.LabelSchema`` (names, hierarchy, exclusive groups).
        level_cuts: ``{child: cut}`` on P(child | parent) for the 2-class tasks under a parent and
            ``{member: offset}`` for exclusive groups (held-out data: :func:`level_cuts_of` the validation
            metrics; a child missing from it is cut at 0.5, a member offset 0); None = tune each on these
            rows (validation).

    Returns:
        One dict per task: ``name`` (e.g. ``"B: targeted | offensive"``), ``level`` (``"A"``, ``"B"``, ...),
        ``kind`` (binary / multiclass), ``labels``, ``parent``, ``rows``, ``macro_f1``,
        ``majority_macro_f1``, ``roc_auc``, ``pr_auc``, ``classes`` ({class: {f1, support}}) and, for a
        2-class task, the ``threshold`` it was decided at, for a group its members' ``offsets``.
    """
    names = list(schema.names)
    scores = conditional_scores(probs, schema)
    index = {n: i for i, n in enumerate(names)}
    parent_of = dict(schema.hierarchy)
    depths = _depths(names, parent_of)
    group_of = {n: tuple(g) for g in schema.exclusive for n in g}
    everything = np.ones(len(y_true), dtype=bool)
    tasks, done = [], set()
    for name in sorted(names, key=lambda n: (depths[n], index[n])):
        if name in done:
            continue
        level = string.ascii_uppercase[min(depths[name], 25)]
        parent = parent_of.get(name)
        rows = y_true[:, index[parent]] > 0.5 if parent else everything
        given = f" | {parent}" if parent else ""
        if name in group_of:
            group = list(group_of[name])
            done.update(group)
            offsets = None if level_cuts is None else np.array([level_cuts.get(g, 0.0) for g in group])
            tasks.append(_group_task(f"{level}: {' / '.join(group)}{given}", level, [index[g] for g in group],
                                     parent, rows, y_true, probs, scores, names, offsets))
        else:
            done.add(name)
            cut = float(thresholds[index[name]]) if not parent else \
                None if level_cuts is None else float(level_cuts.get(name, 0.5))
            tasks.append(_binary_task(f"{level}: {name}{given}", level, index[name], parent, rows, y_true, scores,
                                      cut, name))
    return tasks


def conditional_metrics(y_true: np.ndarray, probs: np.ndarray, tasks: Sequence[dict[str, Any]], schema: Any
                        ) -> dict[str, dict[str, Any]]:
    """Each child's ROC-AUC / PR-AUC of P(child | parent) and the F1 of its level task's decision (its cut,
    or its group's argmax), on the rows whose gold parent is positive.

    Args:
        y_true / probs: (N, L) gold labels and marginal probabilities.
        tasks: the :func:`level_tasks` of the same rows (their decisions).
        schema: the ``LabelSchema``.

    Returns:
        ``{child: {parent, rows, support, roc_auc, pr_auc, f1}}`` (``rows``: parent-positive rows,
        ``support``: the child's positives among them), in hierarchy order.
    """
    index = {n: i for i, n in enumerate(schema.names)}
    scores = conditional_scores(probs, schema)
    decided = {t["labels"][0]: t for t in tasks if t["kind"] == "binary"}
    groups = {n: t for t in tasks if t["kind"] == "multiclass" for n in t["labels"]}
    out = {}
    for child, parent in schema.hierarchy:
        c, rows = index[child], y_true[:, index[parent]] > 0.5
        y = y_true[rows, c].astype(np.int64)
        roc, pr = roc_pr_auc(y, scores[rows, c])
        if child in groups:  # the member is predicted where its group's decision picks it
            task = groups[child]
            members = [index[m] for m in task["labels"]]
            offsets = np.array([task.get("offsets", {}).get(m, 0.0) for m in task["labels"]])
            pred = (np.asarray(members)[group_decision(probs[rows][:, members], offsets)] == c).astype(np.int64)
        else:
            pred = (scores[rows, c] >= decided[child]["threshold"]).astype(np.int64)
        out[child] = {"parent": parent, "rows": int(rows.sum()), "support": int(y.sum()), "roc_auc": roc,
                      "pr_auc": pr, "f1": float(f1_score(y, pred, zero_division=0)) if len(y) else float("nan")}
    return out


def hierarchy_metrics(y_true: np.ndarray, probs: np.ndarray, thresholds: np.ndarray, schema: Any,
                      level_cuts: dict[str, float] | None = None) -> dict[str, Any]:
    """The keys :func:`compress.metrics.multilabel_metrics` adds for a schema.

    ``level_cuts``: see :func:`level_tasks` (None = tune the cuts on these rows: validation).

    Returns:
        ``levels``: ``{"tasks": [...], "by_level": {level: mean task macro-F1}}`` (:func:`level_tasks`);
        ``level_macro_f1``: the mean of the per-level means, so every level weighs the same however many
        labels it has (NaN when no task has rows); and, when the schema has a hierarchy, ``conditional``
        (:func:`conditional_metrics`).
    """
    y_true = np.asarray(y_true).astype(np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    tasks = level_tasks(y_true, probs, thresholds, schema, level_cuts)
    levels = sorted({t["level"] for t in tasks})
    by_level = {lv: nanmean([t["macro_f1"] for t in tasks if t["level"] == lv]) for lv in levels}
    out: dict[str, Any] = {"levels": {"tasks": tasks, "by_level": by_level},
                           "level_macro_f1": nanmean(list(by_level.values()))}
    if schema.hierarchy:
        out["conditional"] = conditional_metrics(y_true, probs, tasks, schema)
    return out
