"""TensorRT: one clear line without the package or a GPU; int8's Q/DQ guard runs on CPU before any GPU work;
engines built, validated and (int8) guarded on a GPU."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from compress.errors import ArtifactError, ConfigError, UserError
from export.onnx import OnnxExportConfig, export_onnx
from export.runtime import load
from export.tensorrt import TensorRTConfig, export_tensorrt
from modcompress.cli import export_main as main
from tests import fixtures
from tests.export.helpers import TRICKY_TEXTS

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def onnx_artifact(tmp_path_factory, tiny_teacher):
    return export_onnx(tiny_teacher, OnnxExportConfig(out=str(tmp_path_factory.mktemp("trt") / "onnx"))).artifact


def test_without_tensorrt_or_gpu_one_line_and_nothing_written(tmp_path, onnx_artifact, capsys):
    import torch

    if HAS_TRT and torch.cuda.is_available():
        pytest.skip("TensorRT and a GPU are present here")
    with pytest.raises(UserError) as exc:
        export_tensorrt(onnx_artifact, TensorRTConfig(out=str(tmp_path / "plan")))
    assert "\n" not in str(exc.value) and ("TensorRT is not installed" in str(exc.value) or "no CUDA GPU" in str(exc.value))
    assert main(["tensorrt", str(onnx_artifact), "--fp16", "--out", str(tmp_path / "plan")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert not (tmp_path / "plan").exists()
    with pytest.raises(UserError):
        load(onnx_artifact, "ort-trt" if HAS_TRT else "ort-cuda")


def test_profile_and_int8_settings_are_validated():
    with pytest.raises(ConfigError, match="batch profile"):
        TensorRTConfig(min_batch=4, opt_batch=2, max_batch=8)
    with pytest.raises(ConfigError, match="sequence profile"):
        TensorRTConfig(min_seq=16, opt_seq=8, max_seq=32)
    with pytest.raises(ConfigError, match="--int8 calibrates"):
        TensorRTConfig(int8=True)
    with pytest.raises(ConfigError, match="max_auc_drop: must be in"):
        TensorRTConfig(int8=True, data="d.csv", max_auc_drop=1.5)
    with pytest.raises(ConfigError, match="val_fraction: must be in"):
        TensorRTConfig(int8=True, data="d.csv", val_fraction=0.0)


@pytest.fixture
def as_if_tensorrt(monkeypatch):
    """TensorRT and a GPU 'present' up to the engine build, which must not be reached."""
    import export.tensorrt as trt_module

    def no_build(*_args, **_kwargs):
        raise AssertionError("the engine build was reached")

    monkeypatch.setattr(trt_module, "require_tensorrt", lambda: None)
    monkeypatch.setattr(trt_module, "build_engine", no_build)


def test_int8_guard_refuses_on_cpu_before_any_gpu_work(tmp_path, jigsaw_csv, as_if_tensorrt, capsys):
    fragile = fixtures.write_fragile_onnx_artifact(tmp_path / "fragile")
    code = main(["tensorrt", str(fragile), "--int8", "--data", str(jigsaw_csv), "--calibration-samples", "64",
                 "--out", str(tmp_path / "plan")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: int8 loses too much accuracy")
    assert "no engine was built" in err[0] and "--max-auc-drop" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fragile"]  # no plan, no temporary directory left


def test_int8_needs_the_fp32_onnx_artifact(tmp_path, jigsaw_csv, as_if_tensorrt):
    import shutil

    from compress.artifact import read_info, write_info

    fragile = fixtures.write_fragile_onnx_artifact(tmp_path / "fragile")
    quantized = tmp_path / "fragile-int8-dynamic"
    shutil.copytree(fragile, quantized)
    info = read_info(quantized)
    info.kind, info.parent = "quantized", str(fragile)
    write_info(quantized, info)
    with pytest.raises(ArtifactError, match=r"is a quantized artifact; --int8 quantizes the fp32 model itself.*"
                                            r"its parent"):
        export_tensorrt(quantized, TensorRTConfig(out=str(tmp_path / "plan"), int8=True, data=str(jigsaw_csv)))
    assert not (tmp_path / "plan").exists()


@pytest.mark.gpu
@pytest.mark.parametrize("fp16", [False, True])
def test_engine_builds_validates_and_serves(tmp_path, onnx_artifact, fp16):
    if not HAS_TRT:
        pytest.skip("tensorrt is not installed")
    from compress.artifact import read_info

    out = export_tensorrt(onnx_artifact, TensorRTConfig(out=str(tmp_path / "plan"), fp16=fp16, max_batch=16,
                                                        opt_seq=16, max_seq=32))
    info = read_info(out, kinds=["tensorrt"])
    assert info.extra["profile"]["max_batch"] == 16 and info.extra["validation"]["max_abs_diff"] <= (
        5e-2 if fp16 else 1e-3)
    predictor = load(out)
    assert predictor.backend == "tensorrt" and predictor.max_batch_size == 16
    np.testing.assert_allclose(predictor.predict(TRICKY_TEXTS), load(onnx_artifact).predict(TRICKY_TEXTS),
                               atol=1e-2 if fp16 else 1e-4)


@pytest.mark.gpu
def test_int8_engine_from_the_qdq_model_passes_both_guards(tmp_path, trained_onnx, jigsaw_csv):
    if not HAS_TRT:
        pytest.skip("tensorrt is not installed")
    from compress.artifact import read_info
    from export.tensorrt_qdq import QDQ_FILE

    out = export_tensorrt(trained_onnx, TensorRTConfig(out=str(tmp_path / "int8"), int8=True, fp16=True,
                                                       data=str(jigsaw_csv), calibration_samples=64,
                                                       opt_batch=8, opt_seq=32, max_seq=32))
    info = read_info(out, kinds=["tensorrt"])
    guard = info.extra["guard"]
    assert info.extra["precision"] == "int8" and (out / QDQ_FILE).is_file()
    assert info.extra["quantization"]["nodes_quantized"] == 14
    assert guard["qdq_onnxruntime_cpu"]["passed"] and guard["engine"]["passed"]
    assert guard["engine"]["drop"] <= guard["max_auc_drop"] == 0.005
    assert guard["engine"]["max_abs_prob_diff_vs_qdq_cpu"] < 0.02  # the engine computes what the Q/DQ model says
    predictor = load(out)
    assert predictor.backend == "tensorrt"
    np.testing.assert_allclose(predictor.predict(TRICKY_TEXTS), load(trained_onnx).predict(TRICKY_TEXTS), atol=0.03)
