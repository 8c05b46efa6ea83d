"""`bench quant-speed`: rows and ratios vs Optimum, the rounds and their time budget, AUC per path, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench import measure, quant_speed
from bench.quant_speed import InferencePath
from compress.cpu import cpu_flags, is_x86
from modcompress.cli import bench_main as main
from tests.bench.conftest import LABELS, jigsaw_rows
from tests.export.helpers import student_artifact, teacher_artifact

OPTIMUM = f"Optimum int8 ({quant_speed.optimum_config_name(cpu_flags(), is_x86())} dynamic, pad to longest)"


def _path(name: str, latencies=(), request=(0.0, 0), bulk=(None, 0), auc=None, drop=None) -> InferencePath:
    return InferencePath(name, predict=lambda texts: np.zeros((len(texts), 1)), latencies=list(latencies),
                         request_seconds=request[0], request_texts=request[1], bulk_seconds=bulk[0],
                         bulk_texts=bulk[1], auc=auc, auc_drop=drop)


# ---------------------------------------------------------------------------------------------- rows


def test_row_numbers_and_ratios_against_optimums_default():
    ref = _path(OPTIMUM, [0.004, 0.006, 0.008], (2.0, 64), (1.0, 64), 0.90, 0.002)
    ours = _path("ORT int8 dynamic", [0.001, 0.002, 0.003], (0.5, 64), (0.25, 64), 0.91, -0.001)
    row = quant_speed.path_row(ours, ref)
    assert row["batch1_p50_ms"] == pytest.approx(2.0) and row["batch1_n"] == 3
    assert row["batch1_p90_ms"] == pytest.approx(np.percentile([1.0, 2.0, 3.0], 90))
    assert row["requests32_texts_per_s"] == pytest.approx(128.0) and row["bulk32_texts_per_s"] == pytest.approx(256.0)
    assert row["throughput_n"] == 64 and row["macro_roc_auc"] == 0.91 and row["auc_drop_vs_torch_fp32"] == -0.001
    assert row["x_requests32_vs_optimum"] == pytest.approx(128.0 / 32.0)
    assert row["x_bulk32_vs_optimum"] == pytest.approx(256.0 / 64.0)
    assert row["x_batch1_speed_vs_optimum"] == pytest.approx(6.0 / 2.0)  # Optimum's p50 / ours
    assert "x_bulk32_vs_optimum" not in quant_speed.path_row(ref, ref)  # no ratio against itself
    unmeasured = quant_speed.path_row(_path("torch bf16 (autocast)"), ref)
    assert unmeasured["batch1_p50_ms"] is None and unmeasured["requests32_texts_per_s"] is None
    assert unmeasured["x_bulk32_vs_optimum"] is None and unmeasured["x_batch1_speed_vs_optimum"] is None


def test_int8_target_takes_the_faster_int8_path_and_checks_ratio_and_auc():
    ref = _path(OPTIMUM, [0.004], (2.0, 64), (1.0, 64))
    dynamic = quant_speed.path_row(_path("ORT int8 dynamic", [0.001], (0.5, 64), (0.25, 64), 0.9, 0.001), ref)
    static = quant_speed.path_row(_path("ORT int8 static", [0.001], (1.0, 64), (0.5, 64), 0.9, 0.0), ref)
    fp32 = quant_speed.path_row(_path("ORT fp32", [0.001], (0.1, 64), (0.01, 64), 0.9, 0.0), ref)
    target = quant_speed.int8_target([fp32, static, dynamic], max_auc_drop=0.005)
    assert target["best_int8_path"] == "ORT int8 dynamic"  # fastest int8 path; fp32 is not a candidate
    assert target["x_bulk32_vs_optimum"] == pytest.approx(4.0) and target["met_bulk"] and target["met_requests"]
    assert not quant_speed.int8_target([dynamic], max_auc_drop=0.0005)["met_bulk"]  # ΔAUC 0.001 too large
    slow = quant_speed.path_row(_path("ORT int8 dynamic", [0.001], (1.5, 64), (0.8, 64), 0.9, 0.0), ref)
    assert not quant_speed.int8_target([slow], 0.005)["met_bulk"]  # 80 vs 64 texts/s: 1.25x < 1.5x
    assert quant_speed.int8_target([fp32], 0.005) is None


def test_the_target_is_2x_optimum_at_batch_1_and_in_bulk():
    ref = _path(OPTIMUM, [0.004], (2.0, 64), (1.0, 64))
    target = quant_speed.int8_target([quant_speed.path_row(
        _path("ORT int8 dynamic", [0.0021], (0.9, 64), (0.45, 64), 0.9, 0.001), ref)], max_auc_drop=0.005)
    assert target["x_batch1_speed_vs_optimum"] == pytest.approx(0.004 / 0.0021)
    assert not target["met_batch1"] and target["met_bulk"] and target["met_requests"]  # 1.9x at batch 1, 2.2x bulk
    fast = quant_speed.path_row(_path("ORT int8 dynamic", [0.002], (1.1, 64), (0.5, 64), 0.9, 0.001), ref)
    target = quant_speed.int8_target([fast], max_auc_drop=0.005)
    assert target["met_batch1"] and target["met_bulk"] and not target["met_requests"]  # 2x, 2x, 1.8x


# ---------------------------------------------------------------------------------------------- Optimum


@pytest.mark.parametrize("flags, x86, name", [
    ({"avx2", "avx512f", "avx512_vnni", "amx_int8"}, True, "avx512_vnni"),  # Sapphire Rapids
    ({"avx2", "avx_vnni"}, True, "avx512_vnni"),  # AVX-VNNI: the same VPDPBUSD instruction
    ({"avx2", "avx512f"}, True, "avx2"),  # Skylake-SP: AVX-512 without VNNI
    ({"avx2", "fma"}, True, "avx2"),  # AMD EPYC (Zen 2/3)
    (set(), False, "arm64"),
])
def test_optimum_gets_the_config_a_user_would_pick_for_the_cpu(flags, x86, name, monkeypatch):
    assert quant_speed.optimum_config_name(frozenset(flags), x86) == name
    import compress.cpu

    monkeypatch.setattr(compress.cpu, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(compress.cpu, "is_x86", lambda: x86)
    if x86:  # the same VNNI test as our own reduce_range choice
        assert compress.cpu.cpu_has_vnni() == (name == "avx512_vnni")


def test_optimum_path_quantizes_with_that_config_and_pads_each_request_to_its_longest_text(
        tmp_path, tiny_bert_dir, monkeypatch):
    from optimum.onnxruntime.configuration import AutoQuantizationConfig
    from transformers import AutoTokenizer

    teacher = teacher_artifact(tmp_path / "teacher", tiny_bert_dir)
    widths = []
    pad = quant_speed.optimum_inputs
    monkeypatch.setattr(quant_speed, "optimum_inputs",
                        lambda tok, texts, n: widths.append(pad(tok, texts, n)["input_ids"].shape) or pad(tok, texts, n))
    onnx_file = quant_speed.optimum_quantized(teacher, tmp_path / "work", "avx2")
    predict = quant_speed.optimum_path("optimum", teacher, onnx_file).predict
    written = json.loads((onnx_file.parent / "ort_config.json").read_text())["quantization"]
    expected = AutoQuantizationConfig.avx2(is_static=False)
    assert written["is_static"] is False and written["per_channel"] == expected.per_channel
    assert written["weights_dtype"] == expected.weights_dtype.name == "QUInt8"  # avx2's u8 weights, not vnni's s8
    texts = ["idiot", "you are a stupid idiot and i hate you", "hello"] * 11 + ["hi there"]  # 34 texts: 2 requests
    probs = predict(texts)
    assert probs.shape == (34, 6)
    tokenizer = AutoTokenizer.from_pretrained(str(teacher / "tokenizer"))
    longest = [max(len(tokenizer(t)["input_ids"]) for t in texts[i:i + 32]) for i in (0, 32)]
    assert widths == [(32, longest[0]), (2, longest[1])] and longest[0] < 32  # not padded to max_length


# ---------------------------------------------------------------------------------------------- profile


def test_profile_sums_kernel_time_by_operator_type_after_the_warm_up_runs():
    from bench.op_profile import summarize

    def run(ts: int, nodes: list[tuple[str, int]]) -> list[dict]:
        events = [{"cat": "Session", "name": "model_run", "ts": ts, "dur": 1000}]
        return events + [{"cat": "Node", "name": f"n{i}_kernel_time", "ts": ts + 1 + i, "dur": dur,
                          "args": {"op_name": op}} for i, (op, dur) in enumerate(nodes)]

    warm = run(0, [("MatMulInteger", 9000)])  # a slow first run: left out
    timed = run(10_000, [("MatMulInteger", 300), ("QAttention", 500), ("MatMulInteger", 100)])
    timed += run(20_000, [("MatMulInteger", 300), ("QAttention", 300), ("MatMulInteger", 100)])
    timed += [{"cat": "Node", "name": "n0_fence_before", "ts": 20_001, "dur": 7, "args": {"op_name": "QAttention"}}]
    summary = summarize(warm + timed, runs=2)
    assert summary["model_run_ms"] == 1.0 and summary["kernels_ms"] == pytest.approx(0.8) and summary["texts"] is None
    per_text = summarize(warm + timed, runs=2, texts=8)
    assert per_text["kernels_ms_per_text"] == pytest.approx(0.2) and per_text["model_run_ms_per_text"] == 0.25
    assert [o["ms_per_text"] for o in per_text["ops"]] == [pytest.approx(0.1), pytest.approx(0.1)]
    assert summary["ops"] == [{"op": "MatMulInteger", "ms": pytest.approx(0.4), "share": pytest.approx(0.5), "nodes": 2},
                              {"op": "QAttention", "ms": pytest.approx(0.4), "share": pytest.approx(0.5), "nodes": 1}]


# ---------------------------------------------------------------------------------------------- measuring


class Clock:
    """``time.perf_counter`` that moves only when a path predicts (``cost`` seconds per call)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def path(self, name: str, cost: float, calls: list) -> InferencePath:
        def predict(texts: list[str]) -> np.ndarray:
            calls.append((name, list(texts)))
            self.now += cost
            return np.zeros((len(texts), 1))

        return InferencePath(name, predict)


