"""The Ray engine of `serve score`: the local engine's job on Ray Data.

1. **read** with Ray Data: ``read_csv`` / ``read_parquet`` with the local engine's pyarrow
   options, JSON lines with the local engine's parser through :class:`JsonLinesDatasource` (Ray's own
   JSON reader holds a whole file in memory);
2. **score** with ``map_batches(ScoreActor)`` over an actor pool: each actor loads the artifact
   once, in ``__init__``, and runs :func:`serve.score_table.score_table` on batches of
   ``chunk_size`` rows; blocks stay in input order (``preserve_order``);
3. **write** in this process (the driver): the output arrives in batches of exactly ``chunk_size``
   rows, numbered here, and each becomes a part of the same :class:`serve.score_output.PartStore`
   as the local engine's, so ``--resume`` and the final file work the same way.

Ray is joined at ``address``, else at ``RAY_ADDRESS`` (set under ``ray job submit``), else started
here for the job and stopped after it. A local Ray gets this machine's CPUs plus one logical CPU
for the read task that streams the input, so by default every core runs an actor. The input and
the artifact must be readable from every worker: any path on a one-machine Ray; on a cluster a
shared filesystem, a path inside the job's ``working_dir``, or (input) object storage such as
``s3://``. Ray Data has no row offset, so a resumed job reads and scores its finished chunks again
and drops them here (the local engine only reads them again).

Imported only on the Ray path: the local engine never imports ray.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray
import ray.data
from ray.data.datasource import FileBasedDatasource

from compress.errors import ConfigError, UserError
from serve.score_input import InputSpec, csv_options, json_line_blocks
from serve.score_output import PartStore
from serve.score_table import score_table, with_row_numbers

READ_CPUS = 1  # what Ray reserves for a read task by default


class JsonLinesDatasource(FileBasedDatasource):
    """JSON lines read as a stream (one block per MiB) by :func:`serve.score_input.json_line_blocks`."""

    def __init__(self, paths: str | list[str], text_column: str, id_column: str | None, **kwargs: Any) -> None:
        super().__init__(paths, **kwargs)
        self.text_column, self.id_column = text_column, id_column

    def _read_stream(self, f: Any, path: str):  # noqa: ANN201 - Ray's signature
        yield from json_line_blocks(f, self.text_column, self.id_column)


class ScoreActor:
    """One Ray actor: loads the artifact once, then scores batches (pyarrow tables) like the local engine."""

    def __init__(self, artifact: str, backend: str, threads: int, text_column: str, id_column: str | None) -> None:
        from export.runtime import load

        self.predictor = load(artifact, backend=backend, threads=threads)
        self.text_column, self.id_column = text_column, id_column

    def __call__(self, batch: pa.Table) -> pa.Table:
        return score_table(self.predictor, batch, self.text_column, self.id_column)


def local_cpus() -> int:
    """Logical CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A GCS ``HOST:PORT`` that refuses connections is one line now (ray.init would retry for minutes)."""
    match = re.fullmatch(r"(?:ray://)?([\w.-]+):(\d+)", address)
    if match is None:  # "auto", a URL: ray.init knows what to do with it
        return
    host, port = match.groups()
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise UserError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); check --address "
                        f"(or RAY_ADDRESS)") from None


def connect(address: str | None = None, num_cpus: int | None = None) -> tuple[bool, bool]:
    """Join or start Ray. Returns (connected here: the caller disconnects / stops it, it is a cluster we joined).

    Args:
        address: a cluster address (``ray://HOST:10001``, ``HOST:6379``, ``auto``); None: ``RAY_ADDRESS``
            when set, else start a local Ray with ``num_cpus`` logical CPUs (default: this machine's + 1).
    """
    if ray.is_initialized():
        return False, bool(address or os.environ.get("RAY_ADDRESS"))
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address or os.environ.get("RAY_ADDRESS"):
        _check_reachable(address or os.environ["RAY_ADDRESS"])
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise UserError(f"cannot join the Ray cluster at {address or os.environ.get('RAY_ADDRESS')}: "
                            f"{' '.join(str(exc).split())[:200]}; check --address (or RAY_ADDRESS)") from None
        return True, True
    ray.init(num_cpus=num_cpus or local_cpus() + READ_CPUS, include_dashboard=False, **quiet)
    return True, False


def _user_error(exc: BaseException) -> UserError | None:
    """The UserError a Ray task or actor raised, unwrapped from Ray's exceptions (whose text holds tracebacks)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ray.exceptions.RayTaskError):
            exc = exc.cause
            continue
        if isinstance(exc, UserError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def dataset(spec: InputSpec) -> ray.data.Dataset:
    """The input as a Ray dataset of (text, id) columns, read as the local engine reads it."""
    if spec.format == "parquet":
        return ray.data.read_parquet(spec.path, columns=spec.columns)
    if spec.format == "jsonl":
        return ray.data.read_datasource(JsonLinesDatasource(spec.path, spec.text_column, spec.id_column))
    return ray.data.read_csv(spec.path, **csv_options(spec.format, spec.columns))


def pool_size(workers: int | None, cpus_per_worker: float, started_here: bool, log: Callable[[str], None]) -> int:
    """Actors for the cluster's CPUs, one CPU left to the read task; a pool that starves it is refused (local)."""
    cpus = float(ray.cluster_resources().get("CPU", 1))
    size = workers or max(1, int((cpus - READ_CPUS) // cpus_per_worker))
    if size * cpus_per_worker + READ_CPUS > cpus:
        message = (f"{size} workers x {cpus_per_worker:g} CPUs leave no CPU of the Ray cluster's {cpus:g} for the task "
                   f"that reads the input; lower --workers or --cpus-per-worker")
        if not started_here:
            log(f"warning: {message} (an autoscaling cluster may add CPUs)")
        else:
            raise ConfigError(message)
    return size


def run_ray(spec: InputSpec, artifact: Path, backend: str, threads: int, chunk_size: int, store: PartStore,
            schema: pa.Schema, on_chunk: Callable[[int, int], None], address: str | None = None,
            workers: int | None = None, cpus_per_worker: float | None = None,
            log: Callable[[str], None] = lambda _m: None) -> float:
    """Score ``spec`` on Ray Data into ``store`` (see the module docstring). Returns the seconds joining Ray took."""
    t0 = time.perf_counter()
    connected, cluster = connect(address)
    setup = time.perf_counter() - t0
    try:
        cpus_per_worker = cpus_per_worker or float(threads)
        size = pool_size(workers, cpus_per_worker, connected and not cluster, log)
        log(f"Ray: {size} actor(s) x {cpus_per_worker:g} CPU, {threads} thread(s) each, "
            f"on {ray.cluster_resources().get('CPU', 0):g} CPUs")
        # On a cluster the artifact path is passed as given, so a relative one resolves in each worker's
        # working_dir; a local Ray's workers share this machine, where the absolute path is the same file.
        model_path = str(artifact) if cluster else str(artifact.resolve())
        ds = dataset(spec).map_batches(
            ScoreActor, batch_size=chunk_size, batch_format="pyarrow",
            fn_constructor_kwargs={"artifact": model_path, "backend": backend, "threads": threads,
                                   "text_column": spec.text_column, "id_column": spec.id_column},
            compute=ray.data.ActorPoolStrategy(size=size), num_cpus=cpus_per_worker)
        ds.context.execution_options.preserve_order = True
        ds.context.enable_progress_bars = False
        ds.context.print_on_execution_start = False
        try:
            for k, batch in enumerate(ds.iter_batches(batch_size=chunk_size, batch_format="pyarrow",
                                                      prefetch_batches=1)):
                if k < store.chunks:
                    continue
                if spec.id_column is None:
                    batch = with_row_numbers(batch, k * chunk_size)
                nulls_before = store.null_rows
                store.write(batch, schema)
                on_chunk(batch.num_rows, store.null_rows - nulls_before)
        except Exception as exc:  # noqa: BLE001 - a user's error inside Ray comes back as one line
            cause = _user_error(exc)
            if cause is None:
                raise
            raise type(cause)(str(cause)) from None
    finally:
        if connected:
            ray.shutdown()
    return setup
