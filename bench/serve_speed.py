"""Serving throughput: the Triton endpoint vs the same predictor in-process, in one run.

For each artifact:

1. **in-process**: the :mod:`export.runtime` predictor's ``predict`` on batches of ``c`` texts
   (c = each concurrency), back to back in one thread: examples/s, and the p50/p99 latency of a
   batch-1 call. Batch ``c`` is the best a server can do with ``c`` clients sending one text each
   (the dynamic batcher can at most merge their ``c`` requests into one batch), so it is the
   reference the endpoint is held to.
2. **endpoint**: the same artifact, loaded the same way (backend, threads), served by a real
   Triton server from :func:`serve.server.start_server` on free loopback ports, in a process of its
   own as `serve start` runs (:mod:`bench.served`; a fresh server per level, a few seconds to
   start, ``instances`` model instances); ``c`` client threads in a
   separate process, each with its own :class:`serve.client.ServeClient`, send one text per
   request until ``requests`` requests are done: requests/s (= texts/s) and p50/p99 request
   latency, plus Triton's own counters (mean executed batch size, mean queue time). The client
   speaks each of ``protocols``: ``http`` (KServe binary tensor data, through the HTTP front, the
   default), ``http-json`` (the same with JSON tensors) and ``grpc`` (Triton's own gRPC port,
   tritonclient) and ``http-direct`` (binary tensors to a second server of the same model whose
   Triton listens on TCP itself, without the front: not a way to serve, the reference that says
   what the front costs); the first is the headline. With ``http`` and ``http-direct`` both
   measured, the report gives the front's cost at each level: 1 - (http req/s / http-direct
   req/s), with the per-round (paired) values. The two servers idle while the other is measured.

The dynamic batcher is tuned per level (``tune_batcher``): preferred batch size ``c`` and a
``max_queue_delay_us`` window (10 ms by default). Without it, ``c`` closed-loop clients and one
model instance settle into alternating partial batches (while one batch computes, the others
queue up and are dispatched as soon as it ends, before the answered clients send again): with
8 clients the mean batch is ~4 and a DistilBERT-sized model loses ~25-40% of its throughput.

``ratio`` = endpoint requests/s / in-process examples/s at the same ``c``; the headline is ``c = 8``.
The two alternate ``rounds`` times per level on the same server (in-process, endpoint,
in-process, endpoint, ...; with several protocols, each round runs them all, in rotated order):
on a shared machine whose speed drifts by tens of percent within a minute, drift then hits both
sides alike instead of whichever ran second. Rates are totals over
the rounds; the per-round rates and ratios are in the JSON. In-process runs while the server
idles and the endpoint while this process waits, so the two never compete for the CPU; the client
threads do share it with the server (as a client on the same box would). Every request count is
bounded. The server's model instances run with sleeping OpenMP workers
(:func:`compress.cpu.sleeping_openmp_workers`); ``bench serve-speed`` gives the in-process side the
same policy when it starts (``settings.omp_wait_policy``), so that spinning PyTorch threads, up to
25x slower on a shared machine, do not decide the ratio.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.measure import CpuWatch, machine_notes, percentiles_ms, time_calls
from bench.served import ServedUrls, served
from compress.errors import ConfigError, UserError

HEADLINE_CONCURRENCY = 8
PROTOCOLS = ("http", "http-json", "grpc", "http-direct")


@dataclass(frozen=True)
class ServeSpeedConfig:
    """What ``bench serve-speed`` measures.

    Attributes:
        concurrency: client threads per measurement (each sends one text per request).
        requests: requests per concurrency level (bounded, at least 2 per thread).
        texts: comments to send (cycled), same for in-process and endpoint.
        backend: export.runtime backend.
        max_queue_delay_us: Triton dynamic batcher delay (the longest a request waits for a batch to fill).
        tune_batcher: per level, set Triton's preferred batch size to ``min(c, max batch)`` (none and no
            delay for c = 1), as a deployment tuned for that load would; False = the same plain batcher
            (``max_queue_delay_us``, no preferred size) at every level.
        rounds: in-process / endpoint alternations per level (each ``requests`` long).
        warmup: untimed requests per thread (and untimed in-process batches).
        max_seconds: stop a measurement after this long (the requests done so far count).
        threads: intra-op threads of PyTorch / ONNX Runtime (None: the runtime's default).
        protocols: how the clients call the endpoint (:data:`PROTOCOLS`); the first is the headline.
        instances: Triton model instances (each a process with its own copy of the model).
    """

    concurrency: tuple[int, ...] = (1, 8, 32)
    requests: int = 400
    texts: tuple[str, ...] = ()
    texts_source: str | None = None
    backend: str = "auto"
    max_queue_delay_us: int = 10_000
    tune_batcher: bool = True
    rounds: int = 3
    warmup: int = 2
    max_seconds: float = 120.0
    threads: int | None = None
    protocols: tuple[str, ...] = ("http",)
    instances: int = 1

    def __post_init__(self) -> None:
        if not self.concurrency or any(c < 1 or c > 256 for c in self.concurrency):
            raise ConfigError(f"concurrency: must be integers in 1..256, got {list(self.concurrency)}")
        if not 1 <= self.requests <= 100_000:
            raise ConfigError(f"requests: must be in 1..100000, got {self.requests}")
        if not 1 <= self.rounds <= 20:
            raise ConfigError(f"rounds: must be in 1..20, got {self.rounds}")
        if not self.texts:
            raise ConfigError("texts: need at least one text to send")
        if self.max_queue_delay_us < 0:
            raise ConfigError(f"max_queue_delay_us: must be >= 0, got {self.max_queue_delay_us}")
        if not self.protocols or len(set(self.protocols)) != len(self.protocols) or \
                any(p not in PROTOCOLS for p in self.protocols):
            raise ConfigError(f"protocols: must be distinct names from {', '.join(PROTOCOLS)}, got "
                              f"{list(self.protocols)}")
        if not 1 <= self.instances <= 64:
            raise ConfigError(f"instances: must be in 1..64, got {self.instances}")


def in_process(predictor: Any, texts: Sequence[str], batch_size: int, examples: int, warmup: int,
               max_seconds: float) -> dict[str, Any]:
    """Back-to-back ``predict`` on batches of ``batch_size`` until ``examples`` texts: their count, total
    seconds and per-call latencies (:func:`merge_in_process` turns rounds of these into rates)."""
    batches = [[texts[(start + j) % len(texts)] for j in range(batch_size)]
               for start in range(0, max(examples, batch_size), batch_size)]
    timing = time_calls(predictor.predict, batches, warmup, len(batches), max_seconds)
    return {"batch_size": batch_size, "examples": timing.examples, "seconds": timing.total_s,
            "latencies_s": timing.seconds.tolist()}


def endpoint(url: str, model: str, texts: Sequence[str], concurrency: int, requests: int, warmup: int,
             max_seconds: float, binary: bool = True) -> dict[str, Any]:
    """``concurrency`` threads, one ServeClient each, one text per request until ``requests`` are done:
    their count, wall seconds and per-request latencies (see :func:`merge_endpoint`). ``binary``: HTTP
    tensors as KServe binary data, else JSON."""
    from serve.client import ServeClient

    lock = threading.Lock()
    counter = {"next": 0}
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors: list[str] = []
    ready = threading.Barrier(concurrency + 1)
    deadline = {"t": float("inf")}

    def worker(k: int) -> None:
        try:
            with ServeClient(url, model=model, binary=binary) as client:
                for i in range(warmup):
                    client.predict([texts[(k + i) % len(texts)]])
                ready.wait()
                while True:
                    with lock:
                        i = counter["next"]
                        if i >= requests or time.perf_counter() > deadline["t"]:
                            return
                        counter["next"] += 1
                    t0 = time.perf_counter()
                    client.predict([texts[i % len(texts)]])
                    latencies[k].append(time.perf_counter() - t0)
        except threading.BrokenBarrierError:
            return
        except Exception as exc:  # noqa: BLE001 - reported in the result, the run goes on
            errors.append(f"{type(exc).__name__}: {exc}")
            ready.abort()

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(concurrency)]
    for t in threads:
        t.start()
    try:
        ready.wait(timeout=120)
    except threading.BrokenBarrierError:
        pass
    start = time.perf_counter()
    deadline["t"] = start + max_seconds
    for t in threads:
        t.join(timeout=max_seconds + 60)
    wall = time.perf_counter() - start
    if errors:
        raise UserError(f"endpoint requests failed at concurrency {concurrency}: {errors[0]}")
    flat = [s for per in latencies for s in per]
    if not flat:
        raise UserError(f"no request finished at concurrency {concurrency}")
    return {"concurrency": concurrency, "requests": len(flat), "seconds": wall, "latencies_s": flat}


def endpoint_in_subprocess(url: str, model: str, texts: Sequence[str], concurrency: int, requests: int,
                           warmup: int, max_seconds: float, binary: bool = True) -> dict[str, Any]:
    """:func:`endpoint` run in a fresh Python process (it shares the CPU, as a client on the same box would).

    This process holds the in-process predictor; the clients get a process of their own so that
    nothing of this one (its threads, its garbage collector) runs beside them.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(endpoint, url, model, list(texts), concurrency, requests, warmup, max_seconds,
                           binary).result()


def _merge(rounds: Sequence[dict[str, Any]], size: str, count: str, rate: str) -> dict[str, Any]:
    """Rounds -> ``rate`` = total ``count`` / total seconds, the per-round rates, latency percentiles."""
    total = sum(r[count] for r in rounds)
    seconds = sum(r["seconds"] for r in rounds)
    return {size: rounds[0][size], count: total, "seconds": seconds, rate: total / seconds,
            f"per_round_{rate}": [r[count] / r["seconds"] for r in rounds],
            **percentiles_ms([s for r in rounds for s in r["latencies_s"]], (50, 99))}


def merge_in_process(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Rounds of :func:`in_process` -> examples/s over all of them, per-round rates, latency percentiles."""
    return _merge(rounds, "batch_size", "examples", "examples_per_s")


def merge_endpoint(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Rounds of :func:`endpoint` -> requests/s over all of them, per-round rates, latency percentiles."""
    return _merge(rounds, "concurrency", "requests", "requests_per_s")


def _server_stats(url: str, model: str) -> dict[str, Any]:
    """Triton's cumulative counters for ``model``: inferences, executions, queue time."""
    from serve.client import ServeClient

    with ServeClient(url, model=model) as client:
        stats = client.statistics()
    queue = stats.get("inference_stats", {}).get("queue", {})
    return {"inferences": int(stats.get("inference_count", 0)), "executions": int(stats.get("execution_count", 0)),
            "queue_ns": int(queue.get("ns", 0)), "queue_count": int(queue.get("count", 0))}


def _batcher(c: int, max_batch: int, config: ServeSpeedConfig) -> tuple[tuple[int, ...], int]:
    """(preferred batch sizes, queue delay µs) of the server for ``c`` concurrent clients."""
    size = min(c, max_batch)
    if config.tune_batcher and size > 1:
        return (size,), config.max_queue_delay_us
    return (), config.max_queue_delay_us if not config.tune_batcher else 0


def _url(handles: dict[str, ServedUrls], protocol: str) -> str:
    if protocol == "http-direct":
        return handles["direct"].http_url
    return handles["front"].grpc_url if protocol == "grpc" else handles["front"].http_url


def benchmark_level(artifact: Path, predictor: Any, c: int, max_batch: int, texts: Sequence[str],
                    config: ServeSpeedConfig, log: Callable[[str], None]) -> dict[str, Any]:
    """One concurrency level on a fresh server: ``rounds`` x (in-process at batch ``c``, then ``c`` client threads
    per protocol, in rotated order). The row's top level is the first protocol's; ``by_protocol`` holds each one's.

    ``predictor`` (``artifact`` loaded here) is the in-process side; the server loads its own copy in a
    process of its own (:func:`bench.served.served`), as `serve start` runs."""
    from serve.config import ServeConfig
    from serve.server import free_ports

    b = min(c, max_batch)
    preferred, delay = _batcher(c, max_batch, config)
    protocols = list(config.protocols)
    refs: list[dict[str, Any]] = []
    eps: dict[str, list[dict[str, Any]]] = {p: [] for p in protocols}
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as log_dir, contextlib.ExitStack() as servers:
        def serve(kind: str) -> ServedUrls:  # "front": as users get it; "direct": Triton's own HTTP, no front
            http_port, grpc_port, metrics_port = free_ports(3)
            serve_config = ServeConfig(host="127.0.0.1", http_port=http_port, grpc_port=grpc_port,
                                       metrics_port=metrics_port, max_batch_size=max_batch,
                                       preferred_batch_sizes=preferred, max_queue_delay_us=delay, exit_timeout_s=5,
                                       instances=config.instances, log_file=Path(log_dir) / f"triton-{kind}.log")
            return servers.enter_context(served(artifact, config.backend, config.threads, serve_config,
                                                front=kind == "front"))

        t0 = time.perf_counter()
        handles = {"front": serve("front")}
        startup = time.perf_counter() - t0
        if "http-direct" in protocols:
            handles["direct"] = serve("direct")
        before = _server_stats(handles["front"].http_url, predictor.name)
        for k in range(config.rounds):
            log(f"serve-speed {predictor.name}: c={c} round {k + 1}/{config.rounds}: in-process batch {b}, "
                f"then endpoint ({', '.join(protocols)})")
            refs.append(in_process(predictor, texts, b, config.requests, config.warmup, config.max_seconds))
            for protocol in protocols[k % len(protocols):] + protocols[:k % len(protocols)]:
                eps[protocol].append(endpoint_in_subprocess(
                    _url(handles, protocol), predictor.name, texts, c, config.requests, config.warmup,
                    config.max_seconds, binary=protocol != "http-json"))
        after = _server_stats(handles["front"].http_url, predictor.name)
    ref = merge_in_process(refs)
    by_protocol = {}
    for protocol in protocols:
        ep = merge_endpoint(eps[protocol])
        by_protocol[protocol] = {
            "endpoint": ep, "ratio": ep["requests_per_s"] / ref["examples_per_s"],
            "per_round_ratio": [e / r for e, r in zip(ep["per_round_requests_per_s"],
                                                      ref["per_round_examples_per_s"], strict=True)]}
    executions = after["executions"] - before["executions"]
    queued = after["queue_count"] - before["queue_count"]
    server = {"preferred_batch_sizes": list(preferred), "max_queue_delay_us": delay, "startup_s": startup,
              "instances": config.instances,
              "mean_batch": (after["inferences"] - before["inferences"]) / executions if executions else None,
              "mean_queue_ms": (after["queue_ns"] - before["queue_ns"]) / 1e6 / queued if queued else None}
    row = {"concurrency": c, "protocol": protocols[0], **by_protocol[protocols[0]], "in_process": ref,
           "server": server}
    if len(protocols) > 1:
        row["by_protocol"] = by_protocol
    if "http" in by_protocol and "http-direct" in by_protocol:
        row["front_cost"] = front_cost(by_protocol["http"]["endpoint"], by_protocol["http-direct"]["endpoint"])
    return row


def front_cost(front: dict[str, Any], direct: dict[str, Any]) -> dict[str, Any]:
    """What the HTTP front costs in throughput: 1 - front req/s / direct req/s, over all rounds and per
    round (the two ran in the same round, so each round's pair saw the same machine), with its median."""
    per_round = [1 - f / d for f, d in zip(front["per_round_requests_per_s"], direct["per_round_requests_per_s"],
                                           strict=True)]
    return {"cost": 1 - front["requests_per_s"] / direct["requests_per_s"], "per_round": per_round,
            "median_per_round": statistics.median(per_round)}


def benchmark_artifact(artifact: Path, config: ServeSpeedConfig,
                       log: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """In-process and endpoint numbers of one artifact at every concurrency."""
    from bench.artifacts import Skipped, load_predictor

    try:
        predictor = load_predictor(artifact, config.backend, threads=config.threads)
    except Skipped as exc:
        return {"artifact": artifact.name, "status": "skipped", "reason": str(exc)}
    max_batch = int(getattr(predictor, "max_batch_size", 0) or max(config.concurrency))
    texts = list(config.texts)
    rows = [benchmark_level(artifact, predictor, c, max_batch, texts, config, log) for c in config.concurrency]
    headline = next((r for r in rows if r["concurrency"] == HEADLINE_CONCURRENCY), None)
    return {"artifact": artifact.name, "artifact_path": str(artifact), "model": predictor.name, "status": "ok",
            "max_batch_size": max_batch, "rows": rows, "ratio_at_8": headline["ratio"] if headline else None}


def run(artifacts: Sequence[str | os.PathLike[str]], config: ServeSpeedConfig,
        log: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Measure every artifact; returns the JSON-ready report (``bench: serve-speed``)."""
    from bench.artifacts import check_artifacts

    paths = check_artifacts(artifacts)
    watch = CpuWatch()
    results = [benchmark_artifact(p, config, log) for p in paths]
    env = watch.environment()
    return {
        "bench": "serve-speed",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "environment": env,
        "notes": machine_notes(env),
        "settings": {"concurrency": list(config.concurrency), "requests": config.requests,
                     "texts": config.texts_source or "built-in sample comments", "backend": config.backend,
                     "max_queue_delay_us": config.max_queue_delay_us, "tune_batcher": config.tune_batcher,
                     "rounds": config.rounds,
                     "protocol": config.protocols[0], "protocols": list(config.protocols),
                     "instances": config.instances, "threads": config.threads,
                     "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")},
        "artifacts": results,
    }


_PROTOCOL_NAMES = {"http": "HTTP, binary tensors", "http-json": "HTTP, JSON tensors", "grpc": "gRPC",
                   "http-direct": "HTTP to Triton itself, no front (reference)"}


def markdown(report: dict[str, Any]) -> str:
    """One table row per artifact x concurrency (x protocol, when several were measured)."""
    s = report["settings"]
    batcher = (f"preferred batch size c, {s['max_queue_delay_us']} µs window" if s.get("tune_batcher", False)
               else f"{s['max_queue_delay_us']} µs window")
    protocols = s.get("protocols", [s.get("protocol", "http")])
    instances = s.get("instances", 1)
    how = " / ".join(_PROTOCOL_NAMES.get(p, p) for p in protocols)
    lines = [f"Endpoint (Triton, {how}, {instances} instance{'s' if instances != 1 else ''}, dynamic batching: "
             f"{batcher}) vs in-process predict on batches of c texts; c client threads send one text per request; the "
             f"two alternate {s.get('rounds', 1)} times per level, {s['requests']} requests (texts) each time (texts: "
             f"{s['texts']}).", "",
             "| artifact | c | protocol | endpoint req/s | endpoint p50 ms | endpoint p99 ms | mean server batch | "
             "in-process ex/s (batch c) | endpoint / in-process | per round |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for a in report["artifacts"]:
        if a["status"] != "ok":
            lines.append(f"| {a['artifact']} | — | | {a['status']}: {a['reason']} | | | | | | |")
            continue
        for r in a["rows"]:
            ref = r["in_process"]
            mean_batch = (r.get("server") or {}).get("mean_batch")
            for protocol, m in (r.get("by_protocol") or {r.get("protocol", "http"): r}).items():
                ep = m["endpoint"]
                per_round = m.get("per_round_ratio") or [m["ratio"]]
                spread = f"{100 * min(per_round):.0f}-{100 * max(per_round):.0f}%" if len(per_round) > 1 else "—"
                lines.append(f"| {a['artifact']} | {r['concurrency']} | {protocol} | {ep['requests_per_s']:.1f} | "
                             f"{ep['p50_ms']:.1f} | {ep['p99_ms']:.1f} | "
                             f"{'—' if mean_batch is None else f'{mean_batch:.2f}'} | "
                             f"{ref['examples_per_s']:.1f} (b={ref['batch_size']}) | {100 * m['ratio']:.0f}% | {spread} |")
    heads = [f"{a['artifact']} {100 * a['ratio_at_8']:.0f}%" for a in report["artifacts"]
             if a["status"] == "ok" and a.get("ratio_at_8") is not None]
    if heads:
        lines += ["", f"Endpoint ({protocols[0]}) / in-process at concurrency {HEADLINE_CONCURRENCY}: {', '.join(heads)}."]
    costs = [f"{a['artifact']} c={r['concurrency']}: {100 * r['front_cost']['cost']:.1f}% (median of paired rounds "
             f"{100 * r['front_cost']['median_per_round']:.1f}%, per round "
             f"{', '.join(f'{100 * x:.1f}' for x in r['front_cost']['per_round'])}%)"
             for a in report["artifacts"] if a["status"] == "ok" for r in a["rows"] if r.get("front_cost")]
    if costs:
        lines += ["", "The HTTP front's cost in throughput (1 - http / http-direct req/s; http-direct: a second "
                      "server whose Triton listens on TCP itself): " + "; ".join(costs) + "."]
    lines += [f"\nNote: {note}" for note in report.get("notes", [])]
    return "\n".join(lines) + "\n"


def dumps(report: dict[str, Any]) -> str:
    """JSON text of a report."""
    return json.dumps(report, indent=2)
