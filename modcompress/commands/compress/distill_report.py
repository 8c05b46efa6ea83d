"""`compress distill-report`: parse -> distill_report -> print JSON and a Markdown table."""

from __future__ import annotations

import argparse
import json

from compress.tracking import add_tracking_args


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
    p.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    p.add_argument("--output", choices=("both", "json", "markdown"), default="both", help="what to print")
    p.add_argument("--save", metavar="PREFIX", help="also write PREFIX.json and PREFIX.md")
    add_tracking_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bench.distill_report import distill_report, format_markdown
    from compress.config import DataConfig, build_config
    from compress.tracking import log_command_run

    data = None
    if args.data:
        data = build_config(DataConfig, {"data": args.data, **({"format": args.data_format} if args.data_format else {})})
    report = distill_report(args.artifacts, data=data, calls=args.calls, warmup=args.warmup,
                            batch_size=args.batch_size, num_threads=args.threads)
    text = json.dumps(report, indent=2)
    table = format_markdown(report)
    if args.output in ("both", "json"):
        print(text)
    if args.output in ("both", "markdown"):
        print(table, end="")
    if args.save:
        prefix = Path(args.save)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        prefix.with_suffix(".json").write_text(text + "\n")
        prefix.with_suffix(".md").write_text(table)
    log_command_run(args, "compress distill-report", report, {"report.json": text, "report.md": table})
    return 0
