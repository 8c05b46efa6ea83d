"""Identity-bias metrics of one label (Borkan et al. 2019, "Nuanced Metrics for Measuring Unintended Bias
with Real Data for Text Classification"), and the final metric of the Jigsaw Unintended Bias in Toxicity
Classification competition.

For each identity subgroup (the rows that mention it) against the background (the rows that do not):

* subgroup AUC: ROC-AUC on the subgroup's rows alone (does the model tell toxic from not *within* it?);
* BPSN AUC (background positive, subgroup negative): on the subgroup's negatives plus the background's
  positives; low when the model scores harmless mentions of the identity above toxic texts elsewhere;
* BNSP AUC (background negative, subgroup positive): on the subgroup's positives plus the background's
  negatives; low when toxic texts about the identity score below harmless texts elsewhere.

Final metric: ``0.25 * overall AUC + 0.25 * (M(subgroup) + M(BPSN) + M(BNSP))``, i.e. 0.25 x overall +
0.75 x the mean of the three, where ``M`` is the generalized power mean over subgroups with p = -5, which
weighs the worst subgroups most. A subgroup whose AUC is undefined (one class among its rows) is left out
of that power mean.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from compress.hierarchy_metrics import roc_pr_auc

POWER = -5.0
OVERALL_WEIGHT = 0.25
BIAS_AUCS = ("subgroup_auc", "bpsn_auc", "bnsp_auc")


def _auc(y: np.ndarray, scores: np.ndarray, rows: np.ndarray) -> float:
    return roc_pr_auc(y[rows].astype(np.int64), scores[rows])[0]


def subgroup_auc(y: np.ndarray, scores: np.ndarray, in_group: np.ndarray) -> float:
    """ROC-AUC on the rows of the subgroup; ``y`` (N,) 0/1, ``scores`` (N,), ``in_group`` (N,) bool."""
    return _auc(y, scores, in_group)


def bpsn_auc(y: np.ndarray, scores: np.ndarray, in_group: np.ndarray) -> float:
    """ROC-AUC on the subgroup's negatives and the background's positives."""
    positive = y > 0.5
    return _auc(y, scores, (in_group & ~positive) | (~in_group & positive))


def bnsp_auc(y: np.ndarray, scores: np.ndarray, in_group: np.ndarray) -> float:
    """ROC-AUC on the subgroup's positives and the background's negatives."""
    positive = y > 0.5
    return _auc(y, scores, (in_group & positive) | (~in_group & ~positive))


def power_mean(values: Sequence[float], p: float = POWER) -> float:
    """Generalized mean ``(mean(v ** p)) ** (1 / p)`` of the non-NaN ``values`` (NaN when none; 0 when a
    value is 0, its limit for p < 0)."""
    finite = np.array([v for v in values if not math.isnan(v)], dtype=np.float64)
    if finite.size == 0:
        return float("nan")
    if p < 0 and (finite == 0).any():
        return 0.0
    return float(np.mean(finite ** p) ** (1.0 / p))


def bias_metrics(y: np.ndarray, scores: np.ndarray, identities: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """All bias metrics of one label.

    Args:
        y: (N,) 0/1 truth of the label.
        scores: (N,) the model's probabilities of it.
        identities: {identity: (N,) bool, True where the row mentions it}.

    Returns:
        ``overall_auc``; ``subgroups`` ({identity: {rows, positives, subgroup_auc, bpsn_auc, bnsp_auc}});
        ``power_means`` ({subgroup_auc, bpsn_auc, bnsp_auc}: the p = -5 mean over subgroups); and
        ``final_metric`` (NaN when the overall AUC or a power mean is undefined).
    """
    y = np.asarray(y).astype(np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    overall = roc_pr_auc(y, scores)[0]
    subgroups = {}
    for name, mask in identities.items():
        in_group = np.asarray(mask, dtype=bool)
        subgroups[name] = {"rows": int(in_group.sum()), "positives": int(y[in_group].sum()),
                           "subgroup_auc": subgroup_auc(y, scores, in_group),
                           "bpsn_auc": bpsn_auc(y, scores, in_group), "bnsp_auc": bnsp_auc(y, scores, in_group)}
    means = {key: power_mean([s[key] for s in subgroups.values()]) for key in BIAS_AUCS}
    final = OVERALL_WEIGHT * overall + (1 - OVERALL_WEIGHT) * float(np.mean(list(means.values())))
    return {"overall_auc": overall, "subgroups": subgroups, "power_means": means, "final_metric": float(final)}
