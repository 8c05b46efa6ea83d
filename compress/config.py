"""Typed, frozen dataclass configs, loaded from YAML plus ``key=value`` overrides.

Every config validates itself once in ``__post_init__``; a bad value raises
:class:`~compress.errors.ConfigError` naming the field. Parts never receive a whole config,
only the plain values they need.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import json
import math
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from compress.errors import ConfigError

C = TypeVar("C")

MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
HEADS = ("flat", "conditional")  # compress.models.conditional


def _check(cond: bool, name: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"{name}: {message}")


def check_num_threads(value: int | None, name: str = "num_threads") -> None:
    """None (the runtime's choice) or a positive thread count; ConfigError naming the field otherwise."""
    _check(value is None or value >= 1, name, f"must be >= 1 (or unset for the default), got {value}")


def check_head(value: str | None, name: str = "head") -> None:
    """One of :data:`HEADS` (None allowed: the caller's default); ConfigError naming the field otherwise."""
    _check(value is None or value in HEADS, name, f"must be one of {', '.join(HEADS)}, got {value!r}")


@dataclass(frozen=True)
class DataConfig:
    """Where the labelled data comes from and how it is split.

    Attributes:
        data: training file (Jigsaw CSV, CSV/TSV/Parquet/JSONL, or a public format).
        format: reader name, or None to detect it.
        text_column / label_columns: for generic files.
        val_data: a separate validation file; if None, ``val_fraction`` of ``data`` is held out.
        val_fraction: share held out for validation (stratified, seeded).
        test_data: a separate test file; if None, ``test_fraction`` of ``data`` is held out as the test split.
        test_fraction: share of ``data`` held out for testing before the validation split (stratified,
            seeded; 0 = none): scored once, after training, never used for a choice.
        max_train_samples: cap on training rows (quick runs), None for all.
    """

    data: str = ""
    format: str | None = None
    text_column: str | None = None
    label_columns: tuple[str, ...] | None = None
    val_data: str | None = None
    val_fraction: float = 0.1
    test_data: str | None = None
    test_fraction: float = 0.1
    max_train_samples: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        _check(bool(self.data), "data", "is required; pass data=PATH (a Jigsaw-format CSV or another supported file)")
        _check(0.0 < self.val_fraction < 1.0, "val_fraction", f"must be in (0, 1), got {self.val_fraction}")
        _check(0.0 <= self.test_fraction < 1.0, "test_fraction",
               f"must be in [0, 1) (0 for no test split), got {self.test_fraction}")
        _check(self.val_fraction + self.test_fraction < 1.0, "test_fraction",
               f"val_fraction + test_fraction must be < 1, got {self.val_fraction} + {self.test_fraction}")
        _check(self.max_train_samples is None or self.max_train_samples > 0, "max_train_samples",
               f"must be positive, got {self.max_train_samples}")


def recorded_data_values(recorded: Mapping[str, Any]) -> dict[str, Any]:
    """An artifact's recorded ``recipe.data`` as :class:`DataConfig` values that rebuild its split.

    Fields this version does not know are dropped, unset ones left to the defaults, except
    ``test_fraction``: an artifact that records none was made before the test split existed and held
    no test rows out, so it is 0 (a default of 0.1 would move a tenth of its training rows).
    """
    known = {f.name for f in dataclasses.fields(DataConfig)}
    values = {k: v for k, v in recorded.items() if k in known and v is not None}
    values.setdefault("test_fraction", 0.0)
    return values


SELECT_METRICS = ("macro_roc_auc", "level_macro_f1")


@dataclass(frozen=True)
class OptimConfig:
    """Optimisation recipe shared by teachers and students."""

    epochs: int = 3
    batch_size: int = 32
    eval_batch_size: int = 128
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    mixed_precision: str = "auto"
    patience: int = 2
    max_steps: int | None = None
    seed: int = 0
    select_metric: str = "macro_roc_auc"  # what the best epoch (and compress tune's best trial) maximises

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        _check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.eval_batch_size >= 1, "eval_batch_size", f"must be >= 1, got {self.eval_batch_size}")
        _check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        _check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        _check(0 <= self.warmup_ratio < 1, "warmup_ratio", f"must be in [0, 1), got {self.warmup_ratio}")
        _check(self.grad_accum >= 1, "grad_accum", f"must be >= 1, got {self.grad_accum}")
        _check(self.max_grad_norm > 0, "max_grad_norm", f"must be > 0, got {self.max_grad_norm}")
        _check(self.mixed_precision in MIXED_PRECISION, "mixed_precision",
               f"must be one of {', '.join(MIXED_PRECISION)}, got {self.mixed_precision!r}")
        _check(self.patience >= 1, "patience", f"must be >= 1, got {self.patience}")
        _check(self.max_steps is None or self.max_steps >= 1, "max_steps", f"must be >= 1, got {self.max_steps}")
        _check(self.select_metric in SELECT_METRICS, "select_metric",
               f"must be one of {', '.join(SELECT_METRICS)}, got {self.select_metric!r}")


