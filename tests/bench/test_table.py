"""bench table / select: matching, parameter counts, the cost formula, selection and its explanations."""

from __future__ import annotations

import json
import shutil

import pytest

from bench import table
from compress.artifact import ArtifactInfo, read_info, write_info
from compress.errors import ConfigError
from modcompress.cli import bench_main as main
from tests.bench.conftest import LABELS


def test_cost_per_million_formula():
    # $0.36/h = $0.0001/s; 250 examples/s -> 4000 s per 1M -> $0.40
    assert table.cost_per_million(250.0, 0.36) == pytest.approx(0.40, rel=1e-12)
    assert table.cost_per_million(1000.0, 0.10) == pytest.approx(0.10 / 3600 / 1000 * 1e6, rel=1e-12)
    with pytest.raises(ValueError):
        table.cost_per_million(0.0, 0.10)


def _info(architecture: str, kind: str = "student", **kw) -> ArtifactInfo:
    return ArtifactInfo(kind=kind, architecture=architecture, labels=LABELS, **kw)


@pytest.mark.parametrize(("architecture", "kind", "row"), [
    ("tfidf", "baseline", "LogReg+TF-IDF"), ("fasttext", "baseline", "FastText"), ("textcnn", "student", "TextCNN"),
    ("bilstm", "student", "BiLSTM+Attn"), ("distilbert", "student", "DistilBERT"),
])
def test_match_by_architecture(architecture, kind, row):
    assert table.match_claimed(_info(architecture, kind), {}) == row


def test_hf_teacher_matches_bert_base_only_when_bert_base_sized():
    teacher = _info("hf", "teacher", recipe={"model": "minilm"})
    bert_base = {"model_type": "bert", "num_hidden_layers": 12, "hidden_size": 768}
    minilm = {"model_type": "bert", "num_hidden_layers": 6, "hidden_size": 384}
    assert table.match_claimed(teacher, bert_base) == "BERT-base"
    assert table.match_claimed(teacher, {"model_type": "roberta", "num_hidden_layers": 24,
                                         "hidden_size": 1024}) == "RoBERTa-large"
    assert table.match_claimed(teacher, minilm) is None
    assert table.extra_row_name(teacher, minilm) == "teacher (MiniLM-L6)"
    other = _info("hf", "teacher", recipe={"model": "some/checkpoint"})
    assert table.extra_row_name(other, {"model_type": "bert", "num_hidden_layers": 2, "hidden_size": 32}) == \
        "teacher (bert-L2-H32)"


def test_count_parameters_from_info_weights_and_parent(tmp_path, hf_artifact, tfidf_artifact):
    import torch
    from transformers import AutoModelForSequenceClassification

    info = read_info(tfidf_artifact)
    assert table.count_parameters(tfidf_artifact, info) == (info.extra["num_parameters"], "artifact.json")
    model = AutoModelForSequenceClassification.from_pretrained(str(hf_artifact / "model"))
    expected = sum(p.numel() for p in model.state_dict().values() if isinstance(p, torch.Tensor))
    count, source = table.count_parameters(hf_artifact, read_info(hf_artifact))
    assert (count, source) == (expected, "model.safetensors")
    child = tmp_path / "child"
    child.mkdir()
    write_info(child, ArtifactInfo(kind="onnx", architecture="hf", labels=LABELS, parent=str(hf_artifact)))
    assert table.count_parameters(child, read_info(child)) == (expected, "parent teacher (model.safetensors)")


def _fast_config(**kw) -> table.TableConfig:
    return table.TableConfig(seq_length=8, batch_size=4, iters=3, warmup=1, max_seconds=5.0, **kw)


def test_table_rows_claimed_beside_measured(tfidf_artifact):
    report = table.build_table([tfidf_artifact], _fast_config(dollars_per_hour=0.36))
    rows = {r["model"]: r for r in report["rows"]}
    assert [c.model for c in table.CLAIMED] == [r["model"] for r in report["rows"]]
    lr = rows["LogReg+TF-IDF"]
    assert lr["status"] == "ok" and lr["artifact"] == "tfidf" and lr["runtime"] == "sklearn"
    assert lr["claimed_numbers"]["latency_ms"] == 1 and lr["claimed_numbers"]["accuracy"] == 0.82
    assert lr["cost_per_1m"] == pytest.approx(0.36 / 3600 / lr["throughput"] * 1e6)
    assert lr["throughput_batch"] in (1, 4) and lr["latency_p50_ms"] > 0
    info = read_info(tfidf_artifact)
    assert lr["metrics"]["macro_roc_auc"] == pytest.approx(info.metrics["macro_roc_auc"])
    assert lr["metric_source"] == "artifact.json validation metrics"
    assert rows["GPT-4"]["status"] == "not measured" and "external API" in rows["GPT-4"]["reason"]
    assert "RoBERTa-large" in rows["RoBERTa-large"]["reason"]
    assert "no textcnn artifact" in rows["TextCNN"]["reason"]
    md = table.markdown(report)
    assert "compared with **macro ROC-AUC**" in md and "$0.36/h" in md
    assert "| GPT-4 | ~1T | 2000 ms | 0.98 | $30.00 |" in md


