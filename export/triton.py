"""A Triton model repository the stock Triton container serves unchanged.

For each artifact ``NAME`` (onnx, ONNX-quantized or tensorrt) the repository holds::

    NAME_tokenizer/   python backend: TEXT (BYTES, [1]) -> input_ids, attention_mask (INT64, [-1])
      config.pbtxt    dynamic batching, CPU instances, parameters max_length / pad_to_multiple_of
      1/model.py      export/triton_model/tokenizer_model.py (numpy + triton_python_backend_utils)
      1/wordpiece.py  export/triton_model/wordpiece.py (standard library only)
      1/tokenizer/    the artifact's tokenizer files
    NAME_model/       onnxruntime_onnx (model.onnx) or tensorrt_plan (model.plan)
      config.pbtxt    max_batch_size, dims [-1] sequence, dynamic_batching (preferred sizes, queue
                      delay), instance_group (CPU or GPU), label_filename
      labels.txt
    NAME_postprocess/ tensorrt only: python backend sigmoid, logits -> probabilities
      1/model.py      export/triton_model/postprocess_model.py
    NAME/             ensemble: TEXT (BYTES) -> PROBABILITIES (FP32, [L])
      config.pbtxt
      1/              (empty; ensembles still need a version directory)

An onnx artifact exported ``--with-tokenizer`` (``model_with_tokenizer.onnx``, the WordPiece
tokenizer as onnxruntime-extensions operators) needs no Python backend; its entry is one model::

    NAME/             onnxruntime_onnx: TEXT (BYTES, [1], reshaped to the graph's (B,) strings)
      config.pbtxt      -> PROBABILITIES (FP32, [L]); model_operations names the custom-op library
      1/model.onnx      the model with input ``TEXT`` and the sigmoid folded in (``PROBABILITIES``)
      libortextensions.so   the onnxruntime-extensions library, copied from its Python wheel
      labels.txt

Triton's onnxruntime backend hands ``op_library_filename`` to ONNX Runtime as it is, so the path is
absolute: ``<repository_path>/NAME/libortextensions.so`` (``--repository-path``, default
``/models``, where the container mounts the repository). The wheel's library leaves CPython's
symbols to the process that loads it: ``tritonserver`` can load it only with a libpython preloaded
(``LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libpython3.X.so.1.0``, whichever the image has), or after
replacing the file with a standalone ``libortextensions.so`` build of the same release.

Post-processing: for ONNX models the sigmoid is folded into the graph (one ``Sigmoid`` node
appended, output ``probabilities``): no extra Python hop per request. A TensorRT plan cannot be
edited, so plans get the ``NAME_postprocess`` Python model instead.

Tokenizer: ``model.py`` loads ``1/tokenizer`` with ``transformers`` when the container has it,
else ``tokenizers`` (``tokenizer.json``), else the pure-Python WordPiece of ``wordpiece.py`` for
BERT-family vocabularies (``vocab.txt``) -- the stock ``tritonserver:*-py3`` image has numpy but neither
library. Each request is padded to its longest text rounded up to ``pad_to_multiple_of``, so
requests of similar lengths have equal shapes and the dynamic batcher can merge them.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from compress.errors import ArtifactError, ConfigError
from export import triton_model

log = logging.getLogger(__name__)

KINDS = ("cpu", "gpu")
SERVABLE = ("onnx", "quantized", "tensorrt")
TEXT_INPUT = "TEXT"
PROBS_OUTPUT = "PROBABILITIES"

CUSTOM_OPS_LIBRARY = "libortextensions.so"  # the onnxruntime-extensions library, beside an in-graph tokenizer model

# Files of export/triton_model, copied into the repository (see copy_python_model)
TOKENIZER_MODEL = "tokenizer_model.py"
WORDPIECE = "wordpiece.py"
POSTPROCESS_MODEL = "postprocess_model.py"


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """``"4,8,16"`` (a ``--preferred-batch-sizes`` value) -> (4, 8, 16), sorted and unique; "" -> ().

    Raises:
        ConfigError: an item is not an integer (the message names the field).
    """
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"preferred_batch_sizes: expected comma-separated integers such as 4,8,16, "
                          f"got {text!r}") from None
    return tuple(sorted(set(sizes)))


@dataclass(frozen=True)
class TritonConfig:
    """`export triton` settings.

    Attributes:
        out: repository directory (replaced atomically when it exists).
        max_batch_size: Triton's max_batch_size for every model.
        preferred_batch_sizes: dynamic batcher's preferred sizes (each <= max_batch_size).
        max_queue_delay_us: how long the batcher may hold a request to fill a batch.
        instances: model instances per model (instance_group count).
        kind: ``cpu`` or ``gpu`` instances for the model (tokenizers always run on CPU).
        pad_to_multiple_of: tokenizer pads each request's length up to a multiple of this.
        repository_path: where the Triton container mounts the repository (the absolute path of
            the custom-op library of in-graph tokenizer models starts with it).
    """

    out: str = "triton_repo"
    overwrite: bool = False  # replace an earlier output of ours at out (never anything else)
    max_batch_size: int = 32
    preferred_batch_sizes: tuple[int, ...] = (4, 8, 16)
    max_queue_delay_us: int = 500
    instances: int = 1
    kind: str = "cpu"
    pad_to_multiple_of: int = 16
    repository_path: str = "/models"

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ConfigError(f"max_batch_size: must be >= 1, got {self.max_batch_size}")
        bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch_size]
        if bad:
            raise ConfigError(f"preferred_batch_sizes: {bad[0]} is not in [1, max_batch_size={self.max_batch_size}]; "
                              "pass sizes like 4,8,16")
        if self.max_queue_delay_us < 0:
            raise ConfigError(f"max_queue_delay_us: must be >= 0, got {self.max_queue_delay_us}")
        if self.instances < 1:
            raise ConfigError(f"instances: must be >= 1, got {self.instances}")
        if self.kind not in KINDS:
            raise ConfigError(f"kind: must be cpu or gpu, got {self.kind!r}")
        if self.pad_to_multiple_of < 1:
            raise ConfigError(f"pad_to_multiple_of: must be >= 1, got {self.pad_to_multiple_of}")
        if not self.repository_path.startswith("/"):
            raise ConfigError(f"repository_path: must be an absolute path inside the container (Triton hands the "
                              f"custom-op library path to ONNX Runtime as it is), got {self.repository_path!r}")


# ----------------------------------------------------------------------------------------------
# Parts


def fold_sigmoid(src: Path, dst: Path, output: str = "probabilities", rename_input: tuple[str, str] | None = None
                 ) -> None:
    """Copy an ONNX model, appending ``Sigmoid(logits) -> output`` as its only output.

    Args:
        rename_input: (old, new): also rename that graph input (the in-graph tokenizer model's ``text``
            becomes Triton's ``TEXT``).
    """
    import onnx
    from onnx import helper

    model = onnx.load(str(src))
    graph = model.graph
    logits = next((o for o in graph.output if o.name == "logits"), None)
    if logits is None:
        raise ArtifactError(f"{src} has no 'logits' output; re-export it with `modcompress-export onnx`")
    if rename_input is not None:
        old, new = rename_input
        for value in graph.input:
            if value.name == old:
                value.name = new
        for node in graph.node:
            node.input[:] = [new if name == old else name for name in node.input]
    graph.node.append(helper.make_node("Sigmoid", ["logits"], [output], name="modcompress_sigmoid"))
    probs = onnx.ValueInfoProto()
    probs.CopyFrom(logits)
    probs.name = output
    del graph.output[:]
    graph.output.append(probs)
    onnx.save(model, str(dst))


def copy_python_model(version_dir: Path, model_file: str, *helpers: str) -> None:
    """Copy a Python-backend model of :mod:`export.triton_model` into a model's version directory.

    ``model_file`` becomes ``version_dir/model.py`` (the name Triton loads); each helper keeps its
    name beside it, where the model's relative imports find it.
    """
    source = resources.files(triton_model)
    version_dir.mkdir(parents=True, exist_ok=True)
    (version_dir / "model.py").write_bytes(source.joinpath(model_file).read_bytes())
    for name in helpers:
        (version_dir / name).write_bytes(source.joinpath(name).read_bytes())


def set_dynamic_batching(config: Any, preferred_batch_sizes: Sequence[int], max_queue_delay_us: int) -> None:
    """Turn on Triton's dynamic batcher in a ``ModelConfig``: preferred sizes (sorted, unique) and queue delay."""
    config.dynamic_batching.preferred_batch_size.extend(sorted(set(preferred_batch_sizes)))
    config.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_us


def tokenizer_config(name: str, max_length: int, cfg: TritonConfig, ids_dtype: str = "int64") -> Any:
    """ModelConfig of the Python-backend tokenizer."""
    from tritonclient.grpc import model_config_pb2 as mc

    config = mc.ModelConfig(name=name, backend="python", max_batch_size=cfg.max_batch_size)
    config.input.add(name=TEXT_INPUT, data_type=mc.TYPE_STRING, dims=[1])
    dtype = mc.TYPE_INT32 if ids_dtype == "int32" else mc.TYPE_INT64
    config.output.add(name="input_ids", data_type=dtype, dims=[-1])
    config.output.add(name="attention_mask", data_type=dtype, dims=[-1])
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=cfg.instances)
    set_dynamic_batching(config, cfg.preferred_batch_sizes, cfg.max_queue_delay_us)
    for key, value in (("max_length", max_length), ("pad_to_multiple_of", cfg.pad_to_multiple_of),
                       ("ids_dtype", ids_dtype), ("tokenizer_impl", "auto")):
        config.parameters[key].string_value = str(value)
    return config


