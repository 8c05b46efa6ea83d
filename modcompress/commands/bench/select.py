"""`bench select`: the best measured model that meets latency, metric and cost requirements.

Exit codes: 0 = a model was selected; 1 = the table was read but no row meets every requirement
(the reasons are printed); 2 = bad input (one line on stderr).
"""

from __future__ import annotations

import argparse

from bench import output
from modcompress.commands.bench.table import add_table_args

EXIT_NONE_QUALIFIES = 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "select", help="pick the best measured model meeting latency / metric / cost requirements",
        description="Pick the measured row with the highest compared metric (macro ROC-AUC; ties -> lower latency) "
                    "among those meeting every requirement, and say why each other row was not chosen. "
                    "Exit 0 = selected, 1 = none qualifies, 2 = bad input.")
    p.add_argument("--max-latency-ms", type=float, help="batch-1 p50 latency limit")
    p.add_argument("--min-metric", action="append", default=[], metavar="NAME=VALUE",
                   help="metric floor, e.g. macro_f1=0.7 (repeatable; macro_roc_auc, macro_f1, macro_pr_auc, "
                        "micro_f1, subset_accuracy, label_accuracy)")
    p.add_argument("--max-cost", type=float, help="dollars per 1M comments limit")
    p.add_argument("--from-table", metavar="JSON", help="a `bench table --json-out` file (default: build the table)")
    add_table_args(p)
    output.add_output_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from bench import table
    from modcompress.commands.bench.table import build

    min_metrics = table.parse_min_metrics(args.min_metric)
    report = table.load_table(args.from_table) if args.from_table else build(args)
    result = table.select(report, args.max_latency_ms, min_metrics, args.max_cost)
    output.write_outputs(args, json.dumps(result, indent=2), table.select_markdown(result))
    return 0 if result["chosen"] else EXIT_NONE_QUALIFIES
