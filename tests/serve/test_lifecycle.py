"""Configuration errors, busy ports, a model that fails to load, `--labels-only`, SIGTERM draining
and a clean shutdown.

Three tests start tritonserver; the rest fail (on purpose) before Triton would start, or need none.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from compress.errors import ConfigError, UserError
from modcompress.cli import serve_main as main
from serve.backend_model import decode_texts
from serve.client import ClientError, ServeClient, parse_url
from serve.config import OUTPUT_LABELS, ServeConfig
from serve.server import (
    PortInUseError,
    check_ports_free,
    free_ports,
    start_server,
    use_own_libpython,
)
from tests.serve.helpers import NgramPredictor, descendants, labels_over, port_is_free, started_in, wait_until

REPO = Path(__file__).resolve().parents[2]
TEXTS = ["you stupid idiot", "thanks for the sources", "i will hurt you", "what a lovely day"]


@pytest.fixture
def busy_port():
    """A loopback port something listens on for the test's duration."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "serve", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=60)


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


# -- config and request validation (no server) --------------------------------------------

@pytest.mark.parametrize("field, kwargs", [
    ("http_port", {"http_port": 0}),
    ("grpc_port", {"grpc_port": 70000}),
    ("http_port/grpc_port/metrics_port", {"http_port": 9000, "grpc_port": 9000}),
    ("max_batch_size", {"max_batch_size": 0}),
    ("preferred_batch_sizes", {"max_batch_size": 8, "preferred_batch_sizes": (4, 16)}),
    ("max_queue_delay_us", {"max_queue_delay_us": -1}),
    ("instances", {"instances": 0}),
    ("host", {"host": ""}),
])
def test_serve_config_rejects_bad_values_naming_the_field(field, kwargs):
    with pytest.raises(ConfigError, match=f"^{field}:"):
        ServeConfig(**kwargs)


def test_decode_texts_accepts_utf8_and_rejects_the_rest():
    ok = np.array([["héllo".encode()], [b"world"]], dtype=np.object_)
    assert decode_texts(ok, 100) == ["héllo", "world"]
    for batch, words in [
        (np.zeros((0, 1), dtype=np.object_), "empty batch"),
        (np.array([[b"\xff"]], dtype=np.object_), "not valid UTF-8"),
        (np.array([[b"a"], [b" "]], dtype=np.object_), "text 1 of 2 is empty"),
        (np.array([[b"x" * 101]], dtype=np.object_), "limit is 100"),
        (None, "missing input"),
    ]:
        with pytest.raises(ValueError, match=words):
            decode_texts(batch, 100)


def test_use_own_libpython_puts_libdir_first_once(monkeypatch):
    libdir = sysconfig.get_config_var("LIBDIR")
    monkeypatch.setenv("LD_LIBRARY_PATH", f"/opt/other{os.pathsep}{libdir}")
    use_own_libpython()
    use_own_libpython()
    assert os.environ["LD_LIBRARY_PATH"].split(os.pathsep) == [libdir, "/opt/other"]
    child = {"LD_LIBRARY_PATH": "/opt/child"}  # the environment tritonserver gets; ours is left alone
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/other")
    use_own_libpython(child)
    assert child["LD_LIBRARY_PATH"].split(os.pathsep) == [libdir, "/opt/child"]
    assert os.environ["LD_LIBRARY_PATH"] == "/opt/other"


def test_parse_url():
    assert parse_url("http://127.0.0.1:9000") == ("http", "127.0.0.1:9000")
    assert parse_url("grpc://localhost") == ("grpc", "localhost:8001")
    assert parse_url("127.0.0.1:9001", protocol="grpc") == ("grpc", "127.0.0.1:9001")
    with pytest.raises(ClientError, match="scheme"):
        parse_url("ftp://127.0.0.1:9000")


