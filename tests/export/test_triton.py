"""Triton repository: configs parse back with Triton's own protobuf, python-backend models run, errors are clean."""

from __future__ import annotations

import http.client
import importlib
import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from compress.artifact import ArtifactInfo, atomic_artifact_dir, copy_artifact_files, write_info
from compress.errors import ArtifactError, ConfigError
from export.onnx import OnnxExportConfig, export_onnx
from export.ort import ort_session
from export.quantize import QuantizeConfig, quantize
from export.triton import TritonConfig, parse_batch_sizes, write_repository
from modcompress.cli import export_main as main
from tests.export.helpers import LABELS, TRICKY_TEXTS


def _config(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


@pytest.fixture(scope="module")
def onnx_artifacts(tmp_path_factory, tiny_teacher):
    root = tmp_path_factory.mktemp("triton_src")
    onnx_dir = export_onnx(tiny_teacher, OnnxExportConfig(out=str(root / "teacher-onnx"))).artifact
    int8 = quantize(onnx_dir, QuantizeConfig(mode="int8-dynamic", out=str(root / "teacher-int8")))
    return onnx_dir, int8


class FakeTensor:
    def __init__(self, name, array):
        self.name, self.array = name, np.asarray(array)

    def as_numpy(self):
        return self.array


class FakeResponse:
    def __init__(self, output_tensors, error=None):
        self.output_tensors, self.error = output_tensors, error


class FakeRequest:
    def __init__(self, **inputs):
        self.inputs = {k: FakeTensor(k, v) for k, v in inputs.items()}


@pytest.fixture
def fake_pb_utils(monkeypatch):
    """A stand-in for triton_python_backend_utils with the few calls the written model.py files make."""
    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor = FakeTensor
    module.InferenceResponse = FakeResponse
    module.TritonError = lambda msg: msg
    module.get_input_tensor_by_name = lambda request, name: request.inputs.get(name)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", module)
    return module


def _load_python_model(model_dir: Path, fake_pb_utils):
    """Import ``model_dir/1/model.py`` as Triton's Python-backend stub does, then initialize it.

    The stub appends the version and model directories to ``sys.path`` and imports ``1.model``, so
    the model's relative imports find the files copied beside it (and nothing of this toolkit's).
    """
    from google.protobuf import json_format

    added = [str(model_dir / "1"), str(model_dir)]
    sys.path.extend(added)
    importlib.invalidate_caches()
    try:
        module = importlib.import_module("1.model")
        config = _config(model_dir / "config.pbtxt")
        model = module.TritonPythonModel()
        model.initialize({"model_config": json.dumps(json_format.MessageToDict(config,
                                                                               preserving_proto_field_name=True)),
                          "model_repository": str(model_dir), "model_version": "1", "model_name": model_dir.name,
                          "model_instance_kind": "CPU"})
    finally:
        for path in added:
            sys.path.remove(path)
        for name in [n for n in sys.modules if n == "1" or n.startswith("1.")]:
            del sys.modules[name]  # the next repository's `1` is another package
    return module, model


def test_repository_configs_parse_back(tmp_path, onnx_artifacts):
    onnx_dir, int8 = onnx_artifacts
    cfg = TritonConfig(out=str(tmp_path / "repo"), max_batch_size=16, preferred_batch_sizes=(4, 8),
                       max_queue_delay_us=250, instances=2, kind="cpu")
    repo, summary = write_repository([onnx_dir, int8], cfg)
    assert [m["name"] for m in summary] == ["teacher-onnx", "teacher-int8"]
    for name in ("teacher-onnx", "teacher-int8"):
        model = _config(repo / f"{name}_model" / "config.pbtxt")
        assert model.name == f"{name}_model" and model.platform == "onnxruntime_onnx" and model.max_batch_size == 16
        assert [(i.name, i.data_type, list(i.dims)) for i in model.input] == [
            ("input_ids", mc.TYPE_INT64, [-1]), ("attention_mask", mc.TYPE_INT64, [-1])]
        assert [(o.name, o.data_type, list(o.dims), o.label_filename) for o in model.output] == [
            ("probabilities", mc.TYPE_FP32, [6], "labels.txt")]
        assert list(model.dynamic_batching.preferred_batch_size) == [4, 8]
        assert model.dynamic_batching.max_queue_delay_microseconds == 250
        assert [(g.kind, g.count) for g in model.instance_group] == [(mc.ModelInstanceGroup.KIND_CPU, 2)]
        assert (repo / f"{name}_model" / "labels.txt").read_text().split() == LABELS
        assert (repo / f"{name}_model" / "1" / "model.onnx").is_file()

        tok = _config(repo / f"{name}_tokenizer" / "config.pbtxt")
        assert tok.backend == "python" and tok.max_batch_size == 16
        assert [(i.name, i.data_type, list(i.dims)) for i in tok.input] == [("TEXT", mc.TYPE_STRING, [1])]
        assert [(o.name, o.data_type, list(o.dims)) for o in tok.output] == [
            ("input_ids", mc.TYPE_INT64, [-1]), ("attention_mask", mc.TYPE_INT64, [-1])]
        assert tok.parameters["max_length"].string_value == "32"
        assert tok.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
        assert (repo / f"{name}_tokenizer" / "1" / "tokenizer" / "vocab.txt").is_file()

        ens = _config(repo / name / "config.pbtxt")
        assert ens.platform == "ensemble" and ens.max_batch_size == 16 and (repo / name / "1").is_dir()
        assert [(i.name, i.data_type) for i in ens.input] == [("TEXT", mc.TYPE_STRING)]
        assert [(o.name, o.data_type, list(o.dims)) for o in ens.output] == [("PROBABILITIES", mc.TYPE_FP32, [6])]
        steps = ens.ensemble_scheduling.step
        assert [s.model_name for s in steps] == [f"{name}_tokenizer", f"{name}_model"]
        assert dict(steps[0].input_map) == {"TEXT": "TEXT"}
        assert dict(steps[1].input_map) == {"input_ids": "input_ids", "attention_mask": "attention_mask"}
        assert dict(steps[1].output_map) == {"probabilities": "PROBABILITIES"}
        # every tensor an ensemble step reads is produced by the ensemble input or an earlier step
        produced = {"TEXT"}
        for step in steps:
            assert set(step.input_map.values()) <= produced
            produced |= set(step.output_map.values())
        assert "PROBABILITIES" in produced


def test_sigmoid_is_folded_into_the_served_graph(tmp_path, onnx_artifacts):
    onnx_dir, _ = onnx_artifacts
    repo, _ = write_repository([onnx_dir], TritonConfig(out=str(tmp_path / "repo")))
    ids, mask = np.array([[2, 9, 14, 3, 0, 0], [2, 20, 21, 22, 23, 3]]), np.array([[1, 1, 1, 1, 0, 0], [1] * 6])
    logits = ort_session(onnx_dir / "model.onnx").run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
    served = ort_session(repo / "teacher-onnx_model" / "1" / "model.onnx")
    assert [o.name for o in served.get_outputs()] == ["probabilities"]
    probs = served.run(["probabilities"], {"input_ids": ids, "attention_mask": mask})[0]
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits)), atol=1e-6)


