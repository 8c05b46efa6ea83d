"""Runtime: one Predictor interface over every artifact kind; backends picked by kind; clean errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from compress.cpu import physical_cores
from compress.errors import ArtifactError, ConfigError, UserError
from export.onnx import OnnxExportConfig, export_onnx
from export.ort import ort_session
from export.quantize import QuantizeConfig, quantize
from export.runtime import Predictor, load
from tests import fixtures
from tests.export.helpers import LABELS, TRICKY_TEXTS

TEXTS = fixtures.synthetic_rows(40, seed=3)[0] + TRICKY_TEXTS


@pytest.fixture(scope="module")
def kinds(tmp_path_factory, tiny_teacher):
    """One artifact of every kind the runtime serves (from the tiny teacher)."""
    root = tmp_path_factory.mktemp("kinds")
    onnx_dir = export_onnx(tiny_teacher, OnnxExportConfig(out=str(root / "onnx"))).artifact
    return {
        "teacher": tiny_teacher,
        "onnx": onnx_dir,
        "int8-dynamic": quantize(onnx_dir, QuantizeConfig(mode="int8-dynamic", out=str(root / "int8"))),
        "torch-int8-dynamic": quantize(tiny_teacher, QuantizeConfig(mode="torch-int8-dynamic", out=str(root / "ti8"))),
        "bf16": quantize(tiny_teacher, QuantizeConfig(mode="bf16", out=str(root / "bf16"))),
    }


@pytest.mark.parametrize("kind,backend", [("teacher", "torch"), ("onnx", "ort"), ("int8-dynamic", "ort"),
                                          ("torch-int8-dynamic", "torch-int8"), ("bf16", "torch-bf16")])
def test_auto_backend_by_kind_and_the_predictor_contract(kinds, kind, backend):
    predictor = load(kinds[kind], max_batch_size=4)
    assert isinstance(predictor, Predictor) and predictor.backend == backend
    assert predictor.labels == LABELS and predictor.max_batch_size == 4
    assert predictor.thresholds.dtype == np.float32 and predictor.thresholds.shape == (6,)
    assert predictor.name == kinds[kind].name
    probs = predictor.predict(TEXTS)
    assert probs.shape == (len(TEXTS), 6) and probs.dtype == np.float32
    assert ((probs >= 0) & (probs <= 1)).all()
    # length-sorted micro-batches with dynamic padding return rows in input order, as one-by-one does;
    # dynamic int8 quantizes activations with one scale per batch, so batch-mates move outputs a little
    one_by_one = np.concatenate([predictor.predict([t]) for t in TEXTS[:12]])
    atol = {"torch-bf16": 2e-2, "torch-int8": 2e-3}.get(backend, 2e-3 if kind == "int8-dynamic" else 1e-5)
    np.testing.assert_allclose(probs[:12], one_by_one, atol=atol)


def test_backends_agree_with_fp32(kinds):
    reference = load(kinds["teacher"], "torch").predict(TEXTS)
    np.testing.assert_allclose(load(kinds["onnx"]).predict(TEXTS), reference, atol=1e-5)
    np.testing.assert_allclose(load(kinds["teacher"], "torch-bf16").predict(TEXTS), reference, atol=2e-2)
    np.testing.assert_allclose(load(kinds["teacher"], "torch-int8").predict(TEXTS), reference, atol=2e-2)


def test_predict_batch_and_edge_cases(kinds):
    predictor = load(kinds["onnx"])
    ids, mask = np.array([[2, 10, 11, 3, 0]]), np.array([[1, 1, 1, 1, 0]])
    out = predictor.predict_batch(ids, mask)
    assert out.shape == (1, 6) and out.dtype == np.float32
    assert predictor.predict([]).shape == (0, 6)
    with pytest.raises(UserError, match="list of texts"):
        predictor.predict("one string")
    with pytest.raises(UserError, match="not a string"):
        predictor.predict(["ok", 3])


def test_baseline_runs_through_sklearn(tmp_path, jigsaw_csv):
    from compress.baseline import baseline, load_baseline_config

    artifact = baseline(load_baseline_config("tfidf", overrides=[
        f"data.data={jigsaw_csv}", f"out={tmp_path / 'tfidf'}", "tracking.enabled=false"])).artifact
    predictor = load(artifact)
    assert predictor.backend == "sklearn" and isinstance(predictor, Predictor)
    assert predictor.predict(TEXTS).shape == (len(TEXTS), 6)
    with pytest.raises(UserError, match="reads texts, not token ids"):
        predictor.predict_batch(np.zeros((1, 2), dtype=np.int64), np.ones((1, 2), dtype=np.int64))


def test_backend_mismatches_are_one_line_errors(kinds):
    with pytest.raises(ArtifactError, match="no model.onnx"):
        load(kinds["teacher"], "ort")
    with pytest.raises(ArtifactError, match="without a PyTorch model"):
        load(kinds["onnx"], "torch")
    with pytest.raises(ArtifactError, match="no model.plan"):
        load(kinds["onnx"], "tensorrt")
    with pytest.raises(ConfigError, match="backend"):
        load(kinds["onnx"], "openvino")


def test_gpu_backends_say_what_is_missing(kinds):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has the CUDA execution provider")
    for backend in ("ort-cuda", "ort-trt"):
        with pytest.raises(UserError) as exc:
            load(kinds["onnx"], backend)
        assert "\n" not in str(exc.value) and "modcompress[gpu]" in str(exc.value)


def test_ort_session_uses_physical_cores(kinds):
    session = ort_session(kinds["onnx"] / "model.onnx")
    options = session.get_session_options()
    assert options.intra_op_num_threads == physical_cores() and options.inter_op_num_threads == 1
    assert 1 <= physical_cores() <= 1024


def test_ort_sessions_sleep_between_operators_unless_asked_to_spin(kinds):
    entry = "session.intra_op.allow_spinning"
    assert ort_session(kinds["onnx"] / "model.onnx").get_session_options().get_session_config_entry(entry) == "0"
    spinning = ort_session(kinds["onnx"] / "model.onnx", spin=True)
    assert spinning.get_session_options().get_session_config_entry(entry) == "1"


def test_cpu_ort_caps_micro_batches_at_256_tokens_and_other_backends_do_not(kinds):
    from export.runtime import CPU_ORT_MAX_TOKENS

    ort_predictor = load(kinds["onnx"], "ort")
    assert ort_predictor.max_tokens == CPU_ORT_MAX_TOKENS == 256
    assert load(kinds["teacher"], "torch").max_tokens is None
    texts = ["word " * n for n in (3, 30, 7, 12, 25)]
    capped = ort_predictor.predict(texts)
    np.testing.assert_allclose(capped, dataclasses.replace(ort_predictor, max_tokens=None).predict(texts), atol=1e-5)
    calls = []
    ort_predictor.forward = lambda ids, mask, f=ort_predictor.forward: calls.append(ids.shape) or f(ids, mask)
    ort_predictor.max_tokens = 40
    ort_predictor.predict(texts)
    assert all(b * t <= 40 or b == 1 for b, t in calls) and len(calls) > 1


@pytest.mark.gpu
def test_ort_cuda_matches_cpu(kinds):
    reference = load(kinds["onnx"], "ort").predict(TEXTS)
    np.testing.assert_allclose(load(kinds["onnx"], "ort-cuda").predict(TEXTS), reference, atol=1e-4)


# ---------------------------------------------------------------------------------------------- auto: fp32 or bf16


@pytest.fixture
def auto_measures(monkeypatch, tmp_path):
    """auto not forced for inference, a CPU with bf16 hardware, a fresh measurement cache."""
    from compress import precision

    monkeypatch.delenv(precision.AUTO_INFERENCE_ENV, raising=False)
    monkeypatch.setenv("MODCOMPRESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(precision, "fast_bf16", lambda: True)
    return tmp_path / "cache" / "precision.json"


def _fake_probe(monkeypatch, fp32_s: float, bf16_s: float, diff: float = 1e-3) -> list:
    from compress.precision_probe import InferenceProbe

    shapes = []

    def measure(probe):
        shapes.append(probe.input_ids.shape)
        return fp32_s, bf16_s

    monkeypatch.setattr(InferenceProbe, "measure", measure)
    monkeypatch.setattr(InferenceProbe, "max_prob_diff", lambda probe: diff)
    return shapes


@pytest.mark.parametrize(("fp32_s", "bf16_s", "backend"), [(0.040, 0.010, "torch-bf16"), (0.010, 0.012, "torch")])
def test_auto_serves_a_teacher_in_the_precision_measured_faster(kinds, auto_measures, monkeypatch, fp32_s, bf16_s,
                                                                backend):
    shapes = _fake_probe(monkeypatch, fp32_s, bf16_s)
    predictor = load(kinds["teacher"], max_batch_size=64)
    assert predictor.backend == backend and predictor.source["backend"] == backend  # serve's instances load this
    choice = predictor.precision_choice
    assert choice["task"] == "inference" and choice["how"] == "measured" and "forward pass" in choice["reason"]
    assert shapes == [(32, 32)]  # (min(max batch, 32), min(max_length, 64))
    reference = load(kinds["teacher"], "torch").predict(TEXTS)
    np.testing.assert_allclose(predictor.predict(TEXTS), reference, atol=2e-2)
    again = load(kinds["teacher"], max_batch_size=64)  # measured once per machine / model / shape
    assert again.backend == backend and again.precision_choice["how"] == "cached" and len(shapes) == 1


def test_auto_keeps_fp32_when_bf16_moves_the_probabilities_too_much(kinds, auto_measures, monkeypatch):
    _fake_probe(monkeypatch, 0.040, 0.010, diff=0.05)
    predictor = load(kinds["teacher"])
    assert predictor.backend == "torch" and predictor.precision_choice["how"] == "accuracy"
    assert predictor.precision_choice["reason"] == ("auto -> fp32: bf16 forward pass 4.00x faster here, but it moves "
                                                    "probabilities by up to 0.05 (> 0.02)")


def test_auto_does_not_measure_without_bf16_hardware_or_when_forced(kinds, auto_measures, monkeypatch):
    from compress import precision

    shapes = _fake_probe(monkeypatch, 0.040, 0.010)
    monkeypatch.setattr(precision, "fast_bf16", lambda: False)
    assert load(kinds["teacher"]).precision_choice["how"] == "no-bf16-hardware"
    monkeypatch.setenv(precision.AUTO_INFERENCE_ENV, "bf16")
    forced = load(kinds["teacher"])
    assert forced.backend == "torch-bf16" and forced.precision_choice["how"] == "env" and shapes == []
    for explicit in ("torch", "torch-bf16"):  # explicit backends are served as asked, unmeasured
        assert load(kinds["teacher"], explicit).precision_choice is None
    assert load(kinds["onnx"]).precision_choice is None


def test_auto_measures_for_real_on_a_student_sized_model(kinds, auto_measures):
    predictor = load(kinds["teacher"], max_batch_size=4)
    choice = predictor.precision_choice
    assert choice["how"] in ("measured", "accuracy") and choice["fp32_ms"] > 0 and choice["bf16_ms"] > 0
    assert predictor.backend == ("torch-bf16" if choice["precision"] == "bf16" else "torch")
    assert choice["key"]["batch"] == [4, 32] and choice["key"]["task"] == "inference" and auto_measures.is_file()

def test_ort_text_runs_raw_strings_through_the_in_graph_tokenizer(text_onnx, kinds):
    from export.runtime import BACKENDS, StringPredictor

    assert "ort-text" in BACKENDS
    predictor = load(text_onnx, "ort-text", max_batch_size=4)
    assert isinstance(predictor, StringPredictor) and isinstance(predictor, Predictor)
    assert predictor.backend == "ort-text" and predictor.labels == LABELS and predictor.max_batch_size == 4
    assert load(text_onnx).backend == "ort"  # auto keeps tokenize-then-run; ort-text is asked for by name
    texts = [*TEXTS, "a\x00b", "nul\x00"]  # string operators stop at NUL: the predictor removes it, as HF does
    probs = predictor.predict(texts)
    assert probs.shape == (len(texts), 6) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, load(text_onnx, "ort").predict(texts), atol=1e-5)
    np.testing.assert_allclose(probs[:12], np.concatenate([predictor.predict([t]) for t in texts[:12]]), atol=1e-5)
    ids, mask = np.array([[2, 10, 11, 3, 0]]), np.array([[1, 1, 1, 1, 0]])
    np.testing.assert_allclose(predictor.predict_batch(ids, mask), load(text_onnx, "ort").predict_batch(ids, mask),
                               atol=1e-6)
    assert predictor.predict([]).shape == (0, 6)
    with pytest.raises(UserError, match="list of texts"):
        predictor.predict("one string")
    with pytest.raises(ArtifactError, match="no model_with_tokenizer.onnx.*--with-tokenizer"):
        load(kinds["onnx"], "ort-text")
    with pytest.raises(ArtifactError, match="no model_with_tokenizer.onnx"):
        load(kinds["teacher"], "ort-text")
