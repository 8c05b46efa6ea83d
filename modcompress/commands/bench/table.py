"""`bench table`: the model-selection table, claimed numbers beside measured ones."""

from __future__ import annotations

import argparse

from bench import output
from bench.table import DEFAULT_DOLLARS_PER_HOUR


def add_table_args(p: argparse.ArgumentParser) -> None:
    """Arguments shared by `bench table` and `bench select` (which builds a table when not given one)."""
    p.add_argument("artifacts", nargs="*", metavar="ARTIFACT",
                   help="artifact directories (default: every runs/*/artifact.json)")
    p.add_argument("--runs-dir", default="runs", help="where to look when no ARTIFACT is given (default: runs)")
    p.add_argument("--runtime", default="auto", help="runtime every artifact is timed on (default: auto)")
    p.add_argument("--texts", metavar="FILE",
                   help="real comments to time on (.txt or any data file); default: --data's texts, else "
                        "fixed-length synthetic texts")
    p.add_argument("--seq-length", type=int, default=64, help="fixed text length without --texts (default: 64)")
    p.add_argument("--batch-size", type=int, default=32, help="batch of the throughput/cost measurement (default: 32)")
    p.add_argument("--data", help="labelled file to measure metrics on (default: artifact.json validation metrics)")
    p.add_argument("--format", help="format of --data / --texts (detected when omitted)")
    p.add_argument("--split", default="all", choices=["all", "val"], help="rows of --data to score (default: all)")
    p.add_argument("--max-rows", type=int, help="score a seeded sample of --data")
    p.add_argument("--dollars-per-hour", type=float, default=DEFAULT_DOLLARS_PER_HOUR,
                   help="price of the machine, for $ per 1M comments (default: 0.10, an assumed on-demand price of "
                        "a 2-vCPU cloud VM)")
    p.add_argument("--iters", type=int, default=30, help="timed calls per measurement (default: 30)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls first (default: 3)")
    p.add_argument("--threads", type=int, help="intra-op threads of PyTorch / ONNX Runtime (default: physical cores)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "table", help="selection table: claimed params/latency/accuracy/cost beside measured numbers",
        description="The rule-of-thumb selection table (LogReg+TF-IDF ... GPT-4) with each artifact's measured "
                    "parameters, batch-1 p50 latency, throughput, metrics and $ per 1M comments beside its claimed "
                    "row (matched by architecture). The claimed 'accuracy' is compared with macro ROC-AUC.")
    add_table_args(p)
    output.add_output_args(p)
    p.set_defaults(func=run)


def build(args: argparse.Namespace) -> dict:
    """The table report from parsed arguments (shared with `bench select`)."""
    from bench import table
    from bench.artifacts import find_artifacts
    from bench.inputs import read_texts

    artifacts = args.artifacts or find_artifacts(args.runs_dir)
    texts_path = args.texts or args.data
    texts = read_texts(texts_path, args.format) if texts_path else None
    config = table.TableConfig(
        runtime=args.runtime, batch_size=args.batch_size, seq_length=args.seq_length,
        texts=tuple(texts) if texts is not None else None, texts_source=texts_path, data=args.data,
        format=args.format, split=args.split, max_rows=args.max_rows, dollars_per_hour=args.dollars_per_hour,
        warmup=args.warmup, iters=args.iters, threads=args.threads)
    return table.build_table(artifacts, config, log=output.progress)


def run(args: argparse.Namespace) -> int:
    from bench import table

    report = build(args)
    output.write_outputs(args, table.dumps(report), table.markdown(report))
    return 0
