"""`bench accuracy`: per-label and macro metrics of every artifact on the same labelled data."""

from __future__ import annotations

import argparse

from bench import output


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "accuracy", help="ROC-AUC, PR-AUC, F1 and hierarchy violations of artifacts on one labelled file",
        description="Score every artifact on the same labelled rows at its own thresholds: per-label and macro "
                    "ROC-AUC / PR-AUC / F1, subset and label accuracy, and predictions that put a child label "
                    "without its parent. The data's labels must be the artifact's labels (any order).")
    p.add_argument("artifacts", nargs="+", metavar="ARTIFACT", help="artifact directories")
    p.add_argument("--data", required=True, help="labelled data file (any format compress reads)")
    p.add_argument("--format", help="data format (detected when omitted)")
    p.add_argument("--runtime", default="auto", help="runtime to predict with (default: auto)")
    p.add_argument("--split", default="all", choices=["all", "val"],
                   help="all rows, or the validation split `compress train` holds out (default: all)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="with --split val (default: 0.1)")
    p.add_argument("--seed", type=int, default=0, help="split / --max-rows sampling seed (default: 0)")
    p.add_argument("--max-rows", type=int, help="score a seeded sample of this many rows")
    p.add_argument("--threads", type=int, help="intra-op threads of PyTorch / ONNX Runtime (default: physical cores)")
    output.add_output_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bench import accuracy

    report = accuracy.run(args.artifacts, args.data, args.format, args.runtime, args.split, args.val_fraction,
                          args.seed, args.max_rows, log=output.progress, threads=args.threads)
    output.write_outputs(args, accuracy.dumps(report), accuracy.markdown(report))
    return 0
