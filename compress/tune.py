"""`compress tune`: an Optuna study over the teacher recipe, or over a student's via distillation.

Recipe, top to bottom: a base recipe (a :class:`~compress.config.TrainConfig`, or a
:class:`~compress.distill.DistillConfig` for ``--student NAME --teacher DIR``) + a search space
(YAML, or :func:`default_space_yaml`) -> an Optuna study in an RDB storage (SQLite by default;
any SQLAlchemy URL lets several workers share one study, resumed by name) -> each trial samples
the space, trains into its own directory under ``<out>.trials/`` and reports validation macro
ROC-AUC after every epoch, so the pruner can stop it early -> the best trial's artifact is copied
atomically to ``out`` (retrained from its parameters when its directory is gone, e.g. when another
worker on another machine ran it), with ``artifact.json`` ``extra.tune`` and a ``tune.json``
summary of every trial. Each trial is an MLflow run nested under one run per worker.

The search space maps dotted config keys to how they are sampled::

    optim.lr: {low: 1.0e-5, high: 2.0e-4, log: true}   # float (int when low/high are ints)
    optim.batch_size: [16, 32, 64]                       # categorical
    optim.epochs: 3                                      # fixed for every trial
    loss.name: [bce, focal]
    loss.params.gamma: {low: 0.5, high: 4.0, when: {loss.name: focal}}   # conditional

Explicit forms: ``{type: float|int, low, high, log, step}``, ``{type: categorical, choices: [...]}``,
``{type: fixed, value: V}``; ``when`` maps earlier keys (or base-recipe keys) to a value or a list.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import shutil
import socket
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from compress.config import TrainConfig, build_config, merge, to_dict
from compress.errors import ConfigError, UserError, one_line

log = logging.getLogger(__name__)

DEFAULT_STORAGE = "sqlite:///runs/tune.db"
DEFAULT_STUDY = "modcompress"
METRIC = "macro_roc_auc"
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "hyperband", "none")
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


# ----------------------------------------------------------------------------------------------
# Search space.


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


# ----------------------------------------------------------------------------------------------
# Recipes per trial.


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


# ----------------------------------------------------------------------------------------------
# Pruning: per-epoch validation scores reach the trial through the tracker's metric hook.


def objective_value(metrics: Mapping[str, Any]) -> float:
    """What the study maximises: validation macro ROC-AUC, or macro-F1 when no label has an AUC.

    This is the training loop's own model-selection score, so the best epoch and the best trial
    agree on what "best" means.
    """
    value = float(metrics.get(METRIC, float("nan")))
    return value if math.isfinite(value) else float(metrics.get("macro_f1", float("nan")))


class EpochReporter:
    """``on_metrics`` hook: report each epoch's score to an Optuna trial; raise TrialPruned when told.

    The training loop logs ``{"epoch", "train_loss", macro_roc_auc, ...}`` with ``step=epoch``
    once per epoch; other logged dicts (no step, or no score) are ignored.
    """

    def __init__(self, trial: Any) -> None:
        self.trial = trial
        self.run_id: str | None = None
        self.epochs = 0

    def __call__(self, tracker: Any, metrics: Mapping[str, Any], step: int | None) -> None:
        import optuna

        if step is None or METRIC not in metrics:
            return
        self.run_id = getattr(tracker, "run_id", None) or self.run_id
        value = objective_value(metrics)
        if not math.isfinite(value):
            return
        self.epochs = int(step)
        self.trial.report(value, int(step))
        if self.trial.should_prune():
            if getattr(tracker, "active", False):
                tracker.set_tags({"optuna.state": "PRUNED"})
            raise optuna.TrialPruned(f"trial {self.trial.number} pruned after epoch {step} ({METRIC} {value:.4f})")


# ----------------------------------------------------------------------------------------------
# Config and result.


@dataclass(frozen=True)
class TuneConfig:
    """`compress tune`.

    Attributes:
        base: the recipe every trial starts from: a TrainConfig (teacher) or a DistillConfig (student).
        space: parameters to sample (:func:`load_space`); checked against ``base`` on creation.
        space_source: where the space came from (file path or "default space"), for messages.
        out: where the best trial's artifact goes; trials write under ``trials_dir``.
        trials_dir: per-trial artifact directories; None = ``<out>.trials``.
        storage: Optuna storage URL (``sqlite:///PATH`` or any SQLAlchemy database URL).
        study_name: the study to create or resume; workers sharing storage and name share the study.
        n_trials: trials this call runs (they accumulate across calls); None = until ``timeout``;
            0 = no new trial, only write the study's best artifact (e.g. after workers elsewhere finish).
        timeout: seconds after which this call starts no new trial; None = no limit.
        sampler: ``tpe`` or ``random``; seed seeds it.
        pruner: ``median``, ``hyperband`` or ``none``.
        pruner_startup_trials: MedianPruner: trials that finish before any pruning.
        pruner_warmup_epochs: MedianPruner: epochs of every trial that are never pruned.
        keep_trials: keep this worker's per-trial artifacts (default: delete them once ``out`` is written).
        space_yaml: the space's YAML text, kept in the summary so a study can be re-run as it was.
    """

    base: Any
    space: tuple[ParamSpec, ...]
    space_source: str = "default space"
    out: str = "runs/tuned"
    trials_dir: str | None = None
    storage: str = DEFAULT_STORAGE
    study_name: str = DEFAULT_STUDY
    n_trials: int | None = 10
    timeout: float | None = None
    sampler: str = "tpe"
    pruner: str = "median"
    pruner_startup_trials: int = 2
    pruner_warmup_epochs: int = 0
    seed: int | None = None
    keep_trials: bool = False
    space_yaml: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        from compress.config import _check

        _check(self.kind in ("teacher", "student"), "base", "must be a TrainConfig or a DistillConfig")
        _check(bool(self.space), "space", "is empty; give at least one parameter to tune")
        _check(bool(self.out), "out", "is required")
        _check(bool(self.storage), "storage", "is required, e.g. sqlite:///runs/tune.db")
        _check(bool(self.study_name), "study_name", "is required")
        _check(self.n_trials is None or self.n_trials >= 0, "n_trials", f"must be >= 0, got {self.n_trials}")
        _check(self.timeout is None or self.timeout > 0, "timeout", f"must be > 0 seconds, got {self.timeout}")
        _check(self.n_trials is not None or self.timeout is not None, "n_trials",
               "give --n-trials or --timeout (or both); without either the study never stops")
        _check(self.sampler in SAMPLERS, "sampler", f"must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        _check(self.pruner in PRUNERS, "pruner", f"must be one of {', '.join(PRUNERS)}, got {self.pruner!r}")
        _check(self.pruner_startup_trials >= 0, "pruner_startup_trials", "must be >= 0")
        _check(self.pruner_warmup_epochs >= 0, "pruner_warmup_epochs", "must be >= 0")
        check_space(self.space, self.base, self.space_source)

    @property
    def kind(self) -> str:
        """``teacher`` (TrainConfig base) or ``student`` (DistillConfig base)."""
        if isinstance(self.base, TrainConfig):
            return "teacher"
        return "student" if type(self.base).__name__ == "DistillConfig" else "unknown"

    @property
    def target(self) -> str:
        """What the study tunes, recorded on the study: ``teacher`` or ``student:<name>``."""
        return "teacher" if self.kind == "teacher" else f"student:{self.base.student}"

    @property
    def trials_path(self) -> Path:
        out = Path(self.out)
        return Path(self.trials_dir) if self.trials_dir else out.with_name(out.name + ".trials")


@dataclass
class TuneResult:
    """What a tuning call produced.

    Attributes:
        artifact: the best trial's artifact (``out``).
        best_trial / best_value / best_params: of the whole study (all calls and workers).
        trials: one row per trial of the study (number, state, value, params, epochs, duration_s).
        ran: trial numbers this call ran.
        retrained: True when the best trial's directory was gone and ``out`` was retrained from its params.
        summary_path: ``out/tune.json``.
    """

    artifact: Path
    study_name: str
    storage: str
    best_trial: int
    best_value: float
    best_params: dict[str, Any]
    trials: list[dict[str, Any]]
    ran: list[int]
    retrained: bool
    summary_path: Path
    mlflow_run_id: str | None = None

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.trials:
            out[t["state"]] = out.get(t["state"], 0) + 1
        return out


# ----------------------------------------------------------------------------------------------
# Storage and study.


def masked_url(url: str) -> str:
    """``url`` with any password hidden (for logs, MLflow params and messages)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL sqlalchemy understands; say so later
        return url.split("@")[-1] if "@" in url else url


def open_storage(url: str):
    """An Optuna RDB storage at ``url``; a SQLite file's folder is created. One-line UserError on failure.

    Heartbeats mark the trials of a worker that died as failed, so a shared study does not keep
    them RUNNING forever.
    """
    import optuna

    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if path and path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():  # heartbeats are marked experimental; the interface we use is stable
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, heartbeat_interval=60, grace_period=180)
    except Exception as exc:  # noqa: BLE001 - sqlalchemy/driver errors come in many types
        first = (one_line(exc) or type(exc).__name__)[:160]
        if isinstance(exc, ModuleNotFoundError) and url.startswith("postgresql://"):
            raise UserError(f"the database driver for {masked_url(url)} is missing ({first}); write the URL as "
                            "postgresql+psycopg2://... (psycopg2-binary) or pip install 'psycopg[binary]'") from None
        raise UserError(f"cannot open the Optuna storage {masked_url(url)} ({first}); pass --storage "
                        "sqlite:///PATH or a reachable database URL (postgresql+psycopg2://user@host/db)") from None


