"""Quantized inference speed and accuracy: our paths vs the Optimum int8 path a user would pick, in one run.

For each artifact (a teacher or student), on the same texts and the same machine:

* ``torch fp32`` and ``torch bf16`` (autocast) — :func:`export.runtime.load`;
* ``ORT fp32`` — :func:`export.onnx.export_onnx` (O2 transformer fusions for HF models);
* ``ORT int8 dynamic`` and ``ORT int8 static`` — :func:`export.quantize.quantize` on the unfused
  export, as ``compress quantize`` runs it: the accuracy guard, reduce_range auto (7-bit weights on
  x86 CPUs without VNNI), int8 dynamic with ONNX Runtime's transformer fusion on BERT-family
  encoders (:mod:`export.optimize`), run by :func:`export.runtime.load`;
* ``Optimum int8`` (HF architectures only) — built as Optimum's documentation does it: its own
  export, ``ORTQuantizer`` with ``AutoQuantizationConfig.avx512_vnni(is_static=False)`` where the CPU
  has an int8 dot-product instruction (``avx2`` on other x86 CPUs, ``arm64`` elsewhere; see
  :func:`optimum_config_name`), run through ``ORTModelForSequenceClassification`` on requests of 32
  tokenized with ``padding=True`` (padded to the longest text of the request);
* with ``levers``: our int8 dynamic path with one lever undone each (spinning ONNX Runtime threads,
  micro-batches of 32 without the token cap, the unfused graph), and Optimum's path with threads that
  do not spin, to show what each contributes.

Measures: batch-1 latency (p50/p90, one text per call), throughput of requests of 32 texts in
data order, throughput of a bulk call (the same texts in one call; ours sorts them by length into
micro-batches, Optimum's runs them as requests of 32), and validation macro ROC-AUC on the held-out
split of ``--data``. Warm-up first, then three rounds in which every path is timed on a third of the
texts, the order rotating (see :func:`measure`); ratios are against Optimum's int8 path in the same
run. A path slower than its time budget is measured on fewer texts (the row says how many). Then
every path with an ONNX file is profiled by operator type (:func:`profile_paths`): where the time goes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.measure import cpu_capabilities, percentiles_ms, time_calls, warm_up
from compress.cpu import VNNI_FLAGS, cpu_flags, is_x86

log = logging.getLogger(__name__)

REQUEST = 32
TARGET_RATIO = 2.0


@dataclass
class InferencePath:
    """One inference path: a predict(texts) -> (N, L) probabilities callable and its numbers."""

    name: str
    predict: Callable[[list[str]], np.ndarray]
    note: str = ""
    latencies: list[float] = field(default_factory=list)
    request_seconds: float = 0.0
    request_texts: int = 0
    bulk_seconds: float | None = None
    bulk_texts: int = 0
    auc: float | None = None
    auc_drop: float | None = None
    onnx: Path | None = None  # the ONNX file it runs, for the per-operator profile
    tokenize: Callable[[list[str]], Any] | None = None  # the path's own tokenizer call, for the batch-1 breakdown
    run_ids: Callable[[list[list[int]]], Any] | None = None  # its session.run on token ids padded to the longest
    plan: Callable[[np.ndarray], list[np.ndarray]] | None = None  # its bulk batching: token lengths -> row groups


def optimum_config_name(flags: frozenset[str], x86: bool) -> str:
    """The ``AutoQuantizationConfig`` a user would pick for this CPU: ``avx512_vnni`` where it has an int8
    dot-product instruction (AVX512-VNNI, AVX-VNNI, AMX), ``avx2`` on other x86 CPUs, ``arm64`` elsewhere."""
    if not x86:
        return "arm64"
    return "avx512_vnni" if flags & VNNI_FLAGS else "avx2"


def optimum_quantized(artifact: Path, workdir: Path, config_name: str) -> Path:
    """Optimum's documented CPU recipe: ``onnx_export_from_model``, then ``ORTQuantizer`` with
    ``AutoQuantizationConfig.<config_name>(is_static=False)``; returns the quantized ONNX file."""
    import torch
    from optimum.exporters.onnx import onnx_export_from_model
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    from compress.models import load_model

    model, _ = load_model(artifact)
    export_dir, quant_dir = workdir / "optimum-onnx", workdir / "optimum-int8"
    with torch.no_grad():
        onnx_export_from_model(model, export_dir, task="text-classification", do_validation=False)
    qconfig = getattr(AutoQuantizationConfig, config_name)(is_static=False)
    ORTQuantizer.from_pretrained(export_dir).quantize(qconfig, quant_dir)
    return quant_dir / "model_quantized.onnx"


def optimum_path(name: str, artifact: Path, onnx_file: Path, session_options: Any = None,
                 note: str = "") -> InferencePath:
    """Optimum's model as its examples run it: ``ORTModelForSequenceClassification`` (its session options unless
    ``session_options``), each request of up to 32 texts tokenized with ``padding=True`` (padded to its longest
    text, in data order), sigmoid of the logits."""
    import torch
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer

    from bench.op_profile import feeds_for
    from compress.artifact import read_info

    max_length = read_info(artifact).max_length
    tokenizer = AutoTokenizer.from_pretrained(str(artifact / "tokenizer"))
    ort_model = ORTModelForSequenceClassification.from_pretrained(onnx_file.parent, file_name=onnx_file.name,
                                                                  session_options=session_options)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def predict(texts: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), REQUEST):
            enc = optimum_inputs(tokenizer, texts[start:start + REQUEST], max_length)
            with torch.inference_mode():
                out.append(torch.sigmoid(ort_model(**enc).logits).numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)

    inputs = [i.name for i in ort_model.session.get_inputs()]

    def run_ids(token_ids: list[list[int]]) -> Any:
        return ort_model.session.run(None, feeds_for(inputs, token_ids, pad))

    return InferencePath(name, predict, note=note, onnx=onnx_file,
                         tokenize=lambda texts: optimum_inputs(tokenizer, texts, max_length), run_ids=run_ids,
                         plan=lambda lengths: [np.arange(i, min(i + REQUEST, len(lengths)))
                                               for i in range(0, len(lengths), REQUEST)])


def our_path(name: str, predictor: Any, note: str = "", onnx: Path | None = None) -> InferencePath:
    """Our :class:`export.runtime.TextPredictor` as a path (with its tokenizer call and forward for the breakdown)."""
    from compress.batching import micro_batches, pad_batch

    return InferencePath(name, predictor.predict, note=note, onnx=onnx, tokenize=predictor.encode,
                         run_ids=lambda token_ids: predictor.forward(*pad_batch(token_ids, predictor.pad_id)),
                         plan=lambda lengths: micro_batches(lengths, predictor.max_batch_size, predictor.min_fill,
                                                            predictor.max_tokens))


def optimum_inputs(tokenizer: Any, texts: list[str], max_length: int) -> Any:
    """One Optimum request: input_ids / attention_mask (B, T) torch tensors padded to the longest of ``texts``
    (``padding=True``), truncated to the artifact's ``max_length`` as ours are."""
    return tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")


