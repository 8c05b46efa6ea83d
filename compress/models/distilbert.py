"""DistilBERT-recipe student: the teacher's architecture at reduced depth, initialised from its layers.

Same hidden size and tokenizer as the teacher, ``student_layers`` transformer layers (half the
teacher's by default). When the teacher's encoder layers sit in one ``nn.ModuleList`` (BERT family:
BERT, MiniLM, RoBERTa, ELECTRA, DistilBERT, ...), student layer ``i`` starts as teacher layer
``i * L_t // L_s`` (0, 2, 4, ... for half depth) and every other weight (embeddings, pooler,
classifier) is copied as is (Sanh et al. 2019). The result is a plain Hugging Face model, saved
with ``save_pretrained``, so ONNX and Triton paths treat it like any checkpoint.
"""

from __future__ import annotations

import copy
import logging

from torch import nn

log = logging.getLogger(__name__)


def num_layers(model: nn.Module) -> int:
    """Transformer layers of a Hugging Face model (``config.num_hidden_layers``)."""
    return int(model.config.num_hidden_layers)


def layer_list_name(model: nn.Module) -> str | None:
    """Dotted name of the ``nn.ModuleList`` holding the encoder layers, or None if there is none."""
    n = num_layers(model)
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n and name.endswith("layer"):
            return name
    return None


def teacher_layer_map(teacher_layers: int, student_layers: int) -> list[int]:
    """Teacher layer each student layer starts from: ``[i * L_t // L_s for i < L_s]`` (6 -> 3: 0, 2, 4)."""
    return [i * teacher_layers // student_layers for i in range(student_layers)]


def hidden_state_pairs(teacher_layers: int, student_layers: int) -> list[tuple[int, int]]:
    """(student, teacher) indices into ``output_hidden_states`` tuples to match (0 = embeddings).

    Student output ``k`` (after k layers) is matched with teacher output ``k * L_t // L_s`` (after
    the layers the student's first k layers stand for); 6 -> 3 gives (1, 2), (2, 4), (3, 6).
    """
    return [(k, k * teacher_layers // student_layers) for k in range(1, student_layers + 1)]


def build_distilbert(teacher: nn.Module, student_layers: int | None = None) -> nn.Module:
    """A ``student_layers``-deep copy of an HF sequence classifier, initialised from its layers.

    Args:
        teacher: a Hugging Face ``...ForSequenceClassification`` model.
        student_layers: depth of the student; default half the teacher's (at least 1).

    Returns:
        An HF model of the teacher's class in train mode; ``model(input_ids (B,T),
        attention_mask (B,T)).logits`` is (B, L).
    """
    from transformers import AutoModelForSequenceClassification

    t_layers = num_layers(teacher)
    k = student_layers or max(1, t_layers // 2)
    if not 1 <= k <= t_layers:
        raise ValueError(f"student_layers must be in [1, {t_layers}] (the teacher's depth), got {k}")
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = k
    student = AutoModelForSequenceClassification.from_config(config)
    prefix = layer_list_name(teacher)
    if prefix is None:
        log.warning("teacher %s has no recognisable layer list; the %d-layer student starts from random weights",
                    type(teacher).__name__, k)
        return student
    mapping = teacher_layer_map(t_layers, k)
    source = teacher.state_dict()
    state = {}
    for key in student.state_dict():
        if key.startswith(prefix + "."):
            index, rest = key[len(prefix) + 1:].split(".", 1)
            state[key] = source[f"{prefix}.{mapping[int(index)]}.{rest}"].clone()
        else:
            state[key] = source[key].clone()
    student.load_state_dict(state, strict=True)
    log.info("student: %d of %d teacher layers (%s), embeddings, pooler and classifier copied",
             k, t_layers, ", ".join(map(str, mapping)))
    return student.train()
