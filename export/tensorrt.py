"""TensorRT engine (``model.plan``) from an ONNX artifact: optimization profiles, fp16, int8. GPU only.

Recipe: parse the artifact's ``model.onnx`` with TensorRT's ONNX parser -> one optimization
profile for ``input_ids`` / ``attention_mask`` (min/opt/max batch x sequence) -> fp16 and/or int8
(implicit quantization, entropy calibration on real texts from ``--data``, run at the profile's
opt shape) -> ``build_serialized_network`` -> validation against ONNX Runtime (CPU, fp32) on
random inputs inside the profile (fp32 engines: atol 1e-3; fp16: 5e-2; int8: reported only) ->
a new artifact (kind ``tensorrt``) with ``model.plan``, ``model.onnx`` (what it was built from),
``tokenizer/``, and the profile under ``extra.profile``.

Build from the fp32 ``onnx`` artifact and let ``--int8`` calibrate: the ``int8-static`` artifacts
of ``compress quantize`` use asymmetric uint8 activations (ONNX Runtime's CPU recipe), which
TensorRT's explicit-quantization path (symmetric int8 Q/DQ) does not take. TensorRT 10 deprecates
implicit int8 calibration in favour of explicit Q/DQ; it still works there.

Without the ``tensorrt`` package or a CUDA GPU every entry point raises one UserError line.
Export the ONNX artifact with ``--optimize none``: O2 graphs hold ONNX Runtime contrib operators
that TensorRT cannot parse. Engines are specific to the GPU model and TensorRT version that
built them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compress.errors import ArtifactError, ConfigError, UserError

log = logging.getLogger(__name__)

PLAN_FILE = "model.plan"
WORKSPACE_BYTES = 4 << 30
ATOL = {"fp32": 1e-3, "fp16": 5e-2}


@dataclass(frozen=True)
class TensorRTConfig:
    """`export tensorrt` settings: precision and the optimization profile.

    Attributes:
        out: artifact directory; None -> ``<source>-tensorrt``.
        fp16: allow fp16 kernels.
        int8: allow int8 kernels, calibrated on ``calibration_samples`` texts of ``data``.
        data: labelled file with the artifact's labels (``compress.data.load_dataset``); int8 calibrates
            on texts from its training part.
        min_batch / opt_batch / max_batch: batch dimension of the profile.
        min_seq / opt_seq / max_seq: sequence dimension; max_seq None -> the artifact's max_length.
    """

    out: str | None = None
    overwrite: bool = False  # replace an earlier output of ours at out (never anything else)
    fp16: bool = False
    int8: bool = False
    data: str | None = None
    format: str | None = None
    calibration_samples: int = 256
    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 32
    min_seq: int = 1
    opt_seq: int = 64
    max_seq: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ConfigError(f"batch profile: need 1 <= min_batch <= opt_batch <= max_batch, got "
                              f"{self.min_batch}/{self.opt_batch}/{self.max_batch}")
        top = self.max_seq if self.max_seq is not None else max(self.opt_seq, self.min_seq)
        if not 1 <= self.min_seq <= self.opt_seq <= top:
            raise ConfigError(f"sequence profile: need 1 <= min_seq <= opt_seq <= max_seq, got "
                              f"{self.min_seq}/{self.opt_seq}/{self.max_seq}")
        if self.int8 and not self.data:
            raise ConfigError("data: --int8 calibrates on real texts; pass --data FILE")
        if self.calibration_samples < 1:
            raise ConfigError(f"calibration_samples: must be >= 1, got {self.calibration_samples}")


def require_tensorrt() -> Any:
    """The ``tensorrt`` module, or one UserError line saying what is missing and how to get it."""
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except ImportError:
        raise UserError("TensorRT is not installed; `export tensorrt` needs the tensorrt package and an NVIDIA "
                        "GPU (on a CUDA machine: pip install 'modcompress[gpu]'); on CPU use the ONNX artifact "
                        "with --backend ort") from None
    import torch

    if not torch.cuda.is_available():
        raise UserError("no CUDA GPU is visible; TensorRT engines are built and run on an NVIDIA GPU "
                        "(check nvidia-smi / CUDA_VISIBLE_DEVICES); on CPU use the ONNX artifact with --backend ort")
    return trt


def _torch_dtype(trt: Any, dtype: Any) -> Any:
    import torch

    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.INT32: torch.int32,
             trt.DataType.INT8: torch.int8, trt.DataType.BOOL: torch.bool}
    if hasattr(trt.DataType, "INT64"):
        table[trt.DataType.INT64] = torch.int64
    if hasattr(trt.DataType, "BF16"):
        table[trt.DataType.BF16] = torch.bfloat16
    return table[dtype]


class TensorRTRunner:
    """Run a serialized engine: ``runner(input_ids (B,T), attention_mask (B,T)) -> logits (B, L)`` float32.

    Device buffers are torch CUDA tensors; inputs are cast to the engine's integer type.
    """

    def __init__(self, plan_path: str | os.PathLike[str], device: int = 0) -> None:
        trt = require_tensorrt()
        import torch

        self.torch = torch
        self.device = torch.device("cuda", device)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
        if self.engine is None:
            raise ArtifactError(f"{plan_path} cannot be loaded by this TensorRT/GPU (engines are specific to the GPU "
                                "and TensorRT version that built them); rebuild it with `modcompress-export tensorrt`")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream(device=self.device)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: _torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        torch = self.torch
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        keep = []
        with torch.cuda.stream(self.stream):
            for name in self.inputs:
                tensor = torch.from_numpy(np.ascontiguousarray(feeds[name])).to(
                    self.device, dtype=self.dtypes[name], non_blocking=True)
                keep.append(tensor)
                self.context.set_input_shape(name, tuple(tensor.shape))
                self.context.set_tensor_address(name, tensor.data_ptr())
            outputs = {}
            for name in self.outputs:
                out = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=self.dtypes[name],
                                  device=self.device)
                outputs[name] = out
                self.context.set_tensor_address(name, out.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
        self.stream.synchronize()
        return outputs["logits"].float().cpu().numpy()


def entropy_calibrator(trt: Any, batches: list[dict[str, np.ndarray]], dtypes: dict[str, Any]) -> Any:
    """An ``IInt8EntropyCalibrator2`` feeding ``batches`` (the profile's opt shape) from torch CUDA tensors."""
    import torch

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()
            self.batches = batches
            self.index = 0
            self.live: list[Any] = []

        def get_batch_size(self) -> int:
            return int(next(iter(batches[0].values())).shape[0]) if batches else 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.index >= len(self.batches):
                return None
            batch = self.batches[self.index]
            self.index += 1
            self.live = [torch.from_numpy(batch[n]).to("cuda", dtype=dtypes[n]).contiguous() for n in names]
            return [t.data_ptr() for t in self.live]

        def read_calibration_cache(self) -> bytes | None:
            return None

        def write_calibration_cache(self, cache: bytes) -> None:
            return None

    return Calibrator()


def _calibration_batches(tokenizer: Any, config: TensorRTConfig, labels: list[str], hierarchy: dict[str, str],
                         max_seq: int) -> list[dict[str, np.ndarray]]:
    from compress.batching import pad_batch
    from export.quantize import load_guard_data

    data = load_guard_data(config.data or "", config.format, labels, hierarchy, 0.1, config.seed, None)
    texts = data.calibration_texts
    rng = np.random.default_rng(config.seed)
    chosen = [texts[i] for i in rng.permutation(len(texts))[: config.calibration_samples]]
    ids = tokenizer(chosen, truncation=True, max_length=min(config.opt_seq, max_seq), padding=False)["input_ids"]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = []
    for start in range(0, len(ids) - config.opt_batch + 1, config.opt_batch):
        a, m = pad_batch(ids[start:start + config.opt_batch], int(pad), width=min(config.opt_seq, max_seq))
        batches.append({"input_ids": a, "attention_mask": m})
    if not batches:
        raise UserError(f"{config.data}: fewer than --opt-batch {config.opt_batch} texts for int8 calibration; "
                        "pass more data or a smaller --opt-batch")
    return batches


def build_engine(onnx_path: Path, config: TensorRTConfig, max_seq: int,
                 calibration: list[dict[str, np.ndarray]] | None = None) -> bytes:
    """Serialized engine bytes for ``onnx_path`` with one optimization profile (GPU)."""
    trt = require_tensorrt()
    import torch

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"TensorRT cannot parse {onnx_path} ({errors[:300]}); export the ONNX artifact with "
                        "--optimize none (O2 graphs hold ONNX Runtime-only operators)")
    trt_config = builder.create_builder_config()
    trt_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    profile = builder.create_optimization_profile()
    for name in ("input_ids", "attention_mask"):
        profile.set_shape(name, (config.min_batch, config.min_seq), (config.opt_batch, min(config.opt_seq, max_seq)),
                          (config.max_batch, max_seq))
    trt_config.add_optimization_profile(profile)
    if config.fp16:
        trt_config.set_flag(trt.BuilderFlag.FP16)
    if config.int8:
        trt_config.set_flag(trt.BuilderFlag.INT8)
        dtypes = {network.get_input(i).name: _torch_dtype(trt, network.get_input(i).dtype)
                  for i in range(network.num_inputs)}
        trt_config.int8_calibrator = entropy_calibrator(trt, calibration or [], dtypes)
        trt_config.set_calibration_profile(profile)
    serialized = builder.build_serialized_network(network, trt_config)
    torch.cuda.synchronize()
    if serialized is None:
        raise UserError("TensorRT could not build an engine for this model and profile; check the log above, "
                        "try a smaller --max-batch/--max-seq or drop --int8")
    return bytes(serialized)


