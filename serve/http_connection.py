"""A minimal HTTP/1.1 client connection: one request at a time on a kept-alive socket (ServeClient's transport).

Why not ``http.client``: it sends a request's head and body in two writes (two segments the server
reads separately) and parses each response's headers with the ``email`` package; for a one-text
inference request that was ~100 µs of client CPU of the ~180 µs a request cost, on a box where the
client's CPU is CPU the model does not get. This writes each request in one ``sendall`` and reads
the answer with one regex per header block.

What it reads: a status line, headers, and a body framed by ``Content-Length``, ``Transfer-Encoding:
chunked`` or the end of the connection; 1xx interim answers are skipped. ``Connection: close`` (or an
HTTP/1.0 answer without keep-alive) closes the socket after the answer.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass

# The status line, then each header line (name, value); a head that does not fit is malformed.
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})[^\r\n]*\r\n")
_HEADER_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([^\r\n]*?)[ \t]*\r\n")
_RECV_BYTES = 65536
MAX_HEAD_BYTES = 65536


class HttpProtocolError(ConnectionError):
    """The server's answer is not HTTP/1.1 this client can read (or the connection ended inside it)."""


@dataclass(frozen=True)
class Response:
    """One answer: status code, headers (names in lower case; a repeated one keeps its last value), body."""

    status: int
    headers: dict[str, str]
    body: bytes


class HttpConnection:
    """One keep-alive HTTP/1.1 connection to ``host:port``, opened on first use and again after a close.

    Args:
        host: a host name or address (an IPv6 one with or without brackets).
        port: TCP port.
        timeout_s: the connect timeout and the longest wait for each read or write.
    """

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host = host.strip("[]")
        self.port = port
        self.timeout_s = timeout_s
        self._host_header = f"[{self.host}]:{port}" if ":" in self.host else f"{self.host}:{port}"
        self._sock: socket.socket | None = None
        self._buffer = bytearray()
        self.reused = False  # the open socket has carried an answer (the server may have closed it since)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buffer.clear()
        self.reused = False

    def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Response:
        """Send one request (head and body in one write) and read its whole answer.

        Raises:
            OSError: the connection failed (refused, reset, timed out: ``TimeoutError``).
            HttpProtocolError: the answer is malformed or the connection ended before it was whole.
        """
        if self._sock is None:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        lines = [f"{method} {path} HTTP/1.1\r\nHost: {self._host_header}\r\n"]
        lines += [f"{name}: {value}\r\n" for name, value in (headers or {}).items()]
        if body or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(body)}\r\n")
        try:
            self._sock.sendall("".join(lines).encode("latin-1") + b"\r\n" + body)
            response = self._read_response()
        except BaseException:
            self.close()
            raise
        if response.headers.get("connection", "").lower() == "close":
            self.close()
        else:
            self.reused = True
        return response

    def _read_response(self) -> Response:
        while True:
            status, keep_alive, headers = self._read_head()
            if status >= 200:
                break  # 1xx: an interim answer (100 Continue); the real one follows
        if status in (204, 304):
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = self._read_chunked()
        elif "content-length" in headers:
            length = headers["content-length"]
            if not (length.isascii() and length.isdigit()):
                raise HttpProtocolError(f"the server sent Content-Length {length[:20]!r}")
            body = self._read_exactly(int(length))
        else:  # the body ends with the connection
            while self._recv():
                pass
            body, keep_alive = bytes(self._buffer), False
            self._buffer.clear()
        if not keep_alive:
            headers["connection"] = "close"
        return Response(status, headers, body)

    def _read_head(self) -> tuple[int, bool, dict[str, str]]:
        """The next status line and headers: (status, keep-alive, headers)."""
        while (end := self._buffer.find(b"\r\n\r\n")) < 0:
            if len(self._buffer) > MAX_HEAD_BYTES:
                raise HttpProtocolError(f"the server's answer head exceeds {MAX_HEAD_BYTES} bytes")
            if not self._recv():
                raise HttpProtocolError("the server closed the connection before answering")
        head = bytes(self._buffer[:end + 2])
        del self._buffer[:end + 4]
        status_line = _STATUS_LINE.match(head)
        if status_line is None:
            raise HttpProtocolError(f"the server's answer is not HTTP/1.x: {head[:40]!r}")
        headers = {name.decode("latin-1").lower(): value.decode("latin-1")
                   for name, value in _HEADER_LINE.findall(head, status_line.end())}
        http11 = status_line.group(1) == b"1"
        connection = headers.get("connection", "").lower()
        keep_alive = connection != "close" if http11 else connection == "keep-alive"
        return int(status_line.group(2)), keep_alive, headers

    def _recv(self) -> bool:
        """Read what has come; False at the end of the connection."""
        assert self._sock is not None
        data = self._sock.recv(_RECV_BYTES)
        self._buffer += data
        return bool(data)

    def _read_exactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            if not self._recv():
                raise HttpProtocolError(f"the connection ended {n - len(self._buffer)} bytes before the answer's end")
        body = bytes(self._buffer[:n])
        del self._buffer[:n]
        return body

    def _read_line(self) -> bytes:
        while (end := self._buffer.find(b"\r\n")) < 0:
            if len(self._buffer) > MAX_HEAD_BYTES or not self._recv():
                raise HttpProtocolError("malformed chunked answer from the server")
        line = bytes(self._buffer[:end])
        del self._buffer[:end + 2]
        return line

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            size = self._read_line().split(b";", 1)[0].strip()
            try:
                n = int(size, 16)
            except ValueError:
                raise HttpProtocolError(f"malformed chunk size {size[:20]!r} from the server") from None
            if n == 0:
                while self._read_line():  # trailers, up to the blank line
                    pass
                return bytes(body)
            body += self._read_exactly(n)
            if self._read_line():
                raise HttpProtocolError("malformed chunked answer from the server")
