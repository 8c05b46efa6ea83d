"""`serve score --engine ray` on a local Ray with 2 CPUs (started once for this module): the same rows
and probabilities as the local engine, ids or row numbers, resume, and a Ray it did not start left running."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from modcompress.cli import serve_main
from serve.score import ScoreConfig, score
from tests import fixtures
from tests.serve.score_data import EMPTY_AT, jigsaw_rows, probabilities, write_rows

ray = pytest.importorskip("ray")
CHUNK = 40


@pytest.fixture(scope="module")
def local_ray():
    from serve.score_ray import connect

    started, cluster = connect(num_cpus=2)
    assert started and not cluster
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tfidf(tmp_path_factory) -> Path:
    return fixtures.write_tfidf_artifact(tmp_path_factory.mktemp("score_ray") / "tfidf")


def _same_output(a: Path, b: Path, labels: list[str]) -> None:
    ta, tb = pq.read_table(a), pq.read_table(b)
    assert ta.schema == tb.schema
    assert ta.column(0).equals(tb.column(0))  # the ids (or row numbers), in the same order
    assert ta.column("labels").equals(tb.column("labels"))
    np.testing.assert_allclose(probabilities(ta, labels), probabilities(tb, labels), atol=1e-6, equal_nan=True)


def test_ray_output_equals_the_local_output(tmp_path, local_ray, tfidf, capsys):
    rows = jigsaw_rows(300, seed=4)
    path = write_rows(rows, tmp_path / "comments.csv.gz", "csv.gz")
    labels = list(fixtures.JIGSAW_LABELS)
    local = score(tfidf, ScoreConfig(input=str(path), output=str(tmp_path / "local.parquet"), chunk_size=CHUNK,
                                     progress=False))
    args = ["score", str(tfidf), "--input", str(path), "--output", str(tmp_path / "ray.parquet"), "--engine", "ray",
            "--chunk-size", str(CHUNK), "--workers", "2", "--cpus-per-worker", "0.5", "--no-progress", "--json"]
    assert serve_main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["rows"], result["null_rows"], result["engine"]) == (local.rows, len(EMPTY_AT), "ray")
    _same_output(tmp_path / "local.parquet", tmp_path / "ray.parquet", labels)
    assert ray.is_initialized(), "the job shut down a Ray it did not start"


def test_ray_jsonl_with_row_numbers_and_resume(tmp_path, local_ray, tfidf):
    rows = [{"text": r["comment_text"]} for r in jigsaw_rows(200, seed=5)]
    path = write_rows(rows, tmp_path / "comments.jsonl", "jsonl")
    labels = list(fixtures.JIGSAW_LABELS)
    common = dict(input=str(path), chunk_size=CHUNK, progress=False)
    score(tfidf, ScoreConfig(output=str(tmp_path / "local.parquet"), **common))
    whole = ScoreConfig(output=str(tmp_path / "ray.parquet"), engine="ray", workers=1, **common)
    first = score(tfidf, whole)
    assert pq.read_table(tmp_path / "ray.parquet").column("row").to_pylist() == list(range(200))
    _same_output(tmp_path / "local.parquet", tmp_path / "ray.parquet", labels)
    assert first.rows == 200

    # An interrupted Ray job: its first two chunks on disk, as a kill would leave them.
    from serve.score_output import PartStore

    fingerprint = json.loads((tmp_path / "ray.parquet.score.json").read_text())["fingerprint"]
    out = tmp_path / "resumed.parquet"
    store = PartStore.open(out, "parquet", {**fingerprint, "output_format": "parquet"})
    full = pq.read_table(tmp_path / "ray.parquet")
    for k in range(2):
        store.write(full.slice(k * CHUNK, CHUNK), full.schema)
    resumed = score(tfidf, ScoreConfig(output=str(out), engine="ray", workers=1, resume=True, **common))
    assert (resumed.resumed_rows, resumed.scored_rows) == (2 * CHUNK, 200 - 2 * CHUNK)
    assert pq.read_table(out).equals(full)


def test_an_unreachable_cluster_is_one_line_at_once():
    import socket

    from compress.errors import UserError
    from serve.score_ray import _check_reachable

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UserError, match=f"cannot reach the Ray cluster at 127.0.0.1:{port}"):
        _check_reachable(f"127.0.0.1:{port}", timeout_s=2)
    _check_reachable("auto")  # left to ray.init
