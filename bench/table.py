"""The model-selection table: the usual claimed numbers beside what each artifact measures here.

Claimed rows (:data:`CLAIMED`) are the common rule-of-thumb table (parameters, latency, an
unspecified "accuracy", $ per 1M comments). Each artifact is matched to one claimed row by its
architecture (:data:`ARCHITECTURE_ROWS`); a Hugging Face teacher (architecture ``hf``) matches
``BERT-base`` only if its config is BERT-base-sized (bert, 12 layers, hidden 768) and
``RoBERTa-large`` only if RoBERTa-large-sized, otherwise it is an extra row named after its
checkpoint (e.g. ``teacher (MiniLM-L6)``). A claimed row with no artifact says why it cannot be
measured here.

Measured, per artifact, on one runtime (``auto`` by default):

* parameters: ``extra.num_parameters`` of artifact.json, else counted from the tensor shapes in
  ``model/model.safetensors`` (header only), else from the initializers of ``model.onnx``, else the
  parent artifact's count;
* latency: p50 of one ``predict`` call on one text (batch 1, tokenization included);
* throughput: examples/s at batch ``batch_size`` (32 by default) or batch 1, whichever is higher
  (the batch a deployment would pick), which sets the cost;
* cost per 1M comments = ``dollars_per_hour / 3600 / throughput * 1e6``
  (:func:`cost_per_million`), at ``dollars_per_hour`` = $0.10 by default, roughly the on-demand
  price of a 2-vCPU cloud VM, the kind of box these numbers come from (an assumption: pass your
  own price with ``--dollars-per-hour``);
* metrics: the validation metrics stored in artifact.json (held-out split of the training run), or
  measured on ``--data`` when given. The claimed "accuracy" column is compared with
  :data:`COMPARED_METRIC` (macro ROC-AUC); macro-F1 at the artifact's thresholds is shown beside it.

:func:`select` picks the best measured row that meets latency / metric / cost requirements
(best = highest compared metric, ties -> lower latency) and says why every other row lost.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress.artifact import ArtifactInfo, read_info
from compress.errors import ConfigError, DataError

COMPARED_METRIC = "macro_roc_auc"
DEFAULT_DOLLARS_PER_HOUR = 0.10
METRIC_NAMES = {"macro_roc_auc": "macro ROC-AUC", "macro_f1": "macro-F1", "macro_pr_auc": "macro PR-AUC",
                "micro_f1": "micro-F1", "subset_accuracy": "subset accuracy", "label_accuracy": "label accuracy"}


@dataclass(frozen=True)
class Claimed:
    """One row of the rule-of-thumb table.

    Attributes:
        model: display name.
        parameters: as the table writes it ("66M"); ``num_parameters`` as a number.
        latency_ms / accuracy / dollars_per_1m: the claimed figures.
        unmeasured: why no artifact of this row can exist here (None if one can be made).
    """

    model: str
    parameters: str
    num_parameters: float
    latency_ms: float
    accuracy: float
    dollars_per_1m: float
    unmeasured: str | None = None


CLAIMED: tuple[Claimed, ...] = (
    Claimed("LogReg+TF-IDF", "10k", 1e4, 1, 0.82, 0.01),
    Claimed("FastText", "100k", 1e5, 2, 0.85, 0.02),
    Claimed("TextCNN", "1M", 1e6, 5, 0.88, 0.10),
    Claimed("BiLSTM+Attn", "5M", 5e6, 20, 0.90, 0.50),
    Claimed("DistilBERT", "66M", 66e6, 30, 0.93, 1.00),
    Claimed("BERT-base", "110M", 110e6, 50, 0.95, 2.00,
            "no BERT-base weights offline here (the teacher is the offline MiniLM checkpoint; see its row)"),
    Claimed("RoBERTa-large", "355M", 355e6, 100, 0.96, 5.00, "no RoBERTa-large weights offline here"),
    Claimed("GPT-4", "~1T", 1e12, 2000, 0.98, 30.00,
            "external API: not callable from this offline machine, and its weights are not public"),
)
ARCHITECTURE_ROWS = {"tfidf": "LogReg+TF-IDF", "fasttext": "FastText", "textcnn": "TextCNN",
                     "bilstm": "BiLSTM+Attn", "distilbert": "DistilBERT"}
HF_SIZES = {"BERT-base": ("bert", 12, 768), "RoBERTa-large": ("roberta", 24, 1024)}


def cost_per_million(throughput: float, dollars_per_hour: float) -> float:
    """Dollars to classify 1M comments at ``throughput`` examples/s on a box costing ``dollars_per_hour``."""
    if throughput <= 0:
        raise ValueError(f"throughput must be > 0, got {throughput}")
    return dollars_per_hour / 3600.0 / throughput * 1e6


# ----------------------------------------------------------------------------------------------
# Matching and parameter counts


def model_config(artifact: Path, info: ArtifactInfo) -> dict[str, Any]:
    """The Hugging Face ``config.json`` of an artifact (or of its parent), {} if there is none."""
    candidates = [artifact / "model" / "config.json"]
    if info.parent:
        candidates.append(Path(info.parent) / "model" / "config.json")
    for path in candidates:
        if path.is_file():
            try:
                config = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(config, dict) and "model_type" in config:
                return config
    return {}


def match_claimed(info: ArtifactInfo, config: Mapping[str, Any]) -> str | None:
    """The claimed row an artifact belongs to, or None for an extra row."""
    if info.architecture in ARCHITECTURE_ROWS:
        return ARCHITECTURE_ROWS[info.architecture]
    if info.architecture == "hf":
        shape = (config.get("model_type"), config.get("num_hidden_layers"), config.get("hidden_size"))
        for row, size in HF_SIZES.items():
            if shape == size:
                return row
    return None


def extra_row_name(info: ArtifactInfo, config: Mapping[str, Any]) -> str:
    """Display name of an unmatched artifact, e.g. ``teacher (MiniLM-L6)``."""
    source = str(info.recipe.get("model", "")) if isinstance(info.recipe, Mapping) else ""
    layers = config.get("num_hidden_layers")
    if "minilm" in source.lower():
        base = f"MiniLM-L{layers}" if layers else "MiniLM"
    elif config:
        base = f"{config.get('model_type', 'hf')}-L{layers}-H{config.get('hidden_size')}"
    else:
        base = info.architecture
    role = "teacher" if info.architecture == "hf" else info.kind
    return f"{role} ({base})"


def safetensors_parameters(path: Path) -> int:
    """Parameter count from a safetensors file's header (tensor shapes), without loading tensors."""
    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    return int(sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__"))


def onnx_parameters(path: Path) -> int:
    """Parameter count from the initializers of an ONNX model (external data not loaded)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return int(sum(math.prod(init.dims) for init in model.graph.initializer))


def count_parameters(artifact: Path, info: ArtifactInfo, _depth: int = 0) -> tuple[int | None, str]:
    """(parameters, where the count came from); (None, reason) if it cannot be counted."""
    n = info.extra.get("num_parameters") if isinstance(info.extra, Mapping) else None
    if isinstance(n, (int, float)) and n > 0:
        return int(n), "artifact.json"
    weights = artifact / "model" / "model.safetensors"
    if weights.is_file():
        try:
            return safetensors_parameters(weights), "model.safetensors"
        except (OSError, ValueError, KeyError, struct.error):
            pass
    onnx_file = artifact / "model.onnx"
    if onnx_file.is_file():
        try:
            return onnx_parameters(onnx_file), "model.onnx"
        except Exception:  # noqa: BLE001 - onnx raises many kinds for a damaged file
            pass
    if info.parent and _depth < 3 and Path(info.parent, "artifact.json").is_file():
        parent = Path(info.parent)
        count, source = count_parameters(parent, read_info(parent), _depth + 1)
        if count is not None:
            return count, f"parent {parent.name} ({source})"
    return None, "no parameter count in artifact.json and no readable weights"


# ----------------------------------------------------------------------------------------------
# Building the table


@dataclass(frozen=True)
class TableConfig:
    """What ``bench table`` measures.

    Attributes:
        runtime: runtime every artifact is timed on (see :mod:`bench.latency`).
        batch_size: batch of the throughput measurement that sets the cost.
        seq_length: fixed text length in tokens when no ``texts`` are given.
        texts: real comments to time on (recommended), or None.
        data: labelled file to measure metrics on; None uses artifact.json's validation metrics.
        dollars_per_hour: price of the box the numbers come from.
        metric: the metric compared with the claimed "accuracy".
        threads: intra-op threads of PyTorch / ONNX Runtime (None: the runtime's default).
    """

    runtime: str = "auto"
    batch_size: int = 32
    seq_length: int = 64
    texts: tuple[str, ...] | None = None
    texts_source: str | None = None
    data: str | None = None
    format: str | None = None
    split: str = "all"
    max_rows: int | None = None
    dollars_per_hour: float = DEFAULT_DOLLARS_PER_HOUR
    warmup: int = 3
    iters: int = 30
    max_seconds: float = 15.0
    metric: str = COMPARED_METRIC
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: must be >= 1, got {self.batch_size}")
        if self.seq_length < 1:
            raise ConfigError(f"seq_length: must be >= 1, got {self.seq_length}")
        if not self.dollars_per_hour > 0:
            raise ConfigError(f"dollars_per_hour: must be > 0, got {self.dollars_per_hour}")
        if self.metric not in METRIC_NAMES:
            raise ConfigError(f"metric: must be one of {', '.join(METRIC_NAMES)}, got {self.metric!r}")


def _summary_metrics(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key in METRIC_NAMES:
        value = metrics.get(key)
        out[key] = float(value) if isinstance(value, (int, float)) and not math.isnan(float(value)) else None
    return out


def measure_artifact(artifact: Path, config: TableConfig, eval_data: Any = None,
                     log: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """One measured row: parameters, batch-1 p50, batch-B throughput, metrics, cost."""
    from bench import latency

    info = read_info(artifact)
    hf_config = model_config(artifact, info)
    claimed = match_claimed(info, hf_config)
    params, params_source = count_parameters(artifact, info)
    row: dict[str, Any] = {
        "model": claimed or extra_row_name(info, hf_config), "claimed": claimed, "artifact": artifact.name,
        "artifact_path": str(artifact), "kind": info.kind, "architecture": info.architecture,
        "runtime": config.runtime, "parameters": params, "parameters_source": params_source,
    }
    length = config.seq_length
    if info.max_length and (artifact / "tokenizer").is_dir():
        length = min(length, info.max_length)
    lat_config = latency.LatencyConfig(
        runtimes=(config.runtime,), batch_sizes=tuple(dict.fromkeys((1, config.batch_size))), seq_lengths=(length,),
        real_texts=config.texts, real_source=config.texts_source, warmup=config.warmup, iters=config.iters,
        max_seconds=config.max_seconds, threads=config.threads)
    cells = latency.benchmark_artifact(artifact, config.runtime, lat_config, log)
    row["runtime"] = next((c["backend"] for c in cells if c.get("backend")), config.runtime)
    ok = [c for c in cells if c["status"] == "ok"]
    one = next((c for c in ok if c["batch_size"] == 1), None)
    best = max(ok, key=lambda c: c["throughput"]) if ok else None  # the batch a deployment would use
    if one is None or best is None:
        reasons = "; ".join(sorted({c.get("reason", "") for c in cells if c["status"] != "ok"})) or "not measured"
        row.update(status="skipped" if all(c["status"] == "skipped" for c in cells) else "error", reason=reasons)
    else:
        row.update(status="ok", latency_p50_ms=one["p50_ms"], latency_p99_ms=one["p99_ms"],
                   throughput=best["throughput"], throughput_batch=best["batch_size"],
                   length=one["seq_length"], length_unit=one["length_unit"],
                   cost_per_1m=cost_per_million(best["throughput"], config.dollars_per_hour))
    if eval_data is not None:
        from bench.accuracy import evaluate_artifact

        log(f"table: metrics of {artifact.name} on {len(eval_data)} rows")
        scored = evaluate_artifact(artifact, eval_data, config.runtime, threads=config.threads)
        if scored["status"] == "ok":
            row["metrics"] = _summary_metrics(scored["metrics"])
            row["metric_source"] = f"measured on {config.data} ({config.split}, {len(eval_data)} rows)"
        else:
            row["metrics"] = _summary_metrics({})
            row["metric_source"] = f"not measured: {scored['reason']}"
    else:
        row["metrics"] = _summary_metrics(info.metrics or {})
        row["metric_source"] = "artifact.json validation metrics"
    return row


def build_table(artifacts: Sequence[str | os.PathLike[str]], config: TableConfig,
                log: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Claimed rows beside measured ones; returns the JSON-ready report (``bench: table``)."""
    from bench.artifacts import check_artifacts
    from bench.measure import CpuWatch, machine_notes

    paths = check_artifacts(artifacts)
    watch = CpuWatch()
    eval_data = None
    if config.data:
        from bench.accuracy import load_eval_data

        eval_data = load_eval_data(config.data, config.format, config.split, max_rows=config.max_rows)
    measured = []
    for path in paths:
        log(f"table: {path.name}")
        measured.append(measure_artifact(path, config, eval_data, log))
    rows: list[dict[str, Any]] = []
    for claimed in CLAIMED:
        matches = [r for r in measured if r["claimed"] == claimed.model]
        for r in matches:
            rows.append({**r, "claimed_numbers": _claimed_dict(claimed)})
        if not matches:
            arch = next((a for a, m in ARCHITECTURE_ROWS.items() if m == claimed.model), None)
            reason = claimed.unmeasured or (
                f"no {arch} artifact among the inputs (make one with "
                f"`compress {'baseline' if arch in ('tfidf', 'fasttext') else 'distill'} ...`)")
            rows.append({"model": claimed.model, "claimed": claimed.model, "artifact": None, "status": "not measured",
                         "reason": reason, "claimed_numbers": _claimed_dict(claimed)})
    rows.extend({**r, "claimed_numbers": None} for r in measured if r["claimed"] is None)
    env = watch.environment()
    return {
        "bench": "table",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "environment": env,
        "compared_metric": config.metric,
        "dollars_per_hour": config.dollars_per_hour,
        "settings": {"runtime": config.runtime, "batch_size": config.batch_size,
                     "texts": config.texts_source or f"fixed {config.seq_length} tokens",
                     "data": config.data, "split": config.split, "max_rows": config.max_rows,
                     "warmup": config.warmup, "iters": config.iters, "threads": config.threads},
        "notes": machine_notes(env),
        "rows": rows,
    }


def _claimed_dict(claimed: Claimed) -> dict[str, Any]:
    return {"parameters": claimed.parameters, "num_parameters": claimed.num_parameters,
            "latency_ms": claimed.latency_ms, "accuracy": claimed.accuracy, "dollars_per_1m": claimed.dollars_per_1m}


def _human(n: float | None) -> str:
    if n is None:
        return "—"
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.0f}"


def _num(value: float | None, spec: str) -> str:
    return "—" if value is None else f"{value:{spec}}"


def _money(value: float | None) -> str:
    if value is None:
        return "—"
    return f"${value:.4f}" if value < 0.01 else f"${value:.2f}"


def markdown(report: dict[str, Any]) -> str:
    """The table as Markdown, with the footnotes that say what each measured column means."""
    metric = report["compared_metric"]
    label = METRIC_NAMES[metric]
    s = report["settings"]
    batch = s["batch_size"]
    lines = [f"| model | claimed params | claimed latency | claimed \"accuracy\" | claimed $/1M | artifact | params | "
             f"p50 ms (batch 1) | examples/s (batch {batch}) ³ | {label} ¹ | macro-F1 | $/1M ² | note |",
             "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in report["rows"]:
        c = r.get("claimed_numbers")
        claimed = (f"{c['parameters']} | {c['latency_ms']:g} ms | {c['accuracy']:.2f} | ${c['dollars_per_1m']:.2f}"
                   if c else "— | — | — | —")
        if r["status"] == "not measured":
            lines.append(f"| {r['model']} | {claimed} | — | — | — | — | — | — | — | not measured: {r['reason']} |")
            continue
        m = r.get("metrics", {})
        note = "" if r["status"] == "ok" else f"{r['status']}: {r.get('reason', '')}"
        if r["status"] == "ok" and r.get("throughput_batch") != batch:
            note = f"throughput at batch {r['throughput_batch']}"
        if r.get("metric_source", "").startswith("not measured"):
            note = (note + "; " if note else "") + r["metric_source"]
        lines.append(f"| {r['model']} | {claimed} | {r['artifact']} ({r['runtime']}) | {_human(r.get('parameters'))} | "
                     f"{_num(r.get('latency_p50_ms'), '.2f')} | {_num(r.get('throughput'), '.1f')} | "
                     f"{_num(m.get(metric), '.4f')} | {_num(m.get('macro_f1'), '.4f')} | "
                     f"{_money(r.get('cost_per_1m'))} | {note} |")
    sources = sorted({r["metric_source"] for r in report["rows"] if r.get("metric_source")})
    env = report.get("environment", {})
    lines += [
        "",
        f"¹ The claimed \"accuracy\" column is compared with **{label}** ({'; '.join(sources) or 'no measured rows'}); "
        f"macro-F1 is at each artifact's own tuned thresholds. The claimed numbers come from a generic table "
        f"(other data sets, unstated hardware), so only the ordering is comparable.",
        f"² Cost per 1M comments = ${report['dollars_per_hour']:.2f}/h ÷ 3600 ÷ examples/s × 10⁶; "
        f"${report['dollars_per_hour']:.2f}/h is an assumed price for a 2-vCPU box (pass --dollars-per-hour).",
        f"³ Throughput at batch {batch}, or at batch 1 where that is higher (the note says so).",
        f"Latency: one `predict` call on one text, tokenization included, median of up to {s['iters']} calls after "
        f"{s['warmup']} warm-up calls; texts: {s['texts']}; {env.get('cpu', '?')}, "
        f"{env.get('torch_threads', '?')} torch threads.",
    ]
    lines += [f"Note: {note}" for note in report.get("notes", [])]
    return "\n".join(lines) + "\n"


def dumps(report: dict[str, Any]) -> str:
    """JSON text of a report."""
    return json.dumps(report, indent=2)


def load_table(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A table JSON written by ``bench table --json-out``."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"table file not found: {p}; write one with `bench table --json-out {p}`")
    try:
        report = json.loads(p.read_text())
    except ValueError:
        raise DataError(f"{p} is not valid JSON; write it again with `bench table --json-out {p}`") from None
    if not isinstance(report, dict) or report.get("bench") != "table":
        raise DataError(f"{p} is not a `bench table` report; write one with `bench table --json-out {p}`")
    return report


# ----------------------------------------------------------------------------------------------
# Selecting a model


def parse_min_metrics(pairs: Sequence[str]) -> dict[str, float]:
    """``["macro_f1=0.7"]`` -> ``{"macro_f1": 0.7}``; names must be known metrics."""
    out: dict[str, float] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or name not in METRIC_NAMES:
            raise ConfigError(f"min-metric: expected NAME=VALUE with NAME one of {', '.join(METRIC_NAMES)}, "
                              f"got {pair!r}")
        try:
            out[name] = float(value)
        except ValueError:
            raise ConfigError(f"min-metric: {value!r} is not a number in {pair!r}") from None
    return out


def _row_name(row: Mapping[str, Any]) -> str:
    return f"{row['model']} [{row['artifact']}]" if row.get("artifact") else str(row["model"])


def select(report: Mapping[str, Any], max_latency_ms: float | None = None,
           min_metrics: Mapping[str, float] | None = None, max_cost: float | None = None) -> dict[str, Any]:
    """The best measured row meeting every requirement, and why each other row was not chosen.

    Best = highest compared metric (the table's ``compared_metric``); ties -> lower batch-1 p50.

    Returns:
        ``{"chosen": row name or None, "chosen_row": row or None, "requirements": {...},
        "rejected": [{"row": name, "reasons": [...]}]}``.
    """
    metric = report["compared_metric"]
    min_metrics = dict(min_metrics or {})
    label = METRIC_NAMES.get(metric, metric)
    verdicts: list[tuple[Mapping[str, Any], list[str]]] = []
    for row in report["rows"]:
        if row["status"] != "ok":
            verdicts.append((row, [f"{row['status']}: {row.get('reason', '')}"]))
            continue
        reasons = []
        lat = row["latency_p50_ms"]
        if max_latency_ms is not None and lat > max_latency_ms:
            reasons.append(f"latency {lat:.2f} ms > {max_latency_ms:g} ms")
        metrics = row.get("metrics", {})
        for name, floor in min_metrics.items():
            value = metrics.get(name)
            if value is None:
                reasons.append(f"{METRIC_NAMES[name]} unknown ({row.get('metric_source', 'not measured')})")
            elif value < floor:
                reasons.append(f"{METRIC_NAMES[name]} {value:.4f} < {floor:g}")
        if metrics.get(metric) is None:
            reasons.append(f"no {label} to rank by")
        cost = row["cost_per_1m"]
        if max_cost is not None and cost > max_cost:
            reasons.append(f"cost {_money(cost)}/1M > ${max_cost:g}")
        verdicts.append((row, reasons))
    qualified = [row for row, reasons in verdicts if not reasons]
    chosen = max(qualified, key=lambda r: (r["metrics"][metric], -r["latency_p50_ms"])) if qualified else None
    rejected = []
    for row, reasons in verdicts:
        if row is chosen:
            continue
        if not reasons and chosen is not None:
            mine, best = row["metrics"][metric], chosen["metrics"][metric]
            if mine < best:
                reasons = [f"meets every requirement, but {label} {mine:.4f} < {best:.4f} of {_row_name(chosen)}"]
            else:
                reasons = [f"ties with {_row_name(chosen)} on {label} ({mine:.4f}) but is slower "
                           f"({row['latency_p50_ms']:.2f} ms vs {chosen['latency_p50_ms']:.2f} ms)"]
        rejected.append({"row": _row_name(row), "reasons": reasons})
    return {
        "bench": "select",
        "compared_metric": metric,
        "requirements": {"max_latency_ms": max_latency_ms, "min_metrics": min_metrics, "max_cost_per_1m": max_cost},
        "chosen": _row_name(chosen) if chosen else None,
        "chosen_row": dict(chosen) if chosen else None,
        "rejected": rejected,
    }


def select_markdown(result: Mapping[str, Any]) -> str:
    """The selection and every rejection, as Markdown."""
    req = result["requirements"]
    parts = ([f"p50 latency <= {req['max_latency_ms']:g} ms"] if req["max_latency_ms"] is not None else []) + \
            [f"{METRIC_NAMES[k]} >= {v:g}" for k, v in req["min_metrics"].items()] + \
            ([f"cost <= ${req['max_cost_per_1m']:g}/1M"] if req["max_cost_per_1m"] is not None else [])
    label = METRIC_NAMES.get(result["compared_metric"], result["compared_metric"])
    lines = [f"Requirements: {', '.join(parts) or 'none'}; best = highest {label}, ties -> lower latency.", ""]
    row = result["chosen_row"]
    if row:
        lines.append(f"**Selected: {result['chosen']}**: {label} {row['metrics'][result['compared_metric']]:.4f}, "
                     f"p50 {row['latency_p50_ms']:.2f} ms (batch 1), {_money(row['cost_per_1m'])} per 1M comments.")
    else:
        lines.append("**No row meets every requirement**; relax one of them (see the reasons below).")
    lines += ["", "| row | not chosen because |", "|---|---|"]
    lines += [f"| {r['row']} | {'; '.join(r['reasons'])} |" for r in result["rejected"]]
    return "\n".join(lines) + "\n"
