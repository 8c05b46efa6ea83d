"""Every command against the same families of bad input.

For each (command, case): exit 2, exactly one line on stderr (``error: ...``), no traceback,
nothing written into the workspace, nothing that was there changed. The commands run in-process
(``modcompress.cli``), in a workspace that holds good data, broken inputs, a corrupt artifact,
an artifact of the wrong kind and a directory of the user's own files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from modcompress.cli import bench_main, compress_main, export_main, serve_main
from tests import fixtures

TOOLS: dict[str, Callable[[list[str]], int]] = {
    "compress": compress_main, "export": export_main, "serve": serve_main, "bench": bench_main}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """Inputs every case refers to by name (relative to the workspace, which is the cwd)."""
    ws = tmp_path_factory.mktemp("bad-input")
    fixtures.write_jigsaw_csv(ws / "data.csv", n=60, seed=0)
    (ws / "empty.csv").write_bytes(b"")
    (ws / "garbage.csv").write_bytes(bytes(range(256)) * 8)
    (ws / "wrong-columns.csv").write_text("a,b\n1,2\n3,4\n")
    (ws / "bad-labels.csv").write_text("id,comment_text,toxic,severe_toxic,obscene,threat,insult,identity_hate\n"
                                       "1,hello,7,0,0,0,0,0\n2,bye,0,0,0,0,0,0\n")
    (ws / "nan-labels.csv").write_text("id,comment_text,toxic,severe_toxic,obscene,threat,insult,identity_hate\n"
                                       "1,hello,,0,0,0,0,0\n2,bye,0,0,0,0,0,0\n")
    (ws / "recipe.yaml").write_text("optim: [1, 2]\n")
    corrupt = ws / "corrupt"
    corrupt.mkdir()
    (corrupt / "artifact.json").write_text("[1, 2, 3]")
    baseline = ws / "baseline"
    baseline.mkdir()
    (baseline / "artifact.json").write_text(json.dumps({
        "kind": "baseline", "architecture": "tfidf", "labels": ["toxic", "insult"], "format_version": 1}))
    mine = ws / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's own notes")
    (ws / "a-file").write_text("not a directory")
    (ws / "notanartifact").mkdir()
    fixtures.write_tiny_bert(ws / "tiny-bert")
    _tokenizer_artifacts(ws)
    fixtures.write_fragile_onnx_artifact(ws / "fragile")
    return ws


def _tokenizer_artifacts(ws: Path) -> None:
    """Artifacts for export onnx --with-tokenizer: a TextCNN with its own word-level vocabulary, one without a
    tokenizer, and a teacher with a WordPiece tokenizer (its model is never reached: each case fails first)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = Tokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1, "hello": 2}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(
        ws / "wordlevel" / "tokenizer")
    (ws / "no-tokenizer").mkdir()
    fixtures.write_tokenizer(ws / "wp-teacher" / "tokenizer")
    for name, kind, architecture in (("wordlevel", "student", "textcnn"), ("no-tokenizer", "student", "bilstm"),
                                     ("wp-teacher", "teacher", "hf")):
        (ws / name / "artifact.json").write_text(json.dumps({
            "kind": kind, "architecture": architecture, "labels": ["toxic", "insult"], "format_version": 1}))


def _snapshot(root: Path) -> dict[str, object]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else "dir")
            for p in sorted(root.rglob("*")) if "__pycache__" not in p.parts}


OUT_CASES = {  # bad --out destinations, refused before any work
    "out-user-dir": "mine",
    "out-file": "a-file",
    "out-cwd": ".",
    "out-proc": "/proc/self/modcompress",
    "out-input-dir": ".",  # the workspace holds the input data
}