def validate_engine(plan: Path, onnx_path: Path, config: TensorRTConfig, max_seq: int, vocab_size: int,
                    pad_id: int, atol: float | None) -> dict[str, Any]:
    """Engine vs ONNX Runtime (CPU fp32) on random inputs inside the profile; AtolError past ``atol``."""
    from export.onnx import AtolError, random_inputs
    from export.ort import ort_session

    runner = TensorRTRunner(plan)
    session = ort_session(onnx_path)
    rng = np.random.default_rng(config.seed)
    cases, worst = [], 0.0
    for batch in sorted({config.min_batch, config.opt_batch, config.max_batch}):
        for length in sorted({max(config.min_seq, 5), min(config.opt_seq, max_seq), max_seq}):
            ids, mask = random_inputs(batch, length, vocab_size, pad_id, rng)
            ref = session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
            got = runner(ids, mask)
            diff = float(np.max(np.abs(got - ref)))
            cases.append({"batch": batch, "length": length, "max_abs_diff": diff})
            worst = max(worst, diff)
            if atol is not None and diff > atol:
                raise AtolError(f"TensorRT logits differ from ONNX Runtime by up to {diff:.3g} (atol {atol:g}) at "
                                f"batch {batch}, length {length}; build without --fp16/--int8 or check the model")
    ids_dtype = "int32" if str(runner.dtypes["input_ids"]) == "torch.int32" else "int64"
    return {"atol": atol, "max_abs_diff": worst, "reference": "onnxruntime CPU fp32", "cases": cases,
            "ids_dtype": ids_dtype}


