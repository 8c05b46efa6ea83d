"""ONNX export with named dynamic axes, ALWAYS validated against the PyTorch model it came from.

Recipe: load the teacher/student (:func:`compress.models.load_model`) -> export to ``model.onnx``
with inputs ``input_ids`` (B, T) and ``attention_mask`` (B, T) int64 and output ``logits`` (B, L)
float32, axes named ``batch_size`` and ``sequence_length`` -> optional ONNX Runtime graph
optimization (``O1``/``O2``) -> validation: ONNX Runtime (CPU) vs PyTorch on batch sizes 1, 3, 8
and lengths 5, 17, ``max_length`` with ragged attention masks; input/output names, then output
shapes, then the max absolute difference against ``atol`` -> a new artifact (kind ``onnx``,
parent = the source) holding ``model.onnx``, ``tokenizer/``, the labels and thresholds, and the
measured numbers under ``extra.validation``.

Hugging Face checkpoints (architectures ``hf``, ``distilbert``) go through optimum-onnx
(``onnx_export_from_model`` with a config restricted to the two inputs, so BERT-style models do
not grow a ``token_type_ids`` input that every client and the Triton tokenizer would then have
to feed) and ``--optimize`` uses optimum's ``ORTOptimizer`` (O2 = transformer fusions: Attention,
SkipLayerNormalization, BiasGelu). Own architectures (``textcnn``, ``bilstm``) go through
``torch.onnx.export`` (TorchScript exporter); ``--optimize`` there saves ONNX Runtime's offline
basic (O1) / extended (O2) graph optimizations.

O2 graphs use ONNX Runtime contrib operators: fastest on ONNX Runtime, but TensorRT cannot parse
them. Export with ``--optimize none`` for ``export tensorrt``.

``--with-tokenizer`` also writes ``model_with_tokenizer.onnx`` (:mod:`export.wordpiece_graph`): raw
UTF-8 strings ``text`` (B,) -> ``logits`` (B, L), the artifact's WordPiece tokenizer as
onnxruntime-extensions operators in front of the same model. It is checked like the model: token
ids identical to the Hugging Face tokenizer's on every check text (built-in tricky texts, plus
``--tokenizer-texts FILE``; a mismatch fails the export unless ``--allow-tokenizer-mismatches``,
and is recorded with its text), and probabilities within 1e-5 of ``model.onnx`` fed the Hugging
Face ids (on up to 512 of the texts). ``artifact.json`` records it under ``extra.text_model``;
readers that do not know the key ignore it, and ``model.onnx`` is unchanged.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from compress.errors import ArtifactError, ConfigError, DataError, UserError

log = logging.getLogger(__name__)

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAMES = ("logits",)
BATCH_AXIS = "batch_size"
SEQUENCE_AXIS = "sequence_length"
DYNAMIC_AXES = {
    "input_ids": {0: BATCH_AXIS, 1: SEQUENCE_AXIS},
    "attention_mask": {0: BATCH_AXIS, 1: SEQUENCE_AXIS},
    "logits": {0: BATCH_AXIS},
}
OPTIMIZE_LEVELS = ("none", "O1", "O2")
MIN_OPSET = 17
DEFAULT_ATOL = 1e-4
VALIDATION_BATCH_SIZES = (1, 3, 8)
VALIDATION_LENGTHS = (5, 17)  # plus the artifact's max_length
SOURCE_KINDS = ("teacher", "student")
TEXT_PROBABILITY_ATOL = 1e-5  # in-graph tokenizer model vs model.onnx on the Hugging Face ids
TEXT_PROBABILITY_TEXTS = 512  # texts the probability check runs on (ids are checked on all)


class ValidationError(UserError):
    """The exported ONNX model does not reproduce the PyTorch model."""


class OutputNameError(ValidationError):
    """The ONNX graph's input or output names are not the declared ones."""


class ShapeError(ValidationError):
    """An ONNX output has another shape than the PyTorch output for the same inputs."""


