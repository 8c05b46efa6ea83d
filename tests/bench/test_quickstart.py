"""`compress quickstart`: the packaged sample, the teacher fallback, and the whole chain on a slice."""

from __future__ import annotations

import json

import pytest

from bench import quickstart as qs
from compress.artifact import read_info
from compress.data import load_dataset
from modcompress.cli import compress_main as main


@pytest.fixture(autouse=True)
def _restore_mlflow_tracking_uri():
    """The commands set MLflow's process-wide tracking URI; later tests must not log to this test's store."""
    import mlflow
    from mlflow.tracking._tracking_service.utils import is_tracking_uri_set

    previous = mlflow.get_tracking_uri() if is_tracking_uri_set() else None
    yield
    mlflow.set_tracking_uri(previous)


def test_sample_is_packaged_with_its_source_and_license():
    path = qs.sample_path()
    data = load_dataset(path)  # the format is detected from the header: the original OLID TSV
    assert data.schema.names == ("offensive", "targeted", "target_individual", "target_group", "target_other")
    assert len(data) == 2996 and data.duplicates_removed == 4  # 3,000 rows, 4 exact duplicates
    positives = dict(zip(data.schema.names, data.labels.sum(axis=0).tolist(), strict=True))
    assert positives == {"offensive": 997, "targeted": 878, "target_individual": 545, "target_group": 243,
                         "target_other": 90}
    readme = (path.parent / "README.md").read_text()
    assert "rmattam/offenseval" in readme and "states no license" in readme and "Zampieri" in readme
    assert "NAACL 2019" in readme


def test_limited_sample_keeps_format_and_label_mix(tmp_path):
    dst = tmp_path / "s.tsv.gz"
    assert qs.write_sample(dst, 300) == 300
    data = load_dataset(dst, format="olid")
    assert 295 <= len(data) <= 300
    share = data.labels[:, 0].mean()
    assert 0.25 < share < 0.42  # about a third offensive, as in the full sample


def test_teacher_falls_back_to_a_small_bert_built_from_the_sample(tmp_path, monkeypatch):
    monkeypatch.setattr("compress.models.teacher.offline_minilm_path", lambda: None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = ["you are an idiot @USER", "what a lovely day URL", "idiot idiot lovely day"] * 20
    model, kind, description = qs.choose_teacher("auto", tmp_path / "base", lambda: texts, 64)
    assert kind == "small" and "built from a config" in description
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    assert "idiot" in tok.get_vocab() and tok("lovely day")["input_ids"][0] == tok.cls_token_id
    config = AutoModelForSequenceClassification.from_pretrained(model).config
    assert config.num_hidden_layers == 2 and config.hidden_size == 128
    with pytest.raises(qs.UserError, match="not reachable"):
        qs.choose_teacher("hub", tmp_path / "b2", lambda: texts, 64)


@pytest.mark.parametrize("argv, message", [
    (["--limit", "10"], "limit: must be >= 100"),
    (["--teacher", "hub"], "not reachable"),
])
def test_bad_options_are_one_line_exit_2(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(["quickstart", "--out", str(tmp_path / "qs"), "--no-tracking", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error:") and message in err[-1], err


@pytest.mark.slow
def test_quickstart_runs_every_stage_on_a_slice(tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    out = tmp_path / "qs"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = main(["quickstart", "--out", str(out), "--limit", "200", "--teacher", "small", "--threads", "2",
                 "--tracking-uri", uri, "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    stages = {s["name"]: s for s in summary["stages"]}
    assert list(stages) == ["data", "teacher", "student", "int8", "onnx", "table"]
    assert summary["teacher"]["kind"] == "small"

    assert read_info(out / "teacher", kinds=["teacher"]).architecture == "hf"
    student = read_info(out / "student", kinds=["student"])
    assert student.architecture == "textcnn" and student.parent == str((out / "teacher").resolve())
    int8 = read_info(out / "student-int8", kinds=["quantized"])
    assert (out / "student-int8" / "model.onnx").is_file() and int8.extra["guard"]["rows"] > 0
    onnx = read_info(out / "student-onnx", kinds=["onnx"])
    assert (out / "student-onnx" / "model.onnx").is_file() and onnx.parent == str((out / "student").resolve())
    table = json.loads((out / "table.json").read_text())
    measured = {r["artifact"] for r in table["rows"] if r.get("status") == "ok"}
    assert measured == {"teacher", "student", "student-onnx", "student-int8"}
    assert "| TextCNN |" in (out / "table.md").read_text()

    # one MLflow run for the quickstart; the training stages are nested in it
    client = MlflowClient(uri)
    run = client.get_run(summary["mlflow_run_id"])
    children = client.search_runs([run.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert sorted(c.data.tags["stage"] for c in children) == ["distill", "train"]
    assert "student_onnx.latency_p50_ms" in run.data.metrics and "int8_auc_drop" in run.data.metrics
    assert {a.path for a in client.list_artifacts(run.info.run_id, "report")} >= {"report/table.md"}