@pytest.mark.parametrize("predictors, words", [
    (lambda: [NgramPredictor("a"), NgramPredictor("a")], "both named"),
    (lambda: [NgramPredictor("bad name!")], "not a valid Triton model name"),
    (lambda: [NgramPredictor("a", labels=["x;y", "z"])], "contain ';'"),
    (lambda: [NgramPredictor("a", max_batch_size=4)], "exceed model a's max batch size 4"),
    (lambda: [_Unpicklable("a")], "cannot be pickled"),
])
def test_start_server_rejects_bad_predictors_before_starting(predictors, words):
    http_port, grpc_port, metrics_port = free_ports(3)
    config = ServeConfig(http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                         preferred_batch_sizes=(8,))
    with pytest.raises(ConfigError, match=words):
        start_server(predictors(), config)


class _Unpicklable(NgramPredictor):
    """A predictor the server cannot send to its instances (a lambda inside, no artifact source)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.hook = lambda texts: texts


class _FailsToLoad(NgramPredictor):
    """Pickles fine, but unpickling it (in a Triton instance) raises."""

    def __reduce__(self):
        return (_refuse_to_load, ("weights file is corrupt",))


def _refuse_to_load(reason: str) -> None:
    raise RuntimeError(reason)


def test_artifact_predictor_is_sent_by_its_load_arguments_and_rebuilds_identically(tmp_path):
    from export.runtime import load
    from serve.backend_model import PICKLE_FILE, SPEC_FILE, load_predictor, save_predictor
    from tests.fixtures import write_tfidf_artifact

    predictor = load(write_tfidf_artifact(tmp_path / "tfidf"), threads=1)
    assert save_predictor(tmp_path, predictor) == SPEC_FILE and not (tmp_path / PICKLE_FILE).exists()
    spec = json.loads((tmp_path / SPEC_FILE).read_text())
    assert spec["artifact_dir"] == str((tmp_path / "tfidf").resolve()) and spec["threads"] == 1
    twin = load_predictor(tmp_path)
    np.testing.assert_array_equal(twin.predict(TEXTS), predictor.predict(TEXTS))

    other = tmp_path / "ngram"
    other.mkdir()
    assert save_predictor(other, NgramPredictor("n")) == PICKLE_FILE  # no source: pickled
    np.testing.assert_array_equal(load_predictor(other).predict(TEXTS), NgramPredictor("n").predict(TEXTS))


def test_model_that_fails_to_load_in_triton_is_one_line_and_leaves_nothing(tmp_path):
    import serve.server as server_mod
    from serve.workdir import remove_stale_workdirs

    ports = free_ports(3)
    config = ServeConfig(http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2],
                         log_file=tmp_path / "triton.log")
    remove_stale_workdirs()  # what start_server sweeps first (left by killed servers) is not this test's
    workdirs_before = set(Path(tempfile.gettempdir()).glob("modcompress-serve-*"))
    with pytest.raises(server_mod.ServeError) as info:
        start_server([_FailsToLoad("bad")], config)
    message = str(info.value)
    assert "\n" not in message and message.startswith("Triton failed to start:")
    assert "bad" in message and "weights file is corrupt" in message, message
    assert set(Path(tempfile.gettempdir()).glob("modcompress-serve-*")) == workdirs_before
    assert wait_until(lambda: all(port_is_free(p) for p in ports), timeout_s=10)
    assert not _processes_mentioning(str(tmp_path)), "a tritonserver or stub of this test is still running"


def _processes_mentioning(text: str) -> list[int]:
    """Live (non-zombie) processes whose command line contains ``text``."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if text.encode() in (proc / "cmdline").read_bytes() and not _gone(int(proc.name)):
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def test_a_killed_server_leaves_no_process_shared_memory_or_work_directory(tmp_path):
    """The path stop() takes when Triton overruns its exit timeout (or stop() is interrupted)."""
    ports = free_ports(3)
    config = ServeConfig(http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2], instances=2,
                         log_file=tmp_path / "triton.log")
    server = start_server([NgramPredictor("k")], config)
    try:
        processes = [server.pid, *descendants(server.pid)]
        assert len(processes) >= 3  # tritonserver and a stub per instance
        # tritonserver's /dev/shm is its own (where the kernel allows it), seen from here through /proc
        shm = Path(f"/proc/{server.pid}/root/dev/shm") if server.private_shm else Path("/dev/shm")
        regions = list(shm.glob(f"{server._shm_prefix}*"))
        assert regions, f"the Python backend's shared memory was expected under {shm}"
        server._kill()  # SIGKILL to the whole group: nothing drains, nothing cleans up after itself
    finally:
        server.stop()
    assert wait_until(lambda: all(_gone(p) for p in processes), timeout_s=10), "a stub outlived the kill"
    assert not any(region.exists() for region in regions)
    assert not list(Path("/dev/shm").glob(f"{server._shm_prefix}*"))
    assert not server._workdir.exists()
    assert wait_until(lambda: all(port_is_free(p) for p in ports), timeout_s=10)


