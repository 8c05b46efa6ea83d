"""Per-level and conditional metrics against values computed by hand on a 10-row OLID-shaped example."""

from __future__ import annotations

import math

import numpy as np
import pytest

from compress.data import OLID_SCHEMA, LabelSchema
from compress.hierarchy_metrics import (
    best_macro_f1_cut,
    conditional_metrics,
    conditional_scores,
    hierarchy_metrics,
    level_cuts_of,
    level_tasks,
)
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
CUTS = {"targeted": 0.5}  # level B decided at P(targeted | offensive) >= 0.5
# P(targeted | offensive) on the 6 offensive rows 4..9: .6/.7, .7/.8, .4/.4, .8/.9, .55/.9, .45/.6
#   = .857 (UNT), .875 (TIN), 1.0 (TIN), .889 (TIN), .611 (TIN), .75 (UNT)


def _by_name(tasks):
    return {t["name"]: t for t in tasks}


def test_levels_of_olid_match_hand_computed_values():
    tasks = _by_name(level_tasks(Y, P, T, OLID_SCHEMA, CUTS))
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
    # B, the 6 offensive rows, by P(targeted | offensive) >= 0.5: all TIN -> F1(TIN) 8/10, F1(UNT) 0;
    # majority (4 TIN of 6): 0.4. Ranking: only .611 (TIN) sits below both UNT rows -> ROC-AUC 6/8
    assert (b["level"], b["rows"], b["parent"], b["threshold"]) == ("B", 6, "offensive", 0.5)
    assert b["macro_f1"] == pytest.approx(0.4)
    assert b["majority_macro_f1"] == pytest.approx(0.4)
    assert b["roc_auc"] == pytest.approx(6 / 8)
    assert b["pr_auc"] == pytest.approx((1 + 1 + 1 + 4 / 6) / 4)
    # the marginal P(targeted) would rank them worse (ROC-AUC 5/8): row 6's doubt about "offensive" is not
    # a doubt about "targeted"
    tuned = _by_name(level_tasks(Y, P, T, OLID_SCHEMA))["B: targeted | offensive"]
    # tuned on these rows: cut .875 -> TIN TP 3, FN 1 -> 6/7; UNT TP 2, FP 1 -> 4/5
    assert tuned["threshold"] == pytest.approx(0.875) and tuned["macro_f1"] == pytest.approx((6 / 7 + 4 / 5) / 2)
    # C, the 4 targeted rows, argmax: IND F1 1/2, GRP 2/3, OTH 0; majority (IND, 2 of 4): (2/3) / 3
    assert (c["level"], c["kind"], c["rows"], c["rows_without_class"]) == ("C", "multiclass", 4, 0)
    assert c["labels"] == ["target_individual", "target_group", "target_other"]
    assert c["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0) / 3)
    assert c["majority_macro_f1"] == pytest.approx(2 / 9)
    # one-vs-rest on the 4 rows by P(member | targeted): IND .714 / .25 (IND) vs .25 / .545 -> 2.5/4
    assert c["roc_auc"] == pytest.approx((0.625 + 1 + 1) / 3)
    assert c["pr_auc"] == pytest.approx((0.75 + 1 + 1) / 3)
    assert {k: v["support"] for k, v in c["classes"].items()} == {"target_individual": 2, "target_group": 1,
                                                                   "target_other": 1}


def test_conditional_metrics_score_each_child_on_the_rows_of_its_parent():
    cond = conditional_metrics(Y, P, level_tasks(Y, P, T, OLID_SCHEMA, CUTS), OLID_SCHEMA)
    assert list(cond) == ["targeted", "target_individual", "target_group", "target_other"]
    assert cond["targeted"] == {"parent": "offensive", "rows": 6, "support": 4, "roc_auc": pytest.approx(6 / 8),
                                "pr_auc": pytest.approx(0.9166666667), "f1": pytest.approx(0.8)}
    ind = cond["target_individual"]
    assert (ind["rows"], ind["support"]) == (4, 2)
    # F1 of the group's decision: IND is the argmax on rows 5 and 8, gold IND on rows 5 and 6 -> 1/2
    assert ind["roc_auc"] == pytest.approx(0.625) and ind["f1"] == pytest.approx(0.5)


def test_multilabel_metrics_adds_levels_beside_the_flat_metrics():
    flat = multilabel_metrics(Y, P, list(OLID_SCHEMA.names), T)
    full = multilabel_metrics(Y, P, list(OLID_SCHEMA.names), T, OLID_SCHEMA, CUTS)
    assert {k: v for k, v in full.items() if k in flat} == flat  # additive keys only
    assert full["levels"]["by_level"] == pytest.approx({"A": (10 / 12 + 0.75) / 2, "B": 0.4, "C": 7 / 18})
    assert full["level_macro_f1"] == pytest.approx(((10 / 12 + 0.75) / 2 + 0.4 + 7 / 18) / 3)
    assert summary(full)["level_macro_f1"] == full["level_macro_f1"] and "level_macro_f1" not in summary(flat)
    # unconditional targeted ROC-AUC over all rows is higher than among offensive rows: the flat view hides it
    assert full["per_label"]["targeted"]["roc_auc"] > full["conditional"]["targeted"]["roc_auc"]
    with pytest.raises(ValueError, match="schema labels"):
        multilabel_metrics(Y, P, ["a", "b", "c", "d", "e"], T, OLID_SCHEMA)


def test_each_level_weighs_the_same_however_many_labels_it_has():
    schema = LabelSchema.from_names(["a", "b", "c"], {"c": "a"})
    y = np.array([[1, 0, 1], [1, 1, 0], [0, 1, 0], [0, 0, 0]])
    p = np.array([[0.9, 0.1, 0.9], [0.8, 0.9, 0.2], [0.1, 0.8, 0.1], [0.2, 0.2, 0.3]])
    m = hierarchy_metrics(y, p, np.full(3, 0.5), schema, {"c": 0.5})
    assert [t["name"] for t in m["levels"]["tasks"]] == ["A: a", "A: b", "B: c | a"]
    assert m["levels"]["by_level"] == {"A": 1.0, "B": 1.0} and m["level_macro_f1"] == 1.0
    p_bad_c = p.copy()
    p_bad_c[:2, 2] = [0.1, 0.9]  # c wrong on both rows of its parent: level B macro-F1 0
    m = hierarchy_metrics(y, p_bad_c, np.full(3, 0.5), schema, {"c": 0.5})
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
    (task,) = level_tasks(y, p, np.full(3, 0.5), schema, {})  # no offsets: plain argmax
    assert task["name"] == "A: x / y / z" and task["parent"] is None
    assert (task["rows"], task["rows_without_class"]) == (4, 1)
    # argmax: x, y, z, x against x, y, z, y -> F1 x 2/3, y 2/3, z 1
    assert task["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert task["majority_macro_f1"] == pytest.approx((2 * 0.5 / 1.5) / 3)  # y: 2 of 4 rows
    # tuned (validation): the last row's y needs log .4 + o_y > log .5 (o_y > 0.223) while row 0 keeps x
    # (o_y < 1.25) and row 2 z (o_z - o_y > -0.51): the offset nearest 0 on the grid is 0.25 -> all right
    (tuned,) = level_tasks(y, p, np.full(3, 0.5), schema)
    assert tuned["offsets"] == {"x": 0.0, "y": pytest.approx(0.25), "z": 0.0} and tuned["macro_f1"] == 1.0


def test_conditional_scores_recover_p_child_given_parent():
    p_parent, p_child_given = np.array([0.8, 0.5, 0.0, 0.3]), np.array([0.25, 0.9, 0.7, 0.6])
    schema = LabelSchema.from_names(["a", "b"], {"b": "a"})
    marginals = np.stack([p_parent, p_parent * p_child_given], axis=1)  # what a conditional head outputs
    got = conditional_scores(marginals, schema)
    np.testing.assert_allclose(got[:, 0], p_parent)
    np.testing.assert_allclose(got[[0, 1, 3], 1], p_child_given[[0, 1, 3]])
    assert got[2, 1] == 0.0  # parent probability 0: no evidence for the child
    flat = np.array([[0.2, 0.5]])  # a flat model may say P(child) > P(parent): clipped
    assert conditional_scores(flat, schema)[0, 1] == 1.0


def test_best_macro_f1_cut_against_every_cut_by_hand():
    y = np.array([0, 1, 1, 1, 1, 0])
    s = np.array([0.857, 0.875, 1.0, 0.889, 0.611, 0.75])
    assert best_macro_f1_cut(y, s) == pytest.approx(0.875)  # macro (6/7 + 4/5) / 2, see the B task above
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    for _ in range(20):  # against brute force over every distinct score (and "nothing positive")
        y = rng.integers(0, 2, 40)
        s = np.round(rng.random(40), 1)  # ties
        cut = best_macro_f1_cut(y, s)
        brute = max(f1_score(y, (s >= c).astype(int), average="macro", labels=[0, 1], zero_division=0)
                    for c in [*np.unique(s), 2.0])
        assert f1_score(y, (s >= cut).astype(int), average="macro", labels=[0, 1], zero_division=0) \
            == pytest.approx(brute)
    assert best_macro_f1_cut(np.array([], dtype=int), np.array([])) == 0.5


def test_held_out_data_is_decided_at_the_cuts_validation_chose():
    val = multilabel_metrics(Y, P, list(OLID_SCHEMA.names), T, OLID_SCHEMA)  # cuts tuned here
    cuts = level_cuts_of(val)
    # C's offsets by hand (rows 5-8, gold IND IND GRP OTH; argmax IND GRP GRP IND: macro (1/2 + 2/3 + 0) / 3):
    # GRP -0.7 (in (-0.916, -0.693): row 6 turns IND, row 7 stays GRP) -> macro (4/5 + 1 + 0) / 3; then OTH
    # 0.45 (> 0.405: row 8 turns OTH, and row 6, a tie .1/.1 with IND, with it) -> (2/3 + 1 + 2/3) / 3
    assert cuts == {"targeted": pytest.approx(0.875), "target_individual": 0.0,
                    "target_group": pytest.approx(-0.7), "target_other": pytest.approx(0.45)}
    c_val = _by_name(val["levels"]["tasks"])["C: target_individual / target_group / target_other | targeted"]
    assert c_val["macro_f1"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    assert val["conditional"]["target_other"]["f1"] == pytest.approx(2 / 3)  # the same decisions
    y_test, p_test = Y[4:], P[4:]  # "held-out" rows: not tuned again
    test = multilabel_metrics(y_test, p_test, list(OLID_SCHEMA.names), T, OLID_SCHEMA, cuts)
    b = _by_name(test["levels"]["tasks"])["B: targeted | offensive"]
    assert b["threshold"] == pytest.approx(0.875)
    c = _by_name(test["levels"]["tasks"])["C: target_individual / target_group / target_other | targeted"]
    assert c["offsets"] == c_val["offsets"] and c["macro_f1"] == pytest.approx(c_val["macro_f1"])
    # metrics without cuts (artifacts made before them): children decided at 0.5
    assert level_cuts_of({"macro_f1": 0.5}) == {} and level_cuts_of(None) == {}
    old = multilabel_metrics(y_test, p_test, list(OLID_SCHEMA.names), T, OLID_SCHEMA, {})
    assert _by_name(old["levels"]["tasks"])["B: targeted | offensive"]["threshold"] == 0.5
    old_c = _by_name(old["levels"]["tasks"])["C: target_individual / target_group / target_other | targeted"]
    assert set(old_c["offsets"].values()) == {0.0} and old_c["macro_f1"] == pytest.approx((1 / 2 + 2 / 3) / 3)


def test_best_offsets_against_a_brute_force_grid():
    """Coordinate ascent finds what an exhaustive search over the same grid finds (3 members), on tie-heavy data."""
    import itertools

    from compress.hierarchy_metrics import _OFFSETS, _macro_f1, best_macro_f1_offsets, group_decision

    rng = np.random.default_rng(1)
    grid = _OFFSETS[::4]
    for _ in range(5):
        y = rng.integers(0, 3, 60)
        p = np.round(rng.dirichlet([1, 1, 1], 60) + 0.3 * np.eye(3)[y], 1)
        brute = max(_macro_f1(y, group_decision(p, np.array([0, a, b])), 3)[0]
                    for a, b in itertools.product(grid, grid))
        found = best_macro_f1_offsets(y, p)
        assert found[0] == 0.0
        assert _macro_f1(y, group_decision(p, found), 3)[0] >= brute - 0.02  # a local search on a finer grid
        assert _macro_f1(y, group_decision(p, found), 3)[0] >= _macro_f1(y, np.argmax(p, axis=1), 3)[0]
    assert list(best_macro_f1_offsets(np.array([], dtype=int), np.zeros((0, 3)))) == [0.0, 0.0, 0.0]


def test_per_class_f1_matches_sklearn_with_absent_and_unpredicted_classes():
    from sklearn.metrics import f1_score

    from compress.hierarchy_metrics import _macro_f1

    rng = np.random.default_rng(2)
    for k in (2, 3, 5):
        for _ in range(10):
            y, pred = rng.integers(0, k - 1, 30), rng.integers(0, k, 30)  # class k-1 never gold, maybe predicted
            macro, per = _macro_f1(y, pred, k)
            expected = f1_score(y, pred, labels=list(range(k)), average=None, zero_division=0)
            np.testing.assert_allclose(per, expected)
            assert macro == pytest.approx(float(np.mean(expected)))
    assert math.isnan(_macro_f1(np.array([], dtype=int), np.array([], dtype=int), 3)[0])
