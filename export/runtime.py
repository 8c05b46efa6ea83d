"""Load any artifact and run it: the one way to get predictions from an artifact (serve, bench, tests).

``load(artifact_dir, backend=...) -> Predictor``; ``Predictor.predict(texts) -> (N, L)`` float32
probabilities. Backends:

========== ==================================================================================
torch      PyTorch fp32 (teacher / student; bf16 / torch-int8 quantized artifacts run fp32 weights)
torch-bf16 PyTorch under ``torch.autocast(bfloat16)`` (fast only with AMX / AVX512-BF16 or a GPU)
torch-int8 ``torch.ao`` dynamic int8 (a torch-int8-dynamic artifact; a teacher/student is
           quantized on load)
ort        ONNX Runtime, CPU execution provider (onnx and ONNX-quantized artifacts)
ort-text   ONNX Runtime, CPU, strings in: ``model_with_tokenizer.onnx`` (``export onnx
           --with-tokenizer``), the WordPiece tokenizer runs inside the graph
ort-cuda   ONNX Runtime, CUDA execution provider (needs onnxruntime-gpu and a GPU)
ort-trt    ONNX Runtime, TensorRT execution provider (needs onnxruntime-gpu, TensorRT, a GPU)
tensorrt   a TensorRT engine (``model.plan``; needs the tensorrt package and a GPU)
sklearn    baselines (tfidf, fasttext) through ``compress.models.load_baseline``
========== ==================================================================================

``auto`` picks by artifact kind: teacher/student -> torch or torch-bf16 (below), onnx -> ort,
quantized -> the ``extra.runtime`` its quantizer recorded, tensorrt -> tensorrt, baseline -> sklearn.
For a teacher/student, :func:`auto_torch_backend` serves bf16 autocast only where it is measured to
be faster for inference on this machine (:func:`compress.precision.choose_precision`: bf16 hardware,
a forward pass at least 10% faster on a (32, 64) batch, cached per CPU / model / shape) and it moves
that batch's probabilities by at most :data:`BF16_MAX_PROB_DIFF`; otherwise fp32. The choice and its
reason are the predictor's ``precision_choice``. :func:`resolve_backend` answers before any model
loads (``serve score`` fingerprints with it), so it says ``torch`` for both.

Text predictors are built on :func:`compress.predict.batched_logits`, the predict core that
training and distillation also use; each backend is a ``forward(input_ids, attention_mask) ->
logits``. They tokenize once (truncated to the artifact's max_length, no padding), sort the texts
by length, run micro-batches of at most ``max_batch_size`` padded to their own longest text, and
return rows in the input order. On CPU backends a text also starts a new micro-batch when it is
shorter than ``min_fill`` (0.5) x the batch's longest: padding is compute, and on OLID requests
of 32 tweets this ran ~1.5x faster than fixed batches of 32 (GPU backends keep full batches,
min_fill 0). The CPU ONNX Runtime backend also caps a micro-batch at ``max_tokens`` (256) padded
tokens, about 8 tweets: MiniLM int8 ran bulk calls of OLID tweets 1.5-1.7x faster than with
micro-batches of up to 32 (four ``bench quant-speed --levers`` runs; PyTorch went the other way,
so its backends keep full micro-batches). ``predict_batch(input_ids, attention_mask)`` runs one already-tokenized batch
(benchmarks). Dynamic int8 (ONNX and torch) quantizes activations with one scale per batch, so a
text's probabilities move slightly (~1e-4) with its batch-mates.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from compress.batching import Encoded, encode
from compress.cpu import physical_cores
from compress.errors import ArtifactError, ConfigError, UserError
from compress.predict import Forward, batched_logits, sigmoid, torch_forward
from export.ort import ort_providers, ort_session, session_forward

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "torch-bf16", "torch-int8", "ort", "ort-text", "ort-cuda", "ort-trt", "tensorrt",
            "sklearn")
TORCH_BACKENDS = ("torch", "torch-bf16", "torch-int8")
ORT_BACKENDS = ("ort", "ort-cuda", "ort-trt")
DEFAULT_MAX_BATCH_SIZE = 32
# auto serves bf16 only if it moves no probability of the probe batch by more than this: the tolerance
# torch-bf16 predictions are held to against fp32 (tests/export/test_runtime.py)
BF16_MAX_PROB_DIFF = 2e-2
CPU_ORT_MAX_TOKENS = 256


@runtime_checkable
class Predictor(Protocol):
    """What serve and bench need from a model.

    Attributes:
        name: short model name (used as the Triton model name).
        labels: label names, one per output column (L).
        thresholds: (L,) float32 per-label decision thresholds.
        max_batch_size: the largest batch ``predict`` accepts in one call.
    """

    name: str
    labels: list[str]
    thresholds: np.ndarray
    max_batch_size: int

    def predict(self, texts: list[str]) -> np.ndarray:
        """Return (N, L) float32 probabilities for N texts."""
        ...


def model_name(path: Path) -> str:
    """A Triton-safe model name from an artifact directory name."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", path.resolve().name).strip("._") or "model"
    return name


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise UserError("predict takes a list of texts, got one string; wrap it in a list")
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise UserError(f"text {bad[0]} is {type(texts[bad[0]]).__name__}, not a string; pass strings only")
    return texts


