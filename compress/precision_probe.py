"""The measurements behind ``mixed_precision=auto``: fp32 against bf16 autocast on the model at hand.

* :class:`TrainingProbe`: forward + backward + clipping + fused AdamW step on a deep copy of the
  model (the model, its optimizer and the random state are untouched), on a real batch of the
  training data (:func:`typical_batch`), bf16 put on the forward the way Accelerate puts it.
* :class:`InferenceProbe`: the forward pass under ``inference_mode`` that ``export.runtime`` runs,
  on a (max batch, length) batch; :meth:`InferenceProbe.max_prob_diff` is the accuracy check.
* :func:`interleaved_seconds`: warm-up steps, then timed steps with fp32 and bf16 alternating (so a
  burst of load from other processes hits both), median per precision.

:func:`training_precision` is what the recipes call; :func:`compress.precision.choose_precision`
decides whether anything is measured at all.
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from compress.batching import Encoded, collate
from compress.distributed import computed_on_main, world_size
from compress.loop import epoch_batches, make_optimizer
from compress.precision import INFERENCE, TRAINING, PrecisionChoice, autocast_forward, choose_precision
from compress.predict import sigmoid, torch_forward

PRECISIONS = ("no", "bf16")
WARMUP_STEPS = 2  # per precision; the first bf16 steps create oneDNN primitives
TIMED_STEPS = 3  # per precision
PROBE_LENGTH = 64  # tokens per row of the inference probe (at most the artifact's max_length)


def interleaved_seconds(run: Callable[[str], Any], warmup: int = WARMUP_STEPS, iters: int = TIMED_STEPS,
                        timer: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Median seconds of ``run(precision)`` for ``no`` (fp32) and ``bf16``.

    ``warmup`` untimed rounds of both, then ``iters`` timed rounds whose order alternates
    (fp32 first, then bf16 first, ...).
    """
    for _ in range(warmup):
        for precision in PRECISIONS:
            run(precision)
    seconds: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for i in range(iters):
        for precision in PRECISIONS if i % 2 == 0 else PRECISIONS[::-1]:
            t0 = timer()
            run(precision)
            seconds[precision].append(timer() - t0)
    return {p: float(np.median(s)) for p, s in seconds.items()}


def model_signature(model: torch.nn.Module) -> dict[str, Any]:
    """Class, parameter count and (Hugging Face models) hidden size and layers: what a step's cost depends on."""
    signature: dict[str, Any] = {"model": type(model).__name__,
                                 "parameters": int(sum(p.numel() for p in model.parameters()))}
    config = getattr(model, "config", None)
    for name in ("hidden_size", "num_hidden_layers"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            signature[name] = value
    return signature


# ----------------------------------------------------------------------------------------------
# Training


def typical_batch(train: Encoded, batch_size: int, world: int = 1) -> dict[str, torch.Tensor]:
    """One real batch of this process's share: of an epoch's full batches, the one of median padded length.

    Returns:
        :func:`compress.batching.collate` of it: ``input_ids`` / ``attention_mask`` (B, T), ``labels``
        (B, L) when the rows have targets, ``index`` (B,).
    """
    lengths = train.lengths
    batches = epoch_batches(lengths, batch_size, 0, 0, world)
    widest = max(len(b) for b in batches)
    full = sorted((b for b in batches if len(b) == widest), key=lambda b: int(lengths[b].max()))
    return collate(train, full[len(full) // 2])


@dataclass
class TrainingProbe:
    """One training step of ``model`` on a typical batch of ``train``, fp32 vs bf16 autocast.

    Attributes:
        model: the model about to be trained (copied for the probe, never changed).
        train: the encoded training rows, with targets.
        batch_size: the loop's (global) batch size; ``world`` processes share each batch.
        step_loss: the loop's ``step_loss(model, batch) -> loss``.
        device: where the loop trains.
    """

    model: torch.nn.Module
    train: Encoded
    batch_size: int
    world: int
    step_loss: Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor]
    device: torch.device
    task: str = TRAINING

    @functools.cached_property
    def batch(self) -> dict[str, torch.Tensor]:
        """:func:`typical_batch`: input_ids (B, T); made only when the probe is keyed or measured."""
        return typical_batch(self.train, self.batch_size, self.world)

    def signature(self) -> dict[str, Any]:
        return {**model_signature(self.model), "batch": list(self.batch["input_ids"].shape)}

    def measure(self) -> tuple[float, float]:
        with torch.random.fork_rng(devices=[]):  # dropout draws here must not shift the real run's
            model = copy.deepcopy(self.model).to(self.device).train()
            optimizer = make_optimizer(model, 1e-5, 0.0, self.device)
            forwards = {"no": model.forward, "bf16": autocast_forward(model.forward, "bf16", self.device)}
            batch = {k: v.to(self.device) for k, v in self.batch.items()}

            def step(precision: str) -> None:
                model.forward = forwards[precision]
                loss = self.step_loss(model, batch)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            seconds = interleaved_seconds(step)
        return seconds["no"], seconds["bf16"]


def training_precision(requested: str, model: torch.nn.Module, train: Encoded, batch_size: int,
                       step_loss: Callable, device: torch.device) -> PrecisionChoice:
    """The precision a recipe trains ``model`` in (:func:`compress.precision.choose_precision`).

    Under a launcher the main process decides (measuring on its share of a batch) and every process
    gets its choice, so all train in the same precision.
    """
    probe = TrainingProbe(model, train, batch_size, world_size(), step_loss, device)
    return computed_on_main(lambda: choose_precision(requested, device, probe))


# ----------------------------------------------------------------------------------------------
# Inference


def probe_inputs(vocab_size: int, batch_size: int, length: int, cls_id: int | None = None,
                 sep_id: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask), both (batch_size, length) int64: seeded ids from the upper vocabulary
    (past the special / unused ids at the start of most vocabularies), framed by CLS ... SEP when given."""
    rng = np.random.default_rng(seed)
    low = min(1000, vocab_size // 4)
    ids = rng.integers(low, vocab_size, size=(batch_size, length), dtype=np.int64)
    if cls_id is not None:
        ids[:, 0] = cls_id
    if sep_id is not None:
        ids[:, -1] = sep_id
    return ids, np.ones_like(ids)


@dataclass
class InferenceProbe:
    """One forward pass of ``model`` (eval mode) on a (B, T) batch, fp32 vs bf16 autocast.

    Attributes:
        model: the model as served (not changed).
        input_ids / attention_mask: (B, T) int64 (:func:`probe_inputs`).
    """

    model: torch.nn.Module
    input_ids: np.ndarray
    attention_mask: np.ndarray
    task: str = INFERENCE

    def signature(self) -> dict[str, Any]:
        return {**model_signature(self.model), "batch": list(self.input_ids.shape)}

    def measure(self) -> tuple[float, float]:
        forwards = {p: torch_forward(self.model, p) for p in PRECISIONS}
        seconds = interleaved_seconds(lambda p: forwards[p](self.input_ids, self.attention_mask))
        return seconds["no"], seconds["bf16"]

    def max_prob_diff(self) -> float:
        """Largest |bf16 - fp32| over the (B, L) probabilities of the probe batch."""
        probs = [sigmoid(torch_forward(self.model, p)(self.input_ids, self.attention_mask)) for p in PRECISIONS]
        return float(np.abs(probs[0] - probs[1]).max())
