"""The HTTP front and the infer-body check on their own: parsing, limits, refusals, forwarding,
draining, a dead upstream. Triton is replaced by a small HTTP server on a Unix socket that answers
every request with its own bytes (so a test sees exactly what was forwarded); the real server is
in test_protection.py."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

from serve.front import BadRequestError, ChunkedBody, HttpFront, parse_head
from serve.infer_body import MAX_DEPTH, BadBodyError, check_infer_body, depth_over
from serve.server import free_ports
from tests.serve.helpers import read_request, wait_until

GOOD = json.dumps({"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [2, 1], "data": [["a"], ["b"]]}],
                   "outputs": [{"name": "PROBABILITIES"}]}).encode()
INFER = "/v2/models/m/infer"


class EchoUpstream:
    """An HTTP/1.1 server on a Unix socket: 200 with the request it got (head and body) as the body.

    ``hold`` (an Event), when set, makes it wait for ``release`` before answering; ``close_after``
    closes each connection after that many answers (a stale keep-alive connection).
    """

    def __init__(self, path: Path, close_after: int | None = None) -> None:
        self.path = str(path)
        self.requests: list[bytes] = []
        self.hold = threading.Event()
        self.release = threading.Event()
        self.holding = threading.Event()
        self.close_after = close_after
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(self.path)
        self._sock.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer, answered = b"", 0
        with conn:
            while (read := read_request(conn, buffer)) is not None:
                request, buffer = read
                self.requests.append(request)
                if self.hold.is_set():
                    self.holding.set()
                    self.release.wait(30)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n"
                             % len(request) + request)
                answered += 1
                if self.close_after and answered >= self.close_after:
                    return

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def upstream(tmp_path):
    server = EchoUpstream(tmp_path / "triton.sock")
    yield server
    server.close()


@pytest.fixture
def front(upstream):
    (port,) = free_ports(1)
    front = HttpFront("127.0.0.1", port, upstream.path, max_body_bytes=4096, idle_timeout_s=60)
    front.start()
    yield front
    front.close()


def _connect(front: HttpFront) -> socket.socket:
    return socket.create_connection(("127.0.0.1", front.port), timeout=10)


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response from ``sock``: status, headers (lower-case names), body. Reads no byte past it,
    so pipelined responses are read one by one."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        data = sock.recv(1)
        if not data:
            raise ConnectionError(f"closed after {head!r}")
        head += data
    lines = head[:-4].decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    body = b""
    while len(body) < int(headers.get("content-length", 0)):
        body += sock.recv(int(headers["content-length"]) - len(body))
    return int(lines[0].split()[1]), headers, body


def _exchange(front: HttpFront, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    with _connect(front) as sock:
        sock.sendall(raw)
        return _read_response(sock)


def _post(path: str, body: bytes, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def _refused(port: int) -> bool:
    """True if nothing accepts connections on 127.0.0.1:port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def _closed(sock: socket.socket) -> bool:
    """True once the peer has closed ``sock`` (EOF or reset)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


# -- the infer-body check ----------------------------------------------------------------------

def _tensor(**fields) -> bytes:
    return json.dumps({"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1, 1], "data": ["a"], **fields}]}
                      ).encode()


@pytest.mark.parametrize("body, words", [
    (b"", "empty"),
    (b"hello", "not valid JSON"),
    (GOOD[:-7], "ends too early"),
    (b"\xef\xbb\xbf" + GOOD, "byte-order mark"),
    (b'{"inputs": [], "x": NaN}', "NaN"),
    (b'{"inputs": [{"name": "TEXT", "data": ["\xff"]}]}', "UTF-8"),
    (b"[" * 60000 + b"]" * 60000, "nested 60000 levels"),
    (b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1), f"at most {MAX_DEPTH}"),
    (b"[1, 2]", "must be an object"),
    (b'{"id": 5, "inputs": []}', "'id' must be a string"),
    (b'{"parameters": [], "inputs": []}', "'parameters' must be an object"),
    (b'{"parameters": {"p": {"q": 1}}, "inputs": []}', "parameter 'p'"),
    (b"{}", "no 'inputs'"),
    (b'{"inputs": {"name": "TEXT"}}', "'inputs' must be a list"),
    (b'{"inputs": ["TEXT"]}', "input 0 must be an object"),
    (b'{"inputs": [{"datatype": "BYTES", "shape": [1], "data": ["a"]}]}', "no 'name'"),
    (_tensor(name=7), "'name' must be a string"),
    (_tensor(shape="1,1"), "'shape' must be a list"),
    (_tensor(shape=[1, -1]), "'shape' must be a list"),
    (_tensor(shape=[1.0, 1]), "'shape' must be a list"),
    (_tensor(shape=[True, 1]), "'shape' must be a list"),
    (_tensor(data="a"), "'data' must be a list"),
    (_tensor(data=[5]), "BYTES, but its data holds a number"),
    (_tensor(data=[None]), "BYTES, but its data holds null"),
    (_tensor(data=[[["a"]]]), "nested deeper than its shape's 2"),
    (_tensor(datatype="FP32", data=["a"]), "FP32, but its data holds a string"),
    (_tensor(datatype="INT64", data=[1.5]), "INT64, but its data holds a number; send integers"),
    (_tensor(datatype="BOOL", data=[1]), "BOOL, but its data holds a number"),
    (_tensor(parameters={"binary_data_size": -5}), "'binary_data_size' must be a non-negative integer"),
    (_tensor(parameters={"binary_data_size": "9"}), "'binary_data_size' must be a non-negative integer"),
    (b'{"inputs": [], "outputs": [{"name": "X", "parameters": {"binary_data": "yes"}}]}',
     "'binary_data' must be a boolean"),
    (b'{"inputs": [], "outputs": [{"name": "X", "parameters": {"classification": -3}}]}',
     "'classification' must be a non-negative integer"),
    (b'{"inputs": [], "parameters": {"sequence_id": -1}}', "'sequence_id' must be a string or a non-negative"),
    (b'{"inputs": [], "parameters": {"priority": 18446744073709551616}}', "'priority' must be a non-negative"),
    (b'{"inputs": [], "parameters": {"sequence_end": 1}}', "'sequence_end' must be a boolean"),
    (b'{"inputs": [], "outputs": {"name": "X"}}', "'outputs' must be a list"),
    (b'{"inputs": [], "outputs": [{"name": 1}]}', "output 0 must be an object with a string 'name'"),
])
def test_malformed_infer_bodies_are_refused_with_one_line(body, words):
    with pytest.raises(BadBodyError) as info:
        check_infer_body(body)
    message = str(info.value)
    assert words in message and "\n" not in message


def test_well_formed_bodies_pass_and_the_binary_extension_is_checked_on_its_json_part():
    check_infer_body(GOOD)
    check_infer_body(_tensor(datatype="FP32", shape=[1, 2], data=[1, 2.5]))
    check_infer_body(_tensor(datatype="INT8", shape=[2], data=[1, 2]))
    check_infer_body(b'{"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1, 1], "data": ["[[[[{{{{"]}]}')
    header = json.dumps({"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1, 1],
                                     "parameters": {"binary_data_size": 5}}]}).encode()
    check_infer_body(header + b"\x01\x00\x00\x00[", json_length=len(header))  # raw tensor bytes are not JSON
    with pytest.raises(BadBodyError, match=f"Inference-Header-Content-Length is {len(header) + 9} but the body "
                                           f"has only {len(header)} bytes"):
        check_infer_body(header, json_length=len(header) + 9)
    with pytest.raises(BadBodyError, match="not valid JSON"):
        check_infer_body(header + b"[", json_length=len(header) + 1)


def test_depth_over_ignores_brackets_inside_strings_and_needs_no_recursion():
    assert depth_over(b'["[[[[[[[[[[[["]' * 10, limit=3) is None
    assert depth_over(b'[[[["\\"[[["]]]]', limit=3) == 4
    assert depth_over(b"[" * 1_000_000, limit=MAX_DEPTH) == 1_000_000
    assert depth_over(b"{}" * 1000, limit=2) is None


# -- request heads and chunked bodies ----------------------------------------------------------

def test_parse_head_keeps_the_raw_head_only_when_it_can_go_on_unchanged():
    plain = b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"
    head = parse_head(plain)
    assert (head.method, head.path, head.content_length, head.keep_alive, head.raw) == (
        "POST", "/v2/models/m/infer", 5, True, plain)
    head = parse_head(b"GET /v2/health/ready?x=1 HTTP/1.0\r\nConnection: keep-alive\r\nX-Drop: 1\r\n"
                      b"Connection: X-Drop\r\n\r\n")
    assert head.path == "/v2/health/ready" and head.keep_alive and head.raw is None and head.headers == []
    head = parse_head(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"
                      b"Inference-Header-Content-Length: 12\r\n\r\n")
    assert head.chunked and not head.keep_alive and head.json_length == 12 and head.raw is None


@pytest.mark.parametrize("raw, status", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET /x HTTP/2.0\r\n\r\n", 505),
    (b"GET /x HTTP/1.1\r\nno colon\r\n\r\n", 400),
    (b"GET /x HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    (b"GET /x HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 400),
    (b"GET /x HTTP/1.1\r\nX: a\nContent-Length: 5\r\n\r\n", 400),  # a bare LF: smuggling
    (b"GET /x HTTP/1.1\r\nX: a\rb\r\n\r\n", 400),
    (b"GET /x HTTP/1.1\r\nX: a\x00b\r\n\r\n", 400),
    (b"GET /x\x00y HTTP/1.1\r\n\r\n", 400),
    (b"GET /x\ny HTTP/1.1\r\n\r\n", 400),
    (b"POST /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
    (b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
    # two JSON-part lengths: the front and Triton could split the body at different places
    (b"POST /x HTTP/1.1\r\nInference-Header-Content-Length: 2\r\nInference-Header-Content-Length: 2\r\n\r\n", 400),
    (b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
])
def test_malformed_heads_are_refused(raw, status):
    with pytest.raises(BadRequestError) as info:
        parse_head(raw)
    assert info.value.status == status and info.value.close


def test_chunked_body_decodes_in_pieces_and_refuses_bad_framing():
    chunks = ChunkedBody(limit=100)
    buffer = bytearray(b"5;ext=1\r\nhello\r\n6\r\n wor")
    assert not chunks.feed(buffer)
    buffer += b"ld\r\n0\r\nTrailer: x\r\n\r\n"
    assert chunks.feed(buffer) and bytes(chunks.body) == b"hello world" and not buffer
    for raw, status in [(b"zz\r\n", 400), (b"5\r\nhelloX\r\n", 400), (b"65\r\n", 413)]:
        with pytest.raises(BadRequestError) as info:
            ChunkedBody(limit=100).feed(bytearray(raw))
        assert info.value.status == status


# -- the front, against an echoing upstream ----------------------------------------------------

def test_a_good_request_is_forwarded_unchanged_on_one_upstream_connection(front, upstream):
    raw = _post(INFER, GOOD, "Content-Type: application/json\r\n")
    with _connect(front) as sock:
        for _ in range(3):  # keep-alive: three requests, one connection each way
            sock.sendall(raw)
            status, headers, body = _read_response(sock)
            assert status == 200 and body == raw and "connection" not in headers
    assert upstream.requests == [raw] * 3


def test_pipelined_and_chunked_requests_are_answered_in_order(front, upstream):
    chunked = (f"POST {INFER} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               f"{len(GOOD[:10]):x}\r\n").encode() + GOOD[:10] + f"\r\n{len(GOOD[10:]):x}\r\n".encode() + GOOD[10:] + b"\r\n0\r\n\r\n"
    with _connect(front) as sock:
        sock.sendall(_post(INFER, GOOD) + chunked + b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
        first, second, third = (_read_response(sock) for _ in range(3))
    assert first[0] == second[0] == third[0] == 200
    assert second[2].endswith(b"\r\n\r\n" + GOOD) and b"Content-Length: %d\r\n" % len(GOOD) in second[2]
    assert b"Transfer-Encoding" not in second[2]  # the front sends the body with its length
    assert third[2].startswith(b"GET /v2/health/ready HTTP/1.1\r\n")


@pytest.mark.parametrize("raw, status, words", [
    (_post(INFER, b"[" * 2000 + b"]" * 2000), 400, "nested 2000 levels"),
    (_post(INFER, b'{"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1, 1], "data": [7]}]}'), 400,
     "data holds a number"),
    (_post(INFER, b"x" * 5000), 413, "exceeds the limit of 4096"),
    (b"POST /v2/models/m/infer HTTP/1.1\r\nContent-Length: 99999999999999\r\n\r\n", 413, "exceeds"),
    (b"POST /v2/models/m/infer HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nnot-hex\r\n", 400, "chunk size"),
    (b"GET /v2/logging HTTP/1.1\r\n\r\n", 403, "closed"),
    (b"POST /v2/repository/index HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 403, "closed"),
    (b"GET /v2/systemsharedmemory/status HTTP/1.1\r\n\r\n", 403, "closed"),
    (b"GET /v2/cudasharedmemory/status HTTP/1.1\r\n\r\n", 403, "closed"),
    (b"GET /v2/trace/setting HTTP/1.1\r\n\r\n", 403, "closed"),
    (b"GET /v2/models/m/trace/setting HTTP/1.1\r\n\r\n", 403, "closed"),
    (b"GET /v2/models/m%2Finfer HTTP/1.1\r\n\r\n", 404, "no endpoint"),
    (b"GET /v2/models/m/generate HTTP/1.1\r\n\r\n", 404, "no endpoint"),
    (b"GET /metrics HTTP/1.1\r\n\r\n", 404, "no endpoint"),
    (b"GET /v2/models/m/infer HTTP/1.1\r\n\r\n", 405, "use POST"),
    (b"DELETE /v2/health/ready HTTP/1.1\r\n\r\n", 405, "use GET"),
    (_post("/v2/health/ready", b"x").replace(b"POST", b"GET"), 400, "takes no request body"),
    (b"GET / HTTP/1.1\r\n" + b"X: " + b"y" * 70000 + b"\r\n\r\n", 431, "head exceeds"),
])
def test_refusals_are_one_line_kserve_errors_and_never_reach_triton(front, upstream, raw, status, words):
    got, headers, body = _exchange(front, raw)
    message = json.loads(body)["error"]
    assert got == status and words in message and "\n" not in message
    assert headers["content-type"] == "application/json"
    assert upstream.requests == []


def test_after_a_bad_body_the_connection_serves_on_but_bad_framing_closes_it(front, upstream):
    with _connect(front) as sock:
        sock.sendall(_post(INFER, b"not json"))
        assert _read_response(sock)[0] == 400
        sock.sendall(_post(INFER, GOOD))
        assert _read_response(sock)[0] == 200
        sock.sendall(b"POST /v2/models/m/infer HTTP/1.1\r\nContent-Length: x\r\n\r\n")
        status, headers, _ = _read_response(sock)
        assert status == 400 and headers["connection"] == "close" and _closed(sock)


def test_expect_100_continue_gets_continue_before_the_body(front, upstream):
    with _connect(front) as sock:
        sock.sendall(f"POST {INFER} HTTP/1.1\r\nContent-Length: {len(GOOD)}\r\nExpect: 100-continue\r\n\r\n".encode())
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(GOOD)
        status, _, body = _read_response(sock)
    assert status == 200 and b"Expect" not in body and body.endswith(GOOD)


def test_a_dead_upstream_is_503_and_a_stale_connection_is_retried_once(tmp_path):
    (port,) = free_ports(1)
    front = HttpFront("127.0.0.1", port, str(tmp_path / "nobody.sock"), max_body_bytes=4096)
    front.start()
    try:
        status, _, body = _exchange(front, _post(INFER, GOOD))
        assert status == 503 and "not running" in json.loads(body)["error"]
    finally:
        front.close()

    upstream = EchoUpstream(tmp_path / "stale.sock", close_after=1)  # closes each connection after one answer
    front = HttpFront("127.0.0.1", free_ports(1)[0], upstream.path, max_body_bytes=4096)
    front.start()
    try:
        with _connect(front) as sock:
            for _ in range(3):
                sock.sendall(_post(INFER, GOOD))
                assert _read_response(sock)[0] == 200
    finally:
        front.close()
        upstream.close()


def test_drain_finishes_in_flight_work_and_refuses_new_work_on_open_connections(front, upstream):
    idle = _connect(front)  # an open keep-alive connection, one request done
    idle.sendall(_post(INFER, GOOD))
    assert _read_response(idle)[0] == 200
    upstream.hold.set()
    busy = _connect(front)
    busy.sendall(_post(INFER, GOOD))
    assert upstream.holding.wait(10)  # the request is with "Triton" now

    result: dict[str, bool] = {}
    drainer = threading.Thread(target=lambda: result.update(finished=front.drain(20)))
    drainer.start()
    assert wait_until(lambda: front.draining, timeout_s=5)
    idle.sendall(_post(INFER, GOOD))  # new work on the open connection
    status, headers, body = _read_response(idle)
    assert status == 503 and headers["connection"] == "close" and "shutting down" in json.loads(body)["error"]
    assert _closed(idle)
    assert wait_until(lambda: _refused(front.port), timeout_s=5)  # no new connections

    time.sleep(0.2)
    assert drainer.is_alive()  # still waiting for the request in flight
    upstream.release.set()
    status, headers, body = _read_response(busy)
    assert status == 200 and body.endswith(GOOD) and headers["connection"] == "close"
    drainer.join(10)
    assert result == {"finished": True}
    assert _closed(busy)
    idle.close()
    busy.close()


def test_idle_and_excess_connections_are_closed(upstream):
    front = HttpFront("127.0.0.1", free_ports(1)[0], upstream.path, max_body_bytes=4096, max_connections=2,
                      idle_timeout_s=0.5)
    front.start()
    try:
        first, second = _connect(front), _connect(front)
        second.sendall(_post(INFER, GOOD))
        assert _read_response(second)[0] == 200
        with _connect(front) as third:
            status, headers, _ = _read_response(third)
            assert status == 503 and headers["connection"] == "close"
        assert wait_until(lambda: _closed(first), timeout_s=10)  # idle past the timeout: closed
        first.close()
        second.close()
    finally:
        front.close()


def test_one_thread_serves_every_connection(front, upstream):
    def fronts() -> set[threading.Thread]:  # other tests' servers (a session fixture) may be running too
        return {t for t in threading.enumerate() if t.name.startswith("serve-http")}

    before = fronts()
    assert front._thread in before
    connections = [_connect(front) for _ in range(20)]
    for sock in connections:
        sock.sendall(_post(INFER, GOOD))
    assert all(_read_response(sock)[0] == 200 for sock in connections)
    assert fronts() == before  # 20 connections, no new thread
    for sock in connections:
        sock.close()


def _big_request(size: int) -> bytes:
    text = "x" * size
    body = json.dumps({"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1, 1], "data": [[text]]}]})
    return _post(INFER, body.encode())


def test_a_client_that_stops_reading_holds_up_no_one_else(tmp_path):
    upstream = EchoUpstream(tmp_path / "triton.sock")
    front = HttpFront("127.0.0.1", free_ports(1)[0], upstream.path, max_body_bytes=2**20)
    front.start()
    try:
        stalled = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills after a few answers
        stalled.settimeout(10)
        stalled.connect(("127.0.0.1", front.port))
        request = _big_request(200_000)
        sent = threading.Event()

        def send_many() -> None:
            stalled.sendall(request * 20)  # answers (echoes) of ~4 MB that nobody reads for now
            sent.set()

        threading.Thread(target=send_many, daemon=True).start()
        assert wait_until(lambda: len(upstream.requests) >= 2, timeout_s=10)
        with _connect(front) as other:  # meanwhile another client is served as usual
            for _ in range(3):
                other.sendall(_post(INFER, GOOD))
                assert _read_response(other)[0] == 200
        for _ in range(20):  # and the stalled client gets every answer, whole and in order, once it reads
            status, _, body = _read_response(stalled)
            assert status == 200 and body == request
        assert sent.wait(10)
        stalled.close()
    finally:
        front.close()
        upstream.close()


def test_a_repeated_head_or_binary_json_part_is_checked_once_and_a_bad_one_every_time(front, upstream,
                                                                                       monkeypatch):
    import serve.front as front_module

    calls = {"head": 0, "body": 0}

    def counting(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(front_module, "parse_head", counting("head", front_module.parse_head))
    monkeypatch.setattr(front_module, "check_infer_body", counting("body", front_module.check_infer_body))
    header = (b'{"inputs":[{"name":"TEXT","shape":[1,1],"datatype":"BYTES","parameters":{"binary_data_size":5}}],'
              b'"outputs":[{"name":"PROBABILITIES","parameters":{"binary_data":true}}]}')
    binary = _post(INFER, header + b"\x01\x00\x00\x00a", f"Inference-Header-Content-Length: {len(header)}\r\n")
    bad = _post(INFER, b'{"inputs": 5}' + b"\x01\x00\x00\x00a", "Inference-Header-Content-Length: 13\r\n")
    with _connect(front) as sock:
        for _ in range(3):
            sock.sendall(binary)
            assert _read_response(sock)[0] == 200
        assert calls == {"head": 1, "body": 1}
        for _ in range(2):
            sock.sendall(bad)
            status, _, body = _read_response(sock)
            assert status == 400 and "'inputs' must be a list" in json.loads(body)["error"]
        assert calls == {"head": 2, "body": 3}
    assert upstream.requests == [binary] * 3


def test_hundreds_of_pipelined_requests_answered_at_once_are_all_answered(front, upstream, tmp_path):
    # refusals (and 503s while Triton is down) are written at once, then the next pipelined request is read:
    # that must not recurse once per request (the connection died at the recursion limit, ~200 requests)
    refused = b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
    down = HttpFront("127.0.0.1", free_ports(1)[0], str(tmp_path / "nobody.sock"), max_body_bytes=4096)
    down.start()
    try:
        for server, raw, status in ((front, refused, 404), (down, _post(INFER, GOOD), 503)):
            with _connect(server) as sock:
                sock.sendall(raw * 600)
                assert [_read_response(sock)[0] for _ in range(600)] == [status] * 600
            assert wait_until(lambda s=server: s._in_flight == s._unsent == 0, timeout_s=5)
    finally:
        down.close()
    assert upstream.requests == []


def test_a_request_whose_body_ends_after_the_drain_began_is_answered(front, upstream):
    # the listener's descriptor is closed when the drain begins; the upstream connection this request then
    # opens may get the same number, and its answer must not be taken for a client connecting
    raw = _post(INFER, GOOD)
    with _connect(front) as sock:
        sock.sendall(raw[:-5])
        assert wait_until(lambda: front._unsent == 1, timeout_s=5)  # accepted, its body being read
        result: dict[str, bool] = {}
        drainer = threading.Thread(target=lambda: result.update(finished=front.drain(20)))
        drainer.start()
        assert wait_until(lambda: front._listener is None, timeout_s=5)
        sock.sendall(raw[-5:])
        status, headers, body = _read_response(sock)
        assert status == 200 and body == raw and headers["connection"] == "close"
        drainer.join(10)
    assert result == {"finished": True}