CASES: list[tuple[str, str, list[str]]] = [
    # compress data stats
    ("data-missing", "compress", ["data", "stats", "nope.csv"]),
    ("data-empty", "compress", ["data", "stats", "empty.csv"]),
    ("data-garbage", "compress", ["data", "stats", "garbage.csv"]),
    ("data-wrong-columns", "compress", ["data", "stats", "wrong-columns.csv"]),
    ("data-bad-labels", "compress", ["data", "stats", "bad-labels.csv"]),
    ("data-nan-labels", "compress", ["data", "stats", "nan-labels.csv"]),
    ("data-wrong-format", "compress", ["data", "stats", "data.csv", "--format", "olid"]),
    # compress train
    ("train-missing", "compress", ["train", "--model", "tiny-bert", "--data", "nope.csv", "--out", "t"]),
    ("train-empty", "compress", ["train", "--model", "tiny-bert", "--data", "empty.csv", "--out", "t"]),
    ("train-garbage", "compress", ["train", "--model", "tiny-bert", "--data", "garbage.csv", "--out", "t"]),
    ("train-wrong-columns", "compress", ["train", "--model", "tiny-bert", "--data", "wrong-columns.csv", "--out", "t"]),
    ("train-bad-labels", "compress", ["train", "--model", "tiny-bert", "--data", "bad-labels.csv", "--out", "t"]),
    ("train-missing-model", "compress", ["train", "--model", "no-such-dir", "--data", "data.csv", "--out", "t"]),
    ("train-lr-inf", "compress", ["train", "--model", "tiny-bert", "--data", "data.csv", "--out", "t",
                                  "optim.lr=inf"]),
    ("train-threads", "compress", ["train", "--model", "tiny-bert", "--data", "data.csv", "--out", "t",
                                   "num_threads=-3"]),
    ("train-bad-select-metric", "compress", ["train", "--model", "tiny-bert", "--data", "data.csv", "--out", "t",
                                             "optim.select_metric=accuracy"]),
    ("train-bad-test-fraction", "compress", ["train", "--model", "tiny-bert", "--data", "data.csv", "--out", "t",
                                             "data.test_fraction=0.95"]),
    ("train-missing-test-data", "compress", ["train", "--model", "tiny-bert", "--data", "data.csv", "--out", "t",
                                             "--test-data", "nope.csv"]),
    ("train-unknown-key", "compress", ["train", "--model", "tiny-bert", "--data", "data.csv", "--out", "t",
                                       "optim.speed=9"]),
    ("train-bad-yaml", "compress", ["train", "--model", "tiny-bert", "--data", "data.csv", "--out", "t",
                                    "--config", "recipe.yaml"]),
    ("train-unknown-option", "compress", ["train", "--modle", "tiny-bert"]),
    ("train-bad-head", "compress", ["train", "--model", "tiny-bert", "--data", "data.csv", "--out", "t", "head=tree"]),
    ("train-conditional-no-hierarchy", "compress", ["train", "--model", "tiny-bert", "--data", "data.csv", "--out", "t",
                                                    "--label-columns", "toxic,insult", "head=conditional"]),
    ("train-conditional-focal", "compress", ["train", "--model", "tiny-bert", "--data", "data.csv", "--out", "t",
                                             "head=conditional", "loss.name=focal"]),
    ("train-resume-nothing", "compress", ["train", "--model", "tiny-bert", "--data", "data.csv", "--out", "t",
                                          "--resume"]),
    *[(f"train-{name}", "compress", ["train", "--model", "tiny-bert", "--data", "data.csv", "--out", out])
      for name, out in OUT_CASES.items()],
    # compress distill / baseline / quantize / tune / distill-report / quickstart
    ("distill-corrupt", "compress", ["distill", "corrupt", "textcnn", "--data", "data.csv", "--out", "s"]),
    ("distill-wrong-kind", "compress", ["distill", "baseline", "textcnn", "--data", "data.csv", "--out", "s"]),
    ("distill-missing", "compress", ["distill", "nope", "textcnn", "--data", "data.csv", "--out", "s"]),
    ("distill-not-artifact", "compress", ["distill", "notanartifact", "textcnn", "--data", "data.csv",
                                          "--out", "s"]),
    ("distill-bad-head", "compress", ["distill", "corrupt", "textcnn", "--data", "data.csv", "--out", "s",
                                      "head=tree"]),
    *[(f"distill-{name}", "compress", ["distill", "corrupt", "textcnn", "--data", "data.csv", "--out", out])
      for name, out in OUT_CASES.items()],
    ("baseline-unknown", "compress", ["baseline", "svm", "--data", "data.csv", "--out", "b"]),
    ("baseline-missing", "compress", ["baseline", "tfidf", "--data", "nope.csv", "--out", "b"]),
    ("baseline-bad-labels", "compress", ["baseline", "tfidf", "--data", "bad-labels.csv", "--out", "b"]),
    *[(f"baseline-{name}", "compress", ["baseline", "tfidf", "--data", "data.csv", "--out", out])
      for name, out in OUT_CASES.items()],
    ("quantize-corrupt", "compress", ["quantize", "corrupt", "--mode", "int8-dynamic", "--out", "q"]),
    ("quantize-wrong-kind", "compress", ["quantize", "baseline", "--mode", "int8-dynamic", "--out", "q"]),
    ("quantize-missing", "compress", ["quantize", "nope", "--mode", "int8-dynamic", "--out", "q"]),
    ("quantize-bad-mode", "compress", ["quantize", "corrupt", "--mode", "int4"]),
    ("quantize-static-no-data", "compress", ["quantize", "corrupt", "--mode", "int8-static", "--out", "q"]),
    ("quantize-unknown-node", "compress", ["quantize", "fragile", "--mode", "int8-dynamic", "--out", "q",
                                           "--exclude-nodes", "dense1,no-such-node"]),
    ("quantize-sensitivity-fp16", "compress", ["quantize", "fragile", "--mode", "fp16", "--sensitivity",
                                               "--data", "data.csv", "--out", "q"]),
    ("quantize-sensitivity-no-data", "compress", ["quantize", "fragile", "--mode", "int8-dynamic", "--sensitivity",
                                                  "--out", "q"]),
    ("quantize-max-excluded", "compress", ["quantize", "fragile", "--mode", "int8-dynamic", "--max-excluded", "-1"]),
    *[(f"quantize-{name}", "compress", ["quantize", "baseline", "--mode", "int8-dynamic", "--out", out])
      for name, out in OUT_CASES.items()],
    ("tune-zero-trials", "compress", ["tune", "--model", "tiny-bert", "--data", "data.csv", "--n-trials", "0"]),
    ("tune-bad-select-metric", "compress", ["tune", "--model", "tiny-bert", "--data", "data.csv",
                                            "optim.select_metric=f1"]),
    ("tune-bad-storage", "compress", ["tune", "--model", "tiny-bert", "--data", "data.csv",
                                      "--storage", "nosuchdb://x"]),
    ("distill-report-corrupt", "compress", ["distill-report", "corrupt"]),
    ("distill-report-missing", "compress", ["distill-report", "nope"]),
    ("quickstart-out-user-dir", "compress", ["quickstart", "--out", "mine"]),
    ("quickstart-bad-limit", "compress", ["quickstart", "--out", "qs", "--limit", "-5"]),
    # export
    ("onnx-corrupt", "export", ["onnx", "corrupt", "--out", "o"]),
    ("onnx-wrong-kind", "export", ["onnx", "baseline", "--out", "o"]),
    ("onnx-missing", "export", ["onnx", "nope", "--out", "o"]),
    ("onnx-bad-opset", "export", ["onnx", "baseline", "--out", "o", "--opset", "5"]),
    *[(f"onnx-{name}", "export", ["onnx", "baseline", "--out", out]) for name, out in OUT_CASES.items()],
    ("onnx-with-tokenizer-not-wordpiece", "export", ["onnx", "wordlevel", "--out", "o", "--with-tokenizer"]),
    ("onnx-with-tokenizer-baseline", "export", ["onnx", "baseline", "--out", "o", "--with-tokenizer"]),
    ("onnx-with-tokenizer-none", "export", ["onnx", "no-tokenizer", "--out", "o", "--with-tokenizer"]),
    ("onnx-tokenizer-texts-without-flag", "export", ["onnx", "wp-teacher", "--out", "o", "--tokenizer-texts",
                                                     "data.csv"]),
    ("onnx-tokenizer-texts-missing", "export", ["onnx", "wp-teacher", "--out", "o", "--with-tokenizer",
                                                "--tokenizer-texts", "nope.txt"]),
    ("onnx-tokenizer-texts-garbage", "export", ["onnx", "wp-teacher", "--out", "o", "--with-tokenizer",
                                                "--tokenizer-texts", "garbage.csv"]),
    ("tensorrt-corrupt", "export", ["tensorrt", "corrupt", "--out", "e"]),
    ("tensorrt-wrong-kind", "export", ["tensorrt", "baseline", "--out", "e"]),
    ("tensorrt-int8-no-data", "export", ["tensorrt", "fragile", "--int8", "--out", "e"]),
    ("tensorrt-int8-max-auc-drop", "export", ["tensorrt", "fragile", "--int8", "--data", "data.csv",
                                              "--max-auc-drop", "1.5", "--out", "e"]),
    ("tensorrt-int8-missing-data", "export", ["tensorrt", "fragile", "--int8", "--data", "nope.csv", "--out", "e"]),
    # without TensorRT: the missing package; with it and a GPU: the CPU guard refusing the fragile node
    ("tensorrt-int8-fragile", "export", ["tensorrt", "fragile", "--int8", "--data", "data.csv",
                                         "--calibration-samples", "16", "--out", "e"]),
    ("triton-corrupt", "export", ["triton", "corrupt", "--out", "repo"]),
    ("triton-wrong-kind", "export", ["triton", "baseline", "--out", "repo"]),
    ("triton-batch-sizes", "export", ["triton", "baseline", "--out", "repo", "--preferred-batch-sizes", "a,b"]),
    ("triton-repository-path", "export", ["triton", "baseline", "--out", "repo", "--repository-path", "models"]),
    *[(f"triton-{name}", "export", ["triton", "baseline", "--out", out]) for name, out in OUT_CASES.items()],
    # serve
    ("serve-start-missing", "serve", ["start", "nope"]),
    ("serve-start-corrupt", "serve", ["start", "corrupt", "--http-port", "18790", "--grpc-port", "18791",
                                      "--metrics-port", "18792"]),
    ("serve-start-port", "serve", ["start", "baseline", "--http-port", "99999"]),
    ("serve-start-threads", "serve", ["start", "baseline", "--threads", "0"]),
    ("serve-check-port", "serve", ["check", "http://127.0.0.1:99999", "--text", "hi"]),
    ("serve-check-url", "serve", ["check", "ftp://example", "--text", "hi"]),
    ("score-missing-input", "serve", ["score", "baseline", "--input", "nope.csv", "--output", "s.parquet"]),
    ("score-empty-input", "serve", ["score", "baseline", "--input", "empty.csv", "--output", "s.parquet"]),
    ("score-bad-column", "serve", ["score", "baseline", "--input", "data.csv", "--output", "s.parquet",
                                   "--text-column", "nope"]),
    ("score-corrupt", "serve", ["score", "corrupt", "--input", "data.csv", "--output", "s.parquet"]),
    ("score-missing-artifact", "serve", ["score", "nope", "--input", "data.csv", "--output", "s.parquet"]),
    ("score-out-file", "serve", ["score", "baseline", "--input", "data.csv", "--output", "a-file"]),
    ("score-out-user-dir", "serve", ["score", "baseline", "--input", "data.csv", "--output", "mine"]),
    ("score-out-is-input", "serve", ["score", "baseline", "--input", "data.csv", "--output", "data.csv"]),
    ("score-bad-chunk", "serve", ["score", "baseline", "--input", "data.csv", "--output", "s.parquet",
                                  "--chunk-size", "0"]),
    ("score-bad-engine", "serve", ["score", "baseline", "--input", "data.csv", "--output", "s.parquet",
                                   "--engine", "spark"]),
    ("serve-check-unreachable", "serve", ["check", "http://127.0.0.1:9", "--text", "hi", "--timeout", "2"]),
    # bench
    ("latency-corrupt", "bench", ["latency", "corrupt"]),
    ("latency-missing", "bench", ["latency", "nope"]),
    ("latency-batch-sizes", "bench", ["latency", "baseline", "--batch-sizes", "a"]),
    ("accuracy-missing-data", "bench", ["accuracy", "baseline", "--data", "nope.csv"]),
    ("accuracy-corrupt", "bench", ["accuracy", "corrupt", "--data", "data.csv"]),
    ("accuracy-bad-labels", "bench", ["accuracy", "baseline", "--data", "bad-labels.csv"]),
    ("accuracy-bad-identity-column", "bench", ["accuracy", "baseline", "--data", "data.csv",
                                               "--identity-columns", "male,nope"]),
    ("accuracy-bad-bias-label", "bench", ["accuracy", "baseline", "--data", "data.csv", "--identity-columns",
                                          "male", "--bias-label", "obscene"]),
    ("accuracy-bad-split", "bench", ["accuracy", "baseline", "--data", "data.csv", "--split", "train"]),
    ("load-port", "bench", ["load", "--url", "http://127.0.0.1:99999", "--model", "m", "--users", "1",
                            "--duration", "1s"]),
    ("load-url", "bench", ["load", "--url", "gopher://x", "--model", "m"]),
    ("report-missing", "bench", ["report", "nope-dir"]),
    ("table-corrupt", "bench", ["table", "corrupt"]),
    ("table-bad-price", "bench", ["table", "baseline", "--dollars-per-hour", "-1"]),
    ("select-bad-metric", "bench", ["select", "baseline", "--min-metric", "macro_f1"]),
    ("select-missing-table", "bench", ["select", "--from-table", "nope.json"]),
    ("train-speed-missing", "bench", ["train-speed", "--data", "nope.csv"]),
    ("train-speed-bad-threads", "bench", ["train-speed", "--data", "data.csv", "--threads", "0"]),
    ("quant-speed-wrong-kind", "bench", ["quant-speed", "baseline", "--data", "data.csv"]),
    ("serve-speed-missing", "bench", ["serve-speed", "nope"]),
    ("serve-speed-bad-protocol", "bench", ["serve-speed", "baseline", "--protocols", "http,websocket"]),
    ("score-speed-missing", "bench", ["score-speed", "nope"]),
    ("score-speed-corrupt", "bench", ["score-speed", "corrupt"]),
]


@pytest.mark.parametrize(("case", "tool", "argv"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(workspace, monkeypatch, capsys, case, tool, argv):
    monkeypatch.chdir(workspace)
    before = _snapshot(workspace)
    code = TOOLS[tool](argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"{case}: exit {code}, stderr: {err}"
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{case}: stderr is not one error line:\n{err}"
    assert _snapshot(workspace) == before, f"{case}: the workspace changed"
    assert not [p for p in workspace.iterdir() if p.name.startswith(".") and ".tmp-" in p.name]


def test_the_matrix_covers_every_command():
    """A new command must join the matrix: every registered subcommand has at least one case."""
    from modcompress import cli

    tools = {"compress": cli.COMPRESS, "export": cli.EXPORT, "serve": cli.SERVE, "bench": cli.BENCH}
    covered = {(tool, argv[0].replace("-", "_")) for _, tool, argv in CASES}
    missing = [f"{tool} {name}" for tool, names in tools.items() for name in names if (tool, name) not in covered]
    assert missing == []
    assert os.environ.get("MLFLOW_TRACKING_URI", "").startswith("sqlite:///")  # runs never land in the workspace
