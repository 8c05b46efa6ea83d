"""`compress train`: parse -> TrainConfig -> compress.train.train -> print a short result."""

from __future__ import annotations

import argparse
import json

from compress.config import TrainConfig, load_config
from compress.distributed import is_main_process
from modcompress.clikit import intermix


def add_common_options(p: argparse.ArgumentParser) -> None:
    """Options shared by train / distill / tune: config file, data, tracking, overrides."""
    p.add_argument("--config", help="recipe YAML; command-line options and key=value overrides win")
    p.add_argument("--data", help="training data file (Jigsaw CSV, CSV/TSV/Parquet/JSONL, olid, ...)")
    p.add_argument("--format", help="data format (detected when omitted)")
    p.add_argument("--text-column", help="text column of a generic file")
    p.add_argument("--label-columns", help="comma-separated label columns of a generic file")
    p.add_argument("--val-data", help="separate validation file (default: a stratified split)")
    p.add_argument("--test-data", help="separate test file, scored once at the end (default: data.test_fraction "
                                       "of --data held out)")
    p.add_argument("--out", help="artifact directory to write")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier modcompress output at --out (anything else there is never replaced)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: local store)")
    p.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. optim.lr=3e-5 optim.epochs=2 loss.name=focal")
    intermix(p)


def common_overrides(args: argparse.Namespace) -> list[str]:
    """Turn the shared flags into ``key=value`` overrides (applied before the explicit ones)."""
    pairs = []
    for flag, key in (("data", "data.data"), ("format", "data.format"), ("text_column", "data.text_column"),
                      ("label_columns", "data.label_columns"), ("val_data", "data.val_data"),
                      ("test_data", "data.test_data"), ("out", "out"),
                      ("tracking_uri", "tracking.tracking_uri")):
        value = getattr(args, flag, None)
        if value is not None:
            pairs.append(f"{key}={value}")
    if getattr(args, "no_tracking", False):
        pairs.append("tracking.enabled=false")
    if getattr(args, "overwrite", False):
        pairs.append("overwrite=true")
    return pairs


def held_out_summary(metrics: dict) -> tuple[dict, list[str]]:
    """The level and test figures of a run's ``metrics``: (JSON fields, lines to print)."""
    from compress.metrics import summary

    fields: dict = {}
    lines = []
    if "level_macro_f1" in metrics:
        fields["level_macro_f1"] = metrics["level_macro_f1"]
        by_level = metrics.get("levels", {}).get("by_level", {})
        lines.append(f"validation level macro-F1 {metrics['level_macro_f1']:.4f} ("
                     + ", ".join(f"{level} {value:.4f}" for level, value in by_level.items()) + ")")
    test = metrics.get("test")
    if test:
        fields["test"] = {"rows": test["n"], **summary(test)}
        lines.append(f"test ({test['n']} rows, scored once) macro ROC-AUC {test['macro_roc_auc']:.4f}  "
                     f"macro-F1 {test['macro_f1']:.4f}")
    return fields, lines


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="fine-tune a teacher (any HF sequence-classification checkpoint)",
                       description="Fine-tune a Hugging Face checkpoint as a multi-label teacher.")
    p.add_argument("--model", help="hub id, checkpoint directory, or 'minilm' (offline package)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint after a crash")
    add_common_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from compress.train import train

    pairs = common_overrides(args)
    if args.model:
        pairs.append(f"model={args.model}")
    if args.resume:
        pairs.append("resume=true")
    config = load_config(TrainConfig, args.config, [*pairs, *args.overrides])
    result = train(config)
    if not is_main_process():  # under a launcher the result is printed once
        return 0
    m = result.metrics
    payload = {
        "artifact": str(result.artifact), "macro_roc_auc": m["macro_roc_auc"], "macro_f1": m["macro_f1"],
        "macro_pr_auc": m["macro_pr_auc"], "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
        "wall_time_s": round(result.wall_time_s, 1), "train_examples_per_s": round(result.train_examples_per_s, 1),
        "mlflow_run_id": result.mlflow_run_id, "mixed_precision": result.mixed_precision,
        "precision_reason": (result.precision_choice or {}).get("reason"),
    }
    held_out, lines = held_out_summary(m)
    payload.update(held_out)
    if args.json:
        print(json.dumps(payload, indent=2))
    else:
        print(f"teacher written to {result.artifact}")
        print(f"validation macro ROC-AUC {m['macro_roc_auc']:.4f}  macro-F1 {m['macro_f1']:.4f}  "
              f"(best epoch {result.best_epoch} of {result.epochs_run})")
        for line in lines:
            print(line)
        print(f"wall time {result.wall_time_s:.1f} s, {result.train_examples_per_s:.1f} train examples/s")
        if result.precision_choice:
            print(f"mixed precision: {result.precision_choice['reason']}")
    return 0
