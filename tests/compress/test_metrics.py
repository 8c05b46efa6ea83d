import math

import numpy as np
import pytest

from compress.metrics import multilabel_metrics, tune_thresholds


def test_perfect_and_inverted_scores():
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    p = y * 0.8 + 0.1
    m = multilabel_metrics(y, p, ["a", "b"])
    assert m["macro_roc_auc"] == pytest.approx(1.0) and m["macro_f1"] == pytest.approx(1.0)
    assert m["subset_accuracy"] == pytest.approx(1.0)
    inverted = multilabel_metrics(y, 1 - p, ["a", "b"])
    assert inverted["macro_roc_auc"] == pytest.approx(0.0)


def test_matches_hand_computed_auc():
    y = np.array([[1], [0], [1], [0]])
    p = np.array([[0.9], [0.8], [0.3], [0.1]])
    # positive/negative pairs: (0.9>0.8) (0.9>0.1) (0.3<0.8) (0.3>0.1) -> 3/4
    assert multilabel_metrics(y, p, ["a"])["per_label"]["a"]["roc_auc"] == pytest.approx(0.75)


def test_single_class_label_is_nan_and_excluded():
    y = np.array([[1, 0], [0, 0], [1, 0]])
    p = np.array([[0.9, 0.2], [0.1, 0.3], [0.8, 0.1]])
    m = multilabel_metrics(y, p, ["a", "b"])
    assert math.isnan(m["per_label"]["b"]["roc_auc"])
    assert m["labels_without_auc"] == ["b"]
    assert m["macro_roc_auc"] == pytest.approx(1.0)


def test_tuned_thresholds_maximise_f1():
    rng = np.random.default_rng(0)
    y = (rng.random((300, 3)) < 0.2).astype(int)
    p = np.clip(y * 0.3 + rng.random((300, 3)) * 0.6, 0, 1)
    t = tune_thresholds(y, p)
    tuned = multilabel_metrics(y, p, ["a", "b", "c"], t)["macro_f1"]
    for grid in np.linspace(0.05, 0.95, 19):
        assert tuned >= multilabel_metrics(y, p, ["a", "b", "c"], np.full(3, grid))["macro_f1"] - 1e-9
