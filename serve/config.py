"""The serving contract: ServeConfig and the names a client sees on the wire.

Each served model speaks the KServe v2 protocol through Triton:

- input ``TEXT``: BYTES, dims ``[1]`` per item, so a request carries shape ``[N, 1]`` (N UTF-8
  texts, 1 <= N <= max_batch_size);
- output ``PROBABILITIES``: FP32, dims ``[L]`` per item (shape ``[N, L]``), one column per label;
- output ``LABELS``: BYTES, dims ``[1]`` per item, the labels whose probability is >= their
  threshold joined with ``;`` (empty string when none is).

Label names and thresholds live in the model config (``GET /v2/models/{name}/config``, or
gRPC ``ModelConfig``) under ``parameters``: ``labels`` and ``thresholds``, each a JSON list in
``string_value``. This module imports nothing heavy, so clients can use it without Triton's packages.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from compress.errors import ConfigError

INPUT_TEXT = "TEXT"
OUTPUT_PROBABILITIES = "PROBABILITIES"
OUTPUT_LABELS = "LABELS"
LABEL_SEPARATOR = ";"
PARAM_LABELS = "labels"
PARAM_THRESHOLDS = "thresholds"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_HTTP_PORT = 8000
DEFAULT_GRPC_PORT = 8001
DEFAULT_METRICS_PORT = 8002


def _check(cond: bool, name: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"{name}: {message}")


@dataclass(frozen=True)
class ServeConfig:
    """How ``serve start`` runs Triton; validated once, here.

    Attributes:
        host: address every endpoint (HTTP, gRPC, metrics) listens on; loopback by default.
        http_port / grpc_port / metrics_port: distinct TCP ports, 1..65535.
        max_batch_size: Triton's max batch size per model (also the largest single request);
            None uses each predictor's own ``max_batch_size``.
        preferred_batch_sizes: dynamic batcher's preferred sizes (each <= max_batch_size).
        max_queue_delay_us: how long the dynamic batcher may hold a request to grow a batch.
        instances: model instances per model (Triton ``instance_group`` count).
        labels_only: expose only ``LABELS`` (no ``PROBABILITIES`` output).
        max_text_bytes: longest accepted text, in UTF-8 bytes; longer ones get HTTP 400.
        exit_timeout_s: on stop, how long Triton waits for in-flight requests (and open
            client connections) before it exits anyway.
        log_file: write tritonserver's log there instead of to stdout.
        log_verbose: tritonserver verbosity (0 = errors, warnings and startup only).
    """

    host: str = DEFAULT_HOST
    http_port: int = DEFAULT_HTTP_PORT
    grpc_port: int = DEFAULT_GRPC_PORT
    metrics_port: int = DEFAULT_METRICS_PORT
    max_batch_size: int | None = None
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 100
    instances: int = 1
    labels_only: bool = False
    max_text_bytes: int = 65536
    exit_timeout_s: int = 30
    log_file: Path | None = None
    log_verbose: int = 0

    def __post_init__(self) -> None:
        _check(bool(self.host) and not any(c.isspace() for c in self.host), "host",
               f"must be an address such as 127.0.0.1, got {self.host!r}")
        ports = {"http_port": self.http_port, "grpc_port": self.grpc_port, "metrics_port": self.metrics_port}
        for name, port in ports.items():
            _check(isinstance(port, int) and 1 <= port <= 65535, name, f"must be a port in 1..65535, got {port!r}")
        _check(len(set(ports.values())) == 3, "http_port/grpc_port/metrics_port",
               f"must be three different ports, got {self.http_port}, {self.grpc_port}, {self.metrics_port}")
        _check(self.max_batch_size is None or self.max_batch_size >= 1, "max_batch_size",
               f"must be >= 1, got {self.max_batch_size}")
        sizes = self.preferred_batch_sizes
        _check(all(isinstance(s, int) and s >= 1 for s in sizes), "preferred_batch_sizes",
               f"must be positive integers, got {list(sizes)}")
        _check(self.max_batch_size is None or all(s <= self.max_batch_size for s in sizes), "preferred_batch_sizes",
               f"must each be <= max_batch_size ({self.max_batch_size}), got {list(sizes)}")
        _check(self.max_queue_delay_us >= 0, "max_queue_delay_us", f"must be >= 0, got {self.max_queue_delay_us}")
        _check(self.instances >= 1, "instances", f"must be >= 1, got {self.instances}")
        _check(self.max_text_bytes >= 1, "max_text_bytes", f"must be >= 1, got {self.max_text_bytes}")
        _check(self.exit_timeout_s >= 0, "exit_timeout_s", f"must be >= 0, got {self.exit_timeout_s}")
        _check(self.log_verbose >= 0, "log_verbose", f"must be >= 0, got {self.log_verbose}")

    @property
    def ports(self) -> dict[str, int]:
        """``{"http": port, "grpc": port, "metrics": port}``."""
        return {"http": self.http_port, "grpc": self.grpc_port, "metrics": self.metrics_port}

    @property
    def all_interfaces(self) -> bool:
        """``host`` is a wildcard address: the endpoints listen on every interface."""
        return self.host in ("0.0.0.0", "::", "[::]")

    @property
    def loopback_only(self) -> bool:
        """``host`` is a loopback address (or ``localhost``): only this machine can connect."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host.strip("[]")).is_loopback
        except ValueError:  # a host name: it may resolve to anything
            return False

    @property
    def client_host(self) -> str:
        """The address a local client uses: a wildcard ``host`` is reached through loopback."""
        if self.all_interfaces:
            return "127.0.0.1"
        return f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