@dataclass(frozen=True)
class LossConfig:
    """A shared loss by name (see :mod:`compress.losses`) and its parameters."""

    name: str = "bce"
    params: Mapping[str, Any] = field(default_factory=dict)
    pos_weight_rule: str | None = None  # weighted_bce: "balanced" | "inverse_frequency"

    def __post_init__(self) -> None:
        _check(self.pos_weight_rule in (None, "balanced", "inverse_frequency"), "loss.pos_weight_rule",
               f"must be balanced or inverse_frequency, got {self.pos_weight_rule!r}")


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow: local store by default, ``tracking_uri`` for a server."""

    enabled: bool = True
    tracking_uri: str | None = None
    experiment: str = "modcompress"
    run_name: str | None = None


@dataclass(frozen=True)
class TrainConfig:
    """`compress train`: fine-tune a Hugging Face sequence-classification checkpoint.

    Attributes:
        model: hub id or local checkpoint directory.
        out: artifact directory to write.
        max_length: tokenizer truncation length.
        dropout: override the checkpoint's hidden/attention dropout, None keeps it.
        head: ``flat`` (one sigmoid per label) or ``conditional`` (a child predicts P(child | parent),
            an exclusive group is one softmax; the model returns marginals: compress.models.conditional).
        resume: continue from the checkpoint kept beside ``out`` after a crash.
    """

    model: str = ""
    out: str = "runs/teacher"
    data: DataConfig = field(default_factory=lambda: DataConfig(data="<unset>"))
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    max_length: int = 128
    dropout: float | None = None
    head: str = "flat"
    resume: bool = False
    overwrite: bool = False  # replace an earlier output of ours at out (never anything else)
    num_threads: int | None = None

    def __post_init__(self) -> None:
        _check(bool(self.model), "model", "is required; pass model=HUB_ID_OR_DIR")
        check_head(self.head)
        _check(self.data.data != "<unset>", "data.data", "is required; pass data.data=PATH or --data PATH")
        _check(8 <= self.max_length <= 8192, "max_length", f"must be in [8, 8192], got {self.max_length}")
        _check(self.dropout is None or 0 <= self.dropout < 1, "dropout", f"must be in [0, 1), got {self.dropout}")
        check_num_threads(self.num_threads)


# ----------------------------------------------------------------------------------------------
# Loading: YAML file, then dotted key=value overrides, then type coercion and validation.


def field_types(cls: type) -> dict[str, Any]:
    """``{field name: declared type}`` of dataclass ``cls``, as type objects (``int | None``, ``DataConfig``).

    Under ``from __future__ import annotations`` a field's annotation is its source text; that text is
    read as a type expression (:func:`_type_expression`) against the names of the module that declares
    the field, never evaluated as code.
    """
    types_by_name: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not isinstance(f.type, str):
            types_by_name[f.name] = f.type
            continue
        owner = next(k for k in cls.__mro__ if f.name in vars(k).get("__annotations__", {}))
        tree = ast.parse(f.type.strip(), mode="eval").body
        types_by_name[f.name] = _type_expression(tree, vars(sys.modules[owner.__module__]),
                                                 f"{owner.__qualname__}.{f.name}")
    return types_by_name


def _type_expression(node: ast.expr, names: Mapping[str, Any], where: str) -> Any:
    """The type an annotation's syntax tree spells: names and dotted names (looked up in ``names``,
    then builtins), subscripts ``X[A, B]`` and ``Callable[[A], R]``, unions ``X | Y`` and constants
    (``None``, ``...``, Literal values).

    Raises:
        TypeError: naming ``where`` for a name the module lacks or syntax that is not a type (a call, ...).
    """
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in names:
            return names[node.id]
        if hasattr(builtins, node.id):
            return getattr(builtins, node.id)
        raise TypeError(f"{where}: annotation names {node.id!r}, which its module does not define")
    if isinstance(node, ast.Attribute):
        return getattr(_type_expression(node.value, names, where), node.attr)
    if isinstance(node, ast.Subscript):
        return _type_expression(node.value, names, where)[_type_expression(node.slice, names, where)]
    if isinstance(node, ast.Tuple):
        return tuple(_type_expression(item, names, where) for item in node.elts)
    if isinstance(node, ast.List):  # the arguments of Callable[[A, B], R]
        return [_type_expression(item, names, where) for item in node.elts]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _type_expression(node.left, names, where) | _type_expression(node.right, names, where)
    raise TypeError(f"{where}: annotation {ast.unparse(node)!r} is not a type expression")


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """Coerce a YAML / command-line value to the declared type ``tp`` (a type object, see :func:`field_types`)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, name)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{name}: cannot be None")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name}: expected a mapping of fields, got {value!r}")
        return build_config(tp, value, prefix=f"{name}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{name}: expected true/false, got {value!r}")
    if tp in (int, float):
        try:
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            number = tp(value) if not isinstance(value, str) else tp(float(value)) if tp is float else int(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{name}: expected {tp.__name__}, got {value!r}") from None
        if tp is float and not math.isfinite(number):  # inf / nan pass every "> 0" check, then break training
            raise ConfigError(f"{name}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, bool):  # YAML 1.1 reads an unquoted no/yes as a boolean
            return "yes" if value else "no"
        if isinstance(value, (str, int, float, Path)):
            return str(value)
        raise ConfigError(f"{name}: expected a string, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (str, list, tuple)):
            raise ConfigError(f"{name}: expected a list or comma-separated values such as a,b, got {value!r}")
        items = value.split(",") if isinstance(value, str) else list(value)
        return tuple(_coerce(v.strip() if isinstance(v, str) else v, args[0], name) for v in items)
    if origin in (Mapping, dict) or tp in (dict, Mapping) or origin is typing.Mapping:
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                raise ConfigError(f"{name}: expected a mapping such as {{gamma: 2}}, got {value!r}") from None
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name}: expected a mapping, got {value!r}")
        return dict(value)
    return value


def build_config(cls: type[C], values: Mapping[str, Any], prefix: str = "") -> C:
    """Build dataclass ``cls`` from a nested mapping, coercing types; unknown keys are errors."""
    fields = field_types(cls)
    unknown = set(values) - set(fields)
    if unknown:
        raise ConfigError(
            f"{prefix}{sorted(unknown)[0]}: unknown setting; known: {', '.join(sorted(fields))}"
        )
    kwargs = {k: _coerce(v, fields[k], f"{prefix}{k}") for k, v in values.items()}
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        if prefix and not str(exc).startswith(prefix):
            raise ConfigError(f"{prefix}{exc}") from None
        raise


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``["optim.lr=3e-5", "loss.name=focal"]`` -> nested dict of raw strings.

    Values stay strings here and are parsed by the declared type of their field (so ``no`` stays
    the string "no" for a string field, and becomes False only for a boolean one).
    """
    nested: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override {pair!r} is not key=value; write e.g. optim.lr=3e-5")
        key, value = pair.split("=", 1)
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {pair!r}: {part} is not a group of settings")
        node[parts[-1]] = value
    return nested


def merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``extra`` into ``base`` (dicts merge, everything else replaces)."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def load_config(
    cls: type[C],
    path: str | None = None,
    overrides: Sequence[str] = (),
    defaults: Mapping[str, Any] | None = None,
) -> C:
    """Config from ``defaults`` < YAML file at ``path`` < ``key=value`` ``overrides``."""
    values: dict[str, Any] = dict(defaults or {})
    if path:
        values = merge(values, read_yaml_file(path))
    values = merge(values, parse_overrides(overrides))
    return build_config(cls, values)


def read_yaml_file(path: str) -> dict[str, Any]:
    """The top-level mapping of a recipe YAML file; one-line ConfigError if missing or malformed."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {path} not found; pass an existing YAML file to --config")
    try:
        loaded = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(loaded, Mapping):
        raise ConfigError(f"config file {path} must hold a mapping of settings at the top level")
    return dict(loaded)


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config (for artifact.json and MLflow params)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 1}}`` -> ``{"optim.lr": 1}`` (MLflow params)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out
