"""Serve Predictors from a real Triton Inference Server (the ``tritonserver`` nvidia-pytriton ships).

``start_server(predictors, ServeConfig(...))`` writes a model repository with one Triton
Python-backend model per predictor (:mod:`serve.backend_model`: text in, label probabilities
out; the wire contract is in :mod:`serve.config`), starts ``tritonserver`` on it with Triton's
dynamic batcher and the configured number of instances, and returns a :class:`ServerHandle`
(``stop()``, a context manager, and ``serve()``, which blocks until SIGTERM/SIGINT and then
drains; signals are handled in :func:`stop_on_signals` only).

The HTTP port is not Triton's: it is the HTTP front (:mod:`serve.front`) of this process, which
checks each request (size, JSON depth and structure, endpoint) before it forwards it to Triton's
HTTP server on a Unix socket in the server's private work directory. A malformed body that would
crash Triton's parser gets a 400 instead. gRPC (protobuf: no recursive JSON parser) and metrics
are Triton's own, on ``config.host``. Should tritonserver die anyway, a supervisor thread restarts
it within seconds (the front answers 503 meanwhile).

Each model instance is a Python-backend stub process that loads its own copy of the predictor
(an artifact is loaded again from its directory; any other predictor is pickled) and runs each
dynamic batch where Triton hands it over. Only the binaries come from nvidia-pytriton; its
Python proxy, which would send every batch on to this process and back, is not used.

The server process is ours: it runs in its own session (a Ctrl-C in the terminal reaches only
this process, which then asks Triton once to drain), gets SIGTERM when the thread that started
it dies (``PR_SET_PDEATHSIG``: start it from a thread that lives as long as the server, such as
the main one), has a /dev/shm of its own where the Python backend's shared memory (request
texts) is out of other users' reach (:mod:`serve.isolation`), runs with umask 077, and its log
goes to ``config.log_file`` or, line by line, to stdout. Its work directory is owner-locked
(:mod:`serve.workdir`): one left by a `serve` killed with kill -9 is removed at the next start.
No secret is passed on its command line.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import http.client
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from compress.cpu import sleeping_openmp_workers
from compress.errors import ConfigError, UserError
from serve.backend_model import PARAM_MAX_TEXT_BYTES, save_predictor
from serve.config import (
    INPUT_TEXT,
    LABEL_SEPARATOR,
    OUTPUT_LABELS,
    OUTPUT_PROBABILITIES,
    PARAM_LABELS,
    PARAM_THRESHOLDS,
    ServeConfig,
)
from serve.front import HttpFront
from serve.isolation import child_setup, tighten_shm_regions
from serve.workdir import SHM_PREFIX_FILE, claim_workdir, remove_shm_regions, remove_stale_workdirs

if TYPE_CHECKING:
    from export.runtime import Predictor

LOGGER = logging.getLogger(__name__)

MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")

# gRPC protocols nobody may call. Triton opens them to requests that carry a given header; ours
# has upper-case letters, which gRPC cannot carry (HTTP/2 header names are lower case, and Triton's
# gRPC parser refuses a stream that sends one), so no request ever satisfies it and there is no
# secret in tritonserver's argv, which any local user reads in /proc/PID/cmdline. Over HTTP the
# front (serve.front) answers these endpoints 403; Triton's own HTTP server listens on a Unix socket
# in the 0700 work directory, where no other user can reach it. Statistics stay open: they are
# read-only and what monitoring and `serve check` rely on.
RESTRICTED_PROTOCOLS = ("model-repository", "shared-memory", "trace", "logging")
_UNSENDABLE_HEADER = "Closed-To-Every-Client"

_HTTP_SOCKET = "triton-http.sock"
# The longest Unix socket path (sun_path holds 108 bytes, the last one NUL).
_MAX_SOCKET_PATH = 107

# The smallest request body limit: bodies up to this size are always accepted (413 beyond the limit).
MIN_BODY_LIMIT = 64 * 2**20
# A JSON string may spell one byte of text as six (\u00XX).
_JSON_BYTES_PER_TEXT_BYTE = 6

# Supervision: a tritonserver that dies on its own is restarted, unless it died this often in a minute.
MAX_RESTARTS_PER_MINUTE = 3

# How long models may take to load before start_server gives up.
START_TIMEOUT_S = 300.0

# The model.py Triton loads for each served model: the parent's import path, then our model.
_MODEL_PY = '''"""Written by `serve start`: the model is serve.backend_model.TritonPythonModel."""
import sys

sys.path.extend(p for p in {paths!r} if p not in sys.path)

from serve.backend_model import TritonPythonModel  # noqa: E402,F401
'''

# Triton's log lines: a severity letter, MMDD, time, thread, file:line] message.
_LOG_LINE = re.compile(r"^([IWE])\d{4} [\d:.]+\s+\d+ [^\]]+\] (.*)$")


class ServeError(UserError):
    """The server could not start or keep running; the message says why and what to do."""


class PortInUseError(ServeError):
    """A port the server needs is already taken."""


def use_own_libpython(env: MutableMapping[str, str] | None = None) -> None:
    """Make Triton's Python-backend stub load this interpreter's libpython, not the system's.

    The stub links ``libpython3.X.so``; without this the loader may pick the system copy (here
    3.11.2) under a pyenv 3.11.7 standard library, and model loading fails with
    ``'_thread.RLock' object has no attribute '_recursion_count'``. tritonserver and its stubs
    get ``env`` (default: this process's environment), so our LIBDIR goes first on its
    ``LD_LIBRARY_PATH``. Idempotent.
    """
    env = os.environ if env is None else env
    libdir = sysconfig.get_config_var("LIBDIR")
    if not libdir or not Path(libdir).is_dir():
        return
    current = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    if current[:1] != [libdir]:
        env["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *[p for p in current if p != libdir]])


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
        host: the address the server will bind.
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
                raise _port_error(host, port, kind, exc) from exc


def _port_error(host: str, port: int, kind: str, exc: OSError) -> ServeError:
    """The one-line error for a port that cannot be listened on."""
    if exc.errno == errno.EADDRINUSE:
        return PortInUseError(f"port {port} on {host} (--{kind}-port) is already in use; stop what listens there "
                              f"or choose another port")
    return ServeError(f"cannot listen on {host}:{port} (--{kind}-port): {exc.strerror}; check --host and the port")


def _has_nvidia_gpu() -> bool:
    """GPU metrics only where NVML can work; elsewhere tritonserver prints an NVML error."""
    return Path("/dev/nvidiactl").exists()


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


def _triton_files() -> tuple[Path, Path, Path]:
    """(tritonserver binary, its library directory, the Python-backend stub for this interpreter)."""
    try:
        from pytriton.utils.distribution import get_libs_path, get_root_module_path, get_stub_path
    except ImportError:
        raise ServeError("nvidia-pytriton is not installed, and serve runs the tritonserver it ships; "
                         "pip install 'nvidia-pytriton>=0.7,<0.8'") from None
    binary = Path(get_root_module_path()) / "tritonserver" / "bin" / "tritonserver"
    if not os.access(binary, os.X_OK):
        raise ServeError(f"{binary} is missing or not executable; reinstall nvidia-pytriton "
                         f"(pip install --force-reinstall 'nvidia-pytriton>=0.7,<0.8')")
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = Path(get_stub_path(version))
    if not stub.is_file():
        raise ServeError(f"nvidia-pytriton has no Python-backend stub for Python {version} ({stub}); "
                         f"run serve with a Python version it ships a stub for")
    return binary, Path(get_libs_path()), stub


def _prepare_backends(workdir: Path, binary: Path, stub: Path) -> Path:
    """A backend directory with Triton's Python backend and the stub built for this Python."""
    source = binary.parents[1] / "backends" / "python"  # beside .../tritonserver/bin/tritonserver
    target = workdir / "backends" / "python"
    target.mkdir(parents=True)
    for item in source.iterdir():
        if item.is_file():
            (target / item.name).symlink_to(item)
    shutil.copy(stub, target / "triton_python_backend_stub")
    return workdir / "backends"


def _model_config(predictor: Predictor, config: ServeConfig) -> Any:
    """The Triton ModelConfig of one served predictor."""
    from tritonclient.grpc import model_config_pb2 as mc

    from export.triton import set_dynamic_batching

    model = mc.ModelConfig(name=predictor.name, backend="python",
                           max_batch_size=config.max_batch_size or int(predictor.max_batch_size))
    model.input.add(name=INPUT_TEXT, data_type=mc.TYPE_STRING, dims=[1])
    if not config.labels_only:
        model.output.add(name=OUTPUT_PROBABILITIES, data_type=mc.TYPE_FP32, dims=[len(predictor.labels)])
    model.output.add(name=OUTPUT_LABELS, data_type=mc.TYPE_STRING, dims=[1])
    set_dynamic_batching(model, config.preferred_batch_sizes, config.max_queue_delay_us)
    model.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=config.instances)
    for key, value in ((PARAM_LABELS, json.dumps(list(predictor.labels))),
                       (PARAM_THRESHOLDS, json.dumps([float(t) for t in np.asarray(predictor.thresholds)])),
                       (PARAM_MAX_TEXT_BYTES, str(config.max_text_bytes))):
        model.parameters[key].string_value = value
    return model