class AtolError(ValidationError):
    """ONNX and PyTorch outputs differ by more than the declared absolute tolerance."""


class TokenizerMismatchError(ValidationError):
    """The in-graph tokenizer gives other token ids than the Hugging Face tokenizer on some text."""


@dataclass(frozen=True)
class OnnxExportConfig:
    """`export onnx` settings.

    Attributes:
        out: artifact directory to write; None -> ``<source>-onnx`` beside the source.
        opset: ONNX opset (>= 17: LayerNormalization is a single operator from 17 on).
        atol: largest accepted |ONNX - PyTorch| on the logits; None -> 1e-4.
        optimize: ``none``, ``O1`` (general graph optimizations) or ``O2`` (+ transformer fusions).
        batch_sizes / lengths: validation grid; the artifact's max_length is always added.
        seed: seeds the random validation inputs.
        with_tokenizer: also write ``model_with_tokenizer.onnx`` (strings in, WordPiece in the graph).
        tokenizer_texts / tokenizer_texts_format: a data file (any format compress reads, or ``.txt``
            with one text per line) whose texts the in-graph tokenizer must tokenize exactly as
            Hugging Face does.
        allow_tokenizer_mismatches: record token-id mismatches instead of failing.
    """

    out: str | None = None
    overwrite: bool = False  # replace an earlier output of ours at out (never anything else)
    opset: int = MIN_OPSET
    atol: float | None = None
    optimize: str = "none"
    batch_sizes: tuple[int, ...] = VALIDATION_BATCH_SIZES
    lengths: tuple[int, ...] = VALIDATION_LENGTHS
    seed: int = 0
    with_tokenizer: bool = False
    tokenizer_texts: str | None = None
    tokenizer_texts_format: str | None = None
    allow_tokenizer_mismatches: bool = False

    def __post_init__(self) -> None:
        if self.opset < MIN_OPSET:
            raise ConfigError(f"opset: must be >= {MIN_OPSET}, got {self.opset}; pass --opset {MIN_OPSET} or newer")
        if self.atol is not None and not self.atol > 0:
            raise ConfigError(f"atol: must be > 0, got {self.atol}")
        if self.optimize not in OPTIMIZE_LEVELS:
            raise ConfigError(f"optimize: must be one of {', '.join(OPTIMIZE_LEVELS)}, got {self.optimize!r}")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ConfigError(f"batch_sizes: must be positive, got {self.batch_sizes}")
        if not self.lengths or min(self.lengths) < 1:
            raise ConfigError(f"lengths: must be positive, got {self.lengths}")
        if (self.tokenizer_texts or self.allow_tokenizer_mismatches) and not self.with_tokenizer:
            raise ConfigError("with_tokenizer: --tokenizer-texts and --allow-tokenizer-mismatches check the in-graph "
                              "tokenizer; add --with-tokenizer")


@dataclass
class ExportResult:
    """What ``export_onnx`` wrote and measured."""

    artifact: Path
    max_abs_diff: float
    atol: float
    exporter: str
    optimize: str
    cases: list[dict[str, Any]] = field(default_factory=list)
    text_model: dict[str, Any] | None = None  # extra.text_model of the artifact (--with-tokenizer)


# ----------------------------------------------------------------------------------------------
# Parts


def is_hf_model(model: Any) -> bool:
    """True for a Hugging Face ``PreTrainedModel`` (exported through optimum)."""
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover - transformers is a dependency
        return False
    return isinstance(model, PreTrainedModel)


