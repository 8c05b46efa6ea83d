"""`compress distill-report` (bench.distill_report): rows from export.runtime predictors, timing, the CLI's outputs."""

from __future__ import annotations

import json

import pytest

from bench import distill_report as dr
from compress.artifact import read_info
from compress.config import DataConfig, build_config
from modcompress.cli import compress_main

TIMED = ("latency", "examples_per_s")  # the measured fields; every other field comes from the artifacts


def test_rows_of_a_teacher_and_a_baseline(hf_artifact, tfidf_artifact, jigsaw_csv):
    from compress.cpu import cpu_model
    from compress.models import load_model, num_parameters

    data = build_config(DataConfig, {"data": str(jigsaw_csv)})
    report = dr.distill_report([hf_artifact, tfidf_artifact], data=data, calls=4, warmup=1, batch_size=4,
                               throughput_batches=2)
    teacher, tfidf = report["rows"]
    assert teacher["parameters"] == num_parameters(load_model(hf_artifact)[0])  # teachers record no count
    assert tfidf["parameters"] == read_info(tfidf_artifact).extra["num_parameters"]
    assert teacher["f1_vs_teacher"] == pytest.approx(1.0)
    assert tfidf["f1_vs_teacher"] == pytest.approx(tfidf["macro_f1"] / 0.31)
    for row in (teacher, tfidf):
        lat = row["latency"]
        assert 0 < lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] and lat["mean_ms"] > 0
        assert row["examples_per_s"] > 0
    assert report["environment"]["cpu"] == cpu_model() and report["environment"]["precision"] == "fp32"
    assert report["settings"] == {"validation_texts": 40, "latency_calls": 4, "warmup": 1,
                                  "throughput_batch_size": 4, "throughput_batches": 2}


def test_latency_and_throughput_warm_up_then_time_the_texts_after_the_warm_up():
    calls = []

    def predict(texts):
        calls.append(list(texts))

    texts = ["a", "b", "c", "d", "e"]
    latency = dr.measure_latency(predict, texts, calls=4, warmup=2)
    assert calls == [["a"], ["b"], ["c"], ["d"], ["e"], ["a"]] and set(latency) == {"p50_ms", "p90_ms", "p99_ms",
                                                                                     "mean_ms"}
    calls.clear()
    assert dr.measure_throughput(predict, texts, batch_size=2, batches=2, warmup=1) > 0
    assert calls == [["a", "b"], ["c", "d"], ["e", "a"]]


def test_the_old_save_and_output_flags_give_the_files_of_the_new_ones(tmp_path, tfidf_artifact, jigsaw_csv, capsys):
    common = ["distill-report", str(tfidf_artifact), "--data", str(jigsaw_csv), "--calls", "3", "--warmup", "1",
              "--batch-size", "4", "--no-tracking"]
    assert compress_main([*common, "--output", "json", "--save", str(tmp_path / "old")]) == 0
    old = capsys.readouterr()
    assert "warning: --save is deprecated; use --json-out" in old.err
    assert compress_main([*common, "--print", "json", "--json-out", str(tmp_path / "new.json"), "--md-out",
                          str(tmp_path / "new.md")]) == 0
    new = capsys.readouterr()
    reports = [json.loads(text) for text in (old.out, new.out)]  # only the JSON is printed
    assert reports == [json.loads((tmp_path / name).read_text()) for name in ("old.json", "new.json")]
    untimed = [[{k: v for k, v in row.items() if k not in TIMED} for row in r["rows"]] for r in reports]
    assert untimed[0] == untimed[1] and reports[0]["settings"] == reports[1]["settings"]
    tables = [(tmp_path / name).read_text().splitlines() for name in ("old.md", "new.md")]
    assert tables[0][:2] == tables[1][:2] and len(tables[0]) == len(tables[1])
    assert tables[0][2].startswith("| tfidf | baseline | tfidf |")


def test_validation_and_test_side_by_side(tmp_path, hf_artifact, tfidf_artifact, jigsaw_csv):
    import shutil

    from compress.artifact import write_info

    def with_metrics(source, name, **metrics):
        shutil.copytree(source, tmp_path / name)
        info = read_info(tmp_path / name)
        info.metrics = {**info.metrics, **metrics}
        write_info(tmp_path / name, info)
        return tmp_path / name

    teacher = with_metrics(hf_artifact, "teacher", test={"n": 40, "macro_roc_auc": 0.7, "macro_f1": 0.25})
    tfidf = with_metrics(tfidf_artifact, "tfidf", level_macro_f1=0.6,
                         test={"n": 40, "macro_roc_auc": 0.8, "macro_f1": 0.5, "level_macro_f1": 0.45})
    data = build_config(DataConfig, {"data": str(jigsaw_csv)})
    report = dr.distill_report([teacher, tfidf, tfidf_artifact], data=data, calls=2, warmup=0, batch_size=4,
                               throughput_batches=1)
    t, s, old = report["rows"]
    assert t["test"] == {"rows": 40, "macro_roc_auc": 0.7, "macro_f1": 0.25, "level_macro_f1": None}
    assert s["test"]["level_macro_f1"] == 0.45 and s["level_macro_f1"] == 0.6
    assert s["test_f1_vs_teacher"] == pytest.approx(2.0) and t["test_f1_vs_teacher"] == pytest.approx(1.0)
    assert old["test"] is None and old["test_f1_vs_teacher"] is None  # an artifact made without a test split
    lines = dr.format_markdown(report).splitlines()
    assert "| test macro ROC-AUC | test macro-F1 | level macro-F1 (val / test) | F1 vs teacher (val / test) |" in lines[0]
    assert f"| {s['macro_f1']:.4f} | 0.8000 | 0.5000 | 0.6000 / 0.4500 |" in lines[3]
    assert lines[4].startswith("| tfidf | baseline | tfidf |") and "| - | - | - / - |" in lines[4]