def _sampler(name: str, seed: int | None):
    import optuna

    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _pruner(config: TuneConfig):
    import optuna

    if config.pruner == "none":
        return optuna.pruners.NopPruner()
    if config.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, config.base.optim.epochs))
    return optuna.pruners.MedianPruner(n_startup_trials=config.pruner_startup_trials,
                                       n_warmup_steps=config.pruner_warmup_epochs)


def open_study(config: TuneConfig):
    """Create the study, or load it by name (another call or worker made it) and check it tunes the same thing."""
    import optuna

    storage = open_storage(config.storage)
    try:
        study = optuna.create_study(storage=storage, study_name=config.study_name, direction="maximize",
                                    sampler=_sampler(config.sampler, config.seed), pruner=_pruner(config),
                                    load_if_exists=True)
    except ValueError as exc:  # e.g. an existing study of the same name with another direction
        raise UserError(f"cannot use study {config.study_name!r} in {masked_url(config.storage)} ({exc}); "
                        "pass another --study-name") from None
    target = study.user_attrs.get("modcompress.target")
    if target is None:
        study.set_user_attr("modcompress.target", config.target)
        study.set_user_attr("modcompress.metric", METRIC)
    elif target != config.target:
        raise UserError(f"study {config.study_name!r} in {masked_url(config.storage)} tunes a {target}, "
                        f"not a {config.target}; pass another --study-name")
    return study


