"""Per-level and conditional metrics against values computed by hand on a 10-row OLID-shaped example."""

from __future__ import annotations

import math

import numpy as np
import pytest

from compress.data import OLID_SCHEMA, LabelSchema
from compress.hierarchy_metrics import conditional_metrics, hierarchy_metrics, level_tasks
from compress.metrics import multilabel_metrics, summary

# offensive, targeted, target_individual, target_group, target_other
Y = np.array([
    [0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0],
    [1, 0, 0, 0, 0],  # untargeted
    [1, 1, 1, 0, 0],  # IND
    [1, 1, 1, 0, 0],  # IND
    [1, 1, 0, 1, 0],  # GRP
    [1, 1, 0, 0, 1],  # OTH
    [1, 0, 0, 0, 0],  # untargeted
])
P = np.array([
    [0.1, 0.05, 0.02, 0.02, 0.01],
    [0.2, 0.30, 0.10, 0.10, 0.10],
    [0.3, 0.10, 0.05, 0.05, 0.05],
    [0.6, 0.20, 0.10, 0.05, 0.05],  # offensive false positive
    [0.7, 0.60, 0.30, 0.20, 0.10],  # untargeted called targeted
    [0.8, 0.70, 0.50, 0.10, 0.10],  # IND right
    [0.4, 0.40, 0.10, 0.20, 0.10],  # missed offensive and targeted; argmax GRP
    [0.9, 0.80, 0.20, 0.50, 0.10],  # GRP right
    [0.9, 0.55, 0.30, 0.10, 0.20],  # OTH; argmax IND
    [0.6, 0.45, 0.10, 0.10, 0.10],  # untargeted right
])
T = np.full(5, 0.5)


def _by_name(tasks):
    return {t["name"]: t for t in tasks}


