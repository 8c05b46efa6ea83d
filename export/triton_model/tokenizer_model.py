"""Triton Python-backend tokenizer written by `modcompress-export triton`.

TEXT (BYTES, [B, 1]) -> input_ids, attention_mask (INT64, [B, T]). The tokenizer is loaded from
./tokenizer beside this file with, in order: transformers, tokenizers (tokenizer.json), or the
pure-Python WordPiece in ./wordpiece.py (BERT-family vocab.txt), so the stock Triton image (numpy
only) runs it. Parameter `tokenizer_impl` (auto | transformers | tokenizers | wordpiece) forces one.
T = the request's longest text, rounded up to `pad_to_multiple_of`, at most `max_length`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

# Triton imports this file as the module `<version>.model`, so the relative import finds
# <version>/wordpiece.py; a plain `import wordpiece` could pick up another module of that name.
from .wordpiece import WordPiece

# texts, max_length -> one unpadded list of token ids per text ([CLS] ... [SEP])
Encode = Callable[[Sequence[str], int], list[list[int]]]


def load_tokenizer(directory: str, impl: str = "auto") -> tuple[Encode, int, str]:
    """(encode, pad id, name of the implementation) for the tokenizer files in ``directory``.

    Args:
        directory: a saved Hugging Face tokenizer (``tokenizer.json`` and/or ``vocab.txt``).
        impl: ``auto`` tries transformers, then tokenizers, then the pure-Python WordPiece;
            ``transformers``, ``tokenizers`` or ``wordpiece`` tries only that one.

    Raises:
        RuntimeError: no implementation could load the files (the message says what failed).
    """
    errors = []
    if impl in ("auto", "transformers"):
        try:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(directory)
            pad = tok.pad_token_id if tok.pad_token_id is not None else 0

            def encode(texts: Sequence[str], max_length: int) -> list[list[int]]:
                return tok(list(texts), truncation=True, max_length=max_length, padding=False)["input_ids"]

            return encode, int(pad), "transformers"
        except Exception as exc:  # noqa: BLE001 - missing package or unreadable files
            errors.append(f"transformers: {exc}")
    if impl in ("auto", "tokenizers") and os.path.exists(os.path.join(directory, "tokenizer.json")):
        try:
            from tokenizers import Tokenizer

            fast = Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
            fast.no_padding()
            pad = 0
            path = os.path.join(directory, "special_tokens_map.json")
            if os.path.exists(path):
                with open(path, encoding="utf-8") as f:
                    pad_token = json.load(f).get("pad_token")
                if isinstance(pad_token, dict):
                    pad_token = pad_token.get("content")
                if pad_token is not None and fast.token_to_id(pad_token) is not None:
                    pad = fast.token_to_id(pad_token)

            def encode_fast(texts: Sequence[str], max_length: int) -> list[list[int]]:
                fast.enable_truncation(max_length)
                return [e.ids for e in fast.encode_batch(list(texts))]

            return encode_fast, int(pad), "tokenizers"
        except Exception as exc:  # noqa: BLE001
            errors.append(f"tokenizers: {exc}")
    if impl in ("auto", "wordpiece") and os.path.exists(os.path.join(directory, "vocab.txt")):
        wp = WordPiece(directory)
        return wp, wp.pad_id, "wordpiece"
    raise RuntimeError("cannot load the tokenizer in " + directory + " (" + "; ".join(errors) + "); install "
                       "`tokenizers` in the Triton Python environment (or a conda-pack EXECUTION_ENV_PATH)")


class TritonPythonModel:
    """Texts in, padded token ids and attention mask out; one bad request never fails the others."""

    def initialize(self, args: dict[str, str]) -> None:
        """Read the parameters and load the tokenizer (Triton calls this once per instance)."""
        import triton_python_backend_utils as pb_utils  # only inside Triton's stub

        self._pb = pb_utils
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        self.max_length = int(params.get("max_length", "128"))
        self.multiple = max(1, int(params.get("pad_to_multiple_of", "1")))
        self.dtype = np.int32 if params.get("ids_dtype", "int64") == "int32" else np.int64
        # beside this file (1/tokenizer); args["model_repository"] meant other paths in old Triton releases
        directory = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tokenizer")
        if not os.path.isdir(directory):
            directory = os.path.join(args["model_repository"], args["model_version"], "tokenizer")
        self.encode, self.pad_id, self.impl = load_tokenizer(directory, params.get("tokenizer_impl", "auto"))

    def _batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(ids, mask), each (B, T): T = the longest row rounded up to the multiple, at most max_length."""
        rows = self.encode(texts, self.max_length)
        longest = max([len(r) for r in rows] + [1])
        width = min(self.max_length, -(-longest // self.multiple) * self.multiple)
        ids = np.full((len(rows), width), self.pad_id, dtype=self.dtype)
        mask = np.zeros((len(rows), width), dtype=self.dtype)
        for i, row in enumerate(rows):
            row = row[:width]
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return ids, mask

    def execute(self, requests: list[Any]) -> list[Any]:
        """One response per request: its ``input_ids`` and ``attention_mask``, or a one-line error."""
        pb = self._pb
        responses = []
        for request in requests:
            try:
                raw = pb.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)  # (B,)
                texts = [t.decode("utf-8", "replace") if isinstance(t, bytes) else str(t) for t in raw]
                ids, mask = self._batch(texts)
                responses.append(pb.InferenceResponse(output_tensors=[
                    pb.Tensor("input_ids", ids), pb.Tensor("attention_mask", mask)]))
            except Exception as exc:  # noqa: BLE001 - one bad request must not fail the others
                responses.append(pb.InferenceResponse(
                    output_tensors=[], error=pb.TritonError("tokenizer: " + str(exc))))
        return responses

    def finalize(self) -> None:
        """Drop the tokenizer (Triton calls this when the model unloads)."""
        self.encode = None
