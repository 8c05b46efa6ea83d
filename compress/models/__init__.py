"""Model registry, keyed by name, and loading/saving of the ``model/`` directory of an artifact.

* :data:`STUDENTS` — distillation students. ``distilbert`` is built from a teacher
  (``build_distilbert(teacher, student_layers)``) and saved as a Hugging Face checkpoint;
  ``textcnn`` and ``bilstm`` are own architectures, rebuilt from ``builder(num_labels, **params)``.
* :data:`BASELINES` — classical baselines: ``cls(num_labels, **params)`` with ``fit``,
  ``predict_proba``, ``save`` and ``load``.

Own architectures are saved as ``model/config.json`` = ``{"architecture", "params", "num_labels"}``
plus ``model/model.safetensors``; their ``forward(input_ids (B,T), attention_mask (B,T))`` returns
(B, L) logits as a plain tensor. Adding a student is one new file plus one line here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from compress.errors import ArtifactError
from compress.models.bilstm import build_bilstm
from compress.models.distilbert import build_distilbert
from compress.models.fasttext import FastTextBaseline
from compress.models.textcnn import build_textcnn
from compress.models.tfidf import TfidfBaseline

STUDENTS: dict[str, Callable[..., torch.nn.Module]] = {
    "distilbert": build_distilbert,
    "textcnn": build_textcnn,
    "bilstm": build_bilstm,
}
BASELINES: dict[str, Callable[..., Any]] = {
    "tfidf": TfidfBaseline,
    "fasttext": FastTextBaseline,
}
# Architectures stored as Hugging Face checkpoints (save_pretrained / from_pretrained).
HF_ARCHITECTURES = ("hf", "distilbert")
# Students whose builder takes the teacher model instead of (num_labels, **params).
FROM_TEACHER = ("distilbert",)
MODEL_CONFIG = "config.json"
MODEL_WEIGHTS = "model.safetensors"


class TextClassifier(Protocol):
    """Anything that maps texts to (N, L) probabilities."""

    labels: list[str]
    thresholds: np.ndarray

    def predict_proba(self, texts: list[str]) -> np.ndarray: ...


def parse_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Builder keyword arguments from a config mapping: strings parsed as YAML scalars, ``"3,4,5"`` as a list.

    ``key=value`` overrides arrive as strings (``student_params.num_filters=64`` -> ``"64"``).
    """
    import yaml

    def parse(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        if "," in value:
            return [parse(v.strip()) for v in value.split(",") if v.strip()]
        try:
            return yaml.safe_load(value) if value else value
        except yaml.YAMLError:
            return value

    return {str(k): parse(v) for k, v in params.items()}


def known_architectures() -> list[str]:
    return [*HF_ARCHITECTURES, *(n for n in STUDENTS if n not in HF_ARCHITECTURES), *BASELINES]


def save_own_model(model: torch.nn.Module, directory: str | Path, architecture: str, params: Mapping[str, Any],
                   num_labels: int) -> None:
    """Write an own architecture's ``config.json`` + ``model.safetensors`` into ``directory`` (created)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / MODEL_WEIGHTS))
    config = {"architecture": architecture, "params": dict(params), "num_labels": int(num_labels)}
    (directory / MODEL_CONFIG).write_text(json.dumps(config, indent=2, default=list) + "\n")


def load_own_model(directory: str | Path) -> torch.nn.Module:
    """Rebuild an own architecture from ``config.json`` via :data:`STUDENTS` and load its weights (eval mode)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    try:
        config = json.loads((directory / MODEL_CONFIG).read_text())
        name = config["architecture"]
    except (OSError, ValueError, KeyError) as exc:
        raise ArtifactError(f"{directory / MODEL_CONFIG} is missing or damaged ({type(exc).__name__}); "
                            "re-create the artifact") from None
    if name not in STUDENTS or name in FROM_TEACHER:
        raise ArtifactError(f"{directory} holds unknown architecture {name!r}; known: {', '.join(known_architectures())}")
    model = STUDENTS[name](num_labels=config["num_labels"], **config["params"])
    model.load_state_dict(load_file(str(directory / MODEL_WEIGHTS)))
    return model.eval()


def load_model(artifact_dir: str | Path) -> tuple[torch.nn.Module, Any]:
    """The PyTorch model (eval mode, fp32) and tokenizer of an artifact that holds one.

    Teachers and students, and quantized artifacts that keep the fp32 ``model/`` they run from
    (bf16, torch-int8-dynamic).

    Raises:
        ArtifactError: a baseline or another kind without ``model/`` (use
            :func:`load_text_classifier` for baselines), an unknown architecture (the message lists
            the known ones), or files that do not load.
    """
    from compress.artifact import read_info

    directory = Path(artifact_dir)
    info = read_info(directory)
    torch_quantized = info.kind == "quantized" and (directory / "model").is_dir()
    if info.kind not in ("teacher", "student") and not torch_quantized:
        hint = "; use load_text_classifier for baselines" if info.kind == "baseline" else ""
        raise ArtifactError(f"{directory} is a {info.kind} artifact without a PyTorch model/; pass a teacher, "
                            f"student, or a bf16 / torch-int8-dynamic quantized artifact{hint}")
    if info.architecture not in HF_ARCHITECTURES and info.architecture not in STUDENTS:
        raise ArtifactError(f"{directory} has unknown architecture {info.architecture!r}; "
                            f"known: {', '.join(known_architectures())}")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory / "tokenizer"))
        if info.architecture in HF_ARCHITECTURES:
            model = AutoModelForSequenceClassification.from_pretrained(str(directory / "model"))
        else:
            model = load_own_model(directory / "model")
    except ArtifactError:
        raise
    except Exception as exc:  # noqa: BLE001 - transformers/safetensors raise many kinds
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ArtifactError(f"cannot load the model of {directory} ({first}); the artifact is damaged, "
                            "re-create it") from None
    return model.float().eval(), tokenizer


