"""`bench serve-speed`: Triton endpoint throughput vs in-process throughput, in one run."""

from __future__ import annotations

import argparse

from bench import output


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve-speed", help="endpoint requests/s and p50/p99 per concurrency vs in-process throughput",
        description="Start each artifact in a Triton server on free loopback ports; c client threads send one text "
                    "per request (HTTP with binary tensors by default; --protocols adds JSON tensors, gRPC, or Triton without the front); "
                    "compare requests/s with in-process predict() on batches of c texts, the two alternating "
                    "--rounds times. A fresh server per level, its batcher tuned to that level (preferred batch "
                    "size c). Reports the endpoint / in-process ratio at concurrency 8 (first protocol).")
    p.add_argument("artifacts", nargs="+", metavar="ARTIFACT", help="artifact directories")
    p.add_argument("--concurrency", default="1,8,32", help="client threads per level (default: 1,8,32)")
    p.add_argument("--requests", type=int, default=400, help="requests per level and round (default: 400)")
    p.add_argument("--rounds", type=int, default=3,
                   help="in-process / endpoint alternations per level, so machine drift hits both (default: 3)")
    p.add_argument("--texts", metavar="DATAFILE", help="comments to send (.txt or any data file; default: samples)")
    p.add_argument("--format", help="format of --texts (detected when omitted)")
    p.add_argument("--backend", default="auto", help="export.runtime backend (default: auto)")
    p.add_argument("--max-queue-delay-us", type=int, default=10_000,
                   help="Triton dynamic batcher window (default: 10000)")
    p.add_argument("--no-tune-batcher", dest="tune_batcher", action="store_false",
                   help="same plain batcher at every level (no preferred batch size = c)")
    p.add_argument("--max-seconds", type=float, default=120.0, help="time limit per level (default: 120)")
    p.add_argument("--threads", type=int, help="intra-op threads of PyTorch / ONNX Runtime (default: physical cores)")
    p.add_argument("--protocols", default="http",
                   help="how clients call the endpoint, comma-separated, the first is the headline: http (binary "
                        "tensors), http-json, grpc, http-direct (binary tensors to a second server without the "
                        "front: with http, the report gives the front's cost) (default: http)")
    p.add_argument("--instances", type=int, default=1, help="Triton model instances (default: 1)")
    output.add_output_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    import sys

    from compress.cpu import sleeping_openmp_workers

    # Before PyTorch loads (later it changes nothing here): the in-process side runs with the OpenMP wait
    # policy the server gives its instances, so the ratio measures serving, not spinning (bench.serve_speed).
    if "torch" not in sys.modules:
        sleeping_openmp_workers(os.environ)
    from bench import serve_speed
    from bench.inputs import texts_from

    config = serve_speed.ServeSpeedConfig(
        concurrency=tuple(output.split_list(args.concurrency, int, "concurrency")), requests=args.requests,
        texts=texts_from(args.texts, args.format), texts_source=args.texts, backend=args.backend,
        max_queue_delay_us=args.max_queue_delay_us, tune_batcher=args.tune_batcher, max_seconds=args.max_seconds,
        threads=args.threads, rounds=args.rounds, protocols=tuple(output.split_list(args.protocols, str, "protocols")),
        instances=args.instances)
    report = serve_speed.run(args.artifacts, config, log=output.progress)
    output.write_outputs(args, serve_speed.dumps(report), serve_speed.markdown(report))
    return 0
