"""bench accuracy: numbers equal compress.metrics on the same data, label alignment, hierarchy violations."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from bench import accuracy
from compress.artifact import read_info
from compress.data import LabelSchema, load_dataset
from compress.errors import DataError
from compress.hierarchy_metrics import level_cuts_of
from compress.metrics import multilabel_metrics
from export.runtime import load
from modcompress.cli import bench_main as main
from tests.bench.conftest import LABELS, jigsaw_rows


def _write_csv(path, texts, labels, names):
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", *names])
        for text, row in zip(texts, labels, strict=True):
            writer.writerow([text, *row.astype(int).tolist()])
    return path


def test_metrics_equal_compress_metrics_on_the_same_rows(tfidf_artifact, jigsaw_csv):
    report = accuracy.run([tfidf_artifact], jigsaw_csv)
    (row,) = report["rows"]
    assert row["status"] == "ok" and report["data"]["rows"] == 400
    data = load_dataset(jigsaw_csv)
    info = read_info(tfidf_artifact)
    probs = load(tfidf_artifact).predict(data.texts)
    expected = multilabel_metrics(data.labels, probs, LABELS, np.asarray(info.thresholds), info.schema(),
                                  level_cuts_of(info.metrics))  # the artifact's validation cuts, not re-tuned
    for key in ("macro_roc_auc", "macro_pr_auc", "macro_f1", "micro_f1", "subset_accuracy", "label_accuracy",
                "level_macro_f1"):
        assert row["metrics"][key] == pytest.approx(expected[key], abs=1e-9), key
    for name in LABELS:
        assert row["metrics"]["per_label"][name]["roc_auc"] == pytest.approx(expected["per_label"][name]["roc_auc"])
    (child, want), = expected["conditional"].items()
    got = row["metrics"]["conditional"][child]
    assert (child, got["parent"], got["rows"], got["support"]) == ("severe_toxic", "toxic", want["rows"], want["support"])
    assert [got[k] for k in ("roc_auc", "pr_auc", "f1")] == pytest.approx([want[k] for k in ("roc_auc", "pr_auc", "f1")])
    assert [t["name"] for t in row["metrics"]["levels"]["tasks"]] == [*(f"A: {n}" for n in LABELS if n != "severe_toxic"),
                                                                      "B: severe_toxic | toxic"]
    preds = probs >= np.asarray(info.thresholds)[None, :]
    violating = int((preds[:, LABELS.index("severe_toxic")] & ~preds[:, LABELS.index("toxic")]).sum())
    assert row["hierarchy_violations"]["per_pair"] == {"severe_toxic->toxic": violating}
    assert row["hierarchy_violations"]["rows"] == violating


def test_label_columns_are_aligned_to_the_artifact(tmp_path, tfidf_artifact):
    texts, labels = jigsaw_rows()
    shuffled = [5, 3, 0, 1, 4, 2]
    straight = _write_csv(tmp_path / "a.csv", texts, labels, LABELS)
    reordered = _write_csv(tmp_path / "b.csv", texts, labels[:, shuffled], [LABELS[j] for j in shuffled])
    a = accuracy.evaluate_artifact(tfidf_artifact, _generic(straight, LABELS))
    b = accuracy.evaluate_artifact(tfidf_artifact, _generic(reordered, [LABELS[j] for j in shuffled]))
    assert b["metrics"]["n"] == len(texts)
    assert a["metrics"]["macro_roc_auc"] == pytest.approx(b["metrics"]["macro_roc_auc"])
    assert a["metrics"]["per_label"] == b["metrics"]["per_label"]


def _generic(path, names):
    return load_dataset(path, format="csv", text_column="text", label_columns=names)


def test_label_mismatch_is_a_data_error(tmp_path, tfidf_artifact, capsys):
    texts, labels = jigsaw_rows(40)
    path = _write_csv(tmp_path / "other.csv", texts, labels[:, :2], ["toxic", "spam"])
    data = _generic(path, ["toxic", "spam"])
    with pytest.raises(DataError, match="missing severe_toxic"):
        accuracy.evaluate_artifact(tfidf_artifact, data)
    code = main(["accuracy", str(tfidf_artifact), "--data", str(path), "--format", "csv"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err


def test_predicted_violations_counts_child_without_parent():
    schema = LabelSchema.from_names(["a", "b", "c"], {"b": "a", "c": "b"})
    preds = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 1], [1, 0, 1], [0, 0, 0]])
    out = accuracy.predicted_violations(preds, schema)
    assert out["per_pair"] == {"b->a": 2, "c->b": 1}
    assert out["rows"] == 3 and out["rate"] == pytest.approx(0.6)


def test_validation_split_and_row_cap(jigsaw_csv):
    val = accuracy.load_eval_data(jigsaw_csv, split="val", val_fraction=0.25)
    assert len(val) == 100
    # the split compress train makes: its test rows, and its validation rows beside them
    from compress.config import DataConfig
    from compress.train import load_splits

    splits = load_splits(DataConfig(data=str(jigsaw_csv)))
    assert accuracy.load_eval_data(jigsaw_csv, split="test").texts == splits.test.texts
    assert accuracy.load_eval_data(jigsaw_csv, split="val").texts == splits.val.texts
    old = load_splits(DataConfig(data=str(jigsaw_csv), test_fraction=0))  # an artifact made before test splits
    assert accuracy.load_eval_data(jigsaw_csv, split="val", test_fraction=0).texts == old.val.texts
    with pytest.raises(DataError, match="no test split"):
        accuracy.load_eval_data(jigsaw_csv, split="test", test_fraction=0)
    assert len(accuracy.load_eval_data(jigsaw_csv, max_rows=50)) == 50


def test_cli_json_and_markdown(tmp_path, tfidf_artifact, jigsaw_csv, capsys):
    out = tmp_path / "acc.json"
    assert main(["accuracy", str(tfidf_artifact), "--data", str(jigsaw_csv), "--max-rows", "80",
                 "--json-out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["bench"] == "accuracy" and report["data"]["rows"] == 80
    md = capsys.readouterr().out
    assert "macro ROC-AUC" in md and "severe_toxic->toxic" in md
    # the per-level table (a pipe in a task name is escaped) and the conditional one
    level = report["rows"][0]["metrics"]["levels"]["tasks"][-1]
    assert (f"| B: severe_toxic \\| toxic | {level['rows']} | {level['majority_macro_f1']:.4f} | "
            f"{level['macro_f1']:.4f} / ") in md
    assert "| mean of the levels (level_macro_f1) |" in md and "| severe_toxic \\| toxic |" in md


def test_cli_logs_the_run_to_mlflow(tmp_path, tfidf_artifact, jigsaw_csv, capsys):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(["accuracy", str(tfidf_artifact), "--data", str(jigsaw_csv), "--json-out", str(tmp_path / "a.json"),
                 "--tracking-uri", uri]) == 0
    report = json.loads((tmp_path / "a.json").read_text())
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("modcompress").experiment_id])
    assert run.data.tags["command"] == "bench accuracy" and run.data.params["data"] == str(jigsaw_csv)
    assert run.data.metrics["rows/tfidf_sklearn/metrics/macro_roc_auc"] == report["rows"][0]["metrics"]["macro_roc_auc"]
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"report.json", "report.md"}
    downloaded = Path(client.download_artifacts(run.info.run_id, "report.md", str(tmp_path)))
    assert downloaded.read_text().strip() == capsys.readouterr().out.strip()
