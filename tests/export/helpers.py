"""Artifacts built in code for the export and quantize tests: tiny, seeded, no downloads.

Fixtures defined here are imported by tests/export/conftest.py and tests/compress/test_quantize.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from compress.artifact import ArtifactInfo, atomic_artifact_dir, write_info
from tests import fixtures

LABELS = list(fixtures.JIGSAW_LABELS)
# Real texts with punctuation, accents, emoji, CJK, long words, empty and whitespace-only strings.
TRICKY_TEXTS = [
    "you idiot, i will KILL you!!!",
    "the article is good and i think we should add more sources",
    "Café déjà-vu — naïve résumé 😀 #MAGA @USER URL",
    "日本語のテキスト and trash",
    "supercalifragilisticexpialidociousandthensomemorelettersthatmakethiswordverylong" * 2,
    "",
    "   \t  ",
    "stupid\u00adhidden\u200bjoiners and\ttabs\nnewlines",
    "it's a can't-won't (test) [brackets] {braces} $100 50% a+b=c",
]


def teacher_artifact(directory: Path, model_dir: Path, kind: str = "teacher", architecture: str = "hf",
                     max_length: int = 32) -> Path:
    """Wrap a saved HF checkpoint (with its tokenizer) as a teacher/student artifact."""
    with atomic_artifact_dir(directory) as tmp:
        shutil.copytree(model_dir, tmp / "model")
        fixtures.write_tokenizer(tmp / "tokenizer")
        write_info(tmp, ArtifactInfo(kind=kind, architecture=architecture, labels=LABELS,
                                     hierarchy={"severe_toxic": "toxic"}, thresholds=[0.5] * 6, max_length=max_length,
                                     metrics={"macro_roc_auc": 0.5}))
    return directory


def student_artifact(directory: Path, architecture: str, teacher_model_dir: Path, max_length: int = 32) -> Path:
    """A small, untrained registered student (``compress.models.STUDENTS``) saved as an artifact."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from compress.models import FROM_TEACHER, STUDENTS, save_own_model

    torch.manual_seed(0)
    with atomic_artifact_dir(directory) as tmp:
        if architecture in FROM_TEACHER:
            teacher = AutoModelForSequenceClassification.from_pretrained(teacher_model_dir)
            STUDENTS[architecture](teacher, 1).save_pretrained(tmp / "model")
        else:
            params = {"vocab_size": len(fixtures.vocabulary()), "embed_dim": 16, "dropout": 0.0, "pad_id": 0}
            params.update({"num_filters": 8, "widths": [2, 3]} if architecture == "textcnn" else
                          {"hidden": 8, "attention_dim": 8} if architecture == "bilstm" else {})
            model = STUDENTS[architecture](num_labels=len(LABELS), **params)
            save_own_model(model, tmp / "model", architecture, params, len(LABELS))
        fixtures.write_tokenizer(tmp / "tokenizer")
        write_info(tmp, ArtifactInfo(kind="student", architecture=architecture, labels=LABELS,
                                     hierarchy={"severe_toxic": "toxic"}, thresholds=[0.5] * 6, max_length=max_length))
    return directory


def train_teacher(directory: Path, tiny_bert_dir: Path, csv: Path) -> Path:
    """A tiny BERT teacher trained a few epochs with ``compress.train`` (learns the marker words)."""
    from compress.config import TrainConfig, load_config
    from compress.train import train

    config = load_config(TrainConfig, None, [
        f"model={tiny_bert_dir}", f"data.data={csv}", f"out={directory}", "optim.lr=5e-3", "optim.epochs=4",
        "optim.patience=4", "optim.batch_size=16", "optim.mixed_precision=no", "max_length=32",
        "tracking.enabled=false",
    ])
    train(config)
    return directory


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory, tiny_bert_dir) -> Path:
    """Untrained tiny HF teacher artifact (random head)."""
    return teacher_artifact(tmp_path_factory.mktemp("art") / "teacher", tiny_bert_dir)


@pytest.fixture(scope="session")
def trained_teacher(tmp_path_factory, tiny_bert_dir, jigsaw_csv) -> Path:
    """Tiny HF teacher trained on the synthetic Jigsaw data (validation macro ROC-AUC well above 0.5)."""
    return train_teacher(tmp_path_factory.mktemp("art") / "trained", tiny_bert_dir, jigsaw_csv)


@pytest.fixture(scope="session")
def trained_onnx(tmp_path_factory, trained_teacher) -> Path:
    """The trained teacher exported to ONNX (validated)."""
    from export.onnx import OnnxExportConfig, export_onnx

    return export_onnx(trained_teacher, OnnxExportConfig(out=str(tmp_path_factory.mktemp("art") / "onnx"))).artifact


@pytest.fixture(scope="session")
def text_onnx(tmp_path_factory, tiny_teacher) -> Path:
    """The untrained tiny teacher exported to ONNX with the tokenizer in the graph (``--with-tokenizer``)."""
    from export.onnx import OnnxExportConfig, export_onnx

    out = tmp_path_factory.mktemp("art") / "text-onnx"
    return export_onnx(tiny_teacher, OnnxExportConfig(out=str(out), with_tokenizer=True)).artifact
