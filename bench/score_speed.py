"""Batch scoring speed and memory: `serve score` (local engine, local Ray) vs ``predict`` in-process, one run.

For each artifact:

1. **files**: a big input (``rows``, 1,000,000 by default) and a small one (``small_rows``, 10,000),
   CSV with ``id`` and ``text``, the texts cycled from ``texts`` (the OLID tweets, say); written
   once per run into the work directory.
2. **in-process**: the :mod:`export.runtime` predictor's ``predict`` on the chunks `serve score`
   cuts from the big file (same reader, same chunk size, empty texts dropped as it drops them),
   timing only the ``predict`` calls: what no engine can beat with the same threads.
3. **engines**: `serve score` per engine and file, each in a fresh Python process so that the peak
   RSS is that job's own: rows/s over the job with setup (model load, Ray start) excluded, the
   process's peak RSS (``VmHWM``; for Ray the driver's), the peak summed RSS of the whole process
   tree (driver, raylet, actors; sampled every 0.2 s; pages of Ray's shared object store count
   once per process that maps them, so it overstates), and for the local engine the rows/s of its
   own ``predict`` calls (:class:`PredictTimer`), a ratio immune to drift between runs.
4. **check**: the outputs of the engines on the small file hold the same rows in the same order,
   and their probabilities differ by at most ``max_abs_diff``.

Ratios: an engine's rows/s over in-process rows/s on the big file (target: local >= 90%), and its
peak RSS on the big file over the small one (target: <= 1.5x: memory does not grow with the file).

On a shared machine the load drifts between two runs minutes apart. ``rounds`` > 1 repeats the pair
(in-process, then the local engine) on the big file ``rounds`` times, alternating, and the local engine's
ratio is the median of the per-round ratios (each in-process run next to its engine run), with every round
in the report.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compress.errors import ConfigError, UserError

ENGINES = ("local", "ray")
TARGET_RATIO = 0.9
TARGET_RSS_GROWTH = 1.5


@dataclass(frozen=True)
class ScoreSpeedConfig:
    """What ``bench score-speed`` measures.

    Attributes:
        rows / small_rows: rows of the big and the small input file.
        rounds: (in-process, local engine) pairs on the big file, alternating; the local ratio is their median.
        chunk_size: `serve score` chunk size (and the in-process batches).
        engines: `serve score` engines to run.
        texts: the texts cycled into the files; ``texts_source`` names where they came from.
        backend / threads: :mod:`export.runtime` backend and intra-op threads (local engine and in-process;
            Ray actors take ``threads`` or 1).
        ray_workers: Ray actors (None: `serve score`'s default for the local Ray).
        work_dir: keep the files and outputs in a new directory inside this one (None: a temporary
            directory, removed after the run).
    """

    rows: int = 1_000_000
    small_rows: int = 10_000
    chunk_size: int = 10_000
    engines: tuple[str, ...] = ENGINES
    texts: tuple[str, ...] = ()
    texts_source: str | None = None
    backend: str = "auto"
    threads: int | None = None
    ray_workers: int | None = None
    work_dir: str | None = None
    rounds: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.small_rows <= self.rows <= 100_000_000:
            raise ConfigError(f"rows: need 1 <= small_rows <= rows <= 100000000, got {self.small_rows} and {self.rows}")
        if not 1 <= self.chunk_size <= 1_000_000:
            raise ConfigError(f"chunk_size: must be in 1..1000000, got {self.chunk_size}")
        unknown = [e for e in self.engines if e not in ENGINES]
        if unknown or not self.engines:
            raise ConfigError(f"engines: each must be one of {', '.join(ENGINES)}, got {list(self.engines)}")
        if not self.texts:
            raise ConfigError("texts: need at least one text")
        if not 1 <= self.rounds <= 50:
            raise ConfigError(f"rounds: must be in 1..50, got {self.rounds}")


def write_input(texts: Sequence[str], rows: int, path: Path, block: int = 100_000) -> Path:
    """A CSV of ``rows`` rows (``id`` = ``r<n>``, ``text`` = the texts cycled), written block by block."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    pool = np.asarray(list(texts), dtype=object)
    schema = pa.schema([("id", pa.string()), ("text", pa.string())])
    with pacsv.CSVWriter(path, schema) as writer:
        for start in range(0, rows, block):
            n = min(block, rows - start)
            index = np.arange(start, start + n)
            writer.write_table(pa.table({"id": [f"r{i}" for i in index], "text": pool[index % len(pool)].tolist()},
                                        schema=schema))
    return path


def in_process(artifact: Path, path: Path, config: ScoreSpeedConfig) -> dict[str, Any]:
    """``predict`` on the chunks `serve score` cuts from ``path``; only the predict calls are timed."""
    import pyarrow.compute as pc

    from export.runtime import load
    from serve.score_input import inspect_input, read_chunks
    from serve.score_table import has_text

    predictor = load(artifact, backend=config.backend, threads=config.threads)
    spec = inspect_input(str(path))
    seconds, rows = 0.0, 0
    for chunk in read_chunks(spec, config.chunk_size):
        texts = chunk.column(spec.text_column)
        kept = pc.filter(texts, has_text(texts)).to_pylist()
        t0 = time.perf_counter()
        predictor.predict(kept)
        seconds += time.perf_counter() - t0
        rows += chunk.num_rows
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds if seconds else 0.0,
            "backend": predictor.backend}