class TorchTextClassifier:
    """Texts -> probabilities with a PyTorch model and its tokenizer (fp32, batched, no grad).

    Attributes:
        model: ``forward(input_ids (B,T), attention_mask (B,T))`` -> logits (B, L) or an HF output.
        labels / thresholds: from the artifact.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Any, max_length: int, labels: Sequence[str],
                 thresholds: Sequence[float], batch_size: int = 64) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.labels = list(labels)
        self.thresholds = np.asarray(thresholds if len(thresholds) else [0.5] * len(labels), dtype=np.float64)
        self.batch_size = batch_size

    @torch.inference_mode()
    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """(N, L) float32 probabilities."""
        from compress.predict import logits_of

        texts = list(texts)
        out = np.empty((len(texts), len(self.labels)), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(texts[start:start + self.batch_size], truncation=True,
                                   max_length=self.max_length, padding=True, return_tensors="pt")
            logits = logits_of(self.model, batch)
            out[start:start + len(logits)] = torch.sigmoid(logits.float()).numpy()
        return out


class BaselineTextClassifier:
    """A fitted baseline with the artifact's labels and thresholds attached."""

    def __init__(self, baseline: Any, labels: Sequence[str], thresholds: Sequence[float]) -> None:
        self.baseline = baseline
        self.labels = list(labels)
        self.thresholds = np.asarray(thresholds if len(thresholds) else [0.5] * len(labels), dtype=np.float64)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """(N, L) float32 probabilities."""
        return np.asarray(self.baseline.predict_proba(list(texts)), dtype=np.float32)


def load_baseline(artifact_dir: str | Path) -> Any:
    """The fitted baseline object (``predict_proba``, ``num_parameters``) of a baseline artifact."""
    from compress.artifact import read_info

    directory = Path(artifact_dir)
    info = read_info(directory, kinds=["baseline"])
    if info.architecture not in BASELINES:
        raise ArtifactError(f"{directory} has unknown baseline architecture {info.architecture!r}; "
                            f"known: {', '.join(BASELINES)}")
    try:
        return BASELINES[info.architecture].load(directory / "model")  # type: ignore[attr-defined]
    except ArtifactError:
        raise
    except Exception as exc:  # noqa: BLE001 - skops/safetensors raise many kinds
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ArtifactError(f"cannot load the baseline in {directory} ({first}); re-create it") from None


def load_text_classifier(artifact_dir: str | Path, batch_size: int = 64) -> TextClassifier:
    """An object with ``predict_proba(texts) -> (N, L) float32`` for teacher, student and baseline artifacts."""
    from compress.artifact import read_info

    directory = Path(artifact_dir)
    info = read_info(directory, kinds=["teacher", "student", "baseline"])
    if info.kind == "baseline":
        return BaselineTextClassifier(load_baseline(directory), info.labels, info.thresholds)
    model, tokenizer = load_model(directory)
    return TorchTextClassifier(model, tokenizer, info.max_length, info.labels, info.thresholds, batch_size)


def num_parameters(model: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))
