"""compress.search_space: the default spaces fit their recipes; sampling follows ``when`` conditions."""

from __future__ import annotations

import optuna
import pytest

from compress.config import TrainConfig, load_config
from compress.search_space import check_space, load_space, parse_space, sample, trial_values

SPACE = """\
optim.lr: {low: 3.0e-3, high: 1.0e-2, log: true}
optim.batch_size: [16, 32]
loss.name: [bce, focal]
loss.params.gamma: {low: 0.5, high: 3.0, when: {loss.name: focal}}
"""


def _base(tiny_bert_dir, jigsaw_csv, *extra):
    return load_config(TrainConfig, None, [
        f"model={tiny_bert_dir}", f"data.data={jigsaw_csv}", "optim.epochs=1", "optim.mixed_precision=no",
        "max_length=32", "optim.batch_size=16", "data.max_train_samples=200", *extra])


@pytest.mark.parametrize("student", [None, "textcnn", "bilstm", "distilbert"])
def test_default_spaces_parse_and_fit_their_recipe(tiny_bert_dir, jigsaw_csv, student):
    space, text = load_space(None, student)
    assert text.startswith("# compress tune")
    keys = {s.key for s in space}
    assert {"optim.lr", "optim.batch_size", "optim.warmup_ratio", "optim.weight_decay", "loss.name",
            "loss.params.gamma", "loss.params.gamma_neg"} <= keys
    if student is None:
        base = _base(tiny_bert_dir, jigsaw_csv)
        assert "dropout" in keys
    else:
        from compress.config import build_config
        from compress.distill import DistillConfig

        base = build_config(DistillConfig, {"teacher": "t", "student": student, "data": {"data": str(jigsaw_csv)}})
        assert {"temperature", "alpha"} <= keys
        assert ("student_params.dropout" in keys) == (student != "distilbert")
    check_space(space, base, "default space")  # raises on any misfit


def test_sampling_follows_conditions():
    space = parse_space(SPACE + "optim.epochs: 2\noptim.grad_accum: {low: 1, high: 4}\n")
    kinds = {s.key: s.kind for s in space}
    assert kinds == {"optim.lr": "float", "optim.batch_size": "categorical", "loss.name": "categorical",
                     "loss.params.gamma": "float", "optim.epochs": "fixed", "optim.grad_accum": "int"}
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        chosen = sample(trial, space, {"loss": {"name": "bce"}})
        assert ("loss.params.gamma" in chosen) == (chosen["loss.name"] == "focal")
        assert chosen["optim.epochs"] == 2 and 1 <= chosen["optim.grad_accum"] <= 4
        seen.add(chosen["loss.name"])
        study.tell(trial, 0.5)
    assert seen == {"bce", "focal"}
    # a sampled loss does not inherit the base loss's parameters
    values = trial_values({"loss": {"name": "focal", "params": {"alpha": 0.3}}}, {"loss.name": "asymmetric"})
    assert values["loss"] == {"name": "asymmetric", "params": {}}
