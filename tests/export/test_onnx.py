"""ONNX export: named dynamic axes, validation against PyTorch always runs, faithful numbers, clean errors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from compress.artifact import read_info
from compress.errors import ArtifactError, ConfigError
from export import onnx as onnx_mod
from export.onnx import AtolError, OnnxExportConfig, OutputNameError, ShapeError, export_onnx
from export.runtime import load
from modcompress.cli import export_main as main
from tests.export.helpers import LABELS, TRICKY_TEXTS, student_artifact


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_hf_export_has_named_dynamic_axes_and_records_validation(tmp_path, tiny_teacher):
    result = export_onnx(tiny_teacher, OnnxExportConfig(out=str(tmp_path / "onnx")))
    model = onnx.load(str(result.artifact / "model.onnx"))
    assert [i.name for i in model.graph.input] == ["input_ids", "attention_mask"]  # no token_type_ids
    assert all(_dims(i) == ["batch_size", "sequence_length"] for i in model.graph.input)
    assert [o.name for o in model.graph.output] == ["logits"]
    assert _dims(model.graph.output[0]) == ["batch_size", len(LABELS)]
    assert max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx")) >= 17

    info = read_info(result.artifact, kinds=["onnx"])
    assert info.labels == LABELS and info.thresholds == [0.5] * 6 and info.hierarchy == {"severe_toxic": "toxic"}
    assert info.parent == str(tiny_teacher.resolve()) and info.extra["exporter"] == "optimum-onnx"
    validation = info.extra["validation"]
    cases = {(c["batch"], c["length"]) for c in validation["cases"]}
    assert cases == {(b, n) for b in (1, 3, 8) for n in (5, 17, 32)}  # 32 = the artifact's max_length
    assert validation["max_abs_diff"] == pytest.approx(result.max_abs_diff)
    assert 0 <= validation["max_abs_diff"] <= validation["atol"] == 1e-4
    assert (result.artifact / "tokenizer" / "vocab.txt").is_file()


def test_ort_matches_pytorch_on_real_texts(tmp_path, tiny_teacher):
    out = export_onnx(tiny_teacher, OnnxExportConfig(out=str(tmp_path / "onnx"))).artifact
    torch_probs = load(tiny_teacher, "torch").predict(TRICKY_TEXTS)
    ort_probs = load(out).predict(TRICKY_TEXTS)
    assert ort_probs.shape == (len(TRICKY_TEXTS), 6) and ort_probs.dtype == np.float32
    np.testing.assert_allclose(ort_probs, torch_probs, atol=1e-5)


def test_optimize_o2_fuses_transformer_ops_and_still_validates(tmp_path, tiny_teacher):
    result = export_onnx(tiny_teacher, OnnxExportConfig(out=str(tmp_path / "o2"), optimize="O2"))
    fused = read_info(result.artifact).extra["fused_operators"]
    assert fused.get("Attention", 0) == 2 and fused.get("SkipLayerNormalization", 0) > 0  # 2 layers
    assert result.max_abs_diff <= 1e-4


@pytest.mark.parametrize("architecture", ["distilbert", "textcnn", "bilstm"])
def test_every_registered_student_exports_and_validates(tmp_path, tiny_bert_dir, architecture):
    student = student_artifact(tmp_path / architecture, architecture, tiny_bert_dir)
    for optimize in ("none", "O2"):
        result = export_onnx(student, OnnxExportConfig(out=str(tmp_path / f"{architecture}-{optimize}"),
                                                       optimize=optimize))
        assert result.max_abs_diff <= 1e-4
        assert result.exporter == ("optimum-onnx" if architecture == "distilbert" else "torch.onnx")
    # ragged batches through the runtime: padding must not change a text's output
    torch_pred = load(student, "torch", max_batch_size=4).predict(TRICKY_TEXTS)
    ort_pred = load(tmp_path / f"{architecture}-none", max_batch_size=3).predict(TRICKY_TEXTS)
    np.testing.assert_allclose(ort_pred, torch_pred, atol=1e-5)


def test_registry_meta_every_student_is_covered():
    from compress.models import STUDENTS

    tested = {"distilbert", "textcnn", "bilstm"}  # the parametrize list above
    assert set(STUDENTS) <= tested, f"students without an export test: {sorted(set(STUDENTS) - tested)}"


def test_atol_error_names_the_numbers_and_writes_nothing(tmp_path, tiny_bert_dir, monkeypatch):
    import torch

    student = student_artifact(tmp_path / "cnn", "textcnn", tiny_bert_dir)
    real_export = onnx_mod.export_torch

    def export_perturbed(model, path, opset, vocab_size):
        with torch.no_grad():
            model.classifier.bias.add_(0.01)  # the ONNX file no longer matches the model it is checked against
        path = real_export(model, path, opset, vocab_size)
        with torch.no_grad():
            model.classifier.bias.sub_(0.01)
        return path

    monkeypatch.setattr(onnx_mod, "export_torch", export_perturbed)
    with pytest.raises(AtolError, match=r"differ from PyTorch by up to 0\.01.*atol 0\.0001.*batch 1, length 5"):
        export_onnx(student, OnnxExportConfig(out=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_shape_and_name_errors(tmp_path, tiny_bert_dir, monkeypatch):
    import torch

    student = student_artifact(tmp_path / "cnn", "textcnn", tiny_bert_dir)
    real_export = onnx_mod.export_torch

    class DropsALabel(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids, attention_mask)[:, :-1]

    monkeypatch.setattr(onnx_mod, "export_torch", lambda m, p, o, v: real_export(DropsALabel(m), p, o, v))
    with pytest.raises(ShapeError, match=r"shape \(1, 5\) but PyTorch gives \(1, 6\)"):
        export_onnx(student, OnnxExportConfig(out=str(tmp_path / "out")))

    def renamed(model, path, opset, vocab_size):
        real_export(model, path, opset, vocab_size)
        graph = onnx.load(str(path))
        graph.graph.output[0].name = "scores"
        graph.graph.node[-1].output[0] = "scores"
        onnx.save(graph, str(path))
        return path

    monkeypatch.setattr(onnx_mod, "export_torch", renamed)
    with pytest.raises(OutputNameError, match="outputs are"):
        export_onnx(student, OnnxExportConfig(out=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


def test_bad_inputs_are_one_line_errors(tmp_path, tiny_teacher, capsys):
    with pytest.raises(ConfigError, match="opset"):
        OnnxExportConfig(opset=13)
    with pytest.raises(ConfigError, match="optimize"):
        OnnxExportConfig(optimize="O9")
    onnx_dir = export_onnx(tiny_teacher, OnnxExportConfig(out=str(tmp_path / "onnx"))).artifact
    with pytest.raises(ArtifactError, match="already ONNX"):
        export_onnx(onnx_dir)

    assert main(["onnx", str(tmp_path / "missing")]) == 2
    assert main(["onnx", str(tiny_teacher), "--opset", "11", "--out", str(tmp_path / "x")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(err) == 2 and "opset: must be >= 17" in err[1]
    assert not (tmp_path / "x").exists()


def test_cli_exports(tmp_path, tiny_teacher, capsys):
    assert main(["onnx", str(tiny_teacher), "--out", str(tmp_path / "cli"), "--json"]) == 0
    import json

    payload = json.loads(capsys.readouterr().out)
    assert payload["artifact"] == str(tmp_path / "cli") and payload["max_abs_diff"] <= payload["atol"]
    assert payload["cases"] == 9
