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

One thread serves every connection: an epoll loop over non-blocking sockets (the listener, each
client connection and the connection to Triton each of them has). A connection's requests are
served one at a time (pipelined ones wait in its buffer, read ahead at most ~128 KiB); per
request that is a read, a check, a write and a read to Triton, a write back, and whatever cannot
be written at once waits for the socket to take it, so a client that stops reading holds up no
one else. A thread per connection with blocking sockets cost ~1.8x the CPU per request (~115-130
vs ~60-70 µs with 8 busy keep-alive clients and an upstream answering in 2 ms): every blocking
call handed the GIL to another thread and back. Connections idle (no request, half a request, or an
answer nobody reads) for ``idle_timeout_s`` are closed; past ``max_connections`` open
connections a new one is answered 503.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from serve.infer_body import BadBodyError, check_infer_body

LOGGER = logging.getLogger(__name__)
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


@dataclass(frozen=True)
class RequestHead:
    """One parsed request head (the front shares one between requests with the same head bytes).

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
            if json_length is not None:  # which one Triton would take is not the front's to guess
                raise BadRequestError(400, "more than one Inference-Header-Content-Length header; send one")
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
    """The upstream connection closed before a byte of the answer came."""


# A connection's request, from its head to its answer being written.
_HEAD, _BODY, _UPSTREAM, _WRITING = "head", "body", "upstream", "writing"
# Bytes read ahead from a client whose request is in flight (a pipelined request); reading stops beyond this.
_MAX_READ_AHEAD = MAX_HEAD_BYTES + _RECV_BYTES
# Heads and JSON parts of binary requests repeat (a client sends the same head but for the lengths): the
# front remembers up to this many it parsed or checked, of at most _MEMO_BYTES each, and skips the work
# for a repeat (~35 µs of the ~110 µs of CPU the front spends per request under load).
_MEMO_ENTRIES = 1024
_MEMO_BYTES = 2048
_IN = select.EPOLLIN | select.EPOLLRDHUP
_OUT = select.EPOLLOUT
_ERR = select.EPOLLERR | select.EPOLLHUP


class _Upstream:
    """One keep-alive connection to Triton's HTTP Unix socket, owned by one client connection.

    ``request`` is what is being sent (``sent`` bytes of it so far) and ``response`` what has come
    back of the answer; ``used`` counts the answers read on this connection.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.request = b""
        self.sent = 0
        self.response = bytearray()
        self.used = 0
        self.writing = False  # registered for EPOLLOUT: the request did not go at once

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class _Connection:
    """One client connection's state; only the front's loop thread touches it.

    A request goes head -> body -> upstream (with Triton) -> writing (its answer) -> head again:
    one at a time, pipelined ones wait in ``buffer``. ``accepted`` marks a request counted in the
    front's in-flight work, ``unsent`` one not yet (wholly) with Triton.
    """

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.buffer = bytearray()
        self.state = _HEAD
        self.head: RequestHead | None = None
        self.chunks: ChunkedBody | None = None
        self.close_request = False  # the request asked for Connection: close (or is HTTP/1.0 without keep-alive)
        self.request = b""  # the bytes for Triton, kept for one retry on a fresh connection
        self.attempt = 0
        self.connect_deadline = 0.0
        self.upstream: _Upstream | None = None
        self.out = b""  # what is being written to the client, ``out_sent`` bytes of it so far
        self.out_sent = 0
        self.close_after_write = False
        self.eof = False  # the client sent its last byte
        self.accepted = False
        self.unsent = False
        self.advancing = False  # HttpFront._advance is running for it
        self.events = _IN
        self.last_active = now


