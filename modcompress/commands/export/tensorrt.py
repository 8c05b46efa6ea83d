"""`export tensorrt`: parse -> TensorRTConfig -> export.tensorrt.export_tensorrt -> print a short result."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tensorrt", help="build a TensorRT engine from an ONNX artifact (GPU only)",
                       description="Build model.plan from an ONNX artifact with one optimization profile, "
                                   "optionally fp16 / int8 (an explicit Q/DQ model calibrated on --data, accuracy-"
                                   "guarded on CPU and again as an engine). Needs tensorrt and a CUDA GPU.")
    p.add_argument("artifact", help="onnx (or ONNX-quantized) artifact directory; --int8 needs the fp32 onnx one")
    p.add_argument("--out", help="artifact directory to write (default: ARTIFACT-tensorrt)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier modcompress output at --out (anything else there is never replaced)")
    p.add_argument("--fp16", action="store_true", help="allow fp16 kernels")
    p.add_argument("--int8", action="store_true",
                   help="int8 from a symmetric Q/DQ model (kept as model.qdq.onnx) calibrated on --data; fails "
                        "when validation macro ROC-AUC drops more than --max-auc-drop")
    p.add_argument("--data", help="labelled file: int8 calibration and guard (held-out split; any format compress reads)")
    p.add_argument("--format", help="data format (detected when omitted)")
    p.add_argument("--calibration-samples", type=int, default=256)
    p.add_argument("--max-auc-drop", type=float, default=0.005, help="largest accepted macro ROC-AUC drop (--int8)")
    p.add_argument("--max-eval-samples", type=int, help="cap on guard evaluation rows")
    p.add_argument("--val-fraction", type=float, default=0.1, help="held-out share of --data (train's default)")
    for dim, (lo, opt, hi) in (("batch", (1, 8, 32)), ("seq", (1, 64, None))):
        p.add_argument(f"--min-{dim}", type=int, default=lo)
        p.add_argument(f"--opt-{dim}", type=int, default=opt)
        p.add_argument(f"--max-{dim}", type=int, default=hi,
                       help="default: the artifact's max_length" if dim == "seq" else None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from export.tensorrt import TensorRTConfig, export_tensorrt

    config = TensorRTConfig(
        out=args.out, overwrite=args.overwrite, fp16=args.fp16, int8=args.int8, data=args.data, format=args.format,
        calibration_samples=args.calibration_samples, val_fraction=args.val_fraction,
        max_eval_samples=args.max_eval_samples, max_auc_drop=args.max_auc_drop, min_batch=args.min_batch,
        opt_batch=args.opt_batch, max_batch=args.max_batch, min_seq=args.min_seq, opt_seq=args.opt_seq,
        max_seq=args.max_seq,
    )
    out = export_tensorrt(args.artifact, config)
    print(f"TensorRT artifact written to {out}")
    return 0
