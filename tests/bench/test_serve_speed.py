"""bench serve-speed: endpoint vs in-process on a tiny artifact, bounded request counts."""

from __future__ import annotations

import json

import pytest

from bench import serve_speed
from bench.cli import main
from compress.errors import ConfigError


def test_endpoint_vs_in_process(tmp_path, tfidf_artifact, capsys):
    out = tmp_path / "speed.json"
    code = main(["serve-speed", str(tfidf_artifact), "--concurrency", "1,2", "--requests", "20",
                 "--json-out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    (a,) = report["artifacts"]
    assert a["status"] == "ok" and a["model"] == "tfidf"
    assert [r["concurrency"] for r in a["rows"]] == [1, 2]
    for r in a["rows"]:
        assert r["endpoint"]["requests"] == 20
        assert 0 < r["endpoint"]["p50_ms"] <= r["endpoint"]["p99_ms"]
        assert r["in_process"]["batch_size"] == r["concurrency"]
        assert r["ratio"] == pytest.approx(r["endpoint"]["requests_per_s"] / r["in_process"]["examples_per_s"])
        assert 1 <= r["server"]["mean_batch"] <= r["concurrency"]
    assert [r["server"]["preferred_batch_sizes"] for r in a["rows"]] == [[], [2]]  # batcher tuned per level
    assert [r["server"]["max_queue_delay_us"] for r in a["rows"]] == [0, 10_000]
    assert a["ratio_at_8"] is None  # concurrency 8 was not measured
    assert "| tfidf | 2 |" in capsys.readouterr().out


def test_config_is_bounded():
    with pytest.raises(ConfigError, match="requests"):
        serve_speed.ServeSpeedConfig(requests=10**7, texts=("x",))
    with pytest.raises(ConfigError, match="concurrency"):
        serve_speed.ServeSpeedConfig(concurrency=(0,), texts=("x",))