class HttpFront:
    """The front's listening socket and the one thread that serves every connection.

    The thread runs an epoll loop over non-blocking sockets: the listener, each client connection
    and its connection to Triton. Another thread only ever sets a flag and wakes the loop (a
    socket pair). Threads per connection cost ~1.8x the CPU per request (each blocking call handed
    the GIL between them); see the module docstring.

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
        self._connections: dict[int, _Connection] = {}
        self._upstreams: dict[int, _Connection] = {}  # an upstream socket's fd -> the connection it serves
        self._connecting: list[_Connection] = []  # waiting for Triton's socket to accept (backlog full)
        self._heads: dict[bytes, RequestHead] = {}  # head bytes -> parsed (see _MEMO_ENTRIES)
        self._checked: dict[bytes, bool] = {}  # JSON parts of binary infer requests that passed the check
        self._in_flight = 0  # requests accepted and not answered yet
        self._unsent = 0  # requests accepted and not yet with Triton (being read or checked)
        self._changed = threading.Condition()
        self._close_all = False  # set by drain(): the loop closes every connection
        self._stop = False  # set by close(): the loop ends once they are closed
        self._listener: socket.socket | None = None
        self._epoll: select.epoll | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None

    # -- other threads ------------------------------------------------------------------------
    def start(self) -> None:
        """Listen on ``host:port`` and serve from a daemon thread; OSError if the port cannot be bound."""
        family = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.port))
            listener.listen(1024)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._epoll = select.epoll()
        self._epoll.register(listener.fileno(), select.EPOLLIN)
        self._epoll.register(self._wake_r.fileno(), select.EPOLLIN)
        self._thread = threading.Thread(target=self._run, name="serve-http-front", daemon=True)
        self._thread.start()

    def _wake(self) -> None:
        if self._wake_w is not None:
            with contextlib.suppress(OSError):  # full: the loop is awake already; closed: it has ended
                self._wake_w.send(b"\0")

    def stop_accepting(self, timeout_s: float) -> None:
        """Refuse new work: no new connection, 503 and ``Connection: close`` to a new request on an
        open one; return once every accepted request has reached Triton (or ``timeout_s`` passed),
        so that Triton can be told to drain without refusing any of them. Idempotent."""
        with self._changed:
            self.draining = True
        self._wake()
        deadline = time.monotonic() + timeout_s
        with self._changed:
            # the listener is closed by the loop (it owns every socket); wait for that, then for the requests
            self._changed.wait_for(lambda: self._listener is None or self._thread is None, timeout_s)
            self._changed.wait_for(lambda: self._unsent == 0, max(0.0, deadline - time.monotonic()))

    def drain(self, timeout_s: float) -> bool:
        """Stop accepting, wait up to ``timeout_s`` for the requests in flight, then close every
        connection. Returns whether all of them were answered. Idempotent."""
        self.stop_accepting(timeout_s)
        with self._changed:
            finished = self._changed.wait_for(lambda: self._in_flight == 0, timeout_s)
            self._close_all = True
        self._wake()
        return finished

    def close(self) -> None:
        """Drain without waiting, and wait (briefly) for the loop to close every connection and end."""
        self.drain(0)
        with self._changed:
            self._stop = True
        self._wake()
        if self._thread is not None:
            self._thread.join(5)

    # -- counters (the loop thread changes them; other threads wait on them) -------------------
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

    # -- the loop -----------------------------------------------------------------------------
    def _run(self) -> None:
        epoll = self._epoll
        assert epoll is not None and self._listener is not None and self._wake_r is not None
        listen_fd, wake_fd = self._listener.fileno(), self._wake_r.fileno()
        next_reap = time.monotonic() + self._reap_interval()
        try:
            while True:
                timeout = 0.01 if self._connecting else max(0.0, next_reap - time.monotonic())
                for fd, events in epoll.poll(timeout):
                    # once the drain closed the listener its number may be a new upstream connection's
                    if fd == listen_fd and self._listener is not None:
                        self._accept()
                    elif fd == wake_fd:
                        if self._commands():
                            return
                    elif (connection := self._connections.get(fd)) is not None:
                        self._guarded(self._client_event, connection, events)
                    elif (connection := self._upstreams.get(fd)) is not None:
                        self._guarded(self._upstream_event, connection, events)
                if self._connecting:
                    for connection in list(self._connecting):
                        self._guarded(self._connect_upstream, connection)
                if time.monotonic() >= next_reap:
                    self._reap()
                    next_reap = time.monotonic() + self._reap_interval()
        finally:
            for connection in list(self._connections.values()):
                self._close(connection)
            self._close_listener()
            epoll.close()
            for sock in (self._wake_r, self._wake_w):
                sock.close()
            self._wake_w = None
            with self._changed:
                self._thread = None
                self._changed.notify_all()

    def _reap_interval(self) -> float:
        return min(5.0, self.idle_timeout_s / 2)

    def _commands(self) -> bool:
        """Act on what other threads asked for; True when the loop must end."""
        assert self._wake_r is not None
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass
        with self._changed:
            draining, close_all, stop = self.draining, self._close_all, self._stop
        if draining:
            self._close_listener()
        if close_all:
            for connection in list(self._connections.values()):
                self._close(connection)
        return stop

    def _close_listener(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(self._listener.fileno())  # type: ignore[union-attr]
            self._listener.close()
            with self._changed:
                self._listener = None
                self._changed.notify_all()

    def _guarded(self, handler: Callable[..., None], connection: _Connection, *args: int) -> None:
        """Run a handler; an error that escapes it ends that connection only, never the loop."""
        try:
            handler(connection, *args)
        except Exception:  # one connection's failure must not stop the others
            LOGGER.exception("HTTP front: closing a connection after an unexpected error")
            self._close(connection)

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of descriptors, or the listener closed: try again at the next event
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if len(self._connections) >= self.max_connections or self.draining:
                with contextlib.suppress(OSError):
                    sock.send(error_response(503, "the server has too many open connections; retry later"
                                             if not self.draining else "the server is shutting down", close=True))
                sock.close()
                continue
            connection = _Connection(sock, time.monotonic())
            try:
                self._epoll.register(connection.fd, connection.events)  # type: ignore[union-attr]
            except OSError:  # out of kernel memory for epoll entries: drop this one, keep serving the others
                sock.close()
                continue
            self._connections[connection.fd] = connection

    def _reap(self) -> None:
        """Close connections idle (no request, half a request, or an answer nobody reads) for longer
        than ``idle_timeout_s``."""
        now = time.monotonic()
        for connection in list(self._connections.values()):
            if connection.state != _UPSTREAM and now - connection.last_active > self.idle_timeout_s:
                self._close(connection)

    def _close(self, connection: _Connection) -> None:
        """End a connection (and its upstream one); settle the counters of its request, if any."""
        if self._connections.pop(connection.fd, None) is None:
            return
        if connection in self._connecting:
            self._connecting.remove(connection)
        self._drop_upstream(connection)
        with contextlib.suppress(OSError, ValueError):
            self._epoll.unregister(connection.fd)  # type: ignore[union-attr]
        with contextlib.suppress(OSError):
            connection.sock.close()
        self._settle(connection)

    def _settle(self, connection: _Connection) -> None:
        """The connection's request is over: it counts neither as unsent nor as in flight any more."""
        if connection.unsent:
            connection.unsent = False
            self.forwarded()
        if connection.accepted:
            connection.accepted = False
            self.answered()

    def _set_events(self, connection: _Connection) -> None:
        """Read from the client while a request is being read, or ahead (bounded) while one is in flight;
        write while an answer is pending."""
        events = 0
        if not connection.eof and (connection.state in (_HEAD, _BODY) or len(connection.buffer) < _MAX_READ_AHEAD):
            events |= _IN
        if connection.out_sent < len(connection.out):
            events |= _OUT
        if events != connection.events:
            connection.events = events
            self._epoll.modify(connection.fd, events)  # type: ignore[union-attr]

    # -- the client side ----------------------------------------------------------------------
    def _client_event(self, connection: _Connection, events: int) -> None:
        if events & _OUT and connection.out_sent < len(connection.out):
            self._flush(connection)
            if connection.fd not in self._connections:
                return
        if events & _ERR and connection.eof:  # reset or hung up after its last byte: nothing can reach it
            self._close(connection)
            return
        if events & (_IN | _ERR) and not connection.eof:
            try:
                data = connection.sock.recv(_RECV_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if data:
                connection.buffer += data
            else:
                connection.eof = True
            if connection.state in (_HEAD, _BODY):
                self._advance(connection)
            if connection.fd in self._connections:
                self._set_events(connection)

    def _send(self, connection: _Connection, data: bytes, state: str | None = None,
              close: bool = False) -> None:
        """Write ``data`` to the client (what does not go at once, when the socket takes it); with
        ``state`` = writing it is the request's answer (then the request is over once written)."""
        if connection.out_sent < len(connection.out):  # a 100 Continue still on its way
            connection.out = connection.out[connection.out_sent:] + data
        else:
            connection.out = data
        connection.out_sent = 0
        if state is not None:
            connection.state = state
            connection.close_after_write = close
        self._flush(connection)

    def _flush(self, connection: _Connection) -> None:
        out = connection.out
        try:
            while connection.out_sent < len(out):
                connection.out_sent += connection.sock.send(memoryview(out)[connection.out_sent:])
                connection.last_active = time.monotonic()
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:  # the client is gone
            self._close(connection)
            return
        if connection.out_sent >= len(out):
            connection.out, connection.out_sent = b"", 0
            if connection.state == _WRITING:
                self._written(connection)
                return
        self._set_events(connection)

    def _written(self, connection: _Connection) -> None:
        """The answer is with the client: the request is over; close, or go on to the next one."""
        self._settle(connection)
        if connection.close_after_write:
            self._close(connection)
            return
        connection.state = _HEAD
        self._advance(connection)
        if connection.fd in self._connections:
            self._set_events(connection)

    def _refuse(self, connection: _Connection, exc: BadRequestError) -> None:
        if connection.unsent:  # refused by the checks: it never will reach Triton
            connection.unsent = False
            self.forwarded()
        self._send(connection, error_response(exc.status, str(exc), exc.close), _WRITING, exc.close)

    def _advance(self, connection: _Connection) -> None:
        """Read on in the buffer: a head, then a body, then hand the request on (or refuse it); then the
        next pipelined request, if the answer went at once.

        A loop, not recursion through :meth:`_written`: a refusal (or a 503 while Triton is down) is
        written at once, and a client pipelining a few hundred of them must not reach the recursion limit.
        """
        if connection.advancing:  # called from within (the answer went at once): the outer loop goes on
            return
        connection.advancing = True
        try:
            while connection.state in (_HEAD, _BODY) and self._connections.get(connection.fd) is connection:
                try:
                    if connection.state == _HEAD and not self._take_head(connection):
                        return
                    if connection.state == _BODY:
                        body = self._take_body(connection)
                        if body is None:
                            return
                        self._forward(connection, body)
                except BadRequestError as exc:
                    self._refuse(connection, exc)
        finally:
            connection.advancing = False

    def _take_head(self, connection: _Connection) -> bool:
        """Parse a complete head from the buffer (False: not complete yet); accept the request."""
        buffer = connection.buffer
        while buffer.startswith(b"\r\n"):  # stray blank lines between requests (RFC 9112 2.2)
            del buffer[:2]
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEAD_BYTES:
                raise BadRequestError(431, f"the request head exceeds {MAX_HEAD_BYTES} bytes")
            if connection.eof:
                if buffer.strip():
                    raise BadRequestError(400, "the request ended before its head was complete")
                self._close(connection)
            return False
        connection.last_active = time.monotonic()
        if end > MAX_HEAD_BYTES:
            raise BadRequestError(431, f"the request head exceeds {MAX_HEAD_BYTES} bytes")
        block = bytes(buffer[:end + 4])
        head = self._heads.get(block)
        if head is None:
            head = parse_head(block)
            _remember(self._heads, block, head)
        del buffer[:end + 4]
        if not self.accept():
            raise BadRequestError(503, "the server is shutting down; send the request to another replica or retry")
        connection.accepted = connection.unsent = True
        connection.head, connection.state, connection.close_request = head, _BODY, not head.keep_alive
        if head.content_length > self.max_body_bytes:
            raise BadRequestError(413, f"the request body of {head.content_length} bytes exceeds the limit of "
                                       f"{self.max_body_bytes}; send fewer or shorter texts per request")
        connection.chunks = ChunkedBody(self.max_body_bytes) if head.chunked else None
        if head.expect_continue and (head.chunked or len(buffer) < head.content_length):
            self._send(connection, b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    def _take_body(self, connection: _Connection) -> bytes | None:
        """The request body once the buffer holds all of it, else None."""
        head, buffer = connection.head, connection.buffer
        assert head is not None
        if connection.chunks is not None:
            if connection.chunks.feed(buffer):
                return bytes(connection.chunks.body)
        elif len(buffer) >= head.content_length:
            body = bytes(buffer[:head.content_length])
            del buffer[:head.content_length]
            return body
        if connection.eof:
            what = "its last chunk" if head.chunked else f"{head.content_length} bytes (Content-Length)"
            raise BadRequestError(400, f"the request body ended before {what}; send the whole body")
        return None

    def _forward(self, connection: _Connection, body: bytes) -> None:
        """Check the request, then send it on to Triton."""
        head = connection.head
        assert head is not None
        close = connection.close_request
        try:
            if route(head):
                self._check_infer_body(body, head.json_length)
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
        connection.state, connection.request, connection.attempt = _UPSTREAM, request, 1
        connection.head = connection.chunks = None
        connection.connect_deadline = time.monotonic() + CONNECT_TIMEOUT_S
        self._connect_upstream(connection)

    def _check_infer_body(self, body: bytes, json_length: int | None) -> None:
        """:func:`check_infer_body`, skipped for the JSON part of a binary request already checked."""
        if json_length is None or not json_length <= min(len(body), _MEMO_BYTES):
            check_infer_body(body, json_length)
            return
        part = body[:json_length]
        if part not in self._checked:
            check_infer_body(part)
            _remember(self._checked, part, True)

    # -- the Triton side ----------------------------------------------------------------------
    def _connect_upstream(self, connection: _Connection) -> None:
        """Send the request on the connection's upstream connection (made first if there is none)."""
        if connection.upstream is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                sock.connect(self.upstream_path)
            except (BlockingIOError, InterruptedError):  # Triton's accept backlog is full: try again shortly
                sock.close()
                if time.monotonic() < connection.connect_deadline:
                    if connection not in self._connecting:
                        self._connecting.append(connection)
                    return
                self._upstream_failed(connection, error_response(503, "the model server is not accepting "
                                                                      "connections; retry in a few seconds"))
                return
            except OSError:
                sock.close()
                self._upstream_failed(connection, error_response(503, "the model server is not running (starting "
                                                                      "or restarting); retry in a few seconds"))
                return
            upstream = _Upstream(sock)
            connection.upstream = upstream
            self._upstreams[upstream.fd] = connection
            self._epoll.register(upstream.fd, _IN)  # type: ignore[union-attr]
        if connection in self._connecting:
            self._connecting.remove(connection)
        upstream = connection.upstream
        upstream.request, upstream.sent = connection.request, 0
        upstream.response = bytearray()
        self._send_upstream(connection)

    def _send_upstream(self, connection: _Connection) -> None:
        upstream = connection.upstream
        assert upstream is not None
        request = upstream.request
        try:
            while upstream.sent < len(request):
                upstream.sent += upstream.sock.send(memoryview(request)[upstream.sent:])
        except (BlockingIOError, InterruptedError):
            if not upstream.writing:
                upstream.writing = True
                self._epoll.modify(upstream.fd, _IN | _OUT)  # type: ignore[union-attr]
            return
        except OSError as exc:
            self._upstream_lost(connection, exc)
            return
        upstream.request = b""
        if upstream.writing:
            upstream.writing = False
            self._epoll.modify(upstream.fd, _IN)  # type: ignore[union-attr]
        if connection.unsent:
            connection.unsent = False
            self.forwarded()

    def _upstream_event(self, connection: _Connection, events: int) -> None:
        upstream = connection.upstream
        assert upstream is not None
        if events & _OUT and upstream.sent < len(upstream.request):
            self._send_upstream(connection)
            if connection.upstream is not upstream:
                return
        if not events & (_IN | _ERR):
            return
        try:
            data = upstream.sock.recv(_RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._upstream_lost(connection, exc)
            return
        if connection.state != _UPSTREAM:  # nothing asked: Triton closed an idle connection (or sent junk)
            self._drop_upstream(connection)
            return
        if not data:
            self._upstream_lost(connection, _Closed())
            return
        response = upstream.response
        response += data
        end = response.find(b"\r\n\r\n")
        if end < 0:
            return
        match = _CONTENT_LENGTH.search(response, 0, end + 4)
        if match is None:
            self._upstream_lost(connection, ConnectionError("Triton sent a response without Content-Length"))
            return
        total = end + 4 + int(match.group(1))
        if len(response) < total:
            return
        upstream.used += 1
        answer = bytes(response) if len(response) == total else bytes(response[:total])
        upstream.response = bytearray()
        close = connection.close_request
        if self.draining or close:
            cut = answer.find(b"\r\n\r\n")
            answer = answer[:cut] + b"\r\nConnection: close" + answer[cut:]
            close = True
        connection.request = b""
        self._send(connection, answer, _WRITING, close)

    def _upstream_lost(self, connection: _Connection, exc: BaseException) -> None:
        """The upstream connection broke before the whole answer came: once more on a fresh one if it was a
        stale keep-alive connection and nothing of the answer came, else 502."""
        upstream = connection.upstream
        assert upstream is not None
        reused = upstream.used > 0 and not upstream.response
        self._drop_upstream(connection)
        if connection.state != _UPSTREAM:
            return
        stale = isinstance(exc, (_Closed, BrokenPipeError, ConnectionResetError))
        if connection.attempt == 1 and reused and stale:
            connection.attempt = 2
            self._connect_upstream(connection)
            return
        self._upstream_failed(connection, error_response(502, "the model server closed the connection before "
                                                              "answering (it may have crashed; it restarts by "
                                                              "itself); retry"))

    def _upstream_failed(self, connection: _Connection, answer: bytes) -> None:
        if connection in self._connecting:
            self._connecting.remove(connection)
        if connection.unsent:
            connection.unsent = False
            self.forwarded()
        close = connection.close_request or self.draining
        if close:
            cut = answer.find(b"\r\n\r\n")
            answer = answer[:cut] + b"\r\nConnection: close" + answer[cut:]
        connection.request = b""
        self._send(connection, answer, _WRITING, close)

    def _drop_upstream(self, connection: _Connection) -> None:
        upstream = connection.upstream
        if upstream is None:
            return
        connection.upstream = None
        self._upstreams.pop(upstream.fd, None)
        with contextlib.suppress(OSError, ValueError):
            self._epoll.unregister(upstream.fd)  # type: ignore[union-attr]
        upstream.close()


def _remember(memo: dict[bytes, Any], key: bytes, value: Any) -> None:
    """Add a short ``key`` to a bounded memo of the front (emptied when full: repeats refill it at once)."""
    if len(key) <= _MEMO_BYTES:
        if len(memo) >= _MEMO_ENTRIES:
            memo.clear()
        memo[key] = value
