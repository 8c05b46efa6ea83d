"""Baselines: the `compress baseline` recipe writes artifacts with tuned thresholds and metrics."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from compress.artifact import read_info
from compress.baseline import baseline, load_baseline_config
from compress.metrics import multilabel_metrics
from compress.models import load_baseline
from modcompress.cli import compress_main as main

pytestmark = pytest.mark.usefixtures("one_thread")


def _val(jigsaw_csv):
    from compress.config import DataConfig
    from compress.train import load_splits

    return load_splits(DataConfig(data=str(jigsaw_csv))).val


def test_tfidf_via_cli_writes_a_baseline_artifact(tmp_path, jigsaw_csv, capsys):
    out = tmp_path / "tfidf"
    assert main(["baseline", "tfidf", "--data", str(jigsaw_csv), "--out", str(out), "--no-tracking", "--json",
                 "params.C=2", "params.word_ngrams=1,2"]) == 0
    payload = json.loads(capsys.readouterr().out)
    info = read_info(out, kinds=["baseline"])
    assert info.architecture == "tfidf" and info.parent is None and len(info.thresholds) == 6
    assert info.recipe["params"]["C"] == 2.0 and info.recipe["params"]["word_ngrams"] == [1, 2]
    assert info.metrics["macro_roc_auc"] > 0.85, info.metrics["macro_roc_auc"]
    assert payload["num_parameters"] == info.extra["num_parameters"] > 0
    assert not (tmp_path / "tfidf.checkpoint").exists()

    # the reloaded baseline reproduces the stored validation metrics at the stored thresholds
    val = _val(jigsaw_csv)
    probs = load_baseline(out).predict_proba(val.texts)
    again = multilabel_metrics(val.labels, probs, info.labels, np.asarray(info.thresholds))
    assert again["macro_f1"] == pytest.approx(info.metrics["macro_f1"], abs=1e-9)
    assert again["macro_roc_auc"] == pytest.approx(info.metrics["macro_roc_auc"], abs=1e-9)
    # and its test split, scored once at the validation thresholds
    from compress.config import DataConfig
    from compress.train import load_splits

    test = load_splits(DataConfig(data=str(jigsaw_csv))).test
    # at the validation thresholds and the validation's level cuts (P(child | parent)), nothing re-tuned
    from compress.hierarchy_metrics import level_cuts_of

    cuts = level_cuts_of(info.metrics)
    assert set(cuts) == {"severe_toxic"}
    again = multilabel_metrics(test.labels, load_baseline(out).predict_proba(test.texts), info.labels,
                               np.asarray(info.thresholds), info.schema(), cuts)
    assert info.extra["test_rows"] == info.metrics["test"]["n"] == 40
    for key in ("macro_f1", "macro_roc_auc", "level_macro_f1"):
        assert again[key] == pytest.approx(info.metrics["test"][key], abs=1e-9), key
    assert payload["test"]["macro_f1"] == pytest.approx(info.metrics["test"]["macro_f1"])


def test_fasttext_learns(tmp_path, jigsaw_csv):
    config = load_baseline_config("fasttext", None, [
        f"data.data={jigsaw_csv}", f"out={tmp_path / 'ft'}", "tracking.enabled=false", "params.dim=16",
        "params.buckets=20000", "optim.epochs=6", "optim.lr=2e-2", "optim.batch_size=16"])
    result = baseline(config)
    assert result.metrics["macro_roc_auc"] > 0.8, result.metrics["macro_roc_auc"]
    info = read_info(tmp_path / "ft", kinds=["baseline"])
    assert info.architecture == "fasttext" and info.extra["num_parameters"] == 16 * 20000 + 16 * 6 + 6
    assert info.extra["best_epoch"] >= 1 and len(info.extra["history"]) >= 1
    val = _val(jigsaw_csv)
    np.testing.assert_array_equal(load_baseline(tmp_path / "ft").predict_proba(val.texts[:8]),
                                  result.model.predict_proba(val.texts[:8]))


@pytest.mark.parametrize("args, message", [
    (["svm"], "unknown baseline 'svm'; known: tfidf, fasttext"),
    (["tfidf", "params.penalty=l1"], "params.penalty: unknown parameter of tfidf"),
    (["tfidf", "--data", "/nonexistent.csv"], "not found"),
    (["fasttext", "params.buckets=1"], "buckets"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, jigsaw_csv, capsys, args, message):
    out = tmp_path / "out"
    data = [] if "--data" in args else ["--data", str(jigsaw_csv)]
    code = main(["baseline", *args[:1], *data, "--out", str(out), "--no-tracking", *args[1:]])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and len(err.splitlines()) == 1, err
    assert re.search(message, err), err
    assert not out.exists() and not (tmp_path / "out.checkpoint").exists()
