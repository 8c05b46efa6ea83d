"""Tiny models and labelled data built in code: no downloads, seeded, fast.

``write_jigsaw_csv`` writes a Jigsaw-format CSV (id, comment_text, six 0/1 labels) whose texts
carry real signal: each label has marker words, so a tiny model learns it in a few steps and
metrics have something to measure. severe_toxic rows are always toxic (the hierarchy).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

JIGSAW_LABELS = ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")
MARKERS = {
    "toxic": ["awful", "stupid", "trash"],
    "severe_toxic": ["vile", "disgusting"],
    "obscene": ["crap", "damn"],
    "threat": ["kill", "hurt"],
    "insult": ["idiot", "moron", "loser"],
    "identity_hate": ["those", "people"],
}
NEUTRAL = ("the article is good and i think we should add more sources to this page about history "
           "please check the talk page before you edit thanks for the help with the references "
           "it was a nice day and the weather is fine").split()
PREVALENCE = {"toxic": 0.35, "severe_toxic": 0.08, "obscene": 0.2, "threat": 0.08, "insult": 0.2,
              "identity_hate": 0.1}


def vocabulary() -> list[str]:
    """Every word the synthetic texts use, plus BERT's special tokens first."""
    words = sorted(set(NEUTRAL) | {w for ws in MARKERS.values() for w in ws})
    letters = [c for c in "abcdefghijklmnopqrstuvwxyz" if c not in words]
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *letters]


def synthetic_rows(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """``n`` texts and their (n, 6) labels; marker words appear (noisily) for positive labels."""
    rng = np.random.default_rng(seed)
    texts, labels = [], np.zeros((n, len(JIGSAW_LABELS)), dtype=np.int64)
    for i in range(n):
        row = {name: rng.random() < p for name, p in PREVALENCE.items()}
        if row["severe_toxic"]:
            row["toxic"] = True
        words = list(rng.choice(NEUTRAL, size=int(rng.integers(4, 20))))
        for j, name in enumerate(JIGSAW_LABELS):
            labels[i, j] = int(row[name])
            if row[name] and rng.random() < 0.9:
                words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(MARKERS[name])))
        texts.append(" ".join(words) + f" {i}")  # the suffix keeps texts unique
    return texts, labels


def write_jigsaw_csv(path: str | Path, n: int = 200, seed: int = 0) -> Path:
    """Write a Jigsaw-format CSV with ``n`` rows; returns the path."""
    texts, labels = synthetic_rows(n, seed)
    path = Path(path)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "comment_text", *JIGSAW_LABELS])
        for i, (text, row) in enumerate(zip(texts, labels, strict=True)):
            writer.writerow([f"id{i:05d}", text, *row.tolist()])
    return path


OLID_MARKERS = {  # words of the vocabulary that signal each OLID level
    "offensive": ["awful", "stupid", "trash"],
    "targeted": ["idiot", "moron", "loser"],
    "IND": ["kill", "hurt"],
    "GRP": ["those", "people"],
    "OTH": ["crap", "damn"],
}


def write_olid_tsv(path: str | Path, n: int = 400, seed: int = 0) -> Path:
    """An OLID-format TSV (id, tweet, subtask_a/b/c) with ``n`` rows whose levels carry marker words.

    Prevalences follow OLID's: a third offensive, 88% of those targeted, targets 62% IND, 28% GRP,
    10% OTH (each targeted tweet has exactly one target).
    """
    rng = np.random.default_rng(seed)
    lines = ["id\ttweet\tsubtask_a\tsubtask_b\tsubtask_c"]
    for i in range(n):
        words = list(rng.choice(NEUTRAL, size=int(rng.integers(4, 16))))
        a, b, c = "NOT", "NULL", "NULL"
        if rng.random() < 0.33:
            a, b = "OFF", "TIN" if rng.random() < 0.88 else "UNT"
            if b == "TIN":
                c = str(rng.choice(["IND", "GRP", "OTH"], p=[0.62, 0.28, 0.10]))
        for level in ((a == "OFF") * ["offensive"] + (b == "TIN") * ["targeted"] + (c != "NULL") * [c]):
            if rng.random() < 0.9:
                words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(OLID_MARKERS[level])))
        lines.append(f"{i}\t{' '.join(words)} {i}\t{a}\t{b}\t{c}")
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_tokenizer(directory: str | Path) -> Path:
    """A real BertTokenizerFast over :func:`vocabulary`, saved as a tokenizer directory."""
    from transformers import BertTokenizerFast

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(vocabulary()) + "\n")
    # digits are not in the vocabulary on purpose: they become [UNK], as rare words do.
    tokenizer = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
    tokenizer.save_pretrained(directory)
    return directory


def write_tiny_bert(directory: str | Path, num_labels: int = 6, layers: int = 2, hidden: int = 32,
                    seed: int = 0) -> Path:
    """A 2-layer, hidden-32 BERT sequence classifier + tokenizer, saved with save_pretrained."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    directory = Path(directory)
    write_tokenizer(directory)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocabulary()), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=hidden * 2, max_position_embeddings=128, num_labels=num_labels,
        problem_type="multi_label_classification",
    )
    BertForSequenceClassification(config).save_pretrained(directory)
    return directory


def write_tfidf_artifact(directory: Path, n: int = 300, seed: int = 0) -> Path:
    """A fitted TF-IDF baseline artifact on synthetic Jigsaw rows (thresholds tuned, metrics stored)."""
    from compress.artifact import ArtifactInfo, write_info
    from compress.metrics import multilabel_metrics, tune_thresholds
    from compress.models.tfidf import TfidfBaseline

    texts, labels = synthetic_rows(n, seed)
    model = TfidfBaseline(len(JIGSAW_LABELS), min_df=1, word_max_features=2000, char_max_features=2000)
    model.fit(texts[:200], labels[:200])
    probs = model.predict_proba(texts[200:])
    thresholds = tune_thresholds(labels[200:], probs)
    metrics = multilabel_metrics(labels[200:], probs, list(JIGSAW_LABELS), thresholds)
    model.save(directory / "model")
    write_info(directory, ArtifactInfo(
        kind="baseline", architecture="tfidf", labels=list(JIGSAW_LABELS), hierarchy={"severe_toxic": "toxic"},
        thresholds=[float(t) for t in thresholds], max_length=0, metrics=metrics,
        extra={"num_parameters": model.num_parameters()}))
    return directory
