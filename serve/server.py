"""Serve Predictors from a real Triton Inference Server (the ``tritonserver`` nvidia-pytriton ships).

``start_server(predictors, ServeConfig(...))`` binds each :class:`export.runtime.Predictor` as a
Triton model named ``predictor.name`` (text in, label probabilities out; the wire contract is in
:mod:`serve.config`), starts ``tritonserver`` with Triton's dynamic batcher and the configured
number of instances, and returns a :class:`ServerHandle` (``stop()``, a context manager, and
``serve()``, which blocks until SIGTERM/SIGINT and then drains).

Bad requests get HTTP 400 / gRPC INVALID_ARGUMENT with one line and never fail other requests
that Triton batched together with them: Triton itself rejects wrong datatypes, shapes, missing
inputs, batches over the maximum (400) and unknown models (404); this module rejects what only
the model can see (empty or whitespace-only texts, non-UTF-8 bytes, texts over
``max_text_bytes``) per request. PyTriton can only fail a whole batch, with HTTP 500 and a
traceback, so :func:`_customize_bound_model` adds a per-request error path to the proxy model
PyTriton loads into Triton.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import signal
import socket
import sysconfig
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from compress.errors import ConfigError, UserError
from serve.config import (
    INPUT_TEXT,
    LABEL_SEPARATOR,
    OUTPUT_LABELS,
    OUTPUT_PROBABILITIES,
    PARAM_LABELS,
    PARAM_THRESHOLDS,
    ServeConfig,
)

if TYPE_CHECKING:
    from export.runtime import Predictor

LOGGER = logging.getLogger(__name__)

MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")

# Endpoints only the process that started Triton may call (PyTriton sends the token itself).
# Statistics stay open: they are read-only and what monitoring and `serve check` rely on.
RESTRICTED_ENDPOINTS = ["model-repository", "shared-memory", "trace", "logging"]

# Reserved key in a response dict: [code, message] -> a per-request Triton error (see _PROXY_PATCH).
_ERROR_KEY = "MODCOMPRESS_ERROR"

# Seconds an extra model instance waits for the first one's handshake. PyTriton waits 1 s and
# does not retry a refused connection (the socket file appears before the first instance
# listens): on a busy machine the model then fails to load ("Timeout ... waiting for config").
_HANDSHAKE_TIMEOUT_S = 60.0

# Appended to PyTriton's proxy model.py (runs inside Triton's Python backend stub); both names
# are looked up in that module when called, so redefining them at its end takes effect.
# 1. _wrap_response builds each request's response of a batch: our reserved key becomes that one
#    request's error, with a Triton error code (INVALID_ARG -> HTTP 400 / gRPC INVALID_ARGUMENT).
# 2. get_config_from_handshake_server: a longer, retrying wait for instances 2..N (see above).
_PROXY_PATCH = f'''

# --- added by modcompress serve -------------------------------------------------------------
import time  # noqa: E402

_pytriton_get_config_from_handshake_server = get_config_from_handshake_server


def get_config_from_handshake_server(socket_path, timeout_s=1.0):
    deadline = time.time() + max(timeout_s, {_HANDSHAKE_TIMEOUT_S})
    while True:  # bounded by the deadline
        try:
            return _pytriton_get_config_from_handshake_server(socket_path, timeout_s=max(1.0, deadline - time.time()))
        except (ConnectionRefusedError, FileNotFoundError, TimeoutError):
            if time.time() >= deadline:
                raise
            time.sleep(0.05)  # the socket file exists before the first instance listens on it


_pytriton_wrap_response = _wrap_response


def _wrap_response(response, requested_outputs_names, model_outputs_dict):
    if response.data is not None and "{_ERROR_KEY}" in response.data:
        code, message = (bytes(x).decode("utf-8", "replace") for x in response.data["{_ERROR_KEY}"].ravel()[:2])
        code = getattr(pb_utils.TritonError, code, pb_utils.TritonError.INTERNAL)
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))
    return _pytriton_wrap_response(response, requested_outputs_names, model_outputs_dict)
'''.encode()


class ServeError(UserError):
    """The server could not start or keep running; the message says why and what to do."""


class PortInUseError(ServeError):
    """A port the server needs is already taken."""


class BadRequestError(ValueError):
    """A request the model refuses (answered with HTTP 400 / gRPC INVALID_ARGUMENT)."""


def use_own_libpython() -> None:
    """Make Triton's Python-backend stub load this interpreter's libpython, not the system's.

    The stub links ``libpython3.X.so``; without this the loader may pick the system copy (here
    3.11.2) under a pyenv 3.11.7 standard library, and model loading fails with
    ``'_thread.RLock' object has no attribute '_recursion_count'``. tritonserver and its stubs
    inherit ``LD_LIBRARY_PATH`` from this process, so our LIBDIR goes first. Idempotent.
    """
    libdir = sysconfig.get_config_var("LIBDIR")
    if not libdir or not Path(libdir).is_dir():
        return
    current = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    if current[:1] != [libdir]:
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *[p for p in current if p != libdir]])


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports on ``host`` that the kernel reported free a moment ago (for tests, benchmarks)."""
    sockets = []
    try:
        for _ in range(n):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def check_ports_free(host: str, ports: Mapping[str, int]) -> None:
    """Raise :class:`PortInUseError` (one line) if any port is already listened on at ``host``.

    Args:
        host: the address Triton will bind.
        ports: ``{"http": 8000, ...}``; the key names the flag in the message.
    """
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"host: cannot resolve {host!r} ({exc.strerror}); pass an address such as 127.0.0.1") from exc
    family, address = infos[0][0], infos[0][4][0]
    for kind, port in ports.items():
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # SO_REUSEADDR: a port in TIME_WAIT is free for Triton too; a listening one still fails.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise PortInUseError(
                        f"port {port} on {host} (--{kind}-port) is already in use; stop what listens there "
                        f"or choose another port"
                    ) from exc
                raise ServeError(f"cannot listen on {host}:{port} (--{kind}-port): {exc.strerror}; "
                                 f"check --host and the port") from exc


