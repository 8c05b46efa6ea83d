"""`bench latency`: p50/p90/p99 latency and throughput over artifact x runtime x batch x length."""

from __future__ import annotations

import argparse

from bench import output


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "latency", help="latency percentiles and throughput over a grid of runtimes, batch sizes and lengths",
        description="Warm up, then time predict() calls (tokenization included) for every artifact x runtime x "
                    "batch size x sequence length. Fixed lengths use a filler word repeated until the text "
                    "tokenizes to exactly that many tokens (special tokens included); --real-lengths samples real "
                    "comments instead. Runtimes that do not apply to an artifact are reported as skipped, "
                    "with the reason.")
    p.add_argument("artifacts", nargs="*", metavar="ARTIFACT",
                   help="artifact directories (default: every runs/*/artifact.json)")
    p.add_argument("--runs-dir", default="runs", help="where to look when no ARTIFACT is given (default: runs)")
    p.add_argument("--runtimes", default="auto",
                   help="comma-separated: auto, torch, torch-bf16, torch-int8, ort, ort-text, ort-cuda, ort-trt, "
                        "tensorrt, sklearn, triton (default: auto = each artifact's own; ort-text = the tokenizer in "
                        "the ONNX graph, strings in; triton is added when --url is given)")
    p.add_argument("--batch-sizes", default="1,8,32", help="comma-separated (default: 1,8,32)")
    p.add_argument("--seq-lengths", default="16,64,128", help="comma-separated token counts (default: 16,64,128)")
    p.add_argument("--real-lengths", metavar="DATAFILE",
                   help="sample real comments from this file instead of fixed lengths (.txt: one per line)")
    p.add_argument("--format", help="data format of --real-lengths (detected when omitted)")
    p.add_argument("--url", help="Triton endpoint (http://127.0.0.1:8000) benchmarked as runtime 'triton'; "
                                 "model name = artifact directory name")
    p.add_argument("--warmup", type=int, default=5, help="untimed calls per cell (default: 5)")
    p.add_argument("--iters", type=int, default=50, help="timed calls per cell (default: 50)")
    p.add_argument("--max-seconds", type=float, default=20.0,
                   help="stop a cell after this long (min 3 calls; default: 20)")
    p.add_argument("--baseline", metavar="ROWNAME",
                   help="row (ARTIFACT_NAME/RUNTIME) the ratios compare with (default: the first measured row)")
    p.add_argument("--seed", type=int, default=0, help="sampling of --real-lengths batches")
    p.add_argument("--threads", type=int, help="intra-op threads of PyTorch / ONNX Runtime (default: physical cores)")
    output.add_output_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bench import latency
    from bench.artifacts import find_artifacts
    from bench.inputs import read_texts

    artifacts = args.artifacts or find_artifacts(args.runs_dir)
    runtimes = output.split_list(args.runtimes, str, "runtimes")
    if args.url and latency.TRITON not in runtimes:
        runtimes.append(latency.TRITON)
    real = read_texts(args.real_lengths, args.format) if args.real_lengths else None
    config = latency.LatencyConfig(
        runtimes=tuple(latency.check_runtimes(runtimes)),
        batch_sizes=tuple(output.split_list(args.batch_sizes, int, "batch-sizes")),
        seq_lengths=tuple(output.split_list(args.seq_lengths, int, "seq-lengths")),
        real_texts=tuple(real) if real is not None else None, real_source=args.real_lengths, url=args.url,
        warmup=args.warmup, iters=args.iters, max_seconds=args.max_seconds, baseline=args.baseline, seed=args.seed,
        threads=args.threads,
    )
    report = latency.run(artifacts, config, log=output.progress)
    output.write_outputs(args, latency.dumps(report), latency.markdown(report))
    return 0