def test_missing_stub_for_this_python_is_one_line_before_anything_starts(monkeypatch, tmp_path):
    import pytriton.utils.distribution as distribution

    import serve.server as server_mod

    monkeypatch.setattr(distribution, "get_stub_path", lambda version: tmp_path / "no-stub" / version)
    ports = free_ports(3)
    config = ServeConfig(http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2])
    workdirs_before = set(Path(tempfile.gettempdir()).glob("modcompress-serve-*"))
    with pytest.raises(server_mod.ServeError, match="no Python-backend stub for Python") as info:
        start_server([NgramPredictor("m")], config)
    assert "\n" not in str(info.value)
    assert set(Path(tempfile.gettempdir()).glob("modcompress-serve-*")) == workdirs_before


def test_first_error_names_the_model_and_drops_the_traceback():
    from serve.server import _first_error

    log = [
        'I1201 11:29:54.476256 26374 model_lifecycle.cc:472] "loading: bad:1"',
        'E1201 11:29:54.475095 26374 server.cc:241] "CudaDriverHelper has not been initialized."',
        'E1201 11:29:58.162860 26374 backend_model.cc:692] "ERROR: Failed to create instance: RuntimeError: x\\n\\nAt:"',
        'E1201 11:29:58.163045 26374 model_lifecycle.cc:642] "failed to load \'bad\' version 1: Internal: '
        'ValueError: path \\"C:\\\\n\\" is bad\\n\\nAt:\\n  /x.py(1): f"',
    ]
    assert _first_error(log) == 'failed to load \'bad\' version 1: Internal: ValueError: path "C:\\n" is bad'
    assert _first_error(log[:3]) == "ERROR: Failed to create instance: RuntimeError: x"
    assert _first_error(log[:2]) is None  # the CPU-only CUDA probe is not an error worth reporting


def test_batch_runner_applies_the_published_thresholds_and_answers_every_request():
    from serve.backend_model import BatchRunner

    predictor = NgramPredictor("n", labels=["a", "b", "c"])
    every_label = BatchRunner(predictor, ["PROBABILITIES", "LABELS"], 100, labels=["a", "b", "c"],
                              thresholds=[0.0, 0.0, 0.0])
    good = np.array([[b"you idiot"], [b"nice"]], dtype=np.object_)
    results = every_label.run([(good, []), (np.array([[b"   "]], dtype=np.object_), ["LABELS"]),
                               (np.array([[b"\xff"]], dtype=np.object_), [])])
    assert [r[0] for r in results[1:]] == ["INVALID_ARG", "INVALID_ARG"]  # empty text, bad UTF-8
    assert results[0]["LABELS"].tolist() == [[b"a;b;c"], [b"a;b;c"]]  # threshold 0: every label fires
    np.testing.assert_allclose(results[0]["PROBABILITIES"], predictor.predict(["you idiot", "nice"]))
    boom = every_label.run([(np.array([[b"boom: now"]], dtype=np.object_), []), (good, ["LABELS"])])
    assert [r[0] for r in boom] == ["INTERNAL", "INTERNAL"] and "boom" in boom[0][1]
    with pytest.raises(ValueError, match="publishes 2 labels"):
        BatchRunner(predictor, ["LABELS"], 100, labels=["a", "b"], thresholds=[0.5, 0.5])


def test_predictor_class_from_a_script_is_refused_before_pickling(tmp_path):
    from serve.backend_model import save_predictor

    script_class = type("ScriptPredictor", (NgramPredictor,), {"__module__": "__main__"})
    with pytest.raises(TypeError, match="__main__"):
        save_predictor(tmp_path, script_class("s"))
    assert not list(tmp_path.iterdir())


