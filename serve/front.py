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

One asyncio event loop, in a thread of the serving process, runs everything with protocol
callbacks (no task per request): a client connection parses its requests and hands each to its
own upstream connection, which parses Triton's response and writes it back. A connection handles
one request at a time (pipelined ones wait in its buffer, and reading pauses meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import threading
from dataclasses import dataclass

from serve.infer_body import BadBodyError, check_infer_body

LOGGER = logging.getLogger(__name__)

MAX_HEAD_BYTES = 65536
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
_CONTENT_LENGTH = re.compile(rb"\r\n[Cc]ontent-[Ll]ength:[ \t]*([0-9]+)\r\n")
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


def _length(value: str, name: str) -> int:
    if not value.isdigit() or not value.isascii():
        raise BadRequestError(400, f"{name} must be a non-negative integer, got {value[:40]!r}")
    return int(value)


def parse_head(block: bytes) -> RequestHead:
    """Parse a request head (the bytes before the blank line), or raise :class:`BadRequestError`."""
    lines = block.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1].startswith(b"/"):
        raise BadRequestError(400, "malformed request line; send 'METHOD /path HTTP/1.1'")
    method, target, version = (p.decode("latin-1") for p in parts)
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadRequestError(505, f"{version[:20]!r} is not supported; use HTTP/1.1")
    headers: list[tuple[str, str]] = []
    lengths: set[str] = set()
    encodings: list[str] = []
    connection: set[str] = set()
    expect = json_length = None
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):  # also folded lines and a space before the colon
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
        expect_continue=expect == "100-continue", json_length=json_length)


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


class _Upstream(asyncio.Protocol):
    """One keep-alive connection to Triton's Unix socket, owned by one client connection."""

    def __init__(self, client: _Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.used = 0  # responses read on this connection
        self._pending = bytearray()  # the head so far, then the body so far
        self._head: bytes | None = None
        self._length: int | None = None
        self._chunks: ChunkedBody | None = None
        self._waiting = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, request: bytes) -> None:
        self._waiting = True
        self.transport.write(request)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        if not self._waiting:  # Triton spoke out of turn: this connection cannot be trusted any more
            self.transport.close()  # type: ignore[union-attr]
            return
        if self._head is None:
            if not self._pending:  # the usual case: the whole response in one read
                end = data.find(b"\r\n\r\n")
                match = _CONTENT_LENGTH.search(data, 0, end) if end >= 0 else None
                if match and len(data) == end + 4 + int(match.group(1)):
                    self._finish(data)
                    return
            self._pending += data
            end = self._pending.find(b"\r\n\r\n")
            if end < 0:
                return
            self._head = bytes(self._pending[:end + 4])
            data = bytes(self._pending[end + 4:])
            self._pending.clear()
            match = _CONTENT_LENGTH.search(self._head)
            if match:
                self._length = int(match.group(1))
            elif b"\r\ntransfer-encoding:" in self._head.lower():
                self._chunks = ChunkedBody(limit=2**62)
        self._pending += data
        if self._chunks is not None:
            if self._chunks.feed(self._pending):
                self._finish(_with_length(self._head, bytes(self._chunks.body)))
        elif self._length is not None and len(self._pending) >= self._length:
            self._finish(self._head + bytes(self._pending[:self._length]))
        # else: no length, the body ends when Triton closes (connection_lost)

    def _finish(self, response: bytes) -> None:
        self._pending.clear()
        self._head, self._length, self._chunks, self._waiting = None, None, None, False
        self.used += 1
        self.client.deliver(response)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.client.upstream is self:
            self.client.upstream = None
        if not self._waiting:
            return
        if self._head is not None and self._length is None and self._chunks is None:  # a read-to-close body
            self._finish(_with_length(self._head, bytes(self._pending)))
            return
        self._waiting = False
        self.client.upstream_lost(got_bytes=self._head is not None or bool(self._pending), reused=self.used > 0)


def _with_length(head: bytes, body: bytes) -> bytes:
    """A response head with its framing headers replaced by the body's Content-Length."""
    lines = [line for line in head[:-4].split(b"\r\n")
             if not line.lower().startswith((b"transfer-encoding:", b"content-length:", b"connection:"))]
    return b"\r\n".join([*lines, b"Content-Length: %d" % len(body)]) + b"\r\n\r\n" + body


