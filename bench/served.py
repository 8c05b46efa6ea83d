"""A served artifact in a process of its own, as `serve start` runs it, for benchmarks that measure the endpoint.

The benchmark's own process holds an in-process copy of the model, its measurements and their
bookkeeping; a server started inside it would run its HTTP front (a Python thread) beside all that.
Measured on the OLID TF-IDF baseline at 8 clients, that cost the front ~10% of its throughput
against Triton alone, where the same front in a process of its own (what `serve start` is) cost
~1%. So :func:`served` starts the server in a fresh process that loads the artifact itself, serves
it, and stops it when the benchmark is done with it (or dies: the pipe between the two closes).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress.errors import UserError

# Longer than the server's own start timeout (serve.server.START_TIMEOUT_S), plus loading the artifact.
_READY_TIMEOUT_S = 420.0


@dataclass(frozen=True)
class ServedUrls:
    """Where a served artifact answers."""

    http_url: str
    grpc_url: str


def _hold(conn: Any, artifact: str, backend: str, threads: int | None, serve_config: Any, front: bool) -> None:
    """The child process: load, serve, say where (or why not), serve until the parent closes the pipe."""
    try:
        from bench.artifacts import load_predictor
        from serve.server import start_server

        predictor = load_predictor(Path(artifact), backend, threads=threads)
        with start_server([predictor], serve_config, front=front) as handle:
            conn.send(("ok", handle.http_url, handle.grpc_url))
            with contextlib.suppress(EOFError, OSError):
                conn.recv()  # anything, or the end of the pipe: stop
    except BaseException as exc:  # noqa: BLE001 - told to the parent as one line, which raises it there
        with contextlib.suppress(OSError):
            conn.send(("error", str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


@contextlib.contextmanager
def served(artifact: Path, backend: str, threads: int | None, serve_config: Any,
           front: bool = True) -> Iterator[ServedUrls]:
    """Serve ``artifact`` (``export.runtime`` ``backend``, ``threads``) with ``serve_config`` from a child process.

    Args:
        artifact: artifact directory.
        backend / threads: as :func:`bench.artifacts.load_predictor` takes them.
        serve_config: a ``serve.config.ServeConfig`` (ports, batching, instances, log file).
        front: False: Triton's own HTTP on the port, no front (see :func:`serve.server.start_server`).

    Yields:
        The server's URLs, once every model is ready; the server stops when the block ends.

    Raises:
        UserError: the server did not start (the child's one-line reason).
    """
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_hold, args=(child, str(artifact), backend, threads, serve_config, front),
                              name="bench-served", daemon=False)
    process.start()
    child.close()
    try:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while not parent.poll(0.2):
            if not process.is_alive():
                raise UserError(f"the server for {artifact} exited with code {process.exitcode} before it was ready")
            if time.monotonic() > deadline:
                raise UserError(f"the server for {artifact} was not ready after {_READY_TIMEOUT_S:.0f} s")
        try:
            message = parent.recv()
        except EOFError:
            raise UserError(f"the server for {artifact} exited before it was ready") from None
        if message[0] != "ok":
            raise UserError(f"could not serve {artifact}: {message[1]}")
        yield ServedUrls(http_url=message[1], grpc_url=message[2])
    finally:
        with contextlib.suppress(OSError):
            parent.send("stop")
        parent.close()
        process.join(60)
        if process.is_alive():  # stuck stopping: its server's own process group goes with the kill below
            process.kill()
            process.join(10)
