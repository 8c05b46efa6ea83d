"""Transformer graph fusion before quantization: ONNX Runtime's optimizer on BERT-family encoders.

``fuse_transformer(src, dst, plan) -> Fusion`` runs ``onnxruntime.transformers.optimizer.optimize_model``
(``model_type="bert"``, the heads and hidden size from the Hugging Face config) on an fp32 ONNX graph:
each layer's Q/K/V projections, scores, softmax and context become one ``Attention`` node (with the
1-D mask index it takes for right-padded batches), residual adds + LayerNorm become
``SkipLayerNormalization`` and bias + GELU ``BiasGelu``. The quantizer then turns ``Attention`` into
``QAttention`` (int8 Q/K/V projection) and the remaining MatMuls into ``MatMulInteger`` (dynamic) or
Q/DQ pairs (static).

Only BERT-family encoders (:data:`BERT_FAMILY`) are fused; other model types (TextCNN, BiLSTM, an
unknown HF type) are left as they are, and :func:`fusion_plan` says why. A fusion that raises, fuses
no attention, or changes the logits by more than ``atol`` on ragged random batches is dropped and the
unfused graph is used; :class:`Fusion` records what was applied (``artifact.json`` ``extra.fusion``).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# Hugging Face model types whose encoder layers ONNX Runtime's BERT optimizer fuses (the same graph
# patterns: post-LN self-attention, GELU feed-forward).
BERT_FAMILY = ("bert", "roberta", "xlm-roberta", "camembert", "distilbert", "electra", "albert", "mpnet")
FUSION_ATOL = 1e-3
CHECK_SHAPES = ((1, 7), (3, 19))


@dataclass(frozen=True)
class FusionPlan:
    """Whether to fuse, and the shape facts the optimizer needs.

    Attributes:
        fuse: run the BERT optimizer.
        reason: why (or why not), for artifact.json.
        model_type: the Hugging Face ``model_type`` (None for own architectures).
        num_heads / hidden_size: attention heads and hidden width (0 = let the optimizer detect them).
    """

    fuse: bool
    reason: str
    model_type: str | None = None
    num_heads: int = 0
    hidden_size: int = 0


@dataclass
class Fusion:
    """What the fusion step did: ``applied``, ``reason``, fused operator counts, the largest logit change."""

    applied: bool
    reason: str
    model_type: str | None = None
    fused_operators: dict[str, int] = field(default_factory=dict)
    max_abs_diff: float | None = None

    def record(self) -> dict[str, Any]:
        return asdict(self)


def fusion_plan(architecture: str, hf_config: dict[str, Any] | None) -> FusionPlan:
    """Fuse BERT-family Hugging Face encoders; skip everything else with the reason.

    Args:
        architecture: the artifact's architecture (``hf``, ``distilbert``, ``textcnn``, ...).
        hf_config: the model's ``config.json`` as a dict (None for own architectures).
    """
    if architecture not in ("hf", "distilbert") or hf_config is None:
        return FusionPlan(False, f"{architecture} is not a transformer encoder: no attention to fuse")
    model_type = str(hf_config.get("model_type", ""))
    if model_type not in BERT_FAMILY:
        return FusionPlan(False, f"model type {model_type!r} is not BERT-family ({', '.join(BERT_FAMILY)}): "
                                 "ONNX Runtime's BERT fusions may not match it", model_type)
    heads = int(hf_config.get("num_attention_heads", hf_config.get("n_heads", 0)) or 0)
    hidden = int(hf_config.get("hidden_size", hf_config.get("dim", 0)) or 0)
    return FusionPlan(True, f"BERT-family encoder ({model_type})", model_type, heads, hidden)


def run_fusion(src: Path, dst: Path, plan: FusionPlan) -> dict[str, int]:
    """``optimize_model(model_type="bert")`` on ``src`` -> ``dst``; returns the fused operator counts.

    ``opt_level=0``: only the Python fusions, no ONNX Runtime graph rewrite saved into the file (the
    session applies those at load, for the CPU it runs on).
    """
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    chatty = logging.getLogger("onnxruntime.transformers")  # a line per fusion pass at INFO
    level = chatty.level
    chatty.setLevel(logging.WARNING)
    try:
        optimizer = optimize_model(str(src), model_type="bert", num_heads=plan.num_heads,
                                   hidden_size=plan.hidden_size, optimization_options=FusionOptions("bert"),
                                   opt_level=0)
        counts = {k: int(v) for k, v in optimizer.get_fused_operator_statistics().items() if v}
        optimizer.save_model_to_file(str(dst))
    finally:
        chatty.setLevel(level)
    return counts


def max_logit_change(a: Path, b: Path, vocab_size: int, pad_id: int, seed: int = 0) -> float:
    """Largest |logits(a) - logits(b)| over ragged, right-padded random batches (:data:`CHECK_SHAPES`)."""
    from export.onnx import random_inputs
    from export.ort import ort_session

    left, right = ort_session(a), ort_session(b)
    rng = np.random.default_rng(seed)
    worst = 0.0
    for batch, length in CHECK_SHAPES:
        ids, mask = random_inputs(batch, length, vocab_size, pad_id, rng)
        feeds = {"input_ids": ids, "attention_mask": mask}
        diff = np.abs(left.run(["logits"], feeds)[0].astype(np.float64) - right.run(["logits"], feeds)[0])
        worst = max(worst, float(diff.max()) if diff.size else 0.0)
    return worst if np.isfinite(worst) else float("inf")


def fuse_transformer(src: str | os.PathLike[str], dst: str | os.PathLike[str], plan: FusionPlan,
                     vocab_size: int, pad_id: int, atol: float = FUSION_ATOL) -> Fusion:
    """Write ``dst``: ``src`` fused when ``plan`` says so and the fused graph checks out, else a copy of ``src``.

    Args:
        src / dst: fp32 ONNX files (inputs input_ids, attention_mask (B, T) int64; output logits (B, L)).
        plan: :func:`fusion_plan`.
        vocab_size / pad_id: random token ids for the logit check.
        atol: largest accepted logit change from the fusion.
    """
    src, dst = Path(src), Path(dst)
    if not plan.fuse:
        shutil.copyfile(src, dst)
        return Fusion(False, plan.reason, plan.model_type)
    try:
        counts = run_fusion(src, dst, plan)
    except Exception as exc:  # noqa: BLE001 - any optimizer failure falls back to the unfused graph
        shutil.copyfile(src, dst)
        reason = f"fusion failed ({type(exc).__name__}: {exc}); quantized unfused"
        log.warning("transformer fusion: %s", reason)
        return Fusion(False, reason, plan.model_type)
    if not counts.get("Attention"):
        shutil.copyfile(src, dst)
        reason = f"no attention layer matched ONNX Runtime's BERT patterns (fused: {counts or 'nothing'}); quantized unfused"
        log.warning("transformer fusion: %s", reason)
        return Fusion(False, reason, plan.model_type, counts)
    try:
        diff = max_logit_change(src, dst, vocab_size, pad_id)
    except Exception as exc:  # noqa: BLE001 - e.g. a fused op without a kernel on this CPU
        shutil.copyfile(src, dst)
        reason = f"the fused graph did not run ({type(exc).__name__}: {exc}); quantized unfused"
        log.warning("transformer fusion: %s", reason)
        return Fusion(False, reason, plan.model_type, counts)
    if not diff <= atol:
        shutil.copyfile(src, dst)
        reason = f"fused graph changed the logits by {diff:.3g} (> {atol:g}); quantized unfused"
        log.warning("transformer fusion: %s", reason)
        return Fusion(False, reason, plan.model_type, counts, diff)
    log.info("transformer fusion: %s (max |logit change| %.2g)", counts, diff)
    return Fusion(True, plan.reason, plan.model_type, counts, diff)


def fused_counts(onnx_path: str | os.PathLike[str]) -> dict[str, int]:
    """How many of ONNX Runtime's fused transformer operators a graph already holds (by op type)."""
    import onnx

    fused = ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "EmbedLayerNormalization", "BiasGelu",
             "FastGelu", "QAttention")
    counts: dict[str, int] = {}
    for node in onnx.load(str(onnx_path), load_external_data=False).graph.node:
        if node.op_type in fused:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def read_hf_config(artifact_dir: Path) -> dict[str, Any] | None:
    """The Hugging Face ``config.json`` an onnx artifact carries beside ``model.onnx`` (None without one)."""
    import json

    path = Path(artifact_dir) / "config.json"
    return json.loads(path.read_text()) if path.is_file() else None


def fuse_before_quantization(onnx_path: Path, artifact_dir: Path, architecture: str, mode: str, optimize: str,
                             vocab_size: int, pad_id: int, workdir: Path) -> tuple[Path, Fusion]:
    """The graph ``mode`` quantizes, and what the fusion step did to it.

    Fuses (:func:`fuse_transformer`) only for int8-dynamic with ``optimize="auto"`` on an unfused
    BERT-family graph; otherwise returns ``onnx_path`` with the reason.
    """
    if optimize != "auto":
        return onnx_path, Fusion(False, f"--optimize {optimize} requested: the graph is quantized as exported")
    if mode != "int8-dynamic":
        return onnx_path, Fusion(False, f"{mode}: fusion runs before int8-dynamic only (the QDQ quantizer leaves "
                                        "a fused Attention in fp32)")
    already = fused_counts(onnx_path)
    if already:
        return onnx_path, Fusion(False, "the graph is already fused (exported with --optimize O2)",
                                 fused_operators=already)
    plan = fusion_plan(architecture, read_hf_config(artifact_dir))
    fused = workdir / "fused.onnx"
    fusion = fuse_transformer(onnx_path, fused, plan, vocab_size, pad_id)
    return (fused if fusion.applied else onnx_path), fusion