def lever_paths(predictor: Any, onnx_path: Path, unfused: Any | None, artifact: Path,
                optimum_file: Path | None) -> list[InferencePath]:
    """Our int8 dynamic path with one of its levers undone each (``--levers``), and Optimum's model with our
    session's one setting that matters most on a busy machine (threads that do not spin), in the same run.

    Args:
        predictor: the int8 dynamic :class:`export.runtime.TextPredictor`.
        onnx_path: its ``model.onnx``.
        unfused: the same model quantized without the transformer fusion, or None.
        artifact / optimum_file: the source artifact and Optimum's quantized file (None: no Optimum path).
    """
    import onnxruntime as ort

    from export.ort import ort_session, session_forward

    spinning = dataclasses.replace(predictor, forward=session_forward(ort_session(onnx_path, spin=True)))
    rows = [our_path("lever: ORT int8 dynamic, spinning threads (ORT default)", spinning,
                     "session.intra_op.allow_spinning=1"),
            our_path("lever: ORT int8 dynamic, micro-batches of 32 (no token cap)",
                     dataclasses.replace(predictor, max_tokens=None),
                     f"instead of at most {predictor.max_tokens} tokens per micro-batch")]
    if unfused is not None:
        rows.append(our_path("lever: ORT int8 dynamic, unfused graph", unfused, "quantized with --optimize none"))
    if optimum_file is not None:
        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        rows.append(optimum_path("lever: Optimum int8, threads not spinning", artifact, optimum_file, options,
                                 "Optimum's path with session.intra_op.allow_spinning=0, nothing else changed"))
    return rows