def model_config(name: str, platform: str, num_labels: int, cfg: TritonConfig, output: str,
                 ids_dtype: str = "int64") -> Any:
    """ModelConfig of the ONNX / TensorRT model: inputs (B, -1) ids, output (B, L)."""
    from tritonclient.grpc import model_config_pb2 as mc

    config = mc.ModelConfig(name=name, platform=platform, max_batch_size=cfg.max_batch_size)
    dtype = mc.TYPE_INT32 if ids_dtype == "int32" else mc.TYPE_INT64
    config.input.add(name="input_ids", data_type=dtype, dims=[-1])
    config.input.add(name="attention_mask", data_type=dtype, dims=[-1])
    out = config.output.add(name=output, data_type=mc.TYPE_FP32, dims=[num_labels])
    if output == "probabilities":
        out.label_filename = "labels.txt"
    kind = mc.ModelInstanceGroup.KIND_GPU if cfg.kind == "gpu" else mc.ModelInstanceGroup.KIND_CPU
    config.instance_group.add(kind=kind, count=cfg.instances)
    set_dynamic_batching(config, cfg.preferred_batch_sizes, cfg.max_queue_delay_us)
    return config


def text_model_config(name: str, num_labels: int, cfg: TritonConfig, library: str) -> Any:
    """ModelConfig of an in-graph tokenizer model: TEXT (BYTES) -> PROBABILITIES, custom-op ``library`` loaded."""
    from tritonclient.grpc import model_config_pb2 as mc

    config = mc.ModelConfig(name=name, platform="onnxruntime_onnx", max_batch_size=cfg.max_batch_size)
    text = config.input.add(name=TEXT_INPUT, data_type=mc.TYPE_STRING, dims=[1])
    text.reshape.SetInParent()  # reshape {} : each request's [1] becomes the graph's one string per batch row
    out = config.output.add(name=PROBS_OUTPUT, data_type=mc.TYPE_FP32, dims=[num_labels])
    out.label_filename = "labels.txt"
    kind = mc.ModelInstanceGroup.KIND_GPU if cfg.kind == "gpu" else mc.ModelInstanceGroup.KIND_CPU
    config.instance_group.add(kind=kind, count=cfg.instances)
    set_dynamic_batching(config, cfg.preferred_batch_sizes, cfg.max_queue_delay_us)
    config.model_operations.op_library_filename.append(library)
    return config