class _Client(asyncio.Protocol):
    """One client connection: parse a request, check it, forward it, write the answer; repeat."""

    def __init__(self, front: HttpFront) -> None:
        self.front = front
        self.transport: asyncio.Transport | None = None
        self.upstream: _Upstream | None = None
        self._buffer = bytearray()
        self._head: RequestHead | None = None
        self._chunks: ChunkedBody | None = None
        self._busy = False  # a request is with Triton
        self._request = b""  # the forwarded request, kept for one retry on a stale connection
        self._retried = False
        self._keep_alive = True
        self._paused = False
        self._closing = False

    # -- connection -----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.front.clients.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.front.clients.discard(self)
        self.transport = None
        self._closing = True
        if self.upstream is not None and not self._busy and self.upstream.transport is not None:
            self.upstream.transport.close()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._busy:
            self._advance()
        elif len(self._buffer) > MAX_HEAD_BYTES + self.front.max_body_bytes:  # pipelining: hold the client back
            self.transport.pause_reading()  # type: ignore[union-attr]
            self._paused = True

    @property
    def idle(self) -> bool:
        """No request in flight or half received."""
        return not self._busy and self._head is None and not self._buffer

    def close(self) -> None:
        """Close the connection (pending writes are flushed first)."""
        self._closing = True
        if self.transport is not None:
            self.transport.close()

    # -- requests -------------------------------------------------------------------------------
    def _advance(self) -> None:
        """Handle every complete request in the buffer, one at a time."""
        while not self._busy and not self._closing:
            try:
                if self._head is None and not self._read_head():
                    return
                body = self._read_body()
                if body is None:
                    return
                head, self._head, self._chunks = self._head, None, None
                self._handle(head, body)  # type: ignore[arg-type]
            except BadRequestError as exc:
                self._refuse(exc.status, str(exc), close=exc.close)

    def _read_head(self) -> bool:
        while self._buffer.startswith(b"\r\n"):  # stray blank lines between requests (RFC 9112 2.2)
            del self._buffer[:2]
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEAD_BYTES:
                raise BadRequestError(431, f"the request head exceeds {MAX_HEAD_BYTES} bytes")
            return False
        if end > MAX_HEAD_BYTES:
            raise BadRequestError(431, f"the request head exceeds {MAX_HEAD_BYTES} bytes")
        head = parse_head(bytes(self._buffer[:end]))
        del self._buffer[:end + 4]
        if self.front.draining:
            raise BadRequestError(503, "the server is shutting down; send the request to another replica or retry")
        if head.content_length > self.front.max_body_bytes:
            raise BadRequestError(413, f"the request body of {head.content_length} bytes exceeds the limit of "
                                       f"{self.front.max_body_bytes}; send fewer or shorter texts per request")
        self._head = head
        if head.chunked:
            self._chunks = ChunkedBody(self.front.max_body_bytes)
        if head.expect_continue and (head.chunked or len(self._buffer) < head.content_length):
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # type: ignore[union-attr]
        return True

    def _read_body(self) -> bytes | None:
        if self._chunks is not None:
            return bytes(self._chunks.body) if self._chunks.feed(self._buffer) else None
        n = self._head.content_length  # type: ignore[union-attr]
        if len(self._buffer) < n:
            return None
        body = bytes(self._buffer[:n])
        del self._buffer[:n]
        return body

    def _handle(self, head: RequestHead, body: bytes) -> None:
        self._keep_alive = head.keep_alive
        try:
            if route(head):
                check_infer_body(body, head.json_length)
            elif body:
                raise BadRequestError(400, f"{head.path[:80]} takes no request body", close=False)
        except BadBodyError as exc:
            self._refuse(400, str(exc), close=not head.keep_alive)
            return
        except BadRequestError as exc:
            self._refuse(exc.status, str(exc), close=exc.close or not head.keep_alive)
            return
        lines = [f"{head.method} {head.target} HTTP/1.1", *(f"{k}: {v}" for k, v in head.headers)]
        if body or head.method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        self._request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        self._retried = False
        self._busy = True
        self.front.in_flight += 1
        self._forward()

    def _forward(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.send(self._request)
        else:
            self.front.loop.create_task(self._connect_and_forward())

    async def _connect_and_forward(self) -> None:
        upstream = _Upstream(self)
        try:
            await asyncio.wait_for(self.front.loop.create_unix_connection(lambda: upstream, self.front.upstream_path),
                                   CONNECT_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError):
            self._answer(error_response(503, "the model server is not running (starting or restarting); retry in "
                                             "a few seconds", close=True), close=True)
            return
        self.upstream = upstream
        upstream.send(self._request)

    def upstream_lost(self, got_bytes: bool, reused: bool) -> None:
        """Triton closed the connection before answering."""
        if not got_bytes and reused and not self._retried:  # a stale keep-alive connection: once more, afresh
            self._retried = True
            self._forward()
            return
        self._answer(error_response(502, "the model server closed the connection before answering (it may have "
                                         "crashed; it restarts by itself); retry", close=True), close=True)

    def deliver(self, response: bytes) -> None:
        """Triton's answer to the request in flight."""
        close = self.front.draining or not self._keep_alive
        if close:
            end = response.find(b"\r\n\r\n")
            response = response[:end] + b"\r\nConnection: close" + response[end:]
        self._answer(response, close)

    def _answer(self, response: bytes, close: bool) -> None:
        self._busy = False
        self._request = b""
        self.front.request_done()
        if self.transport is None:  # the client went away meanwhile: so does its upstream connection
            if self.upstream is not None and self.upstream.transport is not None:
                self.upstream.transport.close()
            return
        self.transport.write(response)
        if close or self.front.draining:
            self.close()
            return
        if self._paused:
            self._paused = False
            self.transport.resume_reading()
        self._advance()

    def _refuse(self, status: int, message: str, close: bool) -> None:
        close = close or self.front.draining
        self._head = self._chunks = None
        if self.transport is not None:
            self.transport.write(error_response(status, message, close))
        if close:
            self._buffer.clear()
            self.close()


class HttpFront:
    """The front's event loop and listening socket, run in a thread of their own.

    Args:
        host / port: where clients connect (the user's ``--host`` and ``--http-port``).
        upstream_path: Triton's HTTP Unix socket.
        max_body_bytes: the largest request body accepted (413 beyond).
    """

    def __init__(self, host: str, port: int, upstream_path: str, max_body_bytes: int) -> None:
        self.host = host.strip("[]")
        self.port = port
        self.upstream_path = upstream_path
        self.max_body_bytes = max_body_bytes
        self.clients: set[_Client] = set()
        self.in_flight = 0
        self.draining = False
        self.loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._idle: asyncio.Event | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, name="serve-http-front", daemon=True)

    def start(self) -> None:
        """Listen on ``host:port`` and serve from a daemon thread; OSError if the port cannot be bound."""
        try:
            self._server = self.loop.run_until_complete(self.loop.create_server(
                lambda: _Client(self), self.host, self.port, reuse_address=True, backlog=1024))
        except BaseException:
            self.loop.close()
            raise
        self._thread.start()

    def request_done(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0 and self._idle is not None:
            self._idle.set()

    def drain(self, timeout_s: float) -> bool:
        """Refuse new work and wait up to ``timeout_s`` for the requests in flight; then close every
        connection. Returns whether all in-flight requests finished. Thread-safe; once only matters."""
        if not self._thread.is_alive():
            return True
        future = asyncio.run_coroutine_threadsafe(self._drain(timeout_s), self.loop)
        return future.result(timeout_s + 10)

    async def _drain(self, timeout_s: float) -> bool:
        self.draining = True
        if self._server is not None:
            self._server.close()
        self._idle = asyncio.Event()
        if self.in_flight:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout_s)
        finished = self.in_flight == 0
        for client in list(self.clients):
            client.close()
        return finished

    def close(self) -> None:
        """Stop the loop and its thread (after :meth:`drain`, or at once). Idempotent."""
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._shutdown)
            self._thread.join(10)
        if not self.loop.is_closed() and not self.loop.is_running():
            self.loop.close()

    def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for client in list(self.clients):
            if client.transport is not None:
                client.transport.abort()
            if client.upstream is not None and client.upstream.transport is not None:
                client.upstream.transport.abort()
        self.loop.stop()
