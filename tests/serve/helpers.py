"""A deterministic Predictor built in code, and small helpers for the serve tests."""

from __future__ import annotations

import os
import socket
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tests.fixtures import JIGSAW_LABELS


class NgramPredictor:
    """A real, seeded ``export.runtime.Predictor``: hashed character 3-grams -> 2-layer MLP -> sigmoid.

    Texts starting with ``slow:`` make ``predict`` sleep ``slow_s`` first (to test draining and
    batching); when such a text arrives, the process running ``predict`` (a Triton instance, once
    served) creates ``started_dir/<its pid>``. Texts starting with ``boom:`` make it raise (a
    broken model). Picklable, so the server can send it to its instances.
    """

    def __init__(self, name: str = "tiny", labels: Sequence[str] = JIGSAW_LABELS, seed: int = 0, dim: int = 256,
                 hidden: int = 32, max_batch_size: int = 8, slow_s: float = 0.0,
                 started_dir: Path | None = None) -> None:
        self.name = name
        self.labels = list(labels)
        self.max_batch_size = max_batch_size
        self.dim = dim
        self.slow_s = slow_s
        self.started_dir = started_dir
        generator = torch.Generator().manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, len(self.labels)))
        with torch.no_grad():
            for param in self.net.parameters():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
        self.net.eval()
        # Thresholds around the middle of the output range, so some labels fire and some do not.
        self.thresholds = np.linspace(0.35, 0.65, len(self.labels)).astype(np.float32)

    def features(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, dim) L2-normalised counts of hashed character 3-grams."""
        x = torch.zeros(len(texts), self.dim)
        for i, text in enumerate(texts):
            padded = f" {text.lower()} "
            for j in range(len(padded) - 2):
                x[i, zlib.crc32(padded[j:j + 3].encode()) % self.dim] += 1.0
        return x / x.norm(dim=1, keepdim=True).clamp_min(1e-6)

    def predict(self, texts: list[str]) -> np.ndarray:
        """(N, L) float32 probabilities."""
        if len(texts) > self.max_batch_size:
            raise ValueError(f"batch of {len(texts)} > max_batch_size {self.max_batch_size}")
        if any(t.startswith("boom:") for t in texts):
            raise RuntimeError("boom")
        if any(t.startswith("slow:") for t in texts):
            if self.started_dir is not None:
                (self.started_dir / str(os.getpid())).touch()
            time.sleep(self.slow_s)
        with torch.no_grad():
            return torch.sigmoid(self.net(self.features(texts))).numpy().astype(np.float32)

    def predict_all(self, texts: Sequence[str]) -> np.ndarray:
        """In-process reference over any number of texts (chunks of max_batch_size)."""
        chunks = [self.predict(list(texts[i:i + self.max_batch_size]))
                  for i in range(0, len(texts), self.max_batch_size)]
        return np.concatenate(chunks)


def labels_over(probs: np.ndarray, predictor: NgramPredictor) -> list[list[str]]:
    """Reference for the LABELS output: names with probability >= threshold, per row."""
    return [[n for n, p, t in zip(predictor.labels, row, predictor.thresholds, strict=True) if p >= t]
            for row in probs]




def started_in(directory: Path) -> set[str]:
    """Pids of the processes where an NgramPredictor with ``started_dir=directory`` began a slow text."""
    return {p.name for p in directory.iterdir()} if directory.is_dir() else set()


def port_is_free(port: int) -> bool:
    """True if nothing listens on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def read_request(conn: socket.socket, buffer: bytes) -> tuple[bytes, bytes] | None:
    """The next whole HTTP request (head and Content-Length body) from ``conn``, whose bytes already read
    start ``buffer``: (the request, what follows it), or None when the peer closes before a head is whole."""
    while b"\r\n\r\n" not in buffer:
        data = conn.recv(65536)
        if not data:
            return None
        buffer += data
    head, _, rest = buffer.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(rest) < length:
        rest += conn.recv(65536)
    return head + b"\r\n\r\n" + rest[:length], rest[length:]


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0, step_s: float = 0.05) -> bool:
    """Poll ``condition`` until true or ``timeout_s`` passes (bounded); returns the last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step_s)
    return bool(condition())


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc's parent ids)."""
    parents = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                parents[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def command_line(pid: int) -> list[str]:
    """The argv of a process, as any local user reads it from /proc/PID/cmdline."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode("utf-8", "replace").split("\0")[:-1]


def _h2_frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def raw_grpc_call(port: int, method: str, headers: Sequence[tuple[str, str]] = (),
                  timeout_s: float = 10.0) -> list[tuple[int, bytes]]:
    """One unary gRPC call with an empty message, written as raw HTTP/2 frames on 127.0.0.1:``port``.

    Unlike a gRPC client library, which refuses to send header names with upper-case letters,
    this sends ``headers`` exactly as given (HPACK literals, no Huffman coding). Returns the
    (frame type, payload) of every frame the server sent until it ended or reset the stream, or
    went away: DATA (0) carries the reply, RST_STREAM (3) / GOAWAY (7) a refusal.
    """
    def literal(name: str, value: str) -> bytes:
        name_b, value_b = name.encode(), value.encode()
        assert len(name_b) < 127 and len(value_b) < 127
        return b"\x00" + bytes([len(name_b)]) + name_b + bytes([len(value_b)]) + value_b

    block = b"".join(literal(k, v) for k, v in [
        (":method", "POST"), (":scheme", "http"), (":path", method), (":authority", "localhost"),
        ("content-type", "application/grpc"), ("te", "trailers"), *headers])
    message = b"\x00\x00\x00\x00\x00"  # not compressed, length 0: an empty protobuf message
    frames: list[tuple[int, bytes]] = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _h2_frame(4, 0, 0, b"") + _h2_frame(1, 4, 1, block)
                     + _h2_frame(0, 1, 1, message))
        buffer = b""
        while True:
            data = sock.recv(65536)
            if not data:
                return frames
            buffer += data
            while len(buffer) >= 9 and len(buffer) >= 9 + int.from_bytes(buffer[:3], "big"):
                size = int.from_bytes(buffer[:3], "big")
                kind, flags, stream = buffer[3], buffer[4], int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
                frames.append((kind, buffer[9:9 + size]))
                buffer = buffer[9 + size:]
                if kind == 4 and not flags & 1:  # acknowledge the server's SETTINGS
                    sock.sendall(_h2_frame(4, 1, 0, b""))
                if kind in (3, 7) or (stream == 1 and flags & 1):  # reset, goaway, or the end of our stream
                    return frames
