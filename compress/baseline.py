"""`compress baseline`: classical baselines with the same artifact contract as teachers and students.

Recipe: load + split the data (as ``compress train`` does) -> ``BASELINES[name](num_labels, **params)``
-> ``fit`` (scikit-learn for ``tfidf``; the shared training loop for ``fasttext``) -> thresholds
tuned on validation -> validation metrics, and the test split's at those thresholds -> a ``baseline`` artifact written atomically
(``model/`` holds the baseline's own files; there is no ``tokenizer/``) and logged to MLflow.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.config import DataConfig, LossConfig, OptimConfig, TrackingConfig, _check, load_config, to_dict
from compress.errors import ConfigError

log = logging.getLogger(__name__)

BASELINE_NAMES = ("tfidf", "fasttext")  # mirrors compress.models.BASELINES (kept light here)

BASELINE_DEFAULTS: dict[str, dict[str, Any]] = {
    "tfidf": {},
    "fasttext": {"optim": {"lr": 5e-3, "epochs": 5, "batch_size": 32, "weight_decay": 0.0, "warmup_ratio": 0.0,
                           "patience": 2}},
}


@dataclass(frozen=True)
class BaselineConfig:
    """`compress baseline NAME`.

    Attributes:
        name: ``tfidf`` or ``fasttext``.
        out: artifact directory to write.
        params: the baseline's constructor arguments (see its class).
        optim: training recipe of trainable baselines (fasttext); tfidf ignores it.
        loss: hard loss of trainable baselines (fasttext).
    """

    name: str = ""
    out: str = "runs/baseline"
    data: DataConfig = field(default_factory=lambda: DataConfig(data="<unset>"))
    params: Mapping[str, Any] = field(default_factory=dict)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    overwrite: bool = False  # replace an earlier output of ours at out (never anything else)
    num_threads: int | None = None

    def __post_init__(self) -> None:
        _check(self.name in BASELINE_NAMES, "name",
               f"unknown baseline {self.name!r}; known: {', '.join(BASELINE_NAMES)}")
        _check(self.data.data != "<unset>", "data.data", "is required; pass --data PATH")


def load_baseline_config(name: str, path: str | None = None, overrides: tuple[str, ...] | list[str] = ()
                         ) -> BaselineConfig:
    """BaselineConfig from the baseline's defaults < YAML ``path`` < ``key=value`` overrides."""
    return load_config(BaselineConfig, path, list(overrides),
                       defaults={"name": name, **BASELINE_DEFAULTS.get(name, {})})


@dataclass
class BaselineResult:
    """What a baseline run produced."""

    artifact: Path
    metrics: dict
    wall_time_s: float
    train_examples_per_s: float
    num_parameters: int
    mlflow_run_id: str | None = None
    model: Any = field(default=None, repr=False)


def baseline_params(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` parsed for baseline ``name``; ConfigError naming the first one its constructor lacks."""
    import inspect

    from compress.models import BASELINES, parse_params

    parsed = parse_params(params)
    accepted = set(inspect.signature(BASELINES[name]).parameters) - {"num_labels"}
    unknown = sorted(set(parsed) - accepted)
    if unknown:
        raise ConfigError(f"params.{unknown[0]}: unknown parameter of {name}; accepted: "
                          f"{', '.join(sorted(accepted))}")
    return parsed


def build_baseline(name: str, params: dict[str, Any], num_labels: int) -> Any:
    """``BASELINES[name](num_labels, **params)``; ConfigError when the values do not build one."""
    from compress.models import BASELINES

    try:
        return BASELINES[name](num_labels, **params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"params: {name} cannot be built from {params} ({exc})") from None


def baseline(config: BaselineConfig) -> BaselineResult:
    """Fit baseline ``config.name`` on ``config.data`` and write a baseline artifact to ``config.out``."""
    import torch

    from compress.artifact import ArtifactInfo, atomic_artifact_dir, check_out, write_info
    from compress.distributed import is_main_process, quiet_other_processes, wait_for_everyone
    from compress.hierarchy_metrics import level_cuts_of
    from compress.loop import checkpoint_dir
    from compress.metrics import multilabel_metrics, summary, tune_thresholds
    from compress.tracking import tracked_run
    from compress.train import build_task_loss, load_splits

    t_start = time.perf_counter()
    quiet_other_processes()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.optim.seed)
    params = baseline_params(config.name, config.params)
    out = check_out(config.out, config.overwrite,
                    inputs=(config.data.data, config.data.val_data, config.data.test_data))

    train_set, val_set, test_set = load_splits(config.data)
    schema = train_set.schema
    model = build_baseline(config.name, params, schema.num_labels)
    loss_fn = build_task_loss(config.loss.name, dict(config.loss.params), config.loss.pos_weight_rule, schema,
                              train_set.labels)
    recipe = to_dict(config)
    recipe["params"] = dict(model.params)
    log.info("baseline %s: train %d rows, validation %d rows, %d labels", config.name, len(train_set), len(val_set),
             schema.num_labels)
    ckpt = checkpoint_dir(out)
    with tracked_run(config.tracking.enabled, config.tracking.tracking_uri, config.tracking.experiment,
                     config.tracking.run_name, params=recipe,
                     tags={"stage": "baseline", "kind": "baseline", "baseline": config.name}) as tracker:
        fit_info = model.fit(train_set.texts, train_set.labels, val_set.texts, val_set.labels, schema.names,
                             optim=config.optim, tracker=tracker, workdir=ckpt, loss_fn=loss_fn, schema=schema)
        probs = model.predict_proba(val_set.texts)  # (N_val, L)
        thresholds = tune_thresholds(val_set.labels, probs)
        metrics = multilabel_metrics(val_set.labels, probs, schema.names, thresholds, schema)
        if test_set is not None:  # once, at the validation thresholds
            test = multilabel_metrics(test_set.labels, model.predict_proba(test_set.texts), schema.names,
                                      thresholds, schema, level_cuts_of(metrics))
            tracker.log_metrics({f"test_{k}": v for k, v in summary(test).items()})
            metrics["test"] = test
        n_params = model.num_parameters()
        info = ArtifactInfo(
            kind="baseline", architecture=config.name, **ArtifactInfo.fields_of(schema),
            thresholds=[float(t) for t in thresholds],
            max_length=0, metrics=metrics, data_fingerprint=train_set.fingerprint(), recipe=recipe,
            extra={"num_parameters": n_params, "train_rows": len(train_set), "val_rows": len(val_set),
                   "test_rows": len(test_set) if test_set else 0,
                   **{k: v for k, v in fit_info.items() if k != "train_examples_per_s"}},
        )
        if is_main_process():  # under a launcher every process fits; one writes
            with atomic_artifact_dir(out, config.overwrite) as tmp:
                model.save(tmp / "model")
                write_info(tmp, info)
            shutil.rmtree(ckpt, ignore_errors=True)
        wait_for_everyone()  # every process returns once the artifact is in place
        wall = time.perf_counter() - t_start
        speed = float(fit_info.get("train_examples_per_s", 0.0))
        tracker.log_metrics({"wall_time_s": wall, "train_examples_per_s": speed, "num_parameters": n_params,
                             **summary(metrics)})
        tracker.log_artifact_dir(out)
    log.info("baseline written to %s: val macro ROC-AUC %.4f, macro-F1 %.4f", out, metrics["macro_roc_auc"],
             metrics["macro_f1"])
    return BaselineResult(out, metrics, wall, speed, n_params, tracker.run_id, model)
