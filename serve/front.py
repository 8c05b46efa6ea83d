"""The public HTTP port of `serve start`: a small HTTP/1.1 front that checks every request before Triton.

Triton's HTTP server listens only on a Unix socket in the server's private work directory (mode
0700: no other user can connect to it), so every HTTP request reaches it through here. Per request
the front

- bounds the head (:data:`MAX_HEAD_BYTES`, else 431) and the body (``max_body_bytes``, else 413,
  decided from ``Content-Length`` before reading it) and reads ``Content-Length`` or chunked
  bodies; malformed framing gets 400 and the connection closes;
- answers only the endpoints `serve` documents (health, server and model metadata, model config,
  model readiness, statistics, infer): Triton's logging, trace, repository and shared-memory
  endpoints get 403, any other path 404, a method other than GET (POST for infer) 405;
- checks an infer body with :func:`serve.infer_body.check_infer_body` (nesting depth by a
  non-recursive scan, then JSON, structure, datatypes) and answers a bad one 400;
- forwards the request's bytes, unchanged but for hop-by-hop headers, on a keep-alive connection
  of its own to Triton, and Triton's answer back as it came;
- while draining (:meth:`HttpFront.drain`) accepts no connection, answers any new request 503 with
  ``Connection: close``, lets the ones in flight finish, then closes every connection.

Errors are one line in the KServe v2 error format: ``{"error": "..."}``. While Triton is down
(starting, restarting after a crash) requests get 503.

Each client connection gets a thread that serves its requests one at a time with blocking
sockets (pipelined ones wait in its buffer), on a connection to Triton of its own: per request
that is a read, a check, a write and a read to Triton, a write back; the socket calls release the
GIL. A reaper closes connections idle for ``idle_timeout_s``; past ``max_connections`` open
connections a new one is answered 503.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from serve.infer_body import BadBodyError, check_infer_body

MAX_HEAD_BYTES = 65536
# Bytes asked of one recv(): a request or response of this API usually fits in one.
_RECV_BYTES = 65536
# How long the front waits for Triton's Unix socket to accept a connection.
CONNECT_TIMEOUT_S = 5.0

_REASONS = {200: "OK", 100: "Continue", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 413: "Content Too Large", 431: "Request Header Fields Too Large",
            501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
            505: "HTTP Version Not Supported"}

# The endpoints served: /v2, /v2/health/{live,ready}, /v2/models/stats and, per model (optionally
# a version), metadata, ready, config, stats and infer. Model names are Triton's [A-Za-z0-9._-]
# (serve.server.MODEL_NAME_RE): nothing percent-encoded reaches Triton's router.
_ROUTE = re.compile(r"/v2(?:/health/(?:live|ready)|/models/stats"
                    r"|/models/[A-Za-z0-9._-]+(?:/versions/[0-9]+)?(/ready|/config|/stats|/infer)?)?")
_RESTRICTED = re.compile(r"/v2/(?:logging|trace|repository|systemsharedmemory|cudasharedmemory)(?:/.*)?"
                         r"|/v2/models/.*/trace(?:/.*)?", re.DOTALL)
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# A request target and a header value: no control characters (a bare CR or LF that Triton's parser
# might read as a line break would smuggle headers, or a second request, past the checks).
_TARGET = re.compile(rb"/[\x21-\x7e]*")
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([0-9]+)\r\n", re.IGNORECASE)
# Request headers that concern one connection only (RFC 9110 7.6.1); the front sets its own framing.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
                         "upgrade", "expect", "content-length"})


class BadRequestError(ValueError):
    """A request the front refuses; ``status`` is the HTTP status, ``close`` whether the connection ends."""

    def __init__(self, status: int, message: str, close: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.close = close


@dataclass
class RequestHead:
    """One parsed request head.

    Attributes:
        method / target / path: the request line's method and target, and the target without its query.
        http10: an HTTP/1.0 request.
        headers: (name, value) pairs as sent, hop-by-hop ones dropped.
        content_length: the body length (0 when neither Content-Length nor chunked).
        chunked: the body is chunked (then ``content_length`` is 0).
        keep_alive: the client keeps the connection after the response.
        expect_continue: the client waits for ``100 Continue`` before the body.
        json_length: ``Inference-Header-Content-Length`` (binary tensor extension) or None.
        raw: the head as received, when it can go to Triton unchanged (HTTP/1.1, no hop-by-hop
            header but Content-Length), else None (then it is rebuilt from the fields).
    """

    method: str
    target: str
    path: str
    http10: bool
    headers: list[tuple[str, str]]
    content_length: int
    chunked: bool
    keep_alive: bool
    expect_continue: bool
    json_length: int | None
    raw: bytes | None = None


def _length(value: str, name: str) -> int:
    if not value.isdigit() or not value.isascii():
        raise BadRequestError(400, f"{name} must be a non-negative integer, got {value[:40]!r}")
    return int(value)


def parse_head(block: bytes) -> RequestHead:
    """Parse a request head (up to and with the blank line), or raise :class:`BadRequestError`."""
    lines = block.removesuffix(b"\r\n\r\n").split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not _TARGET.fullmatch(parts[1]):
        raise BadRequestError(400, "malformed request line; send 'METHOD /path HTTP/1.1'")
    method, target, version = (p.decode("latin-1") for p in parts)
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadRequestError(505, f"{version[:20]!r} is not supported; use HTTP/1.1")
    headers: list[tuple[str, str]] = []
    lengths: set[str] = set()
    encodings: list[str] = []
    connection: set[str] = set()
    expect = json_length = None
    hop_by_hop = False
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
            # also folded lines, a space before the colon, control characters
            raise BadRequestError(400, "malformed header line; send 'Name: value'")
        key = name.decode("latin-1")
        text = value.strip(b" \t").decode("latin-1")
        lower = key.lower()
        if lower == "content-length":
            lengths.add(text)
        elif lower == "transfer-encoding":
            encodings += [e.strip().lower() for e in text.split(",") if e.strip()]
        elif lower == "connection":
            connection.update(t.strip().lower() for t in text.split(","))
        elif lower == "expect":
            expect = text.lower()
        elif lower == "inference-header-content-length":
            json_length = _length(text, "Inference-Header-Content-Length")
        if lower not in _HOP_BY_HOP:
            headers.append((key, text))
        elif lower != "content-length":
            hop_by_hop = True
    if encodings and lengths:
        raise BadRequestError(400, "both Content-Length and Transfer-Encoding are set; send one")
    if encodings and encodings != ["chunked"]:
        raise BadRequestError(501, f"Transfer-Encoding {', '.join(encodings)[:60]!r} is not supported; "
                                   f"send Content-Length or chunked")
    if len(lengths) > 1:
        raise BadRequestError(400, "conflicting Content-Length headers; send one")
    if connection:
        headers = [(k, v) for k, v in headers if k.lower() not in connection]
    http10 = version == "HTTP/1.0"
    return RequestHead(
        method=method, target=target, path=target.partition("?")[0], http10=http10, headers=headers,
        content_length=_length(lengths.pop(), "Content-Length") if lengths else 0, chunked=bool(encodings),
        keep_alive=("keep-alive" in connection) if http10 else ("close" not in connection),
        expect_continue=expect == "100-continue", json_length=json_length,
        raw=None if hop_by_hop or http10 else block)


class ChunkedBody:
    """Incremental decoder of a chunked body (RFC 9112 7.1); chunk extensions and trailers are dropped.

    Args:
        limit: the largest decoded body accepted (413 beyond).
    """

    def __init__(self, limit: int) -> None:
        self.body = bytearray()
        self._limit = limit
        self._state = "size"
        self._remaining = 0

    def feed(self, buffer: bytearray) -> bool:
        """Consume what it can of ``buffer`` (in place); True once the last chunk and the trailers are in."""
        while True:
            if self._state == "data":
                take = min(self._remaining, len(buffer))
                self.body += buffer[:take]
                del buffer[:take]
                self._remaining -= take
                if self._remaining:
                    return False
                self._state = "crlf"
            end = buffer.find(b"\r\n")
            if end < 0:
                if len(buffer) > 4096:
                    raise BadRequestError(400, "malformed chunked body: a chunk-size or trailer line over 4 KiB")
                return False
            line = bytes(buffer[:end])
            del buffer[:end + 2]
            if self._state == "crlf":
                if line:
                    raise BadRequestError(400, "malformed chunked body: chunk data longer than its size")
                self._state = "size"
            elif self._state == "size":
                size = line.split(b";", 1)[0].strip(b" \t")
                if not size or len(size) > 16 or not all(c in b"0123456789abcdefABCDEF" for c in size):
                    raise BadRequestError(400, f"malformed chunked body: chunk size {size[:20]!r} is not hexadecimal")
                self._remaining = int(size, 16)
                if len(self.body) + self._remaining > self._limit:
                    raise BadRequestError(413, f"the request body exceeds {self._limit} bytes; send fewer or "
                                               f"shorter texts per request")
                self._state = "data" if self._remaining else "trailer"
            elif not line:  # the blank line after the trailers
                return True


def error_response(status: int, message: str, close: bool = False) -> bytes:
    """A complete HTTP/1.1 response whose body is ``{"error": message}``."""
    body = json.dumps({"error": message}).encode()
    connection = "Connection: close\r\n" if close else ""
    head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{connection}\r\n")
    return head.encode() + body


def route(head: RequestHead) -> bool:
    """Whether ``head`` is an infer request; :class:`BadRequestError` for what the front does not serve."""
    match = _ROUTE.fullmatch(head.path)
    if match is None:
        if _RESTRICTED.fullmatch(head.path):
            raise BadRequestError(403, f"{head.path[:80]} is closed: serve keeps Triton's logging, trace, "
                                       f"repository and shared-memory endpoints closed", close=False)
        raise BadRequestError(404, f"no endpoint {head.path[:80]}; serve answers the KServe v2 health, metadata, "
                                   f"config, ready, statistics and infer endpoints", close=False)
    infer = match.group(1) == "/infer"
    allowed = "POST" if infer else "GET"
    if head.method != allowed:
        raise BadRequestError(405, f"{head.method} is not allowed on {head.path[:80]}; use {allowed}", close=False)
    return infer


class _Closed(Exception):
    """The connection is over (the peer closed it, or the front must close it now)."""


def _recv_more(sock: socket.socket, buffer: bytearray) -> None:
    data = sock.recv(_RECV_BYTES)
    if not data:
        raise _Closed
    buffer += data


class _Upstream:
    """One keep-alive connection to Triton's HTTP Unix socket, used by one client connection's thread."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(CONNECT_TIMEOUT_S)
            self.sock.connect(path)
            self.sock.settimeout(None)
        except BaseException:
            self.sock.close()
            raise
        self.used = 0  # responses read on this connection

    def exchange(self, request: bytes, sent: Callable[[], None]) -> bytes:
        """Send one request (then call ``sent``), return Triton's whole response (Triton frames each
        with Content-Length); :class:`_Closed` if Triton closed the connection before a byte of it came."""
        self.sock.sendall(request)
        sent()
        buffer = bytearray()
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            self._recv(buffer)
        match = _CONTENT_LENGTH.search(buffer, 0, end + 4)
        if match is None:
            raise ConnectionError("Triton sent a response without Content-Length")
        total = end + 4 + int(match.group(1))
        while len(buffer) < total:
            self._recv(buffer)
        self.used += 1
        return bytes(buffer) if len(buffer) == total else bytes(buffer[:total])

    def _recv(self, buffer: bytearray) -> None:
        try:
            _recv_more(self.sock, buffer)
        except _Closed:
            if buffer:
                raise ConnectionError("Triton closed the connection in the middle of a response") from None
            raise

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class _Connection:
    """One client connection, served by a thread of its own: read a request, check it, forward it,
    write the answer; repeat until the client or the front ends it."""

    def __init__(self, front: HttpFront, sock: socket.socket) -> None:
        self.front = front
        self.sock = sock
        self.busy = False  # between a complete request and its answer
        self.last_active = time.monotonic()
        self._unsent = False  # a request is accepted and not yet with Triton
        self._upstream: _Upstream | None = None

    def run(self) -> None:
        buffer = bytearray()
        try:
            while True:
                try:
                    self._serve_one(buffer)
                except BadRequestError as exc:
                    self._send(error_response(exc.status, str(exc), exc.close))
                    if exc.close:
                        return
        except (_Closed, OSError):
            return
        finally:
            self.front.forget(self)
            if self._upstream is not None:
                self._upstream.close()
            with contextlib.suppress(OSError):
                self.sock.close()

    def shutdown(self) -> None:
        """Wake the thread out of a blocking read (it then closes the connection)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        if self._upstream is not None:
            with contextlib.suppress(OSError):
                self._upstream.sock.shutdown(socket.SHUT_RDWR)

    def _send(self, data: bytes) -> None:
        self.sock.sendall(data)
        self.last_active = time.monotonic()

    def _serve_one(self, buffer: bytearray) -> None:
        head = self._read_head(buffer)
        if not self.front.accept():
            raise BadRequestError(503, "the server is shutting down; send the request to another replica or retry")
        self._unsent = True
        try:
            self._serve_accepted(head, buffer)
        finally:
            self._mark_sent()  # refused by the checks, or the connection broke: it never will be
            self.front.answered()

    def _mark_sent(self) -> None:
        """The accepted request has reached Triton (counted once, also when it is sent again)."""
        if self._unsent:
            self._unsent = False
            self.front.forwarded()

    def _serve_accepted(self, head: RequestHead, buffer: bytearray) -> None:
        if head.content_length > self.front.max_body_bytes:
            raise BadRequestError(413, f"the request body of {head.content_length} bytes exceeds the limit of "
                                       f"{self.front.max_body_bytes}; send fewer or shorter texts per request")
        if head.expect_continue and (head.chunked or len(buffer) < head.content_length):
            self._send(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = self._read_body(head, buffer)
        close = not head.keep_alive
        try:
            if route(head):
                check_infer_body(body, head.json_length)
            elif body:
                raise BadRequestError(400, f"{head.path[:80]} takes no request body", close=False)
        except BadBodyError as exc:
            raise BadRequestError(400, str(exc), close=close) from None
        except BadRequestError as exc:
            raise BadRequestError(exc.status, str(exc), close=exc.close or close) from None
        if head.raw is not None:
            request = head.raw + body
        else:
            lines = [f"{head.method} {head.target} HTTP/1.1", *(f"{k}: {v}" for k, v in head.headers)]
            if body or head.method == "POST":
                lines.append(f"Content-Length: {len(body)}")
            request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        self.busy = True
        try:
            response = self._forward(request)
            if self.front.draining or close:
                end = response.find(b"\r\n\r\n")
                response = response[:end] + b"\r\nConnection: close" + response[end:]
                close = True
            self._send(response)
        finally:
            self.busy = False
        if close:
            raise _Closed

    def _read_head(self, buffer: bytearray) -> RequestHead:
        while True:
            while buffer.startswith(b"\r\n"):  # stray blank lines between requests (RFC 9112 2.2)
                del buffer[:2]
            end = buffer.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(buffer) > MAX_HEAD_BYTES:
                raise BadRequestError(431, f"the request head exceeds {MAX_HEAD_BYTES} bytes")
            try:
                _recv_more(self.sock, buffer)
            except _Closed:
                if buffer.strip():
                    raise BadRequestError(400, "the request ended before its head was complete") from None
                raise
        self.last_active = time.monotonic()
        if end > MAX_HEAD_BYTES:
            raise BadRequestError(431, f"the request head exceeds {MAX_HEAD_BYTES} bytes")
        head = parse_head(bytes(buffer[:end + 4]))
        del buffer[:end + 4]
        return head

    def _read_body(self, head: RequestHead, buffer: bytearray) -> bytes:
        try:
            if head.chunked:
                chunks = ChunkedBody(self.front.max_body_bytes)
                while not chunks.feed(buffer):
                    _recv_more(self.sock, buffer)
                return bytes(chunks.body)
            n = head.content_length
            while len(buffer) < n:
                _recv_more(self.sock, buffer)
        except _Closed:
            what = "its last chunk" if head.chunked else f"{head.content_length} bytes (Content-Length)"
            raise BadRequestError(400, f"the request body ended before {what}; send the whole body") from None
        body = bytes(buffer[:n])
        del buffer[:n]
        return body

    def _forward(self, request: bytes) -> bytes:
        """Triton's response to ``request``; a 502/503 error response if Triton cannot answer."""
        for attempt in (1, 2):
            fresh = self._upstream is None
            try:
                if fresh:
                    self._upstream = _Upstream(self.front.upstream_path)
            except OSError:
                return error_response(503, "the model server is not running (starting or restarting); retry in a "
                                           "few seconds")
            try:
                return self._upstream.exchange(request, self._mark_sent)  # type: ignore[union-attr]
            except (_Closed, OSError) as exc:
                reused = not fresh and self._upstream.used > 0  # type: ignore[union-attr]
                self._upstream.close()  # type: ignore[union-attr]
                self._upstream = None
                if attempt == 1 and reused and isinstance(exc, (_Closed, BrokenPipeError, ConnectionResetError)):
                    continue  # a stale keep-alive connection: once more, on a fresh one
                break
        return error_response(502, "the model server closed the connection before answering (it may have crashed; "
                                   "it restarts by itself); retry")