def test_measure_warms_up_then_times_every_text_once_and_a_slow_path_fewer(monkeypatch):
    clock, calls = Clock(), []
    monkeypatch.setattr(measure.time, "perf_counter", clock)
    monkeypatch.setattr(quant_speed.time, "sleep", lambda _s: None)
    fast, slow = clock.path("fast", 0.001, calls), clock.path("slow", 1.0, calls)
    latency_texts = [f"l{i}" for i in range(9)]
    request_texts = [f"r{i}" for i in range(6 * quant_speed.REQUEST)]
    quant_speed.measure([fast, slow], latency_texts, request_texts, warmup=2, budget_s=1.5, rounds=3)
    fast_calls = [texts for name, texts in calls if name == "fast"]
    assert fast_calls[:3] == [["l0"], ["l1"], request_texts[:quant_speed.REQUEST]]  # warm-up
    assert len(fast.latencies) == 9 and fast.request_texts == len(request_texts) == fast.bulk_texts
    assert fast.request_seconds == pytest.approx(6 * 0.001) and fast.bulk_seconds == pytest.approx(3 * 0.001)
    # 0.5 s per pass: the slow path makes one call per pass (3 of 9 texts, 3 of 6 requests), bulk on what it did
    assert len(slow.latencies) == 3 and slow.request_texts == 3 * quant_speed.REQUEST == slow.bulk_texts
    runs = [name for i, (name, _) in enumerate(calls) if i >= 6 and name != calls[i - 1][0]]
    assert runs == ["fast", "slow", "fast", "slow"]  # the order rotates: fast slow | slow fast | fast slow
    report = {"machine": quant_speed.machine(), "settings": {"latency_texts": 9, "max_auc_drop": 0.005},
              "artifacts": [{"artifact": "a", "architecture": "textcnn", "eval_rows": 9, "target": None,
                             "optimum": "n/a (own architecture)",
                             "rows": [quant_speed.path_row(p, None) for p in (fast, slow)]}]}
    table = quant_speed.markdown(report)
    assert "| slow |" in table and "(time budget: batch-1 n=3, throughput n=96)" in table
    assert "(time budget" not in table.split("| fast |")[1].split("\n")[0]