@dataclass
class TextPredictor:
    """Texts -> probabilities on :func:`compress.predict.batched_logits`: tokenize once, length-sort,
    micro-batch with dynamic padding, run ``forward``, sigmoid.

    Attributes:
        name / labels / thresholds / max_batch_size: the :class:`Predictor` attributes.
        backend: the backend that runs ``forward``.
        tokenizer: Hugging Face tokenizer of the artifact.
        max_length: truncation length.
        forward: ``(input_ids (B, T) int64, attention_mask (B, T) int64) -> logits (B, L) float32``.
        info: the artifact's parsed artifact.json.
        min_fill: a text shorter than this fraction of its micro-batch's longest starts a new one.
        max_tokens: most padded tokens (texts x longest) per micro-batch; None for no limit.
        source: the :func:`load` arguments that rebuild this predictor in another process (how
            ``serve`` loads one copy per Triton model instance); None when built by hand.
        precision_choice: how ``auto`` chose between torch and torch-bf16
            (:meth:`compress.precision.PrecisionChoice.record`); None for other backends.
    """

    name: str
    labels: list[str]
    thresholds: np.ndarray
    max_batch_size: int
    backend: str
    tokenizer: Any
    max_length: int
    forward: Forward
    info: Any = None
    min_fill: float = 0.5
    source: dict[str, Any] | None = None
    precision_choice: dict[str, Any] | None = None
    max_tokens: int | None = None
    pad_id: int = field(init=False)

    def __post_init__(self) -> None:
        pad = getattr(self.tokenizer, "pad_token_id", None)
        self.pad_id = int(pad) if pad is not None else 0

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, truncated to ``max_length``, unpadded."""
        return encode(self.tokenizer, texts, self.max_length).input_ids

    def predict_batch(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """One already-tokenized batch: input_ids, attention_mask (B, T) -> (B, L) float32 probabilities."""
        ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        mask = np.ascontiguousarray(attention_mask, dtype=np.int64)
        return sigmoid(self.forward(ids, mask))

    def predict(self, texts: list[str]) -> np.ndarray:
        """(N, L) float32 probabilities for N texts, in input order."""
        texts = _check_texts(texts)
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        encoded = Encoded(self.encode(texts), None, self.pad_id)
        return sigmoid(batched_logits(self.forward, encoded, self.max_batch_size, self.min_fill,
                                      max_tokens=self.max_tokens))


@dataclass
class BaselinePredictor:
    """A baseline (tfidf, fasttext) behind the Predictor interface; no token ids, so no ``predict_batch``.

    Attributes:
        classifier: the fitted baseline from :func:`compress.models.load_baseline` (``predict_proba``).
        source: as :attr:`TextPredictor.source`.
    """

    name: str
    labels: list[str]
    thresholds: np.ndarray
    max_batch_size: int
    classifier: Any
    backend: str = "sklearn"
    info: Any = None
    source: dict[str, Any] | None = None

    def predict(self, texts: list[str]) -> np.ndarray:
        """(N, L) float32 probabilities."""
        texts = _check_texts(texts)
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return np.asarray(self.classifier.predict_proba(texts), dtype=np.float32)

    def predict_batch(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        raise UserError(f"{self.name} is a baseline ({self.info.architecture if self.info else 'sklearn'}); it "
                        "reads texts, not token ids; call predict(texts)")


@dataclass
class StringPredictor:
    """The in-graph tokenizer model (``model_with_tokenizer.onnx``): texts -> probabilities in one session.

    ``predict`` sorts the texts by length in characters (the graph tokenizes, so there are no token
    counts to sort by), cuts micro-batches as :class:`TextPredictor` does (``min_fill``, on characters)
    and runs each: the graph pads a batch to its longest text. NUL characters are removed first
    (ONNX Runtime's string operators end a string there; Hugging Face's clean-up drops them).
    ``predict_batch`` (token ids in) runs ``model.onnx`` in a second session, opened on first use.

    Attributes:
        session: the ONNX Runtime session (custom operators registered).
        onnx_path / threads: ``model.onnx`` and the thread count, for ``predict_batch``.
    """

    name: str
    labels: list[str]
    thresholds: np.ndarray
    max_batch_size: int
    session: Any
    onnx_path: Path
    threads: int | None = None
    backend: str = "ort-text"
    info: Any = None
    min_fill: float = 0.5
    source: dict[str, Any] | None = None
    _ids_forward: Forward | None = field(default=None, init=False, repr=False)

    def predict(self, texts: list[str]) -> np.ndarray:
        """(N, L) float32 probabilities for N texts, in input order."""
        from compress.batching import micro_batches
        from export.wordpiece_graph import TEXT_INPUT, strip_nul

        texts = strip_nul(_check_texts(texts))
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        if not texts:
            return out
        lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
        for rows in micro_batches(lengths, self.max_batch_size, self.min_fill):
            batch = np.array([texts[i] for i in rows], dtype=object)
            out[rows] = sigmoid(self.session.run(["logits"], {TEXT_INPUT: batch})[0])
        return out

    def predict_batch(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """One already-tokenized batch through ``model.onnx``: (B, T) ids and mask -> (B, L) probabilities."""
        if self._ids_forward is None:
            self._ids_forward = ort_forward(self.onnx_path, "ort", self.threads)
        ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        mask = np.ascontiguousarray(attention_mask, dtype=np.int64)
        return sigmoid(self._ids_forward(ids, mask))


def text_model_path(info: Any, directory: Path) -> Path | None:
    """``model_with_tokenizer.onnx`` of an artifact exported ``--with-tokenizer``, or None."""
    record = info.extra.get("text_model")
    if not isinstance(record, dict) or not isinstance(record.get("file"), str):
        return None
    path = directory / Path(record["file"]).name
    return path if path.is_file() else None


# ----------------------------------------------------------------------------------------------
# Backends: each is a compress.predict.Forward, input_ids, attention_mask (B, T) -> logits (B, L)
# (PyTorch: compress.predict.torch_forward).


def ort_forward(onnx_path: Path, backend: str = "ort", threads: int | None = None) -> Forward:
    """ONNX Runtime session (see :func:`export.ort.ort_session` for the options)."""
    session = ort_session(onnx_path, ort_providers(backend), threads)
    names = {i.name for i in session.get_inputs()}
    if names != {"input_ids", "attention_mask"}:
        raise ArtifactError(f"{onnx_path} takes inputs {sorted(names)}, not input_ids + attention_mask; "
                            "re-export it with `modcompress-export onnx`")
    return session_forward(session)


def resolve_backend(info: Any, directory: Path, backend: str) -> str:
    """``auto`` -> the backend for this artifact's kind; otherwise check the backend fits the artifact."""
    if backend not in BACKENDS and backend != "baseline":
        raise ConfigError(f"backend: must be one of {', '.join(BACKENDS)}, got {backend!r}")
    backend = "sklearn" if backend == "baseline" else backend
    if backend == "auto":
        if info.kind == "baseline":
            return "sklearn"
        if info.kind in ("teacher", "student"):
            return "torch"
        if info.kind == "onnx":
            return "ort"
        if info.kind == "tensorrt":
            return "tensorrt"
        return str(info.extra.get("runtime", "ort"))
    has_torch = info.kind in ("teacher", "student") or (info.kind == "quantized" and (directory / "model").is_dir())
    if backend in TORCH_BACKENDS and not has_torch:
        raise ArtifactError(f"{directory} is a {info.kind} artifact without a PyTorch model; backend {backend} needs "
                            "a teacher, student or torch-quantized artifact (try --backend auto)")
    if backend == "ort-text" and text_model_path(info, directory) is None:
        raise ArtifactError(f"{directory} has no model_with_tokenizer.onnx; backend ort-text needs an onnx artifact "
                            "exported with `modcompress-export onnx --with-tokenizer`")
    if backend in ORT_BACKENDS and not (directory / "model.onnx").is_file():
        raise ArtifactError(f"{directory} has no model.onnx; backend {backend} needs an onnx or ONNX-quantized "
                            "artifact (`modcompress-export onnx` makes one)")
    if backend == "tensorrt" and not (directory / "model.plan").is_file():
        raise ArtifactError(f"{directory} has no model.plan; backend tensorrt needs a tensorrt artifact "
                            "(`modcompress-export tensorrt` makes one)")
    if backend == "sklearn" and info.kind != "baseline":
        raise ArtifactError(f"{directory} is a {info.kind} artifact; backend sklearn is for baselines")
    return backend


