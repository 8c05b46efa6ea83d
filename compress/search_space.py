"""The search-space language of `compress tune`: parse a space, check it against a recipe, sample it.

A space maps dotted config keys to how they are sampled::

    optim.lr: {low: 1.0e-5, high: 2.0e-4, log: true}   # float (int when low/high are ints)
    optim.batch_size: [16, 32, 64]                       # categorical
    optim.epochs: 3                                      # fixed for every trial
    loss.name: [bce, focal]
    loss.params.gamma: {low: 0.5, high: 4.0, when: {loss.name: focal}}   # conditional

Explicit forms: ``{type: float|int, low, high, log, step}``, ``{type: categorical, choices: [...]}``,
``{type: fixed, value: V}``; ``when`` maps earlier keys (or base-recipe keys) to a value or a list.
Every value a space can take is checked against the base recipe before any trial runs
(:func:`check_space`); a trial's values are sampled from an ``optuna.Trial`` (:func:`sample`).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from compress.config import build_config, merge, to_dict
from compress.errors import ConfigError

KINDS = ("float", "int", "categorical", "fixed")
_MISSING = object()
_SPEC_KEYS = ("type", "low", "high", "log", "step", "choices", "value", "when")
_LOSS_PARAMS = {
    "focal": """loss.params.gamma: {low: 0.5, high: 4.0, when: {loss.name: focal}}
loss.params.alpha: {low: 0.1, high: 0.9, when: {loss.name: focal}}""",
    "asymmetric": "loss.params.gamma_neg: {low: 1.0, high: 6.0, when: {loss.name: asymmetric}}",
}

TEACHER_SPACE = f"""\
# compress tune: default search space for a teacher (dotted TrainConfig keys).
optim.lr: {{low: 1.0e-5, high: 2.0e-4, log: true}}
optim.batch_size: [16, 32, 64]
optim.warmup_ratio: {{low: 0.0, high: 0.2}}
optim.weight_decay: {{low: 0.0, high: 0.1}}
dropout: {{low: 0.0, high: 0.3}}
loss.name: [bce, weighted_bce, focal, asymmetric]
{_LOSS_PARAMS["focal"]}
{_LOSS_PARAMS["asymmetric"]}
"""

# Students taught by distillation; learning rates per family (own architectures learn from scratch).
_STUDENT_LR = {"distilbert": "{low: 2.0e-5, high: 3.0e-4, log: true}",
               "textcnn": "{low: 3.0e-4, high: 5.0e-3, log: true}",
               "bilstm": "{low: 3.0e-4, high: 5.0e-3, log: true}"}


def default_space_yaml(student: str | None = None) -> str:
    """The default search space as YAML: the teacher's, or the distillation space of ``student``."""
    if student is None:
        return TEACHER_SPACE
    family = student if student in _STUDENT_LR else "distilbert"
    dropout = "" if family == "distilbert" else "student_params.dropout: {low: 0.1, high: 0.5}\n"
    return f"""\
# compress tune --student {family}: default search space (dotted DistillConfig keys).
optim.lr: {_STUDENT_LR[family]}
optim.batch_size: [32, 64, 128]
optim.warmup_ratio: {{low: 0.0, high: 0.1}}
optim.weight_decay: {{low: 0.0, high: 0.05}}
temperature: {{low: 1.0, high: 8.0}}
alpha: {{low: 0.3, high: 1.0}}
{dropout}loss.name: [bce, focal, asymmetric]
{_LOSS_PARAMS["focal"]}
{_LOSS_PARAMS["asymmetric"]}
"""


