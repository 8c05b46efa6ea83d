"""No single request may take the endpoint down, and nothing of the server is open to other users.

One real `serve start` (the CLI, in a subprocess, serving a TF-IDF artifact) for the module:
the 60,000-deep body and a seeded fuzz of malformed bodies each get a one-line 4xx, tritonserver
never dies, and a good request then gets the in-process probabilities; the restricted endpoints
stay closed over HTTP and gRPC although every argument of every server process is readable;
the Python backend's shared memory is out of other users' reach. A second `serve start` is killed
with SIGKILL: the next start removes what it left, and nothing that is not ours.
"""

from __future__ import annotations

import fcntl
import http.client
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from serve.client import ServeClient
from serve.config import ServeConfig
from serve.server import free_ports, start_server
from tests.serve.helpers import NgramPredictor, command_line, descendants, raw_grpc_call, wait_until

REPO = Path(__file__).resolve().parents[2]
TEXTS = ["you stupid idiot", "thanks for the sources", "i will hurt you", "what a lovely day"]
GOOD = json.dumps({"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [2, 1],
                               "data": [["you stupid idiot"], ["what a lovely day"]]}]}).encode()
DEEP = (b'{"inputs":[{"name":"TEXT","datatype":"BYTES","shape":[1,1],"data":'
        + b"[" * 60000 + b'"x"' + b"]" * 60000 + b"}]}")


def _start_cli(artifact: Path, tmp: Path, *extra: str) -> tuple[subprocess.Popen, list[int], str]:
    """`serve start ARTIFACT` on free ports; returns once it prints its serving line."""
    ports = free_ports(3)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "serve", "start", str(artifact), "--http-port", str(ports[0]), "--grpc-port",
         str(ports[1]), "--metrics-port", str(ports[2]), "--log-file", str(tmp / "triton.log"), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(180)
    if not line or not line[0].startswith("serving "):
        proc.kill()
        raise AssertionError(f"serve start did not come up: {line} {proc.communicate()[1][-2000:]}")
    return proc, ports, line[0]


