"""`compress distill`: parse -> DistillConfig -> compress.distill.distill -> print a short result."""

from __future__ import annotations

import argparse
import json

from modcompress.commands.compress.train import add_common_options, common_overrides, held_out_summary


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "distill", help="distil a teacher artifact into a small student",
        description="Teach a student (distilbert, textcnn, bilstm, or an HF checkpoint directory) from a "
                    "teacher artifact's soft labels (cached), optionally with unlabelled and augmented texts.")
    p.add_argument("teacher", help="teacher artifact directory (made by `compress train`)")
    p.add_argument("student", help="distilbert, textcnn, bilstm, or a Hugging Face checkpoint directory")
    p.add_argument("--loss", help="hard-label loss (bce, weighted_bce, focal, asymmetric, ...)")
    p.add_argument("--temperature", type=float, help="KD temperature T > 0 (default 2)")
    p.add_argument("--alpha", type=float, help="weight of the KD term in [0, 1] (default 0.5; 0 = hard labels only)")
    p.add_argument("--unlabeled", metavar="FILE", help="extra unlabelled texts (.txt one per line, or a CSV column)")
    p.add_argument("--augment", type=int, metavar="N", help="augmented copies per transfer text (Tang et al. 2019)")
    p.add_argument("--student-layers", type=int, help="distilbert depth (default half the teacher's)")
    p.add_argument("--thresholds-from", metavar="validation|transfer",
                   help="tune the decision thresholds on the validation labels (default) or on the whole "
                        "transfer set against the teacher's decisions")
    p.add_argument("--cache-dir", help="soft-label cache (default ~/.cache/modcompress/soft_labels)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint after a crash")
    add_common_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from compress.distill import distill, load_distill_config
    from compress.distributed import is_main_process

    pairs = common_overrides(args)
    for flag, key in (("loss", "loss.name"), ("temperature", "temperature"), ("alpha", "alpha"),
                      ("unlabeled", "unlabeled"), ("augment", "augment"), ("student_layers", "student_layers"),
                      ("cache_dir", "cache_dir"), ("thresholds_from", "thresholds_from")):
        value = getattr(args, flag)
        if value is not None:
            pairs.append(f"{key}={value}")
    if args.resume:
        pairs.append("resume=true")
    config = load_distill_config(args.teacher, args.student, args.config, [*pairs, *args.overrides])
    result = distill(config)
    if not is_main_process():  # under a launcher the result is printed once
        return 0
    m = result.metrics
    payload = {
        "artifact": str(result.artifact), "macro_roc_auc": m["macro_roc_auc"], "macro_f1": m["macro_f1"],
        "macro_pr_auc": m["macro_pr_auc"], "num_parameters": result.num_parameters, "transfer": result.transfer,
        "soft_labels_cached": result.cache_hit, "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
        "wall_time_s": round(result.wall_time_s, 1), "train_examples_per_s": round(result.train_examples_per_s, 1),
        "mlflow_run_id": result.mlflow_run_id, "mixed_precision": result.mixed_precision,
        "precision_reason": (result.precision_choice or {}).get("reason"),
    }
    held_out, lines = held_out_summary(m)
    payload.update(held_out)
    if args.json:
        print(json.dumps(payload, indent=2))
    else:
        print(f"student written to {result.artifact} ({result.num_parameters:,} parameters)")
        print(f"validation macro ROC-AUC {m['macro_roc_auc']:.4f}  macro-F1 {m['macro_f1']:.4f}  "
              f"(best epoch {result.best_epoch} of {result.epochs_run})")
        for line in lines:
            print(line)
        print(f"transfer set {result.transfer['total']} texts, soft labels "
              f"{'reused from cache' if result.cache_hit else 'computed'}; wall time {result.wall_time_s:.1f} s")
        if result.precision_choice:
            print(f"mixed precision: {result.precision_choice['reason']}")
    return 0
