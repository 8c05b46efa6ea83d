"""ONNX Runtime sessions: one set of options for export validation, quantization and the runtime."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from compress.batching import Encoded
from compress.errors import UserError
from compress.predict import Forward, batched_logits
from export.cpu import physical_cores


def ort_session(path: str | os.PathLike[str], providers: Sequence[Any] = ("CPUExecutionProvider",),
                threads: int | None = None, spin: bool = False, profile_prefix: str | None = None):
    """An ONNX Runtime session: all graph optimizations, intra-op threads = physical cores, one inter-op thread.

    ``spin``: ONNX Runtime's worker threads busy-wait between operators by default. Here they sleep:
    on a 2-core Sapphire Rapids shared with other jobs, spinning made MiniLM int8 1.1-3.0x slower at
    batch 1 and 1.4-2.0x slower in bulk (four ``bench quant-speed --levers`` runs: spinning threads
    take the cores the working ones need); on an idle machine a sleeping pool costs a wake-up per
    parallel operator. ``profile_prefix``: write ONNX Runtime's profile (``session.end_profiling()``)
    under this prefix (:mod:`bench.op_profile`).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or physical_cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), sess_options=options, providers=list(providers))


def ort_providers(backend: str) -> list[Any]:
    """Execution providers for an ``ort*`` backend; UserError when this ONNX Runtime lacks them."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if backend == "ort":
        return ["CPUExecutionProvider"]
    needed = "CUDAExecutionProvider" if backend == "ort-cuda" else "TensorrtExecutionProvider"
    if needed not in available:
        raise UserError(f"backend {backend} needs ONNX Runtime's {needed}, which this install lacks "
                        f"(available: {', '.join(available)}); on a CUDA machine `pip install 'modcompress[gpu]'`, "
                        "or use --backend ort")
    if backend == "ort-cuda":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return [("TensorrtExecutionProvider", {"trt_fp16_enable": True}), "CUDAExecutionProvider", "CPUExecutionProvider"]


def session_forward(session: Any) -> Forward:
    """An ONNX session as a :data:`compress.predict.Forward`: input_ids, attention_mask (B, T) -> ``logits`` (B, L)."""

    def forward(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return session.run(["logits"], {"input_ids": input_ids, "attention_mask": attention_mask})[0]

    return forward


def onnx_logits(session: Any, encoded: Encoded, batch_size: int = 64) -> np.ndarray:
    """(N, L) float32 logits of an ONNX session over :class:`compress.batching.Encoded` rows.

    Rows are run in length-sorted batches padded to their own longest sequence; the result is
    in the original row order.
    """
    return batched_logits(session_forward(session), encoded, batch_size)