def logits_only(model: Any) -> Any:
    """An ``nn.Module`` whose ``forward(input_ids (B,T), attention_mask (B,T))`` returns (B, L) logits."""
    import torch

    from compress.predict import logits_of

    class LogitsOnly(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return logits_of(self.inner, {"input_ids": input_ids, "attention_mask": attention_mask})

    return LogitsOnly(model).eval()


def export_hf(model: Any, directory: Path, opset: int) -> Path:
    """Export an HF sequence classifier with optimum-onnx to ``directory/model.onnx`` (+ ``config.json``).

    The optimum ONNX config is narrowed to ``input_ids`` and ``attention_mask`` (BERT's config
    would add ``token_type_ids``; without it the model uses its all-zero default, as the
    tokenizer would produce for single texts).
    """
    import torch
    from optimum.exporters.onnx import onnx_export_from_model
    from optimum.exporters.tasks import TasksManager

    task = "text-classification"
    try:
        constructor = TasksManager.get_exporter_config_constructor(
            exporter="onnx", model=model, task=task, library_name="transformers")
    except (KeyError, ValueError) as exc:
        raise UserError(f"optimum-onnx cannot export model type {model.config.model_type!r} ({exc}); "
                        "use a supported Hugging Face architecture (BERT, DistilBERT, RoBERTa, ...)") from None
    base = type(constructor(model.config, task=task))

    class TwoInputs(base):  # type: ignore[misc, valid-type]
        @property
        def inputs(self) -> dict[str, dict[int, str]]:
            return {k: v for k, v in super().inputs.items() if k in INPUT_NAMES}

    config = TwoInputs(model.config, task=task)
    missing = [n for n in INPUT_NAMES if n not in config.inputs]
    if missing:
        raise UserError(f"model type {model.config.model_type!r} does not take {', '.join(missing)}; "
                        "only encoders fed input_ids + attention_mask can be exported")
    # optimum recommends opset 18 for BERT; 17 exports the same operators here and validation
    # below is what decides. Tracer warnings are likewise what validation checks for real.
    convert_log = logging.getLogger("optimum.exporters.onnx.convert")
    quiet = _DropMessages("lower than the recommended minimum opset")
    convert_log.addFilter(quiet)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            onnx_export_from_model(model, directory, opset=opset, do_validation=False, task=task,
                                   custom_onnx_configs={"model": config})
    finally:
        convert_log.removeFilter(quiet)
    return directory / "model.onnx"


class _DropMessages(logging.Filter):
    """Drop log records whose message contains ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def export_torch(model: Any, path: Path, opset: int, vocab_size: int) -> Path:
    """Export an own architecture with the TorchScript ONNX exporter (named dynamic axes)."""
    import torch

    wrapped = logits_only(model)
    ids = torch.randint(0, max(2, vocab_size), (2, 11), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    # Tracer warnings (python bools in nn.LSTM, constant folding notes) are what validation checks for real.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*(LSTM|Constant folding).*")
        torch.onnx.export(
            wrapped, (ids, mask), str(path), input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
            dynamic_axes=DYNAMIC_AXES, opset_version=opset, do_constant_folding=True, dynamo=False,
        )
    return path


def optimize_onnx(path: Path, level: str, hf_config: Any | None, workdir: Path) -> dict[str, int]:
    """Replace ``path`` with its ``level``-optimized graph; returns fused-operator counts (HF) or {}.

    HF models: optimum ``ORTOptimizer`` (O2 adds the transformer fusions). Others: ONNX Runtime's
    offline basic (O1) / extended (O2) optimizations.
    """
    if level == "none":
        return {}
    if hf_config is not None:
        from optimum.onnxruntime import ORTOptimizer
        from optimum.onnxruntime.configuration import AutoOptimizationConfig

        out_dir = workdir / "optimized"
        try:
            optimizer = ORTOptimizer(onnx_model_path=[path], config=hf_config)
            optimizer.optimize(AutoOptimizationConfig.with_optimization_level(level), out_dir)
        except (KeyError, NotImplementedError) as exc:
            raise UserError(f"ONNX Runtime has no {level} optimizations for model type "
                            f"{hf_config.model_type!r} ({exc}); use --optimize none") from None
        produced = out_dir / "model_optimized.onnx"
        os.replace(produced, path)
        return dict(ORTOptimizer.get_fused_operators(path))
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_BASIC if level == "O1"
                                        else ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
    target = workdir / "optimized.onnx"
    options.optimized_model_filepath = str(target)
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    os.replace(target, path)
    return {}


def random_inputs(batch: int, length: int, vocab_size: int, pad_id: int, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and a ragged right-padded mask: row 0 is full length, others random lengths.

    Returns:
        input_ids (B, T) int64, attention_mask (B, T) int64.
    """
    ids = rng.integers(0, max(2, vocab_size), size=(batch, length), dtype=np.int64)
    lengths = rng.integers(1, length + 1, size=batch)
    lengths[0] = length
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int64)
    ids = np.where(mask == 1, ids, pad_id).astype(np.int64)
    return ids, mask


