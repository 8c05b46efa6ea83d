"""`bench report`: one Markdown or HTML report with PNG plots from bench JSON reports."""

from __future__ import annotations

import argparse

from bench import report
from compress.tracking import add_tracking_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="Markdown/HTML report with PNG plots (Pareto front, percentiles, throughput vs batch)",
        description="Render bench JSON reports (table, latency, accuracy, serve-speed, load) into one report with "
                    "PNG plots: latency/quality Pareto front, latency percentiles per runtime, throughput vs batch "
                    "size, endpoint vs in-process throughput.")
    p.add_argument("--from", dest="sources", nargs="+", metavar="JSON",
                   help="bench JSON reports (default: every bench report in runs/bench/)")
    p.add_argument("--out", required=True, help="directory for the report and its PNGs")
    p.add_argument("--format", default="md", choices=list(report.FORMATS), help="md or html (default: md)")
    add_tracking_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    sources = args.sources or report.find_reports("runs/bench")
    path = report.build_report(report.load_reports(sources), args.out, args.format)
    from compress.tracking import log_command_run

    log_command_run(args, "bench report", {"sources": len(sources)}, {}, artifact_dir=path.parent)
    print(f"report written to {path}")
    return 0
