"""`bench accuracy --identity-columns`: identity-bias metrics of one label on data with identity annotations.

The data is a table in the Jigsaw Unintended Bias format (``civil_comments``): a text column
(``comment_text``), a truth column for the scored label with values in [0, 1] (``target``, the share of
raters who found the comment toxic; a 0/1 column works the same) and identity columns with values in
[0, 1] (``male``, ``female``, ``black``, ``muslim``, ...: the share of raters who saw the identity
mentioned). Both are binarised at >= 0.5, as the competition did; an empty identity cell (a row nobody
annotated) counts as not mentioned. Rows are scored as read, one by one (no dedup), so every text keeps
its own identity annotations.

Which label: the artifact's ``--bias-label`` (default ``toxic`` when it has one, else its first label);
its truth is ``--bias-target`` (default: ``target`` when the file has it, else the column named like the
label). Metrics: :mod:`compress.bias_metrics` (subgroup / BPSN / BNSP AUC, Borkan et al. 2019, and the
Kaggle final metric).
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bench.accuracy import format_cell, predict_texts
from compress.artifact import read_info
from compress.bias_metrics import BIAS_AUCS, bias_metrics
from compress.data import read_text_table
from compress.errors import ConfigError, DataError

THRESHOLD = 0.5  # identity mentioned / label positive, as the Jigsaw Unintended Bias competition binarised
TARGET_COLUMN = "target"


@dataclass(frozen=True)
class BiasData:
    """N scored rows.

    Attributes:
        texts: N texts.
        target: (N,) 0/1 truth of the scored label.
        identities: {identity column: (N,) bool, True where the row mentions it}.
        target_column: the column ``target`` came from.
    """

    texts: list[str]
    target: np.ndarray
    identities: dict[str, np.ndarray]
    target_column: str


def parse_identity_columns(value: str | Sequence[str]) -> tuple[str, ...]:
    """``"male,female"`` -> ``("male", "female")``; one-line ConfigError for none or a repeated name."""
    items = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v.strip()]
    if not items:
        raise ConfigError("--identity-columns: give at least one column name, e.g. male,female,black,muslim")
    repeated = sorted({v for v in items if items.count(v) > 1})
    if repeated:
        raise ConfigError(f"--identity-columns: {repeated[0]!r} is given twice; list each column once")
    return tuple(items)


def _unit_interval(frame: pd.DataFrame, column: str, source: str, allow_empty: bool) -> np.ndarray:
    """A column of numbers in [0, 1] as (N,) float64 (empty cells 0 when allowed); DataError otherwise."""
    raw = frame[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    empty = raw.isna().to_numpy() | (raw.astype(str).str.strip() == "").to_numpy()
    bad = (np.isnan(values) & ~(empty & allow_empty)) | (values < 0) | (values > 1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(f"{source}: column '{column}' has value {raw.iloc[first]!r} at data row {first + 1} "
                        f"({int(bad.sum())} such row(s)); it must hold numbers in [0, 1]")
    return np.nan_to_num(values, nan=0.0)


def load_bias_data(path: str | os.PathLike[str], identity_columns: Sequence[str], label: str,
                   target_column: str | None = None, text_column: str | None = None, format: str | None = None,
                   max_rows: int | None = None, seed: int = 0) -> BiasData:
    """The texts, the truth of ``label`` and the identity columns of ``path``, row for row.

    Raises:
        DataError: a missing column (named), an empty text, a value outside [0, 1].
    """
    if max_rows is not None and max_rows < 1:
        raise ConfigError(f"max_rows: must be >= 1, got {max_rows}")
    source = str(path)
    fix = "pass --identity-columns / --bias-target naming columns of the file"
    texts, frame = read_text_table(path, [*([target_column] if target_column else []), *identity_columns],
                                   text_column, format, fix)
    if target_column is None:
        target_column = TARGET_COLUMN if TARGET_COLUMN in frame.columns else label
        if target_column not in frame.columns:
            raise DataError(f"{source}: no truth column for label {label!r}: neither {TARGET_COLUMN!r} nor "
                            f"{label!r} is a column; pass --bias-target COLUMN")
    target = _unit_interval(frame, target_column, source, allow_empty=False) >= THRESHOLD
    identities = {c: _unit_interval(frame, c, source, allow_empty=True) >= THRESHOLD for c in identity_columns}
    rows = np.arange(len(texts))
    if max_rows is not None and max_rows < len(texts):
        rows = np.sort(np.random.default_rng(seed).choice(len(texts), max_rows, replace=False))
    return BiasData([texts[i] for i in rows.tolist()], target[rows].astype(np.int64),
                    {c: m[rows] for c, m in identities.items()}, target_column)


def bias_label(labels: Sequence[str], requested: str | None) -> str:
    """The scored label: ``requested`` (must be one of ``labels``), else ``toxic``, else the first label."""
    if requested is not None:
        if requested not in labels:
            raise ConfigError(f"--bias-label: the artifact has no label {requested!r}; its labels are: "
                              f"{', '.join(labels)}")
        return requested
    return "toxic" if "toxic" in labels else labels[0]


def run(artifacts: Sequence[str | os.PathLike[str]], data_path: str | os.PathLike[str],
        identity_columns: Sequence[str], label: str | None = None, target_column: str | None = None,
        text_column: str | None = None, format: str | None = None, runtime: str = "auto",
        max_rows: int | None = None, seed: int = 0, log: Callable[[str], None] = lambda _m: None,
        threads: int | None = None) -> dict[str, Any]:
    """Bias metrics of every artifact on the same rows; the JSON-ready report (``bench: accuracy``, with
    ``bias`` per row). All artifacts score the same label, chosen on the first one's labels."""
    from bench.artifacts import check_artifacts

    paths = check_artifacts(artifacts)
    infos = [read_info(p) for p in paths]
    label = bias_label(infos[0].labels, label)
    for info in infos:
        bias_label(info.labels, label)  # every artifact must have it
    data = load_bias_data(data_path, identity_columns, label, target_column, text_column, format, max_rows, seed)
    rows = []
    for path, info in zip(paths, infos, strict=True):
        log(f"bias: {path.name} on {len(data.texts)} rows")
        row, probs = predict_texts(path, info, data.texts, runtime, threads=threads)
        if probs is not None:
            row["bias"] = bias_metrics(data.target, probs[:, list(info.labels).index(label)], data.identities)
        rows.append(row)
    return {
        "bench": "accuracy",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "data": {"path": str(data_path), "format": format, "rows": len(data.texts), "label": label,
                 "target_column": data.target_column, "positives": int(data.target.sum()),
                 "identity_columns": list(identity_columns), "threshold": THRESHOLD,
                 "identity_rows": {c: int(m.sum()) for c, m in data.identities.items()}, "seed": seed},
        "rows": rows,
    }


