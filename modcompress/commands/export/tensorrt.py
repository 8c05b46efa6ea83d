"""`export tensorrt`: parse -> TensorRTConfig -> export.tensorrt.export_tensorrt -> print a short result."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tensorrt", help="build a TensorRT engine from an ONNX artifact (GPU only)",
                       description="Build model.plan from an ONNX artifact with one optimization profile, "
                                   "optionally fp16 / int8 (calibrated on --data). Needs tensorrt and a CUDA GPU.")
    p.add_argument("artifact", help="onnx (or ONNX-quantized) artifact directory")
    p.add_argument("--out", help="artifact directory to write (default: ARTIFACT-tensorrt)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier modcompress output at --out (anything else there is never replaced)")
    p.add_argument("--fp16", action="store_true", help="allow fp16 kernels")
    p.add_argument("--int8", action="store_true", help="allow int8 kernels, calibrated on --data")
    p.add_argument("--data", help="texts for int8 calibration (any format compress reads)")
    p.add_argument("--format", help="data format (detected when omitted)")
    p.add_argument("--calibration-samples", type=int, default=256)
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
        calibration_samples=args.calibration_samples, min_batch=args.min_batch, opt_batch=args.opt_batch,
        max_batch=args.max_batch, min_seq=args.min_seq, opt_seq=args.opt_seq, max_seq=args.max_seq,
    )
    out = export_tensorrt(args.artifact, config)
    print(f"TensorRT artifact written to {out}")
    return 0
