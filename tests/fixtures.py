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


def olid_path() -> Path | None:
    """The real OLID training file of the shared data folder (beside the repository, or /work/shared), if present."""
    root = Path(__file__).resolve().parents[1]
    for shared in (root / "shared", root.parent / "shared", Path("/work/shared")):
        path = shared / "data" / "olid" / "olid-training-v1.0.tsv.gz"
        if path.is_file():
            return path
    return None


def olid_texts() -> list[str]:
    """Every tweet of the OLID training file, raw (no dedup, no cleaning), in file order."""
    import csv
    import gzip

    path = olid_path()
    assert path is not None
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [row[1] for row in rows[1:]]


def write_wordpiece_tokenizer(directory: str | Path, texts: list[str], vocab_size: int = 2000, lower: bool = True,
                              strip_accents: bool | None = None, chinese: bool = True) -> Path:
    """A BertTokenizerFast whose WordPiece vocabulary is trained here on ``texts`` (tokenizers' trainer)."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    trainer = BertWordPieceTokenizer(lowercase=lower, strip_accents=strip_accents, handle_chinese_chars=chinese)
    trainer.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, show_progress=False)
    trainer.save_model(str(directory))
    BertTokenizerFast(vocab_file=str(directory / "vocab.txt"), do_lower_case=lower, strip_accents=strip_accents,
                      tokenize_chinese_chars=chinese).save_pretrained(directory)
    return directory


FRAGILE_NODE = "dense1"  # the node of :func:`write_fragile_onnx_artifact` that int8 breaks


def write_fragile_onnx_artifact(directory: str | Path, max_length: int = 32) -> Path:
    """An ``onnx`` artifact (model.onnx, tokenizer, artifact.json) whose node :data:`FRAGILE_NODE` breaks under int8.

    A bag-of-words classifier with hand-set weights, good in fp32 on :func:`synthetic_rows` (each
    label's marker words light one feature)::

        embed (Gather, V x 7) -> masked mean pool (B, 7) -> dense1 (MatMul 7x7) -> relu -> dense2 (MatMul 7x7)
        -> relu -> classifier (MatMul 7x6) + bias -> logits (B, 6)

    Feature 6 is zero for every token, so dense1's row 6 never reaches the output in fp32; that row
    holds 1e4. Per-tensor and per-column int8 scales alike become 1e4 / 127, which rounds the
    row's real weights (4.0) to zero: dense1 alone in int8 sends the model to chance, every other node
    alone moves the logits by a few thousandths. dense1 is not among the last two weight ops, so the
    float-head fallback does not save it.
    """
    import onnx
    from onnx import TensorProto, numpy_helper
    from onnx import helper as oh

    from compress.artifact import ArtifactInfo, atomic_artifact_dir, write_info

    vocab = vocabulary()
    n_labels = len(JIGSAW_LABELS)
    dim = n_labels + 1  # + the dead feature
    embed = np.zeros((len(vocab), dim), np.float32)
    for j, name in enumerate(JIGSAW_LABELS):
        for word in MARKERS[name]:
            embed[vocab.index(word), j] = 1.0
    embed[:, :n_labels] += np.random.default_rng(0).normal(0, 0.01, (len(vocab), n_labels)).astype(np.float32)
    dense1 = np.eye(dim, dtype=np.float32) * 4.0
    dense1[n_labels, :] = 1e4
    classifier = np.zeros((dim, n_labels), np.float32)
    classifier[:n_labels] = np.eye(n_labels) * 8.0
    initializers = [
        numpy_helper.from_array(embed, "embed.weight"), numpy_helper.from_array(dense1, "dense1.weight"),
        numpy_helper.from_array(np.eye(dim, dtype=np.float32), "dense2.weight"),
        numpy_helper.from_array(classifier, "classifier.weight"),
        numpy_helper.from_array(np.full(n_labels, -1.0, np.float32), "classifier.bias"),
        numpy_helper.from_array(np.array([1], np.int64), "axis_sequence"),
        numpy_helper.from_array(np.array([-1], np.int64), "axis_last"),
    ]
    nodes = [
        oh.make_node("Gather", ["embed.weight", "input_ids"], ["embedded"], name="embed"),
        oh.make_node("Cast", ["attention_mask"], ["mask_float"], to=TensorProto.FLOAT, name="mask_cast"),
        oh.make_node("Unsqueeze", ["mask_float", "axis_last"], ["mask"], name="mask_unsqueeze"),
        oh.make_node("Mul", ["embedded", "mask"], ["masked"], name="mask_mul"),
        oh.make_node("ReduceSum", ["masked", "axis_sequence"], ["summed"], keepdims=0, name="pool_sum"),
        oh.make_node("ReduceSum", ["mask", "axis_sequence"], ["count"], keepdims=0, name="pool_count"),
        oh.make_node("Div", ["summed", "count"], ["pooled"], name="pool_mean"),
        oh.make_node("MatMul", ["pooled", "dense1.weight"], ["hidden1"], name=FRAGILE_NODE),
        oh.make_node("Relu", ["hidden1"], ["act1"], name="relu1"),
        oh.make_node("MatMul", ["act1", "dense2.weight"], ["hidden2"], name="dense2"),
        oh.make_node("Relu", ["hidden2"], ["act2"], name="relu2"),
        oh.make_node("MatMul", ["act2", "classifier.weight"], ["scores"], name="classifier"),
        oh.make_node("Add", ["scores", "classifier.bias"], ["logits"], name="classifier_bias"),
    ]
    graph = oh.make_graph(
        nodes, "fragile",
        [oh.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])
         for name in ("input_ids", "attention_mask")],
        [oh.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", n_labels])], initializers)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    directory = Path(directory)
    with atomic_artifact_dir(directory) as tmp:
        onnx.save(model, str(tmp / "model.onnx"))
        write_tokenizer(tmp / "tokenizer")
        write_info(tmp, ArtifactInfo(kind="onnx", architecture="fragile-bow", labels=list(JIGSAW_LABELS),
                                     hierarchy={"severe_toxic": "toxic"}, thresholds=[0.5] * n_labels,
                                     max_length=max_length))
    return directory
