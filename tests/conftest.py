"""Shared fixtures: tiny checkpoint and Jigsaw-format data built in code (see tests/fixtures.py)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest
import torch

from tests import fixtures

# Two cores: keep torch from oversubscribing them, and never touch the network.
torch.set_num_threads(min(2, os.cpu_count() or 1))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Commands log to MLflow's local store by default; keep this session's runs out of the working tree.
_MLFLOW_DIR = tempfile.mkdtemp(prefix="modcompress-test-mlflow-")
atexit.register(shutil.rmtree, _MLFLOW_DIR, ignore_errors=True)
os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{_MLFLOW_DIR}/mlflow.db")
# `auto` precision is measured on the machine at hand (compress.precision); the suite pins it to fp32 for
# training and inference, so it never spends time measuring and checks the same numbers on any CPU
# (tests/test_precision.py runs the precision-sensitive ones again with training auto forced to bf16).
os.environ.setdefault("MODCOMPRESS_AUTO_PRECISION", "no")
os.environ.setdefault("MODCOMPRESS_AUTO_INFERENCE_PRECISION", "no")


def pytest_collection_modifyitems(config, items):
    """GPU tests skip cleanly where there is no CUDA device (CI never has one)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A saved 2-layer hidden-32 BERT classifier (6 labels) with its tokenizer."""
    return fixtures.write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def jigsaw_csv(tmp_path_factory):
    """A 400-row Jigsaw-format CSV with learnable label signal."""
    return fixtures.write_jigsaw_csv(tmp_path_factory.mktemp("data") / "train.csv", n=400, seed=0)


@pytest.fixture
def no_tracking_overrides():
    return ["tracking.enabled=false"]
