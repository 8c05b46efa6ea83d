"""Pure-Python BERT tokenization (BasicTokenizer + greedy longest-match WordPiece) from ``vocab.txt``.

The tokenizer model's last resort: the stock ``tritonserver:*-py3`` image has neither
``transformers`` nor ``tokenizers``. It reproduces Hugging Face's BERT tokenizers for BERT-family
vocabularies (lower-casing, accent stripping, CJK splitting, punctuation splitting, ``[UNK]`` for
words over 100 characters or with no WordPiece split). Standard library only.
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Iterable

MAX_WORD_CHARS = 100  # longer words become one [UNK], as in Hugging Face's WordpieceTokenizer


def _is_whitespace(ch: str) -> bool:
    if ch in (" ", "\t", "\n", "\r"):
        return True
    return unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    if ch in ("\t", "\n", "\r"):
        return False
    return unicodedata.category(ch) in ("Cc", "Cf")


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    # ASCII symbols such as $ ^ ` count as punctuation for BERT, though Unicode calls them symbols
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


class WordPiece:
    """BERT tokenization of a tokenizer directory (``vocab.txt``, optional ``tokenizer_config.json``).

    Args:
        directory: holds ``vocab.txt`` (one token per line, id = line number) and, optionally,
            ``tokenizer_config.json`` (``do_lower_case``, ``strip_accents``,
            ``tokenize_chinese_chars`` and the special tokens).
    """

    def __init__(self, directory: str) -> None:
        with open(os.path.join(directory, "vocab.txt"), encoding="utf-8") as f:
            self.vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
        config = {}
        path = os.path.join(directory, "tokenizer_config.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                config = json.load(f)
        self.lower = bool(config.get("do_lower_case", True))
        strip = config.get("strip_accents")
        self.strip_accents = self.lower if strip is None else bool(strip)
        self.chinese = bool(config.get("tokenize_chinese_chars", True))
        self.unk = config.get("unk_token", "[UNK]")
        self.cls_id = self.vocab[config.get("cls_token", "[CLS]")]
        self.sep_id = self.vocab[config.get("sep_token", "[SEP]")]
        self.pad_id = self.vocab.get(config.get("pad_token", "[PAD]"), 0)
        self.unk_id = self.vocab[self.unk]
        self.max_chars = MAX_WORD_CHARS

    def _normalize(self, text: str) -> str:
        """Drop control characters, map whitespace to spaces, space out CJK, strip accents, lower-case."""
        out = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or _is_control(ch):
                continue
            if _is_whitespace(ch):
                out.append(" ")
            elif self.chinese and _is_cjk(cp):
                out.extend((" ", ch, " "))
            else:
                out.append(ch)
        text = "".join(out)
        if self.strip_accents:
            text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
        if self.lower:
            text = text.lower()
        return text

    def _words(self, text: str) -> list[str]:
        """Split a normalized text on whitespace and around every punctuation character."""
        words, current = [], []
        for ch in text:
            if ch == " " or _is_whitespace(ch):
                if current:
                    words.append("".join(current))
                    current = []
            elif _is_punctuation(ch):
                if current:
                    words.append("".join(current))
                    current = []
                words.append(ch)
            else:
                current.append(ch)
        if current:
            words.append("".join(current))
        return words

    def _wordpiece(self, word: str) -> list[int]:
        """Greedy longest-match-first pieces of one word; the whole word is [UNK] if any part has no piece."""
        if len(word) > self.max_chars:
            return [self.unk_id]
        ids, start = [], 0
        while start < len(word):
            end, found = len(word), None
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    found = self.vocab[piece]
                    break
                end -= 1
            if found is None:
                return [self.unk_id]
            ids.append(found)
            start = end
        return ids

    def __call__(self, texts: Iterable[str], max_length: int) -> list[list[int]]:
        """Token ids of each text: ``[CLS] pieces [SEP]``, truncated to ``max_length`` ids, unpadded."""
        rows = []
        for text in texts:
            ids = []
            for word in self._words(self._normalize(text)):
                ids.extend(self._wordpiece(word))
            rows.append([self.cls_id, *ids[: max(0, max_length - 2)], self.sep_id])
        return rows
