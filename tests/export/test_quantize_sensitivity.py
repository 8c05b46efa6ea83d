"""Node sensitivity: the node int8 breaks is ranked first, kept in float by the guard's exclusion loop
(bounded), and a user's --exclude-nodes are honoured and checked."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from compress.artifact import read_info
from compress.errors import ConfigError, UserError
from export import quantize as q
from export import quantize_sensitivity as qs
from export.quantize import QuantizeConfig, quantize
from export.runtime import load
from modcompress.cli import compress_main as main
from tests import fixtures

FRAGILE = fixtures.FRAGILE_NODE
TEXTS = fixtures.synthetic_rows(48, seed=3)[0]


@pytest.fixture(scope="module")
def fragile(tmp_path_factory):
    """The onnx artifact whose node ``dense1`` breaks under int8 (fp32 validation macro ROC-AUC ~0.93)."""
    return fixtures.write_fragile_onnx_artifact(tmp_path_factory.mktemp("fragile") / "fragile")


def _config(mode, csv, out, **kw):
    return QuantizeConfig(mode=mode, data=str(csv), out=str(out), calibration_samples=64, **kw)


@pytest.mark.parametrize("mode", ["int8-dynamic", "int8-static"])
def test_the_fragile_node_fails_the_guard_and_the_old_fallbacks(tmp_path, fragile, jigsaw_csv, mode):
    with pytest.raises(UserError) as exc:
        quantize(fragile, _config(mode, jigsaw_csv, tmp_path / "q", max_excluded=0))
    message = str(exc.value)
    assert "requested drop 0.4" in message and "float-head" in message and "+exclude-" not in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("mode", "sensitivity"), [("int8-dynamic", "off"), ("int8-static", "output"),
                                                   ("int8-dynamic", "metric")])
def test_the_fragile_node_is_ranked_first_and_excluded(tmp_path, fragile, jigsaw_csv, mode, sensitivity):
    out = quantize(fragile, _config(mode, jigsaw_csv, tmp_path / "q", sensitivity=sensitivity))
    info = read_info(out, kinds=["quantized"])
    ranking = info.extra["sensitivity"]["ranking"]
    assert ranking[0]["node"] == FRAGILE and ranking[0]["op"] == "MatMul"
    assert ranking[0]["error"] > 0.2 and all(r["error"] < 0.02 for r in ranking[1:])  # the others are harmless
    assert info.extra["sensitivity"]["why"] == ("the first attempt failed the guard" if sensitivity == "off"
                                               else "requested (--sensitivity)")
    assert info.extra["sensitivity"]["measure"] == ("metric" if sensitivity == "metric" else "output")
    if sensitivity == "metric":
        assert ranking[0]["drop"] > 0.3 and all(r["drop"] < 0.02 for r in ranking[1:])
    guard = info.extra["guard"]
    assert [a["name"] for a in guard["attempts"]] == ["requested", "requested+exclude-1"]
    assert [a["passed"] for a in guard["attempts"]] == [False, True]
    assert guard["attempts"][0]["drop"] > 0.3 and guard["attempts"][1]["drop"] <= 0.005
    assert info.extra["quantization"]["nodes_excluded"] == [FRAGILE]
    assert info.extra["quantization"]["excluded"] == [{"node": FRAGILE, "op": "MatMul", "why": "guard"}]
    import onnx

    ops = {n.name: n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert ops[FRAGILE] == "MatMul"  # still float; the other weight ops went int8
    assert {"MatMulInteger", "DequantizeLinear"} & set(ops.values())
    np.testing.assert_allclose(load(out).predict(TEXTS), load(fragile).predict(TEXTS), atol=0.02)


def test_exclude_nodes_keeps_the_users_nodes_in_float_in_every_attempt(tmp_path, fragile, jigsaw_csv):
    out = quantize(fragile, _config("int8-dynamic", jigsaw_csv, tmp_path / "q", sensitivity="output",
                                    exclude_nodes=(FRAGILE, "dense2")))
    info = read_info(out)
    assert [a["name"] for a in info.extra["guard"]["attempts"]] == ["requested"]
    assert info.extra["quantization"]["excluded"] == [{"node": FRAGILE, "op": "MatMul", "why": "user"},
                                                      {"node": "dense2", "op": "MatMul", "why": "user"}]
    assert {r["node"] for r in info.extra["sensitivity"]["ranking"]} == {"embed", "classifier"}  # not ranked


def test_unknown_exclude_nodes_are_one_line_and_write_nothing(tmp_path, fragile, jigsaw_csv):
    with pytest.raises(ConfigError) as exc:
        quantize(fragile, _config("int8-static", jigsaw_csv, tmp_path / "q", exclude_nodes=(FRAGILE, "nope", "x")))
    assert "\n" not in str(exc.value)
    assert str(exc.value).startswith("exclude_nodes: no node named nope, x in model.onnx (13 nodes, e.g. embed, ")
    assert list(tmp_path.iterdir()) == []


def test_torch_int8_exclude_nodes_names_modules(tmp_path, tiny_teacher):
    kept = "bert.encoder.layer.0.attention.self.query"
    out = quantize(tiny_teacher, QuantizeConfig(mode="torch-int8-dynamic", out=str(tmp_path / "t"),
                                                exclude_nodes=(kept,)))
    quant = read_info(out).extra["quantization"]
    assert kept not in quant["modules"] and "bert.encoder.layer.0.attention.self.key" in quant["modules"]
    assert quant["excluded"] == [{"node": kept, "op": "Linear", "why": "user"}]
    with pytest.raises(ConfigError, match="no node named bert.nope in the nn.Linear / nn.LSTM modules"):
        quantize(tiny_teacher, QuantizeConfig(mode="torch-int8-dynamic", out=str(tmp_path / "u"),
                                              exclude_nodes=("bert.nope",)))
    assert not (tmp_path / "u").exists()


def test_the_exclusion_loop_never_keeps_more_than_max_excluded(tmp_path, fragile, jigsaw_csv, monkeypatch):
    labels = q.load_guard_data(str(jigsaw_csv), None, list(fixtures.JIGSAW_LABELS), {}, 0.1, 0, None).labels

    def fake(path, encoded):  # fp32 ranks the labels perfectly, every candidate is noise: nothing passes
        if "attempt" not in str(path):
            return labels * 0.8 + 0.1
        return np.random.default_rng(len(str(path))).random(labels.shape).astype(np.float32)

    monkeypatch.setattr(q, "onnx_probs", fake)
    with pytest.raises(UserError) as exc:
        quantize(fragile, _config("int8-static", jigsaw_csv, tmp_path / "q", max_excluded=3, per_channel=False))
    message = str(exc.value)
    for k in (1, 2, 3):
        assert f"requested+exclude-{k} drop" in message
    assert "exclude-4" not in message and "per-channel drop" in message  # then the old fallbacks, in order
    assert message.index("exclude-3") < message.index("per-channel drop")
    assert list(tmp_path.iterdir()) == []


def test_exclusion_attempts_are_bounded_and_skip_harmless_nodes():
    first = q.Attempt("requested", per_channel=True)
    ranking = [{"node": "a", "error": 0.5}, {"node": "b", "error": 0.0}, {"node": "c", "error": 0.1},
               {"node": "d", "error": 0.05}]
    attempts = q.exclusion_attempts(first, ranking, max_excluded=2)
    assert [(a.name, a.exclude) for a in attempts] == [("requested+exclude-1", ("a",)),
                                                       ("requested+exclude-2", ("a", "c"))]
    assert all(a.per_channel for a in attempts)
    assert len(q.exclusion_attempts(first, ranking, max_excluded=8)) == 3
    assert q.exclusion_attempts(first, ranking, max_excluded=0) == []


def test_sensitivity_nodes_bounds_the_ranking_to_the_biggest_weights(tmp_path, fragile, jigsaw_csv):
    out = quantize(fragile, _config("int8-dynamic", jigsaw_csv, tmp_path / "q", sensitivity="output",
                                    sensitivity_nodes=2))
    sensitivity = read_info(out).extra["sensitivity"]
    assert sensitivity["candidates"] == 4 and sensitivity["ranked"] == 2 and sensitivity["bound"] == 2
    assert [r["node"] for r in sensitivity["ranking"]] == [FRAGILE, "embed"]  # embed 546 weights, dense1 49


def test_quantizable_nodes_follow_the_mode(fragile):
    path = fragile / "model.onnx"
    dynamic = qs.quantizable_nodes(path, q.DYNAMIC_OPS)
    assert [(n.name, n.op, n.weights) for n in dynamic] == [
        ("embed", "Gather", 546), (FRAGILE, "MatMul", 49), ("dense2", "MatMul", 49), ("classifier", "MatMul", 42)]
    static = {n.name for n in qs.quantizable_nodes(path, q.static_op_types(weight_ops_only=False))}
    assert static == {"embed", FRAGILE, "dense2", "classifier", "mask_mul", "relu1", "relu2", "classifier_bias"}
    assert [n.name for n in qs.quantizable_nodes(path, q.static_op_types(weight_ops_only=True))] == [
        FRAGILE, "dense2", "classifier"]


def test_quantizable_nodes_skip_integer_shape_arithmetic(trained_onnx):
    import onnx

    path = trained_onnx / "model.onnx"
    inferred = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    graph = inferred.graph
    integer = {v.name for v in (*graph.input, *graph.value_info) if v.type.tensor_type.elem_type == onnx.TensorProto.INT64}
    integer |= {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.INT64}
    shape_ops = {n.name for n in graph.node if n.op_type in ("Gather", "Mul", "Concat") and all(i in integer for i in n.input)}
    embeddings = {n.name for n in graph.node if n.op_type == "Gather" and n.input[0] in {i.name for i in graph.initializer}}
    assert shape_ops and embeddings  # the torch export computes shapes with int64 Gather / Mul / Concat
    for ops in (q.DYNAMIC_OPS, q.static_op_types(weight_ops_only=False)):
        nodes = qs.quantizable_nodes(path, ops)
        names = {n.name for n in nodes}
        assert not names & shape_ops and embeddings <= {n.name for n in nodes if n.op == "Gather"}
        assert nodes[0].op == "Gather" and nodes[0].weights == max(n.weights for n in nodes)  # word embeddings
        assert len(names) == len(nodes)


def test_calibration_is_cached_once_per_run(tmp_path, fragile):
    if not q.calibration_cache_supported():
        pytest.skip("this onnxruntime's quantize_static has no calibration cache")
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(str(fragile / "tokenizer"))(TEXTS, truncation=True, max_length=32)["input_ids"]
    src, cache = fragile / "model.onnx", tmp_path / "ranges.json"

    def static(name, reader_ids, calibration_cache=None):
        q.int8_static_onnx(src, tmp_path / name, q.TextCalibrationReader(reader_ids), "minmax", True, False,
                           calibration_cache=calibration_cache)
        return (tmp_path / name).read_bytes()

    fresh = static("fresh.onnx", ids)
    assert static("first.onnx", ids, cache) == fresh and cache.is_file()
    # a later call reads the cached ranges: its own (different) texts are not calibrated on
    assert static("cached.onnx", ids[:3], cache) == fresh
    assert static("other.onnx", ids[:3]) != fresh


def test_config_checks():
    with pytest.raises(ConfigError, match="sensitivity: must be one of off, output, metric"):
        QuantizeConfig(mode="int8-dynamic", data="x", sensitivity="fast")
    with pytest.raises(ConfigError, match="sensitivity: ranks the nodes ONNX Runtime quantizes to int8; --mode fp16"):
        QuantizeConfig(mode="fp16", data="x", sensitivity="output")
    with pytest.raises(ConfigError, match="sensitivity: measures each node on real texts"):
        QuantizeConfig(mode="int8-dynamic", sensitivity="output")
    with pytest.raises(ConfigError, match="sensitivity_nodes: must be >= 1"):
        QuantizeConfig(mode="int8-dynamic", sensitivity_nodes=0)
    with pytest.raises(ConfigError, match="max_excluded: must be >= 0"):
        QuantizeConfig(mode="int8-dynamic", max_excluded=-1)
    with pytest.raises(ConfigError, match="exclude_nodes: empty node name"):
        QuantizeConfig(mode="int8-dynamic", exclude_nodes=("a", " "))
    with pytest.raises(ConfigError, match="exclude_nodes: bf16"):
        QuantizeConfig(mode="bf16", exclude_nodes=("a",))
    assert QuantizeConfig(mode="int8-dynamic", exclude_nodes="a,b").exclude_nodes == ("a", "b")


def test_cli_reports_the_ranking_and_the_excluded_nodes(tmp_path, fragile, jigsaw_csv, capsys):
    args = ["quantize", str(fragile), "--mode", "int8-dynamic", "--data", str(jigsaw_csv), "--no-tracking"]
    assert main([*args, "--out", str(tmp_path / "a"), "--sensitivity", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["sensitivity"]["ranking"][0]["node"] == FRAGILE and payload["chosen"] == "requested+exclude-1"
    assert payload["excluded"] == [{"node": FRAGILE, "op": "MatMul", "why": "guard"}]
    assert payload["sensitivity"]["inputs"] == q.PROBE_TEXTS  # of the 128 calibration texts (the default)
    assert main([*args, "--out", str(tmp_path / "b"), "--exclude-nodes", f"{FRAGILE}, dense2"]) == 0
    text = capsys.readouterr().out
    assert "kept in float: dense1 (MatMul, user), dense2 (MatMul, user)" in text
    assert "most sensitive nodes" not in text  # the guard passed: nothing was ranked
    assert main([*args, "--out", str(tmp_path / "c")]) == 0
    text = capsys.readouterr().out
    assert re.search(r"most sensitive nodes \(output, 4 of 4 ranked in .*\): dense1 \(MatMul\) 0\.[1-9]", text)
    assert "kept in float: dense1 (MatMul, guard)" in text