def test_levels_of_olid_match_hand_computed_values():
    tasks = _by_name(level_tasks(Y, P, T, OLID_SCHEMA))
    assert list(tasks) == ["A: offensive", "B: targeted | offensive",
                           "C: target_individual / target_group / target_other | targeted"]
    a, b, c = tasks.values()
    # A, all 10 rows: TP 5, FP 1, FN 1 -> F1(OFF) 10/12; F1(NOT) 6/8; majority (6 OFF of 10): 0.75 / 2
    assert (a["level"], a["kind"], a["rows"], a["parent"]) == ("A", "binary", 10, None)
    assert a["macro_f1"] == pytest.approx((10 / 12 + 6 / 8) / 2)
    assert a["classes"]["offensive"]["f1"] == pytest.approx(10 / 12)
    assert a["classes"]["not offensive"] == {"f1": pytest.approx(0.75), "support": 4}
    assert a["majority_macro_f1"] == pytest.approx(0.375)
    assert a["roc_auc"] == pytest.approx(22.5 / 24)
    # B, the 6 offensive rows: TP 3, FP 1, FN 1 -> F1(TIN) 6/8; F1(UNT) 2/4; majority (4 TIN of 6): 0.4
    assert (b["level"], b["rows"], b["parent"]) == ("B", 6, "offensive")
    assert b["macro_f1"] == pytest.approx(0.625)
    assert b["majority_macro_f1"] == pytest.approx(0.4)
    assert b["roc_auc"] == pytest.approx(5 / 8)
    assert b["pr_auc"] == pytest.approx(0.25 + 0.25 + 0.25 * 3 / 4 + 0.25 * 4 / 6)
    # C, the 4 targeted rows, argmax: IND F1 1/2, GRP 2/3, OTH 0; majority (IND, 2 of 4): (2/3) / 3
    assert (c["level"], c["kind"], c["rows"], c["rows_without_class"]) == ("C", "multiclass", 4, 0)
    assert c["labels"] == ["target_individual", "target_group", "target_other"]
    assert c["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0) / 3)
    assert c["majority_macro_f1"] == pytest.approx(2 / 9)
    assert c["roc_auc"] == pytest.approx((0.5 + 1 + 1) / 3)  # one-vs-rest on the 4 rows
    assert c["pr_auc"] == pytest.approx((0.75 + 1 + 1) / 3)
    assert {k: v["support"] for k, v in c["classes"].items()} == {"target_individual": 2, "target_group": 1,
                                                                   "target_other": 1}


def test_conditional_metrics_score_each_child_on_the_rows_of_its_parent():
    cond = conditional_metrics(Y, P, T, OLID_SCHEMA)
    assert list(cond) == ["targeted", "target_individual", "target_group", "target_other"]
    assert cond["targeted"] == {"parent": "offensive", "rows": 6, "support": 4, "roc_auc": pytest.approx(5 / 8),
                                "pr_auc": pytest.approx(0.8541666667), "f1": pytest.approx(0.75)}
    ind = cond["target_individual"]
    assert (ind["rows"], ind["support"]) == (4, 2)
    assert ind["roc_auc"] == pytest.approx(0.5) and ind["f1"] == pytest.approx(2 / 3)


def test_multilabel_metrics_adds_levels_beside_the_flat_metrics():
    flat = multilabel_metrics(Y, P, list(OLID_SCHEMA.names), T)
    full = multilabel_metrics(Y, P, list(OLID_SCHEMA.names), T, OLID_SCHEMA)
    assert {k: v for k, v in full.items() if k in flat} == flat  # additive keys only
    assert full["levels"]["by_level"] == pytest.approx({"A": (10 / 12 + 0.75) / 2, "B": 0.625, "C": 7 / 18})
    assert full["level_macro_f1"] == pytest.approx(((10 / 12 + 0.75) / 2 + 0.625 + 7 / 18) / 3)
    assert summary(full)["level_macro_f1"] == full["level_macro_f1"] and "level_macro_f1" not in summary(flat)
    # unconditional targeted ROC-AUC over all rows is higher than among offensive rows: the flat view hides it
    assert full["per_label"]["targeted"]["roc_auc"] > full["conditional"]["targeted"]["roc_auc"]
    with pytest.raises(ValueError, match="schema labels"):
        multilabel_metrics(Y, P, ["a", "b", "c", "d", "e"], T, OLID_SCHEMA)


def test_each_level_weighs_the_same_however_many_labels_it_has():
    schema = LabelSchema.from_names(["a", "b", "c"], {"c": "a"})
    y = np.array([[1, 0, 1], [1, 1, 0], [0, 1, 0], [0, 0, 0]])
    p = np.array([[0.9, 0.1, 0.9], [0.8, 0.9, 0.2], [0.1, 0.8, 0.1], [0.2, 0.2, 0.3]])
    m = hierarchy_metrics(y, p, np.full(3, 0.5), schema)
    assert [t["name"] for t in m["levels"]["tasks"]] == ["A: a", "A: b", "B: c | a"]
    assert m["levels"]["by_level"] == {"A": 1.0, "B": 1.0} and m["level_macro_f1"] == 1.0
    p_bad_c = p.copy()
    p_bad_c[:2, 2] = [0.1, 0.9]  # c wrong on both rows of its parent: level B macro-F1 0
    m = hierarchy_metrics(y, p_bad_c, np.full(3, 0.5), schema)
    assert m["levels"]["by_level"] == {"A": 1.0, "B": 0.0} and m["level_macro_f1"] == 0.5  # not (1 + 1 + 0) / 3


def test_a_level_without_rows_is_left_out_and_flat_schemas_have_level_a_only():
    schema = LabelSchema.from_names(["a", "b"], {"b": "a"})
    y = np.array([[0, 0], [0, 0], [0, 0]])
    p = np.array([[0.1, 0.2], [0.6, 0.1], [0.2, 0.1]])
    m = hierarchy_metrics(y, p, np.full(2, 0.5), schema)
    b = m["levels"]["tasks"][1]
    assert b["rows"] == 0 and math.isnan(b["macro_f1"]) and math.isnan(b["majority_macro_f1"])
    assert math.isnan(m["conditional"]["b"]["roc_auc"]) and math.isnan(m["conditional"]["b"]["f1"])
    assert list(m["levels"]["by_level"]) == ["A", "B"] and math.isnan(m["levels"]["by_level"]["B"])
    assert m["level_macro_f1"] == m["levels"]["by_level"]["A"]
    flat = hierarchy_metrics(y, p, np.full(2, 0.5), LabelSchema.from_names(["a", "b"]))
    assert [t["name"] for t in flat["levels"]["tasks"]] == ["A: a", "A: b"] and "conditional" not in flat


def test_exclusive_groups_skip_rows_with_no_member_and_may_be_top_level():
    schema = LabelSchema.from_names(["x", "y", "z"], None, [["x", "y", "z"]])
    y = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0], [0, 1, 0]])
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.3, 0.5], [0.9, 0.0, 0.0], [0.5, 0.4, 0.1]])
    (task,) = level_tasks(y, p, np.full(3, 0.5), schema)
    assert task["name"] == "A: x / y / z" and task["parent"] is None
    assert (task["rows"], task["rows_without_class"]) == (4, 1)
    # argmax: x, y, z, x against x, y, z, y -> F1 x 2/3, y 2/3, z 1
    assert task["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert task["majority_macro_f1"] == pytest.approx((2 * 0.5 / 1.5) / 3)  # y: 2 of 4 rows
