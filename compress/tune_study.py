"""The Optuna study of `compress tune`: its RDB storage (SQLite by default; any SQLAlchemy URL lets
several workers share one study), sampler, pruner, and the check that a resumed study tunes the same thing.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from compress.errors import UserError, one_line
from compress.tune_config import TuneConfig


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

    if config.n_trials == 0:
        return _existing_study(config)
    storage = open_storage(config.storage)
    try:
        study = optuna.create_study(storage=storage, study_name=config.study_name, direction="maximize",
                                    sampler=_sampler(config.sampler, config.seed), pruner=_pruner(config),
                                    load_if_exists=True)
    except ValueError as exc:  # e.g. an existing study of the same name with another direction
        raise UserError(f"cannot use study {config.study_name!r} in {masked_url(config.storage)} ({exc}); "
                        "pass another --study-name") from None
    target = study.user_attrs.get("modcompress.target")
    if target is not None and target != config.target:
        raise UserError(f"study {config.study_name!r} in {masked_url(config.storage)} tunes a {target}, "
                        f"not a {config.target}; pass another --study-name")
    _check_metric(study, config)
    if target is None:
        study.set_user_attr("modcompress.target", config.target)
        study.set_user_attr("modcompress.metric", config.metric)
    return study


def _check_metric(study, config: TuneConfig) -> None:
    """Trial values of one study must be the same metric: refuse another ``optim.select_metric``."""
    metric = study.user_attrs.get("modcompress.metric", config.metric)
    if metric != config.metric:
        raise UserError(f"study {config.study_name!r} in {masked_url(config.storage)} maximises {metric}, not "
                        f"{config.metric}; pass optim.select_metric={metric} or another --study-name")


def _existing_study(config: TuneConfig):
    """With ``n_trials=0`` nothing is tuned: load the study (never create one) and require a finished trial."""
    import optuna

    fix = "run trials first (--n-trials N), or pass the --storage and --study-name of an existing study"
    if config.storage.startswith("sqlite:///") and not Path(config.storage[len("sqlite:///"):]).expanduser().is_file():
        raise UserError(f"--n-trials 0 writes the best trial of an existing study, and {masked_url(config.storage)} "
                        f"does not exist; {fix}")
    try:
        study = optuna.load_study(study_name=config.study_name, storage=open_storage(config.storage))
    except KeyError:
        raise UserError(f"--n-trials 0 writes the best trial of an existing study, and "
                        f"{masked_url(config.storage)} has no study {config.study_name!r}; {fix}") from None
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        raise UserError(f"study {config.study_name!r} has no finished trial to write; {fix}")
    target = study.user_attrs.get("modcompress.target")
    if target is not None and target != config.target:
        raise UserError(f"study {config.study_name!r} in {masked_url(config.storage)} tunes a {target}, "
                        f"not a {config.target}; pass another --study-name")
    _check_metric(study, config)
    return study
