"""TensorRT engine (``model.plan``) from an ONNX artifact: optimization profiles, fp16, int8. GPU only.

Recipe: parse the artifact's ``model.onnx`` with TensorRT's ONNX parser -> one optimization
profile for ``input_ids`` / ``attention_mask`` (min/opt/max batch x sequence) -> fp16 and/or int8
-> ``build_serialized_network`` -> validation against ONNX Runtime (CPU, fp32) on random inputs
inside the profile (fp32 engines: atol 1e-3; fp16: 5e-2; int8: reported) -> a new artifact (kind
``tensorrt``) with ``model.plan``, ``model.onnx`` (the fp32 source), ``tokenizer/``, and the profile
under ``extra.profile``.

int8 is explicit quantization, TensorRT 10's way (implicit calibration is deprecated there and gone in 11):
before any GPU work, :func:`export.tensorrt_qdq.qdq_for_tensorrt` writes ``model.qdq.onnx`` (symmetric int8
Q/DQ at the inputs of the weight-carrying MatMul/Gemm/Conv nodes, calibrated on real texts from ``--data``)
and guards it on ONNX Runtime's CPU: validation macro ROC-AUC against the fp32 model on the held-out split of
``--data``, at most ``max_auc_drop`` lower (``compress quantize``'s guard and option names). The engine is
built from that model with the INT8 flag and no calibrator (``--fp16`` also lets the float parts run in
fp16), then guarded the same way on the same rows; either guard failing is one UserError line and nothing
written. Both verdicts are kept in ``extra.guard``, the Q/DQ model in the artifact. Build from the fp32
``onnx`` artifact: the ``int8-static`` artifacts of ``compress quantize`` hold asymmetric uint8 activations
(ONNX Runtime's CPU recipe), which TensorRT does not take.

Without the ``tensorrt`` package or a CUDA GPU every entry point raises one UserError line. Export the
ONNX artifact with ``--optimize none``: O2 graphs hold ONNX Runtime contrib operators that TensorRT cannot
parse. Engines are specific to the GPU model and TensorRT version that built them. TensorRT 11 builds only
strongly typed networks: it has no fp16 builder flag (``--fp16`` is one UserError line there; the gpu extra
installs TensorRT 10), and reads int8 from the Q/DQ nodes alone.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compress.errors import ArtifactError, ConfigError, UserError
from export.quantize import check_guard_settings
from export.tensorrt_qdq import QDQ_FILE, QdqModel, qdq_for_tensorrt

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
        int8: build from an int8 Q/DQ model (:mod:`export.tensorrt_qdq`) calibrated on ``calibration_samples``
            texts of ``data``, guarded on CPU and again as an engine.
        data: labelled file with the artifact's labels (``compress.data.load_dataset``); int8 calibrates
            on texts from its training part and is guarded on its held-out part.
        val_fraction / max_eval_samples / max_auc_drop: the int8 guard (``compress quantize``'s): the held-out
            share of ``data``, a cap on its rows (seeded sample; None for all), the largest accepted fall in
            validation macro ROC-AUC.
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
    val_fraction: float = 0.1
    max_eval_samples: int | None = None
    max_auc_drop: float = 0.005
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
        check_guard_settings(self.val_fraction, self.max_auc_drop, self.max_eval_samples)


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


def build_engine(onnx_path: Path, config: TensorRTConfig, max_seq: int) -> bytes:
    """Serialized engine bytes for ``onnx_path`` with one optimization profile (GPU).

    int8 takes ``onnx_path`` to be a Q/DQ model (:mod:`export.tensorrt_qdq`): its scales are the calibration,
    so no calibrator is set.
    """
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
        if not hasattr(trt.BuilderFlag, "FP16"):
            raise UserError(f"TensorRT {trt.__version__} has no fp16 builder flag (TensorRT 11 builds only strongly "
                            "typed networks); install TensorRT 10 (pip install 'tensorrt>=10,<11') or drop --fp16")
        trt_config.set_flag(trt.BuilderFlag.FP16)
    if config.int8 and hasattr(trt.BuilderFlag, "INT8"):  # TensorRT 11 reads int8 from the Q/DQ nodes alone
        trt_config.set_flag(trt.BuilderFlag.INT8)
    serialized = builder.build_serialized_network(network, trt_config)
    torch.cuda.synchronize()
    if serialized is None:
        raise UserError("TensorRT could not build an engine for this model and profile; check the log above, "
                        "try a smaller --max-batch/--max-seq or drop --int8")
    return bytes(serialized)


def validate_engine(runner: TensorRTRunner, onnx_path: Path, config: TensorRTConfig, max_seq: int, vocab_size: int,
                    pad_id: int, atol: float | None) -> dict[str, Any]:
    """Engine vs ONNX Runtime (CPU fp32) on random inputs inside the profile; AtolError past ``atol``."""
    from export.onnx import AtolError, random_inputs
    from export.ort import ort_session

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


def int8_source(source: Path, info: Any, tokenizer: Any, config: TensorRTConfig, max_seq: int,
                workdir: Path) -> QdqModel:
    """The Q/DQ model an int8 engine is built from, guarded on CPU (:func:`export.tensorrt_qdq.qdq_for_tensorrt`)."""
    from export.quantize import load_guard_data

    if info.kind != "onnx":
        raise ArtifactError(f"{source} is a {info.kind} artifact; --int8 quantizes the fp32 model itself: build "
                            f"from the fp32 onnx artifact{f' (its parent {info.parent})' if info.parent else ''}")
    data = load_guard_data(config.data or "", config.format, info.labels, info.hierarchy, config.val_fraction,
                           config.seed, config.max_eval_samples)
    return qdq_for_tensorrt(source / "model.onnx", tokenizer, data, list(info.labels), max_seq,
                            config.calibration_samples, config.max_auc_drop, config.seed, workdir)


def engine_guard(runner: TensorRTRunner, qdq: QdqModel, config: TensorRTConfig, pad_id: int) -> dict[str, Any]:
    """The int8 engine on the CPU guard's rows: its macro ROC-AUC drop vs the fp32 model (UserError past
    ``max_auc_drop``) and its largest probability difference from the Q/DQ model on ONNX Runtime CPU."""
    from compress.predict import batched_logits, sigmoid

    def forward(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        short = config.min_seq - input_ids.shape[1]  # the profile takes no sequence under min_seq
        if short > 0:
            input_ids = np.pad(input_ids, ((0, 0), (0, short)), constant_values=pad_id)
            attention_mask = np.pad(attention_mask, ((0, 0), (0, short)))
        return runner(input_ids, attention_mask)

    probs = sigmoid(batched_logits(forward, qdq.guard.encoded, config.max_batch))
    verdict = qdq.guard.verdict("TensorRT int8 engine", probs)
    verdict["max_abs_prob_diff_vs_qdq_cpu"] = float(np.max(np.abs(probs - qdq.probs)))
    if not verdict["passed"]:
        raise UserError(f"the int8 engine loses too much accuracy: validation macro ROC-AUC {qdq.guard.baseline:.4f} "
                        f"fp32, {verdict['macro_roc_auc']:.4f} int8 engine (drop {verdict['drop']:.4f}, limit "
                        f"{config.max_auc_drop:g}; the Q/DQ model dropped {qdq.verdict['drop']:.4f} on CPU); nothing "
                        "was written; raise --max-auc-drop or build without --int8")
    return verdict


def guard_record(qdq: QdqModel, engine: dict[str, Any]) -> dict[str, Any]:
    """``extra.guard`` of an int8 tensorrt artifact: the rows, the fp32 baseline and both verdicts."""
    data = qdq.guard.data
    return {"data": data.source, "split": data.split, "rows": len(data.texts),
            "baseline_macro_roc_auc": qdq.guard.baseline, "max_auc_drop": qdq.guard.max_auc_drop,
            "reference": "onnxruntime CPU fp32 (model.onnx)", "qdq_onnxruntime_cpu": qdq.verdict, "engine": engine}


def export_tensorrt(artifact: str | os.PathLike[str], config: TensorRTConfig | None = None) -> Path:
    """Build, validate and write a tensorrt artifact from an ``onnx`` (or ONNX-quantized) artifact.

    Steps: checks (TensorRT and a GPU first) -> int8: the Q/DQ model and its CPU guard -> engine build ->
    validation on random inputs -> int8: the engine's guard -> the artifact, written atomically.

    Raises:
        UserError: no tensorrt package or no GPU (checked first), parse/build failures, an int8 guard failing.
        ArtifactError: the source has no model.onnx; --int8 from a source that is not fp32.
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
    pad_id = int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else 0
    precision = "int8" if config.int8 else "fp16" if config.fp16 else "fp32"
    with tempfile.TemporaryDirectory(prefix=".trt-", dir=out.parent if out.parent.exists() else None) as t:
        work = Path(t)
        qdq = int8_source(source, info, tokenizer, config, max_seq, work) if config.int8 else None
        plan = work / PLAN_FILE
        plan.write_bytes(build_engine(qdq.path if qdq else onnx_path, config, max_seq))
        runner = TensorRTRunner(plan)
        validation = validate_engine(runner, onnx_path, config, max_seq,
                                     int(info.extra.get("vocab_size", len(tokenizer))), pad_id, ATOL.get(precision))
        int8_extra = {"quantization": qdq.record, "guard": guard_record(qdq, engine_guard(runner, qdq, config, pad_id))} \
            if qdq else {}
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
                   "runtime": "tensorrt", "ids_dtype": validation.pop("ids_dtype"), **int8_extra},
        )
        with atomic_artifact_dir(out, config.overwrite) as tmp:
            shutil.move(str(plan), tmp / PLAN_FILE)
            if qdq:
                shutil.move(str(qdq.path), tmp / QDQ_FILE)
            copy_artifact_files(source, tmp, ["model.onnx", "tokenizer", "config.json"])
            write_info(tmp, new_info)
    return out
