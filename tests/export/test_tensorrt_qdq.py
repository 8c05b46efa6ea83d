"""The Q/DQ model TensorRT builds int8 engines from: TensorRT's form (symmetric int8, zero point 0, per-channel
weights, only the weight ops' inputs quantized), close to fp32 on ONNX Runtime CPU, and refused by the guard
when int8 breaks the model."""

from __future__ import annotations

import numpy as np
import pytest

from compress.errors import UserError
from export.quantize import WEIGHT_OPS, load_guard_data, weight_nodes
from export.tensorrt_qdq import QDQ_FILE, qdq_for_tensorrt
from tests import fixtures
from tests.export.helpers import LABELS, student_artifact

HIERARCHY = {"severe_toxic": "toxic"}


def _qdq(artifact, csv, workdir, max_auc_drop=0.005):
    from transformers import AutoTokenizer

    data = load_guard_data(str(csv), None, LABELS, HIERARCHY, 0.1, 0, None)
    tokenizer = AutoTokenizer.from_pretrained(str(artifact / "tokenizer"))
    return qdq_for_tensorrt(artifact / "model.onnx", tokenizer, data, LABELS, 32, 64, max_auc_drop, 0, workdir)


def _graph(path):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    return model.graph, inits, producer


def _assert_tensorrt_qdq(path, source):
    """Every Q/DQ is int8 with zero point 0; weights per output channel, activations per tensor; exactly the
    weight-carrying MatMul/Gemm/Conv nodes read Q/DQ'd inputs; no op's output is quantized."""
    graph, inits, producer = _graph(path)
    qdq = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for node in qdq:
        zero_point = inits[node.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any(), node.name
    for node in (n for n in graph.node if n.op_type == "QuantizeLinear"):
        scale = inits[node.input[1]]
        if node.input[0] in inits:  # a weight, kept float behind its own Q/DQ pair
            axis = next(a.i for a in node.attribute if a.name == "axis")
            assert scale.ndim == 1 and scale.shape[0] == inits[node.input[0]].shape[axis] > 1, node.name
        else:
            assert scale.ndim == 0, node.name
            assert producer.get(node.input[0]) is None or producer[node.input[0]].op_type not in WEIGHT_OPS
    quantized = {n.name for n in graph.node
                 if n.op_type in WEIGHT_OPS and all(producer.get(i) is not None and producer[i].op_type ==
                                                    "DequantizeLinear" for i in n.input[:2])}
    assert quantized == set(weight_nodes(source, WEIGHT_OPS))
    floats = [n for n in graph.node if n.op_type in ("LayerNormalization", "Softmax", "Erf", "Tanh")]
    assert all(getattr(producer.get(i), "op_type", None) != "DequantizeLinear" for n in floats for i in n.input)


def test_qdq_model_is_tensorrts_int8_and_close_to_fp32_on_cpu(tmp_path, trained_onnx, jigsaw_csv):
    from export.ort import ort_session

    qdq = _qdq(trained_onnx, jigsaw_csv, tmp_path)
    assert qdq.path == tmp_path / QDQ_FILE
    _assert_tensorrt_qdq(qdq.path, trained_onnx / "model.onnx")
    assert qdq.verdict["passed"] and qdq.verdict["drop"] <= 0.005
    assert qdq.record["nodes_quantized"] == len(weight_nodes(trained_onnx / "model.onnx")) == 14
    assert qdq.record["calibration_samples"] == 64 and qdq.guard.baseline > 0.6
    # it runs on ONNX Runtime CPU, and its probabilities on the guard rows stay near fp32's
    assert ort_session(qdq.path).get_inputs()[0].name == "input_ids"
    from export.quantize import onnx_probs

    fp32 = onnx_probs(trained_onnx / "model.onnx", qdq.guard.encoded, cpu=True)
    assert qdq.probs.shape == fp32.shape == (len(qdq.guard.data.texts), len(LABELS))
    assert 0 < np.max(np.abs(qdq.probs - fp32)) < 0.01


def test_convolutions_are_quantized_per_output_channel(tmp_path, tiny_bert_dir, jigsaw_csv):
    from export.onnx import OnnxExportConfig, export_onnx

    cnn = export_onnx(student_artifact(tmp_path / "cnn", "textcnn", tiny_bert_dir),
                      OnnxExportConfig(out=str(tmp_path / "cnn-onnx"))).artifact
    qdq = _qdq(cnn, jigsaw_csv, tmp_path, max_auc_drop=0.5)  # untrained: only the graph's form is checked
    _assert_tensorrt_qdq(qdq.path, cnn / "model.onnx")
    graph, _, producer = _graph(qdq.path)
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert convs and all(producer[n.input[1]].op_type == "DequantizeLinear" for n in convs)


def test_the_guard_refuses_a_model_int8_breaks(tmp_path, jigsaw_csv):
    fragile = fixtures.write_fragile_onnx_artifact(tmp_path / "fragile")
    with pytest.raises(UserError) as exc:
        _qdq(fragile, jigsaw_csv, tmp_path)
    message = str(exc.value)
    assert "\n" not in message and message.startswith("int8 loses too much accuracy")
    assert "int8 Q/DQ on ONNX Runtime CPU (drop 0.4" in message and "no engine was built" in message
