"""Which ONNX nodes int8 hurts most: quantize each one alone and measure what it costs.

Parts of the guarded recipe in :mod:`export.quantize`: the nodes a mode would quantize
(:func:`quantizable_nodes`), a user's node names checked against the graph (:func:`unknown_nodes`),
and the ranking itself (:func:`rank_nodes`), which takes the quantizer and the evaluation as plain
functions so it stays independent of the mode.

Why one node at a time and not "everything but one node": a node that breaks under int8 ruins the
output on its own, so quantizing it alone shows its damage in full and every other node's alone-error
stays small. The reverse view (quantize all but one) only finds a culprit when it is the sole one:
with two broken nodes, leaving either one in float still leaves the other breaking the output, every
candidate looks equally bad and the ranking says nothing. The price is that errors which only appear
when several nodes compound are not seen; the exclusion loop in :func:`export.quantize.first_passing`
re-judges the whole model after each exclusion, so it never trusts the ranking beyond its order.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SENSITIVITY_MEASURES = ("output", "metric")
# The quantizer only carries a neighbour's scale through these (ONNX Runtime's Direct8BitOp family):
# quantized alone they add nothing, or requantize a tensor another candidate already covers.
MOVEMENT_OPS = ("Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Split", "Pad", "Resize", "TopK",
                "MaxPool", "AveragePool")
_FLOAT_TYPES = (1, 10, 11, 16)  # onnx.TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16
# ops through which a weight initializer reaches the op that uses it
_WEIGHT_PASS_OPS = ("Transpose", "Cast", "DequantizeLinear")


@dataclass(frozen=True)
class QuantizableNode:
    """A node the quantizer would touch.

    Attributes:
        name / op: the ONNX node name and op type.
        weights: float weight elements it carries (0: it quantizes activations only).
    """

    name: str
    op: str
    weights: int


def _tensor_types(model: Any) -> dict[str, int]:
    """Element type of every tensor ONNX shape inference can name (fused contrib ops leave gaps)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - inference is only a filter here; unknown types keep their node
        inferred = model
    graph = inferred.graph
    types = {i.name: i.data_type for i in graph.initializer}
    for value in (*graph.input, *graph.value_info, *graph.output):
        if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
            types[value.name] = value.type.tensor_type.elem_type
    return types


def quantizable_nodes(onnx_path: str | os.PathLike[str], op_types: Sequence[str]) -> list[QuantizableNode]:
    """Nodes of ``op_types`` the quantizer would change, most weights first (ties in graph order).

    Left out: data-movement ops (:data:`MOVEMENT_OPS`) and nodes whose inputs are all known to be
    non-float (shape arithmetic on int64), which the quantizer never touches.
    """
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    sizes = {i.name: int(np.prod(i.dims)) for i in model.graph.initializer if i.data_type in _FLOAT_TYPES}
    for node in model.graph.node:
        if node.op_type in _WEIGHT_PASS_OPS and node.input and node.input[0] in sizes:
            sizes.update({o: sizes[node.input[0]] for o in node.output})
    types = _tensor_types(model)
    wanted = set(op_types) - set(MOVEMENT_OPS)
    nodes: list[QuantizableNode] = []
    for node in model.graph.node:
        inputs = [i for i in node.input if i]
        if node.op_type not in wanted or not inputs:
            continue
        known = [types.get(i) for i in inputs]
        if all(t is not None for t in known) and not any(t in _FLOAT_TYPES for t in known):
            continue
        nodes.append(QuantizableNode(node.name, node.op_type, sum(sizes.get(i, 0) for i in inputs)))
    order = {n.name: i for i, n in enumerate(nodes)}
    return sorted(nodes, key=lambda n: (-n.weights, order[n.name]))


def unknown_nodes(onnx_path: str | os.PathLike[str], names: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the ``names`` that are no node of the graph, every node name of the graph in order)."""
    import onnx

    graph_names = [n.name for n in onnx.load(str(onnx_path), load_external_data=False).graph.node]
    known = set(graph_names)
    return [n for n in names if n not in known], graph_names


def output_error(reference: np.ndarray, logits: np.ndarray) -> float:
    """Mean absolute logit difference, (N, L) vs (N, L): how far int8 moves what the model outputs."""
    return float(np.mean(np.abs(np.asarray(logits, np.float64) - np.asarray(reference, np.float64))))


@dataclass(frozen=True)
class NodeSensitivity:
    """What quantizing one node alone costs.

    Attributes:
        node / op / weights: see :class:`QuantizableNode`.
        error: :func:`output_error` of the node-only int8 model vs fp32 on the calibration inputs.
        drop: guarded metric drop (validation macro ROC-AUC) of that model; None unless measured.
    """

    node: str
    op: str
    weights: int
    error: float
    drop: float | None = None


def rank_nodes(candidates: Sequence[QuantizableNode], quantize_one: Callable[[str, Path], None],
               logits_of: Callable[[Path], np.ndarray], reference: np.ndarray, workdir: Path,
               drop_of: Callable[[Path], float] | None = None) -> list[NodeSensitivity]:
    """Quantize each candidate alone, measure it, most harmful first.

    Args:
        candidates: the nodes to rank (already bounded by the caller).
        quantize_one: ``(node name, destination .onnx)`` -> writes the model with only that node in int8.
        logits_of: (N, L) logits of an ONNX file on the calibration inputs.
        reference: (N, L) fp32 logits on the same inputs.
        workdir: where the node-only models are written (one at a time, overwritten).
        drop_of: guarded metric drop of an ONNX file; ranks by it (then by error) when given.

    Returns:
        One :class:`NodeSensitivity` per candidate, most harmful first: by drop (when measured; a
        negative one counts as 0), then by error.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    target = workdir / "node.onnx"
    ranked: list[NodeSensitivity] = []
    for i, node in enumerate(candidates):
        quantize_one(node.name, target)
        error = output_error(reference, logits_of(target))
        drop = drop_of(target) if drop_of is not None else None
        log.debug("sensitivity %d/%d %s (%s): error %.5f%s", i + 1, len(candidates), node.name, node.op, error,
                  "" if drop is None else f", drop {drop:+.4f}")
        ranked.append(NodeSensitivity(node.name, node.op, node.weights, error, drop))
    target.unlink(missing_ok=True)
    # a negative drop (the node-only model scored better) is evaluation noise, not less harm than none
    return sorted(ranked, key=lambda s: (-max(s.drop or 0.0, 0.0), -s.error))


def sensitivity_record(ranking: Sequence[NodeSensitivity], measure: str, candidates: int, bound: int,
                       inputs: int, recipe: dict[str, Any], why: str, seconds: float) -> dict[str, Any]:
    """The ranking as ``artifact.json`` ``extra.sensitivity`` holds it (plain JSON types).

    Args:
        ranking: :func:`rank_nodes`' result. measure: ``output`` or ``metric``.
        candidates: quantizable nodes in the graph; bound: the most that were ranked.
        inputs: texts the output error was measured on. recipe: the node-only models' settings.
        why: what asked for the ranking. seconds: how long it took.
    """
    return {"measure": measure, "why": why, "inputs": inputs, "recipe": recipe, "candidates": candidates,
            "ranked": len(ranking), "bound": bound, "seconds": round(seconds, 3),
            "ranking": [{k: v for k, v in asdict(s).items() if v is not None} for s in ranking]}
