"""Identity-bias metrics (Borkan et al. 2019; the Jigsaw Unintended Bias final metric) against hand-counted AUCs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from compress.bias_metrics import bias_metrics, bnsp_auc, bpsn_auc, power_mean, subgroup_auc

Y = np.array([1, 1, 0, 0, 1, 0, 0, 1])
S = np.array([0.9, 0.4, 0.6, 0.1, 0.8, 0.3, 0.7, 0.2])
MALE = np.array([1, 1, 1, 0, 0, 0, 1, 0], dtype=bool)  # rows 0, 1, 2, 6
FEMALE = ~MALE  # rows 3, 4, 5, 7


def test_the_three_aucs_pick_their_rows():
    # male rows: positives .9 .4, negatives .6 .7 -> .9 beats both, .4 neither: 2 of 4 pairs
    assert subgroup_auc(Y, S, MALE) == pytest.approx(0.5)
    # male negatives .6 .7 against background positives .8 .2: .8 beats both, .2 neither
    assert bpsn_auc(Y, S, MALE) == pytest.approx(0.5)
    # male positives .9 .4 against background negatives .1 .3: all 4 pairs right
    assert bnsp_auc(Y, S, MALE) == pytest.approx(1.0)
    # female: positives .8 .2, negatives .1 .3 -> 3 of 4; BPSN .1 .3 vs .9 .4 -> 4 of 4; BNSP .8 .2 vs .6 .7 -> 2
    assert subgroup_auc(Y, S, FEMALE) == pytest.approx(0.75)
    assert bpsn_auc(Y, S, FEMALE) == pytest.approx(1.0)
    assert bnsp_auc(Y, S, FEMALE) == pytest.approx(0.5)


def test_power_mean_p_minus_5_weighs_the_worst_subgroup():
    assert power_mean([0.5, 0.75]) == pytest.approx(((0.5 ** -5 + 0.75 ** -5) / 2) ** (-1 / 5))
    assert power_mean([0.5, 0.75]) == pytest.approx(0.5603130266)  # far below the arithmetic mean 0.625
    assert power_mean([0.8, 0.8, 0.8]) == pytest.approx(0.8)
    assert power_mean([0.9, float("nan")]) == pytest.approx(0.9)  # an undefined subgroup is left out
    assert math.isnan(power_mean([float("nan")])) and power_mean([0.0, 0.9]) == 0.0


def test_bias_metrics_and_the_kaggle_final_metric():
    empty = np.zeros(len(Y), dtype=bool)  # an identity no row mentions: its AUCs are undefined
    m = bias_metrics(Y, S, {"male": MALE, "female": FEMALE, "black": empty})
    # overall: .9 and .8 beat all 4 negatives, .4 beats .1 .3, .2 beats .1 -> 11 of 16 pairs
    assert m["overall_auc"] == pytest.approx(11 / 16)
    assert m["subgroups"]["male"] == {"rows": 4, "positives": 2, "subgroup_auc": pytest.approx(0.5),
                                      "bpsn_auc": pytest.approx(0.5), "bnsp_auc": pytest.approx(1.0)}
    black = m["subgroups"]["black"]
    assert black["rows"] == 0 and all(math.isnan(black[k]) for k in ("subgroup_auc", "bpsn_auc", "bnsp_auc"))
    sub = ((0.5 ** -5 + 0.75 ** -5) / 2) ** -0.2
    cross = ((0.5 ** -5 + 1.0 ** -5) / 2) ** -0.2  # BPSN (0.5, 1.0) and BNSP (1.0, 0.5)
    assert m["power_means"] == {"subgroup_auc": pytest.approx(sub), "bpsn_auc": pytest.approx(cross),
                                "bnsp_auc": pytest.approx(cross)}
    assert m["final_metric"] == pytest.approx(0.25 * 11 / 16 + 0.25 * (sub + 2 * cross))
    assert m["final_metric"] == pytest.approx(0.5973659051)
    assert math.isnan(bias_metrics(Y, S, {"black": empty})["final_metric"])