def _has_nvidia_gpu() -> bool:
    """GPU metrics only where NVML can work; elsewhere tritonserver prints an NVML error."""
    return Path("/dev/nvidiactl").exists()


def decode_texts(batch: np.ndarray | None, max_text_bytes: int) -> list[str]:
    """Turn one request's ``TEXT`` tensor into N strings, or raise :class:`BadRequestError`.

    Args:
        batch: (N, 1) array of bytes objects, as Triton hands a BYTES input with dims [1].
        max_text_bytes: longest accepted text in UTF-8 bytes.

    Returns:
        N non-empty texts.
    """
    if batch is None:
        raise BadRequestError(f"missing input {INPUT_TEXT}; send a BYTES tensor of shape [N, 1]")
    if batch.ndim != 2 or batch.shape[1] != 1:
        raise BadRequestError(f"input {INPUT_TEXT} has shape {list(batch.shape)}; send shape [N, 1]")
    if batch.shape[0] == 0:
        raise BadRequestError("empty batch; send at least one text")
    texts = []
    n = batch.shape[0]
    for i, item in enumerate(batch[:, 0]):
        if isinstance(item, bytes):
            raw = item
        elif isinstance(item, str):
            raw = item.encode("utf-8", "surrogatepass")
        else:
            raise BadRequestError(f"text {i} of {n} is a {type(item).__name__}, not bytes; send BYTES")
        if len(raw) > max_text_bytes:
            raise BadRequestError(f"text {i} of {n} is {len(raw)} bytes; the limit is {max_text_bytes}, "
                                  f"so shorten or split it")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequestError(f"text {i} of {n} is not valid UTF-8 (bad byte at offset {exc.start}); "
                                  f"encode texts as UTF-8") from None
        if not text.strip():
            raise BadRequestError(f"text {i} of {n} is empty or only whitespace; send non-empty texts")
        texts.append(text)
    return texts


def labels_over_threshold(probs: np.ndarray, labels: Sequence[str], thresholds: np.ndarray) -> list[str]:
    """For each row, the labels with probability >= threshold joined with ``;``.

    Args:
        probs: (N, L) probabilities.
        labels: L names.
        thresholds: (L,) thresholds.
    """
    hits = probs >= np.asarray(thresholds, dtype=np.float32)[None, :]  # (N, L)
    return [LABEL_SEPARATOR.join(name for name, hit in zip(labels, row, strict=True) if hit) for row in hits]


def _error_response(code: str, message: str) -> dict[str, np.ndarray]:
    line = " ".join(message.split())  # one line, whatever the cause
    return {_ERROR_KEY: np.array([code.encode(), line.encode("utf-8", "replace")], dtype=np.bytes_)}