def add_text_model(repo: Path, artifact: Path, name: str, info: Any, text_model: Path, cfg: TritonConfig
                   ) -> dict[str, Any]:
    """Write one onnxruntime model TEXT -> PROBABILITIES for an in-graph tokenizer artifact (no Python backend)."""
    from export.ort import extensions_library
    from export.wordpiece_graph import TEXT_INPUT as GRAPH_TEXT

    model_dir = repo / name
    library = f"{cfg.repository_path.rstrip('/')}/{name}/{CUSTOM_OPS_LIBRARY}"
    write_config(model_dir, text_model_config(name, len(info.labels), cfg, library))
    (model_dir / "1").mkdir(parents=True)
    fold_sigmoid(text_model, model_dir / "1" / "model.onnx", PROBS_OUTPUT, rename_input=(GRAPH_TEXT, TEXT_INPUT))
    shutil.copy2(extensions_library(), model_dir / CUSTOM_OPS_LIBRARY)
    (model_dir / "labels.txt").write_text("\n".join(info.labels) + "\n")
    return {"name": name, "artifact": str(artifact), "platform": "onnxruntime_onnx", "models": [name],
            "labels": list(info.labels), "tokenizer": "the tokenizer in the graph (onnxruntime-extensions)",
            "custom_ops_library": library}


