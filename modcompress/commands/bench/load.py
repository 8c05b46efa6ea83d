"""`bench load`: a bounded, headless locust run against a loopback Triton HTTP endpoint.

Exit codes: 0 = every request succeeded; 1 = the run finished but some requests failed (counts
in the report); 2 = bad input or the endpoint is not there (one line on stderr).
"""

from __future__ import annotations

import argparse

from bench import output


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "load", help="locust load test (headless, bounded, loopback only) of a `serve start` endpoint",
        description="Simulated users post KServe v2 JSON inference requests (one text each, no think time) to "
                    "/v2/models/MODEL/infer for a bounded time. Only loopback URLs are accepted. Writes locust's "
                    "CSVs and load.json into --out: requests/s, failures, p50/p95/p99. Exit 1 if any request failed.")
    p.add_argument("--url", required=True, help="http://127.0.0.1:PORT of `serve start` (loopback only)")
    p.add_argument("--model", required=True, help="served model name")
    p.add_argument("--users", type=int, default=8, help="concurrent users, 1..256 (default: 8)")
    p.add_argument("--spawn-rate", type=float, default=8.0, help="users started per second (default: 8)")
    p.add_argument("--duration", default="20s", help="run time, e.g. 20s, 2m (at most 10m; default: 20s)")
    p.add_argument("--texts", metavar="DATAFILE", help="comments to send (.txt or any data file; default: samples)")
    p.add_argument("--format", help="format of --texts (detected when omitted)")
    p.add_argument("--out", default="runs/bench/load", help="directory for CSVs + load.json (default: %(default)s)")
    output.add_output_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bench import load
    from bench.inputs import texts_from

    config = load.LoadConfig(url=args.url, model=args.model, users=args.users, spawn_rate=args.spawn_rate,
                             duration_s=load.parse_duration(args.duration),
                             texts=texts_from(args.texts, args.format), texts_source=args.texts)
    output.progress(f"locust: {config.users} users for {config.duration_s:g} s against {config.url}")
    report = load.run(config, args.out)
    output.write_outputs(args, load.dumps(report), load.markdown(report))
    return 1 if report["failures"] else 0
