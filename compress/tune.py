"""`compress tune`: an Optuna study over the teacher recipe, or over a student's via distillation.

Recipe, top to bottom: a base recipe (a :class:`~compress.config.TrainConfig`, or a
:class:`~compress.distill.DistillConfig` for ``--student NAME --teacher DIR``) + a search space
(:mod:`compress.search_space`) -> an Optuna study in an RDB storage (:mod:`compress.tune_study`;
SQLite by default, any SQLAlchemy URL lets several workers share one study, resumed by name) -> each
trial samples the space, trains into its own directory under ``<out>.trials/`` and reports its
validation ``optim.select_metric`` (macro ROC-AUC by default) after every epoch, so the pruner can stop
it early (:class:`Objective`) -> the best trial's artifact is copied atomically to ``out`` (retrained
from its parameters when its directory is gone, e.g. when another worker on another machine ran it),
with ``artifact.json`` ``extra.tune`` and a ``tune.json`` summary of every trial
(:mod:`compress.tune_report`). Each trial is an MLflow run nested under one run per worker. The test
split (when the data has one) is never part of the choice: trials are compared on validation.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.artifact import check_out
from compress.config import TrainConfig, build_config, to_dict
from compress.errors import UserError, one_line
from compress.search_space import sample, trial_values
from compress.tune_config import TuneConfig, TuneResult
from compress.tune_report import format_value, log_report, study_summary, trial_rows, write_summary
from compress.tune_study import masked_url, open_study

log = logging.getLogger(__name__)


def tune(config: TuneConfig) -> TuneResult:
    """Run ``config.n_trials`` trials of the study and write the study's best artifact to ``config.out``."""
    from compress.tracking import tracked_run

    # the destination first: each call of the same study replaces its own best artifact, nothing else
    check_out(config.out, config.overwrite or _tuned_trial(Path(config.out), config.study_name) is not None,
              inputs=_data_inputs(config.base))
    base_values = to_dict(config.base)
    study = open_study(config)
    objective = Objective(config, base_values)
    log.info("study %s in %s: %d trials so far; this call runs %s trial(s)%s", config.study_name,
             masked_url(config.storage), len(study.trials), config.n_trials if config.n_trials else "as many",
             f" for up to {config.timeout:.0f} s" if config.timeout else "")
    tracking = config.base.tracking
    with tracked_run(tracking.enabled, tracking.tracking_uri, tracking.experiment,
                     tracking.run_name or f"tune {config.study_name}", params=_run_params(config, base_values),
                     tags={"stage": "tune", "optuna.study": config.study_name}) as tracker:
        _optimize(study, objective, config, tracker)
        if not _any_complete(study):
            _cleanup(config.trials_path, objective.ran, config.keep_trials)
            why = f"; last error: {objective.failures[-1]}" if objective.failures else ""
            raise UserError(f"no trial of study {config.study_name!r} finished{why}; widen the space or "
                            "relax pruning (--pruner none) and run again")
        best = study.best_trial
        retrained = _write_best(config, best, base_values, study)
        _cleanup(config.trials_path, objective.ran, config.keep_trials)
        rows = trial_rows(study)
        summary = study_summary(config, best, rows, objective.ran, retrained, tracker.run_id)
        write_summary(Path(config.out), summary)
        log_report(tracker, best, rows, summary)
    return TuneResult(Path(config.out), config.study_name, masked_url(config.storage), best.number,
                      float(best.value), dict(best.user_attrs.get("overrides", best.params)), rows, objective.ran,
                      retrained, Path(config.out) / "tune.json", tracker.run_id, config.metric)


# ----------------------------------------------------------------------------------------------
# The study's steps.


def _run_params(config: TuneConfig, base_values: Mapping[str, Any]) -> dict[str, Any]:
    """The tuning run's MLflow params: the study's settings, the space, and the base recipe."""
    return {"study": config.study_name, "storage": masked_url(config.storage), "target": config.target,
            "n_trials": config.n_trials, "timeout": config.timeout, "sampler": config.sampler,
            "pruner": config.pruner, "seed": config.seed, "space": {s.key: s.describe() for s in config.space},
            "base": {k: v for k, v in base_values.items() if k not in ("tracking", "out", "resume")}}


