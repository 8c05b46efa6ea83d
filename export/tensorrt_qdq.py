"""The explicit-quantization (Q/DQ) ONNX model TensorRT builds int8 engines from, and its accuracy guard on CPU.

TensorRT 10 deprecates implicit int8 (a calibrator measuring ranges while the engine is built) and
TensorRT 11 removes it: an int8 engine is built from a model whose ``QuantizeLinear`` /
``DequantizeLinear`` pairs say where int8 runs and at which scale. TensorRT takes signed int8 with zero
point 0 only, so the ``int8-static`` artifacts of ``compress quantize`` (asymmetric uint8
activations, ONNX Runtime's CPU recipe) do not fit; this module writes the TensorRT form from the fp32 ONNX.

Recipe (:func:`qdq_for_tensorrt`), all on CPU, before any GPU work:

1. calibration texts: the part of ``--data`` the guard does not evaluate (the split of
   :func:`export.quantize.load_guard_data`, as ``compress quantize`` uses), run one text at a time, unpadded;
2. ``quantize_static`` with TensorRT's options (:func:`export.quantize.int8_static_onnx` ``tensorrt=True``):
   int8 activations (symmetric, per tensor, min/max ranges) and weights (symmetric, per output channel) at the
   inputs of the weight-carrying MatMul / Gemm / Conv nodes. Everything else stays float: LayerNorm, Softmax,
   GELU, the attention products of two activations (a few percent of a BERT's work at 128 tokens; on the
   tiny test BERT they were most of int8's AUC loss), the classifier's output, and a conditional head's
   marginalisation nodes;
3. the guard: the fp32 and the Q/DQ model run by ONNX Runtime's CPU provider on the held-out rows; past
   ``max_auc_drop`` in macro ROC-AUC, one UserError line and nothing is built.

The Q/DQ model is kept in the tensorrt artifact as :data:`QDQ_FILE`, for inspection (Netron) or for
ONNX Runtime's TensorRT execution provider.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compress.errors import UserError
from export.quantize import (
    WEIGHT_OPS,
    AucGuard,
    GuardData,
    TextCalibrationReader,
    calibration_ids,
    int8_static_onnx,
    marginal_nodes,
    onnx_probs,
    weight_nodes,
)

QDQ_FILE = "model.qdq.onnx"
CALIBRATION_METHOD = "minmax"


@dataclass(frozen=True)
class QdqModel:
    """A Q/DQ model that passed the CPU guard.

    Attributes:
        path: the Q/DQ ONNX file.
        guard: the guard's rows and fp32 baseline, for judging the engine built from it on the same rows.
        probs: (N, L) probabilities of the Q/DQ model (ONNX Runtime CPU) on the guard's rows.
        record: how it was quantized (``extra.quantization`` of the tensorrt artifact).
        verdict: the CPU guard's numbers (``macro_roc_auc``, ``drop``, ``passed``).
    """

    path: Path
    guard: AucGuard
    probs: np.ndarray
    record: dict[str, Any]
    verdict: dict[str, Any]


def qdq_for_tensorrt(onnx_path: Path, tokenizer: Any, data: GuardData, labels: list[str], max_length: int,
                     calibration_samples: int, max_auc_drop: float, seed: int, workdir: Path) -> QdqModel:
    """Write ``workdir/model.qdq.onnx`` from the fp32 ``onnx_path`` and guard it on ``data``'s held-out rows.

    Args:
        tokenizer: the artifact's tokenizer; texts are truncated to ``max_length`` tokens (the engine's profile).
        data: guard rows and calibration texts (:func:`export.quantize.load_guard_data`).
        calibration_samples: texts sampled (seeded) from ``data.calibration_texts``.

    Raises:
        UserError: no node to quantize, or the macro ROC-AUC drop exceeds ``max_auc_drop``.
        DataError: fewer usable calibration texts than ``calibration_samples``.
    """
    from compress.batching import encode

    nodes = weight_nodes(onnx_path, WEIGHT_OPS)
    if not nodes:
        raise UserError(f"{onnx_path} has no MatMul/Gemm/Conv node with weights, nothing int8 could run; "
                        "build without --int8")
    ids = calibration_ids(tokenizer, data.calibration_texts, calibration_samples, max_length, seed, data.source)
    path = workdir / QDQ_FILE
    int8_static_onnx(onnx_path, path, TextCalibrationReader(ids), CALIBRATION_METHOD, per_channel=True,
                     reduce_range=False, op_types=WEIGHT_OPS, nodes_to_quantize=nodes, tensorrt=True)

    encoded = encode(tokenizer, data.texts, max_length)
    guard = AucGuard.measure(data, encoded, onnx_probs(onnx_path, encoded, cpu=True), labels, max_auc_drop)
    probs = onnx_probs(path, encoded, cpu=True)
    verdict = guard.verdict("int8 Q/DQ on ONNX Runtime CPU", probs)
    if not verdict["passed"]:
        raise UserError(f"int8 loses too much accuracy: validation macro ROC-AUC {guard.baseline:.4f} fp32, "
                        f"{verdict['macro_roc_auc']:.4f} int8 Q/DQ on ONNX Runtime CPU (drop {verdict['drop']:.4f}, "
                        f"limit {max_auc_drop:g}); no engine was built; raise --max-auc-drop or build without --int8")
    record = {"format": "QDQ (TensorRT explicit quantization)", "file": QDQ_FILE,
              "activations": "int8, symmetric (zero point 0), per tensor",
              "weights": "int8, symmetric (zero point 0), per output channel",
              "op_types": list(WEIGHT_OPS), "nodes_quantized": len(nodes),
              "calibration_method": CALIBRATION_METHOD, "calibration_samples": len(ids)}
    float_marginal = marginal_nodes(onnx_path)  # a conditional head's hierarchy: no weight op, so never int8
    if float_marginal:
        record["float_marginal_nodes"] = len(float_marginal)
    return QdqModel(path, guard, probs, record, verdict)
