"""`compress baseline NAME`: parse -> BaselineConfig -> compress.baseline.baseline -> print a short result."""

from __future__ import annotations

import argparse
import json

from compress.distributed import is_main_process
from modcompress.commands.compress.train import add_common_options, common_overrides, held_out_summary


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "baseline", help="fit a classical baseline (tfidf, fasttext)",
        description="Fit a TF-IDF + logistic regression or a fastText-style baseline and write it as an "
                    "artifact with tuned thresholds and validation metrics.")
    p.add_argument("name", help="tfidf or fasttext")
    add_common_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from compress.baseline import baseline, load_baseline_config

    config = load_baseline_config(args.name, args.config, [*common_overrides(args), *args.overrides])
    result = baseline(config)
    if not is_main_process():  # under a launcher the result is printed once
        return 0
    m = result.metrics
    payload = {
        "artifact": str(result.artifact), "macro_roc_auc": m["macro_roc_auc"], "macro_f1": m["macro_f1"],
        "macro_pr_auc": m["macro_pr_auc"], "num_parameters": result.num_parameters,
        "wall_time_s": round(result.wall_time_s, 1), "mlflow_run_id": result.mlflow_run_id,
    }
    held_out, lines = held_out_summary(m)
    payload.update(held_out)
    if args.json:
        print(json.dumps(payload, indent=2))
    else:
        print(f"baseline written to {result.artifact} ({result.num_parameters:,} parameters)")
        print(f"validation macro ROC-AUC {m['macro_roc_auc']:.4f}  macro-F1 {m['macro_f1']:.4f}; "
              f"wall time {result.wall_time_s:.1f} s")
        for line in lines:
            print(line)
    return 0