def test_evaluate_scores_every_path_and_a_slow_one_on_fewer_rows():
    from export.quantize import macro_auc

    texts, labels = jigsaw_rows(60)
    probs = np.random.default_rng(0).random(labels.shape).astype(np.float32)
    noisy = np.clip(probs + np.random.default_rng(1).normal(0, 0.2, probs.shape), 0, 1).astype(np.float32)
    table = {"torch fp32": probs, "ORT int8 dynamic": noisy, "torch bf16 (autocast)": noisy}
    paths = [InferencePath(name, predict=lambda t, p=p: p[:len(t)]) for name, p in table.items()]
    quant_speed.evaluate(paths, texts, labels, LABELS, {"torch bf16 (autocast)"}, slow_rows=30)
    fp32, int8, bf16 = paths
    assert fp32.auc == pytest.approx(macro_auc(labels, probs, LABELS)) and fp32.auc_drop == 0.0
    assert int8.auc == pytest.approx(macro_auc(labels, noisy, LABELS))
    assert int8.auc_drop == pytest.approx(fp32.auc - int8.auc)
    assert bf16.auc == pytest.approx(macro_auc(labels[:30], noisy[:30], LABELS))
    assert bf16.auc_drop == pytest.approx(macro_auc(labels[:30], probs[:30], LABELS) - bf16.auc)
    assert bf16.note == "AUC on 30 rows" and int8.note == ""