# ----------------------------------------------------------------------------------------------
# The recipe.


def _run_recipe(config: Any):
    """Train (TrainConfig) or distil (DistillConfig) one recipe; returns its result."""
    if isinstance(config, TrainConfig):
        from compress.train import train

        return train(config)
    from compress.distill import distill

    return distill(config)


def _remove_trial_dir(path: Path) -> None:
    from compress.loop import checkpoint_dir

    shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(checkpoint_dir(path), ignore_errors=True)


def _one_line(exc: BaseException) -> str:
    return (one_line(exc) or type(exc).__name__)[:200]


def _trial_config(config: TuneConfig, base_values: Mapping[str, Any], chosen: Mapping[str, Any], out: Path,
                  run_name: str) -> Any:
    values = trial_values(base_values, chosen)
    values["out"] = str(out)
    values["resume"] = False
    values["tracking"] = {**values["tracking"], "run_name": run_name}
    return build_config(type(config.base), values)


def _mark_killed(tracking_uri: str | None, run_id: str | None) -> None:
    """A pruned trial's MLflow run ends KILLED rather than FAILED."""
    if not run_id:
        return
    try:
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri).set_terminated(run_id, status="KILLED")
    except Exception as exc:  # noqa: BLE001 - bookkeeping only
        log.debug("could not mark MLflow run %s killed: %s", run_id, exc)


