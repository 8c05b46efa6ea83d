"""`serve score`: parse -> ScoreConfig -> serve.score.score -> one summary line (or JSON)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from compress.errors import UserError
from serve.score_input import FORMATS
from serve.score_output import OUTPUT_FORMATS


def _number(cast: Callable[[str], float], flag: str) -> Callable[[str], float]:
    """An argparse type whose bad value is one UserError line (argparse would print its usage first)."""

    def parse(text: str) -> float:
        try:
            return cast(text)
        except ValueError:
            raise UserError(f"{flag}: expected a{'n integer' if cast is int else ' number'}, got {text!r}") from None

    return parse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score", help="score a file of any size (CSV/TSV/JSONL/Parquet) into Parquet or CSV, locally or on Ray",
        description="Stream INPUT through an artifact in chunks (memory holds one chunk) and write OUTPUT: the id "
                    "column (or `row`, the 0-based data row), prob_<label> per label, and `labels` (those at or "
                    "over the artifact's thresholds). Rows with empty text get nulls and are counted. Finished "
                    "chunks are kept on disk: after a kill, the same command with --resume goes on from the last "
                    "one. --engine ray runs the same job on Ray Data (an actor pool, one model per actor).")
    p.add_argument("artifact", metavar="ARTIFACT", help="artifact directory (any kind: torch, ONNX, int8, baseline)")
    p.add_argument("--input", required=True, metavar="FILE",
                   help="csv, tsv, jsonl (also .gz) or parquet; with --engine ray also a URL Ray reads (s3://...)")
    p.add_argument("--output", required=True, metavar="FILE", help="Parquet (default) or CSV for .csv / .csv.gz")
    p.add_argument("--text-column", metavar="COL",
                   help="column of the texts (default: the first of text, comment_text, tweet, comment, ...)")
    p.add_argument("--id-column", metavar="COL", help="column copied as the row id (default: id if present, "
                                                      "else row numbers)")
    p.add_argument("--format", metavar="FORMAT", help=f"input format ({', '.join(FORMATS)}; default: from the name)")
    p.add_argument("--output-format", metavar="FORMAT",
                   help=f"{', '.join(OUTPUT_FORMATS)} (default: from the output name)")
    p.add_argument("--chunk-size", type=_number(int, "--chunk-size"), default=10_000, metavar="ROWS",
                   help="rows per chunk: what memory holds and what a resume repeats at most (default: %(default)s)")
    p.add_argument("--engine", default="local", help="local or ray (default: %(default)s)")
    p.add_argument("--backend", default="auto", help="export.runtime backend (default: %(default)s, by artifact kind)")
    p.add_argument("--threads", type=_number(int, "--threads"),
                   help="intra-op threads of the model (local: the runtime's default; ray: 1 per actor)")
    p.add_argument("--address", help="ray: cluster to join (default: RAY_ADDRESS if set, else a local Ray for the job)")
    p.add_argument("--workers", type=_number(int, "--workers"),
                   help="ray: actors, one model each (default: the cluster's CPUs / --cpus-per-worker, one CPU left "
                        "for reading)")
    p.add_argument("--cpus-per-worker", type=_number(float, "--cpus-per-worker"),
                   help="ray: CPUs reserved per actor (default: --threads)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run of the same command")
    p.add_argument("--overwrite", action="store_true", help="replace an OUTPUT this command wrote earlier")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar on stderr")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from serve.score import ScoreConfig, score

    config = ScoreConfig(
        input=args.input, output=args.output, text_column=args.text_column, id_column=args.id_column,
        input_format=args.format, output_format=args.output_format, chunk_size=args.chunk_size,
        engine=args.engine, backend=args.backend, threads=args.threads, address=args.address,
        workers=args.workers, cpus_per_worker=args.cpus_per_worker, resume=args.resume,
        overwrite=args.overwrite, progress=args.progress)
    result = score(args.artifact, config, log=lambda message: print(message, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps({"output": str(result.output), "format": result.format, "engine": result.engine,
                          "backend": result.backend, "labels": result.labels, "rows": result.rows,
                          "null_rows": result.null_rows, "scored_rows": result.scored_rows,
                          "resumed_rows": result.resumed_rows, "seconds": round(result.seconds, 3),
                          "rows_per_s": round(result.rows_per_s, 1),
                          "already_complete": result.already_complete}, indent=2))
        return 0
    if result.already_complete:
        print(f"{result.output} is already complete: {result.rows} rows ({result.null_rows} with empty text)")
        return 0
    resumed = f", {result.resumed_rows} done before the resume" if result.resumed_rows else ""
    print(f"scored {result.scored_rows} rows in {result.seconds:.1f} s ({result.rows_per_s:.0f} rows/s after "
          f"{result.setup_seconds:.1f} s of setup; engine {result.engine}, backend {result.backend}){resumed} -> "
          f"{result.output} ({result.rows} rows, {result.null_rows} with empty text: null probabilities)")
    return 0
