"""bench serve-speed: endpoint vs in-process on a tiny artifact, bounded request counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import serve_speed
from compress.errors import ConfigError
from modcompress.cli import bench_main as main


def test_endpoint_vs_in_process(tmp_path, tfidf_artifact, capsys):
    out = tmp_path / "speed.json"
    code = main(["serve-speed", str(tfidf_artifact), "--concurrency", "1,2", "--requests", "20", "--rounds", "2",
                 "--json-out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    (a,) = report["artifacts"]
    assert a["status"] == "ok" and a["model"] == "tfidf"
    assert [r["concurrency"] for r in a["rows"]] == [1, 2]
    for r in a["rows"]:
        ep, ref = r["endpoint"], r["in_process"]
        assert ep["requests"] == 2 * 20 and len(ep["per_round_requests_per_s"]) == 2  # two rounds of 20
        assert ref["examples"] >= 2 * 20 and len(ref["per_round_examples_per_s"]) == 2
        assert "latencies_s" not in ep and "latencies_s" not in ref  # raw samples stay out of the report
        assert 0 < ep["p50_ms"] <= ep["p99_ms"]
        assert ref["batch_size"] == r["concurrency"]
        assert r["ratio"] == pytest.approx(ep["requests_per_s"] / ref["examples_per_s"])
        assert r["per_round_ratio"] == pytest.approx(
            [e / i for e, i in zip(ep["per_round_requests_per_s"], ref["per_round_examples_per_s"], strict=True)])
        assert 1 <= r["server"]["mean_batch"] <= r["concurrency"]
    assert [r["server"]["preferred_batch_sizes"] for r in a["rows"]] == [[], [2]]  # batcher tuned per level
    assert [r["server"]["max_queue_delay_us"] for r in a["rows"]] == [0, 10_000]
    assert a["ratio_at_8"] is None  # concurrency 8 was not measured
    assert "| tfidf | 2 |" in capsys.readouterr().out


def test_each_protocol_is_measured_in_the_same_rounds(tmp_path, tfidf_artifact, capsys):
    out = tmp_path / "speed.json"
    code = main(["serve-speed", str(tfidf_artifact), "--concurrency", "2", "--requests", "10", "--rounds", "2",
                 "--protocols", "http,http-json,grpc,http-direct", "--instances", "2", "--json-out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["settings"]["protocols"] == ["http", "http-json", "grpc", "http-direct"]
    assert report["settings"]["instances"] == 2
    (row,) = report["artifacts"][0]["rows"]
    assert row["protocol"] == "http" and row["ratio"] == row["by_protocol"]["http"]["ratio"]
    assert row["server"]["instances"] == 2
    for protocol, measured in row["by_protocol"].items():
        assert measured["endpoint"]["requests"] == 2 * 10, protocol
        assert measured["ratio"] == pytest.approx(measured["endpoint"]["requests_per_s"]
                                                  / row["in_process"]["examples_per_s"])
    table = capsys.readouterr().out
    assert "| tfidf | 2 | http |" in table and "| tfidf | 2 | http-json |" in table and "| tfidf | 2 | grpc |" in table
    assert "| tfidf | 2 | http-direct |" in table and "The HTTP front's cost in throughput" in table
    front, direct = (row["by_protocol"][p]["endpoint"]["per_round_requests_per_s"] for p in ("http", "http-direct"))
    assert row["front_cost"]["per_round"] == pytest.approx([1 - f / d for f, d in zip(front, direct, strict=True)])


def test_the_fronts_cost_is_paired_per_round():
    front = {"requests_per_s": 90.0, "per_round_requests_per_s": [100.0, 80.0, 99.0]}
    direct = {"requests_per_s": 100.0, "per_round_requests_per_s": [100.0, 100.0, 90.0]}
    cost = serve_speed.front_cost(front, direct)
    assert cost["cost"] == pytest.approx(0.1)
    assert cost["per_round"] == pytest.approx([0.0, 0.2, -0.1])
    assert cost["median_per_round"] == pytest.approx(0.0)
    even = serve_speed.front_cost({"requests_per_s": 1.0, "per_round_requests_per_s": [90.0, 70.0]},
                                  {"requests_per_s": 1.0, "per_round_requests_per_s": [100.0, 100.0]})
    assert even["median_per_round"] == pytest.approx(0.2)


def test_the_in_process_side_gets_the_servers_openmp_wait_policy(tmp_path, tfidf_artifact):
    """A fresh `bench serve-speed` (PyTorch not loaded yet) sets OMP_WAIT_POLICY=PASSIVE for itself, as the
    server does for its instances; a policy of the user's own is kept."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    for given, expected in ((None, "PASSIVE"), ("ACTIVE", "ACTIVE")):
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
        env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
        if given:
            env["OMP_WAIT_POLICY"] = given
        out = tmp_path / f"speed-{expected}.json"
        subprocess.run([sys.executable, "-m", "modcompress", "bench", "serve-speed", str(tfidf_artifact),
                        "--concurrency", "1", "--requests", "4", "--rounds", "1", "--json-out", str(out),
                        "--print", "json", "--no-tracking"], env=env, check=True, capture_output=True, timeout=300)
        assert json.loads(out.read_text())["settings"]["omp_wait_policy"] == expected