def export_tensorrt(artifact: str | os.PathLike[str], config: TensorRTConfig | None = None) -> Path:
    """Build, validate and write a tensorrt artifact from an ``onnx`` (or ONNX-quantized) artifact.

    Raises:
        UserError: no tensorrt package or no GPU (checked first), parse/build failures.
        ArtifactError: the source has no model.onnx.
    """
    import shutil
    import tempfile

    from transformers import AutoTokenizer

    from compress.artifact import (
        ArtifactInfo,
        atomic_artifact_dir,
        copy_artifact_files,
        read_info,
        write_info,
    )

    config = config or TensorRTConfig()
    require_tensorrt()
    from export.onnx import output_dir

    source = Path(artifact)
    info = read_info(source, kinds=["onnx", "quantized"])
    out = output_dir(source, config.out, "tensorrt", config.overwrite, inputs=(config.data,))
    onnx_path = source / "model.onnx"
    if not onnx_path.is_file():
        raise ArtifactError(f"{source} has no model.onnx; build engines from `modcompress-export onnx` artifacts")
    max_seq = config.max_seq or info.max_length
    tokenizer = AutoTokenizer.from_pretrained(str(source / "tokenizer"))
    calibration = _calibration_batches(tokenizer, config, info.labels, info.hierarchy, max_seq) if config.int8 else None
    plan_bytes = build_engine(onnx_path, config, max_seq, calibration)
    precision = "int8" if config.int8 else "fp16" if config.fp16 else "fp32"
    with tempfile.TemporaryDirectory(prefix=".trt-", dir=out.parent if out.parent.exists() else None) as t:
        plan = Path(t) / PLAN_FILE
        plan.write_bytes(plan_bytes)
        pad_id = int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else 0
        validation = validate_engine(plan, onnx_path, config, max_seq, int(info.extra.get("vocab_size", len(tokenizer))),
                                     pad_id, ATOL.get(precision))
        import tensorrt as trt  # type: ignore[import-not-found]
        import torch

        new_info = ArtifactInfo(
            kind="tensorrt", architecture=info.architecture, **info.label_fields(),
            thresholds=list(info.thresholds), max_length=max_seq, parent=str(source.resolve()),
            metrics=dict(info.metrics), data_fingerprint=info.data_fingerprint, recipe=dict(info.recipe),
            extra={"precision": precision, "fp16": config.fp16, "int8": config.int8,
                   "profile": {"min_batch": config.min_batch, "opt_batch": config.opt_batch,
                               "max_batch": config.max_batch, "min_seq": config.min_seq,
                               "opt_seq": min(config.opt_seq, max_seq), "max_seq": max_seq},
                   "validation": validation, "tensorrt": trt.__version__, "gpu": torch.cuda.get_device_name(0),
                   "runtime": "tensorrt", "ids_dtype": validation.pop("ids_dtype")},
        )
        with atomic_artifact_dir(out, config.overwrite) as tmp:
            shutil.move(str(plan), tmp / PLAN_FILE)
            copy_artifact_files(source, tmp, ["model.onnx", "tokenizer", "config.json"])
            write_info(tmp, new_info)
    return out
