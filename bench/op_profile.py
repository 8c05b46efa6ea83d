"""Where ONNX models' time goes: ONNX Runtime's profiler, summed by operator type.

:func:`op_profiles` runs several models, each on its own real, tokenized batches, in sessions with
the runtime's options (:func:`export.ort.ort_session`) and profiling on, interleaved round by round
(the order rotating) so that a change in the machine's background load touches every model alike,
then reads the traces ONNX Runtime writes: each node's kernel time (``cat == "Node"``,
``*_kernel_time``) summed by ``op_name``, and each ``model_run`` (the whole ``session.run``, kernels
plus ONNX Runtime's own work between them). The warm-up runs are left out.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from compress.batching import pad_batch


def feeds_for(session_inputs: Sequence[str], token_ids: Sequence[Sequence[int]], pad_id: int
              ) -> dict[str, np.ndarray]:
    """One batch as a session wants it: input_ids / attention_mask (B, T) int64 padded to the longest text,
    and all-zero token_type_ids (B, T) when the graph takes them (Optimum's BERT exports do)."""
    ids, mask = pad_batch(token_ids, pad_id)
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    return {name: feeds[name] for name in session_inputs}


def summarize(events: list[dict[str, Any]], runs: int, texts: int | None = None) -> dict[str, Any]:
    """Per-run milliseconds from an ONNX Runtime trace whose last ``runs`` runs are timed (warm-up runs first).

    Args:
        texts: texts in the timed runs; adds per-text milliseconds (``*_per_text``).

    Returns:
        ``{"runs", "texts", "model_run_ms", "kernels_ms", "ops": [{"op", "ms", "share", "nodes"}, ...]}``, ops by
        time, ``share`` of the kernels' time, ``nodes`` = nodes of that type run per call; with ``texts`` also
        ``model_run_ms_per_text``, ``kernels_ms_per_text`` and each op's ``ms_per_text``.
    """
    model_runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                        key=lambda e: e["ts"])
    timed = model_runs[len(model_runs) - runs:] if runs else []
    start = timed[0]["ts"] if timed else float("inf")  # the warm-up runs come first: leave out their nodes
    node_events = [e for e in events if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time")
                   and e["ts"] >= start]
    total: Counter[str] = Counter()
    count: Counter[str] = Counter()
    for event in node_events:
        op = event.get("args", {}).get("op_name", "?")
        total[op] += event["dur"]
        count[op] += 1
    kernels = sum(total.values())
    run_us = sum(e["dur"] for e in timed)
    summary: dict[str, Any] = {
        "runs": runs, "texts": texts,
        "model_run_ms": run_us / runs / 1000.0 if runs else None,
        "kernels_ms": kernels / runs / 1000.0 if runs else None,
        "ops": [{"op": op, "ms": us / runs / 1000.0, "share": us / kernels if kernels else 0.0,
                 "nodes": count[op] / runs} for op, us in total.most_common()],
    }
    if texts:
        summary.update(model_run_ms_per_text=run_us / texts / 1000.0, kernels_ms_per_text=kernels / texts / 1000.0)
        for entry in summary["ops"]:
            entry["ms_per_text"] = total[entry["op"]] / texts / 1000.0
    return summary


def op_profiles(models: dict[str, tuple[str | os.PathLike[str], Sequence[Sequence[Sequence[int]]]]], pad_id: int,
                rounds: int = 3, warmup: int = 2, threads: int | None = None) -> dict[str, dict[str, Any]]:
    """Profile every model on its batches (each a list of token-id lists, padded to its longest), interleaved.

    Args:
        models: name -> (ONNX file, batches).
        rounds: each model runs every ``rounds``-th batch per round, the model order rotating.
        warmup: untimed runs of each model's first batches first (in its trace, left out of the sums).

    Returns:
        name -> :func:`summarize` of its timed runs (``texts`` = the texts in its batches).
    """
    from export.ort import ort_session

    names = list(models)
    with tempfile.TemporaryDirectory(prefix="op-profile-") as tmp:
        sessions = {name: ort_session(path, threads=threads, profile_prefix=str(Path(tmp) / f"model{i}"))
                    for i, (name, (path, _)) in enumerate(models.items())}
        inputs = {name: [i.name for i in session.get_inputs()] for name, session in sessions.items()}

        def run(name: str, token_ids: Sequence[Sequence[int]]) -> None:
            sessions[name].run(None, feeds_for(inputs[name], token_ids, pad_id))

        for name in names:
            for token_ids in models[name][1][:warmup]:
                run(name, token_ids)
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                for token_ids in models[name][1][r::rounds]:
                    run(name, token_ids)
        out = {}
        for name, session in sessions.items():
            events = json.loads(Path(session.end_profiling()).read_text())
            batches = models[name][1]
            out[name] = summarize(events, len(batches), sum(len(b) for b in batches))
    return out