def markdown(report: dict[str, Any]) -> str:
    """The final metric per artifact, then subgroup / BPSN / BNSP AUC per identity."""
    d = report["data"]
    lines = [f"Identity bias of label `{d['label']}` on {d['path']} ({d['rows']:,} rows, {d['positives']:,} "
             f"positive: {d['target_column']} >= {d['threshold']:g}; an identity is mentioned at >= "
             f"{d['threshold']:g}). Borkan et al. 2019; final metric = 0.25 x overall AUC + 0.75 x the mean of "
             "the power means (p = -5) of the three bias AUCs.", "",
             "| artifact | runtime | overall AUC | power mean subgroup AUC | power mean BPSN AUC | "
             "power mean BNSP AUC | final metric |", "|---|---|---:|---:|---:|---:|---:|"]
    ok = [r for r in report["rows"] if r["status"] == "ok"]
    for r in report["rows"]:
        if r["status"] != "ok":
            lines.append(f"| {r['name']} | {r['runtime']} | {r['status']}: {r['reason']} |" + " |" * 4)
            continue
        b = r["bias"]
        lines.append(f"| {r['name']} | {r['runtime']} | {format_cell(b['overall_auc'])} | "
                     + " | ".join(format_cell(b["power_means"][k]) for k in BIAS_AUCS) + f" | {format_cell(b['final_metric'])} |")
    if ok:
        lines += ["", "Per identity: subgroup AUC / BPSN AUC / BNSP AUC", "",
                  "| identity | rows | positives | " + " | ".join(r["name"] for r in ok) + " |",
                  "|---|---:|---:|" + "---|" * len(ok)]
        for identity, first in ok[0]["bias"]["subgroups"].items():
            cells = [" / ".join(format_cell(r["bias"]["subgroups"][identity][k]) for k in BIAS_AUCS) for r in ok]
            lines.append(f"| {identity} | {first['rows']:,} | {first['positives']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

