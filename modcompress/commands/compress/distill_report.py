"""`compress distill-report`: parse -> distill_report -> JSON and a Markdown table (bench's output convention)."""

from __future__ import annotations

import argparse
import json

from bench import output


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "distill-report", help="compare a teacher, its students and baselines (size, accuracy, latency)",
        description="Parameters, validation macro ROC-AUC / macro-F1, batch-1 latency percentiles and batch-32 "
                    "throughput of each artifact (fp32, real validation texts), as JSON and a Markdown table.")
    p.add_argument("artifacts", nargs="+", metavar="ARTIFACT", help="teacher, student or baseline artifact directories")
    p.add_argument("--data", help="data file for the validation texts (default: the artifacts' recorded data)")
    p.add_argument("--format", dest="data_format", help="data format (detected when omitted)")
    p.add_argument("--calls", type=int, default=200, help="timed batch-1 calls (default 200)")
    p.add_argument("--warmup", type=int, default=20, help="untimed warm-up calls (default 20)")
    p.add_argument("--batch-size", type=int, default=32, help="throughput batch size (default 32)")
    p.add_argument("--threads", type=int, help="intra-op threads of PyTorch (default: physical cores)")
    output.add_output_args(p, prints="both", old_spellings=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bench.distill_report import distill_report, format_markdown
    from compress.config import DataConfig, build_config

    data = None
    if args.data:
        data = build_config(DataConfig, {"data": args.data, **({"format": args.data_format} if args.data_format else {})})
    report = distill_report(args.artifacts, data=data, calls=args.calls, warmup=args.warmup,
                            batch_size=args.batch_size, num_threads=args.threads)
    output.write_outputs(args, json.dumps(report, indent=2), format_markdown(report), command="compress distill-report")
    return 0