def peak_rss_mib() -> float:
    """This process's peak RSS (``VmHWM``). Not ``ru_maxrss``: Linux carries that over from the parent
    through fork and exec, so a child of a big process would report the parent's size."""
    with open("/proc/self/status", encoding="ascii") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return kib / 1024


class PredictTimer:
    """Times every ``predict`` of the predictors :func:`export.runtime.load` returns in this process.

    The local engine's job then says how fast its own ``predict`` calls ran in the same minutes as the
    job: a ratio that drift on a shared machine does not move (Ray's actors run in other processes).
    """

    def __init__(self) -> None:
        import export.runtime as runtime

        self.seconds = 0.0
        self.calls = 0
        real = runtime.load

        def load(*args: Any, **kwargs: Any) -> Any:
            predictor = real(*args, **kwargs)
            inner = predictor.predict

            def predict(texts: list[str]) -> np.ndarray:
                t0 = time.perf_counter()
                try:
                    return inner(texts)
                finally:
                    self.seconds += time.perf_counter() - t0
                    self.calls += 1

            predictor.predict = predict
            return predictor

        runtime.load = load


def child(arguments: str) -> None:
    """Run in a fresh process by :func:`engine_run`: one `serve score` job, then its numbers as JSON."""
    from serve.score import ScoreConfig, score

    args = json.loads(arguments)
    timer = PredictTimer()
    result = score(args.pop("artifact"), ScoreConfig(**args, progress=False))
    scored = result.rows - result.null_rows
    print(json.dumps({"rows": result.rows, "null_rows": result.null_rows, "seconds": result.seconds,
                      "setup_seconds": result.setup_seconds, "rows_per_s": result.rows_per_s,
                      "backend": result.backend, "peak_rss_mib": peak_rss_mib(),
                      "predict_seconds": timer.seconds if timer.calls else None,
                      "predict_rows_per_s": scored / timer.seconds if timer.calls and timer.seconds else None}))


class TreeRss:
    """Peak summed RSS of a process and all its descendants, sampled in a thread."""

    def __init__(self, pid: int, every_s: float = 0.2) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(pid, every_s), daemon=True)
        self._thread.start()

    def _run(self, pid: int, every_s: float) -> None:
        import psutil

        try:
            root = psutil.Process(pid)
        except psutil.Error:
            return
        while not self._stop.is_set():
            total = 0
            try:
                for proc in [root, *root.children(recursive=True)]:
                    try:
                        total += proc.memory_info().rss
                    except psutil.Error:
                        pass
            except psutil.Error:
                return
            self.peak = max(self.peak, total)
            self._stop.wait(every_s)

    def stop(self) -> float:
        """The peak in MiB."""
        self._stop.set()
        self._thread.join(timeout=5)
        return self.peak / 2**20