def validate_onnx(
    onnx_path: str | os.PathLike[str],
    model: Any,
    vocab_size: int,
    pad_id: int,
    atol: float,
    batch_sizes: tuple[int, ...] = VALIDATION_BATCH_SIZES,
    lengths: tuple[int, ...] = (*VALIDATION_LENGTHS, 128),
    seed: int = 0,
) -> dict[str, Any]:
    """Run ONNX Runtime (CPU, all graph optimizations) and PyTorch on the same inputs and compare.

    Checks, in order: input names == ``input_ids, attention_mask``; output names == ``logits``;
    output shape == PyTorch's (B, L) for every case; max |ONNX - PyTorch| <= ``atol``.

    Args:
        onnx_path: the ONNX file.
        model: the PyTorch model it came from (eval mode, fp32).
        vocab_size / pad_id: range of random token ids and the padding id.
        atol: tolerance on the logits.

    Returns:
        ``{"atol", "max_abs_diff", "provider", "cases": [{"batch", "length", "max_abs_diff"}]}``.

    Raises:
        OutputNameError, ShapeError, AtolError: with the numbers.
    """
    from compress.predict import torch_forward
    from export.ort import ort_session

    session = ort_session(onnx_path)
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if sorted(inputs) != sorted(INPUT_NAMES):
        raise OutputNameError(f"ONNX inputs are {inputs}, expected {list(INPUT_NAMES)}; re-export the model")
    if outputs[:1] != list(OUTPUT_NAMES):
        raise OutputNameError(f"ONNX outputs are {outputs}, expected {list(OUTPUT_NAMES)}; re-export the model")
    reference = torch_forward(model)
    rng = np.random.default_rng(seed)
    cases = []
    worst = 0.0
    for batch in batch_sizes:
        for length in sorted(set(lengths)):
            ids, mask = random_inputs(batch, length, vocab_size, pad_id, rng)
            ref = reference(ids, mask)
            got = session.run(list(OUTPUT_NAMES), {"input_ids": ids, "attention_mask": mask})[0]
            if got.shape != ref.shape:
                raise ShapeError(f"ONNX output logits has shape {tuple(got.shape)} but PyTorch gives "
                                 f"{tuple(ref.shape)} at batch {batch}, length {length}; the dynamic axes are "
                                 "wrong, re-export the model")
            diff = float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64)))) if got.size else 0.0
            if not np.isfinite(diff):
                diff = float("inf")
            cases.append({"batch": batch, "length": length, "max_abs_diff": diff})
            worst = max(worst, diff)
            if diff > atol:
                raise AtolError(f"ONNX logits differ from PyTorch by up to {diff:.3g} (atol {atol:g}) at batch "
                                f"{batch}, length {length}; the export is not faithful; try --optimize none, or "
                                "pass a larger --atol if this error is acceptable")
    return {"atol": atol, "max_abs_diff": worst, "provider": "CPUExecutionProvider", "cases": cases}


def _vocab_size(model: Any, tokenizer: Any) -> int:
    """Number of valid token ids: the smaller of the tokenizer's and the embedding table's."""
    sizes = [len(tokenizer)] if tokenizer is not None else []
    try:
        sizes.append(int(model.get_input_embeddings().num_embeddings))
    except (AttributeError, NotImplementedError):
        emb = getattr(model, "embedding", None)
        if emb is not None and hasattr(emb, "num_embeddings"):
            sizes.append(int(emb.num_embeddings))
    return max(2, min(sizes)) if sizes else 2