def auto_torch_backend(model: Any, tokenizer: Any, max_length: int, max_batch_size: int) -> tuple[str, Any]:
    """``torch`` or ``torch-bf16`` for a teacher / student loaded with ``auto``, and the
    :class:`compress.precision.PrecisionChoice` behind it.

    The probe batch is (min(max_batch_size, 32), min(max_length, 64)) seeded token ids. A bf16 that
    :func:`compress.precision.choose_precision` measured (or cached) as faster is kept only when it
    moves none of that batch's probabilities by more than :data:`BF16_MAX_PROB_DIFF` from fp32.
    """
    import torch

    from compress.precision import choose_precision
    from compress.precision_probe import PROBE_LENGTH, InferenceProbe, probe_inputs

    vocab_sizes = [len(tokenizer), getattr(getattr(model, "config", None), "vocab_size", None)]
    vocab = min(v for v in vocab_sizes if isinstance(v, int) and v > 0)
    ids, mask = probe_inputs(vocab, min(max_batch_size, DEFAULT_MAX_BATCH_SIZE), min(max_length, PROBE_LENGTH),
                             getattr(tokenizer, "cls_token_id", None), getattr(tokenizer, "sep_token_id", None))
    probe = InferenceProbe(model, ids, mask)
    choice = choose_precision("auto", torch.device("cpu"), probe)
    if choice.precision == "bf16" and choice.how in ("measured", "cached"):
        diff = probe.max_prob_diff()
        if diff > BF16_MAX_PROB_DIFF:
            speedup = choice.bf16_speedup or 0.0
            choice = dataclasses.replace(
                choice, precision="no", how="accuracy",
                reason=f"auto -> fp32: bf16 forward pass {speedup:.2f}x faster here, but it moves probabilities by up "
                       f"to {diff:.3g} (> {BF16_MAX_PROB_DIFF:g})")
            log.info(choice.reason)
        else:
            choice = dataclasses.replace(choice, reason=f"{choice.reason}; probabilities within {diff:.2g} of fp32")
    return ("torch-bf16" if choice.precision == "bf16" else "torch"), choice


