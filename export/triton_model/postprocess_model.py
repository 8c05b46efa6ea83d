"""Triton Python-backend post-processing written by `modcompress-export triton`: logits -> probabilities (sigmoid).

TensorRT plans cannot be edited to end in a sigmoid as the served ONNX graphs do, so their ensemble
runs this step after the engine.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class TritonPythonModel:
    """logits (FP32, [B, L]) -> probabilities (FP32, [B, L])."""

    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb_utils  # only inside Triton's stub

        self._pb = pb_utils

    def execute(self, requests: list[Any]) -> list[Any]:
        pb = self._pb
        responses = []
        for request in requests:
            logits = pb.get_input_tensor_by_name(request, "logits").as_numpy().astype(np.float32)  # (B, L)
            # tanh form of the sigmoid: no overflow warning from exp(-x) for very negative logits
            probs = (0.5 * (1.0 + np.tanh(0.5 * logits))).astype(np.float32)
            responses.append(pb.InferenceResponse(output_tensors=[pb.Tensor("probabilities", probs)]))
        return responses
