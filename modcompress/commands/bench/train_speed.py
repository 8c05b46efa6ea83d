"""`bench train-speed`: our training loop vs a default HF Trainer fp32 run (JSON + Markdown)."""

from __future__ import annotations

import argparse

from bench import output


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-speed", help="training examples/s: ours vs HF Trainer fp32, same model/data/batch")
    p.add_argument("--model", default="minilm", help="checkpoint (default: the offline MiniLM package)")
    p.add_argument("--data", required=True, help="training data file")
    p.add_argument("--format", help="data format (detected when omitted)")
    p.add_argument("--examples", type=int, default=2048, help="training rows used by both loops")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--mixed-precision", default="auto", choices=["auto", "no", "bf16", "fp16"])
    output.add_output_args(p, prints="both")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bench import train_speed

    report = train_speed.run(args.model, args.data, args.format, args.examples, args.batch_size,
                             args.max_length, mixed_precision=args.mixed_precision)
    output.write_outputs(args, train_speed.dumps(report), train_speed.markdown(report))
    return 0
