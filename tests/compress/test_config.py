import collections.abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from compress.config import (
    DataConfig,
    OptimConfig,
    TrainConfig,
    build_config,
    field_types,
    load_config,
    parse_overrides,
)
from compress.errors import ConfigError


def test_yaml_then_overrides_win(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model: some/model\ndata: {data: a.csv, val_fraction: 0.2}\noptim: {lr: 1.0e-4, epochs: 5}\n")
    cfg = load_config(TrainConfig, str(recipe), ["optim.epochs=2", "loss.name=focal", "loss.params={gamma: 1.5}",
                                                 "data.label_columns=a,b"])
    assert cfg.model == "some/model"
    assert cfg.optim.lr == pytest.approx(1e-4) and cfg.optim.epochs == 2
    assert cfg.data.val_fraction == pytest.approx(0.2)
    assert cfg.data.label_columns == ("a", "b")
    assert cfg.loss.name == "focal" and cfg.loss.params == {"gamma": 1.5}


@pytest.mark.parametrize("override, field", [
    ("optim.lr=-1", "optim.lr"),
    ("optim.batch_size=0", "optim.batch_size"),
    ("optim.mixed_precision=int4", "optim.mixed_precision"),
    ("data.val_fraction=1.5", "data.val_fraction"),
    ("optim.epochs=two", "optim.epochs"),
    ("optim.nope=1", "optim.nope"),
    ("max_length=3", "max_length"),
])
def test_bad_values_name_the_field(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(TrainConfig, None, ["model=m", "data.data=d", override])


def test_required_fields_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="model"):
        load_config(TrainConfig, None, ["data.data=d"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(TrainConfig, str(tmp_path / "missing.yaml"), [])
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["lr"])


def test_configs_are_frozen():
    cfg = OptimConfig()
    with pytest.raises(AttributeError):
        cfg.lr = 1.0  # type: ignore[misc]


def test_no_stays_a_string_for_string_fields(tmp_path):
    cfg = load_config(TrainConfig, None, ["model=m", "data.data=d", "optim.mixed_precision=no", "resume=no"])
    assert cfg.optim.mixed_precision == "no" and cfg.resume is False
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: m\ndata: {data: d}\noptim: {mixed_precision: no}\n")
    assert load_config(TrainConfig, str(recipe)).optim.mixed_precision == "no"


# ------------------------------------------------------------------------------------ coercion


def _load(tmp_path, text):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    return load_config(TrainConfig, str(recipe))


def test_optional_fields_take_none_or_their_type():
    cfg = load_config(TrainConfig, None, ["model=m", "data.data=d", "optim.max_steps=none", "dropout=null",
                                          "num_threads=NULL", "tracking.run_name=None"])
    assert cfg.optim.max_steps is None and cfg.dropout is None and cfg.num_threads is None
    assert cfg.tracking.run_name is None
    cfg = load_config(TrainConfig, None, ["model=m", "data.data=d", "optim.max_steps=5", "dropout=0.25"])
    assert cfg.optim.max_steps == 5 and cfg.dropout == pytest.approx(0.25)


def test_numbers_from_yaml_and_the_command_line(tmp_path):
    cfg = _load(tmp_path, "model: m\ndata: {data: d}\noptim: {epochs: 2.0, lr: 1e-5}\n")  # YAML 1.1: 1e-5 is a string
    assert cfg.optim.epochs == 2 and isinstance(cfg.optim.epochs, int) and cfg.optim.lr == pytest.approx(1e-5)
    cfg = load_config(TrainConfig, None, ["model=m", "data.data=d", "optim.lr=3e-5", "max_length=64"])
    assert cfg.optim.lr == pytest.approx(3e-5) and cfg.max_length == 64


def test_bools_strings_and_tuples():
    values = [load_config(TrainConfig, None, ["model=m", "data.data=d", f"resume={v}"]).resume
              for v in ("on", "off", "1", "0", "TRUE", "No")]
    assert values == [True, False, True, False, True, False]
    cfg = load_config(TrainConfig, None, ["model=m", "data.data=d", "data.label_columns= a , b"])
    assert cfg.data.label_columns == ("a", "b")


def test_yaml_values_become_the_declared_types(tmp_path):
    cfg = _load(tmp_path, "model: 123\ndata: {data: d, label_columns: [a, b]}\ntracking: {enabled: no}\n")
    assert cfg.model == "123" and cfg.data.label_columns == ("a", "b") and cfg.tracking.enabled is False


@pytest.mark.parametrize("text, message", [
    ("model: m\ndata: {data: d}\noptim: {epochs: 2.5}\n", "optim.epochs: expected int, got 2.5"),
    ("model: [1, 2]\ndata: {data: d}\n", "model: expected a string, got [1, 2]"),
    ("model: m\ndata: {data: d}\noptim: 3\n", "optim: expected a mapping of fields, got 3"),
    ("model: m\ndata: {data: d, label_columns: 5}\n",
     "data.label_columns: expected a list or comma-separated values such as a,b, got 5"),
])
def test_bad_yaml_values_are_one_line_naming_the_field(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, text)
    assert str(err.value) == message


@pytest.mark.parametrize("override, message", [
    ("optim.epochs=2.5", "optim.epochs: expected int, got '2.5'"),
    ("optim.max_steps=x", "optim.max_steps: expected int, got 'x'"),
    ("dropout=high", "dropout: expected float, got 'high'"),
    ("resume=maybe", "resume: expected true/false, got 'maybe'"),
    ("loss.params={gamma: [", "loss.params: expected a mapping such as {gamma: 2}, got '{gamma: ['"),
    ("loss.params=3", "loss.params: expected a mapping, got 3"),
    ("data.val_fraction=1.5", "data.val_fraction: must be in (0, 1), got 1.5"),
    ("optim.nope=1", "optim.nope: unknown setting; known: batch_size, epochs, eval_batch_size, grad_accum, lr, "
                     "max_grad_norm, max_steps, mixed_precision, patience, seed, select_metric, warmup_ratio, "
                     "weight_decay"),
    ("optim.select_metric=accuracy", "optim.select_metric: must be one of macro_roc_auc, level_macro_f1, "
                                     "got 'accuracy'"),
    ("data.test_fraction=-0.1", "data.test_fraction: must be in [0, 1) (0 for no test split), got -0.1"),
    ("data.test_fraction=0.9", "data.test_fraction: val_fraction + test_fraction must be < 1, got 0.1 + 0.9"),
])
def test_bad_overrides_keep_their_one_line_messages(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(TrainConfig, None, ["model=m", "data.data=d", override])
    assert str(err.value) == message


def test_nested_configs_take_a_mapping_an_instance_or_none():
    from compress.distill import DistillConfig

    cfg = build_config(TrainConfig, {"model": "m", "data": DataConfig(data="d", val_fraction=0.3)})
    assert cfg.data == DataConfig(data="d", val_fraction=0.3)
    student = build_config(DistillConfig, {"teacher": "t", "student": "textcnn", "data": "none"})
    assert student.data is None
    student = build_config(DistillConfig, {"teacher": "t", "student": "textcnn", "data": {"data": "d"}})
    assert student.data == DataConfig(data="d")


@dataclass(frozen=True)
class _Declared:
    plain: int = 0
    named: "int | None" = None
    nested: "tuple[str, ...] | None" = None
    group: "DataConfig | None" = None
    params: "Mapping[str, Any]" = field(default_factory=dict)
    dotted: "collections.abc.Mapping[str, int] | None" = None


def test_field_types_read_annotation_text_as_types_against_the_declaring_module():
    from compress.distill import DistillConfig

    assert field_types(_Declared) == {"plain": int, "named": int | None, "nested": tuple[str, ...] | None,
                                      "group": DataConfig | None, "params": Mapping[str, Any],
                                      "dotted": collections.abc.Mapping[str, int] | None}
    types = field_types(DistillConfig)  # declared in compress.distill under `from __future__ import annotations`
    assert types["data"] == DataConfig | None and types["student_params"] == Mapping[str, Any]


@dataclass(frozen=True)
class _Undefined:
    x: "Nowhere | None" = None  # noqa: F821 - the point of the test


@dataclass(frozen=True)
class _Call:
    x: "print('side effect')" = None  # the point of the test: not run, refused


@pytest.mark.parametrize("cls, message", [
    (_Undefined, "_Undefined.x: annotation names 'Nowhere', which its module does not define"),
    (_Call, "_Call.x: annotation \"print('side effect')\" is not a type expression"),
])
def test_field_types_refuse_what_is_not_a_type_without_running_it(cls, message, capsys):
    with pytest.raises(TypeError) as err:
        field_types(cls)
    assert str(err.value) == message
    assert capsys.readouterr().out == ""
