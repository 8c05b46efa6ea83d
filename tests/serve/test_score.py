"""`serve score`: every input format, ids or row numbers, thresholds -> labels, nulls for empty text,
resume after a kill, bounded memory, one-line errors (the Ray engine: tests/serve/test_score_ray.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from export.runtime import load
from modcompress.cli import serve_main
from serve import score as score_mod
from serve.score import ScoreConfig, score
from serve.score_input import inspect_input, read_chunks, rechunk
from serve.score_output import PartStore
from serve.score_table import output_schema, score_table
from tests import fixtures
from tests.serve.score_data import (
    EMPTY_AT,
    INPUT_SUFFIXES,
    jigsaw_rows,
    probabilities,
    reference_scores,
    write_rows,
)

ROOT = Path(__file__).resolve().parents[2]
CHUNK = 25


@pytest.fixture(scope="module")
def tfidf(tmp_path_factory) -> Path:
    return fixtures.write_tfidf_artifact(tmp_path_factory.mktemp("score") / "tfidf")


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return jigsaw_rows(120)


@pytest.fixture(scope="module")
def csv_input(tmp_path_factory, rows) -> Path:
    return write_rows(rows, tmp_path_factory.mktemp("in") / "comments.csv", "csv")


def _texts(rows: list[dict]) -> list[str | None]:
    return [r["comment_text"] for r in rows]


@pytest.mark.parametrize("kind", list(INPUT_SUFFIXES))
def test_every_input_format_scores_every_row_as_predict_does(tmp_path, tfidf, rows, kind):
    path = write_rows(rows, tmp_path / f"comments{INPUT_SUFFIXES[kind]}", kind)
    result = score(tfidf, ScoreConfig(input=str(path), output=str(tmp_path / "out.parquet"), chunk_size=CHUNK,
                                      progress=False))
    table = pq.read_table(tmp_path / "out.parquet")
    predictor = load(tfidf)
    assert table.column("id").to_pylist() == [r["id"] for r in rows]
    expected = reference_scores(predictor, _texts(rows), CHUNK)
    np.testing.assert_allclose(probabilities(table, predictor.labels), expected, atol=1e-6, equal_nan=True)
    assert (result.rows, result.null_rows, result.scored_rows) == (len(rows), len(EMPTY_AT), len(rows))
    assert not (tmp_path / "out.parquet.parts").exists()


def test_labels_are_those_at_or_over_the_thresholds_and_empty_text_is_null(tmp_path, tfidf, rows, csv_input):
    score(tfidf, ScoreConfig(input=str(csv_input), output=str(tmp_path / "out.parquet"), chunk_size=CHUNK,
                             progress=False))
    table = pq.read_table(tmp_path / "out.parquet")
    predictor = load(tfidf)
    probs = probabilities(table, predictor.labels)
    labels = table.column("labels").to_pylist()
    for i, (row, names) in enumerate(zip(probs, labels, strict=True)):
        if i in EMPTY_AT:
            assert names is None and np.isnan(row).all()
        else:
            assert names == [n for n, p, t in zip(predictor.labels, row, predictor.thresholds, strict=True) if p >= t]
    assert any(labels[i] for i in range(len(labels)) if i not in EMPTY_AT), "no label fired: the test proves nothing"
    assert json.loads((tmp_path / "out.parquet.score.json").read_text())["null_rows"] == len(EMPTY_AT)


def test_score_table_with_a_stub_predictor():
    class Stub:
        labels = ["a", "b"]
        thresholds = np.array([0.5, 0.2], dtype=np.float32)

        def predict(self, texts):
            assert all(t.strip() for t in texts), "an empty text reached the model"
            return np.array([[0.5, 0.1], [0.4, 0.9]], dtype=np.float32)[: len(texts)]

    chunk = pa.table({"text": ["x", "  ", "y", None], "key": ["1", "2", "3", "4"]})
    out = score_table(Stub(), chunk, "text", "key")
    assert out.schema == output_schema(["a", "b"], "key")
    assert out.column("labels").to_pylist() == [["a"], None, ["b"], None]
    assert out.column("prob_a").to_pylist() == [0.5, None, pytest.approx(0.4), None]


def test_row_numbers_without_an_id_column_and_an_explicit_id_column(tmp_path, tfidf, rows):
    plain = [{"text": r["comment_text"], "toxic": r["toxic"]} for r in rows]
    path = write_rows(plain, tmp_path / "plain.jsonl", "jsonl")
    score(tfidf, ScoreConfig(input=str(path), output=str(tmp_path / "rows.parquet"), chunk_size=CHUNK, progress=False))
    assert pq.read_table(tmp_path / "rows.parquet").column("row").to_pylist() == list(range(len(rows)))
    score(tfidf, ScoreConfig(input=str(path), output=str(tmp_path / "ids.parquet"), id_column="toxic",
                             chunk_size=CHUNK, progress=False))
    assert pq.read_table(tmp_path / "ids.parquet").column("toxic").to_pylist() == [str(r["toxic"]) for r in rows]


@pytest.mark.parametrize("name", ["out.csv", "out.csv.gz"])
def test_csv_output_joins_labels_with_semicolons(tmp_path, tfidf, csv_input, name):
    score(tfidf, ScoreConfig(input=str(csv_input), output=str(tmp_path / "ref.parquet"), chunk_size=CHUNK,
                             progress=False))
    score(tfidf, ScoreConfig(input=str(csv_input), output=str(tmp_path / name), chunk_size=CHUNK, progress=False))
    ref = pq.read_table(tmp_path / "ref.parquet")
    out = pacsv.read_csv(tmp_path / name, convert_options=pacsv.ConvertOptions(
        column_types={"id": pa.string(), "labels": pa.string()}, strings_can_be_null=True))
    assert out.column_names == ref.column_names
    assert out.column("labels").to_pylist() == [None if v is None else ";".join(v) or None
                                                for v in ref.column("labels").to_pylist()]
    np.testing.assert_allclose(probabilities(out, load(tfidf).labels), probabilities(ref, load(tfidf).labels),
                               atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("backend", ["torch", "torch-int8", "ort"])
def test_neural_artifacts_score_as_their_predictor(tmp_path, tiny_teacher_and_onnx, rows, csv_input, backend):
    teacher, onnx = tiny_teacher_and_onnx
    artifact = onnx if backend == "ort" else teacher
    score(artifact, ScoreConfig(input=str(csv_input), output=str(tmp_path / "out.parquet"), chunk_size=CHUNK,
                                backend=backend, progress=False))
    predictor = load(artifact, backend=backend)
    expected = reference_scores(predictor, _texts(rows), CHUNK)
    got = probabilities(pq.read_table(tmp_path / "out.parquet"), predictor.labels)
    np.testing.assert_allclose(got, expected, atol=1e-6, equal_nan=True)


@pytest.fixture(scope="module")
def tiny_teacher_and_onnx(tmp_path_factory) -> tuple[Path, Path]:
    from export.onnx import OnnxExportConfig, export_onnx
    from tests.export.helpers import teacher_artifact

    root = tmp_path_factory.mktemp("neural")
    teacher = teacher_artifact(root / "teacher", fixtures.write_tiny_bert(root / "bert"))
    return teacher, export_onnx(teacher, OnnxExportConfig(out=str(root / "onnx"))).artifact


# ---------------------------------------------------------------------------------------------
# Resume


def test_resume_after_an_interrupt_gives_the_uninterrupted_output(tmp_path, tfidf, csv_input, monkeypatch):
    config = dict(input=str(csv_input), chunk_size=CHUNK, progress=False)
    score(tfidf, ScoreConfig(output=str(tmp_path / "whole.parquet"), **config))
    calls = {"n": 0}
    real = score_mod.score_table

    def dies_on_the_third_chunk(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(score_mod, "score_table", dies_on_the_third_chunk)
    out = tmp_path / "resumed.parquet"
    with pytest.raises(KeyboardInterrupt):
        score(tfidf, ScoreConfig(output=str(out), **config))
    assert not out.exists()
    state = json.loads((tmp_path / "resumed.parquet.parts" / "state.json").read_text())
    assert (state["chunks"], state["rows"]) == (2, 2 * CHUNK)
    monkeypatch.setattr(score_mod, "score_table", real)
    result = score(tfidf, ScoreConfig(output=str(out), resume=True, **config))
    assert (result.resumed_rows, result.scored_rows) == (2 * CHUNK, 120 - 2 * CHUNK)
    assert pq.read_table(out).equals(pq.read_table(tmp_path / "whole.parquet"))
    assert not (tmp_path / "resumed.parquet.parts").exists()
    again = score(tfidf, ScoreConfig(output=str(out), resume=True, **config))
    assert again.already_complete and again.rows == 120


def test_resume_after_sigkill_gives_the_uninterrupted_output(tmp_path, tfidf):
    rows = jigsaw_rows(6000, seed=3)
    path = write_rows(rows, tmp_path / "big.csv", "csv")
    args = [str(tfidf), "--input", str(path), "--output", str(tmp_path / "out.parquet"), "--chunk-size", "20",
            "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "modcompress", "serve", "score", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / "out.parquet.parts" / "state.json"
    try:
        from tests.serve.helpers import wait_until

        assert wait_until(lambda: state.exists() and json.loads(state.read_text())["chunks"] >= 3, timeout_s=120,
                          step_s=0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    done = json.loads(state.read_text())["chunks"]
    assert 3 <= done < 300 and not (tmp_path / "out.parquet").exists()
    assert serve_main(["score", *args, "--resume"]) == 0
    assert serve_main(["score", *args[:3], "--output", str(tmp_path / "whole.parquet"), *args[5:]]) == 0
    assert pq.read_table(tmp_path / "out.parquet").equals(pq.read_table(tmp_path / "whole.parquet"))


def test_resume_refuses_another_job_with_one_line_and_changes_nothing(tmp_path, tfidf, csv_input, capsys,
                                                                       monkeypatch):
    monkeypatch.setattr(score_mod, "score_table", _interrupt)
    base = [str(tfidf), "--input", str(csv_input), "--output", str(tmp_path / "o.parquet"), "--no-progress"]
    assert serve_main(["score", *base, "--chunk-size", "30"]) == 130
    before = sorted(p.name for p in (tmp_path / "o.parquet.parts").iterdir())
    capsys.readouterr()
    assert serve_main(["score", *base, "--chunk-size", "40", "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "another job" in err and "chunk_size was 30, now 40" in err
    assert sorted(p.name for p in (tmp_path / "o.parquet.parts").iterdir()) == before
    assert serve_main(["score", *base, "--chunk-size", "30"]) == 2
    assert "--resume" in capsys.readouterr().err


def _interrupt(*_args, **_kwargs):
    raise KeyboardInterrupt


# ---------------------------------------------------------------------------------------------
# What may be replaced


def test_overwrite_replaces_only_outputs_of_ours(tmp_path, tfidf, csv_input, capsys):
    base = [str(tfidf), "--input", str(csv_input), "--no-progress"]
    users = tmp_path / "users.parquet"
    users.write_text("the user's own file")
    assert serve_main(["score", *base, "--output", str(users), "--overwrite"]) == 2
    assert "not written by serve score" in capsys.readouterr().err
    assert users.read_text() == "the user's own file"
    ours = tmp_path / "ours.parquet"
    assert serve_main(["score", *base, "--output", str(ours)]) == 0
    assert serve_main(["score", *base, "--output", str(ours)]) == 2
    assert "exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert serve_main(["score", *base, "--output", str(ours), "--chunk-size", "7", "--overwrite"]) == 0
    assert json.loads((tmp_path / "ours.parquet.score.json").read_text())["chunks"] == 18
    (tmp_path / "x.parquet.parts").mkdir()
    (tmp_path / "x.parquet.parts" / "keep.txt").write_text("mine")
    assert serve_main(["score", *base, "--output", str(tmp_path / "x.parquet"), "--overwrite"]) == 2
    assert (tmp_path / "x.parquet.parts" / "keep.txt").read_text() == "mine"


def test_overwrite_of_an_interrupted_run_keeps_files_it_did_not_make(tmp_path, tfidf, csv_input, monkeypatch):
    out = tmp_path / "o.parquet"
    monkeypatch.setattr(score_mod, "score_table", _interrupt)
    with pytest.raises(KeyboardInterrupt):
        score(tfidf, ScoreConfig(input=str(csv_input), output=str(out), progress=False))
    (tmp_path / "o.parquet.parts" / "notes.txt").write_text("mine")
    monkeypatch.undo()
    score(tfidf, ScoreConfig(input=str(csv_input), output=str(out), overwrite=True, progress=False))
    assert pq.read_table(out).num_rows == 120
    assert [p.name for p in (tmp_path / "o.parquet.parts").iterdir()] == ["notes.txt"]


# ---------------------------------------------------------------------------------------------
# Bounded memory


def test_rechunk_pulls_a_block_only_when_the_chunk_needs_it():
    pulled = {"n": 0}

    def blocks():
        for i in range(50):
            pulled["n"] += 1
            yield pa.table({"text": [f"t{i}-{j}" for j in range(7)]})

    seen = []
    for k, chunk in enumerate(rechunk(blocks(), 10)):
        # chunk k needs rows up to 10 (k + 1): ceil(10 (k + 1) / 7) blocks, never more
        assert pulled["n"] == -(-10 * (k + 1) // 7) or chunk.num_rows < 10
        seen += chunk.column("text").to_pylist()
        assert chunk.num_rows == 10 or k == 34
    assert seen == [f"t{i}-{j}" for i in range(50) for j in range(7)]


def test_the_local_engine_holds_one_chunk_at_a_time(tmp_path, tfidf, csv_input, monkeypatch):
    real = score_mod.read_chunks
    ahead = []

    def counting(spec, chunk_size):
        for k, chunk in enumerate(real(spec, chunk_size)):
            ahead.append(k - store_chunks())  # chunks read but not yet stored when chunk k is handed out
            yield chunk

    state = tmp_path / "o.parquet.parts" / "state.json"

    def store_chunks() -> int:
        return json.loads(state.read_text())["chunks"]

    monkeypatch.setattr(score_mod, "read_chunks", counting)
    score(tfidf, ScoreConfig(input=str(csv_input), output=str(tmp_path / "o.parquet"), chunk_size=10,
                             progress=False))
    assert ahead == [0] * 12


def test_csv_reader_streams_in_blocks(tmp_path, rows):
    path = write_rows(rows * 200, tmp_path / "big.csv", "csv")  # ~2 MB: more than one read block
    spec = inspect_input(str(path))
    sizes = [c.num_rows for c in read_chunks(spec, 5000)]
    assert sizes == [5000] * 4 + [4000]


# ---------------------------------------------------------------------------------------------
# Bad arguments: one line, exit 2, checked before the model loads, nothing written


@pytest.fixture
def no_model_load(monkeypatch):
    def fail(*_a, **_k):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr("export.runtime.load", fail)


@pytest.mark.parametrize("case,expected", [
    (["--input", "{tmp}/missing.csv"], "input file not found"),
    (["--input", "s3://bucket/comments.csv"], "is a URL; the local engine reads local files"),
    (["--text-column", "body_text"], "no column 'body_text'"),
    (["--id-column", "nope"], "no column 'nope'"),
    (["--chunk-size", "0"], "chunk_size: must be in 1.."),
    (["--chunk-size", "ten"], "--chunk-size: expected an integer, got 'ten'"),
    (["--engine", "spark"], "engine: must be one of local, ray"),
    (["--workers", "2"], "only for engine ray"),
    (["--format", "xml"], "format: must be one of"),
    (["--output", "{tmp}/exists.parquet"], "exists and was not written by serve score"),
    (["--resume", "--overwrite"], "pass one of them"),
    (["--output", "{tmp}"], "is a directory"),
])
def test_bad_arguments_are_one_line_and_exit_2(tmp_path, tfidf, csv_input, capsys, no_model_load, case, expected):
    (tmp_path / "exists.parquet").write_text("x")
    extra = [arg.format(tmp=tmp_path) for arg in case]
    defaults = [flag_value for flag, value in (("--input", str(csv_input)), ("--output", str(tmp_path / "new.parquet")))
                if flag not in extra for flag_value in (flag, value)]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert serve_main(["score", str(tfidf), *defaults, "--no-progress", *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and expected in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_not_an_artifact_is_one_line(tmp_path, csv_input, capsys):
    assert serve_main(["score", str(tmp_path), "--input", str(csv_input), "--output", str(tmp_path / "o.parquet")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "artifact" in err


def test_the_local_path_never_imports_ray(tmp_path, tfidf, csv_input):
    code = ("import sys; from serve.score import score, ScoreConfig; "
            f"score({str(tfidf)!r}, ScoreConfig(input={str(csv_input)!r}, output={str(tmp_path / 'o.parquet')!r}, "
            "progress=False)); print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_store_refuses_a_parts_directory_it_did_not_make(tmp_path):
    out = tmp_path / "o.parquet"
    (tmp_path / "o.parquet.parts").mkdir()
    with pytest.raises(Exception, match="not made by serve score"):
        PartStore.open(out, "parquet", {"a": 1}, resume=True)
