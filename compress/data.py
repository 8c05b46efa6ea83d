"""Labelled data: readers and adapters -> one canonical multi-label table.

Every supported file becomes a :class:`LabeledData`: N texts, an (N, L) float32 matrix of 0/1
labels and a :class:`LabelSchema` (label names in column order plus an optional child -> parent
hierarchy, e.g. ``severe_toxic -> toxic``).

Formats (see :data:`FORMATS`):

* ``jigsaw``: Jigsaw Toxic Comment CSV (``comment_text`` + six 0/1 labels; severe_toxic -> toxic).
* ``csv`` / ``tsv`` / ``parquet`` / ``jsonl``: any table, given ``text_column`` and ``label_columns``.
* ``olid``: OffensEval 2019 TSV (subtasks a/b/c -> offensive, targeted, target_*).
* ``davidson``: Davidson et al. 2017 ``labeled_data.csv`` (class 0/1/2 -> offensive, hate).
* ``cyberbullying``: ``cyberbullying_tweets.csv`` (type -> cyberbullying + one label per type).
* ``ethos``: ETHOS binary (``comment;isHate``) or multi-label file; soft scores -> 1 at >= 0.5.

Compressed inputs (``.gz``, ``.bz2``, ``.xz``, ``.zip``) are read transparently.
Exact duplicate rows are dropped (one copy kept) and texts with conflicting labels are dropped
entirely, before any split. Every problem a user can cause raises :class:`DataError` with one line
that names the problem and the fix.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import html
import io
import json
import logging
import lzma
import math
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from compress.errors import DataError, one_line

log = logging.getLogger(__name__)

FORMATS = ("jigsaw", "csv", "tsv", "parquet", "jsonl", "olid", "davidson", "cyberbullying", "ethos")
GENERIC_FORMATS = ("csv", "tsv", "parquet", "jsonl")

_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zip")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet",
               ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}


# --------------------------------------------------------------------------------------------
# Label schema
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelSchema:
    """Label names in output-column order, plus an optional hierarchy.

    Attributes:
        names: L label names; column ``j`` of every label matrix is ``names[j]``.
        hierarchy: ``(child, parent)`` pairs: a positive child implies a positive parent
            (e.g. ``("severe_toxic", "toxic")``). Each child has at most one parent; no cycles.
        exclusive: groups of mutually exclusive sibling labels (at most one of a group is positive
            in a row), e.g. OLID's ``("target_individual", "target_group", "target_other")``.
            Members of a group share one parent (or are all top-level); a label is in at most one
            group; a group has at least two labels.
    """

    names: tuple[str, ...]
    hierarchy: tuple[tuple[str, str], ...] = ()
    exclusive: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        names = tuple(self.names) if not isinstance(self.names, str) else (self.names,)
        try:
            hierarchy = tuple((str(c), str(p)) for c, p in self.hierarchy)
        except (TypeError, ValueError):
            raise DataError("label hierarchy must be (child, parent) pairs; fix the hierarchy") from None
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "hierarchy", hierarchy)
        if not names:
            raise DataError("a label schema needs at least one label; name the label columns")
        bad = [n for n in names if not isinstance(n, str) or not n.strip()]
        if bad:
            raise DataError(f"label names must be non-empty strings, got {bad[0]!r}; rename that label")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise DataError(f"label names must be unique, {', '.join(dupes)} repeats; list each label once")
        known = set(names)
        parents: dict[str, str] = {}
        for child, parent in hierarchy:
            for name in (child, parent):
                if name not in known:
                    raise DataError(f"hierarchy names unknown label '{name}'; labels are: {', '.join(names)}")
            if child == parent:
                raise DataError(f"label '{child}' cannot be its own parent; fix the hierarchy")
            if child in parents and parents[child] != parent:
                raise DataError(f"label '{child}' has two parents ('{parents[child]}', '{parent}'); give it one")
            parents[child] = parent
        for start in parents:
            seen, node = {start}, start
            while node in parents:
                node = parents[node]
                if node in seen:
                    raise DataError(f"label hierarchy has a cycle through '{start}'; remove one of its links")
                seen.add(node)
        # duplicates of the same (child, parent) pair are harmless: keep one
        object.__setattr__(self, "hierarchy", tuple(dict.fromkeys(hierarchy)))
        object.__setattr__(self, "exclusive", _checked_groups(self.exclusive, known, parents))

    @property
    def num_labels(self) -> int:
        """L, the number of labels (columns)."""
        return len(self.names)

    def parent_indices(self) -> dict[int, int]:
        """Child column index -> parent column index."""
        index = {n: i for i, n in enumerate(self.names)}
        return {index[c]: index[p] for c, p in self.hierarchy}

    def exclusive_indices(self) -> list[list[int]]:
        """Column indices of each exclusive group, in :attr:`exclusive` order."""
        index = {n: i for i, n in enumerate(self.names)}
        return [[index[n] for n in group] for group in self.exclusive]

    def to_dict(self) -> dict:
        """``{"labels": [...], "hierarchy": {child: parent}}`` plus ``"exclusive": [[...], ...]``
        when the schema has exclusive groups (JSON-ready)."""
        d: dict[str, Any] = {"labels": list(self.names), "hierarchy": {c: p for c, p in self.hierarchy}}
        if self.exclusive:
            d["exclusive"] = [list(g) for g in self.exclusive]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LabelSchema:
        """Inverse of :meth:`to_dict`; ``hierarchy`` may be a mapping or a list of pairs."""
        if not isinstance(d, Mapping) or "labels" not in d:
            raise DataError("label schema must be a mapping with a 'labels' list; fix the schema")
        return cls.from_names(d["labels"], d.get("hierarchy") or None, d.get("exclusive") or ())

    @classmethod
    def from_names(cls, names: Iterable[str],
                   hierarchy: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
                   exclusive: Iterable[Iterable[str]] = ()) -> LabelSchema:
        """A schema from label names, an optional child -> parent mapping (or pairs) and exclusive groups."""
        if isinstance(names, str):
            names = [names]
        pairs = tuple(hierarchy.items()) if isinstance(hierarchy, Mapping) else tuple(hierarchy or ())
        try:
            groups = tuple(tuple(g) if not isinstance(g, str) else (g,) for g in exclusive or ())
        except TypeError:
            raise DataError("exclusive label groups must be lists of label names; fix the schema") from None
        return cls(tuple(names), pairs, groups)


def _checked_groups(groups: Any, known: set[str], parents: Mapping[str, str]) -> tuple[tuple[str, ...], ...]:
    """Validated exclusive groups (see :class:`LabelSchema`); :class:`DataError` names the problem."""
    try:
        groups = tuple(tuple(g) for g in groups)
    except TypeError:
        raise DataError("exclusive label groups must be lists of label names; fix the schema") from None
    seen: dict[str, int] = {}
    for i, group in enumerate(groups):
        if len(group) < 2 or len(set(group)) != len(group):
            raise DataError(f"exclusive group {list(group)} needs two or more distinct labels; fix the schema")
        for name in group:
            if name not in known:
                raise DataError(f"exclusive group names unknown label {name!r}; labels are: {', '.join(sorted(known))}")
            if name in seen:
                raise DataError(f"label {name!r} is in two exclusive groups; put it in one")
            seen[name] = i
        if len({parents.get(n) for n in group}) != 1:
            raise DataError(f"exclusive group {list(group)} mixes labels with different parents; "
                            "group siblings of one parent")
    return groups


JIGSAW_LABELS = ("toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate")
JIGSAW_SCHEMA = LabelSchema(JIGSAW_LABELS, (("severe_toxic", "toxic"),))

OLID_SCHEMA = LabelSchema(
    ("offensive", "targeted", "target_individual", "target_group", "target_other"),
    (("targeted", "offensive"), ("target_individual", "targeted"), ("target_group", "targeted"),
     ("target_other", "targeted")),
    (("target_individual", "target_group", "target_other"),),  # subtask C: one target per tweet
)
DAVIDSON_SCHEMA = LabelSchema(("offensive", "hate"), (("hate", "offensive"),))
CYBERBULLYING_TYPES = ("religion", "age", "gender", "ethnicity", "other_cyberbullying")
CYBERBULLYING_SCHEMA = LabelSchema(("cyberbullying", *CYBERBULLYING_TYPES),
                                   tuple((t, "cyberbullying") for t in CYBERBULLYING_TYPES),
                                   (CYBERBULLYING_TYPES,))  # one type per tweet
ETHOS_MULTI_LABELS = ("violence", "directed_vs_generalized", "gender", "race", "national_origin",
                      "disability", "religion", "sexual_orientation")
ETHOS_THRESHOLD = 0.5


# --------------------------------------------------------------------------------------------
# The canonical table
# --------------------------------------------------------------------------------------------


@dataclass
class LabeledData:
    """N texts with (N, L) binary labels under one schema.

    Attributes:
        texts: N strings.
        labels: (N, L) float32 of 0/1, columns in ``schema.names`` order.
        schema: label names and hierarchy.
        duplicates_removed: exact duplicate rows dropped at load time (same text, same labels; one
            copy kept). Subsets keep the count of the dataset they came from.
        conflicting_removed: rows dropped at load time because the same text carried different
            labels (no copy kept).
        source: where the data came from (a path), for messages and stats.
    """

    texts: list[str]
    labels: np.ndarray
    schema: LabelSchema
    duplicates_removed: int = 0
    conflicting_removed: int = 0
    source: str = ""
    _fingerprint: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.texts = list(self.texts)
        labels = np.asarray(self.labels, dtype=np.float32)
        if labels.ndim == 1 and labels.size == 0:
            labels = labels.reshape(0, self.schema.num_labels)
        if labels.ndim != 2 or labels.shape != (len(self.texts), self.schema.num_labels):
            raise DataError(f"labels have shape {labels.shape}, expected ({len(self.texts)}, "
                            f"{self.schema.num_labels}) for {len(self.texts)} texts and labels "
                            f"{', '.join(self.schema.names)}; pass one label row per text")
        if labels.size and not np.isin(labels, (0.0, 1.0)).all():
            raise DataError("labels must be 0 or 1; threshold soft labels before building LabeledData")
        self.labels = labels

    def __len__(self) -> int:
        return len(self.texts)

    def fingerprint(self) -> str:
        """sha256 hex over schema, texts and labels; equal content gives the same value in any run."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            # labels + hierarchy only: declaring exclusive groups does not change the data
            names = {"labels": list(self.schema.names), "hierarchy": dict(self.schema.hierarchy)}
            h.update(json.dumps(names, sort_keys=True).encode())
            h.update(f"{self.labels.shape}".encode())
            for text in self.texts:
                b = text.encode("utf-8")
                h.update(len(b).to_bytes(8, "little"))  # length prefix: ("ab","c") != ("a","bc")
                h.update(b)
            h.update(np.ascontiguousarray(self.labels, dtype=np.uint8).tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def subset(self, indices: Sequence[int] | np.ndarray) -> LabeledData:
        """Rows ``indices`` (in that order) as a new LabeledData with the same schema and counts."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        return LabeledData([self.texts[i] for i in idx.tolist()], self.labels[idx], self.schema,
                           self.duplicates_removed, self.conflicting_removed, self.source)


# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    text = one_line(exc)
    return text[:200] or type(exc).__name__


def _check_path(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file not found: {p}; check the path")
    if p.is_dir():
        raise DataError(f"{p} is a directory; pass a data file")
    if p.stat().st_size == 0:
        raise DataError(f"{p} is empty (0 bytes); pass a file with a header and data rows")
    return p


def _extension_kind(path: Path) -> str | None:
    """csv/tsv/parquet/jsonl from the file name (compression suffix ignored), or None."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSION_SUFFIXES:
        suffixes = suffixes[:-1]
    return _EXTENSIONS.get(suffixes[-1]) if suffixes else None


def _first_line(path: Path) -> str:
    """The header line of a (possibly compressed) text file, without its line end."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".zip":
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                if not names:
                    return ""
                with zf.open(names[0]) as raw:
                    line = io.TextIOWrapper(raw, encoding="utf-8").readline()
        else:
            opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(suffix, open)
            with opener(path, "rt", encoding="utf-8") as f:  # type: ignore[operator]
                line = f.readline()
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; re-save it as UTF-8") from None
    except (OSError, EOFError, lzma.LZMAError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read {path}: {_one_line(exc)}; check the file is intact") from None
    return line.rstrip("\r\n")


def _sniff_sep(header: str, default: str) -> str:
    """The separator of a delimited file from its header: ``;`` files (ETHOS) included."""
    if default == "," and "," not in header and ";" in header:
        return ";"
    if default == "," and "," not in header and "\t" in header:
        return "\t"
    return default


def _read_delimited(path: Path, sep: str, *, quote_none: bool = False, nrows: int | None = None) -> pd.DataFrame:
    """All columns as strings; only an empty cell is missing (a text "NA" stays text)."""
    try:
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""],
                           quoting=csv.QUOTE_NONE if quote_none else csv.QUOTE_MINIMAL,
                           compression="infer", nrows=nrows, encoding="utf-8")
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} has no header or rows; pass a file with a header and data rows") from None
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; re-save it as UTF-8") from None
    except (pd.errors.ParserError, OSError, EOFError, ValueError) as exc:
        raise DataError(f"cannot parse {path} (separator {sep!r}): {_one_line(exc)}; "
                        f"check the file or pass the right --format") from None


def _read_table(path: Path, kind: str, nrows: int | None = None) -> pd.DataFrame:
    """Read a generic table; ``kind`` is one of csv/tsv/parquet/jsonl."""
    if kind in ("csv", "tsv"):
        sep = _sniff_sep(_first_line(path), "," if kind == "csv" else "\t")
        return _read_delimited(path, sep, nrows=nrows)
    if kind == "parquet":
        if path.suffix.lower() in _COMPRESSION_SUFFIXES:
            raise DataError(f"{path}: parquet is compressed internally; decompress the file and pass the .parquet")
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a bad file
            raise DataError(f"cannot read {path} as parquet: {_one_line(exc)}; check the file or pass --format") \
                from None
        return frame.head(nrows) if nrows is not None else frame
    if kind == "jsonl":
        try:
            return pd.read_json(path, lines=True, compression="infer", dtype=False, convert_dates=False,
                                nrows=nrows)
        except (ValueError, OSError, EOFError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read {path} as JSON lines (one object per line): {_one_line(exc)}; "
                            f"check the file or pass --format") from None
    raise DataError(f"unknown format '{kind}'; use one of: {', '.join(FORMATS)}")


def _header_columns(path: Path, kind: str | None) -> list[str]:
    """Column names of a file without reading it all."""
    if kind == "parquet" and path.suffix.lower() not in _COMPRESSION_SUFFIXES:
        try:
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        except Exception as exc:  # noqa: BLE001
            raise DataError(f"cannot read {path} as parquet: {_one_line(exc)}; check the file or pass --format") \
                from None
    if kind == "jsonl":
        return [str(c) for c in _read_table(path, "jsonl", nrows=1).columns]
    header = _first_line(path)
    sep = _sniff_sep(header, "\t" if kind == "tsv" else ",")
    return [c.strip().strip('"') for c in header.split(sep)]


def _refuse_duplicate_columns(path: Path, format: str, kind: str | None) -> None:
    """A repeated header name (pandas would silently rename the copy ``name.1``) is one DataError."""
    if format in ("parquet", "jsonl") or (format in GENERIC_FORMATS and kind in ("parquet", "jsonl")):
        return  # parquet/JSON keys are read by name; pyarrow and json keep one of each
    if format == "olid":
        names = _first_line(path).split("\t")
    elif format == "ethos":
        names = _first_line(path).split(";")
    else:
        header = _first_line(path)
        sep = _sniff_sep(header, "\t" if format == "tsv" or kind == "tsv" else ",")
        names = next(csv.reader([header], delimiter=sep), [])
    names = [n.strip() for n in names]
    dupes = sorted({n for n in names if n and names.count(n) > 1})
    if dupes:
        raise DataError(f"{path}: column {dupes[0]!r} appears more than once in the header; rename or drop the copy")


def _adapter_for_columns(columns: Iterable[str]) -> str | None:
    cols = {c.strip() for c in columns}
    if {"id", "tweet", "subtask_a"} <= cols:
        return "olid"
    if {"tweet", "class", "hate_speech", "offensive_language", "neither"} <= cols:
        return "davidson"
    if {"tweet_text", "cyberbullying_type"} <= cols:
        return "cyberbullying"
    if "comment" in cols and ("isHate" in cols or "violence" in cols):
        return "ethos"
    if {"comment_text", *JIGSAW_LABELS} <= cols:
        return "jigsaw"
    return None


def detect_format(path: str | Path) -> str:
    """The format of ``path`` from its header columns, else its extension.

    Returns one of :data:`FORMATS`. Raises DataError when neither tells (then pass ``--format``).
    """
    p = _check_path(path)
    kind = _extension_kind(p)
    try:
        columns = _header_columns(p, kind)
    except DataError:
        if kind is None:
            raise DataError(f"cannot tell the format of {p}; pass --format (one of: {', '.join(FORMATS)})") \
                from None
        raise
    adapter = _adapter_for_columns(columns)
    if adapter:
        return adapter
    if kind is None:
        raise DataError(f"cannot tell the format of {p} from its name or columns; "
                        f"pass --format (one of: {', '.join(FORMATS)})")
    return kind


# --------------------------------------------------------------------------------------------
# Column checks
# --------------------------------------------------------------------------------------------


def _require_columns(frame: pd.DataFrame, needed: Sequence[str], path: Path, fix: str) -> None:
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        have = ", ".join(str(c) for c in frame.columns) or "(none)"
        raise DataError(f"{path} has no column(s) {', '.join(repr(c) for c in missing)} (columns are: {have}); "
                        f"{fix}")


def _texts(frame: pd.DataFrame, column: str, path: Path, unescape: bool = False) -> list[str]:
    """The text column as str; raises on empty texts (count + first row)."""
    values = frame[column].tolist()
    wrong = next((i for i, v in enumerate(values)
                  if not (v is None or isinstance(v, str) or (isinstance(v, float) and math.isnan(v)))), None)
    if wrong is not None:
        raise DataError(f"{path}: column '{column}' holds a non-string value ({type(values[wrong]).__name__}) at data "
                        f"row {wrong + 1} "
                        f"({str(values[wrong])[:40]!r}); texts must be strings, quote them in the file")
    texts = ["" if (v is None or (isinstance(v, float) and math.isnan(v))) else v for v in values]
    if unescape:
        texts = [html.unescape(t) for t in texts]
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise DataError(f"{path}: {len(empty)} row(s) have empty text in column '{column}' (first at data row "
                        f"{empty[0] + 1}); drop those rows or fill in the text")
    return texts


def _binary_column(frame: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    """A 0/1 label column as (N,) float32; NaN or other values raise naming column and value."""
    raw = frame[column]
    missing = raw.isna().to_numpy()
    if missing.any():
        first = int(np.flatnonzero(missing)[0])
        raise DataError(f"{path}: label column '{column}' has {int(missing.sum())} missing value(s) (first at "
                        f"data row {first + 1}); fill them with 0 or 1, or drop those rows")
    if raw.dtype == bool:
        return raw.to_numpy().astype(np.float32)
    num = pd.to_numeric(raw, errors="coerce")
    bad = (num.isna() | ~num.isin([0, 1])).to_numpy()
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        hint = " (Jigsaw marks unscored test rows -1: drop them)" if str(raw.iloc[first]).strip() == "-1" else ""
        raise DataError(f"{path}: label column '{column}' has non-binary value {raw.iloc[first]!r} at data row "
                        f"{first + 1} ({int(bad.sum())} such row(s)){hint}; labels must be 0 or 1")
    return num.to_numpy(dtype=np.float32)


def _soft_column(frame: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    """A soft score in [0, 1] thresholded at :data:`ETHOS_THRESHOLD` -> (N,) float32 of 0/1."""
    raw = frame[column]
    num = pd.to_numeric(raw, errors="coerce")
    bad = (num.isna() | (num < 0) | (num > 1)).to_numpy()
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: label column '{column}' has value {raw.iloc[first]!r} at data row {first + 1} "
                        f"({int(bad.sum())} such row(s)); ETHOS scores must be numbers in [0, 1]")
    return (num.to_numpy(dtype=np.float64) >= ETHOS_THRESHOLD).astype(np.float32)


def _categorical(frame: pd.DataFrame, column: str, allowed: Sequence[str], path: Path) -> np.ndarray:
    """A categorical column as (N,) str, every value in ``allowed``."""
    values = frame[column].fillna("").astype(str).str.strip().to_numpy()
    bad = ~np.isin(values, list(allowed))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: column '{column}' has unexpected value {values[first]!r} at data row {first + 1} "
                        f"({int(bad.sum())} such row(s)); expected one of: {', '.join(allowed)}")
    return values


# --------------------------------------------------------------------------------------------
# Adapters: each returns (texts, (N, L) labels, schema)
# --------------------------------------------------------------------------------------------

Table = tuple[list[str], np.ndarray, LabelSchema]


def _generic(frame: pd.DataFrame, path: Path, text_column: str | None, label_columns: Sequence[str] | None,
             hierarchy: Mapping[str, str] | Sequence[tuple[str, str]] | None, kind: str) -> Table:
    have = ", ".join(str(c) for c in frame.columns) or "(none)"
    if not text_column or not label_columns:
        raise DataError(f"{path} is a generic {kind} file: pass --text-column and --label-columns "
                        f"(columns are: {have})")
    if text_column in label_columns:
        raise DataError(f"column '{text_column}' is both the text and a label column; pick a different one")
    _require_columns(frame, [text_column, *label_columns], path,
                     "pass --text-column/--label-columns naming existing columns")
    texts = _texts(frame, text_column, path)
    labels = np.stack([_binary_column(frame, c, path) for c in label_columns], axis=1)
    return texts, labels, LabelSchema.from_names(label_columns, hierarchy)


def _jigsaw(frame: pd.DataFrame, path: Path, text_column: str | None,
            label_columns: Sequence[str] | None) -> Table:
    text_column = text_column or "comment_text"
    names = tuple(label_columns or JIGSAW_LABELS)
    _require_columns(frame, [text_column, *names], path,
                     "a Jigsaw file needs id, comment_text and the six label columns (or pass --format)")
    texts = _texts(frame, text_column, path)
    labels = np.stack([_binary_column(frame, c, path) for c in names], axis=1)
    pairs = tuple((c, p) for c, p in JIGSAW_SCHEMA.hierarchy if c in names and p in names)
    return texts, labels, LabelSchema(names, pairs)


def _olid(frame: pd.DataFrame, path: Path) -> Table:
    _require_columns(frame, ["tweet", "subtask_a", "subtask_b", "subtask_c"], path,
                     "an OLID file has id, tweet, subtask_a, subtask_b, subtask_c (or pass another --format)")
    texts = _texts(frame, "tweet", path)
    a = _categorical(frame, "subtask_a", ("OFF", "NOT"), path)
    b = _categorical(frame, "subtask_b", ("TIN", "UNT", "NULL"), path)
    c = _categorical(frame, "subtask_c", ("IND", "GRP", "OTH", "NULL"), path)
    labels = np.stack([a == "OFF", b == "TIN", c == "IND", c == "GRP", c == "OTH"], axis=1).astype(np.float32)
    return texts, labels, OLID_SCHEMA


def _davidson(frame: pd.DataFrame, path: Path) -> Table:
    _require_columns(frame, ["tweet", "class"], path,
                     "a Davidson labeled_data.csv has columns count, hate_speech, offensive_language, neither, "
                     "class, tweet (or pass another --format)")
    texts = _texts(frame, "tweet", path, unescape=True)
    cls = _categorical(frame, "class", ("0", "1", "2"), path)
    labels = np.stack([np.isin(cls, ("0", "1")), cls == "0"], axis=1).astype(np.float32)
    return texts, labels, DAVIDSON_SCHEMA


def _cyberbullying(frame: pd.DataFrame, path: Path) -> Table:
    _require_columns(frame, ["tweet_text", "cyberbullying_type"], path,
                     "a cyberbullying file has tweet_text and cyberbullying_type (or pass another --format)")
    texts = _texts(frame, "tweet_text", path)
    kind = _categorical(frame, "cyberbullying_type", ("not_cyberbullying", *CYBERBULLYING_TYPES), path)
    columns = [kind != "not_cyberbullying", *(kind == t for t in CYBERBULLYING_TYPES)]
    return texts, np.stack(columns, axis=1).astype(np.float32), CYBERBULLYING_SCHEMA


def _ethos(frame: pd.DataFrame, path: Path) -> Table:
    if "isHate" in frame.columns:
        names, sources = ("hate",), ("isHate",)
    else:
        names = sources = ETHOS_MULTI_LABELS
    _require_columns(frame, ["comment", *sources], path,
                     "an ETHOS file is 'comment;isHate' or 'comment;violence;...;sexual_orientation' "
                     "(or pass another --format)")
    texts = _texts(frame, "comment", path)
    labels = np.stack([_soft_column(frame, c, path) for c in sources], axis=1)
    return texts, labels, LabelSchema(names)


def _as_label_columns(label_columns: Sequence[str] | str | None) -> tuple[str, ...] | None:
    if label_columns is None:
        return None
    if isinstance(label_columns, str):
        label_columns = label_columns.split(",")
    cols = tuple(c.strip() for c in label_columns if c.strip())
    return cols or None


def _as_hierarchy(hierarchy: Mapping[str, str] | Sequence[tuple[str, str]] | str | None
                  ) -> tuple[tuple[str, str], ...] | None:
    """A hierarchy as pairs; a string is ``child:parent,child:parent``."""
    if hierarchy is None:
        return None
    if isinstance(hierarchy, str):
        pairs = []
        for item in filter(None, (s.strip() for s in hierarchy.split(","))):
            child, sep, parent = item.partition(":")
            if not sep or not child.strip() or not parent.strip():
                raise DataError(f"hierarchy item {item!r} is not child:parent; write e.g. severe_toxic:toxic")
            pairs.append((child.strip(), parent.strip()))
        return tuple(pairs)
    if isinstance(hierarchy, Mapping):
        return tuple(hierarchy.items())
    return tuple((c, p) for c, p in hierarchy)


def _resolve_format(p: Path, format: str | None, has_text_column: bool, has_label_columns: bool) -> str:
    """The format to read ``p`` as: ``format`` checked, or detected (a generic table of the extension when
    both columns are given for a file of a fixed-column format); DataError for columns it cannot take."""
    if format is not None and format not in FORMATS:
        raise DataError(f"unknown format '{format}'; use one of: {', '.join(FORMATS)}")
    if format is None:
        format = detect_format(p)
        if has_text_column and has_label_columns and format not in GENERIC_FORMATS and format != "jigsaw":
            format = _extension_kind(p) or "csv"
    if format not in GENERIC_FORMATS and format != "jigsaw" and (has_text_column or has_label_columns):
        raise DataError(f"--text-column/--label-columns do not apply to format '{format}' (its columns are fixed); "
                        f"drop them, or pass --format csv/tsv/parquet/jsonl to read {p.name} as a generic table")
    return format


def _read_frame(p: Path, format: str) -> Any:
    """``p`` as a DataFrame with stripped column names; DataError for a repeated column or no data rows."""
    if format == "olid":
        frame = _read_delimited(p, "\t", quote_none=True)
    elif format == "ethos":
        frame = _read_delimited(p, ";")
    elif format in GENERIC_FORMATS:
        frame = _read_table(p, format)
    else:  # jigsaw / davidson / cyberbullying: whatever table the extension says, CSV by default
        frame = _read_table(p, _extension_kind(p) or "csv")
    _refuse_duplicate_columns(p, format, _extension_kind(p))
    frame.columns = [str(c).strip() for c in frame.columns]
    dupes = sorted({c for c in frame.columns if list(frame.columns).count(c) > 1})
    if dupes:
        raise DataError(f"{p}: column {dupes[0]!r} appears more than once in the header; rename or drop the copy")
    if len(frame) == 0:
        raise DataError(f"{p} has a header but no data rows; pass a file with data")
    return frame


def load_dataset(path: str | Path, format: str | None = None, text_column: str | None = None,
                 label_columns: Sequence[str] | str | None = None,
                 hierarchy: Mapping[str, str] | Sequence[tuple[str, str]] | str | None = None,
                 dedup: bool = True) -> LabeledData:
    """Read any supported file into a :class:`LabeledData`.

    Args:
        path: the data file (``.gz`` etc. compressed is fine).
        format: one of :data:`FORMATS`; None detects it from the header columns, then the extension.
            With ``format=None`` and both ``text_column`` and ``label_columns`` given, the file is read
            as a generic table of its extension (a Jigsaw file keeps its hierarchy).
        text_column: text column of a generic file (Jigsaw: overrides ``comment_text``).
        label_columns: 0/1 label columns of a generic file, a sequence or ``"a,b,c"`` (Jigsaw: a subset).
        hierarchy: child -> parent (mapping, pairs or ``"child:parent,..."``); replaces the format's
            own hierarchy (generic files have none unless given).
        dedup: drop exact duplicates (keep one) and texts with conflicting labels (keep none).

    Returns:
        LabeledData with (N, L) float32 0/1 labels; ``source`` is ``str(path)``.
    """
    p = _check_path(path)
    label_columns = _as_label_columns(label_columns)
    pairs = _as_hierarchy(hierarchy)
    format = _resolve_format(p, format, bool(text_column), bool(label_columns))
    frame = _read_frame(p, format)

    if format in GENERIC_FORMATS:
        texts, labels, schema = _generic(frame, p, text_column, label_columns, pairs, format)
    elif format == "jigsaw":
        texts, labels, schema = _jigsaw(frame, p, text_column, label_columns)
    else:
        texts, labels, schema = {"olid": _olid, "davidson": _davidson, "cyberbullying": _cyberbullying,
                                 "ethos": _ethos}[format](frame, p)
    if pairs is not None and format not in GENERIC_FORMATS:
        schema = LabelSchema(schema.names, pairs)

    exact = conflicting = 0
    if dedup:
        texts, labels, exact, conflicting = deduplicate(texts, labels)
        if not texts:
            raise DataError(f"{p}: no rows left after removing {exact} duplicate and {conflicting} conflicting "
                            f"row(s); check the labels, or load with dedup=False")
    data = LabeledData(texts, labels, schema, exact, conflicting, str(p))
    for name in one_class_labels(data):
        log.warning("%s: label '%s' is %s in every row; its ROC-AUC / PR-AUC are undefined (written as null) and a "
                    "model cannot learn it from this file", p, name,
                    "0" if not data.labels[:, data.schema.names.index(name)].any() else "1")
    return data


TEXT_COLUMNS = ("comment_text", "text", "tweet", "tweet_text", "comment", "sentence")  # looked for, in order, when not named


def read_text_table(path: str | Path, columns: Sequence[str], text_column: str | None = None,
                    format: str | None = None, fix: str = "name existing columns") -> tuple[list[str], pd.DataFrame]:
    """The texts and the raw table of a file, row for row: side data that is not a label table
    (identity annotations, scores), read by the readers :func:`load_dataset` uses, without dedup.

    Args:
        columns: columns the file must have.
        text_column: the text column; None = the first of :data:`TEXT_COLUMNS` in the file.
        format: csv / tsv / parquet / jsonl; None (or a fixed-column format) = by the file's extension.
        fix: what to tell the user when a column is missing.

    Returns:
        (N texts, the file's N-row DataFrame as read: strings for CSV/TSV). DataError names a missing
        column or an empty text.
    """
    p = _check_path(path)
    frame = _read_frame(p, format if format in GENERIC_FORMATS else _extension_kind(p) or "csv")
    if text_column is None:
        text_column = next((c for c in TEXT_COLUMNS if c in frame.columns), None)
        if text_column is None:
            raise DataError(f"{p}: no text column among {', '.join(TEXT_COLUMNS)} (columns are: "
                            f"{', '.join(str(c) for c in frame.columns)}); name the text column")
    _require_columns(frame, [text_column, *columns], p, fix)
    return _texts(frame, text_column, p), frame.reset_index(drop=True)


def one_class_labels(data: LabeledData) -> list[str]:
    """Names of the labels whose column is all 0 or all 1 in ``data``."""
    if len(data) == 0:
        return []
    column_max, column_min = data.labels.max(axis=0), data.labels.min(axis=0)
    return [name for name, hi, lo in zip(data.schema.names, column_max, column_min, strict=True) if hi == lo]


# --------------------------------------------------------------------------------------------
# Cleaning and splitting
# --------------------------------------------------------------------------------------------


def deduplicate(texts: Sequence[str], labels: np.ndarray) -> tuple[list[str], np.ndarray, int, int]:
    """Drop repeated texts: identical labels keep the first copy, conflicting labels keep none.

    Texts are compared exactly (no case or whitespace folding).

    Args:
        texts: N strings.
        labels: (N, L) labels.

    Returns:
        (texts, (M, L) labels, exact_removed, conflicting_removed), first-occurrence order kept.
        ``exact_removed`` counts the extra copies dropped from agreeing groups; ``conflicting_removed``
        counts every row of a text whose copies disagree.
    """
    labels = np.asarray(labels)
    if len(texts) != len(labels):
        raise DataError(f"{len(texts)} texts but {len(labels)} label rows; pass one label row per text")
    keys = np.ascontiguousarray(labels, dtype=np.float32)
    first: dict[str, int] = {}
    conflicted: set[str] = set()
    counts: dict[str, int] = {}
    for i, text in enumerate(texts):
        j = first.setdefault(text, i)
        counts[text] = counts.get(text, 0) + 1
        if j != i and text not in conflicted and not np.array_equal(keys[i], keys[j]):
            conflicted.add(text)
    keep = [i for text, i in first.items() if text not in conflicted]
    conflicting = sum(counts[t] for t in conflicted)
    exact = len(texts) - len(first) - (conflicting - len(conflicted))
    idx = np.asarray(sorted(keep), dtype=np.int64)
    return [texts[i] for i in idx.tolist()], labels[idx], exact, conflicting


def _iterative_stratification(y: np.ndarray, n_val: int, rng: np.random.Generator) -> np.ndarray:
    """Sechidis et al. (2011) iterative stratification into train (0) / val (1) of exact sizes.

    Labels are handled rarest first; each positive row goes to the fold that still wants the most
    positives of that label (ties: the fold with more free room, then at random). Two changes from
    the paper: folds have hard sizes (a full fold takes no more rows), and a label with >= 2
    positives wants at least one in val, so rare labels are not all sent to train.

    Args:
        y: (N, L) bool.
        n_val: validation rows, 1 <= n_val < N.

    Returns:
        (N,) int8 fold per row.
    """
    n, num_labels = y.shape
    room = np.array([n - n_val, n_val], dtype=np.int64)
    counts = y.sum(axis=0).astype(np.float64)
    want = np.outer(room / n, counts)  # (2, L) positives each fold still wants
    rare = (counts >= 2) & (want[1] < 1)
    want[1, rare] = 1.0
    want[0, rare] = counts[rare] - 1.0
    fold = np.full(n, -1, dtype=np.int8)
    order = rng.permutation(n)
    y_order = y[order]
    while True:
        left = y[fold == -1].sum(axis=0)
        if not left.any():
            break
        label = int(np.argmin(np.where(left > 0, left, np.iinfo(np.int64).max)))
        for i in order[y_order[:, label] & (fold[order] == -1)].tolist():
            free = np.flatnonzero(room > 0)
            if len(free) == 1:
                f = int(free[0])
            else:
                score = want[free, label]
                best = free[score >= score.max() - 1e-9]
                if len(best) > 1:
                    best = best[room[best] == room[best].max()]
                f = int(best[0] if len(best) == 1 else rng.choice(best))
            fold[i] = f
            room[f] -= 1
            want[f, y[i]] -= 1.0
    rest = order[fold[order] == -1]
    fold[rest[: room[1]]] = 1
    fold[rest[room[1]:]] = 0
    return fold


def _repair_coverage(y: np.ndarray, fold: np.ndarray, rng: np.random.Generator) -> None:
    """Swap rows so every label with >= 2 positives has one in each fold, where a swap allows.

    A swap moves one positive row into the fold that lacks the label and one row back, and is
    taken only if it uncovers no label that either fold covered. Sizes never change.
    """
    counts = y.sum(axis=0)
    needs = counts >= 2
    for label in np.flatnonzero(needs).tolist():
        for side in (1, 0):
            cover = np.stack([y[fold == 0].sum(axis=0), y[fold == 1].sum(axis=0)])  # (2, L)
            if cover[side, label] > 0:
                continue
            other = 1 - side
            donors = np.flatnonzero((fold == other) & y[:, label])
            receivers = np.flatnonzero(fold == side)
            receivers = receivers[rng.permutation(len(receivers))]
            y_recv = y[receivers].astype(np.int64)  # (k, L)
            for i in donors[rng.permutation(len(donors))].tolist():
                yi = y[i].astype(np.int64)
                new_side = cover[side][None, :] - y_recv + yi[None, :]
                new_other = cover[other][None, :] + y_recv - yi[None, :]
                floor_side = np.minimum(cover[side], 1)[None, :]
                floor_other = np.minimum(cover[other], 1)[None, :]
                ok = (((new_side >= floor_side) & (new_other >= floor_other)) | ~needs[None, :]).all(axis=1)
                if ok.any():
                    candidates = np.flatnonzero(ok)
                    j = int(receivers[candidates[np.argmin(y_recv[candidates].sum(axis=1))]])
                    fold[i], fold[j] = side, other
                    break


def train_val_split(data: LabeledData, val_fraction: float = 0.1, seed: int = 0) -> tuple[LabeledData, LabeledData]:
    """A seeded, multi-label stratified split into (train, val).

    Method: iterative stratification (Sechidis, Tsoumakas & Vlahavas 2011) with exact fold sizes,
    then a swap pass so each label with >= 2 positives has a positive in both splits wherever a
    swap can do that without uncovering another label. ``round(val_fraction * N)`` rows go to val.
    Both parts keep the original row order. Same data + seed -> same split.

    Args:
        data: N rows.
        val_fraction: share held out, in (0, 1).
        seed: randomness of tie-breaking and row order.

    Returns:
        (train, val) with N - n_val and n_val rows.
    """
    n = len(data)
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}; pass e.g. 0.1")
    return _held_out(data, int(round(val_fraction * n)), seed, f"val_fraction={val_fraction} of {n} rows")


def _held_out(data: LabeledData, n_val: int, seed: int, what: str) -> tuple[LabeledData, LabeledData]:
    """(rest, ``n_val`` held-out rows) of ``data`` by :func:`train_val_split`'s method."""
    n = len(data)
    if n_val < 1 or n_val > n - 1:
        raise DataError(f"{what} gives {n_val} validation rows; "
                        f"use more data or another val_fraction (or a separate validation file)")
    rng = np.random.default_rng(seed)
    y = data.labels > 0.5
    fold = _iterative_stratification(y, n_val, rng)
    _repair_coverage(y, fold, rng)
    return data.subset(np.flatnonzero(fold == 0)), data.subset(np.flatnonzero(fold == 1))


def hold_out_test(data: LabeledData, test_fraction: float, seed: int = 0, keep: int = 1
               ) -> tuple[LabeledData, LabeledData | None]:
    """(rest, test): ``round(test_fraction * N)`` rows held out as a test set, by :func:`train_val_split`'s
    stratified method.

    ``keep``: rows the rest must still hold (training + validation). Data too small for one test row
    beside them gets no test split (None) and a logged warning; ``test_fraction=0`` gives (data, None).
    """
    n = len(data)
    if not 0.0 <= test_fraction < 1.0:
        raise DataError(f"test_fraction must be in [0, 1), got {test_fraction}; pass e.g. 0.1 (or 0 for none)")
    n_test = int(round(test_fraction * n))
    if test_fraction > 0 and (n_test < 1 or n - n_test < keep):
        log.warning("%s: %d rows are too few for a test split of test_fraction=%g; no test split "
                    "(pass more data or a test file)", data.source or "data", n, test_fraction)
        n_test = 0
    if n_test == 0:
        return data, None
    return _held_out(data, n_test, seed, f"test_fraction={test_fraction} of {n} rows")


def train_val_test_split(data: LabeledData, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0
                         ) -> tuple[LabeledData, LabeledData, LabeledData | None]:
    """(train, val, test): :func:`hold_out_test` first, then :func:`train_val_split` of the rest.

    The test rows are held out before the validation split, so nothing chosen on validation (early
    stopping, thresholds, tuning) has seen them. Both shares are of all N rows (``round(val_fraction * N)``
    validation rows whatever ``test_fraction`` is); ``test_fraction=0``, or data too small for a test
    row, gives :func:`train_val_split` exactly and no test (None).

    Returns:
        (train, val, test or None); the parts are disjoint and keep the original row order.
    """
    n = len(data)
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}; pass e.g. 0.1")
    n_val = int(round(val_fraction * n))
    rest, test = hold_out_test(data, test_fraction, seed, keep=n_val + 1)
    if test is None:
        return (*train_val_split(data, val_fraction, seed), None)
    train, val = _held_out(rest, n_val, seed, f"val_fraction={val_fraction} of {n} rows")
    return train, val, test


def hierarchy_violations(labels: np.ndarray, schema: LabelSchema) -> dict[str, int]:
    """Rows where a child label is 1 and its parent 0, per ``"child->parent"`` key.

    Args:
        labels: (N, L) 0/1 in ``schema`` order.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[1] != schema.num_labels:
        raise DataError(f"labels have shape {labels.shape}, expected (N, {schema.num_labels}); "
                        f"pass labels in the schema's column order")
    pos = labels > 0.5
    index = {n: i for i, n in enumerate(schema.names)}
    return {f"{c}->{p}": int((pos[:, index[c]] & ~pos[:, index[p]]).sum()) for c, p in schema.hierarchy}


def align_to_schema(data: LabeledData, schema: LabelSchema) -> LabeledData:
    """Reorder ``data``'s label columns to ``schema``'s order (and take its hierarchy).

    Raises DataError naming the missing and extra labels when the label sets differ.
    """
    have, want = set(data.schema.names), set(schema.names)
    if have != want:
        missing = [n for n in schema.names if n not in have]
        extra = [n for n in data.schema.names if n not in want]
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + \
                ([f"extra {', '.join(extra)}"] if extra else [])
        where = f"{data.source}: " if data.source else ""
        raise DataError(f"{where}labels do not match the expected labels ({'; '.join(parts)}); "
                        f"use data with labels {', '.join(schema.names)}")
    index = {n: i for i, n in enumerate(data.schema.names)}
    order = [index[n] for n in schema.names]
    return LabeledData(list(data.texts), data.labels[:, order], schema, data.duplicates_removed,
                       data.conflicting_removed, data.source)


# --------------------------------------------------------------------------------------------
# Stats
# --------------------------------------------------------------------------------------------


def _token_lengths(texts: Sequence[str], tokenizer: Any = None, batch_size: int = 1024) -> np.ndarray:
    """(N,) lengths: tokens incl. special tokens with a HF tokenizer, else whitespace words."""
    if tokenizer is None:
        return np.array([len(t.split()) for t in texts], dtype=np.int64)
    lengths: list[int] = []
    for start in range(0, len(texts), batch_size):
        batch = list(texts[start:start + batch_size])
        ids = tokenizer(batch, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
        lengths.extend(len(x) for x in ids)
    return np.asarray(lengths, dtype=np.int64)


def token_length_percentiles(texts: Sequence[str], tokenizer: Any = None,
                             percentiles: Sequence[float] = (50, 90, 95, 99)) -> dict[str, float]:
    """Length percentiles ``{"p50": ..., "p90": ...}`` (linear interpolation).

    Lengths are tokens (special tokens included, no truncation) with a Hugging Face tokenizer,
    else whitespace-separated words.
    """
    if len(texts) == 0:
        raise DataError("no texts to measure; pass a non-empty dataset")
    lengths = _token_lengths(texts, tokenizer)
    values = np.percentile(lengths, list(percentiles))
    return {f"p{p:g}": float(v) for p, v in zip(percentiles, values, strict=True)}


def _tokenizer_name(tokenizer: Any) -> str:
    if tokenizer is None:
        return "whitespace"
    return str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)


def dataset_stats(data: LabeledData, tokenizer: Any = None, tokenizer_name: str | None = None) -> dict:
    """Summary of a dataset, JSON-ready.

    Keys: source, fingerprint, rows, labels, hierarchy, per_label ({name: {count, prevalence}}),
    rows_without_label, hierarchy_violations ({"child->parent": rows}), duplicates_removed,
    conflicting_removed, token_lengths ({tokenizer, unit, p50, p90, p95, p99, max}).

    Args:
        data: N rows.
        tokenizer: a Hugging Face tokenizer, or None for whitespace words.
        tokenizer_name: how to name the tokenizer in the stats (default: its ``name_or_path``).
    """
    n = len(data)
    pos = data.labels > 0.5
    counts = pos.sum(axis=0)
    lengths = token_length_percentiles(data.texts, tokenizer, (50, 90, 95, 99, 100))
    lengths["max"] = lengths.pop("p100")
    return {
        "source": data.source,
        "fingerprint": data.fingerprint(),
        "rows": n,
        "labels": list(data.schema.names),
        "hierarchy": data.schema.to_dict()["hierarchy"],
        "per_label": {name: {"count": int(c), "prevalence": float(c) / n if n else 0.0}
                      for name, c in zip(data.schema.names, counts.tolist(), strict=True)},
        "rows_without_label": int((~pos.any(axis=1)).sum()),
        "hierarchy_violations": hierarchy_violations(data.labels, data.schema),
        "duplicates_removed": data.duplicates_removed,
        "conflicting_removed": data.conflicting_removed,
        "token_lengths": {"tokenizer": tokenizer_name or _tokenizer_name(tokenizer),
                          "unit": "tokens" if tokenizer is not None else "words", **lengths},
    }


def format_stats_markdown(stats: dict) -> str:
    """The output of :func:`dataset_stats` as Markdown: a summary table and a per-label table."""
    tl = stats["token_lengths"]
    pct = [k for k in tl if k.startswith("p") and k[1:].replace(".", "").isdigit()]
    lines = [
        f"## {stats.get('source') or 'dataset'}",
        "",
        "| rows | labels | duplicates removed | conflicting removed | rows without a label |",
        "|---:|---:|---:|---:|---:|",
        f"| {stats['rows']:,} | {len(stats['labels'])} | {stats['duplicates_removed']:,} | "
        f"{stats['conflicting_removed']:,} | {stats['rows_without_label']:,} |",
        "",
        "| label | parent | positives | prevalence |",
        "|---|---|---:|---:|",
    ]
    for name in stats["labels"]:
        row = stats["per_label"][name]
        parent = stats["hierarchy"].get(name, "")
        lines.append(f"| {name} | {parent} | {row['count']:,} | {100 * row['prevalence']:.2f}% |")
    if stats["hierarchy_violations"]:
        lines += ["", "| hierarchy (child->parent) | violating rows |", "|---|---:|"]
        lines += [f"| {k} | {v:,} |" for k, v in stats["hierarchy_violations"].items()]
    lines += [
        "",
        f"Length in {tl['unit']} ({tl['tokenizer']}):",
        "",
        "| " + " | ".join([*pct, "max"]) + " |",
        "|" + "---:|" * (len(pct) + 1),
        "| " + " | ".join(f"{tl[k]:g}" for k in [*pct, "max"]) + " |",
    ]
    return "\n".join(lines) + "\n"


__all__ = [
    "CYBERBULLYING_SCHEMA", "DAVIDSON_SCHEMA", "FORMATS", "JIGSAW_LABELS", "JIGSAW_SCHEMA", "LabelSchema",
    "LabeledData", "OLID_SCHEMA", "align_to_schema", "dataset_stats", "deduplicate", "detect_format",
    "format_stats_markdown", "hierarchy_violations", "load_dataset", "read_text_table", "token_length_percentiles",
    "hold_out_test", "train_val_split", "train_val_test_split",
]