def build_paths(artifact: Path, data: str, fmt: str | None, workdir: Path, max_auc_drop: float,
                calibration_samples: int, levers: bool = False) -> tuple[list[InferencePath], dict[str, Any]]:
    """Every path for one artifact (exports and quantizations land in ``workdir``).

    Both int8 paths quantize the unfused export, as ``compress quantize`` on the artifact does:
    int8 dynamic gets the transformer fusion there (BERT-family encoders, :mod:`export.optimize`).
    """
    from compress.artifact import read_info
    from compress.errors import UserError
    from export.onnx import OnnxExportConfig, export_onnx
    from export.quantize import QuantizeConfig, quantize
    from export.runtime import load

    info = read_info(artifact, kinds=["teacher", "student"])
    hf = info.architecture in ("hf", "distilbert")
    details: dict[str, Any] = {"artifact": str(artifact), "architecture": info.architecture, "kind": info.kind}
    paths = [InferencePath("torch fp32", load(artifact, "torch").predict),
             InferencePath("torch bf16 (autocast)", load(artifact, "torch-bf16").predict)]
    fp32 = export_onnx(artifact, OnnxExportConfig(out=str(workdir / "onnx-fp32"), optimize="O2" if hf else "none"))
    plain = fp32 if not hf else export_onnx(artifact, OnnxExportConfig(out=str(workdir / "onnx-plain")))
    details["onnx_max_abs_diff"] = fp32.max_abs_diff
    paths.append(InferencePath("ORT fp32" + (" (O2 fusions)" if hf else ""), load(fp32.artifact).predict))
    int8_dynamic = None
    for mode, extra in (("int8-dynamic", {}), ("int8-static", {"calibration_samples": calibration_samples})):
        label = f"ORT {mode.replace('-', ' ')}"
        try:
            out = quantize(plain.artifact, QuantizeConfig(mode=mode, data=data, format=fmt, out=str(workdir / mode),
                                                          max_auc_drop=max_auc_drop, **extra))
        except UserError as exc:
            details[f"{mode}_failed"] = str(exc)
            log.warning("%s: %s", label, exc)
            continue
        quantized = read_info(out)
        guard = quantized.extra["guard"]
        predictor = load(out)
        paths.append(our_path(label, predictor, f"guard: {guard['chosen']}", out / "model.onnx"))
        details[f"{mode}_guard"] = guard
        details[f"{mode}_fusion"] = quantized.extra.get("fusion")
        if mode == "int8-dynamic":
            int8_dynamic = (predictor, out / "model.onnx")
    optimum_file = None
    if hf:
        config_name = optimum_config_name(cpu_flags(), is_x86())
        optimum_file = optimum_quantized(artifact, workdir, config_name)
        paths.append(optimum_path(f"Optimum int8 ({config_name} dynamic, pad to longest)", artifact, optimum_file))
        details["optimum_config"] = config_name
    if levers and int8_dynamic is not None:
        unfused = None
        if hf:
            try:
                unfused = load(quantize(plain.artifact, QuantizeConfig(
                    mode="int8-dynamic", data=data, format=fmt, optimize="none", max_auc_drop=max_auc_drop,
                    out=str(workdir / "int8-dynamic-unfused"))))
            except UserError as exc:
                log.warning("unfused int8 dynamic: %s", exc)
        paths.extend(lever_paths(*int8_dynamic, unfused, artifact, optimum_file))
    return paths, details


