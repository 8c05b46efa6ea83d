"""`bench train-speed`: our training loop in fp32 and bf16 vs a default HF Trainer fp32 run, and what auto picks."""

from __future__ import annotations

import argparse

from bench import output


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-speed", help="training examples/s: ours (fp32, bf16) vs HF Trainer fp32, same "
                                           "model/data/batch, and which precision mixed_precision=auto picks")
    p.add_argument("--model", default="minilm", help="checkpoint (default: the offline MiniLM package)")
    p.add_argument("--data", required=True, help="training data file")
    p.add_argument("--format", help="data format (detected when omitted)")
    p.add_argument("--examples", type=int, default=2048, help="training rows used by both loops")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--mixed-precision", choices=["auto", "no", "bf16", "fp16"],
                   help="measure our loop in this precision only (default: fp32 and bf16, where the CPU has bf16 "
                        "hardware; fp32 elsewhere)")
    p.add_argument("--threads", type=int, help="intra-op threads of every loop (default: torch's, the cores)")
    output.add_output_args(p, prints="both")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bench import train_speed

    report = train_speed.run(args.model, args.data, args.format, args.examples, args.batch_size,
                             args.max_length, precisions=[args.mixed_precision] if args.mixed_precision else None,
                             threads=args.threads)
    output.write_outputs(args, train_speed.dumps(report), train_speed.markdown(report))
    return 0
