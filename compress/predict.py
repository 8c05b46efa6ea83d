"""Batched inference over encoded texts, shared by training, distillation and evaluation."""

from __future__ import annotations

import numpy as np
import torch

from compress.batching import Encoded, bucketed_batches, collate
from compress.precision import autocast


def logits_of(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, L) logits from a Hugging Face model (``.logits``) or an own student (a tensor)."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return out.logits if hasattr(out, "logits") else out


@torch.inference_mode()
def predict_logits(
    model: torch.nn.Module,
    encoded: Encoded,
    batch_size: int = 128,
    mixed_precision: str = "no",
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> np.ndarray:
    """Logits for every row of ``encoded``, in the original row order.

    Returns:
        (N, L) float32 logits.
    """
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    out: np.ndarray | None = None
    batches = bucketed_batches(encoded.lengths, batch_size, shuffle=False)
    for idx in tqdm(batches, desc="predict", disable=not progress, leave=False):
        batch = collate(encoded, idx)
        with autocast(mixed_precision, device):
            logits = logits_of(model, {k: v.to(device) for k, v in batch.items() if k != "labels"})
        logits = logits.float().cpu().numpy()
        if out is None:
            out = np.zeros((len(encoded), logits.shape[1]), dtype=np.float32)
        out[idx] = logits
    model.train(was_training)
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function on numpy arrays."""
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32)
