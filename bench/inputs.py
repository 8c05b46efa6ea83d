"""What benchmarks feed the models: comments read from a file, built-in samples, and synthetic texts of a set length.

Fixed-length texts tokenize to exactly ``T`` tokens, special tokens included: one filler word that
is a single token in the artifact's tokenizer (the first of :data:`FILLER_WORDS` that is),
repeated ``T - (special tokens)`` times, checked by tokenizing it. Artifacts without a tokenizer
(baselines) get ``T`` whitespace-separated words.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from compress.errors import ArtifactError, ConfigError, DataError

FILLER_WORDS = ("the", "a", "and", "is", "of", "to", "x")
DEFAULT_TEXTS = (
    "thanks for the quick answer, that fixed it",
    "you are a complete idiot and everyone knows it",
    "I disagree with this edit, please discuss it on the talk page first",
    "shut up, nobody asked for your stupid opinion",
    "what a lovely photo of the lake at sunset",
    "people like you should not be allowed to post here",
)


def read_texts(path: str | os.PathLike[str], format: str | None = None) -> list[str]:
    """Comment texts from a file: ``.txt`` = one text per non-empty line, else any ``compress.data`` file."""
    p = Path(path)
    if p.suffix.lower() == ".txt":
        if not p.is_file():
            raise DataError(f"texts file not found: {p}; check the path")
        texts = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        from compress.data import load_dataset

        texts = load_dataset(p, format=format).texts
    if not texts:
        raise DataError(f"{p} holds no texts; pass a file with at least one comment")
    return texts


def texts_from(path: str | None, format: str | None = None, limit: int = 2000, seed: int = 0) -> tuple[str, ...]:
    """Up to ``limit`` comments (seeded sample) from a data file, or the built-in samples."""
    if not path:
        return DEFAULT_TEXTS
    texts = read_texts(path, format)
    if len(texts) > limit:
        idx = np.random.default_rng(seed).choice(len(texts), limit, replace=False)
        texts = [texts[i] for i in sorted(idx.tolist())]
    return tuple(texts)


def load_tokenizer(artifact: str | os.PathLike[str]) -> Any:
    """The artifact's Hugging Face tokenizer (``tokenizer/``), or None if it has none (baselines)."""
    directory = Path(artifact, "tokenizer")
    if not directory.is_dir():
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(directory))
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds
        raise ArtifactError(f"cannot load the tokenizer in {directory} ({type(exc).__name__}); "
                            f"the artifact is damaged, re-create it") from None


def fixed_length_text(length: int, tokenizer: Any = None) -> str:
    """A text that tokenizes to exactly ``length`` tokens (special tokens included).

    With ``tokenizer=None`` the text is ``length`` whitespace-separated words.

    Raises:
        ConfigError: the length is below the tokenizer's special tokens + 1, or no filler word works.
    """
    if length < 1:
        raise ConfigError(f"seq_lengths: must be >= 1, got {length}")
    if tokenizer is None:
        return " ".join(["the"] * length)
    for word in FILLER_WORDS:
        if len(tokenizer(f"{word} {word} {word}", add_special_tokens=False)["input_ids"]) != 3:
            continue  # not one token per repetition in this vocabulary
        special = len(tokenizer(word)["input_ids"]) - 1
        if length <= special:
            raise ConfigError(f"seq_lengths: {length} leaves no room for text after {special} special tokens; "
                              f"use at least {special + 1}")
        text = " ".join([word] * (length - special))
        if len(tokenizer(text)["input_ids"]) == length:
            return text
    raise ConfigError(f"seq_lengths: cannot build a {length}-token text with this tokenizer (none of "
                      f"{', '.join(FILLER_WORDS)} is one token); use --real-lengths DATAFILE")


def real_batches(texts: Sequence[str], batch_size: int, count: int, seed: int = 0) -> list[list[str]]:
    """``count`` batches of ``batch_size`` texts drawn with a seeded RNG (with replacement across batches)."""
    rng = np.random.default_rng(seed)
    return [[texts[i] for i in rng.choice(len(texts), size=batch_size, replace=len(texts) < batch_size)]
            for _ in range(count)]


def mean_length(texts: Sequence[str], tokenizer: Any = None) -> float:
    """Mean length in tokens (special tokens included, no truncation) or whitespace words."""
    if tokenizer is None:
        return float(np.mean([len(t.split()) for t in texts]))
    ids = tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
    return float(np.mean([len(x) for x in ids]))