@pytest.mark.parametrize("impl", ["auto", "tokenizers", "wordpiece"])
def test_tokenizer_model_matches_the_artifact_tokenizer(tmp_path, onnx_artifacts, fake_pb_utils, impl):
    from transformers import AutoTokenizer

    onnx_dir, _ = onnx_artifacts
    repo, _ = write_repository([onnx_dir], TritonConfig(out=str(tmp_path / "repo"), pad_to_multiple_of=8))
    tok_dir = repo / "teacher-onnx_tokenizer"
    config = tok_dir / "config.pbtxt"
    config.write_text(config.read_text().replace('string_value: "auto"', f'string_value: "{impl}"'))
    _, model = _load_python_model(tok_dir, fake_pb_utils)
    assert model.impl == ("transformers" if impl == "auto" else impl)

    reference = AutoTokenizer.from_pretrained(onnx_dir / "tokenizer")
    requests = [FakeRequest(TEXT=np.array([[t.encode()] for t in TRICKY_TEXTS], dtype=object)),
                FakeRequest(TEXT=np.array([[b"short one"]], dtype=object))]
    responses = model.execute(requests)
    assert all(r.error is None for r in responses)
    for request, response in zip(requests, responses, strict=True):
        texts = [t[0].decode() for t in request.inputs["TEXT"].as_numpy()]
        ids, mask = (t.as_numpy() for t in response.output_tensors)
        names = [t.name for t in response.output_tensors]
        assert names == ["input_ids", "attention_mask"] and ids.dtype == mask.dtype == np.int64
        assert ids.shape == mask.shape and ids.shape[0] == len(texts)
        assert ids.shape[1] % 8 == 0 or ids.shape[1] == 32  # rounded up to the multiple, capped at max_length
        want = reference(texts, truncation=True, max_length=32)["input_ids"]
        for row, expected in enumerate(want):
            assert mask[row].sum() == len(expected)
            assert ids[row, : len(expected)].tolist() == expected
            assert (ids[row, len(expected):] == reference.pad_token_id).all()


