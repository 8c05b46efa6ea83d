"""bench latency: the grid's structure, percentiles, ratios, skips and the CLI."""

from __future__ import annotations

import json

import pytest

from bench import latency
from bench.artifacts import find_artifacts
from bench.inputs import read_texts
from compress.errors import ConfigError
from modcompress.cli import bench_main as main

FAST = {"warmup": 1, "iters": 5, "max_seconds": 5.0}


def test_grid_structure_percentiles_and_self_ratio(tfidf_artifact):
    config = latency.LatencyConfig(runtimes=("torch", "ort"), batch_sizes=(1, 4), seq_lengths=(8, 32), **FAST)
    report = latency.run([tfidf_artifact], config)
    ok = [r for r in report["rows"] if r["status"] == "ok"]
    assert {(r["batch_size"], r["seq_length"]) for r in ok} == {(1, 8), (4, 8), (1, 32), (4, 32)}
    for r in ok:
        assert r["name"] == "tfidf/sklearn" and r["length_unit"] == "words"  # a baseline's torch = its own library
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        assert r["throughput"] > 0 and 1 <= r["iters"] <= 5
        assert r["speedup"] == pytest.approx(1.0) and r["throughput_ratio"] == pytest.approx(1.0)
    assert report["baseline"] == "tfidf/sklearn"
    skipped = [r for r in report["rows"] if r["status"] == "skipped"]
    assert [r["name"] for r in skipped] == ["tfidf/ort"]
    assert "no model.onnx" in skipped[0]["reason"]
    md = latency.markdown(report)
    assert "| tfidf/sklearn | 4 | 32 words |" in md and "tfidf/ort" in md and "skipped" in md


def test_runtimes_resolving_to_one_backend_are_measured_once(tfidf_artifact):
    config = latency.LatencyConfig(runtimes=("auto", "torch", "sklearn"), batch_sizes=(1,), seq_lengths=(8,), **FAST)
    rows = latency.run([tfidf_artifact], config)["rows"]
    assert [(r["name"], r["runtime"]) for r in rows] == [("tfidf/sklearn", "auto")]


def test_ratios_against_a_named_baseline(runs_dir):
    config = latency.LatencyConfig(batch_sizes=(2,), seq_lengths=(8,), baseline="tfidf-b/sklearn", **FAST)
    report = latency.run(find_artifacts(runs_dir), config)
    rows = {r["name"]: r for r in report["rows"]}
    assert rows["tfidf-b/sklearn"]["speedup"] == pytest.approx(1.0)
    a, b = rows["tfidf-a/sklearn"], rows["tfidf-b/sklearn"]
    assert a["speedup"] == pytest.approx(b["p50_ms"] / a["p50_ms"])
    assert a["throughput_ratio"] == pytest.approx(a["throughput"] / b["throughput"])
    with pytest.raises(ConfigError, match="no measured row is named 'nope/torch'"):
        latency.add_ratios(report["rows"], "nope/torch")


def test_real_lengths_mode_samples_real_texts(tfidf_artifact, jigsaw_csv):
    texts = read_texts(jigsaw_csv)
    config = latency.LatencyConfig(batch_sizes=(4,), real_texts=tuple(texts),
                                   real_source=str(jigsaw_csv), **FAST)
    report = latency.run([tfidf_artifact], config)
    (row,) = report["rows"]
    assert row["seq_length"] == latency.REAL and row["mean_length"] > 3
    assert "real (mean" in latency.markdown(report)


def test_gpu_runtime_is_skipped_with_the_reason_on_a_cpu_box(hf_artifact):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    rows = latency.benchmark_artifact(hf_artifact, "tensorrt", latency.LatencyConfig(**FAST))
    assert [(r["status"], r["reason"]) for r in rows] == [("skipped", "tensorrt needs a CUDA GPU and this machine "
                                                                       "has none")]


def test_hf_artifact_grid_skips_lengths_over_max_length(hf_artifact):
    config = latency.LatencyConfig(runtimes=("auto", "torch", "ort"), batch_sizes=(1, 2), seq_lengths=(16, 64),
                                   **FAST)
    rows = latency.run([hf_artifact], config)["rows"]
    ok = [r for r in rows if r["status"] == "ok"]
    assert {(r["name"], r["batch_size"], r["seq_length"]) for r in ok} == {("teacher/torch", 1, 16),
                                                                          ("teacher/torch", 2, 16)}
    assert [r["reason"] for r in rows if r["name"] == "teacher/ort"][0].endswith(
        "(`modcompress-export onnx` makes one)")
    assert all(r["length_unit"] == "tokens" for r in ok)
    over = [r for r in rows if r["seq_length"] == 64]
    assert over and all(r["status"] == "skipped" and "max_length 32" in r["reason"] for r in over)


