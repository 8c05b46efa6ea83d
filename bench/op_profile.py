"""Where an ONNX model's time goes: ONNX Runtime's profiler, summed by operator type.

:func:`op_profile` runs a model on real, tokenized batches in a session with the runtime's options
(:func:`export.ort.ort_session`) and profiling on, then reads the trace ONNX Runtime writes: each
node's kernel time (``cat == "Node"``, ``*_kernel_time``) summed by ``op_name``, and each
``model_run`` (the whole ``session.run``, kernels plus ONNX Runtime's own work between them). The
warm-up runs are left out. What a predict call spends outside ``session.run`` (tokenizing, padding,
numpy, the sigmoid) is its latency minus ``model_run_ms``.
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


def summarize(events: list[dict[str, Any]], runs: int) -> dict[str, Any]:
    """Per-run milliseconds from an ONNX Runtime trace holding ``runs`` timed runs (after the warm-up ones).

    Returns:
        ``{"runs", "model_run_ms", "kernels_ms", "ops": [{"op", "ms", "share", "nodes"}, ...]}``, ops by
        time, ``share`` of the kernels' time, ``nodes`` = nodes of that type run per call.
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
    return {
        "runs": runs,
        "model_run_ms": float(np.mean([e["dur"] for e in timed])) / 1000.0 if timed else None,
        "kernels_ms": kernels / runs / 1000.0 if runs else None,
        "ops": [{"op": op, "ms": us / runs / 1000.0, "share": us / kernels if kernels else 0.0,
                 "nodes": count[op] / runs} for op, us in total.most_common()],
    }


def op_profile(onnx_path: str | os.PathLike[str], batches: Sequence[Sequence[Sequence[int]]], pad_id: int,
               warmup: int = 3, threads: int | None = None) -> dict[str, Any]:
    """Profile ``onnx_path`` on ``batches`` (each a list of token-id lists, padded to its longest).

    The first ``warmup`` batches run untimed (they are in the trace, and left out of the sums).
    """
    from export.ort import ort_session

    with tempfile.TemporaryDirectory(prefix="op-profile-") as tmp:
        session = ort_session(onnx_path, threads=threads, profile_prefix=str(Path(tmp) / "ort"))
        names = [i.name for i in session.get_inputs()]
        order = [*batches[:warmup], *batches]
        for token_ids in order:
            session.run(None, feeds_for(names, token_ids, pad_id))
        trace = Path(session.end_profiling())
        events = json.loads(trace.read_text())
    return summarize(events, len(batches))
