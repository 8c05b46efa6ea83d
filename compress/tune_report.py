"""What `compress tune` reports: one row per trial, the ``tune.json`` summary, the plain-text trials
table, and the tuning run's MLflow metrics, tags and files.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from compress.tune_config import TuneConfig
from compress.tune_study import masked_url


def format_value(value: Any) -> str:
    """A sampled value for a log line or a table cell (floats to 4 significant digits)."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """One JSON-ready row per trial: number, state, value, params, epochs, duration_s, error."""
    rows = []
    for t in study.trials:
        duration = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_complete and t.datetime_start else None
        epochs = t.user_attrs.get("epochs", len(t.intermediate_values))
        row = {"number": t.number, "state": t.state.name, "value": t.value, "params": dict(t.params),
               "epochs": epochs, "duration_s": round(duration, 1) if duration is not None else None}
        if "error" in t.user_attrs:
            row["error"] = t.user_attrs["error"]
        rows.append(row)
    return rows


def count_states(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """``{"complete": 3, "pruned": 1, ...}``: how many trials ended in each state."""
    out: dict[str, int] = {}
    for row in rows:
        out[row["state"].lower()] = out.get(row["state"].lower(), 0) + 1
    return out


def study_summary(config: TuneConfig, best: Any, rows: list[dict[str, Any]], ran: list[int], retrained: bool,
                  run_id: str | None) -> dict[str, Any]:
    """The ``tune.json`` document: the study, its best trial, this call's trials, the space, every trial's row."""
    return {
        "study": config.study_name, "storage": masked_url(config.storage), "target": config.target,
        "metric": config.metric, "direction": "maximize",
        "best": {"trial": best.number, "value": best.value, "params": dict(best.params),
                 "overrides": dict(best.user_attrs.get("overrides", best.params)),
                 "metrics": best.user_attrs.get("metrics", {})},
        "artifact": str(config.out), "retrained": retrained, "counts": count_states(rows), "ran_this_call": list(ran),
        "space": {s.key: s.describe() for s in config.space}, "space_source": config.space_source,
        "space_yaml": config.space_yaml or None,
        "mlflow_run_id": run_id, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "trials": rows,
    }


def write_summary(out: Path, doc: Mapping[str, Any]) -> None:
    """``out/tune.json``, replaced atomically (readers never see half a file)."""
    tmp = out / f".tune.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    os.replace(tmp, out / "tune.json")


def _short_names(keys: Sequence[str]) -> dict[str, str]:
    """``optim.lr`` -> ``lr``, ``loss.params.gamma`` -> ``gamma``; the full key where two would clash."""
    short = {k: k.split(".")[-1] for k in keys}
    clashes = {s for s in short.values() if list(short.values()).count(s) > 1}
    return {k: (k if s in clashes else s) for k, s in short.items()}


def format_trials_table(rows: Sequence[Mapping[str, Any]], best: int | None = None, limit: int = 30,
                        metric: str = "macro_roc_auc") -> str:
    """A short plain-text table of trials (best first, then by number), ``*`` marking the best; the value
    column is headed ``metric``."""
    keys = list(dict.fromkeys(k for row in rows for k in row["params"]))
    names = _short_names(keys)
    ordered = sorted(rows, key=lambda r: (r["number"] != best, -(r["value"] if r["value"] is not None
                                                                     and math.isfinite(r["value"]) else -1e9),
                                          r["number"]))
    header = ["trial", "state", metric, "epochs", "sec", *(names[k] for k in keys)]
    lines = [header]
    for row in ordered[:limit]:
        value = row["value"]
        lines.append([
            f"{row['number']}{'*' if row['number'] == best else ''}", row["state"].lower(),
            f"{value:.4f}" if isinstance(value, float) and math.isfinite(value) else "-",
            str(row.get("epochs") or "-"), f"{row['duration_s']:.0f}" if row.get("duration_s") is not None else "-",
            *(format_value(row["params"][k]) if k in row["params"] else "" for k in keys),
        ])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines)
    if len(ordered) > limit:
        text += f"\n... {len(ordered) - limit} more trials in tune.json"
    return text


def log_report(tracker: Any, best: Any, rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> None:
    """The tuning run's MLflow record: best value and trial counts, the best parameters as tags, and
    ``tune/tune.json`` + ``tune/trials.txt`` (the summary, not another copy of the model)."""
    tracker.log_metrics({"best_value": best.value, "best_trial": best.number,
                         **{f"n_{k}": v for k, v in count_states(rows).items()}})
    tracker.set_tags({"best_trial": best.number,
                      **{f"best.{k}": v for k, v in best.user_attrs.get("overrides", best.params).items()}})
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "tune.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        Path(folder, "trials.txt").write_text(format_trials_table(rows, best.number, limit=10_000,
                                                                      metric=summary["metric"]) + "\n")
        tracker.log_artifact_dir(folder, name="tune")
