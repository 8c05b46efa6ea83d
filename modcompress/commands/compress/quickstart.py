"""`compress quickstart`: parse -> QuickstartConfig -> bench.quickstart.quickstart -> print where it all went."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quickstart", help="train -> distill -> quantize -> export -> bench on the bundled sample, offline",
        description="Run the whole chain on the 3,000-tweet OLID sample shipped in the package: fine-tune a "
                    "teacher, distil it into a TextCNN, quantize that (int8), export it to ONNX and print the "
                    "model-selection table. Offline; a few minutes on 2 CPU cores with --steps fast.")
    p.add_argument("--out", default="runs/quickstart", help="folder for every artifact and report "
                                                             "(default runs/quickstart)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier quickstart folder at --out (anything else there is never replaced)")
    p.add_argument("--steps", default="fast", choices=("fast", "full"),
                   help="fast: minutes on a laptop CPU; full: more epochs, longer texts, steadier timings")
    p.add_argument("--teacher", default="auto", choices=("auto", "minilm", "hub", "small"),
                   help="auto: the offline MiniLM package, else the hub if reachable, else a small BERT built "
                        "from a config; or force one")
    p.add_argument("--limit", type=int, help="use only this many rows of the sample (a smoke run)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: local store)")
    p.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bench.quickstart import QuickstartConfig, quickstart

    config = QuickstartConfig(out=args.out, overwrite=args.overwrite, steps=args.steps, teacher=args.teacher, limit=args.limit,
                              tracking=not args.no_tracking, tracking_uri=args.tracking_uri,
                              num_threads=args.threads)
    result = quickstart(config, progress=lambda line: print(f"[quickstart] {line}", file=sys.stderr, flush=True))
    if args.json:
        print(result.summary_path.read_text(), end="")
        return 0
    print(result.table_markdown)
    print(f"quickstart finished in {result.seconds:.0f} s; teacher: {result.teacher_source}")
    width = max(len(s.name) for s in result.stages)
    for stage in result.stages:
        numbers = ", ".join(f"{k} {_fmt(v)}" for k, v in stage.summary.items()
                            if k in ("rows", "macro_roc_auc", "auc_drop", "max_abs_diff", "num_parameters"))
        print(f"  {stage.name.ljust(width)}  {stage.path}  ({stage.seconds:.0f} s{'; ' + numbers if numbers else ''})")
    print(f"  {'summary'.ljust(width)}  {result.summary_path}")
    if result.mlflow_run_id:
        print(f"  {'mlflow'.ljust(width)}  run {result.mlflow_run_id} (experiment quickstart)")
    return 0


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
