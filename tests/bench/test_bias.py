"""bench accuracy --identity-columns: Jigsaw Unintended Bias-format data, hand-computed values, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bench import bias
from compress.artifact import ArtifactInfo, write_info
from compress.bias_metrics import bias_metrics
from compress.errors import ConfigError, DataError
from export.runtime import load
from modcompress.cli import bench_main as main
from tests.bench.conftest import jigsaw_rows

# The hand-counted example of tests/compress/test_bias_metrics.py, as a file in the Unintended Bias format:
# fractional target (>= 0.5 toxic) and identity columns (>= 0.5 mentioned; empty = nobody annotated it).
SCORES = {"t0": 0.9, "t1": 0.4, "t2": 0.6, "t3": 0.1, "t4": 0.8, "t5": 0.3, "t6": 0.7, "t7": 0.2}
ROWS = [  # id, comment_text, target, severe_toxicity, male, female, black
    ("1", "t0", "0.8", "0.1", "1.0", "0.0", ""),
    ("2", "t1", "0.5", "0.0", "0.5", "", ""),
    ("3", "t2", "0.2", "0.0", "0.9", "0.1", "0.0"),
    ("4", "t3", "0.0", "0.0", "", "0.6", ""),
    ("5", "t4", "0.6666667", "0.2", "0.4", "1.0", "0.0"),
    ("6", "t5", "0.4", "0.0", "0.0", "0.5", ""),
    ("7", "t6", "0.1", "0.0", "0.7", "0.0", "0.2"),
    ("8", "t7", "0.9", "0.3", "0.0", "0.8", "0.0"),
]


def _write(path, rows=ROWS, columns=("id", "comment_text", "target", "severe_toxicity", "male", "female", "black")):
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=False)
    return path


class _Scores:
    """A predictor whose ``toxic`` probability of each text is given (the second label gets 0.5)."""

    backend = "fake"
    max_batch_size = 3

    def predict(self, texts):
        return np.array([[SCORES[t], 0.5] for t in texts], dtype=np.float32)


@pytest.fixture
def scored(tmp_path, monkeypatch):
    artifact = tmp_path / "fake"
    artifact.mkdir()
    write_info(artifact, ArtifactInfo(kind="baseline", architecture="tfidf", labels=["toxic", "insult"]))
    monkeypatch.setattr("bench.artifacts.load_predictor", lambda *a, **k: _Scores())
    return artifact, _write(tmp_path / "civil.csv")


def test_bias_report_matches_hand_computed_values(scored):
    artifact, data = scored
    report = bias.run([artifact], data, ["male", "female", "black"])
    d = report["data"]
    assert (d["label"], d["target_column"], d["rows"], d["positives"]) == ("toxic", "target", 8, 4)
    assert d["identity_rows"] == {"male": 4, "female": 4, "black": 0}  # 0.5 counts, 0.4 and empty do not
    (row,) = report["rows"]
    b = row["bias"]
    assert b["overall_auc"] == pytest.approx(11 / 16)
    assert b["subgroups"]["male"]["subgroup_auc"] == pytest.approx(0.5)
    assert b["subgroups"]["female"]["bpsn_auc"] == pytest.approx(1.0)
    assert b["subgroups"]["female"]["bnsp_auc"] == pytest.approx(0.5)
    assert b["final_metric"] == pytest.approx(0.5973659051)
    md = bias.markdown(report)
    assert "| fake | fake | 0.6875 | 0.5603 | 0.5708 | 0.5708 | 0.5974 |" in md
    assert "| male | 4 | 2 | 0.5000 / 0.5000 / 1.0000 |" in md and "| black | 0 | 0 | — / — / — |" in md


def test_rows_are_scored_as_read_and_a_0_1_label_column_works(scored, tmp_path):
    artifact, _ = scored
    # a repeated text keeps its own annotations (no dedup), and a 0/1 "toxic" column is the truth without target
    rows = [(i, t, int(float(y) >= 0.5), m, f) for i, t, y, _s, m, f, _b in ROWS] + [("9", "t0", 1, "0.0", "1.0")]
    data = _write(tmp_path / "binary.csv", rows, ("id", "comment_text", "toxic", "male", "female"))
    loaded = bias.load_bias_data(data, ["male", "female"], "toxic")
    assert loaded.target_column == "toxic" and loaded.texts[-1] == "t0" and len(loaded.texts) == 9
    assert loaded.identities["male"].tolist() == [True, True, True, False, False, False, True, False, False]
    report = bias.run([artifact], data, ["male", "female"], max_rows=5, seed=1)
    assert report["data"]["rows"] == 5


def test_the_tfidf_artifact_scores_as_bias_metrics_says(tmp_path, tfidf_artifact):
    texts, labels = jigsaw_rows(80)
    rng = np.random.default_rng(0)
    male = rng.random(80).round(2)
    frame = pd.DataFrame({"id": range(80), "comment_text": texts, "target": labels[:, 0] * 0.8, "male": male})
    path = tmp_path / "civil.csv"
    frame.to_csv(path, index=False)
    report = bias.run([tfidf_artifact], path, ["male"])
    probs = load(tfidf_artifact).predict(texts)
    expected = bias_metrics(labels[:, 0], probs[:, 0], {"male": male >= 0.5})
    assert report["rows"][0]["bias"]["final_metric"] == pytest.approx(expected["final_metric"])
    assert report["rows"][0]["bias"]["subgroups"]["male"] == pytest.approx(expected["subgroups"]["male"])

    out = tmp_path / "bias.json"
    assert main(["accuracy", str(tfidf_artifact), "--data", str(path), "--identity-columns", "male",
                 "--json-out", str(out), "--no-tracking"]) == 0
    assert json.loads(out.read_text())["rows"][0]["bias"]["final_metric"] == pytest.approx(expected["final_metric"])


def test_bad_bias_inputs_are_one_line_errors(scored, capsys):
    artifact, data = scored
    with pytest.raises(DataError, match="no column.*'hindu'"):
        bias.run([artifact], data, ["male", "hindu"])
    with pytest.raises(ConfigError, match="no label 'obscene'"):
        bias.run([artifact], data, ["male"], label="obscene")
    with pytest.raises(DataError, match="neither 'target' nor 'insult'"):
        bias.run([artifact], _write(data.with_name("x.csv"), [r[:2] + r[4:] for r in ROWS],
                                    ("id", "comment_text", "male", "female", "black")), ["male"], label="insult")
    with pytest.raises(DataError, match=r"column 'id' has value '2' at data row 2 \(7 such row\(s\)\); it must hold"):
        bias.run([artifact], data, ["male"], target_column="id")
    with pytest.raises(ConfigError, match="given twice"):
        bias.parse_identity_columns("male,male")
    for argv in (["--identity-columns", "male,nope"], ["--identity-columns", ","],
                 ["--identity-columns", "male", "--split", "val"], ["--identity-columns", "male", "--bias-label", "x"]):
        assert main(["accuracy", str(artifact), "--data", str(data), "--no-tracking", *argv]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and err.startswith("error:") and "Traceback" not in err, err
