"""Report numbers become MLflow metrics named by what each row is."""

from __future__ import annotations

import argparse
import math

from compress.tracking import MAX_REPORT_METRICS, log_command_run, report_metrics


def test_report_metrics_names_rows_by_their_identity_and_skips_non_numbers():
    report = {
        "bench": "latency", "threads": 1, "ok": True, "note": "text", "_source": 7,
        "rows": [
            {"artifact": "runs/olid-distilbert", "runtime": "ort-int8", "batch_size": 1, "p50_ms": 3.5},
            {"artifact": "runs/olid-distilbert", "runtime": "ort-int8", "batch_size": 1, "p50_ms": 3.7},
            {"p50_ms": math.nan, "p99_ms": 9.0},
        ],
        "grid": [[1, 2]],
    }
    assert report_metrics(report) == {
        "threads": 1.0,
        "rows/olid-distilbert_ort-int8_1/batch_size": 1.0,
        "rows/olid-distilbert_ort-int8_1/p50_ms": 3.5,
        "rows/olid-distilbert_ort-int8_1_2/batch_size": 1.0,
        "rows/olid-distilbert_ort-int8_1_2/p50_ms": 3.7,
        "rows/2/p99_ms": 9.0,
        "grid/0/0": 1.0,
        "grid/0/1": 2.0,
    }


def test_report_metrics_are_capped():
    assert len(report_metrics({"rows": list(range(MAX_REPORT_METRICS + 50))})) == MAX_REPORT_METRICS


def test_no_tracking_logs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = argparse.Namespace(no_tracking=True, tracking_uri=f"sqlite:///{tmp_path}/m.db", func=print)
    assert log_command_run(args, "bench x", {"a": 1}, {"r.md": "x"}) is None
    assert list(tmp_path.iterdir()) == []