def postprocess_config(name: str, num_labels: int, cfg: TritonConfig) -> Any:
    """ModelConfig of the Python-backend sigmoid (TensorRT plans)."""
    from tritonclient.grpc import model_config_pb2 as mc

    config = mc.ModelConfig(name=name, backend="python", max_batch_size=cfg.max_batch_size)
    config.input.add(name="logits", data_type=mc.TYPE_FP32, dims=[num_labels])
    out = config.output.add(name="probabilities", data_type=mc.TYPE_FP32, dims=[num_labels])
    out.label_filename = "labels.txt"
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=cfg.instances)
    return config


def ensemble_config(name: str, num_labels: int, cfg: TritonConfig, steps: Sequence[tuple[str, dict, dict]]) -> Any:
    """ModelConfig of the ensemble TEXT -> PROBABILITIES; ``steps`` = (model, input_map, output_map)."""
    from tritonclient.grpc import model_config_pb2 as mc

    config = mc.ModelConfig(name=name, platform="ensemble", max_batch_size=cfg.max_batch_size)
    config.input.add(name=TEXT_INPUT, data_type=mc.TYPE_STRING, dims=[1])
    config.output.add(name=PROBS_OUTPUT, data_type=mc.TYPE_FP32, dims=[num_labels])
    for model, inputs, outputs in steps:
        step = config.ensemble_scheduling.step.add(model_name=model, model_version=-1)
        for key, value in inputs.items():
            step.input_map[key] = value
        for key, value in outputs.items():
            step.output_map[key] = value
    return config


def write_config(directory: Path, config: Any) -> None:
    """``config.pbtxt`` in protobuf text format."""
    from google.protobuf import text_format

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.pbtxt").write_text(text_format.MessageToString(config))