def tune(config: TuneConfig) -> TuneResult:
    """Run ``config.n_trials`` trials of the study and write the study's best artifact to ``config.out``."""
    import optuna

    from compress.metrics import summary
    from compress.tracking import run_hooks, tracked_run

    base = config.base
    base_values = to_dict(base)
    trials_dir = config.trials_path
    study = open_study(config)
    ran: list[int] = []
    failures: list[str] = []
    tracking = base.tracking
    storage_shown = masked_url(config.storage)
    log.info("study %s in %s: %d trials so far; this call runs %s trial(s)%s", config.study_name, storage_shown,
             len(study.trials), config.n_trials if config.n_trials else "as many",
             f" for up to {config.timeout:.0f} s" if config.timeout else "")

    def objective(trial: optuna.Trial) -> float:
        ran.append(trial.number)
        chosen = sample(trial, config.space, base_values)
        trial_dir = trials_dir / f"trial-{trial.number:04d}"
        trial.set_user_attr("overrides", chosen)
        trial.set_user_attr("artifact", str(trial_dir.resolve()))
        trial.set_user_attr("host", socket.gethostname())
        cfg = _trial_config(config, base_values, chosen, trial_dir, f"{config.study_name}/trial-{trial.number}")
        reporter = EpochReporter(trial)
        tags = {"optuna.study": config.study_name, "optuna.trial": trial.number}
        log.info("trial %d: %s", trial.number, ", ".join(f"{k}={_fmt(v)}" for k, v in chosen.items()) or "base recipe")
        try:
            with run_hooks(tags=tags, on_metrics=reporter):
                result = _run_recipe(cfg)
        except optuna.TrialPruned:
            _remove_trial_dir(trial_dir)
            _mark_killed(tracking.tracking_uri, reporter.run_id)
            trial.set_user_attr("epochs", reporter.epochs)
            raise
        except UserError:
            _remove_trial_dir(trial_dir)
            raise  # the recipe or data is wrong: every trial would fail the same way
        except Exception as exc:  # noqa: BLE001 - e.g. a diverging learning rate: fail this trial, go on
            _remove_trial_dir(trial_dir)
            message = f"trial {trial.number} failed: {type(exc).__name__}: {_one_line(exc)}"
            log.warning("%s", message)
            failures.append(message)
            trial.set_user_attr("error", message)
            return float("nan")  # Optuna records a NaN objective as a failed trial
        trial.set_user_attr("metrics", summary(result.metrics))
        trial.set_user_attr("epochs", int(result.epochs_run))
        trial.set_user_attr("mlflow_run_id", result.mlflow_run_id)
        return objective_value(result.metrics)

    space_params = {s.key: s.describe() for s in config.space}
    params = {"study": config.study_name, "storage": storage_shown, "target": config.target,
              "n_trials": config.n_trials, "timeout": config.timeout, "sampler": config.sampler,
              "pruner": config.pruner, "seed": config.seed, "space": space_params,
              "base": {k: v for k, v in base_values.items() if k not in ("tracking", "out", "resume")}}
    with tracked_run(tracking.enabled, tracking.tracking_uri, tracking.experiment,
                     tracking.run_name or f"tune {config.study_name}", params=params,
                     tags={"stage": "tune", "optuna.study": config.study_name}) as tracker:

        def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            record = {"trial_value": trial.value if trial.value is not None else float("nan")}
            if any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
                record["best_value"] = study.best_value
            tracker.log_metrics(record, step=trial.number)

        optuna_level = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own per-trial lines say the same
        try:
            if config.n_trials != 0:
                study.optimize(objective, n_trials=config.n_trials, timeout=config.timeout,
                               callbacks=[after_trial], gc_after_trial=True)
        finally:
            optuna.logging.set_verbosity(optuna_level)
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not complete:
            _cleanup(trials_dir, ran, config.keep_trials)
            why = f"; last error: {failures[-1]}" if failures else ""
            raise UserError(f"no trial of study {config.study_name!r} finished{why}; widen the space or "
                            "relax pruning (--pruner none) and run again")
        best = study.best_trial
        retrained = _write_best(config, best, base_values, study, trials_dir)
        _cleanup(trials_dir, ran, config.keep_trials)
        rows = trial_rows(study)
        summary_doc = _summary(config, best, rows, ran, retrained, tracker.run_id)
        out = Path(config.out)
        _write_summary(out, summary_doc)
        tracker.log_metrics({"best_value": best.value, "best_trial": best.number,
                             **{f"n_{k}": v for k, v in _count(rows).items()}})
        tracker.set_tags({"best_trial": best.number,
                          **{f"best.{k}": v for k, v in best.user_attrs.get("overrides", best.params).items()}})
        with tempfile.TemporaryDirectory() as folder:  # the summary, not another copy of the model
            Path(folder, "tune.json").write_text(json.dumps(summary_doc, indent=2, default=str) + "\n")
            Path(folder, "trials.txt").write_text(format_trials_table(rows, best.number, limit=10_000) + "\n")
            tracker.log_artifact_dir(folder, name="tune")
    return TuneResult(out, config.study_name, storage_shown, best.number, float(best.value),
                      dict(best.user_attrs.get("overrides", best.params)), rows, ran, retrained,
                      out / "tune.json", tracker.run_id)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _cleanup(trials_dir: Path, ran: Sequence[int], keep: bool) -> None:
    """Delete this worker's trial directories (never another worker's) unless asked to keep them."""
    if keep:
        return
    for number in ran:
        _remove_trial_dir(trials_dir / f"trial-{number:04d}")
    _remove_trial_dir(trials_dir / "retrain")
    try:
        trials_dir.rmdir()  # only when empty: other workers may still be writing there
    except OSError:
        pass