def measure(paths: list[InferencePath], latency_texts: list[str], request_texts: list[str], warmup: int,
            budget_s: float, rounds: int = 3) -> None:
    """Warm up, then ``rounds`` rounds; each round times every path on its share of the texts.

    Paths run one after another inside a round (block by block, a short pause between them, so one
    runtime's spinning worker threads do not steal the next one's cores), the order rotating each
    round so slow drifts in background load spread over all paths. A path past ``budget_s`` in a
    pass stops early.
    """
    singles = [[text] for text in latency_texts]
    for path in paths:
        warm_up(path.predict, singles[:warmup], warmup)
        warm_up(path.predict, [request_texts[:REQUEST]], 1)
    lat_parts = np.array_split(np.arange(len(singles)), rounds)
    req_chunks = [request_texts[i:i + REQUEST] for i in range(0, len(request_texts), REQUEST)]
    req_parts = np.array_split(np.arange(len(req_chunks)), rounds)
    budget = budget_s / rounds
    for r in range(rounds):
        for path in paths[r % len(paths):] + paths[:r % len(paths)]:
            time.sleep(0.2)
            batch1 = time_calls(path.predict, [singles[i] for i in lat_parts[r]], 0, len(lat_parts[r]), budget,
                                min_iters=1)
            path.latencies.extend(batch1.seconds.tolist())
            time.sleep(0.2)
            chunks = [req_chunks[i] for i in req_parts[r]]
            requests = time_calls(path.predict, chunks, 0, len(chunks), budget, min_iters=1)
            path.request_seconds += requests.total_s
            path.request_texts += requests.examples
            done = [text for chunk in chunks[:requests.calls] for text in chunk]
            if done:  # the same texts in one call: ours sorts them by length into micro-batches of 32
                time.sleep(0.2)
                path.bulk_seconds = (path.bulk_seconds or 0.0) + time_calls(path.predict, [done], 0, 1).total_s
                path.bulk_texts += len(done)


def evaluate(paths: list[InferencePath], texts: list[str], labels: np.ndarray, names: list[str], slow: set[str],
             slow_rows: int) -> None:
    """Validation macro ROC-AUC of every path, and its drop vs torch fp32 on the same rows.

    ``slow`` paths (bf16 on CPUs without native bf16) are scored on the first ``slow_rows`` rows
    only; their drop is against torch fp32 on those same rows.
    """
    from export.quantize import macro_auc

    reference = next(p for p in paths if p.name == "torch fp32")
    ref_probs = reference.predict(texts)
    for path in paths:
        rows = slow_rows if path.name in slow else len(texts)
        probs = ref_probs if path is reference else path.predict(texts[:rows])
        path.auc = macro_auc(labels[:rows], probs[:rows], names)
        path.auc_drop = macro_auc(labels[:rows], ref_probs[:rows], names) - path.auc
        if rows < len(texts):
            path.note = (path.note + "; " if path.note else "") + f"AUC on {rows} rows"


def machine() -> dict[str, Any]:
    """The CPU and what it can do (:func:`bench.measure.cpu_capabilities`), and the load average at the start."""
    return {**cpu_capabilities(), "load_average_at_start": list(os.getloadavg())}


def path_row(path: InferencePath, ref: InferencePath | None) -> dict[str, Any]:
    """One report row: batch-1 p50/p90, texts/s of requests of 32 and of bulk calls, AUC; with ``ref`` (Optimum's
    default) the speed ratios ``x_*_vs_optimum`` (> 1 = faster than Optimum)."""
    batch1 = percentiles_ms(path.latencies, (50, 90))
    row: dict[str, Any] = {
        "path": path.name, "note": path.note,
        "batch1_p50_ms": batch1["p50_ms"],
        "batch1_p90_ms": batch1["p90_ms"],
        "batch1_n": len(path.latencies),
        "requests32_texts_per_s": path.request_texts / path.request_seconds if path.request_seconds else None,
        "bulk32_texts_per_s": path.bulk_texts / path.bulk_seconds if path.bulk_seconds else None,
        "throughput_n": path.request_texts,
        "macro_roc_auc": path.auc,
        "auc_drop_vs_torch_fp32": path.auc_drop,
    }
    if ref is not None and ref is not path:
        r = path_row(ref, None)
        row["x_requests32_vs_optimum"] = _ratio(row["requests32_texts_per_s"], r["requests32_texts_per_s"])
        row["x_bulk32_vs_optimum"] = _ratio(row["bulk32_texts_per_s"], r["bulk32_texts_per_s"])
        row["x_batch1_speed_vs_optimum"] = _ratio(r["batch1_p50_ms"], row["batch1_p50_ms"])
    return row


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def int8_target(rows: list[dict[str, Any]], max_auc_drop: float) -> dict[str, Any] | None:
    """The best of our int8 rows (by the weaker of its batch-1 and bulk ratios) against the target: >= 2x Optimum's
    int8 path with a ΔAUC of at most ``max_auc_drop``, at batch 1, for bulk calls and for requests of 32; None
    without an int8 row."""
    ours = [r for r in rows if r["path"] in ("ORT int8 dynamic", "ORT int8 static")]
    if not ours:
        return None
    # the path closest to meeting both: its weaker ratio of batch 1 and bulk
    best = max(ours, key=lambda r: min(r["x_batch1_speed_vs_optimum"] or 0, r["x_bulk32_vs_optimum"] or 0))
    accurate = best["auc_drop_vs_torch_fp32"] is not None and best["auc_drop_vs_torch_fp32"] <= max_auc_drop
    return {"best_int8_path": best["path"], "x_bulk32_vs_optimum": best["x_bulk32_vs_optimum"],
            "x_requests32_vs_optimum": best["x_requests32_vs_optimum"],
            "x_batch1_speed_vs_optimum": best["x_batch1_speed_vs_optimum"],
            "auc_drop_vs_torch_fp32": best["auc_drop_vs_torch_fp32"],
            "met_bulk": bool((best["x_bulk32_vs_optimum"] or 0) >= TARGET_RATIO and accurate),
            "met_requests": bool((best["x_requests32_vs_optimum"] or 0) >= TARGET_RATIO and accurate),
            "met_batch1": bool((best["x_batch1_speed_vs_optimum"] or 0) >= TARGET_RATIO and accurate)}