def test_table_measures_metrics_on_data_when_given(tfidf_artifact, jigsaw_csv):
    report = table.build_table([tfidf_artifact], _fast_config(data=str(jigsaw_csv), max_rows=100))
    lr = next(r for r in report["rows"] if r["model"] == "LogReg+TF-IDF")
    assert lr["metric_source"].startswith(f"measured on {jigsaw_csv}") and lr["metrics"]["macro_f1"] is not None


def test_minilm_teacher_is_an_extra_row(hf_artifact, tfidf_artifact):
    report = table.build_table([hf_artifact, tfidf_artifact], _fast_config())
    extra = report["rows"][-1]
    assert extra["model"] == "teacher (MiniLM-L2)" and extra["runtime"] == "torch"  # what auto resolved to
    assert extra["claimed_numbers"] is None and extra["status"] == "ok"
    assert next(r for r in report["rows"] if r["model"] == "BERT-base")["status"] == "not measured"


def _row(name, lat, roc, f1, cost, status="ok"):
    return {"model": name, "artifact": name.lower(), "status": status, "latency_p50_ms": lat, "cost_per_1m": cost,
            "metrics": {"macro_roc_auc": roc, "macro_f1": f1}, "metric_source": "artifact.json validation metrics"}


SYNTHETIC = {
    "bench": "table", "compared_metric": "macro_roc_auc", "dollars_per_hour": 0.1,
    "rows": [
        _row("TfIdf", 0.5, 0.80, 0.60, 0.01),
        _row("TextCNN", 2.0, 0.86, 0.66, 0.03),
        _row("BiLSTM", 9.0, 0.86, 0.67, 0.20),
        _row("DistilBERT", 40.0, 0.90, 0.72, 0.90),
        {"model": "GPT-4", "artifact": None, "status": "not measured", "reason": "external API"},
    ],
}


def test_select_picks_the_best_row_and_explains_rejections():
    result = table.select(SYNTHETIC, max_latency_ms=10, min_metrics={"macro_f1": 0.62}, max_cost=0.5)
    assert result["chosen"] == "TextCNN [textcnn]"  # ties BiLSTM on ROC-AUC, faster
    reasons = {r["row"]: "; ".join(r["reasons"]) for r in result["rejected"]}
    assert reasons["TfIdf [tfidf]"] == "macro-F1 0.6000 < 0.62"
    assert "ties with TextCNN [textcnn]" in reasons["BiLSTM [bilstm]"] and "slower" in reasons["BiLSTM [bilstm]"]
    assert reasons["DistilBERT [distilbert]"] == "latency 40.00 ms > 10 ms; cost $0.90/1M > $0.5"
    assert reasons["GPT-4"] == "not measured: external API"
    md = table.select_markdown(result)
    assert "**Selected: TextCNN [textcnn]**" in md


def test_select_a_lower_metric_is_explained():
    result = table.select(SYNTHETIC, max_latency_ms=100)
    assert result["chosen"] == "DistilBERT [distilbert]"
    reasons = {r["row"]: r["reasons"][0] for r in result["rejected"]}
    assert reasons["TfIdf [tfidf]"] == ("meets every requirement, but macro ROC-AUC 0.8000 < 0.9000 of "
                                        "DistilBERT [distilbert]")


def test_select_none_qualifies_exit_1(tmp_path, capsys):
    path = tmp_path / "table.json"
    path.write_text(json.dumps(SYNTHETIC))
    code = main(["select", "--from-table", str(path), "--max-latency-ms", "0.1"])
    out = capsys.readouterr().out
    assert code == 1
    assert "No row meets every requirement" in out and "latency 0.50 ms > 0.1 ms" in out
    assert main(["select", "--from-table", str(path), "--max-latency-ms", "5"]) == 0
    assert "**Selected: TextCNN [textcnn]**" in capsys.readouterr().out


def test_select_bad_input_is_one_line(tmp_path, capsys):
    path = tmp_path / "table.json"
    path.write_text(json.dumps(SYNTHETIC))
    assert main(["select", "--from-table", str(path), "--min-metric", "f2=0.3"]) == 2
    assert "min-metric" in capsys.readouterr().err
    assert main(["select", "--from-table", str(tmp_path / "missing.json")]) == 2
    assert "table file not found" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        table.parse_min_metrics(["macro_f1=high"])


def test_table_cli_defaults_to_runs_dir(tmp_path, runs_dir, capsys, monkeypatch):
    shutil.rmtree(runs_dir / "tfidf-b")
    out = tmp_path / "t.json"
    code = main(["table", "--runs-dir", str(runs_dir), "--seq-length", "8", "--batch-size", "2", "--iters", "3",
                 "--warmup", "1", "--json-out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert next(r for r in report["rows"] if r["model"] == "LogReg+TF-IDF")["artifact"] == "tfidf-a"
    assert "LogReg+TF-IDF" in capsys.readouterr().out