# -- busy ports ----------------------------------------------------------------------------

def test_port_in_use_is_a_one_line_user_error(busy_port):
    http_port, metrics_port = free_ports(2)
    config = ServeConfig(http_port=http_port, grpc_port=busy_port, metrics_port=metrics_port)
    with pytest.raises(PortInUseError) as info:
        start_server([NgramPredictor()], config)
    assert isinstance(info.value, UserError)
    message = str(info.value)
    assert f"port {busy_port} on 127.0.0.1 (--grpc-port) is already in use" in message and "\n" not in message
    check_ports_free("127.0.0.1", {"http": http_port, "metrics": metrics_port})  # nothing was left behind


def test_cli_port_in_use_exits_2_with_one_line(busy_port, tmp_path):
    grpc_port, metrics_port = free_ports(2)
    result = _run_cli("start", str(tmp_path), "--http-port", str(busy_port), "--grpc-port", str(grpc_port),
                      "--metrics-port", str(metrics_port))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: port {busy_port} on 127.0.0.1 (--http-port) is already in use; stop what listens there "
        f"or choose another port"]


def test_cli_missing_artifact_exits_2_with_one_line(tmp_path):
    missing = tmp_path / "no-such-artifact"
    result = _run_cli("start", str(missing))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: artifact {missing} does not exist")


def test_cli_bad_flag_value_exits_2_with_one_line(tmp_path, capsys):
    assert main(["start", str(tmp_path), "--preferred-batch-sizes", "4,eight"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: preferred_batch_sizes:")


def test_client_and_check_against_nothing_are_one_line(capsys):
    (port,) = free_ports(1)
    with ServeClient(f"http://127.0.0.1:{port}", model="m", timeout_s=5) as client:
        assert not client.live() and not client.ready()
        with pytest.raises(ClientError, match="cannot reach"):
            client.labels()
    assert main(["check", f"grpc://127.0.0.1:{port}", "--text", "hi", "--model", "m", "--timeout", "5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error:" in err[0]


# -- a real server: labels only, SIGTERM drains, clean exit ------------------------------------

def test_labels_only_server_drains_on_sigterm_and_exits_cleanly(tmp_path):
    ports = free_ports(3)
    (tmp_path / "started").mkdir()
    served = NgramPredictor("tox", slow_s=1.5, started_dir=tmp_path / "started")
    reference = NgramPredictor("tox")
    config = ServeConfig(http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2], labels_only=True,
                         exit_timeout_s=20, log_file=tmp_path / "triton.log")
    server = start_server([served], config)
    try:
        pid = server.pid
        assert pid and not _gone(pid)
        processes = [pid, *descendants(pid)]  # tritonserver, its Python stubs and their helpers
        assert len(processes) >= 2
        with ServeClient(server.http_url) as client:  # one model: found without --model
            assert client.model == "tox" and client.outputs() == [OUTPUT_LABELS]
            assert client.predict_labels(TEXTS) == labels_over(reference.predict(TEXTS), reference)
            with pytest.raises(ClientError, match="labels-only"):
                client.predict(TEXTS)
        conn = http.client.HTTPConnection("127.0.0.1", ports[0], timeout=10)
        body = {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1, 1], "data": ["x"]}],
                "outputs": [{"name": "PROBABILITIES"}]}
        conn.request("POST", "/v2/models/tox/infer", body=json.dumps(body))
        response = conn.getresponse()
        assert response.status == 400 and "PROBABILITIES" in json.loads(response.read())["error"]
        conn.close()

        # serve() blocks in this (main) thread; a helper starts a slow request, then sends SIGTERM.
        slow_text = ["slow: please drain me"]
        results: dict[str, object] = {}
        initial_handler = signal.getsignal(signal.SIGTERM)

        def slow_request() -> None:
            with ServeClient(server.http_url, model="tox") as client:
                results["slow"] = client.predict_labels(slow_text)

        def drive() -> None:
            if not wait_until(lambda: signal.getsignal(signal.SIGTERM) is not initial_handler, timeout_s=10):
                results["error"] = "serve() did not install a SIGTERM handler"
                server.stop()
                return
            keep_alive = http.client.HTTPConnection("127.0.0.1", ports[0], timeout=10)  # open before SIGTERM
            keep_alive.request("GET", "/v2/health/ready")
            keep_alive.getresponse().read()
            request = threading.Thread(target=slow_request)
            request.start()
            if not wait_until(lambda: bool(started_in(tmp_path / "started")), timeout_s=10):
                results["error"] = "the slow request never reached the model"
            # the slow request is inside the model now
            os.kill(os.getpid(), signal.SIGTERM)
            if not wait_until(lambda: server._front.draining, timeout_s=10):
                results["error"] = "SIGTERM did not start draining"
            keep_alive.request("POST", "/v2/models/tox/infer", body=json.dumps(body))  # new work: refused
            refused = keep_alive.getresponse()
            results["refused"] = (refused.status, refused.getheader("Connection"), json.loads(refused.read())["error"])
            results["slow_in_flight"] = request.is_alive()
            keep_alive.close()

            def grpc_refused() -> bool:
                try:
                    with ServeClient(server.grpc_url, model="tox", timeout_s=5) as client:
                        client.predict_labels(["new gRPC work"])
                except ClientError:
                    return True
                return False

            results["grpc_refused"] = wait_until(grpc_refused, timeout_s=10)  # once Triton is told to drain
            request.join(30)

        driver = threading.Thread(target=drive)
        driver.start()
        code = server.serve(poll_s=0.2)
        driver.join(30)
    finally:
        server.stop()

    assert "error" not in results
    assert code == 0
    assert signal.getsignal(signal.SIGTERM) is initial_handler  # restored
    assert results["slow"] == labels_over(reference.predict(slow_text), reference)  # drained, not dropped
    # while it drained, a new request on a connection opened before SIGTERM got 503 and the connection closed
    status, connection, message = results["refused"]
    assert (status, connection) == (503, "close") and "shutting down" in message and results["slow_in_flight"]
    assert results["grpc_refused"]
    assert wait_until(lambda: all(_gone(p) for p in processes), timeout_s=10), "processes outlived stop()"
    assert all(port_is_free(p) for p in ports)


