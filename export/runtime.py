"""Load any artifact and run it: one interface for serve and bench.

``load(artifact_dir, backend=...) -> Predictor``; ``Predictor.predict(texts) -> (N, L)`` float32
probabilities. Backends: PyTorch (fp32/bf16), ONNX Runtime (CPU, CUDA and TensorRT execution
providers when present), TensorRT engine.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Predictor(Protocol):
    """What serve and bench need from a model.

    Attributes:
        name: short model name (used as the Triton model name).
        labels: label names, one per output column (L).
        thresholds: (L,) float32 per-label decision thresholds.
        max_batch_size: the largest batch ``predict`` accepts in one call.
    """

    name: str
    labels: list[str]
    thresholds: np.ndarray
    max_batch_size: int

    def predict(self, texts: list[str]) -> np.ndarray:
        """Return (N, L) float32 probabilities for N texts."""
        ...