def add_model(repo: Path, artifact: Path, cfg: TritonConfig) -> dict[str, Any]:
    """Write the tokenizer, model, (postprocess) and ensemble of one artifact into ``repo``."""
    from compress.artifact import copy_artifact_files, read_info
    from export.runtime import model_name, text_model_path

    info = read_info(artifact)
    if info.kind not in SERVABLE:
        raise ArtifactError(f"{artifact} is a {info.kind} artifact; Triton serves onnx, ONNX-quantized or tensorrt "
                            "artifacts (run `modcompress-export onnx` first)")
    name = model_name(artifact)
    plan = info.kind == "tensorrt"
    if not plan and not (artifact / "model.onnx").is_file():
        raise ArtifactError(f"{artifact} has no model.onnx (a {info.extra.get('quantization', {}).get('mode', 'torch')} "
                            "artifact runs in PyTorch); Triton's stock backends need ONNX or TensorRT, quantize "
                            "with --mode int8-dynamic or int8-static instead")
    text_model = text_model_path(info, artifact) if info.kind == "onnx" else None
    if text_model is not None:
        return add_text_model(repo, artifact, name, info, text_model, cfg)
    if plan and cfg.kind != "gpu":
        raise ConfigError(f"{artifact} is a TensorRT plan; it runs on GPU instances only, pass --kind gpu")
    if plan and cfg.max_batch_size > int(info.extra.get("profile", {}).get("max_batch", cfg.max_batch_size)):
        raise ConfigError(f"max_batch_size {cfg.max_batch_size} exceeds the engine's profile max batch "
                          f"{info.extra['profile']['max_batch']}; pass --max-batch-size "
                          f"{info.extra['profile']['max_batch']} or rebuild the engine")
    num_labels = len(info.labels)
    ids_dtype = str(info.extra.get("ids_dtype", "int64"))
    labels_txt = "\n".join(info.labels) + "\n"

    tok_dir = repo / f"{name}_tokenizer"
    write_config(tok_dir, tokenizer_config(tok_dir.name, info.max_length, cfg, ids_dtype))
    copy_python_model(tok_dir / "1", TOKENIZER_MODEL, WORDPIECE)
    copy_artifact_files(artifact, tok_dir / "1", ["tokenizer"])

    model_dir = repo / f"{name}_model"
    (model_dir / "1").mkdir(parents=True)
    steps: list[tuple[str, dict, dict]] = [
        (tok_dir.name, {TEXT_INPUT: TEXT_INPUT}, {"input_ids": "input_ids", "attention_mask": "attention_mask"})]
    if plan:
        write_config(model_dir, model_config(model_dir.name, "tensorrt_plan", num_labels, cfg, "logits", ids_dtype))
        shutil.copy2(artifact / "model.plan", model_dir / "1" / "model.plan")
        post_dir = repo / f"{name}_postprocess"
        write_config(post_dir, postprocess_config(post_dir.name, num_labels, cfg))
        copy_python_model(post_dir / "1", POSTPROCESS_MODEL)
        (post_dir / "labels.txt").write_text(labels_txt)
        steps.append((model_dir.name, {"input_ids": "input_ids", "attention_mask": "attention_mask"},
                      {"logits": "logits"}))
        steps.append((post_dir.name, {"logits": "logits"}, {"probabilities": PROBS_OUTPUT}))
    else:
        write_config(model_dir, model_config(model_dir.name, "onnxruntime_onnx", num_labels, cfg, "probabilities"))
        fold_sigmoid(artifact / "model.onnx", model_dir / "1" / "model.onnx")
        (model_dir / "labels.txt").write_text(labels_txt)
        steps.append((model_dir.name, {"input_ids": "input_ids", "attention_mask": "attention_mask"},
                      {"probabilities": PROBS_OUTPUT}))
    ensemble_dir = repo / name
    write_config(ensemble_dir, ensemble_config(name, num_labels, cfg, steps))
    (ensemble_dir / "1").mkdir(parents=True)
    return {"name": name, "artifact": str(artifact), "platform": "tensorrt_plan" if plan else "onnxruntime_onnx",
            "models": [s[0] for s in steps] + [name], "labels": list(info.labels)}


def write_repository(artifacts: Sequence[str | os.PathLike[str]], config: TritonConfig) -> tuple[Path, list[dict]]:
    """Write the repository for ``artifacts`` to ``config.out`` (atomically); returns (path, per-model summary)."""
    from compress.artifact import atomic_artifact_dir, check_out
    from export.runtime import model_name

    if not artifacts:
        raise ConfigError("artifacts: pass at least one onnx / quantized / tensorrt artifact directory")
    paths = [Path(a) for a in artifacts]
    names = [model_name(p) for p in paths]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"two artifacts would both be served as {dupes[0]!r}; give the directories distinct names")
    out = Path(config.out)
    if any(out.resolve() == p.resolve() for p in paths):
        raise ConfigError(f"out: {out} is one of the artifacts; pass another --out")
    check_out(out, config.overwrite, inputs=paths)
    summary = []
    with atomic_artifact_dir(out, config.overwrite) as tmp:
        for path in paths:
            summary.append(add_model(tmp, path, config))
    log.info("Triton repository with %d model(s) written to %s", len(summary), out)
    return out, summary