def test_serve_start_cli_serves_an_artifact_and_exits_0_on_sigterm(tmp_path):
    """The command users run: `serve start ARTIFACT`, one request, SIGTERM -> "stopped", exit 0."""
    from export.runtime import load
    from tests.fixtures import write_tfidf_artifact

    artifact = write_tfidf_artifact(tmp_path / "tfidf")
    ports = free_ports(3)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "serve", "start", str(artifact), "--http-port", str(ports[0]), "--grpc-port",
         str(ports[1]), "--metrics-port", str(ports[2]), "--log-file", str(tmp_path / "triton.log")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        # Wait for the CLI's own "serving" line: Triton answers ready a moment before the CLI is
        # serving, and a SIGTERM in between is (correctly) a stop while starting.
        first_line: list[str] = []
        reader = threading.Thread(target=lambda: first_line.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(120)
        assert first_line and first_line[0].startswith("serving tfidf at http://127.0.0.1:"), (
            first_line, proc.poll(), proc.stderr.read() if proc.poll() is not None else "")
        with ServeClient(f"http://127.0.0.1:{ports[0]}", model="tfidf") as client:
            served = client.predict(TEXTS)
        np.testing.assert_allclose(served, load(artifact).predict(TEXTS), rtol=1e-5, atol=1e-6)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert out.strip() == "stopped"  # after the "serving" line read above
    assert "Traceback" not in err
    assert wait_until(lambda: all(port_is_free(p) for p in ports), timeout_s=10)


def test_stop_on_signals_remembers_sigterm_and_sigint_and_restores_the_handlers():
    from serve.server import stop_on_signals

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in (signal.SIGTERM, signal.SIGINT):
        with stop_on_signals() as stop:
            assert not stop.is_set()
            os.kill(os.getpid(), sig)  # neither ends the process nor raises KeyboardInterrupt here
            assert stop.wait(5)
        assert {s: signal.getsignal(s) for s in before} == before
    errors: list[BaseException] = []

    def elsewhere() -> None:
        try:
            with stop_on_signals():
                pass
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join(10)
    assert len(errors) == 1 and "main thread" in str(errors[0])


class _FakeServer:
    """What `serve start` gets back from a patched start_server: records stop() and serve() calls."""

    models = ["tfidf"]

    def __init__(self, events: list[str]) -> None:
        self.events = events

    def stop(self) -> None:  # idempotent, as ServerHandle.stop is
        if "stop" not in self.events:
            self.events.append("stop")

    def serve_until(self, *_a: object) -> int:  # pragma: no cover - reached only if the early signal were lost
        self.events.append("serve")
        return 0


def _signalled_start_cli(tmp_path, monkeypatch, events: list[str]) -> list[str]:
    """Patch start_server to get a SIGTERM while starting; returns the `serve start` args for a tfidf artifact."""
    import serve.server as server_mod
    from tests.fixtures import write_tfidf_artifact

    def start_and_get_signalled(predictors, config):
        os.kill(os.getpid(), signal.SIGTERM)  # delivered to the handler before this returns
        events.append("started")
        return _FakeServer(events)

    monkeypatch.setattr(server_mod, "start_server", start_and_get_signalled)
    artifact = write_tfidf_artifact(tmp_path / "tfidf")
    ports = [str(p) for p in free_ports(3)]
    return ["start", str(artifact), "--http-port", ports[0], "--grpc-port", ports[1], "--metrics-port", ports[2]]


def test_serve_start_cli_sigterm_while_starting_stops_cleanly_and_exits_0(tmp_path, monkeypatch, capsys):
    """A SIGTERM that lands while models load must not kill the CLI half-started (exit 143, Triton orphaned)."""
    events: list[str] = []
    args = _signalled_start_cli(tmp_path, monkeypatch, events)
    before = signal.getsignal(signal.SIGTERM)
    assert main(args) == 0
    assert events == ["started", "stop"]
    assert "stopped before serving" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGTERM) is before  # our handler is gone again


