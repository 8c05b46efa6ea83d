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


# ----------------------------------------------------------------------------------------------
# --with-tokenizer: model_with_tokenizer.onnx, strings in


def test_with_tokenizer_adds_a_string_model_checked_against_hf(text_onnx, tiny_teacher):
    from export.wordpiece_graph import CHECK_TEXTS, CONTRIB, TEXT_MODEL_FILE

    model = onnx.load(str(text_onnx / TEXT_MODEL_FILE))
    assert [i.name for i in model.graph.input] == ["text"] and [o.name for o in model.graph.output] == ["logits"]
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.STRING
    assert any(o.domain == CONTRIB for o in model.opset_import)
    ids_model = onnx.load(str(text_onnx / "model.onnx"))  # the token-id model is as before
    assert [i.name for i in ids_model.graph.input] == ["input_ids", "attention_mask"]
    assert not any(o.domain == CONTRIB for o in ids_model.opset_import)

    record = read_info(text_onnx).extra["text_model"]
    assert record["file"] == TEXT_MODEL_FILE and record["input"] == "text" and record["output"] == "logits"
    check = record["validation"]
    assert check["token_ids"] == {"texts": len(CHECK_TEXTS), "mismatches": 0, "examples": []}
    assert check["sources"] == ["built-in"] and check["probability_texts"] == len(CHECK_TEXTS)
    assert 0 <= check["max_abs_diff_probabilities"] <= check["atol"] == 1e-5

    texts = [*TRICKY_TEXTS, *(t.upper() for t in TRICKY_TEXTS), "a\x00b"]
    np.testing.assert_allclose(load(text_onnx, "ort-text").predict(texts), load(text_onnx, "ort").predict(texts),
                               atol=1e-5)
    np.testing.assert_allclose(load(text_onnx, "ort-text").predict(texts), load(tiny_teacher).predict(texts),
                               atol=1e-4)


def test_token_id_mismatches_fail_the_export_or_are_recorded_with_their_texts(tmp_path, tiny_teacher,
                                                                              monkeypatch):
    from export import wordpiece_graph

    real = wordpiece_graph.hf_character_strings

    def no_capitals(backend):  # a broken character map: capitals stay capitals in the graph
        return {c: s for c, s in real(backend).items() if not ("A" <= c <= "Z")}

    monkeypatch.setattr(wordpiece_graph, "hf_character_strings", no_capitals)
    texts = tmp_path / "texts.txt"
    texts.write_text("the article is good\nTHE ARTICLE IS GOOD\n")
    config = OnnxExportConfig(out=str(tmp_path / "out"), with_tokenizer=True, tokenizer_texts=str(texts))
    with pytest.raises(onnx_mod.TokenizerMismatchError, match=r"on \d+ of \d+ texts, e\.g\. text 0 'you idiot, i "
                                                              r"will KILL you!!!'.*--allow-tokenizer-mismatches"):
        export_onnx(tiny_teacher, config)
    assert not (tmp_path / "out").exists()

    kept = export_onnx(tiny_teacher, OnnxExportConfig(out=str(tmp_path / "out"), with_tokenizer=True,
                                                      tokenizer_texts=str(texts), allow_tokenizer_mismatches=True))
    report = read_info(kept.artifact).extra["text_model"]["validation"]
    assert report["sources"] == ["built-in", str(texts)]
    mismatched = {e["text"] for e in report["token_ids"]["examples"]}
    assert "THE ARTICLE IS GOOD" in mismatched and "the article is good" not in mismatched
    example = next(e for e in report["token_ids"]["examples"] if e["text"] == "THE ARTICLE IS GOOD")
    assert example["hf"] != example["graph"]
    assert report["max_abs_diff_probabilities"] <= 1e-5  # measured on the texts whose ids match
    # ... and it would see other ids: on the mismatched text the two models disagree
    from transformers import AutoTokenizer

    from export.ort import ort_session
    from export.wordpiece_graph import TEXT_MODEL_FILE, probabilities_diff

    diff = probabilities_diff(ort_session(kept.artifact / TEXT_MODEL_FILE, custom_ops=True),
                              ort_session(kept.artifact / "model.onnx"),
                              AutoTokenizer.from_pretrained(kept.artifact / "tokenizer"), ["THE ARTICLE IS GOOD"], 32)
    assert diff > 1e-5


def test_with_tokenizer_options_need_the_flag_and_a_wordpiece_tokenizer(tmp_path, tiny_teacher, capsys):
    with pytest.raises(ConfigError, match="add --with-tokenizer"):
        OnnxExportConfig(tokenizer_texts="x.csv")
    for missing in ("missing.csv", "missing.txt"):
        assert main(["onnx", str(tiny_teacher), "--out", str(tmp_path / "x"), "--with-tokenizer",
                     "--tokenizer-texts", str(tmp_path / missing)]) == 2
        assert missing in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_cli_with_tokenizer_reports_the_check(tmp_path, tiny_teacher, capsys):
    assert main(["onnx", str(tiny_teacher), "--out", str(tmp_path / "cli"), "--with-tokenizer"]) == 0
    out = capsys.readouterr().out
    assert "model_with_tokenizer.onnx (strings in, tokenizer in the graph): token ids differ from Hugging Face's " \
           "on 0 of 14 texts" in out


@pytest.mark.slow
def test_with_tokenizer_on_every_olid_tweet(tmp_path):
    """A BERT whose WordPiece vocabulary is trained on OLID, exported with --tokenizer-texts OLID."""
    import shutil

    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from compress.artifact import ArtifactInfo, atomic_artifact_dir, write_info
    from export.wordpiece_graph import CHECK_TEXTS
    from tests import fixtures

    if fixtures.olid_path() is None:
        pytest.skip("the shared OLID file (shared/data/olid) is not on this machine")
    vocab = fixtures.write_wordpiece_tokenizer(tmp_path / "vocab", fixtures.olid_texts(), vocab_size=3000)

    torch.manual_seed(0)
    config = BertConfig(vocab_size=3000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, num_labels=3)
    with atomic_artifact_dir(tmp_path / "teacher") as tmp:
        BertForSequenceClassification(config).save_pretrained(tmp / "model")
        shutil.copytree(vocab, tmp / "tokenizer")
        write_info(tmp, ArtifactInfo(kind="teacher", architecture="hf", labels=["off", "tin", "grp"], max_length=128))
    result = export_onnx(tmp_path / "teacher", OnnxExportConfig(
        out=str(tmp_path / "onnx"), with_tokenizer=True, tokenizer_texts=str(fixtures.olid_path())))
    check = result.text_model["validation"]
    assert check["token_ids"]["texts"] == 13240 + len(CHECK_TEXTS) and check["token_ids"]["mismatches"] == 0
    assert check["probability_texts"] == 512 and check["max_abs_diff_probabilities"] <= 1e-5
    tweets = fixtures.olid_texts()[:300]
    np.testing.assert_allclose(load(result.artifact, "ort-text").predict(tweets),
                               load(result.artifact, "ort").predict(tweets), atol=1e-5)
