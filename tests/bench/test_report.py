"""bench report: PNG plots exist and are valid PNGs, and the report references them; the Pareto front."""

from __future__ import annotations

import json

import pytest

from bench import latency, report, table
from bench.plots import Point, pareto_front
from compress.errors import DataError
from modcompress.cli import bench_main as main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_pareto_front_keeps_points_nobody_beats_on_both_axes():
    pts = [Point("a", 1, 0.80), Point("b", 2, 0.79), Point("c", 3, 0.85), Point("d", 3, 0.84), Point("e", 50, 0.90),
           Point("f", 60, 0.88)]
    assert [p.name for p in pareto_front(pts)] == ["a", "c", "e"]


@pytest.fixture(scope="module")
def reports(tmp_path_factory, tfidf_artifact):
    """Real latency + table reports on the tiny artifact, a hand-made serve-speed one, written as JSON."""
    out = tmp_path_factory.mktemp("reports")
    lat = latency.run([tfidf_artifact], latency.LatencyConfig(batch_sizes=(1, 4), seq_lengths=(8,), warmup=1, iters=3))
    tab = table.build_table([tfidf_artifact], table.TableConfig(seq_length=8, batch_size=4, iters=3, warmup=1))
    speed = {"bench": "serve-speed", "settings": {"concurrency": [1, 8], "requests": 10, "texts": "x",
                                                  "backend": "auto", "max_queue_delay_us": 1000},
             "artifacts": [{"artifact": "tfidf", "status": "ok", "ratio_at_8": 0.9, "rows": [
                 {"concurrency": c, "ratio": 0.9,
                  "endpoint": {"requests_per_s": 90.0 * c, "p50_ms": 5.0, "p99_ms": 9.0},
                  "in_process": {"examples_per_s": 100.0 * c, "batch_size": c}} for c in (1, 8)]}]}
    paths = []
    for name, rep, dump in (("latency", lat, latency.dumps), ("table", tab, table.dumps),
                            ("serve", speed, json.dumps)):
        path = out / f"{name}.json"
        path.write_text(dump(rep))
        paths.append(path)
    return paths


def test_report_writes_valid_pngs_and_references_them(tmp_path, reports):
    path = report.build_report(report.load_reports(reports), tmp_path / "out")
    text = path.read_text()
    for png in ("pareto.png", "latency_percentiles.png", "throughput_vs_batch.png", "serve_speed.png"):
        file = tmp_path / "out" / png
        assert file.is_file() and file.read_bytes()[:8] == PNG_MAGIC, png
        assert f"]({png})" in text, png
    assert "## Model selection: claimed vs measured" in text and "LogReg+TF-IDF" in text
    assert "## Latency and throughput" in text and "## Serving" in text


def test_html_report(tmp_path, reports, capsys):
    assert main(["report", "--from", *map(str, reports), "--out", str(tmp_path / "h"), "--format", "html"]) == 0
    html = (tmp_path / "h" / "report.html").read_text()
    assert html.startswith("<!doctype html>") and '<img src="pareto.png"' in html and "<table>" in html
    assert "report written to" in capsys.readouterr().out


def test_pareto_from_latency_and_accuracy_without_a_table(tmp_path, reports, tfidf_artifact, jigsaw_csv):
    from bench import accuracy

    acc = tmp_path / "acc.json"
    acc.write_text(accuracy.dumps(accuracy.run([tfidf_artifact], jigsaw_csv, max_rows=60)))
    path = report.build_report(report.load_reports([reports[0], acc]), tmp_path / "o")
    assert (tmp_path / "o" / "pareto.png").read_bytes()[:8] == PNG_MAGIC
    assert "](pareto.png)" in path.read_text()


def test_report_refuses_non_bench_json(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"hello": 1}))
    with pytest.raises(DataError, match="not a bench report"):
        report.load_reports([bad])
    with pytest.raises(DataError, match="no bench reports"):
        report.find_reports(tmp_path)


def test_each_latency_report_gets_its_own_plots(tmp_path, reports):
    path = report.build_report(report.load_reports([reports[0], reports[0]]), tmp_path / "two")
    text = path.read_text()
    for png in ("latency_percentiles.png", "latency_percentiles-2.png", "throughput_vs_batch-2.png"):
        assert (tmp_path / "two" / png).read_bytes()[:8] == PNG_MAGIC and f"]({png})" in text
