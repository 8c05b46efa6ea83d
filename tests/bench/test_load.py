"""bench load: a short bounded locust run against a real test server; loopback only; bounded settings."""

from __future__ import annotations

import json

import pytest

from bench import load
from bench.inputs import texts_from
from compress.errors import ConfigError, UserError
from modcompress.cli import bench_main as main


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "127.0.0.1:8000", "http://localhost:9", "http://[::1]:8000",
                                 "http://127.1.2.3:8000"])
def test_loopback_urls_are_accepted(url):
    assert load.check_loopback_url(url).startswith("http://")


@pytest.mark.parametrize("url", ["http://10.0.0.5:8000", "http://example.com:8000", "http://0.0.0.0:8000",
                                 "http://192.168.1.1"])
def test_non_loopback_urls_are_refused(url):
    with pytest.raises(ConfigError, match="not a loopback address"):
        load.check_loopback_url(url)


def test_cli_refuses_a_non_loopback_host_in_one_line(tmp_path, capsys):
    code = main(["load", "--url", "http://10.1.2.3:8000", "--model", "tfidf", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "loopback" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("text", "seconds"), [("20s", 20), ("1m30s", 90), ("2m", 120), ("45", 45), (3, 3)])
def test_parse_duration(text, seconds):
    assert load.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "20x", "11m", "0s"])
def test_parse_duration_refuses_bad_or_unbounded(text):
    with pytest.raises(ConfigError, match="duration"):
        load.parse_duration(text)


def test_users_are_bounded():
    with pytest.raises(ConfigError, match="users"):
        load.LoadConfig(url="http://127.0.0.1:8000", model="m", users=10_000)


def test_short_bounded_run_against_the_test_server(tmp_path, server, jigsaw_csv):
    config = load.LoadConfig(url=server.http_url, model="tfidf", users=2, spawn_rate=2, duration_s=3,
                             texts=texts_from(str(jigsaw_csv), limit=50), texts_source=str(jigsaw_csv))
    report = load.run(config, tmp_path / "load")
    assert report["requests"] > 0 and report["failures"] == 0
    assert report["requests_per_s"] > 0
    assert report["p50_ms"] <= report["p95_ms"] <= report["p99_ms"]
    saved = json.loads((tmp_path / "load" / "load.json").read_text())
    assert saved["requests"] == report["requests"]
    assert (tmp_path / "load" / "locust_stats.csv").is_file() and "locust_stats.csv" in report["files"]
    assert "| requests | failures |" in load.markdown(report)


def test_cli_run_writes_csv_and_json(tmp_path, server, capsys):
    out = tmp_path / "cli"
    code = main(["load", "--url", server.http_url, "--model", "tfidf", "--users", "2", "--spawn-rate", "2",
                 "--duration", "2s", "--out", str(out)])
    assert code == 0
    assert json.loads((out / "load.json").read_text())["failures"] == 0
    assert "| requests | failures |" in capsys.readouterr().out


def test_unknown_model_fails_before_locust_starts(tmp_path, server):
    with pytest.raises(UserError, match="does not serve a ready model named nope"):
        load.run(load.LoadConfig(url=server.http_url, model="nope", duration_s=1), tmp_path / "x")
    assert not (tmp_path / "x").exists()
