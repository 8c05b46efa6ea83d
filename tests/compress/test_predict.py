"""The predict core: length-sorted micro-batches padded to their own longest, rows back in input order,
one sigmoid; predict_logits on top of it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from compress.batching import Encoded
from compress.predict import batched_logits, predict_logits, sigmoid, torch_forward

LENGTHS = [5, 40, 38, 12, 19, 40, 3, 21, 22, 39, 1, 7]


def _encoded(lengths=LENGTHS, pad_id=0) -> Encoded:
    """Row i holds ``lengths[i]`` copies of token id i + 1 (so a logit can say which row it came from)."""
    return Encoded([[i + 1] * n for i, n in enumerate(lengths)], None, pad_id)


class Recorder:
    """A forward that logs each call's arrays and returns (row id, length) as its two logits."""

    def __init__(self) -> None:
        self.calls: list[tuple[np.ndarray, np.ndarray]] = []

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        self.calls.append((input_ids.copy(), attention_mask.copy()))
        return np.stack([input_ids[:, 0], attention_mask.sum(1)], axis=1).astype(np.float32)  # (B, 2)


class MeanPool(nn.Module):
    """Tiny classifier that ignores padding: embedding -> masked mean -> linear; returns (B, L) logits."""

    def __init__(self, vocab: int = 50, dim: int = 16, labels: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.out = nn.Linear(dim, labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).float()  # (B, T, 1)
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp_min(1.0)  # (B, dim)
        return self.out(pooled)


class DropoutPool(MeanPool):
    """MeanPool with dropout on the logits: two calls agree only in eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.5)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.drop(super().forward(input_ids, attention_mask))


@pytest.mark.parametrize("max_batch_size, min_fill", [(3, 0.5), (4, 0.0), (100, 0.5), (1, 0.0)])
def test_rows_come_back_in_input_order_from_per_batch_padded_micro_batches(max_batch_size, min_fill):
    encoded, forward = _encoded(pad_id=7), Recorder()
    logits = batched_logits(forward, encoded, max_batch_size, min_fill)
    assert logits.dtype == np.float32 and logits.shape == (len(LENGTHS), 2)
    assert logits[:, 0].tolist() == [i + 1 for i in range(len(LENGTHS))]  # each row is its own text's
    assert logits[:, 1].tolist() == LENGTHS
    assert sum(len(ids) for ids, _ in forward.calls) == len(LENGTHS)  # every text runs once
    for ids, mask in forward.calls:
        assert ids.dtype == mask.dtype == np.int64 and ids.shape == mask.shape
        assert len(ids) <= max_batch_size
        lengths = mask.sum(1)
        assert ids.shape[1] == lengths.max()  # padded to this batch's own longest, not the global one
        assert lengths.min() >= min_fill * lengths.max()
        assert (ids[mask == 0] == 7).all() and list(lengths) == sorted(lengths, reverse=True)
    if min_fill == 0.0:  # fixed batches: all full but the last
        assert [len(ids) for ids, _ in forward.calls][:-1] == [max_batch_size] * (len(forward.calls) - 1)
    else:
        assert len(forward.calls) > -(-len(LENGTHS) // max_batch_size)  # short texts start their own batch


def test_probabilities_equal_sigmoid_of_one_full_batch_forward():
    torch.manual_seed(0)
    model = MeanPool().eval()
    rng = np.random.default_rng(0)
    rows = [rng.integers(1, 50, size=n).tolist() for n in LENGTHS]
    encoded = Encoded(rows, None, 0)
    width = max(LENGTHS)
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    with torch.no_grad():
        expected = torch.sigmoid(model(ids, mask)).numpy()  # (N, L), one batch padded to the global longest

    probs = sigmoid(batched_logits(torch_forward(model), encoded, max_batch_size=3, min_fill=0.5))
    assert probs.dtype == np.float32 and probs.shape == expected.shape
    np.testing.assert_allclose(probs, expected, atol=1e-6, rtol=0)
    np.testing.assert_allclose(sigmoid(predict_logits(model, encoded, batch_size=4)), expected, atol=1e-6, rtol=0)


def test_predict_logits_runs_in_eval_mode_and_restores_training():
    torch.manual_seed(0)
    model = DropoutPool().train()
    encoded = _encoded()
    first = predict_logits(model, encoded, batch_size=5)
    assert model.training
    np.testing.assert_array_equal(predict_logits(model, encoded, batch_size=5), first)  # no dropout noise
    assert predict_logits(model, Encoded([], None, 0)).shape == (0, 0)


def test_sigmoid_is_stable_and_float32():
    x = np.array([[-1000.0, 0.0, 1000.0]], dtype=np.float64)
    with np.errstate(all="raise"):
        p = sigmoid(x)
    assert p.dtype == np.float32 and p.tolist() == [[0.0, 0.5, 1.0]]
    half = np.array([2.0], dtype=np.float16)
    assert sigmoid(half)[0] == pytest.approx(1 / (1 + np.exp(-2.0)), abs=1e-7)