class _ModelRunner:
    """The inference callable of one model instance: requests in, one response dict per request."""

    def __init__(self, predictor: Predictor, lock: contextlib.AbstractContextManager[Any],
                 labels_only: bool, max_text_bytes: int) -> None:
        self.name = predictor.name
        self._predictor = predictor
        self._lock = lock
        self._labels = list(predictor.labels)
        self._thresholds = np.asarray(predictor.thresholds, dtype=np.float32)
        self._chunk = int(predictor.max_batch_size)
        self._outputs = (OUTPUT_LABELS,) if labels_only else (OUTPUT_PROBABILITIES, OUTPUT_LABELS)
        self._max_text_bytes = max_text_bytes

    def __call__(self, requests: list[Any]) -> list[dict[str, np.ndarray]]:
        """Run one dynamic batch: validate each request alone, predict the valid ones together.

        Never raises: PyTriton would fail the whole batch with a traceback; here every request
        gets its own response or its own one-line error.
        """
        try:
            return self._run(requests)
        except Exception as exc:
            LOGGER.exception("model %s: unexpected error in a batch of %d requests", self.name, len(requests))
            return [_error_response("INTERNAL", f"model {self.name} failed: {type(exc).__name__}: {exc}")
                    for _ in requests]

    def _run(self, requests: list[Any]) -> list[dict[str, np.ndarray]]:
        responses: list[dict[str, np.ndarray] | None] = [None] * len(requests)
        texts: list[str] = []
        spans: list[tuple[int, int, int]] = []  # (request index, start row, end row) in texts
        for i, request in enumerate(requests):
            try:
                batch = decode_texts(request.data.get(INPUT_TEXT), self._max_text_bytes)
            except BadRequestError as exc:
                LOGGER.debug("model %s: bad request: %s", self.name, exc)
                responses[i] = _error_response("INVALID_ARG", f"model {self.name}: {exc}")
                continue
            spans.append((i, len(texts), len(texts) + len(batch)))
            texts.extend(batch)
        if texts:
            try:
                probs = self._predict(texts)
            except Exception as exc:  # the model broke, not the request: 500, server keeps running
                LOGGER.exception("model %s failed on a batch of %d texts", self.name, len(texts))
                message = f"model {self.name} failed: {type(exc).__name__}: {exc}"
                for i, _, _ in spans:
                    responses[i] = _error_response("INTERNAL", message)
            else:
                for i, start, end in spans:
                    responses[i] = self._outputs_for(requests[i], probs[start:end])
        return responses  # type: ignore[return-value]

    def _predict(self, texts: list[str]) -> np.ndarray:
        """(N, L) float32 probabilities, in chunks of the predictor's max batch size."""
        parts = []
        with self._lock:
            for start in range(0, len(texts), self._chunk):
                parts.append(np.asarray(self._predictor.predict(texts[start:start + self._chunk]), dtype=np.float32))
        probs = np.concatenate(parts, axis=0)
        if probs.shape != (len(texts), len(self._labels)):
            raise RuntimeError(f"predict returned shape {probs.shape}, expected {(len(texts), len(self._labels))}")
        return probs

    def _outputs_for(self, request: Any, probs: np.ndarray) -> dict[str, np.ndarray]:
        wanted = [n for n in (request.requested_output_names or self._outputs) if n in self._outputs]
        out: dict[str, np.ndarray] = {}
        if OUTPUT_PROBABILITIES in wanted:
            out[OUTPUT_PROBABILITIES] = probs  # (n, L)
        if OUTPUT_LABELS in wanted:
            joined = labels_over_threshold(probs, self._labels, self._thresholds)
            out[OUTPUT_LABELS] = np.array([[s.encode()] for s in joined], dtype=np.object_)  # (n, 1)
        return out


def _customize_bound_model(triton: Any, name: str, parameters: Mapping[str, str]) -> None:
    """Add config ``parameters`` and per-request errors to a model bound but not yet loaded.

    PyTriton has no public hook for either, so this wraps the two methods its ModelManager calls
    when it loads the model into Triton (``get_model_config`` and ``get_proxy_model_files``).
    If a PyTriton upgrade changes them, this raises instead of serving without the fix.
    """
    model = next(m for m in triton._model_manager.models if m.model_name == name)
    get_config: Callable[[], dict] = model.get_model_config
    get_files: Callable[[], dict[str, bytes]] = model.get_proxy_model_files

    def config_with_parameters() -> dict:
        config = get_config()
        params = config.setdefault("parameters", {})
        params.update({key: {"string_value": value} for key, value in parameters.items()})
        return config

    def files_with_request_errors() -> dict[str, bytes]:
        files = dict(get_files())
        key = f"file:{model.model_version}/model.py"
        source = files.get(key, b"")
        if b"def _wrap_response(" not in source or b"get_config_from_handshake_server" not in source:
            raise ServeError("this nvidia-pytriton version's proxy model differs from the one serve patches; "
                             "install nvidia-pytriton 0.7 (see pyproject.toml)")
        files[key] += _PROXY_PATCH
        return files

    model.get_model_config = config_with_parameters
    model.get_proxy_model_files = files_with_request_errors