def test_in_graph_tokenizer_row_beside_tokenize_then_run(text_onnx_artifact, hf_artifact):
    """ort (Hugging Face tokenizer, then model.onnx) and ort-text (strings into model_with_tokenizer.onnx)."""
    from bench.inputs import DEFAULT_TEXTS

    config = latency.LatencyConfig(runtimes=("ort", "ort-text"), batch_sizes=(1, 4), real_texts=tuple(DEFAULT_TEXTS),
                                   real_source="built-in", baseline="teacher-onnx/ort", **FAST)
    report = latency.run([text_onnx_artifact, hf_artifact], config)
    rows = {(r["name"], r["batch_size"]): r for r in report["rows"]}
    for batch in (1, 4):
        ids, text = rows[("teacher-onnx/ort", batch)], rows[("teacher-onnx/ort-text", batch)]
        assert ids["status"] == text["status"] == "ok" and text["runtime"] == "ort-text"
        assert text["mean_length"] == ids["mean_length"]  # the same sampled texts
        assert text["speedup"] == pytest.approx(ids["p50_ms"] / text["p50_ms"])
    skipped = rows[("teacher/ort-text", None)]
    assert skipped["status"] == "skipped" and "no model_with_tokenizer.onnx" in skipped["reason"]
    assert "| teacher-onnx/ort-text | 4 | real (mean" in latency.markdown(report)


def test_triton_endpoint_as_a_runtime(tfidf_artifact, server):
    config = latency.LatencyConfig(runtimes=("auto", "triton"), batch_sizes=(1, 32), seq_lengths=(8,),
                                   url=server.http_url, **FAST)
    rows = {(r["name"], r["batch_size"]): r for r in latency.run([tfidf_artifact], config)["rows"]}
    assert rows[("tfidf/triton", 1)]["status"] == "ok"
    assert rows[("tfidf/triton", 1)]["p50_ms"] > 0
    assert rows[("tfidf/triton", 32)]["status"] == "skipped"  # the server's max batch size is 16
    assert "max batch size 16" in rows[("tfidf/triton", 32)]["reason"]


def test_triton_runtime_needs_a_url():
    with pytest.raises(ConfigError, match="--url"):
        latency.LatencyConfig(runtimes=("triton",))


def test_cli_writes_json_and_markdown(tmp_path, tfidf_artifact, capsys):
    out_json, out_md = tmp_path / "lat.json", tmp_path / "lat.md"
    code = main(["latency", str(tfidf_artifact), "--runtimes", "torch", "--batch-sizes", "1,2", "--seq-lengths", "8",
                 "--iters", "3", "--warmup", "1", "--json-out", str(out_json), "--md-out", str(out_md)])
    assert code == 0
    report = json.loads(out_json.read_text())
    assert report["bench"] == "latency" and len(report["rows"]) == 2
    assert out_md.read_text() in capsys.readouterr().out