def text_model_inputs(source: Path, architecture: str, config: OnnxExportConfig) -> tuple[Any, list[str], list[str]]:
    """Before any work for ``--with-tokenizer``: (the source's tokenizer, the check texts, where they came from).

    Raises:
        TokenizerGraphError: the tokenizer is not a WordPiece tokenizer the graph reproduces.
        UserError: no tokenizer; a bad ``--tokenizer-texts`` file.
    """
    from transformers import AutoTokenizer

    from compress.data import load_dataset
    from export.wordpiece_graph import CHECK_TEXTS, wordpiece_spec

    directory = source / "tokenizer"
    if not directory.is_dir():
        raise ArtifactError(f"{source} has no tokenizer/ directory (a {architecture} model); "
                            "--with-tokenizer needs the artifact's WordPiece tokenizer")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot load the tokenizer in {directory} ({str(exc)[:120]}); --with-tokenizer needs "
                            "a Hugging Face WordPiece tokenizer") from None
    wordpiece_spec(tokenizer)
    texts, sources = list(CHECK_TEXTS), ["built-in"]
    if config.tokenizer_texts:
        path = Path(config.tokenizer_texts)
        if path.suffix.lower() == ".txt":  # one text per line, as bench reads them
            if not path.is_file():
                raise DataError(f"texts file not found: {path}; check the --tokenizer-texts path")
            texts += [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            texts += load_dataset(path, config.tokenizer_texts_format, dedup=False).texts
        sources.append(str(path))
    return tokenizer, texts, sources


def export_text_model(onnx_path: Path, out_path: Path, tokenizer: Any, texts: Sequence[str], sources: list[str],
                      max_length: int, allow_mismatches: bool) -> dict[str, Any]:
    """Write the in-graph tokenizer model beside ``onnx_path`` and check it; returns ``extra.text_model``.

    Checks: token ids identical to the Hugging Face tokenizer's on every text (a mismatch raises
    :class:`TokenizerMismatchError` naming it, unless ``allow_mismatches``: then it is recorded and
    logged), then probabilities within :data:`TEXT_PROBABILITY_ATOL` of ``onnx_path`` on the Hugging
    Face ids (:class:`AtolError`), on up to :data:`TEXT_PROBABILITY_TEXTS` matching texts.
    """
    import onnx
    import onnxruntime_extensions

    from compress.errors import one_line
    from export.ort import ort_session
    from export.wordpiece_graph import TEXT_INPUT, compare_ids, probabilities_diff, text_model

    graph, merged = text_model(tokenizer, onnx.load(str(onnx_path)), max_length)
    onnx.save(merged, str(out_path))
    ids, bad = compare_ids(ort_session(graph.SerializeToString(), custom_ops=True), tokenizer, texts, max_length)
    if bad:
        first = ids["examples"][0]
        message = (f"the in-graph tokenizer gives other token ids than the Hugging Face tokenizer on {len(bad)} of "
                   f"{len(texts)} texts, e.g. text {first['index']} {one_line(repr(first['text']))[:120]}")
        if not allow_mismatches:
            raise TokenizerMismatchError(f"{message}; export without --with-tokenizer, or pass "
                                         "--allow-tokenizer-mismatches to keep it (the mismatches go into artifact.json)")
        log.warning("%s (kept: --allow-tokenizer-mismatches; see extra.text_model in artifact.json)", message)
    skip = set(bad)
    matching = [t for i, t in enumerate(texts) if i not in skip][:TEXT_PROBABILITY_TEXTS]
    diff = probabilities_diff(ort_session(out_path, custom_ops=True), ort_session(onnx_path), tokenizer, matching,
                              max_length)
    if diff > TEXT_PROBABILITY_ATOL:
        raise AtolError(f"the in-graph tokenizer model's probabilities differ from model.onnx's by up to {diff:.3g} "
                        f"(atol {TEXT_PROBABILITY_ATOL:g}) on the same token ids; export without --with-tokenizer")
    return {"file": out_path.name, "input": TEXT_INPUT, "output": "logits", "custom_ops": "onnxruntime-extensions",
            "onnxruntime_extensions": onnxruntime_extensions.__version__,
            "validation": {"sources": sources, "token_ids": ids, "probability_texts": len(matching),
                           "max_abs_diff_probabilities": diff, "atol": TEXT_PROBABILITY_ATOL}}


def output_dir(source: Path, out: str | None, suffix: str, overwrite: bool = False,
               inputs: Sequence[str | os.PathLike[str] | None] = ()) -> Path:
    """``out``, or ``runs/teacher`` -> ``runs/teacher-<suffix>``, checked before any work.

    Raises:
        ConfigError: it is the source itself. ArtifactError: a destination :func:`compress.artifact.check_out`
            refuses (not ours, an earlier output without ``overwrite``, the directory of an input, ...).
    """
    from compress.artifact import check_out

    path = Path(out) if out else source.with_name(f"{source.name}-{suffix}")
    if path.resolve() == source.resolve():
        raise ConfigError(f"out: {path} is the source artifact; pass another --out")
    return check_out(path, overwrite, inputs=(source, *inputs))


def check_export_source(source: Path, kind: str) -> None:
    """ArtifactError unless ``kind`` is a teacher or student (with a hint for onnx and quantized)."""
    if kind not in SOURCE_KINDS:
        hint = (" (it is already ONNX)" if kind == "onnx" else
                "; export its parent instead" if kind == "quantized" else "")
        raise ArtifactError(f"{source} is a {kind} artifact{hint}; export onnx needs a teacher or student")


def validation_lengths(model: Any, lengths: Sequence[int], max_length: int, hf: bool) -> tuple[int, ...]:
    """Sequence lengths validation runs at: ``lengths`` plus ``max_length``, within an HF model's positions."""
    lengths = (*lengths, max_length)
    if hf:
        limit = int(getattr(model.config, "max_position_embeddings", max_length) or max_length)
        lengths = tuple(min(n, limit) for n in lengths)
    return lengths


def onnx_info(info: Any, source: Path, exporter: str, opset: int, optimize: str, fused: Any,
              validation: dict[str, Any], vocab_size: int, pad_id: int, text_model: dict[str, Any] | None = None) -> Any:
    """artifact.json of the exported artifact: the source's labels and metrics, how it was exported and
    validated, the graph's inputs, outputs and dynamic axes."""
    from compress.artifact import ArtifactInfo

    return ArtifactInfo(
        kind="onnx", architecture=info.architecture, **info.label_fields(),
        thresholds=list(info.thresholds), max_length=info.max_length, parent=str(source.resolve()),
        metrics=dict(info.metrics), data_fingerprint=info.data_fingerprint, recipe=dict(info.recipe),
        extra={
            "source_kind": info.kind, "exporter": exporter,
            "opset": opset, "optimize": optimize, "fused_operators": fused,
            "inputs": list(INPUT_NAMES), "outputs": list(OUTPUT_NAMES),
            "dynamic_axes": {k: {str(a): n for a, n in v.items()} for k, v in DYNAMIC_AXES.items()},
            "validation": validation, "vocab_size": vocab_size, "pad_id": pad_id,
            **({"text_model": text_model} if text_model else {}),
        },
    )


def write_onnx_artifact(out: Path, onnx_path: Path, source: Path, hf_config: Any, new_info: Any,
                        overwrite: bool = False, text_model_path: Path | None = None) -> None:
    """Write atomically: ``model.onnx`` (and the in-graph tokenizer model), ``config.json`` (HF models), the
    source's tokenizer, ``artifact.json``."""
    from compress.artifact import atomic_artifact_dir, copy_artifact_files, write_info

    with atomic_artifact_dir(out, overwrite) as tmp:
        shutil.move(str(onnx_path), tmp / "model.onnx")
        if text_model_path is not None:
            shutil.move(str(text_model_path), tmp / text_model_path.name)
        if hf_config is not None:
            hf_config.save_pretrained(tmp)  # config.json beside model.onnx: ORTModel / ORTQuantizer read it
        copy_artifact_files(source, tmp, ["tokenizer"])
        write_info(tmp, new_info)


# ----------------------------------------------------------------------------------------------
# The recipe


def export_onnx(artifact: str | os.PathLike[str], config: OnnxExportConfig | None = None) -> ExportResult:
    """Export a teacher/student artifact to a validated ONNX artifact.

    Args:
        artifact: source artifact directory (kind teacher or student).
        config: settings; default :class:`OnnxExportConfig`.

    Returns:
        :class:`ExportResult` (the new artifact's path and the measured max difference).

    Raises:
        ArtifactError: not a teacher/student artifact. ValidationError subclasses: the export
        does not reproduce PyTorch, or (``with_tokenizer``) the in-graph tokenizer does not reproduce
        the Hugging Face tokenizer (nothing is written). TokenizerGraphError: ``with_tokenizer`` on a
        tokenizer that is not WordPiece (before any work).
    """
    import torch

    from compress.artifact import read_info
    from compress.models import load_model

    config = config or OnnxExportConfig()
    source = Path(artifact)
    info = read_info(source)
    check_export_source(source, info.kind)
    out = output_dir(source, config.out, "onnx", config.overwrite, inputs=(config.tokenizer_texts,))
    if config.with_tokenizer:
        hf_tokenizer, check_texts, text_sources = text_model_inputs(source, info.architecture, config)
    atol = config.atol if config.atol is not None else DEFAULT_ATOL
    model, tokenizer = load_model(source)
    model = model.float().eval()
    vocab_size = _vocab_size(model, tokenizer)
    pad_id = int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else 0
    hf = is_hf_model(model)
    exporter = "optimum-onnx" if hf else "torch.onnx"
    lengths = validation_lengths(model, config.lengths, info.max_length, hf)

    with tempfile.TemporaryDirectory(prefix=".onnx-export-", dir=out.parent if out.parent.exists() else None) as t:
        work = Path(t)
        staged = work / "export"
        staged.mkdir()
        log.info("exporting %s (%s) with %s, opset %d", source, info.architecture, exporter, config.opset)
        with torch.no_grad():
            if hf:
                onnx_path = export_hf(model, staged, config.opset)
            else:
                onnx_path = export_torch(model, staged / "model.onnx", config.opset, vocab_size)
        fused = optimize_onnx(onnx_path, config.optimize, model.config if hf else None, work)
        validation = validate_onnx(onnx_path, model, vocab_size, pad_id, atol, tuple(config.batch_sizes),
                                   lengths, config.seed)
        log.info("validated: max |ONNX - PyTorch| = %.3g (atol %g) over %d cases", validation["max_abs_diff"],
                 atol, len(validation["cases"]))
        text_path, text = None, None
        if config.with_tokenizer:
            from export.wordpiece_graph import TEXT_MODEL_FILE

            text_path = staged / TEXT_MODEL_FILE
            text = export_text_model(onnx_path, text_path, hf_tokenizer, check_texts, text_sources, info.max_length,
                                     config.allow_tokenizer_mismatches)
            log.info("in-graph tokenizer: %d token-id mismatches over %d texts, max |p - p_ids| = %.3g",
                     text["validation"]["token_ids"]["mismatches"], len(check_texts),
                     text["validation"]["max_abs_diff_probabilities"])
        new_info = onnx_info(info, source, exporter, config.opset, config.optimize, fused, validation, vocab_size,
                             pad_id, text)
        write_onnx_artifact(out, onnx_path, source, model.config if hf else None, new_info, config.overwrite,
                            text_path)
    return ExportResult(out, validation["max_abs_diff"], atol, new_info.extra["exporter"], config.optimize,
                        validation["cases"], text)
