"""TensorRT: one clear line without the package or a GPU; engines built and validated on a GPU."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from compress.errors import ConfigError, UserError
from export.onnx import OnnxExportConfig, export_onnx
from export.runtime import load
from export.tensorrt import TensorRTConfig, export_tensorrt
from modcompress.cli import export_main as main
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
def test_int8_engine_calibrates_on_data(tmp_path, onnx_artifact, jigsaw_csv):
    if not HAS_TRT:
        pytest.skip("tensorrt is not installed")
    out = export_tensorrt(onnx_artifact, TensorRTConfig(out=str(tmp_path / "int8"), int8=True, fp16=True,
                                                        data=str(jigsaw_csv), calibration_samples=64,
                                                        opt_batch=8, opt_seq=32, max_seq=32))
    assert load(out).predict(TRICKY_TEXTS).shape == (len(TRICKY_TEXTS), 6)