def test_cli_without_artifacts_says_where_it_looked(tmp_path, capsys):
    code = main(["latency", "--runs-dir", str(tmp_path / "nothing")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "no artifacts found under" in err and "Traceback" not in err


def test_cli_rejects_bad_lists_and_unknown_runtimes(tfidf_artifact, capsys):
    assert main(["latency", str(tfidf_artifact), "--batch-sizes", "1,x"]) == 2
    assert "--batch-sizes" in capsys.readouterr().err
    assert main(["latency", str(tfidf_artifact), "--runtimes", "onnx"]) == 2
    assert "unknown runtime 'onnx'" in capsys.readouterr().err


def test_torch_fp32_and_bf16_rows_and_what_auto_chose(hf_artifact, monkeypatch, tmp_path):
    from compress import precision
    from compress.precision_probe import InferenceProbe

    monkeypatch.delenv(precision.AUTO_INFERENCE_ENV, raising=False)
    monkeypatch.setenv("MODCOMPRESS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(precision, "fast_bf16", lambda: True)
    monkeypatch.setattr(InferenceProbe, "measure", lambda probe: (0.040, 0.010))  # bf16 4x faster
    config = latency.LatencyConfig(runtimes=("torch", "torch-bf16", "auto"), batch_sizes=(2,), seq_lengths=(16,),
                                   **FAST)
    report = latency.run([hf_artifact], config)
    assert [(r["name"], r["status"]) for r in report["rows"]] == [("teacher/torch", "ok"), ("teacher/torch-bf16", "ok")]
    (choice,) = report["auto_choices"]  # auto resolved to torch-bf16, measured above: no third row, but the choice
    assert choice["artifact_name"] == "teacher" and choice["backend"] == "torch-bf16" and choice["how"] == "measured"
    assert choice["reason"].startswith("auto -> bf16: bf16 forward pass 4.00x faster here (measured bf16 10 vs fp32 "
                                       "40 ms); probabilities within ")  # the real bf16-vs-fp32 gap of the probe batch
    md = latency.markdown(report)
    assert f"auto on `teacher`: torch-bf16 ({choice['reason']})." in md
    assert md.startswith(f"Latency of one `predict` call (one batch, tokenization included); {report['environment']['cpu']}")


def test_tensorrt_rows_say_the_engines_precision(tmp_path):
    """An fp16 and an int8 engine of one model are two rows that say which is which (measured on a GPU; here
    skipped, with the same names)."""
    from compress.artifact import ArtifactInfo, write_info
    from tests.bench.conftest import LABELS

    engines = []
    for precision in ("fp16", "int8"):
        directory = tmp_path / f"student-{precision}"
        directory.mkdir()
        write_info(directory, ArtifactInfo(kind="tensorrt", architecture="distilbert", labels=LABELS, max_length=32,
                                           extra={"precision": precision, "runtime": "tensorrt"}))
        engines.append(directory)
    config = latency.LatencyConfig(runtimes=("tensorrt",), batch_sizes=(1,), seq_lengths=(8,), **FAST)
    report = latency.run(engines, config)
    assert [(r["name"], r["precision"]) for r in report["rows"]] == [("student-fp16/tensorrt", "fp16"),
                                                                     ("student-int8/tensorrt", "int8")]
    assert "| student-int8/tensorrt (int8) |" in latency.markdown(report)


def test_markdown_names_the_gpu_of_gpu_rows():
    row = {"name": "student-int8/tensorrt", "backend": "tensorrt", "precision": "int8", "status": "ok",
           "batch_size": 1, "seq_length": 128, "length_unit": "tokens", "p50_ms": 0.9, "p90_ms": 1.0, "p99_ms": 1.1,
           "throughput": 1100.0, "speedup": 1.0, "throughput_ratio": 1.0}
    env = {"cpu": "Intel Xeon", "cuda": "NVIDIA H200", "torch_threads": 16}
    md = latency.markdown({"baseline": row["name"], "environment": env, "rows": [row]})
    assert "; Intel Xeon, GPU NVIDIA H200, 16 torch threads." in md
    assert "| student-int8/tensorrt (int8) | 1 | 128 tokens | 0.90 |" in md
    cpu_row = {**row, "name": "student/ort", "backend": "ort"}
    del cpu_row["precision"]
    assert "GPU" not in latency.markdown({"baseline": "student/ort", "environment": env, "rows": [cpu_row]})


@pytest.mark.gpu
def test_tensorrt_fp16_and_int8_rows_beside_onnx_runtime(tmp_path, hf_artifact, jigsaw_csv):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        pytest.skip("tensorrt is not installed")
    from export.onnx import OnnxExportConfig, export_onnx
    from export.tensorrt import TensorRTConfig, export_tensorrt

    onnx = export_onnx(hf_artifact, OnnxExportConfig(out=str(tmp_path / "student-onnx"))).artifact
    profile = {"opt_batch": 8, "opt_seq": 16, "max_seq": 32}
    engines = [export_tensorrt(onnx, TensorRTConfig(out=str(tmp_path / "student-fp16"), fp16=True, **profile)),
               export_tensorrt(onnx, TensorRTConfig(out=str(tmp_path / "student-int8"), int8=True, fp16=True,
                                                    data=str(jigsaw_csv), calibration_samples=64,
                                                    max_auc_drop=0.5, **profile))]  # untrained: any AUC will do
    config = latency.LatencyConfig(runtimes=("auto",), batch_sizes=(1, 8), seq_lengths=(16,), **FAST)
    report = latency.run([onnx, *engines], config)
    assert [(r["name"], r.get("precision")) for r in report["rows"] if r["status"] == "ok" and r["batch_size"] == 1] \
        == [("student-onnx/ort", None), ("student-fp16/tensorrt", "fp16"), ("student-int8/tensorrt", "int8")]
    md = latency.markdown(report)
    assert f"GPU {report['environment']['cuda']}" in md and "| student-int8/tensorrt (int8) | 1 | 16 tokens |" in md