def write_model(repository: Path, predictor: Predictor, config: ServeConfig) -> Path:
    """Write one predictor's model directory (config, how to load it, model.py); returns it.

    Raises:
        ConfigError: the predictor can neither be loaded again from an artifact nor pickled.
    """
    from export.triton import write_config

    directory = repository / predictor.name
    (directory / "1").mkdir(parents=True)
    write_config(directory, _model_config(predictor, config))
    try:
        save_predictor(directory, predictor)
    except TypeError as exc:
        raise ConfigError(f"model {predictor.name}: {exc}; serve a predictor from export.runtime.load or a "
                          f"picklable one") from None
    paths = [p for p in sys.path if p and os.path.isabs(p) and os.path.isdir(p)]
    (directory / "1" / "model.py").write_text(_MODEL_PY.format(paths=paths))
    return directory


def _triton_args(config: ServeConfig, repository: Path, backends: Path, binary: Path, shm_prefix: str,
                 http_socket: Path | None) -> list[str]:
    """tritonserver's command line; ``http_socket`` None: its HTTP on ``config.host:http_port`` (no front)."""
    gpu = _has_nvidia_gpu()
    closed = f"{','.join(RESTRICTED_PROTOCOLS)}:{_UNSENDABLE_HEADER}=-"
    if http_socket is not None:  # the front (serve.front) owns --http-port
        http = [f"--http-address=unix:{http_socket}", "--http-port=0"]
    else:  # the restricted endpoints stay closed: Triton refuses them without the unsendable header
        http = [f"--http-address={config.host}", f"--http-port={config.http_port}",
                f"--http-restricted-api={closed}"]
    args = [
        str(binary), f"--model-repository={repository}", f"--backend-directory={backends}",
        f"--cache-directory={binary.parents[1] / 'caches'}", "--model-control-mode=none", "--strict-readiness=true",
        *http,
        f"--grpc-address={config.host}", f"--grpc-port={config.grpc_port}",
        "--allow-metrics=true", f"--allow-gpu-metrics={str(gpu).lower()}",
        f"--metrics-address={config.host}", f"--metrics-port={config.metrics_port}",
        f"--grpc-restricted-protocol={closed}",
        f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
        f"--exit-timeout-secs={config.exit_timeout_s}", f"--log-verbose={config.log_verbose}",
    ]
    if not gpu:  # no pinned-memory pool to fail to allocate (a CUDA warning on every start)
        args.append("--pinned-memory-pool-byte-size=0")
    if config.log_file:
        args.append(f"--log-file={Path(config.log_file).resolve()}")
    return args