def _tuned_trial(path: Path, study_name: str) -> int | None:
    """The trial number recorded in a tuned artifact at ``path`` for ``study_name``, if any."""
    try:
        meta = json.loads((path / "artifact.json").read_text())
        tune_info = meta.get("extra", {}).get("tune", {})
        return int(tune_info["trial"]) if tune_info.get("study") == study_name else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _write_best(config: TuneConfig, best: Any, base_values: Mapping[str, Any], study: Any, trials_dir: Path) -> bool:
    """Copy the best trial's artifact to ``out`` atomically (retraining it if needed); True if retrained."""
    from compress.artifact import atomic_artifact_dir, read_info, write_info

    out = Path(config.out)
    source = Path(best.user_attrs.get("artifact", ""))
    retrained = False
    if not (source.name and (source / "artifact.json").is_file()):
        if _tuned_trial(out, config.study_name) == best.number:
            source = out  # an earlier call already wrote this trial; its own directory is gone
        else:
            log.info("best trial %d's artifact is not on this machine; retraining it from its parameters",
                     best.number)
            from compress.tracking import run_hooks

            source = trials_dir / "retrain"
            chosen = best.user_attrs.get("overrides", best.params)
            cfg = _trial_config(config, base_values, chosen, source, f"{config.study_name}/retrain-{best.number}")
            with run_hooks(tags={"optuna.study": config.study_name, "optuna.retrain": best.number}):
                _run_recipe(cfg)
            retrained = True
    tune_info = {"study": config.study_name, "storage": masked_url(config.storage), "trial": best.number,
                 "value": best.value, "metric": METRIC, "params": dict(best.params),
                 "overrides": dict(best.user_attrs.get("overrides", best.params)), "retrained": retrained,
                 "n_trials": len(study.trials)}
    with atomic_artifact_dir(out) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("tune.json"))
        info = read_info(tmp)
        info.extra = {**info.extra, "tune": tune_info}
        write_info(tmp, info)
    log.info("best trial %d (%s %.4f) written to %s", best.number, METRIC, best.value, out)
    return retrained


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """One JSON-ready row per trial: number, state, value, params, epochs, duration_s, error."""
    rows = []
    for t in study.trials:
        duration = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_complete and t.datetime_start else None
        epochs = t.user_attrs.get("epochs", len(t.intermediate_values))
        row = {"number": t.number, "state": t.state.name, "value": t.value, "params": dict(t.params),
               "epochs": epochs, "duration_s": round(duration, 1) if duration is not None else None}
        if "error" in t.user_attrs:
            row["error"] = t.user_attrs["error"]
        rows.append(row)
    return rows


