"""`serve start`: parse -> ServeConfig -> serve.server.start_server -> serve until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from compress.errors import ArtifactError, ConfigError
from serve.config import DEFAULT_GRPC_PORT, DEFAULT_HOST, DEFAULT_HTTP_PORT, DEFAULT_METRICS_PORT, ServeConfig


def register(sub: argparse._SubParsersAction) -> None:
    start = sub.add_parser("start", help="serve artifacts from a Triton Inference Server",
                           description="Serve artifacts from the tritonserver that nvidia-pytriton ships "
                                       "(KServe v2: HTTP, gRPC, Prometheus metrics). Model name = artifact name; "
                                       "input TEXT (BYTES [N,1]); outputs PROBABILITIES (FP32 [N,L]) and LABELS; "
                                       "labels/thresholds in the model config parameters.")
    start.add_argument("artifacts", nargs="+", metavar="ARTIFACT", help="artifact directories to serve")
    start.add_argument("--host", default=DEFAULT_HOST,
                       help="address to listen on (default: %(default)s, loopback; the endpoints have no "
                            "authentication, so another address prints a warning)")
    start.add_argument("--http-port", type=int, default=DEFAULT_HTTP_PORT, help="default: %(default)s")
    start.add_argument("--grpc-port", type=int, default=DEFAULT_GRPC_PORT, help="default: %(default)s")
    start.add_argument("--metrics-port", type=int, default=DEFAULT_METRICS_PORT, help="default: %(default)s")
    start.add_argument("--max-batch-size", type=int, default=None,
                       help="Triton max batch size (default: each artifact's own)")
    start.add_argument("--preferred-batch-sizes", default="", metavar="4,8,16",
                       help="dynamic batcher preferred batch sizes")
    start.add_argument("--max-queue-delay-us", type=int, default=100,
                       help="dynamic batcher max queue delay in microseconds (default: %(default)s)")
    start.add_argument("--instances", type=int, default=1, help="model instances per model (default: %(default)s)")
    start.add_argument("--labels-only", action="store_true",
                       help="expose only the LABELS output (labels over threshold), no probabilities")
    start.add_argument("--backend", default="auto", help="export.runtime backend (default: %(default)s)")
    start.add_argument("--threads", type=int, default=None,
                       help="intra-op threads per model instance (PyTorch / ONNX Runtime; default: the "
                            "runtime's choice, the physical cores). Instances run in parallel processes, so "
                            "with --instances N, N x threads should not exceed the cores")
    start.add_argument("--max-text-bytes", type=int, default=65536,
                       help="longest accepted text in UTF-8 bytes (default: %(default)s)")
    start.add_argument("--exit-timeout", type=int, default=30, metavar="SECONDS",
                       help="on SIGTERM/SIGINT, how long to wait for in-flight requests (default: %(default)s)")
    start.add_argument("--log-file", default=None, help="write the tritonserver log here instead of stdout")
    start.set_defaults(func=run)


def _check_artifact_dirs(paths: Sequence[str]) -> list[Path]:
    dirs = []
    for path in map(Path, paths):
        if not path.exists():
            raise ArtifactError(f"artifact {path} does not exist; pass a directory written by `compress` or `export`")
        if not path.is_dir():
            raise ArtifactError(f"artifact {path} is not a directory; pass the artifact directory, "
                                f"not a file inside it")
        dirs.append(path)
    return dirs


def run(args: argparse.Namespace) -> int:
    """Load each artifact, serve them from Triton until SIGTERM/SIGINT, then drain and exit 0."""
    from export.triton import parse_batch_sizes
    from serve.server import check_ports_free, serving_line, start_server, stop_on_signals

    config = ServeConfig(
        host=args.host, http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=args.metrics_port,
        max_batch_size=args.max_batch_size, preferred_batch_sizes=parse_batch_sizes(args.preferred_batch_sizes),
        max_queue_delay_us=args.max_queue_delay_us, instances=args.instances, labels_only=args.labels_only,
        max_text_bytes=args.max_text_bytes, exit_timeout_s=args.exit_timeout,
        log_file=Path(args.log_file) if args.log_file else None,
    )
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    dirs = _check_artifact_dirs(args.artifacts)
    check_ports_free(config.host, config.ports)  # before the slow part: loading models

    from export.runtime import load

    # One stop event for the whole run: SIGTERM/SIGINT while models load is remembered (nothing is
    # in flight yet, so Triton finishes starting and then stops cleanly instead of the CLI dying
    # half-started with Triton left behind), and serving ends on the same event.
    with stop_on_signals() as stop:
        # Loaded here to fail early with one line; each Triton instance then loads its own copy.
        predictors = [load(d, backend=args.backend, threads=args.threads) for d in dirs]
        server = start_server(predictors, config)
        del predictors
        try:
            if stop.is_set():
                server.stop()
                print("stopped before serving (signal received while starting)", flush=True)
                return 0
            print(f"{serving_line(config, server.models)}; SIGTERM or Ctrl-C drains and stops", flush=True)
            code = server.serve_until(stop)
        finally:
            server.stop()  # no-op after a clean stop; otherwise Triton must not outlive us
    print("stopped", flush=True)
    return code
