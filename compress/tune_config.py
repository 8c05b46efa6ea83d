"""`compress tune`'s settings and result: :class:`TuneConfig`, :class:`TuneResult`, and the defaults the CLI shows."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.config import TrainConfig, _check
from compress.search_space import ParamSpec, check_space

DEFAULT_STORAGE = "sqlite:///runs/tune.db"
DEFAULT_STUDY = "modcompress"
DEFAULT_N_TRIALS = 10
DEFAULT_OUT = "runs/tuned"
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "hyperband", "none")


@dataclass(frozen=True)
class TuneConfig:
    """`compress tune`.

    Attributes:
        base: the recipe every trial starts from: a TrainConfig (teacher) or a DistillConfig (student).
        space: parameters to sample (:func:`~compress.search_space.load_space`); checked against ``base`` on creation.
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
    out: str = DEFAULT_OUT
    overwrite: bool = False  # replace an earlier output of ours at out (never anything else)
    trials_dir: str | None = None
    storage: str = DEFAULT_STORAGE
    study_name: str = DEFAULT_STUDY
    n_trials: int | None = DEFAULT_N_TRIALS
    timeout: float | None = None
    sampler: str = "tpe"
    pruner: str = "median"
    pruner_startup_trials: int = 2
    pruner_warmup_epochs: int = 0
    seed: int | None = None
    keep_trials: bool = False
    space_yaml: str = field(default="", repr=False)

    def __post_init__(self) -> None:
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
    def metric(self) -> str:
        """What the study maximises: the base recipe's ``optim.select_metric`` (validation), the score that
        also picks each trial's best epoch, so the best epoch and the best trial agree on "best"."""
        return self.base.optim.select_metric

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
        metric: the validation metric the study maximises (:attr:`TuneConfig.metric`).
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
    metric: str = "macro_roc_auc"

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.trials:
            out[t["state"]] = out.get(t["state"], 0) + 1
        return out
