"""Tiny artifacts built in code (a TF-IDF baseline, a 2-layer BERT teacher) and one test Triton server."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from compress.artifact import ArtifactInfo, write_info
from tests import fixtures
from tests.fixtures import write_tfidf_artifact

LABELS = list(fixtures.JIGSAW_LABELS)
HIERARCHY = {"severe_toxic": "toxic"}


def write_hf_artifact(directory: Path, max_length: int = 32) -> Path:
    """A tiny 2-layer BERT teacher artifact (``model/`` + ``tokenizer/``), untrained, MiniLM-like recipe."""
    fixtures.write_tiny_bert(directory / "model", num_labels=len(LABELS))
    fixtures.write_tokenizer(directory / "tokenizer")
    write_info(directory, ArtifactInfo(
        kind="teacher", architecture="hf", labels=LABELS, hierarchy=HIERARCHY, thresholds=[0.5] * len(LABELS),
        max_length=max_length, metrics={"macro_roc_auc": 0.61, "macro_f1": 0.31},
        recipe={"model": "minilm"}))
    return directory


@pytest.fixture(scope="session")
def tfidf_artifact(tmp_path_factory) -> Path:
    return write_tfidf_artifact(tmp_path_factory.mktemp("runs") / "tfidf")


@pytest.fixture(scope="session")
def hf_artifact(tmp_path_factory) -> Path:
    return write_hf_artifact(tmp_path_factory.mktemp("runs_hf") / "teacher")


@pytest.fixture(scope="session")
def text_onnx_artifact(tmp_path_factory, hf_artifact) -> Path:
    """The tiny teacher exported to ONNX ``--with-tokenizer`` (model.onnx + model_with_tokenizer.onnx)."""
    from export.onnx import OnnxExportConfig, export_onnx

    out = tmp_path_factory.mktemp("runs_text") / "teacher-onnx"
    return export_onnx(hf_artifact, OnnxExportConfig(out=str(out), with_tokenizer=True)).artifact


@pytest.fixture
def runs_dir(tmp_path, tfidf_artifact) -> Path:
    """A runs/ directory holding copies of the TF-IDF artifact under two names."""
    runs = tmp_path / "runs"
    runs.mkdir()
    for name in ("tfidf-a", "tfidf-b"):
        shutil.copytree(tfidf_artifact, runs / name)
    return runs




@pytest.fixture(scope="session")
def server(tfidf_artifact, tmp_path_factory):
    """A real tritonserver on free loopback ports serving the TF-IDF artifact as model ``tfidf``."""
    from bench.artifacts import load_predictor
    from serve.config import ServeConfig
    from serve.server import free_ports, start_server

    http_port, grpc_port, metrics_port = free_ports(3)
    config = ServeConfig(http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, max_batch_size=16,
                         exit_timeout_s=5, log_file=tmp_path_factory.mktemp("triton") / "triton.log")
    with start_server([load_predictor(tfidf_artifact, "torch")], config) as handle:
        yield handle


def jigsaw_rows(n: int = 120, seed: int = 1) -> tuple[list[str], np.ndarray]:
    """Held-out synthetic rows (another seed than the artifact's training rows)."""
    texts, labels = fixtures.synthetic_rows(n, seed)
    return texts, labels.astype(np.float32)