def call_breakdown(path: InferencePath, texts: list[str], token_ids: list[list[int]]) -> dict[str, float]:
    """Where a batch-1 call's time goes outside the graph: text by text, the path's own tokenizer call, its
    ``session.run`` on those token ids and the whole predict call, interleaved; medians in ms. ``rest_ms`` =
    predict - tokenize - session.run: Python around the call (sorting, padding, tensors, the sigmoid)."""
    tokenize, run, predict = [], [], []
    for text, ids in zip(texts, token_ids, strict=True):
        for fn, arg, out in ((path.tokenize, [text], tokenize), (path.run_ids, [ids], run),
                             (path.predict, [text], predict)):
            start = time.perf_counter()
            fn(arg)
            out.append(time.perf_counter() - start)
    ms = {k: float(np.median(v)) * 1000.0 for k, v in
          (("tokenize_ms", tokenize), ("session_run_ms", run), ("predict_ms", predict))}
    return {**ms, "rest_ms": ms["predict_ms"] - ms["tokenize_ms"] - ms["session_run_ms"], "calls": len(texts)}


def profile_paths(paths: list[InferencePath], tokenizer: Any, max_length: int, latency_texts: list[str],
                  bulk_texts: list[str]) -> dict[str, dict[str, Any]]:
    """Where the time goes, for our int8 paths and Optimum's: per operator type
    (:func:`bench.op_profile.op_profiles`, the models interleaved) at batch 1 (the latency texts, one per run,
    the same token ids for every model) and in bulk (``bulk_texts`` cut as each path cuts a bulk call: ours into
    sorted, capped micro-batches, Optimum's into requests of 32 in data order); and the batch-1 call outside the
    graph (:func:`call_breakdown`)."""
    from bench.op_profile import op_profiles

    def ids(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, truncation=True, max_length=max_length, padding=False)["input_ids"] if texts else []

    profiled = [p for p in paths if p.onnx is not None and p.onnx.is_file() and p.plan is not None
                and not p.name.startswith("lever")]
    if not profiled:
        return {}
    single_ids, bulk_ids = ids(latency_texts), ids(bulk_texts)
    lengths = np.array([len(seq) for seq in bulk_ids])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    log.info("profiling %s", ", ".join(p.name for p in profiled))
    batch1 = op_profiles({p.name: (p.onnx, [[seq] for seq in single_ids]) for p in profiled}, pad)
    bulk = op_profiles({p.name: (p.onnx, [[bulk_ids[i] for i in rows] for rows in p.plan(lengths)])
                        for p in profiled}, pad)
    out = {p.name: {"batch1": batch1[p.name], "bulk": bulk[p.name]} for p in profiled}
    for p in profiled:
        if p.tokenize is not None and p.run_ids is not None:
            out[p.name]["batch1_call"] = call_breakdown(p, latency_texts, single_ids)
    return out


