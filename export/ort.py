"""ONNX Runtime sessions: one set of options for export validation, quantization and the runtime.

Models with the tokenizer in the graph (``export onnx --with-tokenizer``) use custom operators of
onnxruntime-extensions (domain ``ai.onnx.contrib``); their sessions register its library
(``custom_ops=True``). Other sessions never load it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from compress.batching import Encoded
from compress.cpu import physical_cores
from compress.errors import UserError
from compress.predict import Forward, batched_logits


def ort_session(path: str | os.PathLike[str] | bytes, providers: Sequence[Any] = ("CPUExecutionProvider",),
                threads: int | None = None, custom_ops: bool = False, spin: bool = False,
                profile_prefix: str | None = None):
    """An ONNX Runtime session: all graph optimizations, intra-op threads = physical cores, one inter-op thread.

    Args:
        path: the ONNX file, or a serialized model.
        custom_ops: register the onnxruntime-extensions operators (string ops, tokenizers) the model uses.
        spin: ONNX Runtime's worker threads busy-wait between operators by default. Here they sleep:
            on a 2-core Sapphire Rapids shared with other jobs, spinning made MiniLM int8 1.1-3.0x slower
            at batch 1 and 1.4-2.0x slower in bulk (four ``bench quant-speed --levers`` runs: spinning
            threads take the cores the working ones need); on an idle machine a sleeping pool costs a
            wake-up per parallel operator.
        profile_prefix: write ONNX Runtime's profile (``session.end_profiling()``) under this prefix
            (:mod:`bench.op_profile`).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if custom_ops:
        options.register_custom_ops_library(extensions_library())
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or physical_cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, sess_options=options, providers=list(providers))


def extensions_library() -> str:
    """Path of the onnxruntime-extensions custom-operator library; UserError when the package is missing."""
    try:
        from onnxruntime_extensions import get_library_path
    except ImportError:
        raise UserError("this model runs onnxruntime-extensions operators (the tokenizer in the graph) and the "
                        "package is not installed; `pip install 'onnxruntime-extensions>=0.15,<0.16'`") from None
    return str(get_library_path())


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
