"""bench score-speed: the report's numbers hang together (local engine on a tiny artifact; Ray is covered by
tests/serve/test_score_ray.py), the input files, the output comparison, bounded config."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from bench import score_speed
from compress.errors import ConfigError
from modcompress.cli import bench_main as main


def test_local_engine_vs_in_process(tmp_path, tfidf_artifact, capsys):
    out = tmp_path / "score.json"
    code = main(["score-speed", str(tfidf_artifact), "--rows", "600", "--small-rows", "150", "--chunk-size", "100",
                 "--engines", "local", "--work-dir", str(tmp_path / "work"), "--json-out", str(out), "--no-tracking"])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["bench"] == "score-speed" and report["settings"]["rows"] == 600
    (a,) = report["artifacts"]
    assert a["in_process"]["rows"] == 600 and a["in_process"]["rows_per_s"] > 0
    small, big = a["runs"]
    assert (small["file"], small["rows"], big["file"], big["rows"]) == ("small", 150, "big", 600)
    assert big["ratio"] == pytest.approx(big["rows_per_s"] / a["in_process"]["rows_per_s"])
    assert big["rss_growth"] == pytest.approx(big["peak_rss_mib"] / small["peak_rss_mib"])
    assert big["ratio_in_run"] == pytest.approx(big["rows_per_s"] / big["predict_rows_per_s"])
    assert 0 < big["ratio_in_run"] < 1  # the job does more than predict
    assert 50 < small["peak_rss_mib"] < 8000 and big["tree_peak_rss_mib"] >= 0
    assert a["local_vs_ray"] is None
    (work,) = (tmp_path / "work").iterdir()  # kept: the inputs and both outputs
    assert pq.read_table(work / f"{a['artifact']}-local-big.parquet").num_rows == 600
    text = capsys.readouterr().out
    assert "| in-process predict | 600 |" in text and "serve score --engine local" in text and "CPU: " in text


def test_rounds_alternate_and_the_local_ratio_is_their_median(tmp_path, tfidf_artifact, monkeypatch):
    order = []
    real_in, real_engine = score_speed.in_process, score_speed.engine_run
    speeds = iter([100.0, 120.0, 200.0])  # in-process rows/s of rounds 1..3

    def fake_in_process(artifact, path, config):
        order.append(("in-process", path.name))
        return {**real_in(artifact, path, config), "rows_per_s": next(speeds)}

    def fake_engine(artifact, engine, path, out, config):
        order.append((engine, path.name))
        return {**real_engine(artifact, engine, path, out, config), "rows_per_s": 90.0}

    monkeypatch.setattr(score_speed, "in_process", fake_in_process)
    monkeypatch.setattr(score_speed, "engine_run", fake_engine)
    out = tmp_path / "score.json"
    code = main(["score-speed", str(tfidf_artifact), "--rows", "300", "--small-rows", "100", "--chunk-size", "100",
                 "--engines", "local", "--rounds", "3", "--json-out", str(out), "--no-tracking"])
    assert code == 0
    (a,) = json.loads(out.read_text())["artifacts"]
    assert order == [("in-process", "score-300.csv"), ("local", "score-100.csv"), ("local", "score-300.csv"),
                     ("in-process", "score-300.csv"), ("local", "score-300.csv"),
                     ("in-process", "score-300.csv"), ("local", "score-300.csv")]
    assert [r["ratio"] for r in a["rounds"]] == pytest.approx([0.9, 0.75, 0.45])
    big = a["runs"][1]
    assert big["ratio"] == pytest.approx(0.75) and big["ratio_first_round"] == pytest.approx(0.9)


def test_input_file_cycles_the_texts(tmp_path):
    path = score_speed.write_input(["a", "b, with a comma", 'c "quoted"'], 7, tmp_path / "in.csv", block=3)
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(path)
    assert table.column("id").to_pylist() == [f"r{i}" for i in range(7)]
    assert table.column("text").to_pylist() == ["a", "b, with a comma", 'c "quoted"'] * 2 + ["a"]


def test_compare_outputs_names_the_largest_difference(tmp_path):
    import pyarrow as pa

    a = pa.table({"id": ["x", "y"], "prob_t": pa.array([0.5, None], pa.float32()),
                  "labels": pa.array([["t"], None], pa.list_(pa.string()))})
    pq.write_table(a, tmp_path / "a.parquet")
    pq.write_table(a.set_column(1, "prob_t", pa.array([0.25, None], pa.float32())), tmp_path / "b.parquet")
    pq.write_table(a.set_column(0, "id", pa.array(["y", "x"])), tmp_path / "c.parquet")
    assert score_speed.compare_outputs(tmp_path / "a.parquet", tmp_path / "b.parquet") == {
        "same_rows": True, "max_abs_diff": 0.25, "same_labels": True}
    assert score_speed.compare_outputs(tmp_path / "a.parquet", tmp_path / "c.parquet")["same_rows"] is False


def test_config_is_bounded():
    with pytest.raises(ConfigError, match="rows"):
        score_speed.ScoreSpeedConfig(rows=10, small_rows=20, texts=("x",))
    with pytest.raises(ConfigError, match="engines"):
        score_speed.ScoreSpeedConfig(engines=("spark",), texts=("x",))
    with pytest.raises(ConfigError, match="chunk_size"):
        score_speed.ScoreSpeedConfig(chunk_size=0, texts=("x",))
    with pytest.raises(ConfigError, match="rounds"):
        score_speed.ScoreSpeedConfig(rounds=0, texts=("x",))
