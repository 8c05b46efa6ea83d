"""`bench quant-speed`: int8/bf16/fp32 paths vs Optimum's int8 path, one run (JSON + Markdown)."""

from __future__ import annotations

import argparse

from bench import output


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quant-speed", help="quantized inference speed + AUC: ours vs Optimum's int8, same run",
                       description="For each teacher/student: batch-1 latency, throughput of requests of 32 and of "
                                   "bulk calls, and validation macro ROC-AUC for torch fp32/bf16, ORT fp32, ORT int8 "
                                   "dynamic/static and Optimum's int8 path (HF models: ORTQuantizer "
                                   "avx512_vnni where the CPU has VNNI, else avx2; pad to the longest text), then "
                                   "a per-operator profile of every ONNX path.")
    p.add_argument("artifacts", nargs="+", metavar="ARTIFACT", help="teacher or student artifact directories")
    p.add_argument("--data", required=True, help="labelled file; its held-out split is evaluated and timed")
    p.add_argument("--format", help="data format (detected when omitted)")
    p.add_argument("--latency-texts", type=int, default=100, help="texts timed one at a time")
    p.add_argument("--throughput-texts", type=int, default=512, help="texts timed in requests of 32")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--budget-s", type=float, default=120.0, help="per path and pass; slower paths time fewer texts")
    p.add_argument("--max-auc-drop", type=float, default=0.005)
    p.add_argument("--calibration-samples", type=int, default=128)
    p.add_argument("--slow-eval-rows", type=int, default=200, help="AUC rows for the bf16 path (slow on AVX2)")
    p.add_argument("--levers", action="store_true",
                   help="also time our int8 dynamic path with one lever undone each (spinning threads, no token "
                        "cap, unfused graph)")
    p.add_argument("--profile-texts", type=int, default=40,
                   help="texts profiled one per call (batch 1); the bulk profile runs 32 x PROFILE_TEXTS/8 texts")
    output.add_output_args(p, prints="both")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bench import quant_speed

    report = quant_speed.run(args.artifacts, args.data, args.format, args.latency_texts, args.throughput_texts,
                             args.warmup, args.budget_s, args.max_auc_drop, args.calibration_samples,
                             args.slow_eval_rows, levers=args.levers, profile_texts=args.profile_texts)
    output.write_outputs(args, quant_speed.dumps(report), quant_speed.markdown(report), command="bench quant-speed")
    return 0