def _replica_groups(predictors: Sequence[Predictor | Sequence[Predictor]], instances: int) -> list[list[Predictor]]:
    """One list per model with ``instances`` predictors (a single predictor is repeated)."""
    groups = []
    for entry in predictors:
        group = list(entry) if isinstance(entry, (list, tuple)) else [entry]
        if len(group) == 1:
            group = group * instances
        if len(group) != instances:
            raise ConfigError(f"instances: model {group[0].name} has {len(group)} predictors, expected {instances} "
                              f"(one per instance) or 1 (shared)")
        if len({p.name for p in group}) != 1:
            names = sorted({p.name for p in group})
            raise ConfigError(f"instances: one model's predictors have different names {names}")
        groups.append(group)
    return groups


def _check_predictor(predictor: Predictor, max_batch_size: int, preferred: Sequence[int]) -> None:
    name = predictor.name
    if not isinstance(name, str) or not MODEL_NAME_RE.match(name):
        raise ConfigError(f"model name {name!r} is not a valid Triton model name; use letters, digits, '.', '_', '-'")
    labels = list(predictor.labels)
    if not labels:
        raise ConfigError(f"model {name} has no labels")
    bad = [label for label in labels if LABEL_SEPARATOR in label]
    if bad:
        raise ConfigError(f"model {name}: label names {bad} contain {LABEL_SEPARATOR!r}, "
                          f"which separates labels in the {OUTPUT_LABELS} output; rename them")
    thresholds = np.asarray(predictor.thresholds)
    if thresholds.shape != (len(labels),):
        raise ConfigError(f"model {name} has {len(labels)} labels but thresholds of shape {thresholds.shape}")
    if int(predictor.max_batch_size) < 1:
        raise ConfigError(f"model {name}: max_batch_size must be >= 1, got {predictor.max_batch_size}")
    too_big = [s for s in preferred if s > max_batch_size]
    if too_big:
        raise ConfigError(f"preferred_batch_sizes: {too_big} exceed model {name}'s max batch size {max_batch_size}; "
                          f"lower them or raise --max-batch-size")


