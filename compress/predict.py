"""Batched inference over encoded texts: the one predict core of training, distillation and the runtime.

A *forward* is any callable ``(input_ids (B, T) int64, attention_mask (B, T) int64) -> logits (B, L)``
on numpy arrays: a PyTorch model through :func:`torch_forward`, an ONNX Runtime session, a
TensorRT engine. :func:`batched_logits` runs one over texts tokenized once (unpadded), in
length-sorted micro-batches each padded only to its own longest text, and puts the rows back in
input order; :func:`sigmoid` turns logits into probabilities.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from compress.batching import Encoded, micro_batches, pad_batch
from compress.precision import autocast

Forward = Callable[[np.ndarray, np.ndarray], np.ndarray]


def logits_of(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, L) logits from a Hugging Face model (``.logits``) or an own student (a tensor)."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return out.logits if hasattr(out, "logits") else out


def torch_forward(model: torch.nn.Module, mixed_precision: str = "no", device: torch.device | str = "cpu") -> Forward:
    """A PyTorch model as a forward on numpy arrays (no grad; ``bf16`` / ``fp16`` under autocast).

    The model runs as it is (put it in eval mode first); the logits come back as (B, L) float32
    on the CPU.
    """

    def forward(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        batch = {"input_ids": torch.from_numpy(input_ids).to(device),
                 "attention_mask": torch.from_numpy(attention_mask).to(device)}
        with torch.inference_mode(), autocast(mixed_precision, device):
            return logits_of(model, batch).float().cpu().numpy()

    return forward


def batched_logits(forward: Forward, encoded: Encoded, max_batch_size: int, min_fill: float = 0.0,
                   progress: bool = False, max_tokens: int | None = None) -> np.ndarray:
    """Run ``forward`` over every row of ``encoded`` in padded micro-batches (:func:`compress.batching.micro_batches`).

    Args:
        forward: ``(input_ids (B, T), attention_mask (B, T)) -> (B, L)`` logits.
        encoded: N texts' token ids (truncated, unpadded) and the padding id.
        max_batch_size: most rows per call of ``forward``.
        min_fill: a text shorter than this fraction of its micro-batch's longest starts a new one
            (0: fixed batches of ``max_batch_size``).
        progress: show a progress bar over the micro-batches.
        max_tokens: most padded tokens (rows x longest) per micro-batch; None for no limit.

    Returns:
        (N, L) float32 logits in the original row order; (0, 0) when N is 0.
    """
    from tqdm.auto import tqdm

    out: np.ndarray | None = None
    batches = micro_batches(encoded.lengths, max_batch_size, min_fill, max_tokens)
    for idx in tqdm(batches, desc="predict", disable=not progress, leave=False):
        logits = np.asarray(forward(*pad_batch([encoded.input_ids[i] for i in idx], encoded.pad_id)))
        if out is None:
            out = np.zeros((len(encoded), logits.shape[1]), dtype=np.float32)
        out[idx] = logits
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def predict_logits(
    model: torch.nn.Module,
    encoded: Encoded,
    batch_size: int = 128,
    mixed_precision: str = "no",
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> np.ndarray:
    """Logits of a PyTorch model (run in eval mode, then restored) for every row of ``encoded``, in row order.

    Returns:
        (N, L) float32 logits.
    """
    was_training = model.training
    model.eval()
    try:
        return batched_logits(torch_forward(model, mixed_precision, device), encoded, batch_size, progress=progress)
    finally:
        model.train(was_training)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function on numpy arrays: logits -> (same shape) float32 probabilities."""
    x = np.asarray(x, dtype=np.float32)
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32)