def run(artifacts: list[str], data: str, fmt: str | None = None, latency_texts: int = 100,
        throughput_texts: int = 512, warmup: int = 10, budget_s: float = 120.0, max_auc_drop: float = 0.005,
        calibration_samples: int = 128, slow_eval_rows: int = 200, seed: int = 0, levers: bool = False,
        profile_texts: int = 40) -> dict:
    """Build, measure, profile and evaluate every path for every artifact; returns the JSON report."""
    from transformers import AutoTokenizer

    from bench.measure import CpuWatch
    from compress.artifact import read_info
    from export.quantize import load_guard_data

    report: dict[str, Any] = {"machine": machine(), "settings": {
        "data": data, "latency_texts": latency_texts, "throughput_texts": throughput_texts, "warmup": warmup,
        "request_size": REQUEST, "optimum_padding": "longest in each request (padding=True)",
        "budget_s_per_path": budget_s, "max_auc_drop": max_auc_drop, "calibration_samples": calibration_samples,
        "levers": levers, "profile_texts": profile_texts}, "artifacts": []}
    for artifact in artifacts:
        source = Path(artifact)
        info = read_info(source, kinds=["teacher", "student"])
        guard = load_guard_data(data, fmt, info.labels, info.hierarchy, 0.1, seed, None)
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(guard.texts))
        timed = [guard.texts[i] for i in order]
        with tempfile.TemporaryDirectory(prefix="quant-speed-") as tmp:
            paths, details = build_paths(source, data, fmt, Path(tmp), max_auc_drop, calibration_samples, levers)
            log.info("%s: measuring %d paths", source, len(paths))
            watch = CpuWatch()
            measure(paths, timed[:latency_texts], timed[:throughput_texts], warmup, budget_s)
            busy = watch.stop()
            profiles = profile_paths(paths, AutoTokenizer.from_pretrained(str(source / "tokenizer")), info.max_length,
                                     timed[:profile_texts], timed[:REQUEST * max(1, profile_texts // 8)])
            evaluate(paths, guard.texts, guard.labels, info.labels, {"torch bf16 (autocast)"}, slow_eval_rows)
        ref = next((p for p in paths if p.name.startswith("Optimum")), None)
        rows = [path_row(p, ref) for p in paths]
        target = int8_target(rows, max_auc_drop) if ref is not None else None
        report["artifacts"].append({**details, "eval_rows": len(guard.texts), "rows": rows, "target": target,
                                    "profiles": profiles, "other_cpus_during_timing": busy.get("other_cpus"),
                                    "load_average_after": list(os.getloadavg()),
                                    "optimum": "measured" if ref is not None else "n/a (own architecture)"})
    return report


def _fmt(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"CPU: {m['cpu']}, {m['physical_cores']} physical cores, AVX2 {m['avx2']}, AVX-512 {m['avx512']}, "
             f"VNNI {m['vnni']}, AMX {m['amx']}; load average at start {m['load_average_at_start'][0]:.1f}", ""]
    for art in report["artifacts"]:
        lines += [f"### {art['artifact']} ({art['architecture']}), macro ROC-AUC on {art['eval_rows']} held-out rows",
                  "", "| path | batch-1 p50 ms | req-32 texts/s | bulk texts/s | macro ROC-AUC | ΔAUC vs fp32 | "
                  "req-32 × Optimum | bulk × Optimum | batch-1 × Optimum | note |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in art["rows"]:
            note = r["note"]
            if r["batch1_n"] < report["settings"]["latency_texts"]:
                note += f" (time budget: batch-1 n={r['batch1_n']}, throughput n={r['throughput_n']})"
            lines.append(
                f"| {r['path']} | {_fmt(r['batch1_p50_ms'], '.1f')} | {_fmt(r['requests32_texts_per_s'], '.1f')} | "
                f"{_fmt(r['bulk32_texts_per_s'], '.1f')} | {_fmt(r['macro_roc_auc'], '.4f')} | "
                f"{_fmt(r['auc_drop_vs_torch_fp32'], '+.4f')} | {_fmt(r.get('x_requests32_vs_optimum'), '.2f')} | "
                f"{_fmt(r.get('x_bulk32_vs_optimum'), '.2f')} | {_fmt(r.get('x_batch1_speed_vs_optimum'), '.2f')} | "
                f"{note} |")
        t = art["target"]
        if t:
            lines += ["", f"Target (best int8 >= {TARGET_RATIO:g}x Optimum's int8 path, "
                      f"ΔAUC <= {report['settings']['max_auc_drop']}): "
                      f"{t['best_int8_path']}: batch 1 {_fmt(t['x_batch1_speed_vs_optimum'], '.2f')}x "
                      f"({_met(t['met_batch1'])}), bulk {_fmt(t['x_bulk32_vs_optimum'], '.2f')}x "
                      f"({_met(t['met_bulk'])}), requests of 32 "
                      f"{_fmt(t['x_requests32_vs_optimum'], '.2f')}x ({_met(t['met_requests'])}), "
                      f"ΔAUC {_fmt(t['auc_drop_vs_torch_fp32'], '+.4f')}"]
        else:
            lines += ["", f"Optimum: {art['optimum']}"]
        if art.get("other_cpus_during_timing") is not None:
            lines.append(f"Other processes used {art['other_cpus_during_timing']:.2f} logical CPUs on average while "
                         "the paths were timed.")
        fusion = art.get("int8-dynamic_fusion")
        if fusion:
            lines.append(f"int8 dynamic transformer fusion: {'applied' if fusion['applied'] else 'not applied'} "
                         f"({fusion['reason']}; fused {fusion['fused_operators'] or 'nothing'})")
        lines += profile_markdown(art.get("profiles") or {})
        for key in ("int8-dynamic_failed", "int8-static_failed"):
            if key in art:
                lines.append(f"{key.split('_')[0]} guard failed: {art[key]}")
        lines.append("")
    return "\n".join(lines)


def _met(met: bool) -> str:
    return "met" if met else "NOT met"


def profile_markdown(profiles: dict[str, dict[str, Any]], top: int = 12) -> list[str]:
    """Where the time goes: ms by operator type (and share of kernel time) for every profiled path, at batch 1
    per call and in bulk per text, the operators with the most time over all paths first; then the batch-1
    call outside the graph."""
    from export.runtime import CPU_ORT_MAX_TOKENS

    if not profiles:
        return []
    names = list(profiles)
    lines = ["", "Where the time goes (ONNX Runtime profiler, the models interleaved; ms by operator type and its "
             "share of kernel time):"]
    for batch, key, title in (("batch1", "ms", "batch 1, ms per call (one text per call, the same token ids for "
                                               "every model)"),
                              ("bulk", "ms_per_text", "bulk, ms per text (the same texts, cut as each path cuts a "
                                                      "bulk call: ours into sorted micro-batches of at most "
                                                      f"{CPU_ORT_MAX_TOKENS} tokens, Optimum's into requests of "
                                                      f"{REQUEST} padded to their longest)")):
        total: dict[str, float] = {}
        for name in names:
            for o in profiles[name][batch]["ops"]:
                total[o["op"]] = total.get(o["op"], 0.0) + o[key]
        ops = sorted(total, key=total.get, reverse=True)

        def cell(name: str, op: str, batch: str = batch, key: str = key) -> str:
            found = next((o for o in profiles[name][batch]["ops"] if o["op"] == op), None)
            return f"{found[key]:.3f} ({100 * found['share']:.0f}%)" if found else ""

        suffix = "" if key == "ms" else "_per_text"
        lines += ["", f"{title}:", "", "| operator | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        lines += [f"| {op} | " + " | ".join(cell(n, op) for n in names) + " |" for op in ops[:top]]
        if ops[top:]:
            lines.append(f"| {len(ops) - top} other operator types | " + " | ".join(
                f"{sum(o[key] for o in profiles[n][batch]['ops'] if o['op'] in ops[top:]):.3f}" for n in names) + " |")
        lines.append("| all kernels | " + " | ".join(
            _fmt(profiles[n][batch][f"kernels_ms{suffix}"], ".3f") for n in names) + " |")
        lines.append("| session.run (profiled) | " + " | ".join(
            _fmt(profiles[n][batch][f"model_run_ms{suffix}"], ".3f") for n in names) + " |")
    calls = {n: p["batch1_call"] for n, p in profiles.items() if "batch1_call" in p}
    if calls:
        lines += ["", "Batch-1 call, text by text (medians, ms; tokenize, session.run and predict interleaved; rest = "
                  "Python around the call):", "", "| path | tokenize | session.run | rest | predict |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {n} | {c['tokenize_ms']:.2f} | {c['session_run_ms']:.2f} | {c['rest_ms']:.2f} | "
                  f"{c['predict_ms']:.2f} |" for n, c in calls.items()]
    return lines


def dumps(report: dict) -> str:
    return json.dumps(report, indent=2, default=float)
