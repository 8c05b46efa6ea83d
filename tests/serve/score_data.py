"""Inputs for the `serve score` tests: Jigsaw-format rows written in every format, and a reference scorer."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tests import fixtures

EMPTY_AT = {3: "", 10: "   ", 17: None}  # data row -> its text (None: null / missing key)
INPUT_SUFFIXES = {"csv": ".csv", "csv.gz": ".csv.gz", "tsv": ".tsv", "tsv.gz": ".tsv.gz", "jsonl": ".jsonl",
                  "jsonl.gz": ".jsonl.gz", "parquet": ".parquet"}


def jigsaw_rows(n: int = 120, seed: int = 2) -> list[dict]:
    """Jigsaw-format rows (id, comment_text, six labels); rows in :data:`EMPTY_AT` have no text."""
    texts, labels = fixtures.synthetic_rows(n, seed)
    rows = []
    for i, (text, row) in enumerate(zip(texts, labels, strict=True)):
        rows.append({"id": f"c{i:05d}", "comment_text": EMPTY_AT.get(i, text),
                     **dict(zip(fixtures.JIGSAW_LABELS, row.tolist(), strict=True))})
    return rows


def write_rows(rows: list[dict], path: Path, kind: str) -> Path:
    """Write ``rows`` as ``kind`` (a key of :data:`INPUT_SUFFIXES`); a null text is an empty cell in CSV/TSV
    and a missing key in JSON lines."""
    plain = kind.removesuffix(".gz")
    target = path.with_name(path.name + ".plain") if kind.endswith(".gz") else path
    columns = list(rows[0])
    if plain in ("csv", "tsv"):
        with target.open("w", newline="") as f:
            writer = csv.writer(f, delimiter="\t" if plain == "tsv" else ",",
                                quoting=csv.QUOTE_NONE if plain == "tsv" else csv.QUOTE_MINIMAL, escapechar="\\")
            writer.writerow(columns)
            for row in rows:
                writer.writerow(["" if row[c] is None else row[c] for c in columns])
    elif plain == "jsonl":
        with target.open("w") as f:
            for row in rows:
                f.write(json.dumps({k: v for k, v in row.items() if v is not None}) + "\n")
    else:
        pq.write_table(pa.Table.from_pylist(rows), target, row_group_size=37)
    if kind.endswith(".gz"):
        with target.open("rb") as src, gzip.open(path, "wb") as dst:
            shutil.copyfileobj(src, dst)
        target.unlink()
    return path


def reference_scores(predictor, texts: list[str | None], chunk_size: int) -> np.ndarray:
    """(N, L) probabilities from ``predictor.predict`` on each chunk's non-empty texts (NaN elsewhere)."""
    out = np.full((len(texts), len(predictor.labels)), np.nan, dtype=np.float32)
    for start in range(0, len(texts), chunk_size):
        idx = [i for i in range(start, min(start + chunk_size, len(texts))) if texts[i] and texts[i].strip()]
        if idx:
            out[idx] = predictor.predict([texts[i] for i in idx])
    return out


def probabilities(table: pa.Table, labels: list[str]) -> np.ndarray:
    """(N, L) float32 from the prob_<label> columns of an output table; NaN where null."""
    return np.stack([table.column(f"prob_{n}").to_numpy(zero_copy_only=False).astype(np.float32) for n in labels],
                    axis=1)
