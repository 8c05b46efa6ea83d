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
    p.add_argument("--with-tokenizer", action="store_true",
                   help="also write model_with_tokenizer.onnx: raw strings in, the artifact's WordPiece tokenizer as "
                        "onnxruntime-extensions operators in the graph, checked against the Hugging Face tokenizer")
    p.add_argument("--tokenizer-texts", metavar="FILE",
                   help="with --with-tokenizer: texts (any format compress reads) whose token ids must match Hugging "
                        "Face's exactly, besides the built-in checks")
    p.add_argument("--tokenizer-texts-format", help="format of --tokenizer-texts (detected when omitted)")
    p.add_argument("--allow-tokenizer-mismatches", action="store_true",
                   help="with --with-tokenizer: record token-id mismatches in artifact.json instead of failing")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from export.onnx import OnnxExportConfig, export_onnx

    config = OnnxExportConfig(out=args.out, overwrite=args.overwrite, opset=args.opset, atol=args.atol,
                              optimize=args.optimize, with_tokenizer=args.with_tokenizer,
                              tokenizer_texts=args.tokenizer_texts, tokenizer_texts_format=args.tokenizer_texts_format,
                              allow_tokenizer_mismatches=args.allow_tokenizer_mismatches)
    result = export_onnx(args.artifact, config)
    payload = {"artifact": str(result.artifact), "exporter": result.exporter, "optimize": result.optimize,
               "max_abs_diff": result.max_abs_diff, "atol": result.atol, "cases": len(result.cases)}
    if result.text_model:
        check = result.text_model["validation"]
        payload["text_model"] = {"file": result.text_model["file"], "texts": check["token_ids"]["texts"],
                                 "token_id_mismatches": check["token_ids"]["mismatches"],
                                 "max_abs_diff_probabilities": check["max_abs_diff_probabilities"]}
    if args.json:
        print(json.dumps(payload, indent=2))
    else:
        print(f"ONNX artifact written to {result.artifact} ({result.exporter}, optimize {result.optimize})")
        print(f"validated on {len(result.cases)} batch/length cases: max |ONNX - PyTorch| = "
              f"{result.max_abs_diff:.2e} (atol {result.atol:g})")
        if result.text_model:
            text = payload["text_model"]
            print(f"{text['file']} (strings in, tokenizer in the graph): token ids differ from Hugging Face's on "
                  f"{text['token_id_mismatches']} of {text['texts']} texts; max |p - p(model.onnx)| = "
                  f"{text['max_abs_diff_probabilities']:.2e}")
    return 0
