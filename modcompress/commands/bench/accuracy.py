"""`bench accuracy`: per-label and macro metrics of every artifact on the same labelled data."""

from __future__ import annotations

import argparse

from bench import output


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "accuracy", help="ROC-AUC, PR-AUC, F1 and hierarchy violations of artifacts on one labelled file",
        description="Score every artifact on the same labelled rows at its own thresholds: per-label and macro "
                    "ROC-AUC / PR-AUC / F1, subset and label accuracy, per-level (OffensEval 2019) and conditional "
                    "metrics of the label hierarchy, and predictions that put a child label without its parent. "
                    "The data's labels must be the artifact's labels (any order). With --identity-columns: "
                    "identity-bias metrics of one label instead (subgroup / BPSN / BNSP AUC and the Jigsaw "
                    "Unintended Bias final metric) on data in that format.")
    p.add_argument("artifacts", nargs="+", metavar="ARTIFACT", help="artifact directories")
    p.add_argument("--data", required=True, help="labelled data file (any format compress reads)")
    p.add_argument("--format", help="data format (detected when omitted)")
    p.add_argument("--runtime", default="auto", help="runtime to predict with (default: auto)")
    p.add_argument("--split", default="all", choices=["all", "val", "test"],
                   help="all rows, or the validation / test split `compress train` holds out (default: all)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="with --split val|test (default: 0.1)")
    p.add_argument("--test-fraction", type=float, default=0.1,
                   help="with --split val|test (default: 0.1; 0 for artifacts made before the test split)")
    p.add_argument("--seed", type=int, default=0, help="split / --max-rows sampling seed (default: 0)")
    p.add_argument("--max-rows", type=int, help="score a seeded sample of this many rows")
    p.add_argument("--threads", type=int, help="intra-op threads of PyTorch / ONNX Runtime (default: physical cores)")
    bias = p.add_argument_group("identity bias (data in the Jigsaw Unintended Bias format)")
    bias.add_argument("--identity-columns", metavar="COL,...",
                      help="identity columns (values in [0, 1], >= 0.5 = mentioned), e.g. male,female,black,muslim")
    bias.add_argument("--bias-label", help="the artifact's label to score (default: toxic, else its first label)")
    bias.add_argument("--bias-target", metavar="COLUMN",
                      help="its truth in [0, 1], >= 0.5 = positive (default: target, else the label's own column)")
    bias.add_argument("--text-column", help="text column (default: comment_text, text, ... whichever exists)")
    output.add_output_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bench import accuracy

    if args.identity_columns is not None:
        return run_bias(args)
    report = accuracy.run(args.artifacts, args.data, args.format, args.runtime, args.split, args.val_fraction,
                          args.seed, args.max_rows, log=output.progress, threads=args.threads,
                          test_fraction=args.test_fraction)
    output.write_outputs(args, accuracy.dumps(report), accuracy.markdown(report))
    return 0


def run_bias(args: argparse.Namespace) -> int:
    from bench import accuracy, bias
    from compress.errors import ConfigError

    if args.split != "all":
        raise ConfigError("--split: identity-bias metrics score all rows of --data; drop --split (or pass a file "
                          "of the rows to score)")
    report = bias.run(args.artifacts, args.data, bias.parse_identity_columns(args.identity_columns),
                      args.bias_label, args.bias_target, args.text_column, args.format, args.runtime, args.max_rows,
                      args.seed, log=output.progress, threads=args.threads)
    output.write_outputs(args, accuracy.dumps(report), bias.markdown(report))
    return 0