class ServerHandle:
    """A running Triton server; ``stop()`` (or leaving the ``with`` block) drains and shuts it down.

    Attributes:
        config: the ServeConfig it runs with.
        models: served model names, in binding order.
    """

    def __init__(self, triton: Any, config: ServeConfig, models: Sequence[str], workdir: Path) -> None:
        self._triton = triton
        self.config = config
        self.models = tuple(models)
        self._workdir = workdir
        self._lock = threading.Lock()
        self._stopped = False

    @property
    def http_url(self) -> str:
        """``http://host:port`` of the HTTP/REST endpoint."""
        return f"http://{self.config.client_host}:{self.config.http_port}"

    @property
    def grpc_url(self) -> str:
        """``grpc://host:port`` of the gRPC endpoint."""
        return f"grpc://{self.config.client_host}:{self.config.grpc_port}"

    @property
    def metrics_url(self) -> str:
        """Prometheus metrics URL."""
        return f"http://{self.config.client_host}:{self.config.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        """The tritonserver process id (None if PyTriton does not expose it)."""
        process = getattr(getattr(self._triton, "_triton_server", None), "_tritonserver_running_cmd", None)
        return getattr(process, "pid", None)

    def is_alive(self) -> bool:
        """True while tritonserver and every model's inference handler run."""
        return not self._stopped and bool(self._triton.is_alive())

    def stop(self) -> None:
        """Stop accepting requests, let in-flight ones finish (up to ``exit_timeout_s``), exit.

        Idempotent. When it returns, tritonserver has exited and its ports are free.
        """
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        try:
            self._triton.stop()
        finally:
            shutil.rmtree(self._workdir, ignore_errors=True)

    def serve(self, poll_s: float = 1.0) -> int:
        """Block until SIGTERM or SIGINT (then drain and stop) and return 0.

        Must run in the main thread (signal handlers). Raises :class:`ServeError` if Triton dies
        on its own.
        """
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("ServerHandle.serve() must run in the main thread (it handles signals); "
                               "elsewhere use stop()")
        received = threading.Event()

        def _on_signal(signum: int, _frame: Any) -> None:
            LOGGER.info("%s received: draining in-flight requests, then exiting", signal.Signals(signum).name)
            received.set()

        previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            while not received.wait(poll_s):
                if not self.is_alive():
                    self.stop()
                    raise ServeError("Triton exited unexpectedly; see its log above "
                                     "(or the --log-file) for the cause")
            self.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def start_server(predictors: Sequence[Predictor | Sequence[Predictor]],
                 config: ServeConfig | None = None) -> ServerHandle:
    """Start tritonserver with each predictor bound as a model; return when all are ready.

    Args:
        predictors: one entry per model. An entry is a Predictor (shared by all
            ``config.instances`` instances; calls into it are then serialized) or a list of
            ``instances`` Predictors with the same name (one per instance, run in parallel).
        config: ports, batching, instances; defaults to ``ServeConfig()``.

    Returns:
        A :class:`ServerHandle`; use it as a context manager or call ``stop()``.

    Raises:
        ConfigError: bad model names, labels, thresholds or batch sizes.
        PortInUseError: a port is taken (checked before Triton starts).
        ServeError: Triton failed to start.
    """
    config = config or ServeConfig()
    groups = _replica_groups(predictors, config.instances)
    if not groups:
        raise ConfigError("no models to serve; pass at least one artifact")
    names = [group[0].name for group in groups]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"two models are both named {duplicates}; model names must be unique")
    for group in groups:
        _check_predictor(group[0], config.max_batch_size or group[0].max_batch_size, config.preferred_batch_sizes)
    check_ports_free(config.host, config.ports)
    use_own_libpython()

    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

    workdir = Path(tempfile.mkdtemp(prefix="modcompress-serve-"))
    triton_config = TritonConfig(
        http_address=config.host, http_port=config.http_port,
        grpc_address=config.host, grpc_port=config.grpc_port,
        allow_metrics=True, allow_gpu_metrics=_has_nvidia_gpu(),
        metrics_address=config.host, metrics_port=config.metrics_port,
        exit_timeout_secs=config.exit_timeout_s, log_verbose=config.log_verbose,
        log_file=Path(config.log_file).resolve() if config.log_file else None,
    )
    try:
        triton = Triton(config=triton_config, workspace=workdir / "workspace",
                        security_config=TritonSecurityConfig(restricted_endpoints=list(RESTRICTED_ENDPOINTS)))
    except Exception:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    handle = ServerHandle(triton, config, names, workdir)
    try:
        for group in groups:
            first = group[0]
            shared = len({id(p) for p in group}) < len(group)
            lock: contextlib.AbstractContextManager[Any] = threading.Lock() if shared else contextlib.nullcontext()
            runners = [_ModelRunner(p, lock, config.labels_only, config.max_text_bytes) for p in group]
            outputs = [Tensor(name=OUTPUT_LABELS, dtype=bytes, shape=(1,))]
            if not config.labels_only:
                outputs.insert(0, Tensor(name=OUTPUT_PROBABILITIES, dtype=np.float32, shape=(len(first.labels),)))
            triton.bind(
                model_name=first.name,
                infer_func=runners,
                inputs=[Tensor(name=INPUT_TEXT, dtype=bytes, shape=(1,))],
                outputs=outputs,
                config=ModelConfig(
                    max_batch_size=config.max_batch_size or int(first.max_batch_size),
                    batcher=DynamicBatcher(
                        max_queue_delay_microseconds=config.max_queue_delay_us,
                        preferred_batch_size=list(config.preferred_batch_sizes) or None,
                    ),
                ),
            )
            _customize_bound_model(triton, first.name, {
                PARAM_LABELS: json.dumps(list(first.labels)),
                PARAM_THRESHOLDS: json.dumps([float(t) for t in np.asarray(first.thresholds)]),
            })
        triton.run()
    except UserError:
        handle.stop()
        raise
    except Exception as exc:
        handle.stop()
        where = f"see {config.log_file}" if config.log_file else "see the Triton log above"
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ServeError(f"Triton failed to start: {first_line[:300]} ({where})") from exc
    LOGGER.debug("serving %s at %s (gRPC %s, metrics %s)", ", ".join(names), handle.http_url, handle.grpc_url,
                handle.metrics_url)
    return handle

