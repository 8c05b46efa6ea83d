"""`compress tune`: parse -> TuneConfig (base recipe + search space) -> compress.tune.tune -> print a table."""

from __future__ import annotations

import argparse
import json

from compress.errors import UserError
from compress.search_space import default_space_yaml, load_space
from compress.tune import tune
from compress.tune_config import (
    DEFAULT_N_TRIALS,
    DEFAULT_OUT,
    DEFAULT_STORAGE,
    DEFAULT_STUDY,
    PRUNERS,
    SAMPLERS,
    TuneConfig,
)
from compress.tune_report import format_trials_table
from modcompress.commands.compress.train import add_common_options, common_overrides


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune", help="Optuna search over the teacher recipe, or a student's (distillation)",
        description="Tune a teacher (--model) or a student distilled from a teacher (--student NAME --teacher DIR) "
                    "with Optuna: each trial trains into its own directory and reports its validation "
                    "optim.select_metric (macro ROC-AUC by default) per epoch (pruning); the study's best artifact is written to --out with tune.json. "
                    "KEY=VALUE overrides set the base recipe of every trial; the search space wins over them.")
    p.add_argument("--model", help="teacher checkpoint: hub id, directory, or 'minilm' (teacher tuning)")
    p.add_argument("--student", help="distilbert, textcnn, bilstm or an HF checkpoint directory (student tuning)")
    p.add_argument("--teacher", help="teacher artifact directory (with --student)")
    p.add_argument("--space", help="search space YAML (default: the built-in space; see --show-space)")
    p.add_argument("--show-space", action="store_true", help="print the default search space as YAML and exit")
    p.add_argument("--storage", default=DEFAULT_STORAGE,
                   help=f"Optuna storage URL; any SQLAlchemy database URL lets workers share a study "
                        f"(default {DEFAULT_STORAGE})")
    p.add_argument("--study-name", default=DEFAULT_STUDY, help=f"study to create or resume (default {DEFAULT_STUDY})")
    p.add_argument("--n-trials", type=int, default=None,
                   help=f"trials this call runs (default {DEFAULT_N_TRIALS}; they accumulate; "
                        "0 = only write the study's best artifact)")
    p.add_argument("--timeout", type=float, default=None, help="seconds after which no new trial starts")
    p.add_argument("--sampler", default="tpe", choices=SAMPLERS, help="Optuna sampler (default tpe)")
    p.add_argument("--pruner", default="median", choices=PRUNERS,
                   help="prune trials on the per-epoch validation optim.select_metric (default median)")
    p.add_argument("--pruner-startup-trials", type=int, default=2,
                   help="median pruner: trials that finish before any is pruned (default 2)")
    p.add_argument("--pruner-warmup-epochs", type=int, default=0,
                   help="median pruner: epochs of each trial never pruned (default 0)")
    p.add_argument("--seed", type=int, default=None, help="sampler seed")
    p.add_argument("--trials-dir", help="per-trial artifacts (default <out>.trials)")
    p.add_argument("--keep-trials", action="store_true", help="keep every trial's artifact")
    add_common_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.student and not args.teacher:
        raise UserError("--student needs --teacher DIR (the teacher artifact to distil from)")
    if args.teacher and not args.student:
        raise UserError("--teacher needs --student NAME (distilbert, textcnn, bilstm); to tune a teacher use --model")
    if args.student and args.model:
        raise UserError("pass either --model (tune a teacher) or --student with --teacher (tune a student), not both")
    if args.show_space:
        print(default_space_yaml(args.student), end="")
        return 0
    pairs = [p for p in common_overrides(args) if not p.startswith(("out=", "overwrite="))]
    if args.student:
        from compress.distill import load_distill_config

        base = load_distill_config(args.teacher, args.student, args.config, [*pairs, *args.overrides])
    else:
        from compress.config import TrainConfig, load_config

        if args.model:
            pairs.append(f"model={args.model}")
        base = load_config(TrainConfig, args.config, [*pairs, *args.overrides])
    space, text = load_space(args.space, args.student)
    n_trials = args.n_trials if args.n_trials is not None or args.timeout is not None else DEFAULT_N_TRIALS
    config = TuneConfig(
        base=base, space=space, space_source=args.space or "default space", space_yaml=text,
        out=args.out or DEFAULT_OUT, overwrite=args.overwrite, trials_dir=args.trials_dir, storage=args.storage, study_name=args.study_name,
        n_trials=n_trials, timeout=args.timeout, sampler=args.sampler, pruner=args.pruner,
        pruner_startup_trials=args.pruner_startup_trials, pruner_warmup_epochs=args.pruner_warmup_epochs,
        seed=args.seed, keep_trials=args.keep_trials)
    result = tune(config)
    if args.json:
        print(json.dumps({
            "artifact": str(result.artifact), "summary": str(result.summary_path), "study": result.study_name,
            "storage": result.storage, "best_trial": result.best_trial, "best_value": result.best_value,
            "best_params": result.best_params, "counts": result.counts(), "ran": result.ran,
            "retrained": result.retrained, "mlflow_run_id": result.mlflow_run_id,
        }, indent=2, default=str))
        return 0
    print(format_trials_table(result.trials, result.best_trial, metric=result.metric))
    counts = ", ".join(f"{n} {state.lower()}" for state, n in sorted(result.counts().items()))
    print(f"study {result.study_name} in {result.storage}: {counts}; this call ran {len(result.ran)}")
    print(f"best trial {result.best_trial}: {result.metric} {result.best_value:.4f}"
          f"{' (retrained from its parameters)' if result.retrained else ''}")
    print(f"best artifact written to {result.artifact}; summary {result.summary_path}")
    return 0
