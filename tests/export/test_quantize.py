"""Quantization: every mode runs and reloads, the accuracy guard measures, falls back in order, and fails cleanly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from compress import quantize_torch as qt
from compress.artifact import read_info
from compress.errors import ArtifactError, ConfigError, DataError, UserError
from compress.models import load_model
from export import quantize as q
from export.quantize import QuantizeConfig, attempts_for, quantize
from export.runtime import load
from modcompress.cli import compress_main as main
from tests import fixtures
from tests.export import helpers
from tests.export.helpers import TRICKY_TEXTS, student_artifact

# session fixtures shared with tests/export (artifacts built in code)
tiny_teacher = helpers.tiny_teacher
trained_teacher = helpers.trained_teacher
trained_onnx = helpers.trained_onnx

TEXTS = fixtures.synthetic_rows(64, seed=7)[0] + TRICKY_TEXTS


@pytest.mark.parametrize("mode", ["int8-dynamic", "int8-static", "fp16", "bf16", "torch-int8-dynamic"])
def test_every_mode_runs_guards_and_reloads(tmp_path, trained_teacher, jigsaw_csv, mode):
    out = quantize(trained_teacher, QuantizeConfig(mode=mode, data=str(jigsaw_csv), out=str(tmp_path / mode),
                                                    calibration_samples=64, max_auc_drop=0.05))
    info = read_info(out, kinds=["quantized"])
    guard = info.extra["guard"]
    assert guard["split"] == "validation" and guard["rows"] == 40  # 10 % of the 400 rows
    assert guard["baseline_macro_roc_auc"] > 0.7  # the trained teacher has signal to lose
    chosen = guard["attempts"][-1]
    assert chosen["name"] == guard["chosen"] and chosen["passed"]
    if chosen.get("macro_roc_auc") is not None:
        assert chosen["drop"] == pytest.approx(guard["baseline_macro_roc_auc"] - chosen["macro_roc_auc"])
        assert info.metrics["macro_roc_auc"] == pytest.approx(chosen["macro_roc_auc"])
    assert info.extra["quantization"]["mode"] == mode
    assert info.parent == str(trained_teacher.resolve()) and info.labels == read_info(trained_teacher).labels

    predictor = load(out)  # auto: the backend the quantizer recorded
    assert predictor.backend == {"bf16": "torch-bf16", "torch-int8-dynamic": "torch-int8"}.get(mode, "ort")
    probs = predictor.predict(TEXTS)
    fp32 = load(trained_teacher, "torch").predict(TEXTS)
    assert probs.shape == fp32.shape and probs.dtype == np.float32
    assert np.abs(probs - fp32).mean() < 0.02  # close to fp32, and not identical except where nothing changed
    if mode in ("int8-dynamic", "int8-static", "torch-int8-dynamic"):
        assert np.abs(probs - fp32).max() > 0


def test_int8_dynamic_from_an_onnx_artifact_keeps_auc(tmp_path, trained_onnx, jigsaw_csv):
    out = quantize(trained_onnx, QuantizeConfig(mode="int8-dynamic", data=str(jigsaw_csv), out=str(tmp_path / "q"),
                                                per_channel=True))
    guard = read_info(out).extra["guard"]
    assert guard["attempts"][0]["per_channel"] is True
    assert abs(guard["attempts"][-1]["drop"]) <= 0.005
    import onnx

    ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeMatMul", "QAttention", "DynamicQuantizeLinear"}
    assert (out / "model.onnx").stat().st_size < (trained_onnx / "model.onnx").stat().st_size
    assert "onnx_export" not in read_info(out).extra  # it started from ONNX, nothing was exported


def test_torch_int8_reload_is_exact(tmp_path, trained_teacher):
    import torch

    out = quantize(trained_teacher, QuantizeConfig(mode="torch-int8-dynamic", out=str(tmp_path / "ti8")))
    assert (out / qt.TORCH_INT8_FILE).is_file() and (out / "model" / "config.json").is_file()
    model, tokenizer = qt.load_torch_int8(out)
    fresh = qt.torch_int8_dynamic(load_model(trained_teacher)[0],
                                 read_info(out).extra["quantization"]["modules"])
    batch = tokenizer(TEXTS[:8], padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.inference_mode():
        a = model(**batch).logits
        b = fresh(**batch).logits
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert "no --data" in read_info(out).extra["guard"]["skipped"]


def test_bf16_records_autocast(tmp_path, tiny_teacher):
    out = quantize(tiny_teacher, QuantizeConfig(mode="bf16", out=str(tmp_path / "bf")))
    info = read_info(out)
    assert "bfloat16" in info.extra["quantization"]["inference"] and info.extra["runtime"] == "torch-bf16"
    assert not (out / "model.onnx").exists() and (out / "model").is_dir()


def _fake_probs(good_from: int | None):
    """onnx_probs stand-in: fp32 ranks the labels perfectly; candidate k is noise unless k >= good_from."""
    state = {"calls": 0}

    def fake(path, encoded):
        state["calls"] += 1
        rng = np.random.default_rng(state["calls"])
        labels = fake.labels
        if "attempt" not in str(path):
            return labels * 0.8 + 0.1
        attempt = int(path.parent.name.removeprefix("attempt"))
        if good_from is not None and attempt >= good_from:
            return labels * 0.8 + 0.1
        return rng.random(labels.shape).astype(np.float32)

    return fake


def _guard_labels(csv, info):
    return q.load_guard_data(str(csv), None, info.labels, info.hierarchy, 0.1, 0, None).labels


def test_fallbacks_run_in_documented_order(tmp_path, trained_onnx, jigsaw_csv, monkeypatch):
    fake = _fake_probs(good_from=2)
    fake.labels = _guard_labels(jigsaw_csv, read_info(trained_onnx))
    monkeypatch.setattr(q, "onnx_probs", fake)
    # max_excluded=0: the node exclusion loop (tests/export/test_quantize_sensitivity.py) would come first
    out = quantize(trained_onnx, QuantizeConfig(mode="int8-dynamic", data=str(jigsaw_csv), out=str(tmp_path / "q"),
                                                per_channel=False, reduce_range=False, max_excluded=0))
    guard = read_info(out).extra["guard"]
    assert [a["name"] for a in guard["attempts"]] == ["requested", "per-channel", "per-channel+float-head"]
    assert [a["passed"] for a in guard["attempts"]] == [False, False, True]
    assert guard["baseline_macro_roc_auc"] == 1.0 and guard["attempts"][0]["drop"] > 0.2
    # dynamic quantizes MatMuls (the Gemm classifier stays float anyway): the last layer's two stay float
    excluded = read_info(out).extra["quantization"]["nodes_excluded"]
    assert excluded == q.head_nodes(trained_onnx / "model.onnx", ops=("MatMul",))
    assert len(excluded) == 2 and all("layer.1" in n for n in excluded)


def test_guard_failure_lists_every_attempt_and_writes_nothing(tmp_path, trained_onnx, jigsaw_csv, monkeypatch):
    fake = _fake_probs(good_from=None)
    fake.labels = _guard_labels(jigsaw_csv, read_info(trained_onnx))
    monkeypatch.setattr(q, "onnx_probs", fake)
    with pytest.raises(UserError) as exc:
        quantize(trained_onnx, QuantizeConfig(mode="int8-static", data=str(jigsaw_csv), out=str(tmp_path / "q"),
                                              calibration_samples=16, per_channel=False, reduce_range=False))
    message = str(exc.value)
    assert "\n" not in message and "macro ROC-AUC 1.0000 fp32" in message
    for name in ("requested drop", "per-channel drop", "per-channel+float-head+weight-ops-only drop",
                 "per-channel+float-head+weight-ops-only+reduce-range drop"):
        assert name in message
    assert not (tmp_path / "q").exists() and list(tmp_path.iterdir()) == []


def test_attempt_order_and_no_fallbacks():
    names = [a.name for a in attempts_for("int8-dynamic", per_channel=True, reduce_range=False)]
    assert names == ["requested", "per-channel+float-head", "per-channel+float-head+reduce-range"]
    assert [a.name for a in attempts_for("int8-static", False, False, fallbacks=False)] == ["requested"]
    assert [a.name for a in attempts_for("torch-int8-dynamic", False, False)] == ["requested", "float-head"]
    assert [a.name for a in attempts_for("bf16", False, False)] == ["requested"]


def test_calibration_reader_feeds_single_unpadded_texts(trained_teacher):
    _, tokenizer = load_model(trained_teacher)
    ids = q.calibration_ids(tokenizer, TEXTS, 16, 32, seed=0, source="x")
    reader = q.TextCalibrationReader(ids)
    batches = list(iter(reader.get_next, None))
    assert len(batches) == 16 and len(reader) == 16
    assert all(b["input_ids"].shape[0] == 1 and b["attention_mask"].all() for b in batches)
    assert {b["input_ids"].dtype for b in batches} == {np.dtype(np.int64)}


def test_head_nodes_find_the_classifier(trained_onnx, tmp_path, tiny_bert_dir):
    assert any("classifier" in n or "logits" in n for n in q.head_nodes(trained_onnx / "model.onnx"))
    from export.onnx import OnnxExportConfig, export_onnx

    cnn = export_onnx(student_artifact(tmp_path / "cnn", "textcnn", tiny_bert_dir),
                      OnnxExportConfig(out=str(tmp_path / "cnn-onnx"))).artifact
    assert len(q.head_nodes(cnn / "model.onnx", 1)) == 1


def test_own_architecture_int8_dynamic(tmp_path, tiny_bert_dir, jigsaw_csv):
    student = student_artifact(tmp_path / "cnn", "textcnn", tiny_bert_dir)
    out = quantize(student, QuantizeConfig(mode="int8-dynamic", data=str(jigsaw_csv), out=str(tmp_path / "q"),
                                           max_auc_drop=0.2))
    info = read_info(out)
    assert info.extra["onnx_export"]["exporter"] == "torch.onnx" and info.extra["onnx_export"]["optimize"] == "none"
    probs = load(out).predict(TEXTS)
    np.testing.assert_allclose(probs, load(student, "torch").predict(TEXTS), atol=0.02)


def test_bad_inputs_are_one_line_errors(tmp_path, tiny_teacher, trained_onnx, jigsaw_csv):
    with pytest.raises(ConfigError, match="mode"):
        QuantizeConfig(mode="int4")
    with pytest.raises(ConfigError, match="int8-static calibrates on real texts"):
        QuantizeConfig(mode="int8-static")
    with pytest.raises(ConfigError, match="calibration_method"):
        QuantizeConfig(mode="int8-dynamic", calibration_method="kl")
    with pytest.raises(DataError, match="only 360 texts are available for calibration.*--calibration-samples 360"):
        quantize(trained_onnx, QuantizeConfig(mode="int8-static", data=str(jigsaw_csv), calibration_samples=1000,
                                              out=str(tmp_path / "a")))
    other = tmp_path / "olid.tsv"  # OLID labels (offensive, targeted, ...) are not the artifact's Jigsaw labels
    other.write_text("id\ttweet\tsubtask_a\tsubtask_b\tsubtask_c\n1\t@USER you idiot\tOFF\tTIN\tIND\n"
                     "2\t@USER nice day\tNOT\tNULL\tNULL\n")
    with pytest.raises(DataError, match="labels do not match"):
        quantize(trained_onnx, QuantizeConfig(mode="int8-dynamic", data=str(other), out=str(tmp_path / "b")))
    with pytest.raises(ArtifactError, match="needs a PyTorch teacher or student"):
        quantize(trained_onnx, QuantizeConfig(mode="bf16", out=str(tmp_path / "c")))
    assert not any((tmp_path / n).exists() for n in "abc")


def test_cli(tmp_path, tiny_teacher, jigsaw_csv, capsys):
    from mlflow.tracking import MlflowClient

    out = tmp_path / "cli"
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(["quantize", str(tiny_teacher), "--mode", "torch-int8-dynamic", "--data", str(jigsaw_csv),
                 "--out", str(out), "--max-auc-drop", "0.5", "--json", "--tracking-uri", uri]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["artifact"] == str(out) and payload["runtime"] == "torch-int8"
    assert payload["attempts"][0]["name"] == "requested" and payload["drop"] is not None
    # logged to MLflow: options, the guard's numbers, the result and the artifact's artifact.json
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("modcompress").experiment_id])
    assert run.data.tags["command"] == "compress quantize torch-int8-dynamic"
    assert run.data.params["mode"] == "torch-int8-dynamic" and run.data.params["max_auc_drop"] == "0.5"
    assert run.data.metrics["macro_roc_auc"] == pytest.approx(payload["macro_roc_auc"])
    assert run.data.metrics["attempts/requested/drop"] == pytest.approx(payload["drop"])
    logged = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"result.json", "artifact.json"} <= logged
    assert main(["quantize", str(tiny_teacher), "--mode", "int8-static", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: data: int8-static")