class HttpFront:
    """The front's listening socket and connection threads.

    Args:
        host / port: where clients connect (the user's ``--host`` and ``--http-port``).
        upstream_path: Triton's HTTP Unix socket.
        max_body_bytes: the largest request body accepted (413 beyond).
        max_connections: open client connections at most; more are answered 503 and closed.
        idle_timeout_s: a connection with no request, or half a request, for this long is closed.
    """

    def __init__(self, host: str, port: int, upstream_path: str, max_body_bytes: int,
                 max_connections: int = 1024, idle_timeout_s: float = 300.0) -> None:
        self.host = host.strip("[]")
        self.port = port
        self.upstream_path = upstream_path
        self.max_body_bytes = max_body_bytes
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self.draining = False
        self._connections: set[_Connection] = set()
        self._in_flight = 0  # requests accepted and not answered yet
        self._unsent = 0  # requests accepted and not yet with Triton (being read or checked)
        self._changed = threading.Condition()
        self._listener: socket.socket | None = None

    def start(self) -> None:
        """Listen on ``host:port`` and accept from a daemon thread; OSError if the port cannot be bound."""
        family = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.port))
            listener.listen(1024)
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        for target, name in ((self._accept, "serve-http-front"), (self._reap, "serve-http-front-reaper")):
            threading.Thread(target=target, name=name, daemon=True).start()

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:  # the listener was shut down (drain, close)
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._changed:
                full = len(self._connections) >= self.max_connections
                connection = _Connection(self, sock)
                if not full and not self.draining:
                    self._connections.add(connection)
            if full or self.draining:
                with contextlib.suppress(OSError):
                    sock.sendall(error_response(503, "the server has too many open connections; retry later"
                                                if full else "the server is shutting down", close=True))
                sock.close()
                continue
            threading.Thread(target=connection.run, name="serve-http-connection", daemon=True).start()

    def _reap(self) -> None:
        """Close connections idle (no request, or half a request) for longer than ``idle_timeout_s``."""
        while not self.draining:
            time.sleep(min(5.0, self.idle_timeout_s / 2))
            now = time.monotonic()
            with self._changed:
                stale = [c for c in self._connections if not c.busy and now - c.last_active > self.idle_timeout_s]
            for connection in stale:
                connection.shutdown()

    def forget(self, connection: _Connection) -> None:
        with self._changed:
            self._connections.discard(connection)
            self._changed.notify_all()

    def accept(self) -> bool:
        """Take a request whose head just came in (False while draining: refuse it)."""
        with self._changed:
            if self.draining:
                return False
            self._in_flight += 1
            self._unsent += 1
            return True

    def forwarded(self) -> None:
        """An accepted request is now with Triton (or, if refused by the checks, never will be)."""
        with self._changed:
            self._unsent -= 1
            if not self._unsent:
                self._changed.notify_all()

    def answered(self) -> None:
        """An accepted request got its answer (or its connection ended)."""
        with self._changed:
            self._in_flight -= 1
            if not self._in_flight:
                self._changed.notify_all()

    def stop_accepting(self, timeout_s: float) -> None:
        """Refuse new work: no new connection, 503 and ``Connection: close`` to a new request on an
        open one; return once every accepted request has reached Triton (or ``timeout_s`` passed),
        so that Triton can be told to drain without refusing any of them. Idempotent."""
        with self._changed:
            self.draining = True
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocking accept()
            self._listener.close()
        with self._changed:
            self._changed.wait_for(lambda: self._unsent == 0, timeout_s)

    def drain(self, timeout_s: float) -> bool:
        """Stop accepting, wait up to ``timeout_s`` for the requests in flight, then close every
        connection. Returns whether all of them were answered. Idempotent."""
        self.stop_accepting(timeout_s)
        with self._changed:
            finished = self._changed.wait_for(lambda: self._in_flight == 0, timeout_s)
            connections = list(self._connections)
        for connection in connections:
            connection.shutdown()
        return finished

    def close(self) -> None:
        """Drain without waiting, and wait (briefly) for the connection threads to end."""
        self.drain(0)
        deadline = time.monotonic() + 5
        with self._changed:
            self._changed.wait_for(lambda: not self._connections, max(0.0, deadline - time.monotonic()))
