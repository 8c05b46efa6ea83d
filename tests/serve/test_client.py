"""ServeClient's HTTP transport on its own: the binary BYTES codec, output decoding, and a kept-alive
connection the server closed (retried once, on a fresh connection). A real server is in test_server.py."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from serve.client import ClientError, HttpTransport, ServeClient, decode_bytes_tensor, encode_bytes_tensor
from tests.serve.helpers import read_request


def test_bytes_tensor_round_trips_and_is_length_prefixed():
    items = [b"", b"a", "ünï 🙂".encode(), b"x" * 70000]
    data = encode_bytes_tensor(items)
    assert data[:4] == b"\x00\x00\x00\x00" and data[4:9] == b"\x01\x00\x00\x00a"
    assert decode_bytes_tensor(data) == items


class OneAnswerServer:
    """HTTP on loopback that answers ``answers`` requests per connection, then closes it (0: closes at once)."""

    def __init__(self, answers: int) -> None:
        self.answers = answers
        self.connections = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                for _ in range(self.answers):
                    buffer = b""
                    while b"\r\n\r\n" not in buffer:
                        buffer += conn.recv(65536)
                    body = json.dumps({"model_stats": [{"name": "m"}]}).encode()
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    def close(self) -> None:
        self._sock.close()


@contextlib.contextmanager
def canned_answers(*answers: bytes) -> Iterator[tuple[int, list[bytes]]]:
    """A loopback server for one connection: each request, read whole (head and Content-Length body), gets the
    next of ``answers``; then the connection closes. Yields (its port, the requests it read)."""
    sock = socket.create_server(("127.0.0.1", 0))
    requests: list[bytes] = []

    def serve() -> None:
        conn, _ = sock.accept()
        with conn:
            buffer = b""
            for answer in answers:
                if (read := read_request(conn, buffer)) is None:
                    return
                request, buffer = read
                requests.append(request)
                conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield sock.getsockname()[1], requests
    finally:
        sock.close()


def test_a_kept_alive_connection_the_server_closed_is_retried_once_on_a_fresh_one():
    server = OneAnswerServer(answers=1)
    try:
        transport = HttpTransport(f"127.0.0.1:{server.port}", timeout_s=5)
        for _ in range(3):
            assert transport.get_inference_statistics() == {"model_stats": [{"name": "m"}]}
        assert server.connections == 3
        transport.close()
    finally:
        server.close()


def test_a_server_that_never_answers_is_one_line_and_not_retried():
    server = OneAnswerServer(answers=0)
    try:
        with ServeClient(f"http://127.0.0.1:{server.port}", model="m", timeout_s=5) as client:
            with pytest.raises(ClientError, match="cannot reach .* is `serve start` running there"):
                client.statistics()
        assert server.connections == 1
    finally:
        server.close()


def test_http_errors_carry_the_status_and_the_servers_one_line():
    sock = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        conn, _ = sock.accept()
        with conn:
            conn.recv(65536)
            body = b'{"error": "no model named nope"}'
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    threading.Thread(target=answer, daemon=True).start()
    try:
        with ServeClient(f"http://127.0.0.1:{sock.getsockname()[1]}", model="nope") as client:
            with pytest.raises(ClientError) as info:
                client.config()
        assert info.value.status == "404" and str(info.value) == "model config failed (404): no model named nope"
    finally:
        sock.close()


def test_outputs_are_read_from_binary_data_or_json():
    from serve.client import _output_array

    probs = np.array([[0.25, 0.5]], dtype=np.float32)
    binary = {"name": "P", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": 8}}
    np.testing.assert_array_equal(_output_array(binary, probs.tobytes()), probs)
    as_json = {"name": "P", "datatype": "FP32", "shape": [1, 2], "data": [0.25, 0.5]}
    np.testing.assert_array_equal(_output_array(as_json, None), probs)
    labels = {"name": "L", "datatype": "BYTES", "shape": [2, 1]}
    assert _output_array(labels, encode_bytes_tensor([b"a;b", b""])).tolist() == [[b"a;b"], [b""]]
    assert _output_array({**labels, "data": ["a;b", ""]}, None).tolist() == [[b"a;b"], [b""]]


def test_chunked_interim_and_close_delimited_answers_are_read_whole():
    from serve.http_connection import HttpConnection

    answers = [b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"3;x=1\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: t\r\n\r\n",
               b"HTTP/1.0 200 OK\r\nX-Seen:  spaced  \r\n\r\nuntil the end"]
    # HTTP/1.0 without keep-alive: the second body ends with the connection
    with canned_answers(*answers) as (port, requests):
        connection = HttpConnection("127.0.0.1", port, timeout_s=5)
        first = connection.request("POST", "/a", b"xyz", {"X-Test": "1"})
        assert (first.status, first.body) == (200, b"abcde") and connection.reused
        second = connection.request("GET", "/b")
        assert (second.status, second.body, second.headers["x-seen"]) == (200, b"until the end", "spaced")
        assert not connection.reused  # closed after a close-delimited answer
        assert requests[0].startswith(b"POST /a HTTP/1.1\r\nHost: 127.0.0.1:") and requests[0].endswith(
            b"X-Test: 1\r\nContent-Length: 3\r\n\r\nxyz")


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",  # not JSON
    b"HTTP/1.1 200 OK\r\nInference-Header-Content-Length: 99\r\nContent-Length: 2\r\n\r\n{}",  # bad split
    b'HTTP/1.1 200 OK\r\nContent-Length: 60\r\n\r\n{"outputs": [{"name": "PROBABILITIES", "datatype": "FP32"}]}   ',
])
def test_an_unreadable_answer_is_one_line(answer):
    with canned_answers(answer) as (port, _):
        transport = HttpTransport(f"127.0.0.1:{port}", timeout_s=5)
        with pytest.raises(ClientError) as info:
            transport.infer_texts("m", "TEXT", [b"x"], "PROBABILITIES")
        assert "could not be read" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("length", [b"\xb2", b"-1", b"x"])  # "\xb2" is latin-1 "²": isdigit(), yet not int()
def test_a_content_length_that_is_no_number_is_one_line(length):
    with canned_answers(b"HTTP/1.1 200 OK\r\nContent-Length: " + length + b"\r\n\r\n{}") as (port, _):
        with ServeClient(f"http://127.0.0.1:{port}", model="m", timeout_s=5) as client:
            with pytest.raises(ClientError, match="Content-Length") as info:
                client.statistics()
        assert "\n" not in str(info.value)
