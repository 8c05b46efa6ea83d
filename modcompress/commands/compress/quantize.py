"""`compress quantize`: parse -> QuantizeConfig -> export.quantize.quantize -> print a short result."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from compress.tracking import add_tracking_args
from export.quantize import CALIBRATION_METHODS, MODES  # light: numpy only at import time


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
    p.add_argument("--no-fallbacks", action="store_true", help="fail instead of trying the fallbacks")
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
        seed=args.seed,
    )
    out = quantize(args.artifact, config)
    info = read_info(out)
    guard = info.extra["guard"]
    chosen = next(a for a in guard["attempts"] if a["name"] == guard["chosen"])
    payload = {"artifact": str(out), "mode": args.mode, "runtime": info.extra["runtime"], "chosen": guard["chosen"],
               "baseline_macro_roc_auc": guard.get("baseline_macro_roc_auc"),
               "macro_roc_auc": chosen.get("macro_roc_auc"), "drop": chosen.get("drop"),
               "attempts": [{k: a.get(k) for k in ("name", "macro_roc_auc", "drop", "passed")}
                            for a in guard["attempts"]]}
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
    return 0
