"""Quantization with an accuracy guard: ``quantize(artifact, QuantizeConfig(mode=...)) -> Path``.

Modes (dispatch on ``QuantizeConfig.mode``):

* ``int8-dynamic`` — ONNX Runtime ``quantize_dynamic`` (int8 weights, activations quantized per
  batch at run time; QOperator format: MatMulInteger / QAttention). Needs no calibration data.
* ``int8-static`` — ONNX Runtime ``quantize_static``, QDQ format, activations uint8 / weights int8,
  ranges calibrated on ``calibration_samples`` real texts (minmax, entropy or percentile).
* ``fp16`` — ONNX float16 conversion (``onnxruntime.transformers.float16``, fp32 inputs/outputs
  kept). For GPUs (CUDA / TensorRT execution providers); on a CPU it runs, slower than fp32.
* ``bf16`` — PyTorch: the artifact keeps the fp32 weights and records that inference runs under
  ``torch.autocast(dtype=torch.bfloat16)``. Fast only where the CPU has AMX / AVX512-BF16 (or on a
  GPU); on an AVX2-only CPU bf16 matmuls are emulated and far slower than fp32.
* ``torch-int8-dynamic`` — ``torch.ao.quantization.quantize_dynamic`` on ``nn.Linear`` (and
  ``nn.LSTM``); the int8 state dict is saved as ``model_int8.pt`` beside the fp32 ``model/`` it is
  rebuilt from (:func:`load_torch_int8`).

ONNX modes take an ``onnx`` artifact, or a teacher/student that is exported first
(:func:`export.onnx.export_onnx`, validated as always). Torch modes take a teacher/student.

Accuracy guard: with ``data``, validation macro ROC-AUC is measured before (fp32) and after on the
held-out split of that file (the same seeded split ``compress train`` uses by default; the whole
file when it is too small to split). If the drop exceeds ``max_auc_drop`` (ONNX int8 modes) the
most sensitive nodes are kept in float one more at a time, up to ``max_excluded``
(:func:`exclusion_attempts`, ranked by :mod:`export.quantize_sensitivity`), then the documented
fallbacks are tried in order (see :func:`attempts_for`); the first that passes is written, with every
attempt's numbers in ``artifact.json`` ``extra.guard`` (and the ranking in ``extra.sensitivity``); if
none passes, a UserError lists each attempt's drop and nothing is written. ``exclude_nodes`` keeps a
user's nodes in float in every attempt.

ONNX graph quantization lives here, in export, beside the exporter it starts from and the ONNX
Runtime sessions it evaluates with; the PyTorch-only parts (``torch.ao`` int8) are
:mod:`compress.quantize_torch`. ``compress quantize`` is the command users type for all modes.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from compress.batching import pad_batch
from compress.cpu import cpu_has_vnni
from compress.errors import ArtifactError, ConfigError, DataError, UserError
from compress.quantize_torch import int8_module_names, save_torch_int8, torch_int8_dynamic
from export.onnx import output_dir
from export.ort import onnx_logits, ort_session
from export.quantize_sensitivity import (
    SENSITIVITY_MEASURES,
    quantizable_nodes,
    rank_nodes,
    sensitivity_record,
    unknown_nodes,
)

log = logging.getLogger(__name__)

MODES = ("int8-dynamic", "int8-static", "fp16", "bf16", "torch-int8-dynamic")
ONNX_MODES = ("int8-dynamic", "int8-static", "fp16")
TORCH_MODES = ("bf16", "torch-int8-dynamic")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
OPTIMIZE_CHOICES = ("auto", "none", "O1", "O2")
MIN_CALIBRATION_SAMPLES = 8
# Static fallback: quantize only the weight-carrying ops, keep Softmax/Add/Mul/... in float.
WEIGHT_OPS = ("MatMul", "Gemm", "Conv")
HEAD_NODES = 2  # the last weight-carrying ops (classifier + pooler / pre-classifier)
# int8-dynamic quantizes ONNX Runtime's dynamic registry minus Conv: its ConvInteger CPU kernel ran
# 2.3x slower than the fp32 Conv (TextCNN on OLID, bench quant-speed); int8-static's QLinearConv
# is the fast int8 path for convolutions.
DYNAMIC_OPS = ("MatMul", "Attention", "LSTM", "Gather", "Transpose", "EmbedLayerNormalization")
INT8_MODES = ("int8-dynamic", "int8-static")
# TensorRT's explicit quantization (``int8_static_onnx(tensorrt=True)``): symmetric int8 (zero point 0) on
# activations and weights, a weight stays float behind its own Q/DQ pair (TensorRT folds it), only the inputs
# of the quantized ops are quantized (their outputs and biases stay float), MatMul weights per output column.
TENSORRT_QDQ_OPTIONS = {"ActivationSymmetric": True, "WeightSymmetric": True, "AddQDQPairToWeight": True,
                        "DedicatedQDQPair": True, "QuantizeBias": False,
                        "OpTypesToExcludeOutputQuantization": list(WEIGHT_OPS),
                        "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1}}
# Texts the sensitivity ranking measures each node-only model on. Evaluating them is most of a ranked
# node's cost (MiniLM-L6: ~1.5 s of CPU for 64 texts, the quantization ~0.7 s), and the ranking needs
# the order of the errors, which a broken node makes plain on a few dozen texts.
PROBE_TEXTS = 64
SENSITIVITY_CHOICES = ("off", *SENSITIVITY_MEASURES)


@dataclass(frozen=True)
class QuantizeConfig:
    """`compress quantize` settings.

    Attributes:
        mode: one of :data:`MODES`.
        out: artifact directory to write; None -> ``<source>-<mode>`` beside the source.
        data: labelled file for the accuracy guard and int8-static calibration (any format
            ``compress.data.load_dataset`` reads; its labels must be the artifact's).
        format: data format, None to detect it.
        val_fraction: held-out share evaluated by the guard (``compress train``'s default split);
            calibration texts come from the other part.
        calibration_samples: texts run through the model to calibrate int8-static ranges.
        calibration_method: ``minmax``, ``entropy`` or ``percentile``.
        per_channel: per-output-channel weight scales (first attempt). On by default: on MiniLM it
            cut the int8 logit error 4x (0.037 -> 0.010) at the same speed here.
        reduce_range: 7-bit weights (first attempt). None = auto: on for x86 CPUs without VNNI,
            whose u8 x s8 int8 kernels (VPMADDUBSW) saturate with full-range weights (measured
            here: 10x larger output error on AVX2), off elsewhere.
        max_auc_drop: largest accepted fall in validation macro ROC-AUC.
        fallbacks: try the documented fallbacks when the first attempt fails the guard.
        max_eval_samples: cap on guard rows (seeded sample), None for the whole split.
        optimize: ``auto`` = ONNX Runtime's transformer fusion before int8-dynamic on BERT-family
            encoders (:func:`export.optimize.fuse_before_quantization`; the unfused graph when it fails),
            none otherwise; ``O1`` / ``O2`` = that optimization when a PyTorch artifact is exported
            first, ``none`` = neither. ``extra.fusion`` records what was applied.
        seed: split, sampling.
        sensitivity: rank the quantizable nodes (ONNX int8 modes) before the attempts and record
            the ranking: ``output`` = mean absolute logit change on (up to :data:`PROBE_TEXTS`)
            calibration texts when only that node is int8; ``metric`` = also the guard's macro ROC-AUC drop (ranked by it);
            ``off`` = rank only when the guard fails and the exclusion loop needs it (``output``).
        sensitivity_nodes: rank at most this many nodes, those with the most weights first (each is
            one quantization + one evaluation); the rest are never excluded automatically.
        exclude_nodes: node names (ONNX modes) or ``nn.Linear`` module names (torch-int8-dynamic)
            kept in float in every attempt.
        max_excluded: when the first int8 attempt fails the guard, keep its 1, 2, ... most
            sensitive nodes in float, at most this many, before the fallbacks; 0 = never.
    """

    mode: str = ""
    out: str | None = None
    overwrite: bool = False  # replace an earlier output of ours at out (never anything else)
    data: str | None = None
    format: str | None = None
    val_fraction: float = 0.1
    calibration_samples: int = 128
    calibration_method: str = "minmax"
    per_channel: bool = True
    reduce_range: bool | None = None
    max_auc_drop: float = 0.005
    fallbacks: bool = True
    max_eval_samples: int | None = None
    optimize: str = "auto"
    seed: int = 0
    sensitivity: str = "off"
    sensitivity_nodes: int = 64
    exclude_nodes: tuple[str, ...] = ()
    max_excluded: int = 8

    def __post_init__(self) -> None:
        names = self.exclude_nodes.split(",") if isinstance(self.exclude_nodes, str) else self.exclude_nodes
        object.__setattr__(self, "exclude_nodes", tuple(names))
        if self.mode not in MODES:
            raise ConfigError(f"mode: must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.calibration_method not in CALIBRATION_METHODS:
            raise ConfigError(f"calibration_method: must be one of {', '.join(CALIBRATION_METHODS)}, "
                              f"got {self.calibration_method!r}")
        if self.calibration_samples < MIN_CALIBRATION_SAMPLES:
            raise ConfigError(f"calibration_samples: must be >= {MIN_CALIBRATION_SAMPLES}, "
                              f"got {self.calibration_samples}")
        check_guard_settings(self.val_fraction, self.max_auc_drop, self.max_eval_samples)
        if self.optimize not in OPTIMIZE_CHOICES:
            raise ConfigError(f"optimize: must be one of {', '.join(OPTIMIZE_CHOICES)}, got {self.optimize!r}")
        if self.mode == "int8-static" and not self.data:
            raise ConfigError("data: int8-static calibrates on real texts; pass --data FILE (labelled, "
                              "with the artifact's labels)")
        if self.sensitivity not in SENSITIVITY_CHOICES:
            raise ConfigError(f"sensitivity: must be one of {', '.join(SENSITIVITY_CHOICES)}, got {self.sensitivity!r}")
        if self.sensitivity != "off" and self.mode not in INT8_MODES:
            raise ConfigError(f"sensitivity: ranks the nodes ONNX Runtime quantizes to int8; --mode {self.mode} has "
                              "none, use int8-dynamic or int8-static")
        if self.sensitivity != "off" and not self.data:
            raise ConfigError("sensitivity: measures each node on real texts; pass --data FILE")
        if self.sensitivity_nodes < 1:
            raise ConfigError(f"sensitivity_nodes: must be >= 1, got {self.sensitivity_nodes}")
        if self.max_excluded < 0:
            raise ConfigError(f"max_excluded: must be >= 0, got {self.max_excluded}")
        if any(not n.strip() for n in self.exclude_nodes):
            raise ConfigError(f"exclude_nodes: empty node name in {list(self.exclude_nodes)}")
        if self.exclude_nodes and self.mode == "bf16":
            raise ConfigError("exclude_nodes: bf16 runs the whole PyTorch model under autocast, there are no nodes "
                              "to keep in float; use an ONNX mode or torch-int8-dynamic")


def check_guard_settings(val_fraction: float, max_auc_drop: float, max_eval_samples: int | None) -> None:
    """ConfigError naming the first accuracy-guard setting out of range (``compress quantize``, ``export tensorrt``)."""
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction: must be in (0, 1), got {val_fraction}")
    if not 0.0 <= max_auc_drop < 1.0:
        raise ConfigError(f"max_auc_drop: must be in [0, 1), got {max_auc_drop}")
    if max_eval_samples is not None and max_eval_samples < 2:
        raise ConfigError(f"max_eval_samples: must be >= 2, got {max_eval_samples}")


def resolve_reduce_range(requested: bool | None) -> tuple[bool, str]:
    """(reduce_range, why): an explicit choice wins; auto = 7-bit weights on x86 without VNNI."""
    if requested is not None:
        return requested, "requested"
    if cpu_has_vnni():
        return False, "auto: this CPU has VNNI (or is not x86), full 8-bit weights"
    return True, "auto: x86 CPU without VNNI, 7-bit weights avoid u8s8 saturation"


# ----------------------------------------------------------------------------------------------
# ONNX quantization parts


@contextlib.contextmanager
def quiet_onnxruntime_logs() -> Iterator[None]:
    """onnxruntime.quantization logs a line per tensor on the root logger; keep only errors meanwhile."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _graph_nodes(onnx_path: str | os.PathLike[str]) -> list[Any]:
    import onnx

    return list(onnx.load(str(onnx_path), load_external_data=False).graph.node)


def weight_nodes(onnx_path: str | os.PathLike[str], ops: Sequence[str] = WEIGHT_OPS) -> list[str]:
    """Names of the weight-carrying nodes of type ``ops`` (an input is an initializer), graph order."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    weights = {i.name for i in model.graph.initializer}
    # a weight may reach its op through a Transpose/Cast of an initializer
    derived = {o for node in model.graph.node if node.op_type in ("Transpose", "Cast", "DequantizeLinear")
               and node.input and node.input[0] in weights for o in node.output}
    return [node.name for node in model.graph.node
            if node.op_type in ops and any(i in weights or i in derived for i in node.input[1:])]


def head_nodes(onnx_path: str | os.PathLike[str], n: int = HEAD_NODES, ops: Sequence[str] = WEIGHT_OPS) -> list[str]:
    """Names of the last ``n`` weight-carrying nodes of type ``ops`` (the classifier head), graph order."""
    return weight_nodes(onnx_path, ops)[-n:] if n else []


def marginal_nodes(onnx_path: str | os.PathLike[str]) -> list[str]:
    """Names of a conditional head's marginalisation nodes (:mod:`compress.models.conditional`), kept float by
    every mode: 8-bit or fp16 log-probabilities would break the hierarchy the head guarantees."""
    import onnx

    from compress.models.conditional import ONNX_SCOPE

    return [node.name for node in onnx.load(str(onnx_path), load_external_data=False).graph.node
            if ONNX_SCOPE in node.name]


class TextCalibrationReader:
    """Calibration inputs for ``quantize_static``: one real tokenized text per run, unpadded.

    One text per run keeps padding positions out of the activation ranges.

    Args:
        token_ids: N lists of token ids (truncated to max_length).
    """

    def __init__(self, token_ids: Sequence[Sequence[int]]) -> None:
        self.token_ids = [list(t) for t in token_ids if len(t)]
        self.position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.token_ids):
            return None
        seq = self.token_ids[self.position]
        self.position += 1
        ids, mask = pad_batch([seq], 0)
        return {"input_ids": ids, "attention_mask": mask}

    def rewind(self) -> None:
        self.position = 0

    def __len__(self) -> int:
        return len(self.token_ids)


def int8_dynamic_onnx(src: Path, dst: Path, per_channel: bool, reduce_range: bool,
                      nodes_to_exclude: Sequence[str] = (), nodes_to_quantize: Sequence[str] = ()) -> None:
    """``quantize_dynamic``: int8 weights (QOperator: MatMulInteger, QAttention), uint8 activations.

    ``nodes_to_quantize`` (non-empty) limits it to those nodes (the sensitivity ranking's node-only models).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet_onnxruntime_logs():
        quantize_dynamic(
            str(src), str(dst), per_channel=per_channel, reduce_range=reduce_range, weight_type=QuantType.QInt8,
            nodes_to_exclude=list(nodes_to_exclude), nodes_to_quantize=list(nodes_to_quantize),
            op_types_to_quantize=list(DYNAMIC_OPS),
            # fused contrib ops (Attention, SkipLayerNormalization) defeat ONNX shape inference: say float
            extra_options={"DefaultTensorType": 1},
        )


def static_op_types(weight_ops_only: bool) -> list[str]:
    """The op types int8-static quantizes: MatMul/Gemm/Conv only, or ONNX Runtime's default (its QLinear and
    QDQ registries, what ``quantize_static`` takes when given none)."""
    if weight_ops_only:
        return list(WEIGHT_OPS)
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QLinearOpsRegistry) | set(QDQRegistry))


def calibration_cache_supported() -> bool:
    """Whether this onnxruntime's ``quantize_static`` can save and reuse calibrated ranges (newer releases)."""
    from onnxruntime.quantization import quantize_static

    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


def int8_static_onnx(src: Path, dst: Path, reader: TextCalibrationReader, method: str, per_channel: bool,
                     reduce_range: bool, nodes_to_exclude: Sequence[str] = (),
                     op_types: Sequence[str] | None = None, nodes_to_quantize: Sequence[str] = (),
                     calibration_cache: Path | None = None, tensorrt: bool = False) -> None:
    """``quantize_static`` in QDQ format: uint8 activations, int8 weights (ORT's CPU recommendation), or with
    ``tensorrt`` the Q/DQ TensorRT builds int8 engines from (:data:`TENSORRT_QDQ_OPTIONS`, int8 activations).

    ``nodes_to_quantize`` (non-empty) limits it to those nodes. ``calibration_cache``: a JSON file of
    calibrated ranges, written by the first call and read by the next ones (one calibration per run,
    not one per attempt or ranked node) where this onnxruntime supports it; the ranges of an op type
    set do not depend on the nodes or weights quantized, so one file per ``op_types`` is exact.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    # Not CalibMaxIntermediateOutputs: in onnxruntime 1.31 it drops the collected outputs without
    # folding them into the ranges. Calibration memory grows with calibration_samples instead.
    extra: dict[str, Any] = {"DefaultTensorType": 1, **(TENSORRT_QDQ_OPTIONS if tensorrt else {})}
    cache: dict[str, Any] = {}
    if calibration_cache is not None and calibration_cache_supported():
        cache["calibration_cache_path"] = str(calibration_cache)
    reader.rewind()
    with quiet_onnxruntime_logs():
        quantize_static(
            str(src), str(dst), reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
            reduce_range=reduce_range, activation_type=QuantType.QInt8 if tensorrt else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(nodes_to_exclude), nodes_to_quantize=list(nodes_to_quantize),
            op_types_to_quantize=list(op_types) if op_types else None,
            calibrate_method=methods[method], extra_options=extra, **cache,
        )


def fp16_onnx(src: Path, dst: Path, node_block_list: Sequence[str] = ()) -> None:
    """float16 weights and compute, fp32 inputs/outputs (``keep_io_types``); the blocked nodes stay fp32,
    and so do the tensors they pass to each other."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    converted = convert_float_to_float16(model, keep_io_types=True, node_block_list=list(node_block_list) or None)
    fp32_between_blocked(converted.graph, set(node_block_list))
    onnx.save(converted, str(dst))


def fp32_between_blocked(graph: Any, blocked: set[str]) -> None:
    """Take the fp32 -> fp16 -> fp32 ``Cast`` round trips after ``blocked`` nodes out of ``graph`` (in place).

    The converter runs each blocked node in fp32 but rounds its outputs to fp16 and back before the next
    blocked node or a float32 graph output reads them, so a chain of blocked nodes (a conditional head's
    marginalisation) would compute on, and return, fp16 values. The last Cast of such a round trip becomes
    an ``Identity`` of the fp32 tensor; Casts left without a reader go.
    """
    import onnx

    producer = {o: n for n in graph.node for o in n.output}

    def casts_to(node: Any, dtype: int) -> bool:
        return node is not None and node.op_type == "Cast" and any(a.name == "to" and a.i == dtype
                                                                    for a in node.attribute)

    for node in graph.node:
        down = producer.get(node.input[0]) if casts_to(node, onnx.TensorProto.FLOAT) else None
        if casts_to(down, onnx.TensorProto.FLOAT16) and getattr(producer.get(down.input[0]), "name", None) in blocked:
            node.op_type, node.input[0] = "Identity", down.input[0]
            del node.attribute[:]
    outputs = {o.name for o in graph.output}
    while True:
        read = {i for n in graph.node for i in n.input} | outputs
        unread = [n for n in graph.node if n.op_type == "Cast" and not any(o in read for o in n.output)]
        if not unread:
            return
        for node in unread:
            graph.node.remove(node)


# ----------------------------------------------------------------------------------------------
# Guard data and evaluation


@dataclass
class GuardData:
    """Rows the guard evaluates on and texts int8-static calibrates on.

    Attributes:
        texts / labels: evaluation rows, (N,) and (N, L) 0/1 in the artifact's label order.
        calibration_texts: texts from the non-evaluated part (or the whole file when too small).
        split: ``validation`` (held-out split) or ``all`` (file too small to split).
    """

    texts: list[str]
    labels: np.ndarray
    calibration_texts: list[str]
    split: str
    source: str


def load_guard_data(path: str, fmt: str | None, labels: Sequence[str], hierarchy: dict[str, str],
                    val_fraction: float, seed: int, max_eval: int | None) -> GuardData:
    """Read ``path``, align its labels to the artifact's, and split it (seeded, stratified)."""
    from compress import data as data_mod

    full = data_mod.load_dataset(path, format=fmt)
    schema = data_mod.LabelSchema.from_names(list(labels), hierarchy or None)
    full = data_mod.align_to_schema(full, schema)
    try:
        train, val = data_mod.train_val_split(full, val_fraction=val_fraction, seed=seed)
        split = "validation"
    except DataError:
        train, val, split = full, full, "all"
    if max_eval and len(val) > max_eval:
        rng = np.random.default_rng(seed)
        val = val.subset(np.sort(rng.choice(len(val), max_eval, replace=False)))
    return GuardData(list(val.texts), val.labels, list(train.texts), split, str(path))


def usable_texts(texts: Sequence[str]) -> list[str]:
    """The texts with something in them (empty and whitespace-only ones tell a model nothing)."""
    return [t for t in texts if t and t.strip()]


def calibration_ids(tokenizer: Any, texts: Sequence[str], n: int, max_length: int, seed: int,
                    source: str) -> list[list[int]]:
    """Token ids of ``n`` texts sampled (seeded) for calibration; DataError when there are fewer."""
    usable = usable_texts(texts)
    if len(usable) < n:
        raise DataError(f"{source}: only {len(usable)} texts are available for calibration, fewer than "
                        f"--calibration-samples {n}; pass more data or --calibration-samples "
                        f"{max(MIN_CALIBRATION_SAMPLES, len(usable))}" if len(usable) >= MIN_CALIBRATION_SAMPLES
                        else f"{source}: only {len(usable)} texts are available for calibration, fewer than "
                        f"the minimum {MIN_CALIBRATION_SAMPLES}; pass a larger --data file")
    rng = np.random.default_rng(seed)
    chosen = [usable[i] for i in np.sort(rng.choice(len(usable), n, replace=False))]
    return tokenizer(chosen, truncation=True, max_length=max_length, padding=False)["input_ids"]


def macro_auc(labels: np.ndarray, probs: np.ndarray, names: Sequence[str]) -> float:
    """Macro ROC-AUC over labels with both classes present; DataError when no label has both."""
    from compress.metrics import multilabel_metrics

    value = multilabel_metrics(labels, probs, names)["macro_roc_auc"]
    if not np.isfinite(value):
        raise DataError("the guard's evaluation rows have no label with both positives and negatives; "
                        "pass a larger --data file")
    return float(value)


def onnx_probs(path: Path, encoded: Any, cpu: bool = False) -> np.ndarray:
    """(N, L) probabilities of an ONNX file (CUDA EP for fp16 when present, else CPU; ``cpu``: CPU only)."""
    import onnxruntime as ort

    from compress.predict import sigmoid

    providers = ["CPUExecutionProvider"]
    if not cpu and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return sigmoid(onnx_logits(ort_session(path, providers), encoded))


def torch_probs(model: Any, encoded: Any, mixed_precision: str = "no") -> np.ndarray:
    """(N, L) probabilities of a PyTorch model (CPU; bf16 via autocast)."""
    from compress.predict import predict_logits, sigmoid

    return sigmoid(predict_logits(model, encoded, batch_size=64, mixed_precision=mixed_precision))


# ----------------------------------------------------------------------------------------------
# Attempts (the documented fallback order)


@dataclass(frozen=True)
class Attempt:
    """One quantization recipe the guard may try.

    Attributes:
        name: short label for messages and artifact.json.
        per_channel / reduce_range: weight quantization (ONNX int8 modes).
        keep_head: leave the last weight-carrying ops (classifier head) in float.
        weight_ops_only: int8-static: quantize only MatMul/Gemm/Conv (Softmax, Add, ... stay float).
        exclude: nodes kept in float because the guard failed (the most sensitive first).
    """

    name: str
    per_channel: bool = False
    reduce_range: bool = False
    keep_head: bool = False
    weight_ops_only: bool = False
    exclude: tuple[str, ...] = ()


def attempts_for(mode: str, per_channel: bool, reduce_range: bool, fallbacks: bool = True) -> list[Attempt]:
    """The attempts for ``mode``, first the requested recipe, then the fallbacks in order.

    int8-dynamic / int8-static: requested -> per-channel -> per-channel + classifier head in float
    (+ static: only MatMul/Gemm/Conv quantized, Softmax/Add/... in float) -> the same with 7-bit
    weights (reduce_range). torch-int8-dynamic: all Linear -> classifier head in float. fp16:
    all -> classifier head in float. bf16: one attempt.
    """
    first = Attempt("requested", per_channel, reduce_range)
    if mode in ("int8-dynamic", "int8-static"):
        static = mode == "int8-static"
        chain = [
            first,
            Attempt("per-channel", True, reduce_range),
            Attempt("per-channel+float-head" + ("+weight-ops-only" if static else ""), True, reduce_range,
                    keep_head=True, weight_ops_only=static),
            Attempt("per-channel+float-head" + ("+weight-ops-only" if static else "") + "+reduce-range", True, True,
                    keep_head=True, weight_ops_only=static),
        ]
    elif mode in ("torch-int8-dynamic", "fp16"):
        chain = [Attempt("requested"), Attempt("float-head", keep_head=True)]
    else:
        chain = [Attempt("requested")]
    unique: list[Attempt] = []
    seen: set[tuple] = set()
    for attempt in chain:
        key = (attempt.per_channel, attempt.reduce_range, attempt.keep_head, attempt.weight_ops_only)
        if key not in seen:
            seen.add(key)
            unique.append(attempt)
    return unique if fallbacks else unique[:1]


def exclusion_attempts(first: Attempt, ranking: Sequence[dict[str, Any]], max_excluded: int) -> list[Attempt]:
    """``first`` with its 1, 2, ... ``max_excluded`` most sensitive nodes in float, one more each time.

    ``ranking``: ``extra.sensitivity.ranking`` rows (``node``, ``error``), most sensitive first. Nodes
    whose int8 form changed nothing (error 0) are skipped: keeping them in float cannot help.
    """
    harmful = [r["node"] for r in ranking if r["error"] > 0.0][:max_excluded]
    return [replace(first, name=f"{first.name}+exclude-{k}", exclude=tuple(harmful[:k]))
            for k in range(1, len(harmful) + 1)]


# ----------------------------------------------------------------------------------------------
# The recipe


@dataclass
class _Source:
    """What the attempts start from: an fp32 ONNX file or a PyTorch model, plus its artifact."""

    artifact: Path  # directory to copy tokenizer/ (and config.json / model/) from
    onnx: Path | None = None
    model: Any = None
    tokenizer: Any = None
    export_extra: dict[str, Any] = field(default_factory=dict)
    fusion: dict[str, Any] = field(default_factory=dict)  # what fused_source did (ONNX modes)


def _export_first(source: Path, info: Any, config: QuantizeConfig, workdir: Path) -> _Source:
    """A teacher/student -> a validated fp32 ONNX artifact in ``workdir`` (ONNX modes need one)."""
    from export.onnx import OnnxExportConfig, export_onnx

    # auto: export unfused; fused_source fuses BERT-family graphs before int8-dynamic
    optimize = "none" if config.optimize == "auto" else config.optimize
    result = export_onnx(source, OnnxExportConfig(out=str(workdir / "fp32"), optimize=optimize))
    from compress.artifact import read_info

    exported = read_info(result.artifact)
    return _Source(result.artifact, onnx=result.artifact / "model.onnx",
                   export_extra={k: exported.extra[k] for k in ("exporter", "opset", "optimize", "validation")})


@dataclass(frozen=True)
class Calibration:
    """int8-static calibration: token ids of the calibration texts, and where their ranges are cached.

    Attributes:
        ids: N lists of token ids (truncated, unpadded).
        cache_dir: the run's work directory; one ranges file per op-type set, shared by every attempt
            and every ranked node (see :func:`int8_static_onnx`).
    """

    ids: list[list[int]]
    cache_dir: Path

    def cache(self, op_types: Sequence[str] | None) -> Path:
        return self.cache_dir / ("calibration-weight-ops.json" if op_types else "calibration-all.json")


def excluded_nodes(attempt: Attempt, user: Sequence[str], head: Sequence[str], ops: dict[str, str]
                   ) -> list[dict[str, Any]]:
    """The nodes an attempt keeps in float, each once with its op and why: ``user`` (--exclude-nodes),
    ``guard`` (the exclusion loop) or ``float-head`` (the classifier-head fallback)."""
    why: dict[str, str] = {}
    for names, reason in ((user, "user"), (attempt.exclude, "guard"), (head, "float-head")):
        for name in names:
            why.setdefault(name, reason)
    return [{"node": name, "op": ops.get(name), "why": reason} for name, reason in why.items()]


def _build(mode: str, attempt: Attempt, src: _Source, target: Path, config: QuantizeConfig,
           calibration: Calibration | None) -> tuple[Any, dict[str, Any]]:
    """Make one candidate in ``target``; returns (torch model or None, recipe details)."""
    details: dict[str, Any] = {"mode": mode, "keep_head": attempt.keep_head}
    if mode in ("int8-dynamic", "int8-static"):
        details.update(per_channel=attempt.per_channel, reduce_range=attempt.reduce_range, weights="int8")
    if mode == "int8-static":
        details["weight_ops_only"] = attempt.weight_ops_only
    if mode in ONNX_MODES:
        assert src.onnx is not None
        target.mkdir(parents=True, exist_ok=True)
        # the last ops this mode would quantize: dynamic leaves Gemm/Conv in float anyway
        head_ops = ("MatMul",) if mode == "int8-dynamic" else WEIGHT_OPS
        head = head_nodes(src.onnx, ops=head_ops) if attempt.keep_head else []
        ops = {n.name: n.op_type for n in _graph_nodes(src.onnx)}
        records = excluded_nodes(attempt, config.exclude_nodes, head, ops)
        excluded = [r["node"] for r in records]
        details["nodes_excluded"] = excluded
        if records:
            details["excluded"] = records
        marginal = marginal_nodes(src.onnx)
        if marginal:
            details["float_marginal_nodes"] = len(marginal)
            excluded = [*excluded, *marginal]
        dst = target / "model.onnx"
        if mode == "int8-dynamic":
            details.update(format="QOperator (MatMulInteger / QAttention)", activations="uint8, per batch",
                           op_types=list(DYNAMIC_OPS))
            if "Conv" in ops.values():
                details["note"] = ("Conv stays fp32 (ONNX Runtime's ConvInteger is slower than fp32 on CPU); "
                                   "int8-static quantizes convolutions (QLinearConv)")
                log.warning("this model has convolutions; int8-dynamic keeps them fp32 (ConvInteger is slow on CPU), "
                            "use --mode int8-static to run them in int8")
            int8_dynamic_onnx(src.onnx, dst, attempt.per_channel, attempt.reduce_range, excluded)
        elif mode == "int8-static":
            assert calibration is not None
            op_types = list(WEIGHT_OPS) if attempt.weight_ops_only else None
            details.update(calibration_method=config.calibration_method, calibration_samples=len(calibration.ids),
                           op_types=op_types or "onnxruntime default (QDQ registry)", format="QDQ",
                           activations="uint8")
            int8_static_onnx(src.onnx, dst, TextCalibrationReader(calibration.ids), config.calibration_method,
                             attempt.per_channel, attempt.reduce_range, excluded, op_types,
                             calibration_cache=calibration.cache(op_types))
        else:
            details.update(keep_io_types=True, note="fp16 is for GPUs (CUDA / TensorRT EPs); on CPU it is slower "
                                                    "than fp32")
            fp16_onnx(src.onnx, dst, excluded)
        return None, details
    if mode == "torch-int8-dynamic":
        names = [n for n in int8_module_names(src.model, skip_last=HEAD_NODES if attempt.keep_head else 0)
                 if n not in config.exclude_nodes]
        details.update(modules=names, dtype="qint8", backend="torch.ao.quantization.quantize_dynamic")
        if config.exclude_nodes:
            details["excluded"] = [{"node": n, "op": type(src.model.get_submodule(n)).__name__, "why": "user"}
                                   for n in config.exclude_nodes]
        return torch_int8_dynamic(src.model, names), details
    details.update(inference="torch.autocast(device_type, dtype=torch.bfloat16); weights stay fp32")
    return src.model, details


def check_source_kind(source: Path, kind: str, parent: str | None, mode: str) -> None:
    """ArtifactError unless an artifact of ``kind`` can be quantized as ``mode``."""
    if mode in TORCH_MODES and kind not in ("teacher", "student"):
        hint = f"; use its parent {parent}" if parent else ""
        raise ArtifactError(f"{source} is a {kind} artifact; --mode {mode} needs a PyTorch teacher or "
                            f"student{hint}")
    if mode in ONNX_MODES and kind not in ("teacher", "student", "onnx"):
        raise ArtifactError(f"{source} is a {kind} artifact; --mode {mode} needs an onnx artifact or a "
                            "teacher/student (exported first)")


def load_source(source: Path, info: Any, config: QuantizeConfig, workdir: Path) -> _Source:
    """What the attempts start from, with its tokenizer: the fp32 ONNX file (ONNX modes; a
    teacher/student is exported into ``workdir`` first) or the PyTorch model (torch modes)."""
    if config.mode not in ONNX_MODES:
        from compress.models import load_model

        model, tokenizer = load_model(source)
        return _Source(source, model=model, tokenizer=tokenizer)
    src = _Source(source, onnx=source / "model.onnx") if info.kind == "onnx" else \
        _export_first(source, info, config, workdir)
    if src.onnx is None or not src.onnx.is_file():
        raise ArtifactError(f"{source} has no model.onnx; re-create it with `export onnx`")
    from transformers import AutoTokenizer

    src.tokenizer = AutoTokenizer.from_pretrained(str(src.artifact / "tokenizer"))
    return src


def fused_source(src: _Source, info: Any, config: QuantizeConfig, workdir: Path) -> _Source:
    """ONNX modes: quantize the graph after the fusion step (:func:`export.optimize.fuse_before_quantization`)."""
    from compress.artifact import read_info
    from export.optimize import fuse_before_quantization

    if src.onnx is None:
        return src
    exported = read_info(src.artifact).extra  # vocab_size / pad_id: what export validated with
    pad = exported.get("pad_id", src.tokenizer.pad_token_id)
    src.onnx, fusion = fuse_before_quantization(
        src.onnx, src.artifact, info.architecture, config.mode, config.optimize,
        int(exported.get("vocab_size") or len(src.tokenizer)), int(pad) if pad is not None else 0, workdir)
    src.fusion = fusion.record()
    return src


def candidate_probs(encoded: Any, model: Any, onnx_file: Path | None, precision: str = "no") -> np.ndarray:
    """(N, L) probabilities of a candidate: its ONNX file when it has one, else its PyTorch model."""
    import torch

    if onnx_file is not None:
        return onnx_probs(onnx_file, encoded)
    with torch.inference_mode():
        return torch_probs(model, encoded, precision)


@dataclass(frozen=True)
class AucGuard:
    """The guard of one run: its rows, encoded for the source's tokenizer, and the fp32 score to keep.

    Attributes:
        encoded: :class:`compress.batching.Encoded` of ``data.texts`` (N rows).
        baseline: fp32 validation macro ROC-AUC on them.
    """

    data: GuardData
    encoded: Any
    baseline: float
    max_auc_drop: float
    labels: list[str]

    @classmethod
    def measure(cls, data: GuardData, encoded: Any, fp32_probs: np.ndarray, labels: Sequence[str],
                max_auc_drop: float) -> AucGuard:
        """The guard whose baseline is the fp32 model's (N, L) probabilities on ``encoded``."""
        baseline = macro_auc(data.labels, fp32_probs, labels)
        log.info("fp32 validation macro ROC-AUC %.4f on %d rows (%s split of %s)", baseline, len(data.texts),
                 data.split, data.source)
        return cls(data, encoded, baseline, max_auc_drop, list(labels))

    def verdict(self, name: str, probs: np.ndarray) -> dict[str, Any]:
        """``macro_roc_auc``, ``drop`` (fp32 minus it) and ``passed`` (drop within ``max_auc_drop``) of a
        candidate's (N, L) probabilities on the guard's rows."""
        after = macro_auc(self.data.labels, probs, self.labels)
        drop = self.baseline - after
        verdict = {"macro_roc_auc": after, "drop": drop, "passed": bool(drop <= self.max_auc_drop)}
        log.info("%s: macro ROC-AUC %.4f (drop %+.4f, limit %.4f) %s", name, after, drop, self.max_auc_drop,
                 "ok" if verdict["passed"] else "too large")
        return verdict


def judge(guard: AucGuard | None, mode: str, name: str, qmodel: Any, onnx_file: Path | None
          ) -> tuple[dict[str, Any], np.ndarray | None]:
    """(the guard's verdict on one candidate, its (N, L) probabilities or None when not evaluated)."""
    if guard is None:
        return {"passed": True, "note": "not evaluated (no --data)"}, None
    try:
        probs = candidate_probs(guard.encoded, qmodel, onnx_file, "bf16" if mode == "bf16" else "no")
    except Exception as exc:  # noqa: BLE001 - e.g. fp16 kernels missing on the CPU EP
        if mode != "fp16":
            raise
        return {"macro_roc_auc": None, "drop": None, "passed": True,
                "note": f"not evaluated: this ONNX Runtime cannot run fp16 here ({type(exc).__name__})"}, None
    return guard.verdict(f"attempt {name}", probs), probs


def fp32_guard(data: GuardData, src: _Source, max_length: int, labels: Sequence[str], mode: str,
               max_auc_drop: float) -> AucGuard:
    """Encode the guard's rows for the source's tokenizer and score the fp32 source on them."""
    from compress.batching import encode
    from compress.precision import fast_bf16

    if mode == "bf16" and not fast_bf16():
        log.warning("this CPU has no AMX / AVX512-BF16: bf16 matmuls are emulated and far slower than fp32; "
                    "the guard evaluation will be slow (cap it with --max-eval-samples)")
    encoded = encode(src.tokenizer, data.texts, max_length)
    return AucGuard.measure(data, encoded, candidate_probs(encoded, src.model, src.onnx), labels, max_auc_drop)


@dataclass
class _Candidate:
    """The attempt that passed: where it was built, its torch model (torch modes), its record and probs."""

    target: Path
    qmodel: Any
    record: dict[str, Any]
    probs: np.ndarray | None


def probe_inputs(tokenizer: Any, guard: AucGuard, calibration: Calibration | None, n: int, max_length: int,
                 seed: int) -> Any:
    """:class:`compress.batching.Encoded` rows the sensitivity ranking measures on: the first ``n`` of
    int8-static's (already sampled) calibration texts, else up to ``n`` texts sampled (seeded) from the
    part of ``--data`` the guard does not evaluate (its evaluation rows when that part has no usable text)."""
    from compress.batching import Encoded, encode

    pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    if calibration is not None:
        return Encoded(calibration.ids[:n], None, pad_id)
    pool = usable_texts(guard.data.calibration_texts) or usable_texts(guard.data.texts)
    rng = np.random.default_rng(seed)
    chosen = [pool[i] for i in np.sort(rng.choice(len(pool), min(n, len(pool)), replace=False))]
    return encode(tokenizer, chosen, max_length)


def node_sensitivity(src: _Source, config: QuantizeConfig, guard: AucGuard, calibration: Calibration | None,
                     max_length: int, workdir: Path, why: str) -> dict[str, Any]:
    """Rank the nodes the first int8 attempt quantizes by what each costs when it alone is int8
    (:func:`export.quantize_sensitivity.rank_nodes`); the record ``extra.sensitivity`` keeps.

    The node-only models use the first attempt's recipe (``per_channel``, ``reduce_range``); only the
    ``sensitivity_nodes`` candidates with the most weights are ranked; the user's excluded nodes are not.
    """
    assert src.onnx is not None
    started = time.perf_counter()
    reduce_range, _ = resolve_reduce_range(config.reduce_range)
    dynamic = config.mode == "int8-dynamic"
    op_types = DYNAMIC_OPS if dynamic else static_op_types(weight_ops_only=False)
    every = [n for n in quantizable_nodes(src.onnx, op_types) if n.name not in config.exclude_nodes]
    candidates = every[: config.sensitivity_nodes]
    probe = probe_inputs(src.tokenizer, guard, calibration, min(config.calibration_samples, PROBE_TEXTS), max_length,
                         config.seed)
    log.info("sensitivity (%s): quantizing %d of %d nodes one at a time, measured on %d texts", why,
             len(candidates), len(every), len(probe))

    def quantize_one(name: str, dst: Path) -> None:
        if dynamic:
            int8_dynamic_onnx(src.onnx, dst, config.per_channel, reduce_range, nodes_to_quantize=[name])
        else:
            assert calibration is not None
            int8_static_onnx(src.onnx, dst, TextCalibrationReader(calibration.ids), config.calibration_method,
                             config.per_channel, reduce_range, nodes_to_quantize=[name],
                             calibration_cache=calibration.cache(None))

    def logits_of(path: Path) -> np.ndarray:
        return onnx_logits(ort_session(path), probe)

    def drop_of(path: Path) -> float:
        return guard.baseline - macro_auc(guard.data.labels, onnx_probs(path, guard.encoded), guard.labels)

    ranking = rank_nodes(candidates, quantize_one, logits_of, logits_of(src.onnx), workdir / "sensitivity",
                         drop_of if config.sensitivity == "metric" else None)
    record = sensitivity_record(ranking, "metric" if config.sensitivity == "metric" else "output", len(every),
                                config.sensitivity_nodes, len(probe),
                                {"per_channel": config.per_channel, "reduce_range": reduce_range},
                                why, time.perf_counter() - started)
    top = ", ".join(f"{r['node']} ({r['op']}) {r['error']:.4f}" for r in record["ranking"][:3])
    log.info("sensitivity: %d nodes in %.1f s; most sensitive: %s", len(ranking), record["seconds"], top)
    return record


def first_passing(src: _Source, config: QuantizeConfig, guard: AucGuard | None, calibration: Calibration | None,
                  workdir: Path, rank: Callable[[str], dict[str, Any]] | None = None,
                  sensitivity: dict[str, Any] | None = None
                  ) -> tuple[_Candidate | None, list[dict[str, Any]], dict[str, Any] | None]:
    """Build and judge the attempts in order; (the first that passes or None, every record, the ranking).

    The order: the requested recipe; when it fails the guard (ONNX int8, fallbacks on), the same recipe
    with its 1, 2, ... ``max_excluded`` most sensitive nodes in float (:func:`exclusion_attempts`,
    ranked by ``rank`` unless ``sensitivity`` already holds a ranking); then the documented fallbacks
    (:func:`attempts_for`).
    """
    mode = config.mode
    int8 = mode in INT8_MODES
    reduce_range, reduce_why = resolve_reduce_range(config.reduce_range)
    if int8:
        log.info("reduce_range=%s (%s)", reduce_range, reduce_why)
    attempts: list[dict[str, Any]] = []

    def attempt_once(attempt: Attempt) -> _Candidate | None:
        target = workdir / f"attempt{len(attempts)}"
        qmodel, details = _build(mode, attempt, src, target, config, calibration)
        record: dict[str, Any] = {"name": attempt.name, **details}
        if int8:
            record["reduce_range_reason"] = reduce_why if attempt.reduce_range == reduce_range else "fallback"
        verdict, probs = judge(guard, mode, attempt.name, qmodel, target / "model.onnx" if mode in ONNX_MODES else None)
        record.update(verdict)
        attempts.append(record)
        return _Candidate(target, qmodel, record, probs) if record["passed"] else None

    first, *fallbacks = attempts_for(mode, config.per_channel, reduce_range, config.fallbacks)
    chosen = attempt_once(first)
    if chosen is None and int8 and guard is not None and config.fallbacks and config.max_excluded and rank:
        sensitivity = sensitivity or rank("the first attempt failed the guard")
        for attempt in exclusion_attempts(first, sensitivity["ranking"], config.max_excluded):
            if (chosen := attempt_once(attempt)) is not None:
                break
    for attempt in fallbacks:
        if chosen is not None:
            break
        chosen = attempt_once(attempt)
    return chosen, attempts, sensitivity


def quantized_info(info: Any, source: Path, config: QuantizeConfig, chosen: _Candidate,
                   attempts: list[dict[str, Any]], guard: AucGuard | None, export_extra: dict[str, Any],
                   sensitivity: dict[str, Any] | None = None, fusion: dict[str, Any] | None = None) -> Any:
    """artifact.json of the quantized artifact: the source's labels and thresholds, the chosen attempt's
    recipe (its float-kept nodes and why), every attempt's guard numbers, the sensitivity ranking when
    one was made, the runtime that runs it."""
    from compress.artifact import ArtifactInfo
    from compress.hierarchy_metrics import level_cuts_of
    from compress.metrics import multilabel_metrics

    thresholds = np.asarray(info.thresholds if info.thresholds else [0.5] * len(info.labels))
    metrics = dict(info.metrics)
    if guard is not None and chosen.probs is not None:
        metrics = multilabel_metrics(guard.data.labels, chosen.probs, info.labels, thresholds, info.schema(),
                                     level_cuts_of(info.metrics))
    runtime = {"bf16": "torch-bf16", "torch-int8-dynamic": "torch-int8"}.get(config.mode, "ort")
    guard_extra = {"data": guard.data.source, "split": guard.data.split, "rows": len(guard.data.texts),
                   "baseline_macro_roc_auc": guard.baseline, "max_auc_drop": config.max_auc_drop,
                   "attempts": attempts, "chosen": chosen.record["name"]} if guard else \
        {"skipped": "no --data given", "attempts": attempts, "chosen": chosen.record["name"]}
    return ArtifactInfo(
        kind="quantized", architecture=info.architecture, **info.label_fields(),
        thresholds=[float(x) for x in thresholds], max_length=info.max_length,
        parent=str(source.resolve()), metrics=metrics, data_fingerprint=info.data_fingerprint,
        recipe={"quantize": asdict(config), "source_recipe": info.recipe},
        extra={"quantization": {k: v for k, v in chosen.record.items()
                                if k not in ("name", "macro_roc_auc", "drop", "passed")},
               "guard": guard_extra, "runtime": runtime, "source_kind": info.kind,
               **({"sensitivity": sensitivity} if sensitivity else {}),
               **({"onnx_export": export_extra} if export_extra else {}),
               **({"fusion": fusion} if fusion else {})},
    )


def check_exclude_nodes(src: _Source, mode: str, names: Sequence[str]) -> None:
    """ConfigError naming every ``names`` entry that is no node of the source (ONNX modes) or no module
    torch-int8-dynamic quantizes."""
    if not names:
        return
    if mode in ONNX_MODES:
        assert src.onnx is not None
        missing, known = unknown_nodes(src.onnx, names)
        where = "model.onnx"
    else:
        known = int8_module_names(src.model)
        missing, where = [n for n in names if n not in known], "the nn.Linear / nn.LSTM modules"
    if missing:
        raise ConfigError(f"exclude_nodes: no node named {', '.join(missing)} in {where} ({len(known)} nodes, "
                          f"e.g. {', '.join(known[:3])}); `compress quantize --sensitivity` lists the ones it "
                          "quantizes, most sensitive first")


def write_quantized(out: Path, mode: str, chosen: _Candidate, src: _Source, new_info: Any,
                    overwrite: bool = False) -> None:
    """Write the artifact atomically: the quantized ``model.onnx`` (ONNX modes) or the source's ``model/``
    (+ ``model_int8.pt``), the tokenizer, ``artifact.json``."""
    from compress.artifact import atomic_artifact_dir, copy_artifact_files, write_info

    with atomic_artifact_dir(out, overwrite) as tmp:
        if mode in ONNX_MODES:
            shutil.move(str(chosen.target / "model.onnx"), tmp / "model.onnx")
            copy_artifact_files(src.artifact, tmp, ["tokenizer", "config.json"])
        else:
            copy_artifact_files(src.artifact, tmp, ["model", "tokenizer"])
            if mode == "torch-int8-dynamic":
                save_torch_int8(chosen.qmodel, tmp)
        write_info(tmp, new_info)


def quantize(artifact: str | os.PathLike[str], config: QuantizeConfig) -> Path:
    """Quantize ``artifact`` as ``config.mode`` says, guarded by validation macro ROC-AUC.

    Args:
        artifact: a teacher/student (any mode) or an ``onnx`` artifact (ONNX modes).
        config: :class:`QuantizeConfig`.

    Returns:
        The new artifact (kind ``quantized``; ``extra.quantization``, ``extra.guard``,
        ``extra.runtime`` = the :func:`export.runtime.load` backend that runs it).

    Raises:
        ArtifactError: wrong kind for the mode. DataError: unusable ``data``. UserError: no
        attempt kept the AUC drop within ``max_auc_drop`` (each attempt's drop listed).
    """
    from compress.artifact import read_info

    source = Path(artifact)
    info = read_info(source)
    mode = config.mode
    check_source_kind(source, info.kind, info.parent, mode)
    out = output_dir(source, config.out, mode, config.overwrite, inputs=(config.data,))
    guard_data = None
    if config.data:
        guard_data = load_guard_data(config.data, config.format, info.labels, info.hierarchy, config.val_fraction,
                                     config.seed, config.max_eval_samples)
    elif mode != "int8-static":
        log.warning("no --data: the accuracy guard is skipped (pass --data FILE to measure the AUC drop)")

    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=out.parent if out.parent.exists() else None) as t:
        work = Path(t)
        src = fused_source(load_source(source, info, config, work), info, config, work)
        check_exclude_nodes(src, mode, config.exclude_nodes)
        calibration = None
        if mode == "int8-static":
            assert guard_data is not None
            calibration = Calibration(calibration_ids(src.tokenizer, guard_data.calibration_texts,
                                                      config.calibration_samples, info.max_length, config.seed,
                                                      guard_data.source), work)
        guard = None if guard_data is None else \
            fp32_guard(guard_data, src, info.max_length, info.labels, mode, config.max_auc_drop)
        rank = None if guard is None or mode not in INT8_MODES else \
            functools.partial(node_sensitivity, src, config, guard, calibration, info.max_length, work)
        sensitivity = rank("requested (--sensitivity)") if rank and config.sensitivity != "off" else None
        chosen, attempts, sensitivity = first_passing(src, config, guard, calibration, work, rank, sensitivity)
        if chosen is None:
            listing = "; ".join(f"{a['name']} drop {a['drop']:.4f}" for a in attempts)
            raise UserError(f"{mode} loses too much accuracy: validation macro ROC-AUC {guard.baseline:.4f} fp32, "
                            f"limit drop {config.max_auc_drop:g}; attempts: {listing}; raise --max-auc-drop or pick "
                            "another --mode")
        write_quantized(out, mode, chosen, src,
                        quantized_info(info, source, config, chosen, attempts, guard, src.export_extra, sensitivity,
                                       src.fusion),
                        config.overwrite)
    return out