def test_rounds_merge_into_totals_not_a_mean_of_rates():
    """Two rounds, 100 texts in 1 s then 100 in 4 s: 40 texts/s overall (the mean of rates would say 62.5)."""
    ref = serve_speed.merge_in_process([
        {"batch_size": 8, "examples": 100, "seconds": 1.0, "latencies_s": [0.01, 0.02]},
        {"batch_size": 8, "examples": 100, "seconds": 4.0, "latencies_s": [0.03, 0.04]}])
    assert ref["examples_per_s"] == pytest.approx(40.0)
    assert ref["per_round_examples_per_s"] == pytest.approx([100.0, 25.0])
    assert ref["p50_ms"] == pytest.approx(25.0)
    ep = serve_speed.merge_endpoint([
        {"concurrency": 8, "requests": 50, "seconds": 2.0, "latencies_s": [0.1]},
        {"concurrency": 8, "requests": 150, "seconds": 3.0, "latencies_s": [0.2, 0.3]}])
    assert ep["requests_per_s"] == pytest.approx(40.0) and ep["requests"] == 200
    assert ep["per_round_requests_per_s"] == pytest.approx([25.0, 50.0])
    assert ep["p99_ms"] == pytest.approx(298.0)


def test_config_is_bounded():
    with pytest.raises(ConfigError, match="requests"):
        serve_speed.ServeSpeedConfig(requests=10**7, texts=("x",))
    with pytest.raises(ConfigError, match="concurrency"):
        serve_speed.ServeSpeedConfig(concurrency=(0,), texts=("x",))
    with pytest.raises(ConfigError, match="rounds"):
        serve_speed.ServeSpeedConfig(rounds=0, texts=("x",))
    with pytest.raises(ConfigError, match="protocols"):
        serve_speed.ServeSpeedConfig(protocols=("http", "websocket"), texts=("x",))
    with pytest.raises(ConfigError, match="protocols"):
        serve_speed.ServeSpeedConfig(protocols=("http", "http"), texts=("x",))
    with pytest.raises(ConfigError, match="instances"):
        serve_speed.ServeSpeedConfig(instances=0, texts=("x",))


def test_the_server_runs_in_a_process_of_its_own_and_stops_with_the_block(tfidf_artifact, tmp_path):
    """bench.served: what `serve start` is (the front in a process doing nothing else), not a thread of the bench."""
    import threading

    import numpy as np

    from bench.artifacts import load_predictor
    from bench.served import served
    from serve.client import ServeClient
    from serve.config import ServeConfig
    from serve.server import check_ports_free, free_ports

    http_port, grpc_port, metrics_port = free_ports(3)
    config = ServeConfig(http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, exit_timeout_s=5,
                         log_file=tmp_path / "triton.log")
    fronts = {t for t in threading.enumerate() if t.name.startswith("serve-http")}
    texts = ["you are an idiot", "have a nice day"]
    with served(tfidf_artifact, "auto", None, config) as urls:
        assert {t for t in threading.enumerate() if t.name.startswith("serve-http")} == fronts
        with ServeClient(urls.http_url) as client:
            np.testing.assert_allclose(client.predict(texts), load_predictor(tfidf_artifact).predict(texts), atol=1e-6)
    check_ports_free("127.0.0.1", config.ports)  # stopped: every port is free again


def test_a_server_that_cannot_start_is_one_line(tmp_path):
    from bench.served import served
    from compress.errors import UserError
    from serve.config import ServeConfig
    from serve.server import free_ports

    http_port, grpc_port, metrics_port = free_ports(3)
    config = ServeConfig(http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port)
    with pytest.raises(UserError, match=f"could not serve {tmp_path / 'nothing'}: ") as caught:
        with served(tmp_path / "nothing", "auto", None, config):
            pass
    assert "\n" not in str(caught.value)
