"""`serve score`: batch scoring of a file of any size, in this process or on Ray Data.

``score(artifact, ScoreConfig(input=..., output=...)) -> ScoreResult`` reads the input as a
stream of chunks (:mod:`serve.score_input`), scores each with the artifact's
:mod:`export.runtime` predictor (:mod:`serve.score_table`), keeps every finished chunk on disk
(:mod:`serve.score_output`) and ends with one rename into OUTPUT. Memory holds one chunk at a
time, so it does not grow with the file.

1. **check** the input (file, format, columns), the output (nothing of the user's in the way,
   or the interrupted job to resume) and the artifact (its kind fits the backend): before any model loads;
2. **run** an engine: ``local``, a chunk loop here; or ``ray`` (:mod:`serve.score_ray`), Ray Data
   ``map_batches`` over an actor pool, each actor loading the artifact once;
3. **finish**: the parts become OUTPUT, ``OUTPUT.score.json`` records the job.

Both engines cut the same chunks and score them with the same function, so their outputs hold
the same rows in the same order (probabilities equal up to float rounding of batch composition).
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress.errors import ConfigError, UserError
from serve.score_input import InputSpec, input_fingerprint, inspect_input, is_url, read_chunks
from serve.score_output import PartStore, output_format
from serve.score_table import output_schema, score_table, with_row_numbers

ENGINES = ("local", "ray")
MAX_CHUNK_SIZE = 1_000_000


@dataclass(frozen=True)
class ScoreConfig:
    """One scoring job.

    Attributes:
        input: the file to score (Ray engine: also a URL Ray Data reads, e.g. ``s3://bucket/comments.csv``).
        output: the file to write (Parquet, or CSV for ``.csv`` / ``.csv.gz``).
        text_column: the texts (default: the first of text, comment_text, tweet, comment, ... present).
        id_column: copied to the output (default: ``id`` when present, else row numbers).
        input_format / output_format: override what the file names say.
        chunk_size: rows per chunk: what memory holds, what a resume repeats at most.
        engine: ``local`` or ``ray``.
        backend: :mod:`export.runtime` backend (``auto`` picks by artifact kind).
        threads: intra-op threads of the predictor (local: the runtime's default; ray: 1 per actor).
        address: Ray cluster to join (default: ``RAY_ADDRESS`` when set, as under ``ray job submit``,
            else a local Ray started for the job and stopped after it).
        workers: Ray actors, each with its own copy of the model (default: the cluster's CPUs / cpus_per_worker).
        cpus_per_worker: CPUs Ray reserves per actor (default: ``threads``).
        resume: continue an interrupted job with the same input, artifact and options.
        overwrite: replace an OUTPUT this tool wrote (or drop an interrupted job's parts).
        progress: show a progress bar (rows, rows/s) on stderr.
    """

    input: str
    output: str
    text_column: str | None = None
    id_column: str | None = None
    input_format: str | None = None
    output_format: str | None = None
    chunk_size: int = 10_000
    engine: str = "local"
    backend: str = "auto"
    threads: int | None = None
    address: str | None = None
    workers: int | None = None
    cpus_per_worker: float | None = None
    resume: bool = False
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"engine: must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if not 1 <= self.chunk_size <= MAX_CHUNK_SIZE:
            raise ConfigError(f"chunk_size: must be in 1..{MAX_CHUNK_SIZE}, got {self.chunk_size}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads: must be >= 1, got {self.threads}")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"workers: must be >= 1, got {self.workers}")
        if self.cpus_per_worker is not None and not self.cpus_per_worker > 0:
            raise ConfigError(f"cpus_per_worker: must be > 0, got {self.cpus_per_worker}")
        if self.engine == "local":
            given = [n for n in ("address", "workers", "cpus_per_worker") if getattr(self, n) is not None]
            if given:
                raise ConfigError(f"{given[0]}: only for engine ray (the local engine runs in this process)")
        if self.engine == "local" and is_url(self.input):
            raise ConfigError(f"input: {self.input} is a URL; the local engine reads local files, Ray Data reads "
                              f"object storage: pass --engine ray")
        if not self.input or not self.output:
            raise ConfigError("input and output: both are needed")
        if not is_url(self.input) and Path(self.input).resolve() == Path(self.output).resolve():
            raise ConfigError(f"output: {self.output} is the input file; choose another output")


@dataclass(frozen=True)
class ScoreResult:
    """What a job did.

    Attributes:
        rows / null_rows: rows in OUTPUT, and how many of them had empty text (null probabilities).
        scored_rows: rows this run scored (less than ``rows`` after a resume).
        resumed_rows: rows already done by the interrupted run(s) this one continued.
        seconds: this run's wall time; ``setup_seconds`` of it went to loading the model / starting Ray.
        already_complete: ``resume`` found OUTPUT already finished by this same job (nothing ran).
    """

    output: Path
    format: str
    engine: str
    backend: str
    labels: list[str]
    rows: int
    null_rows: int
    scored_rows: int
    resumed_rows: int
    seconds: float
    setup_seconds: float
    already_complete: bool = False

    @property
    def rows_per_s(self) -> float:
        """Rows this run scored per second, setup excluded (reading, scoring, writing, the final file)."""
        busy = self.seconds - self.setup_seconds
        return self.scored_rows / busy if busy > 0 else 0.0


def artifact_fingerprint(artifact: Path, backend: str) -> tuple[dict[str, Any], Any, str]:
    """(fingerprint, artifact info, resolved backend); ArtifactError when not an artifact or the backend misfits."""
    from compress.artifact import read_info
    from export.runtime import resolve_backend

    info = read_info(artifact)
    resolved = resolve_backend(info, artifact, backend)
    digest = hashlib.sha256((artifact / "artifact.json").read_bytes()).hexdigest()
    return {"artifact": str(artifact.resolve()), "artifact_json_sha256": digest, "backend": resolved}, info, resolved


class _Progress:
    """A tqdm bar over rows (rows/s, rows with empty text), or nothing."""

    def __init__(self, enabled: bool, total: int | None, done: int, null_rows: int) -> None:
        self.bar = None
        self.null_rows = null_rows
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit=" rows", unit_scale=True, file=sys.stderr,
                            mininterval=0.5, desc="scoring", dynamic_ncols=True)

    def __call__(self, rows: int, null_rows: int) -> None:
        if self.bar is not None:
            self.null_rows += null_rows
            self.bar.set_postfix_str(f"empty text {self.null_rows}", refresh=False)
            self.bar.update(rows)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_local(spec: InputSpec, artifact: Path, backend: str, threads: int | None, chunk_size: int,
              store: PartStore, schema: Any, on_chunk: Callable[[int, int], None]) -> float:
    """The local engine: load the predictor, then read, score and store chunk after chunk.

    Chunks the store already holds (a resumed job) are read again but not scored. Returns the
    seconds spent loading the predictor.
    """
    from export.runtime import load

    t0 = time.perf_counter()
    predictor = load(artifact, backend=backend, threads=threads)
    setup = time.perf_counter() - t0
    for k, chunk in enumerate(read_chunks(spec, chunk_size)):
        if k < store.chunks:
            continue
        table = score_table(predictor, chunk, spec.text_column, spec.id_column)
        if spec.id_column is None:
            table = with_row_numbers(table, k * chunk_size)
        nulls_before = store.null_rows
        store.write(table, schema)
        on_chunk(table.num_rows, store.null_rows - nulls_before)
    return setup


def score(artifact: str | Path, config: ScoreConfig, log: Callable[[str], None] = lambda _m: None) -> ScoreResult:
    """Score ``config.input`` with ``artifact`` into ``config.output`` (see the module docstring).

    Raises:
        UserError (DataError / ConfigError / ArtifactError): one line, and nothing on disk changed
        when it comes from the checks before the job starts.
    """
    t0 = time.perf_counter()
    artifact = Path(artifact)
    # 1. check, before any model loads
    spec = inspect_input(config.input, config.input_format, config.text_column, config.id_column)
    output = Path(config.output)
    fmt = output_format(output, config.output_format)
    model_part, info, backend = artifact_fingerprint(artifact, config.backend)
    labels = list(info.labels)
    schema = output_schema(labels, spec.id_column)
    if len(set(schema.names)) < len(schema.names):
        raise ConfigError(f"id_column: {spec.id_column!r} is also an output column name; pass another --id-column")
    fingerprint = {**input_fingerprint(spec), **model_part, "chunk_size": config.chunk_size,
                   "output_format": fmt, "engine": config.engine}
    store = PartStore.open(output, fmt, fingerprint, resume=config.resume, overwrite=config.overwrite)
    result = dict(output=output, format=fmt, engine=config.engine, backend=backend, labels=labels)
    if store.complete:
        log(f"{output} is already the finished result of this job; nothing to do")
        return ScoreResult(**result, rows=store.rows, null_rows=store.null_rows, scored_rows=0,
                           resumed_rows=store.rows, seconds=time.perf_counter() - t0, setup_seconds=0.0,
                           already_complete=True)
    resumed = store.rows
    if resumed:
        log(f"resuming after {store.chunks} finished chunk(s), {resumed} rows")

    # 2. run an engine
    progress = _Progress(config.progress, spec.num_rows, store.rows, store.null_rows)
    t_run = time.perf_counter()
    try:
        if config.engine == "ray":
            from serve.score_ray import run_ray

            setup = run_ray(spec, artifact, backend, config.threads or 1, config.chunk_size, store, schema,
                            progress, address=config.address, workers=config.workers,
                            cpus_per_worker=config.cpus_per_worker, log=log)
        else:
            setup = run_local(spec, artifact, backend, config.threads, config.chunk_size, store, schema, progress)
    except KeyboardInterrupt:
        log(f"interrupted after {store.rows} rows ({store.chunks} chunks); rerun the same command with --resume "
            f"to continue")
        raise
    except UserError:
        store.discard_if_empty()  # bad input found before the first chunk: leave the disk as it was
        raise
    finally:
        progress.close()

    # 3. finish
    store.finish(schema, {"artifact": str(artifact.resolve()), "backend": backend, "engine": config.engine,
                          "labels": labels, "input": spec.path, "text_column": spec.text_column,
                          "id_column": spec.id_column, "seconds_last_run": round(time.perf_counter() - t0, 3)})
    seconds = time.perf_counter() - t0
    return ScoreResult(**result, rows=store.rows, null_rows=store.null_rows, scored_rows=store.rows - resumed,
                       resumed_rows=resumed, seconds=seconds, setup_seconds=(t_run - t0) + setup)
