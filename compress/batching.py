"""Tokenized, length-bucketed batches with dynamic padding.

Texts are tokenized once. Each epoch the indices are shuffled, cut into mega-batches of
``bucket_factor * batch_size``, sorted by length inside each mega-batch and cut into batches,
and the batches are shuffled again: batches hold similar lengths (little padding) while the
order stays random. Each batch is padded only to its own longest sequence.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Encoded:
    """Token ids of N texts (unpadded) plus optional (N, L) targets.

    Attributes:
        input_ids: N lists of token ids, each already truncated to max_length.
        targets: (N, L) float32 labels or soft targets, or None.
        pad_id: id used for padding.
    """

    input_ids: list[list[int]]
    targets: np.ndarray | None
    pad_id: int

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64, count=len(self.input_ids))


def encode(tokenizer, texts: Sequence[str], max_length: int, targets: np.ndarray | None = None) -> Encoded:
    """Tokenize ``texts`` once (truncated, unpadded) with a Hugging Face tokenizer."""
    ids: list[list[int]] = []
    step = 4096
    for start in range(0, len(texts), step):
        chunk = list(texts[start : start + step])
        ids.extend(tokenizer(chunk, truncation=True, max_length=max_length, padding=False)["input_ids"])
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return Encoded(ids, None if targets is None else np.asarray(targets, dtype=np.float32), int(pad_id))


def bucketed_batches(
    lengths: np.ndarray, batch_size: int, shuffle: bool, seed: int = 0, bucket_factor: int = 50
) -> list[np.ndarray]:
    """Index batches of similar lengths.

    Args:
        lengths: (N,) token counts.
        shuffle: random order (training); False gives sorted-by-length batches (inference,
            :func:`micro_batches`).
        seed: seeds the shuffle (vary it per epoch).

    Returns:
        list of index arrays, each of at most ``batch_size``.
    """
    n = len(lengths)
    if not shuffle:
        return micro_batches(lengths, batch_size)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    mega = batch_size * bucket_factor
    batches = []
    for start in range(0, n, mega):
        chunk = order[start : start + mega]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def micro_batches(lengths: np.ndarray, max_batch_size: int, min_fill: float = 0.0,
                  max_tokens: int | None = None) -> list[np.ndarray]:
    """Index batches over texts sorted longest first (inference).

    A batch closes at ``max_batch_size`` texts, or before a text shorter than ``min_fill`` x the
    batch's first (longest) text, so no batch pads a short text far beyond its length, or before
    its padded size (texts x the longest) would pass ``max_tokens``; with ``min_fill`` 0 and no
    ``max_tokens`` the batches are fixed-size cuts of the sorted order.

    Args:
        lengths: (N,) token counts.
        max_tokens: most padded tokens per batch (a text longer than this gets a batch alone).

    Returns:
        index arrays covering 0..N-1 once each.
    """
    order = np.argsort(-lengths, kind="stable")
    if min_fill <= 0 and not max_tokens:  # fixed cuts, vectorised: teacher logits run over whole transfer sets
        return [order[i : i + max_batch_size] for i in range(0, len(order), max_batch_size)]
    batches: list[np.ndarray] = []
    start = 0
    for end in range(1, len(order) + 1):
        longest = lengths[order[start]]
        full = end - start >= max_batch_size or (max_tokens is not None and (end - start + 1) * longest > max_tokens)
        if end == len(order) or full or lengths[order[end]] < min_fill * longest:
            batches.append(order[start:end])
            start = end
    return batches


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token id lists to their longest (or ``width``).

    Returns:
        input_ids (B, T) int64, attention_mask (B, T) int64.
    """
    width = width or max(1, max((len(s) for s in seqs), default=1))
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    for row, seq in enumerate(seqs):
        n = min(len(seq), width)
        ids[row, :n] = seq[:n]
        mask[row, :n] = 1
    return ids, mask


def collate(encoded: Encoded, indices: np.ndarray) -> dict[str, torch.Tensor]:
    """Pad one batch to its own longest sequence.

    Returns:
        ``input_ids`` (B, T) long, ``attention_mask`` (B, T) long, ``labels`` (B, L) float
        (when targets exist), ``index`` (B,) long (row numbers into ``encoded``).
    """
    ids, mask = pad_batch([encoded.input_ids[i] for i in indices], encoded.pad_id)
    batch = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
             "index": torch.as_tensor(np.asarray(indices), dtype=torch.long)}
    if encoded.targets is not None:
        batch["labels"] = torch.from_numpy(encoded.targets[np.asarray(indices)])
    return batch


def iterate(
    encoded: Encoded, batch_size: int, shuffle: bool, seed: int = 0
) -> Iterator[dict[str, torch.Tensor]]:
    """Collated batches over ``encoded`` (see :func:`bucketed_batches`)."""
    for idx in bucketed_batches(encoded.lengths, batch_size, shuffle, seed):
        yield collate(encoded, idx)


def num_batches(n: int, batch_size: int) -> int:
    return (n + batch_size - 1) // batch_size