def _count(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in rows:
        out[row["state"].lower()] = out.get(row["state"].lower(), 0) + 1
    return out


def _summary(config: TuneConfig, best: Any, rows: list[dict[str, Any]], ran: list[int], retrained: bool,
             run_id: str | None) -> dict[str, Any]:
    return {
        "study": config.study_name, "storage": masked_url(config.storage), "target": config.target,
        "metric": METRIC, "direction": "maximize",
        "best": {"trial": best.number, "value": best.value, "params": dict(best.params),
                 "overrides": dict(best.user_attrs.get("overrides", best.params)),
                 "metrics": best.user_attrs.get("metrics", {})},
        "artifact": str(config.out), "retrained": retrained, "counts": _count(rows), "ran_this_call": list(ran),
        "space": {s.key: s.describe() for s in config.space}, "space_source": config.space_source,
        "space_yaml": config.space_yaml or None,
        "mlflow_run_id": run_id, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "trials": rows,
    }


def _write_summary(out: Path, doc: Mapping[str, Any]) -> None:
    """``out/tune.json``, replaced atomically (readers never see half a file)."""
    tmp = out / f".tune.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    os.replace(tmp, out / "tune.json")


def _short_names(keys: Sequence[str]) -> dict[str, str]:
    """``optim.lr`` -> ``lr``, ``loss.params.gamma`` -> ``gamma``; the full key where two would clash."""
    short = {k: k.split(".")[-1] for k in keys}
    clashes = {s for s in short.values() if list(short.values()).count(s) > 1}
    return {k: (k if s in clashes else s) for k, s in short.items()}


def format_trials_table(rows: Sequence[Mapping[str, Any]], best: int | None = None, limit: int = 30) -> str:
    """A short plain-text table of trials (best first, then by number), ``*`` marking the best."""
    keys = list(dict.fromkeys(k for row in rows for k in row["params"]))
    names = _short_names(keys)
    ordered = sorted(rows, key=lambda r: (r["number"] != best, -(r["value"] if r["value"] is not None
                                                                     and math.isfinite(r["value"]) else -1e9),
                                          r["number"]))
    header = ["trial", "state", METRIC, "epochs", "sec", *(names[k] for k in keys)]
    lines = [header]
    for row in ordered[:limit]:
        value = row["value"]
        lines.append([
            f"{row['number']}{'*' if row['number'] == best else ''}", row["state"].lower(),
            f"{value:.4f}" if isinstance(value, float) and math.isfinite(value) else "-",
            str(row.get("epochs") or "-"), f"{row['duration_s']:.0f}" if row.get("duration_s") is not None else "-",
            *(_fmt(row["params"][k]) if k in row["params"] else "" for k in keys),
        ])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines)
    if len(ordered) > limit:
        text += f"\n... {len(ordered) - limit} more trials in tune.json"
    return text