def test_wordpiece_fallback_matches_hf_on_the_minilm_vocabulary():
    """The fallback the stock Triton image uses, checked against BertTokenizerFast on a real 30k vocabulary."""
    from transformers import AutoTokenizer

    from compress.models.teacher import offline_minilm_path
    from export.triton_model.tokenizer_model import load_tokenizer

    path = offline_minilm_path()
    if path is None:
        pytest.skip("the offline MiniLM package is not installed")
    encode, pad_id, impl = load_tokenizer(str(path), "wordpiece")
    reference = AutoTokenizer.from_pretrained(path)
    texts = TRICKY_TEXTS + ["@USER @USER Go home you’re drunk!!! @USER #MAGA #Trump2020 👊🇺🇸👊 URL",
                            "Ünïcödé ÀÉÎÕÜ ﬁ ligature ½ ① Ⅻ Straße İstanbul", "한국어 텍스트 🙂 ¿qué? «quoted» „quoted“"]
    assert impl == "wordpiece" and pad_id == reference.pad_token_id
    assert encode(texts, 128) == reference(texts, truncation=True, max_length=128)["input_ids"]


@pytest.mark.parametrize("lower, strip_accents, chinese", [
    (True, None, True), (False, None, True), (True, False, True), (False, True, False)])
@pytest.mark.parametrize("max_length", [32, 6])
def test_wordpiece_matches_hf_on_tricky_texts(tmp_path, lower, strip_accents, chinese, max_length):
    """WordPiece alone (no Triton, no tokenizer library) against BertTokenizerFast, for each BERT option."""
    from transformers import AutoTokenizer, BertTokenizerFast

    from export.triton_model.wordpiece import WordPiece
    from tests.fixtures import vocabulary

    (tmp_path / "vocab.txt").write_text("\n".join(vocabulary()) + "\n")
    BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"), do_lower_case=lower, strip_accents=strip_accents,
                      tokenize_chinese_chars=chinese).save_pretrained(tmp_path)
    reference = AutoTokenizer.from_pretrained(tmp_path)
    texts = [*TRICKY_TEXTS, *(t.upper() for t in TRICKY_TEXTS), "Ünïcödé ÀÉÎÕÜ İstanbul ﬁ ½ ①", "a\x00b\ufffdc"]
    wordpiece = WordPiece(str(tmp_path))
    assert wordpiece.pad_id == reference.pad_token_id
    assert wordpiece(texts, max_length) == reference(texts, truncation=True, max_length=max_length)["input_ids"]


