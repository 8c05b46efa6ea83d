"""One chunk of rows in, its scores out: the step both `serve score` engines run (the Ray actors too).

Output columns, in order:

* the id column (its input name, as strings), or ``row`` (int64, 0-based data row) without one;
* ``prob_<label>`` per label (float32);
* ``labels``: the labels whose probability is at or over the artifact's threshold (a list of
  strings; in CSV output the names joined with ``;``, as the endpoint's LABELS output is).

A row whose text is missing, empty or only whitespace gets null probabilities and null labels
(and is counted); it is never sent to the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PROB_PREFIX = "prob_"
LABELS_COLUMN = "labels"
ROW_COLUMN = "row"
CSV_LABEL_SEPARATOR = ";"


def prob_column(label: str) -> str:
    return f"{PROB_PREFIX}{label}"


def output_schema(labels: Sequence[str], id_column: str | None) -> pa.Schema:
    """The schema of every chunk and of the output (Parquet); ``id_column`` None -> ``row``."""
    key = pa.field(id_column, pa.string()) if id_column else pa.field(ROW_COLUMN, pa.int64())
    return pa.schema([key, *(pa.field(prob_column(n), pa.float32()) for n in labels),
                      pa.field(LABELS_COLUMN, pa.list_(pa.string()))])


def has_text(texts: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """(N,) bool: the text is present and holds more than whitespace."""
    texts = texts.cast(pa.string())
    present = pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(texts)), 0)
    return np.asarray(pc.fill_null(present, False).to_numpy(zero_copy_only=False), dtype=bool)


def labels_over(probs: np.ndarray, thresholds: np.ndarray, names: Sequence[str], scored: np.ndarray) -> pa.Array:
    """list<string> of the labels at or over threshold per row; null where not ``scored``.

    Args:
        probs: (N, L) float32.
        thresholds: (L,) float32.
        scored: (N,) bool.
    """
    over = (probs >= thresholds[None, :]) & scored[:, None]
    rows, cols = np.nonzero(over)  # row-major: each row's labels come out in label order
    offsets = np.zeros(len(probs) + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=len(probs)), out=offsets[1:])
    values = pa.array(np.asarray(names, dtype=object)[cols] if len(cols) else [], pa.string())
    return pa.ListArray.from_arrays(pa.array(offsets), values, mask=pa.array(~scored))


def score_table(predictor: Any, table: pa.Table, text_column: str, id_column: str | None) -> pa.Table:
    """Score one chunk (without its row numbers; see :func:`with_row_numbers`).

    Args:
        predictor: an :mod:`export.runtime` predictor (``predict(texts) -> (N, L)``, ``labels``, ``thresholds``).
        table: N rows holding ``text_column`` (and ``id_column``).

    Returns:
        N rows: [id], ``prob_<label>`` (L columns, float32, null where the text is empty), ``labels``.
    """
    texts = table.column(text_column).cast(pa.string())
    scored = has_text(texts)
    probs = np.zeros((table.num_rows, len(predictor.labels)), dtype=np.float32)
    if scored.any():
        kept = pc.filter(texts, pa.array(scored)).to_pylist()
        probs[scored] = np.asarray(predictor.predict(kept), dtype=np.float32)
    thresholds = np.asarray(predictor.thresholds, dtype=np.float32)
    null = ~scored
    columns: dict[str, Any] = {}
    if id_column:
        columns[id_column] = table.column(id_column).cast(pa.string())
    for j, name in enumerate(predictor.labels):
        columns[prob_column(name)] = pa.array(probs[:, j], pa.float32(), mask=null)
    columns[LABELS_COLUMN] = labels_over(probs, thresholds, predictor.labels, scored)
    return pa.table(columns)


def with_row_numbers(table: pa.Table, first_row: int) -> pa.Table:
    """Prepend ``row``: first_row, first_row + 1, ... (the 0-based data row of each)."""
    rows = pa.array(np.arange(first_row, first_row + table.num_rows, dtype=np.int64))
    return table.add_column(0, ROW_COLUMN, rows)


def null_rows(table: pa.Table) -> int:
    """Rows that were not scored (empty text) in an output chunk."""
    return table.column(LABELS_COLUMN).null_count


def as_csv(table: pa.Table) -> pa.Table:
    """The labels list joined with ``;`` (CSV has no lists); other columns unchanged."""
    i = table.schema.get_field_index(LABELS_COLUMN)
    joined = pc.binary_join(table.column(i), CSV_LABEL_SEPARATOR)
    return table.set_column(i, LABELS_COLUMN, joined)
