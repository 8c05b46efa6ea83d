"""A Triton model repository the stock Triton container serves unchanged.

For each artifact ``NAME`` (onnx, ONNX-quantized or tensorrt) the repository holds::

    NAME_tokenizer/   python backend: TEXT (BYTES, [1]) -> input_ids, attention_mask (INT64, [-1])
      config.pbtxt    dynamic batching, CPU instances, parameters max_length / pad_to_multiple_of
      1/model.py      self-contained (numpy + triton_python_backend_utils)
      1/tokenizer/    the artifact's tokenizer files
    NAME_model/       onnxruntime_onnx (model.onnx) or tensorrt_plan (model.plan)
      config.pbtxt    max_batch_size, dims [-1] sequence, dynamic_batching (preferred sizes, queue
                      delay), instance_group (CPU or GPU), label_filename
      labels.txt
    NAME_postprocess/ tensorrt only: python backend sigmoid, logits -> probabilities
    NAME/             ensemble: TEXT (BYTES) -> PROBABILITIES (FP32, [L])
      config.pbtxt
      1/              (empty; ensembles still need a version directory)

Post-processing: for ONNX models the sigmoid is folded into the graph (one ``Sigmoid`` node
appended, output ``probabilities``): no extra Python hop per request. A TensorRT plan cannot be
edited, so plans get the ``NAME_postprocess`` Python model instead.

Tokenizer: ``model.py`` loads ``1/tokenizer`` with ``transformers`` when the container has it,
else ``tokenizers`` (``tokenizer.json``), else a built-in pure-Python WordPiece for BERT-family
vocabularies (``vocab.txt``) -- the stock ``tritonserver:*-py3`` image has numpy but neither
library. Each request is padded to its longest text rounded up to ``pad_to_multiple_of``, so
requests of similar lengths have equal shapes and the dynamic batcher can merge them.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress.errors import ArtifactError, ConfigError

log = logging.getLogger(__name__)

KINDS = ("cpu", "gpu")
SERVABLE = ("onnx", "quantized", "tensorrt")
TEXT_INPUT = "TEXT"
PROBS_OUTPUT = "PROBABILITIES"


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
    """

    out: str = "triton_repo"
    max_batch_size: int = 32
    preferred_batch_sizes: tuple[int, ...] = (4, 8, 16)
    max_queue_delay_us: int = 500
    instances: int = 1
    kind: str = "cpu"
    pad_to_multiple_of: int = 16

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


# ----------------------------------------------------------------------------------------------
# The Python-backend models (written verbatim into the repository).

