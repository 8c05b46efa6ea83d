"""`bench score-speed`: `serve score` rows/s and peak RSS, local engine and local Ray, vs in-process predict."""

from __future__ import annotations

import argparse

from bench import output


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score-speed", help="batch scoring: serve score rows/s and peak RSS (local, Ray) vs in-process predict",
        description="Write a big and a small CSV from --texts (cycled); time predict in-process on the chunks serve "
                    "score cuts from the big one; run serve score per engine on both files, each in a fresh process "
                    "(rows/s without setup, peak RSS); compare the engines' outputs. Reports engine / in-process "
                    "throughput and big-file / small-file peak RSS.")
    p.add_argument("artifacts", nargs="+", metavar="ARTIFACT", help="artifact directories")
    p.add_argument("--texts", metavar="DATAFILE", help="texts to cycle (.txt or any data file; default: samples)")
    p.add_argument("--format", help="format of --texts (detected when omitted)")
    p.add_argument("--rows", type=int, default=1_000_000, help="rows of the big file (default: 1000000)")
    p.add_argument("--small-rows", type=int, default=10_000, help="rows of the small file (default: 10000)")
    p.add_argument("--chunk-size", type=int, default=10_000, help="serve score chunk size (default: 10000)")
    p.add_argument("--engines", default="local,ray", help="serve score engines (default: local,ray)")
    p.add_argument("--backend", default="auto", help="export.runtime backend (default: auto)")
    p.add_argument("--threads", type=int, help="intra-op threads (local and in-process; Ray: per actor, default 1)")
    p.add_argument("--ray-workers", type=int, help="Ray actors (default: serve score's, one per CPU)")
    p.add_argument("--rounds", type=int, default=1,
                   help="alternate in-process and the local engine on the big file this many times; the local "
                        "ratio is the median of the rounds (default: 1)")
    p.add_argument("--work-dir", metavar="DIR", help="keep the files and outputs in a new directory here "
                                                     "(default: a temporary one, removed after)")
    output.add_output_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bench import score_speed
    from bench.inputs import DEFAULT_TEXTS, read_texts

    texts = tuple(read_texts(args.texts, args.format)) if args.texts else DEFAULT_TEXTS  # all of them, cycled
    config = score_speed.ScoreSpeedConfig(
        rows=args.rows, small_rows=args.small_rows, chunk_size=args.chunk_size,
        engines=tuple(output.split_list(args.engines, str, "engines")), texts=texts, texts_source=args.texts,
        backend=args.backend, threads=args.threads, ray_workers=args.ray_workers, work_dir=args.work_dir,
        rounds=args.rounds)
    report = score_speed.run(args.artifacts, config, log=output.progress)
    output.write_outputs(args, score_speed.dumps(report), score_speed.markdown(report), command="bench score-speed")
    return 0
