"""Model registry, keyed by name, and loading/saving of the ``model/`` directory of an artifact.

* :data:`STUDENTS` — distillation students. ``distilbert`` is built from a teacher
  (``build_distilbert(teacher, student_layers)``) and saved as a Hugging Face checkpoint;
  ``textcnn`` and ``bilstm`` are own architectures, rebuilt from ``builder(num_labels, **params)``.
* :data:`BASELINES` — classical baselines: ``cls(num_labels, **params)`` with ``fit``,
  ``predict_proba``, ``save`` and ``load``.

Own architectures are saved as ``model/config.json`` = ``{"architecture", "params", "num_labels"}``
plus ``model/model.safetensors``; their ``forward(input_ids (B,T), attention_mask (B,T))`` returns
(B, L) logits as a plain tensor. Adding a student is one new file plus one line here. Any of them
(and an HF model) may carry a conditional head (:mod:`compress.models.conditional`), recorded as
``conditional_head`` in its config and put back by :func:`load_model`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from compress.errors import ArtifactError
from compress.models.bilstm import build_bilstm
from compress.models.conditional import RECORD_KEY, head_tree, restore_head
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
    """Write an own architecture's ``config.json`` + ``model.safetensors`` into ``directory`` (created).

    A conditional head is recorded as ``config.json``'s ``conditional_head`` (absent: flat).
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / MODEL_WEIGHTS))
    config = {"architecture": architecture, "params": dict(params), "num_labels": int(num_labels)}
    tree = head_tree(model)
    if tree is not None:
        config[RECORD_KEY] = tree.to_dict()
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
    model = restore_head(STUDENTS[name](num_labels=config["num_labels"], **config["params"]), config.get(RECORD_KEY))
    model.load_state_dict(load_file(str(directory / MODEL_WEIGHTS)))
    return model.eval()


def load_model(artifact_dir: str | Path) -> tuple[torch.nn.Module, Any]:
    """The PyTorch model (eval mode, fp32) and tokenizer of an artifact that holds one.

    Teachers and students, and quantized artifacts that keep the fp32 ``model/`` they run from
    (bf16, torch-int8-dynamic).

    Raises:
        ArtifactError: a baseline or another kind without ``model/`` (use :func:`load_baseline`
            for baselines), an unknown architecture (the message lists the known ones), or files
            that do not load.
    """
    from compress.artifact import read_info

    directory = Path(artifact_dir)
    info = read_info(directory)
    torch_quantized = info.kind == "quantized" and (directory / "model").is_dir()
    if info.kind not in ("teacher", "student") and not torch_quantized:
        hint = "; use load_baseline for baselines" if info.kind == "baseline" else ""
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
            restore_head(model, getattr(model.config, RECORD_KEY, None))
        else:
            model = load_own_model(directory / "model")
    except ArtifactError:
        raise
    except Exception as exc:  # noqa: BLE001 - transformers/safetensors raise many kinds
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ArtifactError(f"cannot load the model of {directory} ({first}); the artifact is damaged, "
                            "re-create it") from None
    return model.float().eval(), tokenizer


def load_baseline(artifact_dir: str | Path) -> Any:
    """The fitted baseline object (``predict_proba``, ``num_parameters``) of a baseline artifact.

    ``export.runtime.load`` wraps it as a Predictor (backend ``sklearn``).
    """
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


def num_parameters(model: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))