TOKENIZER_MODEL_PY = r'''"""Triton Python-backend tokenizer written by `modcompress-export triton`.

TEXT (BYTES, [B, 1]) -> input_ids, attention_mask (INT64, [B, T]). The tokenizer is loaded from
./tokenizer beside this file with, in order: transformers, tokenizers (tokenizer.json), or the
pure-Python WordPiece below (BERT-family vocab.txt), so the stock Triton image (numpy only) runs
it. Parameter `tokenizer_impl` (auto | transformers | tokenizers | wordpiece) forces one.
T = the request's longest text, rounded up to `pad_to_multiple_of`, at most `max_length`.
"""

import json
import os
import unicodedata

import numpy as np
import triton_python_backend_utils as pb_utils


def _is_whitespace(ch):
    if ch in (" ", "\t", "\n", "\r"):
        return True
    return unicodedata.category(ch) == "Zs"


def _is_control(ch):
    if ch in ("\t", "\n", "\r"):
        return False
    return unicodedata.category(ch) in ("Cc", "Cf")


def _is_punctuation(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp):
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


class WordPiece:
    """BERT tokenization (BasicTokenizer + greedy longest-match WordPiece) from vocab.txt."""

    def __init__(self, directory):
        with open(os.path.join(directory, "vocab.txt"), encoding="utf-8") as f:
            self.vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
        config = {}
        path = os.path.join(directory, "tokenizer_config.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                config = json.load(f)
        self.lower = bool(config.get("do_lower_case", True))
        strip = config.get("strip_accents")
        self.strip_accents = self.lower if strip is None else bool(strip)
        self.chinese = bool(config.get("tokenize_chinese_chars", True))
        self.unk = config.get("unk_token", "[UNK]")
        self.cls_id = self.vocab[config.get("cls_token", "[CLS]")]
        self.sep_id = self.vocab[config.get("sep_token", "[SEP]")]
        self.pad_id = self.vocab.get(config.get("pad_token", "[PAD]"), 0)
        self.unk_id = self.vocab[self.unk]
        self.max_chars = 100

    def _normalize(self, text):
        out = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or _is_control(ch):
                continue
            if _is_whitespace(ch):
                out.append(" ")
            elif self.chinese and _is_cjk(cp):
                out.extend((" ", ch, " "))
            else:
                out.append(ch)
        text = "".join(out)
        if self.strip_accents:
            text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
        if self.lower:
            text = text.lower()
        return text

    def _words(self, text):
        words, current = [], []
        for ch in text:
            if ch == " " or _is_whitespace(ch):
                if current:
                    words.append("".join(current))
                    current = []
            elif _is_punctuation(ch):
                if current:
                    words.append("".join(current))
                    current = []
                words.append(ch)
            else:
                current.append(ch)
        if current:
            words.append("".join(current))
        return words

    def _wordpiece(self, word):
        if len(word) > self.max_chars:
            return [self.unk_id]
        ids, start = [], 0
        while start < len(word):
            end, found = len(word), None
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    found = self.vocab[piece]
                    break
                end -= 1
            if found is None:
                return [self.unk_id]
            ids.append(found)
            start = end
        return ids

    def __call__(self, texts, max_length):
        rows = []
        for text in texts:
            ids = []
            for word in self._words(self._normalize(text)):
                ids.extend(self._wordpiece(word))
            rows.append([self.cls_id, *ids[: max(0, max_length - 2)], self.sep_id])
        return rows


def load_tokenizer(directory, impl="auto"):
    """(encode(texts, max_length) -> list of id lists, pad_id, name of the implementation)."""
    errors = []
    if impl in ("auto", "transformers"):
        try:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(directory)
            pad = tok.pad_token_id if tok.pad_token_id is not None else 0

            def encode(texts, max_length):
                return tok(list(texts), truncation=True, max_length=max_length, padding=False)["input_ids"]

            return encode, int(pad), "transformers"
        except Exception as exc:  # noqa: BLE001 - missing package or unreadable files
            errors.append(f"transformers: {exc}")
    if impl in ("auto", "tokenizers") and os.path.exists(os.path.join(directory, "tokenizer.json")):
        try:
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
            tok.no_padding()
            pad = 0
            path = os.path.join(directory, "special_tokens_map.json")
            if os.path.exists(path):
                with open(path, encoding="utf-8") as f:
                    pad_token = json.load(f).get("pad_token")
                if isinstance(pad_token, dict):
                    pad_token = pad_token.get("content")
                if pad_token is not None and tok.token_to_id(pad_token) is not None:
                    pad = tok.token_to_id(pad_token)

            def encode(texts, max_length):
                tok.enable_truncation(max_length)
                return [e.ids for e in tok.encode_batch(list(texts))]

            return encode, int(pad), "tokenizers"
        except Exception as exc:  # noqa: BLE001
            errors.append(f"tokenizers: {exc}")
    if impl in ("auto", "wordpiece") and os.path.exists(os.path.join(directory, "vocab.txt")):
        wp = WordPiece(directory)
        return wp, wp.pad_id, "wordpiece"
    raise RuntimeError("cannot load the tokenizer in " + directory + " (" + "; ".join(errors) + "); install "
                       "`tokenizers` in the Triton Python environment (or a conda-pack EXECUTION_ENV_PATH)")


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        self.max_length = int(params.get("max_length", "128"))
        self.multiple = max(1, int(params.get("pad_to_multiple_of", "1")))
        self.dtype = np.int32 if params.get("ids_dtype", "int64") == "int32" else np.int64
        # beside this file (1/tokenizer); args["model_repository"] meant other paths in old Triton releases
        directory = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tokenizer")
        if not os.path.isdir(directory):
            directory = os.path.join(args["model_repository"], args["model_version"], "tokenizer")
        self.encode, self.pad_id, self.impl = load_tokenizer(directory, params.get("tokenizer_impl", "auto"))

    def _batch(self, texts):
        rows = self.encode(texts, self.max_length)
        longest = max([len(r) for r in rows] + [1])
        width = min(self.max_length, -(-longest // self.multiple) * self.multiple)
        ids = np.full((len(rows), width), self.pad_id, dtype=self.dtype)
        mask = np.zeros((len(rows), width), dtype=self.dtype)
        for i, row in enumerate(rows):
            row = row[:width]
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return ids, mask

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                raw = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
                texts = [t.decode("utf-8", "replace") if isinstance(t, bytes) else str(t) for t in raw]
                ids, mask = self._batch(texts)
                responses.append(pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor("input_ids", ids), pb_utils.Tensor("attention_mask", mask)]))
            except Exception as exc:  # noqa: BLE001 - one bad request must not fail the others
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError("tokenizer: " + str(exc))))
        return responses

    def finalize(self):
        self.encode = None
'''

POSTPROCESS_MODEL_PY = r'''"""Triton Python-backend post-processing written by `modcompress-export triton`: logits -> probabilities (sigmoid)."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        pass

    def execute(self, requests):
        responses = []
        for request in requests:
            logits = pb_utils.get_input_tensor_by_name(request, "logits").as_numpy().astype(np.float32)
            probs = (0.5 * (1.0 + np.tanh(0.5 * logits))).astype(np.float32)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("probabilities", probs)]))
        return responses
'''


# ----------------------------------------------------------------------------------------------
# Parts


def fold_sigmoid(src: Path, dst: Path) -> None:
    """Copy an ONNX model, appending ``Sigmoid(logits) -> probabilities`` as its only output."""
    import onnx
    from onnx import helper

    model = onnx.load(str(src))
    graph = model.graph
    logits = next((o for o in graph.output if o.name == "logits"), None)
    if logits is None:
        raise ArtifactError(f"{src} has no 'logits' output; re-export it with `modcompress-export onnx`")
    graph.node.append(helper.make_node("Sigmoid", ["logits"], ["probabilities"], name="modcompress_sigmoid"))
    probs = onnx.ValueInfoProto()
    probs.CopyFrom(logits)
    probs.name = "probabilities"
    del graph.output[:]
    graph.output.append(probs)
    onnx.save(model, str(dst))


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
    from export.runtime import model_name

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
    (tok_dir / "1").mkdir(parents=True)
    (tok_dir / "1" / "model.py").write_text(TOKENIZER_MODEL_PY)
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
        (post_dir / "1").mkdir(parents=True)
        (post_dir / "1" / "model.py").write_text(POSTPROCESS_MODEL_PY)
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
    from compress.artifact import atomic_artifact_dir
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
    summary = []
    with atomic_artifact_dir(out) as tmp:
        for path in paths:
            summary.append(add_model(tmp, path, config))
    log.info("Triton repository with %d model(s) written to %s", len(summary), out)
    return out, summary
