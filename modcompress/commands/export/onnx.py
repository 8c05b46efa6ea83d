"""`export onnx`: parse -> OnnxExportConfig -> export.onnx.export_onnx -> print a short result."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("onnx", help="export a teacher/student to ONNX, validated against PyTorch",
                       description="Export a teacher or student artifact to model.onnx (dynamic batch and sequence "
                                   "axes) and validate it against PyTorch on several batch sizes and lengths.")
    p.add_argument("artifact", help="teacher or student artifact directory")
    p.add_argument("--out", help="artifact directory to write (default: ARTIFACT-onnx)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier modcompress output at --out (anything else there is never replaced)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, >= 17 (default 17)")
    p.add_argument("--atol", type=float, help="largest accepted |ONNX - PyTorch| on the logits (default 1e-4)")
    p.add_argument("--optimize", default="none", choices=["none", "O1", "O2"],
                   help="ONNX Runtime graph optimization; O2 adds transformer fusions (ONNX Runtime only, "
                        "not TensorRT) (default none)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from export.onnx import OnnxExportConfig, export_onnx

    config = OnnxExportConfig(out=args.out, overwrite=args.overwrite, opset=args.opset, atol=args.atol, optimize=args.optimize)
    result = export_onnx(args.artifact, config)
    payload = {"artifact": str(result.artifact), "exporter": result.exporter, "optimize": result.optimize,
               "max_abs_diff": result.max_abs_diff, "atol": result.atol, "cases": len(result.cases)}
    if args.json:
        print(json.dumps(payload, indent=2))
    else:
        print(f"ONNX artifact written to {result.artifact} ({result.exporter}, optimize {result.optimize})")
        print(f"validated on {len(result.cases)} batch/length cases: max |ONNX - PyTorch| = "
              f"{result.max_abs_diff:.2e} (atol {result.atol:g})")
    return 0