def test_repository_python_models_are_the_package_files_and_import_nothing_of_ours(tmp_path, onnx_artifacts):
    """What Triton loads is export/triton_model as it is, and runs without this toolkit installed."""
    import ast

    import export.triton_model

    onnx_dir, _ = onnx_artifacts
    repo, _ = write_repository([onnx_dir], TritonConfig(out=str(tmp_path / "repo")))
    package = Path(export.triton_model.__file__).parent
    version = repo / "teacher-onnx_tokenizer" / "1"
    assert (version / "model.py").read_bytes() == (package / "tokenizer_model.py").read_bytes()
    assert (version / "wordpiece.py").read_bytes() == (package / "wordpiece.py").read_bytes()

    available = set(sys.stdlib_module_names) | {"numpy", "triton_python_backend_utils"}
    optional = {"transformers", "tokenizers"}  # tried inside try/except, in that order, when installed
    for path in sorted(package.glob("*_model.py")) + [package / "wordpiece.py"]:
        roots = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots.add(node.module.split(".")[0])
        assert roots <= available | optional, (path.name, roots - available - optional)


def _stand_in_plan(directory: Path, onnx_dir: Path) -> Path:
    """A tensorrt artifact whose engine is not real: the repository layout needs no GPU."""
    with atomic_artifact_dir(directory) as tmp:
        (tmp / "model.plan").write_bytes(b"not a real engine")
        copy_artifact_files(onnx_dir, tmp, ["tokenizer"])
        write_info(tmp, ArtifactInfo(kind="tensorrt", architecture="hf", labels=LABELS, max_length=32,
                                     extra={"profile": {"max_batch": 32}, "ids_dtype": "int32"}))
    return directory


def test_postprocess_model_and_tensorrt_layout(tmp_path, onnx_artifacts, fake_pb_utils):
    onnx_dir, _ = onnx_artifacts
    plan = _stand_in_plan(tmp_path / "teacher-trt", onnx_dir)
    with pytest.raises(ConfigError, match="GPU instances only"):
        write_repository([plan], TritonConfig(out=str(tmp_path / "repo")))
    repo, summary = write_repository([plan], TritonConfig(out=str(tmp_path / "repo"), kind="gpu"))
    assert summary[0]["platform"] == "tensorrt_plan"
    model = _config(repo / "teacher-trt_model" / "config.pbtxt")
    assert model.platform == "tensorrt_plan" and model.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert model.input[0].data_type == mc.TYPE_INT32 and model.output[0].name == "logits"
    assert (repo / "teacher-trt_model" / "1" / "model.plan").read_bytes() == b"not a real engine"
    assert sorted(p.name for p in (repo / "teacher-trt_postprocess" / "1").iterdir()) == ["model.py"]
    steps = _config(repo / "teacher-trt" / "config.pbtxt").ensemble_scheduling.step
    assert [s.model_name for s in steps] == ["teacher-trt_tokenizer", "teacher-trt_model", "teacher-trt_postprocess"]
    assert dict(steps[2].output_map) == {"probabilities": "PROBABILITIES"}

    _, post = _load_python_model(repo / "teacher-trt_postprocess", fake_pb_utils)
    logits = np.array([[-2.0, 0.0, 3.0, 0, 0, 0]], dtype=np.float32)
    (out,) = post.execute([FakeRequest(logits=logits)])[0].output_tensors
    np.testing.assert_allclose(out.as_numpy(), 1 / (1 + np.exp(-logits)), atol=1e-6)
    _, tok = _load_python_model(repo / "teacher-trt_tokenizer", fake_pb_utils)
    ids = tok.execute([FakeRequest(TEXT=np.array([[b"you idiot"]], dtype=object))])[0].output_tensors[0].as_numpy()
    assert ids.dtype == np.int32