def test_serve_start_threads_reach_the_loader_and_bad_values_exit_2(tmp_path, monkeypatch, capsys):
    import export.runtime

    loaded: list[dict] = []

    def fake_load(directory, **kwargs):
        loaded.append(kwargs)
        return object()

    monkeypatch.setattr(export.runtime, "load", fake_load)
    args = _signalled_start_cli(tmp_path, monkeypatch, [])  # stops right after starting: nothing to serve here
    assert main([*args, "--threads", "1", "--instances", "2"]) == 0
    assert loaded == [{"backend": "auto", "threads": 1}]  # once; each instance loads its own copy
    capsys.readouterr()
    assert main([*args, "--threads", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--threads must be >= 1" in err


# -- supervision, stale work directories, shared memory, the bind address ------------------------

def test_a_crashed_tritonserver_is_restarted_and_serves_the_same_results(tmp_path, monkeypatch):
    """Second line of defence: if tritonserver dies anyway (here: SIGSEGV), the supervisor restarts
    it within seconds while HTTP requests get 503/502 instead of hanging; a server that keeps dying
    ends `serve_until` with one line."""
    import serve.server as server_mod

    reference = NgramPredictor("crash")
    ports = free_ports(3)
    config = ServeConfig(http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2], exit_timeout_s=5,
                         log_file=tmp_path / "triton.log")
    stop, outcome = threading.Event(), {}

    def serve() -> None:
        try:
            outcome["code"] = server.serve_until(stop, poll_s=0.2)
        except UserError as exc:
            outcome["error"] = str(exc)

    def same_results() -> bool:
        try:
            with ServeClient(server.http_url, model="crash", timeout_s=5) as client:
                return bool(np.allclose(client.predict(TEXTS), reference.predict(TEXTS), atol=1e-6))
        except ClientError as exc:
            assert exc.status in ("502", "503", None), exc  # down for now: said so at once
            return False

    server = start_server([NgramPredictor("crash")], config)
    try:
        serving = threading.Thread(target=serve)
        serving.start()
        first, killed = server.pid, time.monotonic()
        os.kill(first, signal.SIGSEGV)
        assert wait_until(lambda: server.pid != first and same_results(), timeout_s=60)
        assert time.monotonic() - killed < 30  # seconds (a model load), even on a busy machine
        assert wait_until(lambda: server.restarts == 1, timeout_s=10) and not outcome  # counted once it is ready

        monkeypatch.setattr(server_mod, "MAX_RESTARTS_PER_MINUTE", 1)  # the next death is one too many
        os.kill(server.pid, signal.SIGKILL)
        serving.join(60)
        assert "error" in outcome and "\n" not in outcome["error"]
        assert outcome["error"].startswith("Triton died 2 times within a minute (last: signal 9 (SIGKILL))")
    finally:
        stop.set()
        server.stop()
    assert wait_until(lambda: all(port_is_free(p) for p in ports), timeout_s=10)


def test_remove_stale_workdirs_removes_only_dead_owners_directories(tmp_path):
    import fcntl

    from serve.workdir import remove_stale_workdirs

    def workdir(name: str, lock: bool) -> Path:
        path = tmp_path / f"modcompress-serve-{name}"
        path.mkdir()
        (path / "models").mkdir()
        if lock:
            (path / "owner.lock").write_text("1\n")
        return path

    stale, foreign, live = workdir("stale", True), workdir("foreign", False), workdir("live", True)
    (stale / "shm-prefix").write_text("modcompress_test_stale_")
    region = Path("/dev/shm") / f"modcompress_test_stale_{os.getpid()}"
    region.write_bytes(b"texts")
    held = os.open(live / "owner.lock", os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)
    other = tmp_path / "other"
    other.mkdir()
    (tmp_path / "modcompress-serve-link").symlink_to(other)  # a symlink: never followed
    (other / "owner.lock").write_text("1\n")
    (tmp_path / "modcompress-serve-file").write_text("a file")
    try:
        assert remove_stale_workdirs(tmp_path) == [stale]
    finally:
        os.close(held)
        region.unlink(missing_ok=True)
    assert not stale.exists() and not region.exists()
    assert foreign.is_dir() and live.is_dir() and other.is_dir() and (tmp_path / "modcompress-serve-file").is_file()
    assert remove_stale_workdirs(tmp_path) == [live]  # its owner is gone now


def test_tighten_shm_regions_makes_only_our_regions_private():
    from serve.isolation import tighten_shm_regions

    ours = Path("/dev/shm") / f"modcompress_tighten_{os.getpid()}_a"
    other = Path("/dev/shm") / f"other_tighten_{os.getpid()}"
    for path in (ours, other):
        path.write_bytes(b"x")
        path.chmod(0o644)
    try:
        tighten_shm_regions(f"modcompress_tighten_{os.getpid()}_")
        assert ours.stat().st_mode & 0o777 == 0o600 and other.stat().st_mode & 0o777 == 0o644
    finally:
        ours.unlink()
        other.unlink()


@pytest.mark.parametrize("host, shown, warned", [
    ("127.0.0.1", "at http://127.0.0.1:8000 (gRPC grpc://127.0.0.1:8001", None),
    ("localhost", "at http://localhost:8000 (gRPC", None),
    ("::1", "at http://[::1]:8000 (gRPC grpc://[::1]:8001", None),
    ("0.0.0.0", "at http://0.0.0.0:8000 on all interfaces (from elsewhere e.g. http://", "on all interfaces"),
    ("::", "at http://[::]:8000 on all interfaces", "on all interfaces"),
    ("10.1.2.3", "at http://10.1.2.3:8000 (gRPC grpc://10.1.2.3:8001", "on 10.1.2.3"),
])
def test_the_serving_line_shows_the_bind_address_and_exposure_is_warned(host, shown, warned):
    from serve.server import exposure_warning, serving_line

    config = ServeConfig(host=host)
    assert serving_line(config, ["m"]).startswith(f"serving m {shown}")
    warning = exposure_warning(config)
    if warned is None:
        assert warning is None
    else:
        assert warning.startswith(f"warning: the endpoints listen {warned} and have no authentication")
        assert "\n" not in warning