def engine_run(artifact: Path, engine: str, path: Path, out: Path, config: ScoreSpeedConfig) -> dict[str, Any]:
    """One `serve score` job in a fresh Python process: its numbers, peak RSS and wall time."""
    args = {"artifact": str(artifact), "input": str(path), "output": str(out), "engine": engine,
            "chunk_size": config.chunk_size, "backend": config.backend,
            "threads": config.threads if engine == "local" else (config.threads or 1)}
    if engine == "ray" and config.ray_workers:
        args["workers"] = config.ray_workers
    code = "import sys; from bench.score_speed import child; child(sys.argv[1])"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    tree = TreeRss(proc.pid)
    stdout, stderr = proc.communicate()
    tree_peak = tree.stop()
    if proc.returncode != 0:
        last = next((line for line in reversed(stderr.strip().splitlines()) if line.strip()), "no output")
        raise UserError(f"serve score --engine {engine} on {path.name} failed (exit {proc.returncode}): {last[:300]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result.update(engine=engine, wall_s=time.perf_counter() - t0, tree_peak_rss_mib=tree_peak)
    return result


def compare_outputs(a: Path, b: Path) -> dict[str, Any]:
    """Same rows in the same order, and the largest probability difference, of two `serve score` outputs."""
    import pyarrow.parquet as pq

    ta, tb = pq.read_table(a), pq.read_table(b)
    probs = [c for c in ta.column_names if c.startswith("prob_")]
    same = ta.num_rows == tb.num_rows and ta.column(0).equals(tb.column(0))
    diffs = [np.nanmax(np.abs(ta.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
                              - tb.column(c).to_numpy(zero_copy_only=False).astype(np.float64)), initial=0.0)
             for c in probs] if same else [float("nan")]
    return {"same_rows": bool(same), "max_abs_diff": float(max(diffs)),
            "same_labels": bool(same and ta.column("labels").equals(tb.column("labels")))}


def benchmark_artifact(artifact: Path, files: dict[str, Path], out_dir: Path, config: ScoreSpeedConfig,
                       log: Callable[[str], None]) -> dict[str, Any]:
    """In-process, then every engine on the small and the big file."""
    log(f"score-speed {artifact.name}: in-process predict on {config.rows} rows")
    reference = in_process(artifact, files["big"], config)
    runs = []
    for engine in config.engines:
        for size in ("small", "big"):
            log(f"score-speed {artifact.name}: serve score --engine {engine} on the {size} file")
            run = engine_run(artifact, engine, files[size], out_dir / f"{artifact.name}-{engine}-{size}.parquet",
                             config)
            runs.append({**run, "file": size})
    big = {r["engine"]: r for r in runs if r["file"] == "big"}
    small = {r["engine"]: r for r in runs if r["file"] == "small"}
    rounds = []
    if config.rounds > 1 and "local" in big:
        rounds.append(_round(reference, big["local"]))
        for k in range(2, config.rounds + 1):
            log(f"score-speed {artifact.name}: round {k}/{config.rounds}: in-process, then serve score --engine local")
            again = in_process(artifact, files["big"], config)
            local = engine_run(artifact, "local", files["big"], out_dir / f"{artifact.name}-local-big-round{k}.parquet",
                               config)
            rounds.append(_round(again, local))
    for engine, run in big.items():
        run["ratio"] = run["rows_per_s"] / reference["rows_per_s"] if reference["rows_per_s"] else None
        if engine == "local" and rounds:
            run["ratio_first_round"] = run["ratio"]
            run["ratio"] = float(np.median([r["ratio"] for r in rounds]))
        run["ratio_in_run"] = run["rows_per_s"] / run["predict_rows_per_s"] if run.get("predict_rows_per_s") else None
        run["rss_growth"] = run["peak_rss_mib"] / small[engine]["peak_rss_mib"]
        run["tree_rss_growth"] = run["tree_peak_rss_mib"] / small[engine]["tree_peak_rss_mib"] \
            if small[engine]["tree_peak_rss_mib"] else None
    agreement = None
    if len(config.engines) == 2:
        agreement = compare_outputs(out_dir / f"{artifact.name}-local-small.parquet",
                                    out_dir / f"{artifact.name}-ray-small.parquet")
    return {"artifact": artifact.name, "artifact_path": str(artifact), "backend": reference["backend"],
            "in_process": reference, "runs": runs, "rounds": rounds, "local_vs_ray": agreement}


def _round(reference: dict[str, Any], local: dict[str, Any]) -> dict[str, Any]:
    """One (in-process, local engine) pair on the big file: both rows/s and their ratio."""
    ratio = local["rows_per_s"] / reference["rows_per_s"] if reference["rows_per_s"] else float("nan")
    return {"in_process_rows_per_s": reference["rows_per_s"], "local_rows_per_s": local["rows_per_s"],
            "ratio": ratio, "local_peak_rss_mib": local["peak_rss_mib"]}


def run(artifacts: Sequence[str | os.PathLike[str]], config: ScoreSpeedConfig,
        log: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Measure every artifact; the JSON-ready report (``bench: score-speed``)."""
    from bench.artifacts import check_artifacts
    from bench.measure import CpuWatch, machine_notes
    from compress.cpu import cpu_flags, cpu_model

    paths = check_artifacts(artifacts)
    with tempfile.TemporaryDirectory(prefix="bench-score-") as tmp:
        if config.work_dir:  # a new directory of ours inside it, kept after the run
            Path(config.work_dir).mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix="bench-score-", dir=config.work_dir))
        else:
            work = Path(tmp)
        log(f"score-speed: writing {config.rows} + {config.small_rows} rows into {work}")
        files = {"big": write_input(config.texts, config.rows, work / f"score-{config.rows}.csv"),
                 "small": write_input(config.texts, config.small_rows, work / f"score-{config.small_rows}.csv")}
        watch = CpuWatch()
        results = [benchmark_artifact(p, files, work, config, log) for p in paths]
        env = watch.environment()
    env["cpu_model"] = cpu_model()
    env["simd"] = sorted(cpu_flags() & {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"})
    settings = {k: v for k, v in asdict(config).items() if k != "texts"}
    settings["texts"] = config.texts_source or f"{len(config.texts)} given texts"
    return {"bench": "score-speed", "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "environment": env, "notes": machine_notes(env), "settings": settings, "artifacts": results}


def _engine_name(run: dict[str, Any]) -> str:
    return "serve score --engine local" if run["engine"] == "local" else "serve score --engine ray (local Ray)"


def markdown(report: dict[str, Any]) -> str:
    """One row for in-process and one per engine and file, per artifact; the CPU and any busy-machine note under it."""
    s, env = report["settings"], report["environment"]
    lines = [f"`serve score` on {s['rows']:,} and {s['small_rows']:,} rows (CSV id + text; texts: {s['texts']}), "
             f"chunks of {s['chunk_size']:,} rows; in-process = `predict` on the same chunks, only the calls timed. "
             f"rows/s exclude setup (model load, Ray start). \"vs its own predict calls\": the job's rows/s over the "
             f"rows/s of the `predict` calls inside that same job (local engine; immune to machine drift between "
             f"runs). Peak RSS: the `serve score` process (for Ray, the driver; tree = driver, raylet and actors "
             f"summed).", "",
             "| artifact | backend | run | rows | rows/s | vs in-process | vs its own predict calls | peak RSS MiB "
             "| RSS vs small file |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for a in report["artifacts"]:
        ref = a["in_process"]
        lines.append(f"| {a['artifact']} | {a['backend']} | in-process predict | {ref['rows']:,} | "
                     f"{ref['rows_per_s']:,.0f} | 100% | — | — | — |")
        for r in a["runs"]:
            ratio = f"{100 * r['ratio']:.0f}%" if r.get("ratio") is not None else "—"
            own = f"{100 * r['ratio_in_run']:.0f}%" if r.get("ratio_in_run") is not None else "—"
            rss = f"{r['peak_rss_mib']:,.0f}"
            growth = f"{r['rss_growth']:.2f}x" if r.get("rss_growth") is not None else "—"
            if r["engine"] == "ray":
                rss += f" (tree {r['tree_peak_rss_mib']:,.0f})"
                if r.get("tree_rss_growth") is not None:
                    growth += f" (tree {r['tree_rss_growth']:.2f}x)"
            lines.append(f"| {a['artifact']} | {r['backend']} | {_engine_name(r)} | {r['rows']:,} | "
                         f"{r['rows_per_s']:,.0f} | {ratio} | {own} | {rss} | {growth} |")
        if a.get("rounds"):
            per = ", ".join(f"{100 * r['ratio']:.0f}%" for r in a["rounds"])
            lines += ["", f"{a['artifact']}: local / in-process over {len(a['rounds'])} alternating rounds on the big "
                          f"file: {per}; the table's local ratio is their median."]
        agree = a.get("local_vs_ray")
        if agree:
            lines += ["", f"{a['artifact']}, local vs Ray on {s['small_rows']:,} rows: "
                          f"{'same rows in the same order' if agree['same_rows'] else 'ROWS DIFFER'}, "
                          f"{'same labels' if agree['same_labels'] else 'labels differ'}, "
                          f"max |Δ probability| = {agree['max_abs_diff']:.1e}."]
    simd = ", ".join(env.get("simd", [])) or "none of avx2/avx512/amx"
    lines += ["", f"CPU: {env.get('cpu_model', env.get('cpu', '?'))} ({simd}), {env.get('logical_cpus', '?')} "
                  f"logical CPUs; targets: local >= {100 * TARGET_RATIO:.0f}% of in-process, peak RSS on the big file "
                  f"<= {TARGET_RSS_GROWTH}x the small file's."]
    lines += [f"\nNote: {note}" for note in report.get("notes", [])]
    return "\n".join(lines) + "\n"


def dumps(report: dict[str, Any]) -> str:
    """JSON text of a report."""
    return json.dumps(report, indent=2)