@dataclass(frozen=True)
class ParamSpec:
    """How one dotted config key is sampled.

    Attributes:
        key: dotted config key (``optim.lr``, ``loss.params.gamma``); also the Optuna parameter name.
        kind: ``float``, ``int``, ``categorical`` or ``fixed``.
        low / high / log / step: range of a float or int parameter.
        choices: values of a categorical parameter.
        value: the value of a fixed one.
        when: ``(key, allowed values)`` pairs; the parameter is sampled only when all hold.
    """

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()
    value: Any = None
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def candidates(self) -> list[Any]:
        """Values that span the parameter (for checking them against the recipe before any trial)."""
        if self.kind == "fixed":
            return [self.value]
        if self.kind == "categorical":
            return list(self.choices)
        return [self.low, self.high]

    def active(self, lookup: Callable[[str], Any]) -> bool:
        """Whether every ``when`` condition holds for the values ``lookup(key)`` resolves."""
        return all(lookup(key) in allowed for key, allowed in self.when)

    def suggest(self, trial: Any) -> Any:
        """Sample this parameter from an ``optuna.Trial`` (a fixed one returns its value)."""
        if self.kind == "fixed":
            return self.value
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), step=self.step, log=self.log)

    def describe(self) -> str:
        """A short text for MLflow params and summaries."""
        if self.kind == "fixed":
            text = f"= {self.value!r}"
        elif self.kind == "categorical":
            text = "{" + ", ".join(map(str, self.choices)) + "}"
        else:
            text = f"{self.kind} [{self.low}, {self.high}]" + (" log" if self.log else "")
            text += f" step {self.step}" if self.step else ""
        if self.when:
            text += " when " + ", ".join(f"{k} in {list(v)}" for k, v in self.when)
        return text


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _number(value: Any, where: str, what: str, integer: bool = False) -> float | int:
    if isinstance(value, bool) or value is None:
        raise ConfigError(f"{where}: {what} must be a number, got {value!r}")
    try:
        number = float(value)  # YAML 1.1 reads 1e-5 (no dot) as a string
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {what} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{where}: {what} must be finite, got {value!r}")
    if integer:
        if not number.is_integer():
            raise ConfigError(f"{where}: {what} must be an integer, got {value!r}")
        return int(number)
    return number


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_spec(key: str, raw: Any, source: str) -> ParamSpec:
    """One entry of a space file -> :class:`ParamSpec` (ConfigError naming ``source: key`` if bad)."""
    where = f"{source}: {key}"
    if not isinstance(key, str) or not key.strip() or any(not part for part in str(key).split(".")):
        raise ConfigError(f"{source}: {key!r} is not a dotted config key such as optim.lr")
    if isinstance(raw, list):
        raw = {"type": "categorical", "choices": raw}
    elif _is_scalar(raw):
        raw = {"type": "fixed", "value": raw}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a range {{low, high}}, a list of choices or a fixed value, got {raw!r}")
    unknown = sorted(set(map(str, raw)) - set(_SPEC_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown field {unknown[0]!r}; known: {', '.join(_SPEC_KEYS)}")
    kind = raw.get("type")
    if kind is None:
        if "choices" in raw:
            kind = "categorical"
        elif "value" in raw:
            kind = "fixed"
        elif "low" in raw or "high" in raw:
            step = raw.get("step")
            kind = "int" if _is_int(raw.get("low")) and _is_int(raw.get("high")) and (step is None or _is_int(step)) \
                else "float"
        else:
            raise ConfigError(f"{where}: give low/high (a range), choices (a list) or value (fixed)")
    if kind not in KINDS:
        raise ConfigError(f"{where}: type must be one of {', '.join(KINDS)}, got {kind!r}")
    when = _parse_when(raw.get("when"), where)
    log_scale = raw.get("log", False)
    if not isinstance(log_scale, bool):
        raise ConfigError(f"{where}: log must be true or false, got {log_scale!r}")
    if kind == "fixed":
        if "value" not in raw or not _is_scalar(raw["value"]):
            raise ConfigError(f"{where}: a fixed parameter needs value: <a number, string or boolean>")
        return ParamSpec(key, kind, value=raw["value"], when=when)
    if kind == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices or not all(_is_scalar(c) for c in choices):
            raise ConfigError(f"{where}: choices must be a non-empty list of numbers, strings or booleans")
        if len({repr(c) for c in choices}) != len(choices):
            raise ConfigError(f"{where}: choices repeat a value; list each choice once")
        return ParamSpec(key, kind, choices=tuple(choices), when=when)
    integer = kind == "int"
    if "low" not in raw or "high" not in raw:
        raise ConfigError(f"{where}: a {kind} range needs both low and high")
    low = _number(raw["low"], where, "low", integer)
    high = _number(raw["high"], where, "high", integer)
    if not low < high:
        raise ConfigError(f"{where}: low must be below high, got low={low}, high={high}")
    if log_scale and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0, got {low}")
    step = raw.get("step")
    if step is not None:
        step = _number(step, where, "step", integer)
        if step <= 0:
            raise ConfigError(f"{where}: step must be > 0, got {step}")
        if log_scale:
            raise ConfigError(f"{where}: use either log: true or step, not both")
    return ParamSpec(key, kind, low=low, high=high, log=log_scale, step=step, when=when)


def _parse_when(raw: Any, where: str) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(f"{where}: when must map keys to values, e.g. when: {{loss.name: focal}}")
    out = []
    for key, allowed in raw.items():
        values = tuple(allowed) if isinstance(allowed, list) else (allowed,)
        if not values or not all(_is_scalar(v) for v in values):
            raise ConfigError(f"{where}: when.{key} must be a value or a list of values")
        out.append((str(key), values))
    return tuple(out)


def parse_space(text: str, source: str = "search space") -> tuple[ParamSpec, ...]:
    """A space from YAML text (the mapping described in the module docstring)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {' '.join(str(exc).split())[:160]}; fix the file") from None
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(f"{source} must map config keys to ranges, e.g. optim.lr: {{low: 1.0e-5, high: 1.0e-3, "
                          "log: true}; see `compress tune --show-space`")
    specs = [parse_spec(key, value, source) for key, value in raw.items()]
    seen: dict[str, ParamSpec] = {}
    for spec in specs:
        for key, allowed in spec.when:
            if key == spec.key:
                raise ConfigError(f"{source}: {spec.key}: when cannot name the parameter itself")
            earlier = seen.get(key)
            if earlier is None and any(s.key == key for s in specs):
                raise ConfigError(f"{source}: {spec.key}: when names {key}, which comes later; list {key} first")
            if earlier is not None and earlier.kind == "categorical":
                missing = [v for v in allowed if v not in earlier.choices]
                if missing:
                    raise ConfigError(f"{source}: {spec.key}: when.{key} = {missing[0]!r} is not one of its "
                                      f"choices ({', '.join(map(str, earlier.choices))})")
        seen[spec.key] = spec
    return tuple(specs)


def load_space(path: str | None, student: str | None = None) -> tuple[tuple[ParamSpec, ...], str]:
    """(space, its YAML text) from ``path``, or the default space of a teacher / ``student``."""
    if path is None:
        text = default_space_yaml(student)
        return parse_space(text, "default space"), text
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"search space file {path} not found; pass an existing YAML file to --space "
                          "(see `compress tune --show-space`)")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read search space file {path} ({type(exc).__name__}); check the file") from None
    return parse_space(text, str(path)), text


def _get(values: Mapping[str, Any], key: str, default: Any = None) -> Any:
    node: Any = values
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def _nested(key: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def trial_values(base_values: Mapping[str, Any], chosen: Mapping[str, Any]) -> dict[str, Any]:
    """The base recipe's values with the sampled ones set (a sampled loss starts from no parameters)."""
    values = dict(base_values)
    name = chosen.get("loss.name")
    if name is not None and name != _get(base_values, "loss.name"):
        values["loss"] = {**values["loss"], "params": {}}  # the base loss's parameters need not fit this one
    for key, value in chosen.items():
        values = merge(values, _nested(key, value))
    return values


def check_space(space: Sequence[ParamSpec], base: Any, source: str) -> None:
    """Every value the space can take must make a valid recipe: key, type and range, loss parameters.

    Raises:
        ConfigError: naming ``source``, the key and the problem (before any trial runs).
    """
    from compress.losses import LOSSES

    cls = type(base)
    base_values = to_dict(base)
    keys = {s.key for s in space}
    by_key = {s.key: s for s in space}
    for spec in space:
        if spec.key in ("out", "resume", "tracking") or spec.key.startswith("tracking."):
            raise ConfigError(f"{source}: {spec.key}: tune sets this itself; remove it from the space")
        for key, _ in spec.when:
            if key not in keys and _get(base_values, key, _MISSING) is _MISSING:
                raise ConfigError(f"{source}: {spec.key}: when names unknown setting {key}")
        if spec.key == "loss.name":
            unknown = [c for c in spec.candidates() if c not in LOSSES]
            if unknown:
                raise ConfigError(f"{source}: loss.name: unknown loss {unknown[0]!r}; known: {', '.join(LOSSES)}")
        if spec.key.startswith("loss.params."):
            _check_loss_param(spec, by_key.get("loss.name"), _get(base_values, "loss.name"), source)
            continue
        if spec.key.startswith("student_params."):
            _check_student_param(spec, base_values, source)
        for value in spec.candidates():
            try:
                build_config(cls, trial_values(base_values, {spec.key: value}))
            except ConfigError as exc:
                raise ConfigError(f"{source}: {exc}") from None


def _check_loss_param(spec: ParamSpec, name_spec: ParamSpec | None, base_name: str, source: str) -> None:
    from compress.losses import LOSSES

    param = spec.key[len("loss.params."):]
    if "." in param:
        raise ConfigError(f"{source}: {spec.key}: loss parameters are one level deep (loss.params.gamma)")
    conditioned = dict(spec.when).get("loss.name")
    if conditioned is not None:
        names = list(conditioned)
    elif name_spec is not None:
        names = name_spec.candidates()
    else:
        names = [base_name]
    for name in names:
        cls = LOSSES.get(name)
        if cls is None:
            raise ConfigError(f"{source}: {spec.key}: unknown loss {name!r}; known: {', '.join(LOSSES)}")
        params = inspect.signature(cls.__init__).parameters
        if param not in params or param == "self":
            accepted = ", ".join(p for p in params if p != "self") or "no parameters"
            raise ConfigError(f"{source}: {spec.key}: loss {name} has no parameter {param!r} (accepted: {accepted}); "
                              f"add when: {{loss.name: <a loss that has it>}}")
        required = [k for k, p in params.items() if k not in ("self", param) and p.default is inspect.Parameter.empty]
        if required:
            continue  # filled from the data at train time (pos_weight, parents)
        for value in spec.candidates():
            try:
                cls(**{param: value})
            except ConfigError as exc:
                raise ConfigError(f"{source}: {spec.key}: {exc}") from None


def _check_student_param(spec: ParamSpec, base_values: Mapping[str, Any], source: str) -> None:
    from compress import models

    student = base_values.get("student")
    param = spec.key[len("student_params."):]
    if student in models.FROM_TEACHER or student not in models.STUDENTS:
        raise ConfigError(f"{source}: {spec.key}: student {student} takes no builder parameters; "
                          "remove student_params.* from the space")
    accepted = set(inspect.signature(models.STUDENTS[student]).parameters) - {"num_labels", "vocab_size", "pad_id"}
    if param not in accepted:
        raise ConfigError(f"{source}: {spec.key}: {student} has no parameter {param!r}; "
                          f"accepted: {', '.join(sorted(accepted))}")


def sample(trial: Any, space: Sequence[ParamSpec], base_values: Mapping[str, Any]) -> dict[str, Any]:
    """Sample every active parameter of ``space`` from ``trial``: ``{dotted key: value}`` in space order."""
    chosen: dict[str, Any] = {}

    def lookup(key: str) -> Any:
        return chosen[key] if key in chosen else _get(base_values, key)

    for spec in space:
        if spec.active(lookup):
            chosen[spec.key] = spec.suggest(trial)
    return chosen