def _optimize(study: Any, objective: Objective, config: TuneConfig, tracker: Any) -> None:
    """Run this call's trials (none when ``n_trials`` is 0); each trial's value and the best so far go
    to the tuning run as it goes."""
    import optuna

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        record = {"trial_value": trial.value if trial.value is not None else float("nan")}
        if _any_complete(study):
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


def _any_complete(study: Any) -> bool:
    import optuna

    return any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def _write_best(config: TuneConfig, best: Any, base_values: Mapping[str, Any], study: Any) -> bool:
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

            source = config.trials_path / "retrain"
            chosen = best.user_attrs.get("overrides", best.params)
            cfg = _trial_config(config, base_values, chosen, source, f"{config.study_name}/retrain-{best.number}")
            with run_hooks(tags={"optuna.study": config.study_name, "optuna.retrain": best.number}):
                _run_recipe(cfg)
            retrained = True
    tune_info = {"study": config.study_name, "storage": masked_url(config.storage), "trial": best.number,
                 "value": best.value, "metric": config.metric, "params": dict(best.params),
                 "overrides": dict(best.user_attrs.get("overrides", best.params)), "retrained": retrained,
                 "n_trials": len(study.trials)}
    # each call of the same study replaces its own best artifact; anything else needs --overwrite
    with atomic_artifact_dir(out, config.overwrite or _tuned_trial(out, config.study_name) is not None) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("tune.json"))
        info = read_info(tmp)
        info.extra = {**info.extra, "tune": tune_info}
        write_info(tmp, info)
    log.info("best trial %d (%s %.4f) written to %s", best.number, config.metric, best.value, out)
    return retrained


def _data_inputs(base: Any) -> tuple[str | None, ...]:
    """The files a trial reads (``--out`` must not hold them): data, validation data, the teacher."""
    data = getattr(base, "data", None)
    return (getattr(data, "data", None), getattr(data, "val_data", None), getattr(base, "teacher", None))


def _tuned_trial(path: Path, study_name: str) -> int | None:
    """The trial number recorded in a tuned artifact at ``path`` for ``study_name``, if any."""
    try:
        meta = json.loads((path / "artifact.json").read_text())
        tune_info = meta.get("extra", {}).get("tune", {})
        return int(tune_info["trial"]) if tune_info.get("study") == study_name else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


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


# ----------------------------------------------------------------------------------------------
# One trial.


@dataclass
class Objective:
    """What the study runs per trial: sample the space -> train or distil the recipe into the trial's
    own directory, reporting every epoch's score (so the pruner can stop it) -> its validation score.

    A trial that fails on its own (e.g. a diverging learning rate) scores NaN and the study goes on;
    a UserError (the recipe or data is wrong) stops the study: every trial would fail the same way.

    Attributes:
        config: the study's settings; base_values: ``to_dict(config.base)``.
        ran: trial numbers this worker ran; failures: one line per trial that failed.
    """

    config: TuneConfig
    base_values: dict[str, Any]
    ran: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def __call__(self, trial: Any) -> float:
        import optuna

        from compress.metrics import summary
        from compress.tracking import run_hooks

        config = self.config
        self.ran.append(trial.number)
        chosen = sample(trial, config.space, self.base_values)
        trial_dir = config.trials_path / f"trial-{trial.number:04d}"
        trial.set_user_attr("overrides", chosen)
        trial.set_user_attr("artifact", str(trial_dir.resolve()))
        trial.set_user_attr("host", socket.gethostname())
        cfg = _trial_config(config, self.base_values, chosen, trial_dir, f"{config.study_name}/trial-{trial.number}")
        reporter = EpochReporter(trial, config.metric)
        tags = {"optuna.study": config.study_name, "optuna.trial": trial.number}
        log.info("trial %d: %s", trial.number,
                 ", ".join(f"{k}={format_value(v)}" for k, v in chosen.items()) or "base recipe")
        try:
            with run_hooks(tags=tags, on_metrics=reporter):
                result = _run_recipe(cfg)
        except optuna.TrialPruned:
            _remove_trial_dir(trial_dir)
            _mark_killed(config.base.tracking.tracking_uri, reporter.run_id)
            trial.set_user_attr("epochs", reporter.epochs)
            raise
        except UserError:
            _remove_trial_dir(trial_dir)
            raise  # the recipe or data is wrong: every trial would fail the same way
        except Exception as exc:  # noqa: BLE001 - e.g. a diverging learning rate: fail this trial, go on
            _remove_trial_dir(trial_dir)
            message = f"trial {trial.number} failed: {type(exc).__name__}: {_one_line(exc)}"
            log.warning("%s", message)
            self.failures.append(message)
            trial.set_user_attr("error", message)
            return float("nan")  # Optuna records a NaN objective as a failed trial
        trial.set_user_attr("metrics", summary(result.metrics))
        trial.set_user_attr("epochs", int(result.epochs_run))
        trial.set_user_attr("mlflow_run_id", result.mlflow_run_id)
        return objective_value(result.metrics, config.metric)


