"""`export triton`: parse -> TritonConfig -> export.triton.write_repository -> print a short result."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("triton", help="write a Triton model repository (tokenizer + model + ensemble)",
                       description="Write a model repository the stock Triton container serves: per artifact a "
                                   "Python tokenizer, the ONNX/TensorRT model and an ensemble TEXT -> PROBABILITIES.")
    p.add_argument("artifacts", nargs="+", metavar="ARTIFACT", help="onnx / ONNX-quantized / tensorrt artifacts")
    p.add_argument("--out", required=True, help="repository directory to write")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier repository of ours at --out (anything else there is never replaced)")
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--preferred-batch-sizes", default="4,8,16", help="comma-separated (default 4,8,16)")
    p.add_argument("--max-queue-delay-us", type=int, default=500)
    p.add_argument("--instances", type=int, default=1, help="model instances per model")
    p.add_argument("--kind", default="cpu", choices=["cpu", "gpu"], help="instance kind of the models")
    p.add_argument("--pad-to-multiple-of", type=int, default=16,
                   help="tokenizer pads each request to a multiple of this, so the batcher can merge requests")
    p.add_argument("--repository-path", default="/models",
                   help="where the container mounts the repository: artifacts exported --with-tokenizer name their "
                        "onnxruntime-extensions library by this absolute path (default /models)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from export.triton import TritonConfig, parse_batch_sizes, write_repository

    config = TritonConfig(
        out=args.out, overwrite=args.overwrite, max_batch_size=args.max_batch_size,
        preferred_batch_sizes=parse_batch_sizes(args.preferred_batch_sizes),
        max_queue_delay_us=args.max_queue_delay_us, instances=args.instances, kind=args.kind,
        pad_to_multiple_of=args.pad_to_multiple_of, repository_path=args.repository_path,
    )
    out, summary = write_repository(args.artifacts, config)
    print(f"Triton repository written to {out}")
    for model in summary:
        via = model.get("tokenizer") or " -> ".join(model["models"][:-1])
        print(f"  {model['name']}: TEXT -> PROBABILITIES ({len(model['labels'])} labels) via {via} "
              f"[{model['platform']}]")
    in_graph = [m for m in summary if m.get("custom_ops_library")]
    preload = ""
    if in_graph:
        print(f"  {', '.join(m['name'] for m in in_graph)}: the copied onnxruntime-extensions library (from its "
              "Python wheel) needs libpython's symbols in tritonserver: set LD_PRELOAD to the image's "
              "libpython3.X.so.1.0, or replace the file with a standalone libortextensions.so build")
        preload = "-e LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libpython3.X.so.1.0 "
    print(f"serve it: docker run --rm -p8000:8000 -p8001:8001 {preload}-v {out.resolve()}:{config.repository_path} "
          f"nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver --model-repository={config.repository_path}")
    return 0
