"""The transformer fusion before int8-dynamic: which models get it, what it records, the fall-backs, the guard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from compress.artifact import read_info
from export import optimize
from export.onnx import OnnxExportConfig, export_onnx
from export.optimize import Fusion, fuse_before_quantization, fuse_transformer, fusion_plan, read_hf_config
from export.quantize import QuantizeConfig, quantize
from export.runtime import load
from tests.export.helpers import TRICKY_TEXTS, student_artifact

TEXTS = [t for t in TRICKY_TEXTS if t.strip()]
BERT = {"model_type": "bert", "num_attention_heads": 2, "hidden_size": 32}


def _ops(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


@pytest.fixture(scope="module")
def plain_onnx(tmp_path_factory, tiny_teacher) -> Path:
    """The tiny BERT teacher exported unfused (what ``compress quantize`` exports first)."""
    return export_onnx(tiny_teacher, OnnxExportConfig(out=str(tmp_path_factory.mktemp("fuse") / "onnx"))).artifact


def _vocab(artifact: Path) -> tuple[int, int]:
    extra = read_info(artifact).extra
    return extra["vocab_size"], extra["pad_id"]


def test_only_bert_family_encoders_are_fused_and_every_skip_says_why():
    plan = fusion_plan("hf", BERT)
    assert plan.fuse and (plan.num_heads, plan.hidden_size, plan.model_type) == (2, 32, "bert")
    distil = fusion_plan("distilbert", {"model_type": "distilbert", "n_heads": 4, "dim": 64})
    assert distil.fuse and (distil.num_heads, distil.hidden_size) == (4, 64)
    cnn = fusion_plan("textcnn", None)
    assert not cnn.fuse and cnn.reason == "textcnn is not a transformer encoder: no attention to fuse"
    gpt = fusion_plan("hf", {"model_type": "gpt2"})
    assert not gpt.fuse and "'gpt2' is not BERT-family" in gpt.reason


def test_a_tiny_bert_is_fused_and_its_logits_do_not_move(plain_onnx, tmp_path):
    fusion = fuse_transformer(plain_onnx / "model.onnx", tmp_path / "fused.onnx",
                              fusion_plan("hf", read_hf_config(plain_onnx)), *_vocab(plain_onnx))
    assert fusion.applied and fusion.reason == "BERT-family encoder (bert)"
    assert fusion.fused_operators["Attention"] == 2 and fusion.fused_operators["SkipLayerNormalization"] == 4
    assert fusion.max_abs_diff is not None and fusion.max_abs_diff <= optimize.FUSION_ATOL
    ops = _ops(tmp_path / "fused.onnx")
    assert ops.count("Attention") == 2 and "Softmax" not in ops


@pytest.mark.parametrize("failure", ["raises", "no attention", "logits move", "does not run"])
def test_a_failed_fusion_falls_back_to_the_unfused_graph(plain_onnx, tmp_path, monkeypatch, failure):
    src, dst = plain_onnx / "model.onnx", tmp_path / "fused.onnx"
    if failure == "raises":
        monkeypatch.setattr(optimize, "run_fusion", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    elif failure == "no attention":
        monkeypatch.setattr(optimize, "run_fusion", lambda s, d, p: {"SkipLayerNormalization": 4})
    elif failure == "logits move":
        monkeypatch.setattr(optimize, "max_logit_change", lambda *a: 0.5)
    else:
        monkeypatch.setattr(optimize, "max_logit_change", lambda *a: (_ for _ in ()).throw(ValueError("no kernel")))
    fusion = fuse_transformer(src, dst, fusion_plan("hf", BERT), *_vocab(plain_onnx))
    assert not fusion.applied and dst.read_bytes() == src.read_bytes()
    assert fusion.reason == {
        "raises": "fusion failed (RuntimeError: boom); quantized unfused",
        "no attention": "no attention layer matched ONNX Runtime's BERT patterns (fused: "
                        "{'SkipLayerNormalization': 4}); quantized unfused",
        "logits move": "fused graph changed the logits by 0.5 (> 0.001); quantized unfused",
        "does not run": "the fused graph did not run (ValueError: no kernel); quantized unfused",
    }[failure]


def test_fusion_runs_only_before_int8_dynamic_with_optimize_auto_on_an_unfused_graph(plain_onnx, tmp_path,
                                                                                       tiny_teacher):
    src = plain_onnx / "model.onnx"
    vocab = _vocab(plain_onnx)
    for mode, setting, reason in (
            ("int8-dynamic", "none", "--optimize none requested: the graph is quantized as exported"),
            ("int8-static", "auto", "int8-static: fusion runs before int8-dynamic only (the QDQ quantizer leaves a "
                                    "fused Attention in fp32)")):
        path, fusion = fuse_before_quantization(src, plain_onnx, "hf", mode, setting, *vocab, tmp_path)
        assert path == src and fusion == Fusion(False, reason)
    o2 = export_onnx(tiny_teacher, OnnxExportConfig(out=str(tmp_path / "o2"), optimize="O2")).artifact
    path, fusion = fuse_before_quantization(o2 / "model.onnx", o2, "hf", "int8-dynamic", "auto", *vocab, tmp_path)
    assert path == o2 / "model.onnx" and not fusion.applied
    assert fusion.reason == "the graph is already fused (exported with --optimize O2)"
    assert fusion.fused_operators["Attention"] == 2
    path, fusion = fuse_before_quantization(src, plain_onnx, "hf", "int8-dynamic", "auto", *vocab, tmp_path)
    assert path == tmp_path / "fused.onnx" and fusion.applied


def test_compress_quantize_fuses_a_bert_before_int8_dynamic_within_the_guard(tmp_path, trained_teacher, jigsaw_csv):
    out = quantize(trained_teacher, QuantizeConfig(mode="int8-dynamic", data=str(jigsaw_csv), out=str(tmp_path / "q")))
    info = read_info(out, kinds=["quantized"])
    fusion = info.extra["fusion"]
    assert fusion["applied"] and fusion["model_type"] == "bert" and fusion["fused_operators"]["Attention"] == 2
    assert info.extra["onnx_export"]["optimize"] == "none"  # exported unfused, fused by the fusion step
    ops = _ops(out / "model.onnx")
    assert ops.count("QAttention") == 2 and "MatMulInteger" in ops and "Softmax" not in ops
    guard = info.extra["guard"]
    assert guard["chosen"] == "requested" and guard["attempts"][0]["drop"] <= 0.005  # default --max-auc-drop
    probs, fp32 = load(out).predict(TEXTS), load(trained_teacher, "torch").predict(TEXTS)
    assert np.abs(probs - fp32).max() < 0.05


def test_compress_quantize_records_why_a_textcnn_is_not_fused(tmp_path, tiny_bert_dir):
    student = student_artifact(tmp_path / "cnn", "textcnn", tiny_bert_dir)
    out = quantize(student, QuantizeConfig(mode="int8-dynamic", out=str(tmp_path / "q")))
    fusion = read_info(out).extra["fusion"]
    assert fusion == {"applied": False, "reason": "textcnn is not a transformer encoder: no attention to fuse",
                      "model_type": None, "fused_operators": {}, "max_abs_diff": None}