def test_machine_is_the_measuring_kits_cpu_facts():
    m = quant_speed.machine()
    assert {k: v for k, v in m.items() if k != "load_average_at_start"} == measure.cpu_capabilities()
    assert len(m["load_average_at_start"]) == 3


# ---------------------------------------------------------------------------------------------- the CLI


@pytest.mark.slow
def test_cli_on_a_tiny_student_and_a_tiny_hf_teacher(tmp_path, tiny_bert_dir, jigsaw_csv, capsys):
    """Every path of both: the textcnn student has no Optimum path; the HF teacher is compared with it."""
    cnn = student_artifact(tmp_path / "cnn", "textcnn", tiny_bert_dir)
    teacher = teacher_artifact(tmp_path / "teacher", tiny_bert_dir)
    out_json, out_md = tmp_path / "qs.json", tmp_path / "qs.md"
    code = main(["quant-speed", str(cnn), str(teacher), "--data", str(jigsaw_csv), "--latency-texts", "6",
                 "--throughput-texts", "64", "--warmup", "1", "--budget-s", "60", "--max-auc-drop", "0.5",
                 "--calibration-samples", "32", "--slow-eval-rows", "10", "--json-out", str(out_json),
                 "--md-out", str(out_md), "--no-tracking"])
    assert code == 0
    printed = capsys.readouterr().out
    report = json.loads(out_json.read_text())
    assert json.loads(printed[: printed.index("\n}\n") + 2]) == report  # prints the JSON, then the Markdown
    assert out_md.read_text() in printed and out_md.read_text().startswith("CPU: ")
    student, hf = report["artifacts"]
    ours = ["torch fp32", "torch bf16 (autocast)", "ORT fp32", "ORT int8 dynamic", "ORT int8 static"]
    assert [r["path"] for r in student["rows"]] == ours
    assert student["optimum"] == "n/a (own architecture)" and student["target"] is None
    assert [r["path"] for r in hf["rows"]] == ["torch fp32", "torch bf16 (autocast)", "ORT fp32 (O2 fusions)",
                                               "ORT int8 dynamic", "ORT int8 static", OPTIMUM]
    for art in (student, hf):
        assert art["eval_rows"] == 40  # the held-out 10% of 400 rows
        rows = {r["path"]: r for r in art["rows"]}
        for row in rows.values():
            assert row["batch1_n"] == 6 and row["throughput_n"] == 40 and row["batch1_p50_ms"] > 0
            assert row["requests32_texts_per_s"] > 0 and row["bulk32_texts_per_s"] > 0
        assert rows["torch fp32"]["auc_drop_vs_torch_fp32"] == 0.0
        onnx = next(r for name, r in rows.items() if name.startswith("ORT fp32"))
        assert abs(onnx["auc_drop_vs_torch_fp32"]) < 1e-3  # the export is validated against PyTorch
        assert "int8-dynamic_guard" in art and "int8-static_guard" in art
    ref = next(r for r in hf["rows"] if r["path"] == OPTIMUM)
    dynamic = next(r for r in hf["rows"] if r["path"] == "ORT int8 dynamic")
    assert dynamic["x_bulk32_vs_optimum"] == pytest.approx(dynamic["bulk32_texts_per_s"] / ref["bulk32_texts_per_s"])
    assert hf["target"]["best_int8_path"] in ("ORT int8 dynamic", "ORT int8 static")


