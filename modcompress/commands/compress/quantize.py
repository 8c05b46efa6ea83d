"""`compress quantize`: parse -> QuantizeConfig -> export.quantize.quantize -> print a short result."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from compress.tracking import add_tracking_args
from export.quantize import (  # light: numpy only at import time
    CALIBRATION_METHODS,
    MODES,
    SENSITIVITY_CHOICES,
)

TOP_SHOWN = 5  # ranked nodes printed (all of them are in artifact.json and --json)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quantize", help="int8 dynamic/static, fp16, bf16, torch int8 with an accuracy guard",
                       description="Quantize an artifact; with --data the validation macro ROC-AUC drop is checked "
                                   "and documented fallbacks are tried before giving up.")
    p.add_argument("artifact", help="teacher/student (any mode) or onnx artifact (ONNX modes)")
    p.add_argument("--mode", required=True, choices=MODES)
    p.add_argument("--data", help="labelled file: guard evaluation (held-out split) and int8-static calibration")
    p.add_argument("--format", help="data format (detected when omitted)")
    p.add_argument("--out", help="artifact directory to write (default: ARTIFACT-MODE)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier modcompress output at --out (anything else there is never replaced)")
    p.add_argument("--calibration-samples", type=int, default=128)
    p.add_argument("--calibration-method", default="minmax", choices=CALIBRATION_METHODS)
    p.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=True,
                   help="per-channel weight scales in the first attempt (default on)")
    p.add_argument("--reduce-range", action=argparse.BooleanOptionalAction, default=None,
                   help="7-bit weights in the first attempt (default: on for x86 CPUs without VNNI)")
    p.add_argument("--max-auc-drop", type=float, default=0.005, help="largest accepted macro ROC-AUC drop")
    p.add_argument("--no-fallbacks", action="store_true",
                   help="fail instead of trying the fallbacks (the node exclusion loop included)")
    p.add_argument("--sensitivity", nargs="?", const="output", default="off", choices=SENSITIVITY_CHOICES,
                   help="int8: rank the quantizable nodes by what quantizing each one alone costs, and record the "
                        "ranking: 'output' (the default when given alone) = mean |logit change| on 64 calibration "
                        "texts; 'metric' = also the guard's macro ROC-AUC drop (ranked by it, slower). Without it, "
                        "the ranking is made only when the guard fails")
    p.add_argument("--sensitivity-nodes", type=int, default=64, metavar="N",
                   help="rank at most N nodes, those with the most weights first (default 64); each costs one "
                        "quantization and one evaluation on 64 texts, ~2 s of CPU for a MiniLM-L6 node; the rest are "
                        "never excluded automatically")
    p.add_argument("--exclude-nodes", default="", metavar="A,B,...",
                   help="node names kept in float in every attempt (ONNX node names, as the ranking lists them; "
                        "nn.Linear module names for torch-int8-dynamic)")
    p.add_argument("--max-excluded", type=int, default=8, metavar="N",
                   help="int8: when the first attempt fails the guard, keep its 1, 2, ... N most sensitive nodes in "
                        "float, re-judging each, before the other fallbacks (default 8; 0 = never)")
    p.add_argument("--max-eval-samples", type=int, help="cap on guard evaluation rows")
    p.add_argument("--val-fraction", type=float, default=0.1, help="held-out share of --data (train's default)")
    p.add_argument("--optimize", default="auto", choices=["auto", "none", "O1", "O2"],
                   help="graph optimization when a PyTorch artifact is exported to ONNX first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_tracking_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from compress.artifact import ARTIFACT_FILE, read_info
    from compress.tracking import log_command_run
    from export.quantize import QuantizeConfig, quantize

    config = QuantizeConfig(
        mode=args.mode, out=args.out, overwrite=args.overwrite, data=args.data, format=args.format, val_fraction=args.val_fraction,
        calibration_samples=args.calibration_samples, calibration_method=args.calibration_method,
        per_channel=args.per_channel, reduce_range=args.reduce_range, max_auc_drop=args.max_auc_drop,
        fallbacks=not args.no_fallbacks, max_eval_samples=args.max_eval_samples, optimize=args.optimize,
        seed=args.seed, sensitivity=args.sensitivity, sensitivity_nodes=args.sensitivity_nodes,
        exclude_nodes=tuple(n.strip() for n in args.exclude_nodes.split(",") if n.strip()),
        max_excluded=args.max_excluded,
    )
    out = quantize(args.artifact, config)
    info = read_info(out)
    guard = info.extra["guard"]
    chosen = next(a for a in guard["attempts"] if a["name"] == guard["chosen"])
    payload = {"artifact": str(out), "mode": args.mode, "runtime": info.extra["runtime"], "chosen": guard["chosen"],
               "baseline_macro_roc_auc": guard.get("baseline_macro_roc_auc"),
               "macro_roc_auc": chosen.get("macro_roc_auc"), "drop": chosen.get("drop"),
               "attempts": [{k: a.get(k) for k in ("name", "macro_roc_auc", "drop", "passed")}
                            for a in guard["attempts"]],
               "excluded": chosen.get("excluded", []), "sensitivity": info.extra.get("sensitivity")}
    log_command_run(args, f"compress quantize {args.mode}", payload,
                    {"result.json": json.dumps(payload, indent=2), ARTIFACT_FILE: (Path(out) / ARTIFACT_FILE).read_text()})
    if args.json:
        print(json.dumps(payload, indent=2))
        return 0
    print(f"{args.mode} artifact written to {out} (run with backend {info.extra['runtime']}; recipe {guard['chosen']})")
    if chosen.get("drop") is not None:
        print(f"validation macro ROC-AUC {guard['baseline_macro_roc_auc']:.4f} -> {chosen['macro_roc_auc']:.4f} "
              f"(drop {chosen['drop']:+.4f}, limit {config.max_auc_drop:g}) on {guard['rows']} rows")
    else:
        print(f"accuracy guard: {chosen.get('note') or guard.get('skipped')}")
    sensitivity = payload["sensitivity"]
    if sensitivity:
        top = ", ".join(f"{r['node']} ({r['op']}) {r['error']:.4f}" + (f" drop {r['drop']:+.4f}" if "drop" in r else "")
                        for r in sensitivity["ranking"][:TOP_SHOWN])
        print(f"most sensitive nodes ({sensitivity['measure']}, {sensitivity['ranked']} of {sensitivity['candidates']} "
              f"ranked in {sensitivity['seconds']:.1f} s; mean |logit change| when int8 alone): {top}")
    if payload["excluded"]:
        print("kept in float: " + ", ".join(f"{e['node']} ({e['op']}, {e['why']})" for e in payload["excluded"]))
    return 0