def load(artifact_dir: str | os.PathLike[str], backend: str = "auto",
         max_batch_size: int = DEFAULT_MAX_BATCH_SIZE, threads: int | None = None) -> Predictor:
    """Load an artifact as a :class:`Predictor`.

    Args:
        artifact_dir: any artifact directory.
        backend: one of :data:`BACKENDS` (``auto`` picks by kind; for a teacher/student by measuring,
            :func:`auto_torch_backend`).
        max_batch_size: micro-batch size of ``predict`` (and the Triton max batch size).
        threads: intra-op threads for ONNX Runtime / PyTorch; default the physical cores.

    Raises:
        ArtifactError: not an artifact, or the backend does not fit it. UserError: the backend
        needs a package or device that is absent (one line with the fix).
    """
    from compress.artifact import read_info

    if max_batch_size < 1:
        raise ConfigError(f"max_batch_size: must be >= 1, got {max_batch_size}")
    directory = Path(artifact_dir)
    info = read_info(directory)
    requested, backend = backend, resolve_backend(info, directory, backend)
    thresholds = np.asarray(info.thresholds if info.thresholds else [0.5] * len(info.labels), dtype=np.float32)
    name = model_name(directory)
    source = {"artifact_dir": str(directory.resolve()), "backend": backend, "max_batch_size": max_batch_size,
              "threads": threads}
    precision_choice = None
    if backend == "sklearn":
        from compress.models import load_baseline

        return BaselinePredictor(name, list(info.labels), thresholds, max_batch_size,
                                 load_baseline(directory), info=info, source=source)
    if backend == "ort-text":
        path = text_model_path(info, directory)
        assert path is not None  # resolve_backend checked it
        session = ort_session(path, ort_providers("ort"), threads, custom_ops=True)
        return StringPredictor(name, list(info.labels), thresholds, max_batch_size, session, directory / "model.onnx",
                               threads, info=info, source=source)

    from transformers import AutoTokenizer

    if backend in TORCH_BACKENDS:
        import torch

        from compress.models import load_model
        from compress.quantize_torch import int8_module_names, load_torch_int8, torch_int8_dynamic

        if threads:
            torch.set_num_threads(threads)
        elif torch.get_num_threads() > physical_cores():
            torch.set_num_threads(physical_cores())
        if backend == "torch-int8":
            if info.extra.get("quantization", {}).get("mode") == "torch-int8-dynamic":
                model, tokenizer = load_torch_int8(directory)
            else:
                model, tokenizer = load_model(directory)
                model = torch_int8_dynamic(model, int8_module_names(model))
        else:
            model, tokenizer = load_model(directory)
        if requested == "auto" and backend == "torch":
            backend, choice = auto_torch_backend(model, tokenizer, info.max_length, max_batch_size)
            precision_choice = choice.record()
            source["backend"] = backend  # serve's model instances load what was chosen here, without measuring
        forward = torch_forward(model, "bf16" if backend == "torch-bf16" else "no")
    elif backend in ORT_BACKENDS:
        tokenizer = AutoTokenizer.from_pretrained(str(directory / "tokenizer"))
        forward = ort_forward(directory / "model.onnx", backend, threads)
    else:  # tensorrt
        from export.tensorrt import TensorRTRunner

        tokenizer = AutoTokenizer.from_pretrained(str(directory / "tokenizer"))
        runner = TensorRTRunner(directory / "model.plan")
        profile = info.extra.get("profile", {})
        max_batch_size = min(max_batch_size, int(profile.get("max_batch", max_batch_size)))
        forward = runner
    max_length = int(info.extra.get("profile", {}).get("max_seq", info.max_length)) if backend == "tensorrt" \
        else info.max_length
    min_fill = 0.0 if backend in ("ort-cuda", "ort-trt", "tensorrt") else 0.5
    return TextPredictor(name, list(info.labels), thresholds, max_batch_size, backend, tokenizer, max_length,
                         forward, info=info, min_fill=min_fill, source=source, precision_choice=precision_choice,
                         max_tokens=CPU_ORT_MAX_TOKENS if backend == "ort" else None)