def _triton_env(libs: Path) -> dict[str, str]:
    """This process's environment, plus what tritonserver and its stubs need to find (this one is left as is).

    Idle OpenMP workers sleep in the model instances (:func:`compress.cpu.sleeping_openmp_workers`, unless
    the environment chose a policy): spinning ones took the cores the next batch's round trip through the
    clients, the front and Triton needs; a TextCNN with 2 threads served 8 clients 25 req/s with spinning
    workers, 518 req/s with sleeping ones (loaded 2-core VM, interleaved rounds).
    """
    env = dict(os.environ)
    sleeping_openmp_workers(env)
    use_own_libpython(env)
    env["LD_LIBRARY_PATH"] = os.pathsep.join([p for p in (env.get("LD_LIBRARY_PATH"), str(libs)) if p])
    # The stub's embedded interpreter finds its prefix (this venv's site-packages) through PATH.
    env["PATH"] = os.pathsep.join([str(Path(sys.exec_prefix) / "bin"), env.get("PATH", "")])
    return env


class _LogTail:
    """Reads tritonserver's stdout/stderr: keeps the last lines, echoes them to ``echo``."""

    def __init__(self, stream: IO[bytes], echo: IO[str] | None, keep: int = 200) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=keep)
        self._stream = stream
        self._echo = echo
        self._thread = threading.Thread(target=self._read, name="tritonserver-log", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for raw in iter(self._stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            if self._echo is not None:
                try:
                    self._echo.write(line + "\n")
                    self._echo.flush()
                except (OSError, ValueError):  # stdout closed: keep draining the pipe
                    self._echo = None
        self._stream.close()

    def join(self, timeout_s: float) -> None:
        """Wait for the pipe to close (the server and its stubs have exited)."""
        self._thread.join(timeout_s)


def _log_message(text: str) -> str:
    """A Triton log message's first line: its quoted form unescaped, Python's traceback dropped."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            text = json.loads(text)
        except ValueError:  # not valid JSON escaping: undo the one escape that matters here
            text = text[1:-1].replace("\\n", "\n")
    return text.split("\n")[0].strip()


def _first_error(lines: Sequence[str]) -> str | None:
    """The most telling error in a Triton log, on one line.

    A model that failed to load (its name and the exception, without the Python traceback Triton
    appends) wins over other errors; Triton's CUDA probe on a CPU-only host logs an error on
    every start and never counts.
    """
    errors = []
    for line in lines:
        match = _LOG_LINE.match(line.strip())
        if match and match.group(1) == "E" and "CudaDriverHelper" not in match.group(2):
            errors.append(_log_message(match.group(2)))
    for message in errors:
        if message.startswith("failed to load '"):
            return message
    return errors[0] if errors else None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """While inside, SIGTERM and SIGINT set the yielded event instead of ending the process.

    The one place serving handles signals: a signal is remembered whenever it comes (while models
    load, or while serving), and the caller drains and stops when it looks at the event. The
    previous handlers come back on exit. Must run in the main thread.
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
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def describe_exit(code: int | None) -> str:
    """``"signal 11 (SIGSEGV)"`` or ``"code 1"`` for a Popen return code."""
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {-code} ({signal.Signals(-code).name})"
        return f"signal {-code}"
    return f"code {code}"


class ServerHandle:
    """A running server: the HTTP front (:mod:`serve.front`) and the tritonserver behind it.

    ``stop()`` (or leaving the ``with`` block) drains and shuts both down. While it runs, a
    supervisor thread restarts tritonserver if it dies on its own (the front answers 503 until it is
    ready again), up to :data:`MAX_RESTARTS_PER_MINUTE` times a minute.

    Attributes:
        config: the ServeConfig it runs with.
        models: served model names, in the order given.
    """

    def __init__(self, args: list[str], env: dict[str, str], front: HttpFront | None, config: ServeConfig,
                 models: Sequence[str], workdir: Path, shm_prefix: str, owner_lock: int | None = None) -> None:
        self._args = args
        self._env = env
        self._front = front
        self.config = config
        self.models = tuple(models)
        self._workdir = workdir
        self._shm_prefix = shm_prefix
        self._owner_lock = owner_lock
        log_file = config.log_file
        # Triton appends to its log file: this run's errors are read from here on.
        self._log_offset = Path(log_file).stat().st_size if log_file and Path(log_file).is_file() else 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log: _LogTail | None = None
        self._lock = threading.Lock()
        self._stopping = False
        self._stopped = False
        self._failure: str | None = None
        self._supervisor: threading.Thread | None = None
        self._warned_shm = False
        self.private_shm = False  # tritonserver has a /dev/shm of its own (see _child_setup)
        self.restarts = 0

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
    def pid(self) -> int:
        """The process id of the current tritonserver."""
        assert self._process is not None
        return self._process.pid

    def is_alive(self) -> bool:
        """True while tritonserver runs (until ``stop()`` has reaped it, or it died)."""
        return self._process is not None and self._process.poll() is None

    def log_tail(self) -> list[str]:
        """The last lines this server's tritonserver (and its stubs) logged."""
        lines = list(self._log.lines) if self._log is not None else []
        log_file = self.config.log_file
        if log_file and Path(log_file).is_file():
            with open(log_file, "rb") as f:
                f.seek(self._log_offset)
                logged = [raw.decode("utf-8", "replace") for raw in collections.deque(f, maxlen=200)]
            lines = logged + lines
        return [line.rstrip("\n") for line in lines]

    def _start_triton(self) -> None:
        """Run tritonserver (again); its log goes to ``config.log_file`` or, line by line, to stdout."""
        report_read, report_write = os.pipe()
        try:
            process = subprocess.Popen(  # noqa: S603 - our own argument list, no shell
                self._args, env=self._env, cwd=self._workdir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=child_setup(report_write))
        except OSError as exc:
            raise ServeError(f"cannot run {self._args[0]}: {exc.strerror or exc}; reinstall nvidia-pytriton") from None
        finally:
            os.close(report_write)
            with os.fdopen(report_read, "rb") as report:
                self.private_shm = report.read(1) == b"1"
        assert process.stdout is not None
        self._log = _LogTail(process.stdout, None if self.config.log_file else sys.stdout)
        self._process = process
        if not self.private_shm and not self._warned_shm:
            self._warned_shm = True
            LOGGER.warning("the kernel refused tritonserver a /dev/shm of its own (user namespaces are disabled "
                           "here); its shared-memory regions, which hold request texts, are made 0600 once "
                           "its models are loaded")

    def _ready(self) -> bool:
        conn = http.client.HTTPConnection(self.config.client_host.strip("[]"), self.config.http_port, timeout=2)
        try:
            conn.request("GET", "/v2/health/ready")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Block until every model is loaded and the server is ready.

        Raises:
            ServeError: tritonserver exited, or was not ready within ``timeout_s``.
        """
        process, log = self._process, self._log
        assert process is not None and log is not None
        deadline = time.monotonic() + timeout_s
        while not self._ready():
            if process.poll() is not None:
                log.join(5)
                cause = _first_error(self.log_tail()) or f"tritonserver exited with {describe_exit(process.returncode)}"
                where = f"see {self.config.log_file}" if self.config.log_file else "see the Triton log above"
                raise ServeError(f"Triton failed to start: {cause[:300]} ({where})")
            if time.monotonic() > deadline:
                raise ServeError(f"Triton was not ready after {timeout_s:.0f} s; its models may be too slow to "
                                 f"load here (see {self.config.log_file or 'the Triton log above'})")
            time.sleep(0.05)
        if not self.private_shm:
            tighten_shm_regions(self._shm_prefix)

    def supervise(self) -> None:
        """Start the thread that restarts tritonserver when it dies on its own (once, after the first start)."""
        if self._supervisor is None:
            self._supervisor = threading.Thread(target=self._supervise, name="tritonserver-supervisor", daemon=True)
            self._supervisor.start()

    def _supervise(self) -> None:
        deaths: list[float] = []
        while True:
            process = self._process
            assert process is not None
            process.wait()
            if self._stopping:
                return
            cause = describe_exit(process.returncode)
            now = time.monotonic()
            deaths = [t for t in deaths if now - t < 60] + [now]
            if len(deaths) > MAX_RESTARTS_PER_MINUTE:
                self._failure = (f"Triton died {len(deaths)} times within a minute (last: {cause}); see its log "
                                 f"above (or the --log-file) for the cause")
                return
            LOGGER.warning("tritonserver died (%s); restarting it (HTTP requests get 503 until it is ready)", cause)
            started = time.monotonic()
            self._kill_group(process)  # its stubs, if any outlived it
            remove_shm_regions(self._shm_prefix)
            with contextlib.suppress(FileNotFoundError):
                (self._workdir / _HTTP_SOCKET).unlink()
            try:
                with self._lock:
                    if self._stopping:
                        return
                    self._start_triton()
                self.wait_ready()
            except ServeError as exc:
                if not self._stopping:
                    self._failure = f"Triton died ({cause}) and could not be restarted: {exc}"
                return
            self.restarts += 1
            LOGGER.warning("tritonserver restarted after %s in %.1f s", cause, time.monotonic() - started)

    def stop(self) -> None:
        """Refuse new requests, let in-flight ones finish (up to ``exit_timeout_s``), exit.

        The front stops accepting (new HTTP requests get 503 and ``Connection: close``), then
        tritonserver gets SIGTERM (it refuses new gRPC inference) and both let what is in flight
        finish. Idempotent and safe from several threads. When it returns, tritonserver and its
        stubs have exited, their shared memory is gone and the ports are free. Interrupted (Ctrl-C
        while it waits), it kills the server's whole process group before letting the interrupt
        through.
        """
        self._stopping = True
        with self._lock:
            if self._stopped:
                return
            try:
                # New HTTP work is refused from here on; what the front accepted reaches Triton
                # before Triton hears of the drain (it refuses new inference once told).
                if self._front is not None:
                    self._front.stop_accepting(self.config.exit_timeout_s)
                process = self._process
                if process is not None and process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                if self._front is not None and not self._front.drain(self.config.exit_timeout_s):
                    LOGGER.warning("HTTP requests still in flight after %d s; closing them", self.config.exit_timeout_s)
                if process is not None and process.poll() is None:
                    try:
                        process.wait(self.config.exit_timeout_s + 30)
                    except subprocess.TimeoutExpired:
                        LOGGER.warning("tritonserver did not exit %d s after SIGTERM; killing it and its stubs",
                                       self.config.exit_timeout_s + 30)
                        self._kill()
                if self._log is not None:
                    self._log.join(10)  # the pipe closes once the stubs are gone too
            except BaseException:
                self._kill()
                raise
            finally:
                if self._front is not None:
                    self._front.close()
                self._release()
            self._stopped = True

    def _kill(self) -> None:
        """SIGKILL tritonserver and its stubs (its own process group: it leads its session)."""
        self._stopping = True
        if self._process is not None:
            self._kill_group(self._process)

    @staticmethod
    def _kill_group(process: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(30)

    def _release(self) -> None:
        """Remove the work directory and any shared memory the stubs left (only after a kill); drop the lock."""
        shutil.rmtree(self._workdir, ignore_errors=True)
        remove_shm_regions(self._shm_prefix)
        if self._owner_lock is not None:
            os.close(self._owner_lock)
            self._owner_lock = None

    def serve_until(self, stop: threading.Event, poll_s: float = 1.0) -> int:
        """Block until ``stop`` is set, then drain and stop; return 0.

        Raises :class:`ServeError` if Triton keeps dying (see :meth:`supervise`).

        Args:
            stop: set by whoever decides the server should stop (:func:`stop_on_signals` for a
                signal, or another thread).
            poll_s: how often to check on the supervisor.
        """
        self.supervise()
        while not stop.wait(poll_s):
            if self._failure is not None:
                self.stop()
                raise ServeError(self._failure)
        self.stop()
        return 0

    def serve(self, poll_s: float = 1.0) -> int:
        """Block until SIGTERM or SIGINT (then drain and stop) and return 0.

        Must run in the main thread (signal handlers); see :meth:`serve_until`.
        """
        with stop_on_signals() as stop:
            return self.serve_until(stop, poll_s)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _launch(repository: Path, workdir: Path, config: ServeConfig, models: Sequence[str],
            triton: tuple[Path, Path, Path], max_body_bytes: int = MIN_BODY_LIMIT,
            owner_lock: int | None = None, front: bool = True) -> ServerHandle:
    """Start the HTTP front and tritonserver on a model repository; return once every model is ready.

    Args:
        repository: the model repository.
        workdir: an existing private directory that is the server's from here on: it gets the
            backend directory and Triton's HTTP socket, and goes when the server stops or fails
            to start.
        config: ports, logging, exit timeout.
        models: the model names the handle reports.
        triton: what :func:`_triton_files` found.
        max_body_bytes: the largest HTTP request body the front accepts.
        owner_lock: the descriptor holding ``workdir``'s owner lock (:func:`serve.workdir.claim_workdir`), closed
            with the server.
        front: False = no front: Triton's own HTTP on the port (see :func:`start_server`).
    """
    binary, libs, stub = triton
    shm_prefix = f"modcompress_{os.getpid()}_{secrets.token_hex(4)}_"
    http_socket = workdir / _HTTP_SOCKET
    try:
        if len(str(http_socket)) > _MAX_SOCKET_PATH:
            raise ServeError(f"the work directory path {workdir} is too long for a Unix socket; set TMPDIR to a "
                             f"shorter directory")
        (workdir / SHM_PREFIX_FILE).write_text(shm_prefix)
        backends = _prepare_backends(workdir, binary, stub)
        http_front = HttpFront(config.host, config.http_port, str(http_socket), max_body_bytes) if front else None
        if http_front is not None:
            try:
                http_front.start()
            except OSError as exc:
                raise _port_error(config.host, config.http_port, "http", exc) from exc
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        if owner_lock is not None:
            os.close(owner_lock)
        raise
    handle = ServerHandle(_triton_args(config, repository, backends, binary, shm_prefix, http_socket if front else None),
                          _triton_env(libs), http_front, config, models, workdir, shm_prefix, owner_lock)
    try:
        handle._start_triton()
        handle.wait_ready()
    except BaseException:
        handle.stop()
        raise
    handle.supervise()
    return handle


def reachable_address() -> str:
    """An address of this machine that other hosts can likely reach (for messages only).

    The source address of a route outwards (a UDP connect sends nothing), else the host name's
    address, else 127.0.0.1.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed anywhere, only looked up
            address = probe.getsockname()[0]
        except OSError:
            address = ""
    if not address or address.startswith(("127.", "0.")):
        try:
            address = socket.gethostbyname(socket.gethostname())
        except OSError:
            address = "127.0.0.1"
    return address


def serving_line(config: ServeConfig, models: Sequence[str]) -> str:
    """What `serve start` prints once ready: the models and the address each endpoint is bound to.

    For a wildcard ``--host`` it says so and shows a URL other machines can use.
    """
    host = f"[{config.host.strip('[]')}]" if ":" in config.host else config.host
    line = f"serving {', '.join(models)} at http://{host}:{config.http_port}"
    if config.all_interfaces:
        return (f"{line} on all interfaces (from elsewhere e.g. http://{reachable_address()}:{config.http_port}; "
                f"gRPC grpc://{host}:{config.grpc_port}, metrics http://{host}:{config.metrics_port}/metrics)")
    return f"{line} (gRPC grpc://{host}:{config.grpc_port}, metrics http://{host}:{config.metrics_port}/metrics)"


def exposure_warning(config: ServeConfig) -> str | None:
    """A one-line warning when the endpoints are reachable from other machines (they have no authentication)."""
    if config.loopback_only:
        return None
    where = "on all interfaces" if config.all_interfaces else f"on {config.host}"
    return (f"warning: the endpoints listen {where} and have no authentication: anyone who can reach this machine "
            f"can send requests and read statistics and metrics; serve on 127.0.0.1 behind an authenticating "
            f"proxy, or firewall ports {config.http_port}, {config.grpc_port} and {config.metrics_port}")


def max_body_bytes(predictors: Sequence[Predictor], config: ServeConfig) -> int:
    """The largest HTTP request body to accept: a full batch of the longest texts, as JSON, or
    :data:`MIN_BODY_LIMIT` if that is larger."""
    batch = max(config.max_batch_size or int(p.max_batch_size) for p in predictors)
    return max(MIN_BODY_LIMIT, batch * _JSON_BYTES_PER_TEXT_BYTE * config.max_text_bytes + 2**20)


def start_server(predictors: Sequence[Predictor], config: ServeConfig | None = None, *,
                 front: bool = True) -> ServerHandle:
    """Start tritonserver with each predictor as a model, behind the HTTP front; return when all are ready.

    Work directories that killed servers left behind are removed first (:func:`remove_stale_workdirs`).

    Args:
        predictors: one per model. Each of the ``config.instances`` instances of a model loads its
            own copy in its own process (see the module docstring), so instances run in parallel.
        config: ports, batching, instances; defaults to ``ServeConfig()``.
        front: False only to measure what the front costs (``bench serve-speed --protocols http-direct``):
            Triton's own HTTP server listens on the HTTP port, with none of the front's checks (one
            malformed request can crash it); its restricted endpoints stay closed. Never for users.

    Returns:
        A :class:`ServerHandle`; use it as a context manager or call ``stop()``.

    Raises:
        ConfigError: bad model names, labels, thresholds or batch sizes; a predictor that cannot
            be sent to the server.
        PortInUseError: a port is taken (checked before Triton starts).
        ServeError: Triton failed to start.
    """
    config = config or ServeConfig()
    predictors = list(predictors)
    if not predictors:
        raise ConfigError("no models to serve; pass at least one artifact")
    names = [p.name for p in predictors]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"two models are both named {duplicates}; model names must be unique")
    for predictor in predictors:
        _check_predictor(predictor, config.max_batch_size or predictor.max_batch_size, config.preferred_batch_sizes)
    check_ports_free(config.host, config.ports)
    triton = _triton_files()
    warning = exposure_warning(config)
    if warning:
        LOGGER.warning(warning)

    remove_stale_workdirs()
    workdir, owner_lock = claim_workdir()
    try:
        for predictor in predictors:
            write_model(workdir / "models", predictor, config)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        os.close(owner_lock)
        raise
    handle = _launch(workdir / "models", workdir, config, names, triton, max_body_bytes(predictors, config),
                     owner_lock, front)
    LOGGER.debug("serving %s at %s (gRPC %s, metrics %s)", ", ".join(names), handle.http_url, handle.grpc_url,
                 handle.metrics_url)
    return handle