def _trial_config(config: TuneConfig, base_values: Mapping[str, Any], chosen: Mapping[str, Any], out: Path,
                  run_name: str) -> Any:
    values = trial_values(base_values, chosen)
    values["out"] = str(out)
    values["resume"] = False
    values["tracking"] = {**values["tracking"], "run_name": run_name}
    return build_config(type(config.base), values)


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


def _mark_killed(tracking_uri: str | None, run_id: str | None) -> None:
    """A pruned trial's MLflow run ends KILLED rather than FAILED."""
    if not run_id:
        return
    try:
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri).set_terminated(run_id, status="KILLED")
    except Exception as exc:  # noqa: BLE001 - bookkeeping only
        log.debug("could not mark MLflow run %s killed: %s", run_id, exc)


def _one_line(exc: BaseException) -> str:
    return (one_line(exc) or type(exc).__name__)[:200]


# ----------------------------------------------------------------------------------------------
# Pruning: per-epoch validation scores reach the trial through the tracker's metric hook.


def objective_value(metrics: Mapping[str, Any], metric: str = "macro_roc_auc") -> float:
    """What the study maximises: validation ``metric`` (``optim.select_metric``), or macro-F1 where it is
    undefined.

    This is the training loop's own model-selection score, so the best epoch and the best trial
    agree on what "best" means.
    """
    value = float(metrics.get(metric, float("nan")))
    return value if math.isfinite(value) else float(metrics.get("macro_f1", float("nan")))


class EpochReporter:
    """``on_metrics`` hook: report each epoch's score to an Optuna trial; raise TrialPruned when told.

    The training loop logs ``{"epoch", "train_loss", macro_roc_auc, ...}`` with ``step=epoch``
    once per epoch; other logged dicts (no step, or no ``metric``) are ignored.
    """

    def __init__(self, trial: Any, metric: str = "macro_roc_auc") -> None:
        self.trial = trial
        self.metric = metric
        self.run_id: str | None = None
        self.epochs = 0

    def __call__(self, tracker: Any, metrics: Mapping[str, Any], step: int | None) -> None:
        import optuna

        if step is None or self.metric not in metrics:
            return
        self.run_id = getattr(tracker, "run_id", None) or self.run_id
        value = objective_value(metrics, self.metric)
        if not math.isfinite(value):
            return
        self.epochs = int(step)
        self.trial.report(value, int(step))
        if self.trial.should_prune():
            if getattr(tracker, "active", False):
                tracker.set_tags({"optuna.state": "PRUNED"})
            raise optuna.TrialPruned(f"trial {self.trial.number} pruned after epoch {step} ({self.metric} {value:.4f})")