def _infer(port: int, model: str, inputs: list[dict]) -> dict[str, np.ndarray]:
    """One KServe v2 JSON request; output name -> array of the shape Triton reports."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", f"/v2/models/{model}/infer", body=json.dumps({"inputs": inputs}))
        response = conn.getresponse()
        body = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 200, body
    return {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in body["outputs"]}


def test_a_real_triton_python_backend_loads_and_runs_the_written_python_models(tmp_path, onnx_artifacts):
    """The tokenizer (model.py importing wordpiece.py beside it) and the sigmoid in a real tritonserver.

    Only the Python models: the tritonserver nvidia-pytriton ships (which `serve start` runs) has
    no ONNX Runtime or TensorRT backend. The tokenizer is forced to the WordPiece the stock
    container falls back to.
    """
    from transformers import AutoTokenizer

    import serve.server as server_mod
    from serve.config import ServeConfig
    from serve.server import free_ports

    onnx_dir, _ = onnx_artifacts
    repo, _ = write_repository([_stand_in_plan(tmp_path / "teacher-trt", onnx_dir)],
                               TritonConfig(out=str(tmp_path / "repo"), kind="gpu", pad_to_multiple_of=8))
    python_models, models = tmp_path / "python_models", ["teacher-trt_tokenizer", "teacher-trt_postprocess"]
    for name in models:
        shutil.copytree(repo / name, python_models / name)
    config = python_models / "teacher-trt_tokenizer" / "config.pbtxt"
    config.write_text(config.read_text().replace('string_value: "auto"', 'string_value: "wordpiece"'))
    ports = free_ports(3)
    serve_config = ServeConfig(http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2], exit_timeout_s=5,
                               log_file=tmp_path / "triton.log")
    (tmp_path / "work").mkdir()
    with server_mod._launch(python_models, tmp_path / "work", serve_config, models,
                            server_mod._triton_files()) as server:
        texts = [t for t in TRICKY_TEXTS if t.strip()]
        out = _infer(server.config.http_port, "teacher-trt_tokenizer",
                     [{"name": "TEXT", "datatype": "BYTES", "shape": [len(texts), 1], "data": texts}])
        ids, mask = out["input_ids"], out["attention_mask"]
        reference = AutoTokenizer.from_pretrained(onnx_dir / "tokenizer")
        want = reference(texts, truncation=True, max_length=32)["input_ids"]
        assert ids.shape == (len(texts), 32) and mask.shape == ids.shape  # the longest text fills max_length
        for row, expected in enumerate(want):
            assert ids[row, : len(expected)].tolist() == expected and mask[row].sum() == len(expected)

        logits = np.array([[-2.0, 0.0, 3.0, 0.5, -0.5, 9.0]], dtype=np.float32)
        out = _infer(server.config.http_port, "teacher-trt_postprocess",
                     [{"name": "logits", "datatype": "FP32", "shape": [1, 6], "data": logits.ravel().tolist()}])
        np.testing.assert_allclose(out["probabilities"], 1 / (1 + np.exp(-logits)), atol=1e-6)
    assert not server.is_alive() and not (tmp_path / "work").exists()


def test_parse_batch_sizes_sorts_dedupes_and_names_the_field():
    assert parse_batch_sizes("16, 4,8,4") == (4, 8, 16) and parse_batch_sizes("") == ()
    with pytest.raises(ConfigError, match=r"^preferred_batch_sizes: expected comma-separated integers such as 4,8,16, "
                                          r"got '4,x'$"):
        parse_batch_sizes("4,x")


def test_unservable_inputs_are_one_line_errors(tmp_path, tiny_teacher, onnx_artifacts, capsys):
    onnx_dir, int8 = onnx_artifacts
    with pytest.raises(ArtifactError, match="Triton serves onnx"):
        write_repository([tiny_teacher], TritonConfig(out=str(tmp_path / "r1")))
    torch_int8 = quantize(tiny_teacher, QuantizeConfig(mode="torch-int8-dynamic", out=str(tmp_path / "ti8")))
    with pytest.raises(ArtifactError, match="runs in PyTorch"):
        write_repository([onnx_dir, torch_int8], TritonConfig(out=str(tmp_path / "r2")))
    assert not (tmp_path / "r2").exists()  # the first model was written to a temporary that is gone
    with pytest.raises(ConfigError, match="preferred_batch_sizes"):
        TritonConfig(max_batch_size=8, preferred_batch_sizes=(4, 16))

    assert main(["triton", str(onnx_dir), "--out", str(tmp_path / "r3"), "--preferred-batch-sizes", "4,x"]) == 2
    assert main(["triton", str(onnx_dir), str(onnx_dir), "--out", str(tmp_path / "r3")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("error: ") for e in err)
    assert main(["triton", str(onnx_dir), str(int8), "--out", str(tmp_path / "r4"), "--instances", "2"]) == 0
    assert "teacher-onnx: TEXT -> PROBABILITIES" in capsys.readouterr().out


def test_an_in_graph_tokenizer_artifact_is_one_onnxruntime_model_with_string_input(tmp_path, text_onnx, onnx_artifacts,
                                                                                   capsys):
    """No Python backend: TEXT (string) -> PROBABILITIES in one onnxruntime model, custom-op library declared."""
    import onnxruntime as ort

    from export.runtime import load
    from export.triton import CUSTOM_OPS_LIBRARY

    onnx_dir, _ = onnx_artifacts
    cfg = TritonConfig(out=str(tmp_path / "repo"), max_batch_size=16, preferred_batch_sizes=(4, 8), instances=2,
                       repository_path="/srv/triton/")
    repo, summary = write_repository([text_onnx, onnx_dir], cfg)
    name = text_onnx.name
    assert sorted(p.name for p in repo.iterdir() if p.is_dir() and p.name.startswith(name)) == [name]
    assert summary[0]["models"] == [name] and summary[0]["platform"] == "onnxruntime_onnx"
    assert summary[1]["models"][-1] == "teacher-onnx"  # token-id artifacts keep the tokenizer + model ensemble
    config = _config(repo / name / "config.pbtxt")
    assert config.platform == "onnxruntime_onnx" and not config.backend and config.max_batch_size == 16
    (text,) = config.input
    assert (text.name, text.data_type, list(text.dims)) == ("TEXT", mc.TYPE_STRING, [1])
    assert text.HasField("reshape") and list(text.reshape.shape) == []  # [1] per request -> the graph's (B,)
    assert [(o.name, o.data_type, list(o.dims), o.label_filename) for o in config.output] == [
        ("PROBABILITIES", mc.TYPE_FP32, [6], "labels.txt")]
    assert list(config.model_operations.op_library_filename) == [f"/srv/triton/{name}/{CUSTOM_OPS_LIBRARY}"]
    assert [(g.kind, g.count) for g in config.instance_group] == [(mc.ModelInstanceGroup.KIND_CPU, 2)]
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert (repo / name / "labels.txt").read_text().split() == LABELS
    assert '  reshape {\n  }\n' in (repo / name / "config.pbtxt").read_text()

    # the model as Triton's onnxruntime backend runs it: the copied library registered, strings in
    options = ort.SessionOptions()
    options.register_custom_ops_library(str(repo / name / CUSTOM_OPS_LIBRARY))
    served = ort.InferenceSession(str(repo / name / "1" / "model.onnx"), options, providers=["CPUExecutionProvider"])
    assert [(i.name, i.type) for i in served.get_inputs()] == [("TEXT", "tensor(string)")]
    assert [o.name for o in served.get_outputs()] == ["PROBABILITIES"]
    texts = TRICKY_TEXTS[:4]
    probs = served.run(["PROBABILITIES"], {"TEXT": np.array(texts, dtype=object)})[0]
    np.testing.assert_allclose(probs, load(text_onnx, "ort-text").predict(texts), atol=1e-6)

    assert main(["triton", str(text_onnx), "--out", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert f"{name}: TEXT -> PROBABILITIES (6 labels) via the tokenizer in the graph" in out and "LD_PRELOAD" in out
    assert f"/models/{name}/{CUSTOM_OPS_LIBRARY}" in (tmp_path / "cli" / name / "config.pbtxt").read_text()
    with pytest.raises(ConfigError, match="repository_path: must be an absolute path"):
        TritonConfig(repository_path="models")