def _tritonserver(pid: int) -> int:
    """The tritonserver process below ``pid``."""
    found = [p for p in descendants(pid) if Path(command_line(p)[0]).name == "tritonserver"]
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """A running `serve start` of a TF-IDF artifact: (process, ports, artifact, tritonserver pid)."""
    from tests.fixtures import write_tfidf_artifact

    tmp = tmp_path_factory.mktemp("protection")
    artifact = write_tfidf_artifact(tmp / "tfidf")
    proc, ports, _ = _start_cli(artifact, tmp)
    try:
        yield proc, ports, artifact, _tritonserver(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def _send(port: int, raw: bytes) -> tuple[int, str]:
    """Send raw bytes as one request on a new connection; (status, body) of the answer, 0 if none."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)  # a body shorter than its Content-Length ends here
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head:
        return 0, ""
    return int(head.split(b" ", 2)[1]), body.decode("utf-8", "replace")


def _post(body: bytes, model: str = "tfidf") -> bytes:
    return (f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def _malformed_bodies() -> dict[str, bytes]:
    """Families of malformed requests (raw HTTP), seeded."""
    rng = random.Random(12)
    cases = {
        "60,000 levels deep": _post(DEEP),
        "60,000 levels deep in parameters": _post(b'{"parameters":{"p":' + b"{\"a\":" * 60000 + b"1" + b"}" * 60000
                                                  + b'},"inputs":[]}'),
        "not JSON": _post(b"hello, triton"),
        "empty": _post(b""),
        "JSON of the wrong structure: a list": _post(b"[1, 2, 3]"),
        "JSON of the wrong structure: inputs an object": _post(b'{"inputs": {"name": "TEXT"}}'),
        "JSON of the wrong structure: data a string": _post(
            b'{"inputs":[{"name":"TEXT","datatype":"BYTES","shape":[1,1],"data":"abc"}]}'),
        "JSON of the wrong structure: negative shape": _post(
            b'{"inputs":[{"name":"TEXT","datatype":"BYTES","shape":[-1,1],"data":["a"]}]}'),
        "JSON of the wrong structure: outputs a number": _post(
            b'{"inputs":[{"name":"TEXT","datatype":"BYTES","shape":[1,1],"data":["a"]}],"outputs":5}'),
        "numbers where BYTES are declared": _post(
            b'{"inputs":[{"name":"TEXT","datatype":"BYTES","shape":[2,1],"data":[1,2]}]}'),
        "objects where BYTES are declared": _post(
            b'{"inputs":[{"name":"TEXT","datatype":"BYTES","shape":[1,1],"data":[{"a":1}]}]}'),
        "a parameter Triton reads, of the wrong type": _post(
            b'{"inputs":[{"name":"TEXT","datatype":"BYTES","shape":[1,1],"data":["a"]}],'
            b'"parameters":{"priority":-1}}'),
        "huge Content-Length": (b"POST /v2/models/tfidf/infer HTTP/1.1\r\nHost: x\r\n"
                                b"Content-Length: 999999999999\r\n\r\n{"),
        "Content-Length longer than the body": (b"POST /v2/models/tfidf/infer HTTP/1.1\r\nHost: x\r\n"
                                                b"Content-Length: 500\r\n\r\n" + GOOD),
        "bad chunked encoding": (b"POST /v2/models/tfidf/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                                 b"\r\nzz\r\n" + GOOD + b"\r\n0\r\n\r\n"),
        "chunk longer than its size": (b"POST /v2/models/tfidf/infer HTTP/1.1\r\nHost: x\r\n"
                                       b"Transfer-Encoding: chunked\r\n\r\n4\r\n" + GOOD + b"\r\n0\r\n\r\n"),
        "not HTTP": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)),
        "the binary extension with a JSON length past the body": (
            b"POST /v2/models/tfidf/infer HTTP/1.1\r\nHost: x\r\nInference-Header-Content-Length: 900\r\n"
            b"Content-Length: %d\r\n\r\n" % len(GOOD) + GOOD),
    }
    for cut in sorted(rng.sample(range(1, len(GOOD) - 1), 25)):
        cases[f"truncated at byte {cut}"] = _post(GOOD[:cut])
    for k in range(60):  # random bytes flipped: mostly malformed, sometimes still a valid request
        body = bytearray(GOOD)
        for _ in range(rng.randint(1, 4)):
            body[rng.randrange(len(body))] = rng.choice(b'[]{}",:\\0123456789x \x00\xff')
        cases[f"mutation {k}"] = _post(bytes(body))
    for k in range(10):
        cases[f"random bytes {k}"] = _post(rng.randbytes(rng.randint(1, 3000)))
    return cases


def test_deep_and_malformed_bodies_get_one_line_4xx_and_the_server_keeps_serving(cli):
    """The issue's crash (a 120 KB body 60,000 levels deep killed tritonserver with signal 11) and a
    fuzz of malformed bodies; then a good request gets the in-process probabilities."""
    from export.runtime import load

    proc, ports, artifact, triton_pid = cli
    statuses = {}
    for name, raw in _malformed_bodies().items():
        status, body = _send(ports[0], raw)
        statuses[name] = status
        assert status != 0 and status < 500, f"{name}: {status} {body[:300]}"
        if status >= 400:
            message = json.loads(body)["error"]
            assert "\n" not in message and "Traceback" not in message, name
    must_refuse = [name for name in statuses if not name.startswith(("mutation", "random"))]
    assert all(400 <= statuses[name] < 500 for name in must_refuse), {n: statuses[n] for n in must_refuse}
    assert statuses["60,000 levels deep"] == 400 and statuses["numbers where BYTES are declared"] == 400
    assert statuses["huge Content-Length"] == 413
    assert sum(400 <= s < 500 for s in statuses.values()) > 0.8 * len(statuses)

    assert proc.poll() is None and _tritonserver(proc.pid) == triton_pid  # nothing crashed, nothing restarted
    status, body = _send(ports[0], _post(GOOD))
    assert status == 200
    expected = load(artifact).predict(["you stupid idiot", "what a lovely day"])
    served = json.loads(body)["outputs"]
    probs = next(np.array(o["data"]).reshape(o["shape"]) for o in served if o["name"] == "PROBABILITIES")
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)
    with ServeClient(f"http://127.0.0.1:{ports[0]}", model="tfidf") as client:  # binary tensors, keep-alive
        np.testing.assert_allclose(client.predict(TEXTS), load(artifact).predict(TEXTS), rtol=1e-5, atol=1e-6)


def test_restricted_endpoints_stay_closed_though_every_command_line_is_readable(cli):
    proc, ports, _, triton_pid = cli
    processes = [proc.pid, *descendants(proc.pid)]
    argv = [arg for pid in processes for arg in command_line(pid)]
    assert not [a for a in argv if re.search(r"[0-9a-f]{32}", a)], "a token-like value is on a command line"
    assert not [a for a in argv if "restricted-api" in a]  # Triton's HTTP is on a Unix socket, not a port
    (socket_arg,) = [a for a in command_line(triton_pid) if a.startswith("--http-address=unix:")]
    triton_socket = Path(socket_arg.split("unix:", 1)[1])
    assert triton_socket.is_socket() and triton_socket.stat().st_mode & 0o077 == 0
    assert triton_socket.parent.stat().st_mode & 0o777 == 0o700 and triton_socket.parent.stat().st_uid == os.getuid()
    (closed,) = [a for a in command_line(triton_pid) if a.startswith("--grpc-restricted-protocol=")]
    header, value = closed.split(":", 1)[1].split("=", 1)

    # HTTP: the front refuses them, also with the header the command line names.
    for method, path in [("GET", "/v2/logging"), ("POST", "/v2/logging"), ("GET", "/v2/trace/setting"),
                         ("POST", "/v2/repository/index"), ("POST", "/v2/repository/models/tfidf/unload"),
                         ("GET", "/v2/systemsharedmemory/status"), ("GET", "/v2/cudasharedmemory/status"),
                         ("GET", "/v2/models/tfidf/trace/setting")]:
        conn = http.client.HTTPConnection("127.0.0.1", ports[0], timeout=10)
        conn.request(method, path, body=b"{}" if method == "POST" else None, headers={header: value})
        response = conn.getresponse()
        assert response.status == 403, (path, response.status)
        assert "closed" in json.loads(response.read())["error"]
        conn.close()

    # gRPC: Triton asks for a header no gRPC request can carry (upper-case letters).
    assert header != header.lower()
    with grpcclient.InferenceServerClient(f"127.0.0.1:{ports[1]}") as client:
        assert client.is_server_live()
        for call in (client.get_log_settings, lambda **kw: client.get_trace_settings(**kw),
                     lambda **kw: client.get_system_shared_memory_status(**kw),
                     lambda **kw: client.get_model_repository_index(**kw)):
            with pytest.raises(InferenceServerException, match="restricted"):
                call(headers={f"triton-grpc-protocol-{header.lower()}": value})
    live = raw_grpc_call(ports[1], "/inference.GRPCInferenceService/ServerLive")
    assert any(kind == 0 and len(payload) > 5 for kind, payload in live)  # the raw client works: a reply
    refused = raw_grpc_call(ports[1], "/inference.GRPCInferenceService/LogSettings",
                            [(f"triton-grpc-protocol-{header}", value)])
    assert not any(kind == 0 and b"log_file" in payload for kind, payload in refused)
    assert any(kind in (3, 7) for kind, _ in refused)  # the stream (or connection) is torn down


def test_shared_memory_holding_request_texts_is_out_of_other_users_reach(cli):
    proc, ports, _, triton_pid = cli
    prefix = next(a for a in command_line(triton_pid) if "shm-region-prefix-name=" in a).rsplit("=", 1)[1]
    with ServeClient(f"http://127.0.0.1:{ports[0]}", model="tfidf") as client:
        client.predict(TEXTS)
    own = Path(f"/proc/{triton_pid}/root/dev/shm")
    if own.stat().st_dev != Path("/dev/shm").stat().st_dev:  # a /dev/shm of its own
        assert own.stat().st_mode & 0o777 == 0o700 and own.stat().st_uid == os.getuid()
        regions = list(own.glob(f"{prefix}*"))
        assert regions and not list(Path("/dev/shm").glob(f"{prefix}*"))  # invisible outside
        for pid in descendants(triton_pid):  # the stubs share it
            assert Path(f"/proc/{pid}/root/dev/shm").stat().st_dev == own.stat().st_dev
    else:  # the kernel refused namespaces: the regions are this user's only
        regions = list(Path("/dev/shm").glob(f"{prefix}*"))
        assert regions and all(r.stat().st_mode & 0o077 == 0 for r in regions)


def test_a_killed_serve_leaves_a_work_directory_the_next_start_removes_and_nothing_else(tmp_path):
    """`kill -9` of `serve start`: its tritonserver follows (parent-death signal), its work
    directory stays; the next start removes it, and leaves a foreign directory and a live one."""
    from tests.fixtures import write_tfidf_artifact

    proc, _, _ = _start_cli(write_tfidf_artifact(tmp_path / "tfidf"), tmp_path)
    try:
        triton_pid = _tritonserver(proc.pid)
        repository = next(a for a in command_line(triton_pid) if a.startswith("--model-repository="))
        workdir = Path(repository.split("=", 1)[1]).parent
        assert workdir.name.startswith("modcompress-serve-") and (workdir / "owner.lock").is_file()
        proc.kill()
        proc.communicate(timeout=30)
        assert wait_until(lambda: not Path(f"/proc/{triton_pid}").exists()
                          or "Z" in Path(f"/proc/{triton_pid}/stat").read_text().rsplit(")", 1)[1][:3],
                          timeout_s=60), "tritonserver outlived its `serve start`"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert workdir.is_dir()  # what kill -9 leaves behind

    root = workdir.parent
    foreign = root / f"modcompress-serve-foreign-{os.getpid()}"  # not made by serve: no owner lock
    foreign.mkdir()
    live = root / f"modcompress-serve-live-{os.getpid()}"  # a running server's: its lock is held
    live.mkdir()
    lock = os.open(live / "owner.lock", os.O_WRONLY | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        ports = free_ports(3)
        config = ServeConfig(http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2],
                             log_file=tmp_path / "next.log")
        with start_server([NgramPredictor("next")], config) as server:
            assert not workdir.exists()
            assert foreign.is_dir() and live.is_dir() and server._workdir.is_dir()
    finally:
        os.close(lock)
        for path in (foreign, live):
            for child in path.iterdir():
                child.unlink()
            path.rmdir()