@pytest.mark.slow
def test_cli_levers_profile_and_the_optimum_row_of_a_cpu_without_vnni(tmp_path, tiny_bert_dir, jigsaw_csv,
                                                                      monkeypatch, capsys):
    """On an AVX2-only CPU (flags injected) the Optimum row uses the avx2 config; --levers adds our int8 path with
    one lever undone each; every ONNX path is profiled by operator type; fusion is recorded."""
    monkeypatch.setattr(quant_speed, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    monkeypatch.setattr(quant_speed, "is_x86", lambda: True)
    teacher = teacher_artifact(tmp_path / "teacher", tiny_bert_dir)
    out_json = tmp_path / "qs.json"
    assert main(["quant-speed", str(teacher), "--data", str(jigsaw_csv), "--latency-texts", "4",
                 "--throughput-texts", "32", "--warmup", "1", "--max-auc-drop", "0.5", "--calibration-samples", "32",
                 "--slow-eval-rows", "10", "--levers", "--profile-texts", "8", "--json-out", str(out_json),
                 "--no-tracking"]) == 0
    printed = capsys.readouterr().out
    (art,) = json.loads(out_json.read_text())["artifacts"]
    optimum = "Optimum int8 (avx2 dynamic, pad to longest)"
    assert art["optimum_config"] == "avx2"
    assert [r["path"] for r in art["rows"]] == [
        "torch fp32", "torch bf16 (autocast)", "ORT fp32 (O2 fusions)", "ORT int8 dynamic", "ORT int8 static", optimum,
        "lever: ORT int8 dynamic, spinning threads (ORT default)",
        "lever: ORT int8 dynamic, micro-batches of 32 (no token cap)", "lever: ORT int8 dynamic, unfused graph",
        "lever: Optimum int8, threads not spinning"]
    assert all(r["x_bulk32_vs_optimum"] for r in art["rows"] if r["path"] != optimum)
    assert art["int8-dynamic_fusion"]["applied"] and art["int8-static_fusion"]["applied"] is False
    assert set(art["profiles"]) == {"ORT int8 dynamic", "ORT int8 static", optimum}
    for profile in art["profiles"].values():
        assert profile["batch1"]["runs"] == 8 and profile["bulk"]["texts"] == 32
        assert profile["batch1"]["kernels_ms"] == pytest.approx(sum(o["ms"] for o in profile["batch1"]["ops"]))
    assert "QAttention" in {o["op"] for o in art["profiles"]["ORT int8 dynamic"]["batch1"]["ops"]}
    call = art["profiles"]["ORT int8 dynamic"]["batch1_call"]
    assert call["calls"] == 8 and call["tokenize_ms"] > 0 and call["session_run_ms"] > 0
    assert call["rest_ms"] == pytest.approx(call["predict_ms"] - call["tokenize_ms"] - call["session_run_ms"])
    assert "Where the time goes" in printed and "| QAttention |" in printed and "| path | tokenize |" in printed
    assert "int8 dynamic transformer fusion: applied (BERT-family encoder (bert)" in printed
    assert art["other_cpus_during_timing"] is None or art["other_cpus_during_timing"] >= 0
