"""The input of `serve score`: one file read as a stream of chunks of rows, whatever its size.

Formats (from the file name, or ``--format``); csv, tsv and jsonl may be gzip-compressed (``.gz``):

* ``csv``: pyarrow's streaming CSV reader, RFC 4180 quoting (a quoted field may hold newlines).
* ``tsv``: the same reader, tab-separated and without quoting, as the OLID files are: a
  tab-separated field cannot hold a tab or a newline, and tweets often start with a quote.
* ``jsonl``: one JSON object per line, parsed by :func:`json_line_blocks` (blank lines skipped).
* ``parquet``: record batches of the needed columns.

Every reader yields pyarrow tables of only the text column and the id column (when there is one),
both as strings, where text is null when the cell is missing. :func:`rechunk` cuts them into chunks
of exactly ``chunk_size`` rows (the last one shorter) and holds at most one chunk plus one read
block, so memory does not grow with the file. The Ray engine reads with the same pyarrow options
(:func:`csv_options`) and the same JSON-lines parser, so both engines see the same rows.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa

from compress.errors import ConfigError, DataError, one_line

FORMATS = ("csv", "tsv", "jsonl", "parquet")
EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
              ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
# Tried in this order when --text-column is not given (Jigsaw, OLID/Davidson, ETHOS, cyberbullying, ...).
TEXT_COLUMNS = ("text", "comment_text", "tweet", "comment", "tweet_text", "content", "body")
ID_COLUMN = "id"
READ_BLOCK_BYTES = 1 << 20
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class InputSpec:
    """One input, resolved.

    Attributes:
        path: a local file, or (Ray engine only) a URL Ray Data reads, such as ``s3://bucket/key.csv``.
        format: one of :data:`FORMATS`.
        text_column: the column holding the texts.
        id_column: the column copied to the output as the row's id; None: row numbers instead.
        num_rows: the row count when the file states it (Parquet), else None.
    """

    path: str
    format: str
    text_column: str
    id_column: str | None
    num_rows: int | None = None

    @property
    def columns(self) -> list[str]:
        """The columns the readers keep: text, then id."""
        return [self.text_column] + ([self.id_column] if self.id_column else [])


def is_url(path: str) -> bool:
    """True for ``scheme://...`` paths (object storage, HTTP), which only Ray reads."""
    return bool(_URL.match(path))


def input_format(path: str, given: str | None = None) -> str:
    """The format of ``path``: ``given`` when set, else from its extension (``.gz`` ignored)."""
    if given:
        if given not in FORMATS:
            raise ConfigError(f"format: must be one of {', '.join(FORMATS)}, got {given!r}")
        kind = given
    else:
        suffixes = [s.lower() for s in Path(path.split("?", 1)[0]).suffixes]
        if suffixes and suffixes[-1] == ".gz":
            suffixes = suffixes[:-1]
        kind = EXTENSIONS.get(suffixes[-1]) if suffixes else None
        if kind is None:
            raise ConfigError(f"cannot tell the format of {path} from its name; pass --format "
                              f"({', '.join(FORMATS)})")
    if kind == "parquet" and path.lower().endswith(".gz"):
        raise ConfigError(f"{path}: Parquet compresses internally; pass the uncompressed .parquet file")
    if path.lower().endswith((".bz2", ".xz", ".zip", ".zst")):
        raise ConfigError(f"{path}: only gzip (.gz) compression is read; recompress the file with gzip")
    return kind


def csv_options(fmt: str, columns: Sequence[str] | None) -> dict[str, Any]:
    """pyarrow CSV options (``read_options``, ``parse_options``, ``convert_options``) for csv / tsv.

    ``columns``: keep only these, as strings; None keeps every column (to read the header).
    """
    import pyarrow.csv as pacsv

    parse = pacsv.ParseOptions(delimiter="\t", quote_char=False) if fmt == "tsv" else \
        pacsv.ParseOptions(newlines_in_values=True)
    convert = pacsv.ConvertOptions(include_columns=list(columns), column_types={c: pa.string() for c in columns},
                                   strings_can_be_null=False, quoted_strings_can_be_null=False) \
        if columns is not None else pacsv.ConvertOptions()
    return {"read_options": pacsv.ReadOptions(block_size=READ_BLOCK_BYTES, use_threads=False),
            "parse_options": parse, "convert_options": convert}


def _read_error(path: str, fmt: str, exc: BaseException) -> DataError:
    return DataError(f"cannot read {path} as {fmt}: {one_line(exc)[:200]}; check the file or pass --format")


def _json_value(value: Any) -> str | None:
    """A JSON value as text: strings as they are, null as None, anything else as its JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _json_rows(lines: Sequence[bytes], text_column: str, id_column: str | None, first_line: int
               ) -> pa.Table:
    texts, ids = [], []
    for offset, line in enumerate(lines):
        try:
            row = json.loads(line)
        except ValueError:
            raise DataError(f"line {first_line + offset} is not JSON; each line of a jsonl file must be one JSON "
                            f"object") from None
        if not isinstance(row, dict):
            raise DataError(f"line {first_line + offset} is JSON but not an object; each line of a jsonl file must "
                            f"be one JSON object such as {{\"text\": \"...\"}}")
        texts.append(_json_value(row.get(text_column)))
        if id_column:
            ids.append(_json_value(row.get(id_column)))
    columns = {text_column: pa.array(texts, pa.string())}
    if id_column:
        columns[id_column] = pa.array(ids, pa.string())
    return pa.table(columns)


def json_line_blocks(stream: BinaryIO, text_column: str, id_column: str | None) -> Iterator[pa.Table]:
    """Tables of (text, id) strings from a binary JSON-lines stream, about one read block each.

    Lines split on ``\\n`` only (a JSON string may hold U+2028 and friends); blank lines are
    skipped; a missing or null value is null.
    """
    rest = b""
    line_no = 1
    while True:
        data = stream.read(READ_BLOCK_BYTES)
        buffer = rest + data if data else rest
        if data:
            cut = buffer.rfind(b"\n") + 1
            buffer, rest = buffer[:cut], buffer[cut:]
        else:
            rest = b""
        raw = buffer.split(b"\n")
        lines = [line for line in raw if line.strip()]
        if lines:
            yield _json_rows(lines, text_column, id_column, line_no)
        line_no += buffer.count(b"\n")
        if not data:
            return


def _first_json_keys(path: str) -> list[str]:
    """The keys of the first object of a (possibly gzipped) JSON-lines file."""
    head = b""
    with pa.input_stream(path, compression="detect") as stream:
        while True:  # up to the end of the first line that is not blank
            data = stream.read(1 << 16)
            head += data
            line = next((part for part in head.split(b"\n")[:-1] if part.strip()), None)
            if line is not None or not data:
                break
    line = line if line is not None else head
    if not line.strip():
        raise DataError(f"{path} has no JSON object; pass a file with one JSON object per line")
    try:
        row = json.loads(line)
    except ValueError:
        raise DataError(f"{path}: the first line is not JSON; each line of a jsonl file must be one JSON object") \
            from None
    if not isinstance(row, dict):
        raise DataError(f"{path}: the first line is not a JSON object; each line must be one object")
    return list(row)


def _columns_and_rows(path: str, fmt: str) -> tuple[list[str], int | None]:
    """Column names of a local file (and its row count when the format states it)."""
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            meta = pq.ParquetFile(path).metadata
            return list(meta.schema.to_arrow_schema().names), meta.num_rows
        if fmt == "jsonl":
            return _first_json_keys(path), None
        import pyarrow.csv as pacsv

        with pacsv.open_csv(path, **csv_options(fmt, None)) as reader:
            return list(reader.schema.names), None
    except DataError:
        raise
    except (pa.ArrowException, OSError, EOFError, ValueError) as exc:
        if "Empty CSV file" in str(exc):
            raise DataError(f"{path} has no header row; pass a file with a header naming its columns") from None
        raise _read_error(path, fmt, exc) from None


def inspect_input(path: str, fmt: str | None = None, text_column: str | None = None,
                  id_column: str | None = None) -> InputSpec:
    """Check the input and pick its columns, reading only its header (before any model loads).

    A URL is not opened (Ray reads it): its text column must be given, and rows are numbered
    unless ``id_column`` is.

    Raises:
        DataError / ConfigError: missing or empty file, unknown format, unknown column (one line each).
    """
    kind = input_format(path, fmt)
    if text_column and id_column and text_column == id_column:
        raise ConfigError(f"--text-column and --id-column are both {text_column!r}; the id must be another column")
    if is_url(path):
        if not text_column:
            raise ConfigError(f"{path} is read by Ray, not here: pass --text-column (and --id-column for ids)")
        return InputSpec(path, kind, text_column, id_column)
    p = Path(path)
    if not p.exists():
        raise DataError(f"input file not found: {p}; check --input")
    if p.is_dir():
        raise DataError(f"{p} is a directory; --input takes one file")
    if p.stat().st_size == 0:
        raise DataError(f"{p} is empty (0 bytes); pass a file with a header and rows")
    columns, num_rows = _columns_and_rows(str(p), kind)
    have = ", ".join(columns) or "(none)"
    if text_column is None:
        text_column = next((c for c in TEXT_COLUMNS if c in columns), None)
        if text_column is None:
            raise DataError(f"{p} has none of the usual text columns ({', '.join(TEXT_COLUMNS)}); pass "
                            f"--text-column (columns are: {have})")
    elif text_column not in columns:
        raise DataError(f"{p} has no column {text_column!r} (columns are: {have}); fix --text-column")
    if id_column is not None and id_column not in columns:
        raise DataError(f"{p} has no column {id_column!r} (columns are: {have}); fix --id-column")
    if id_column is None and ID_COLUMN in columns and ID_COLUMN != text_column:
        id_column = ID_COLUMN
    return InputSpec(str(p), kind, text_column, id_column, num_rows)


def _blocks(spec: InputSpec) -> Iterator[pa.Table]:
    """Raw blocks of (text, id) from a local file, in file order."""
    if spec.format == "parquet":
        import pyarrow.parquet as pq

        with pq.ParquetFile(spec.path) as reader:
            for batch in reader.iter_batches(batch_size=65_536, columns=spec.columns):
                yield pa.Table.from_batches([batch])
    elif spec.format == "jsonl":
        with pa.input_stream(spec.path, compression="detect") as stream:
            yield from json_line_blocks(stream, spec.text_column, spec.id_column)
    else:
        import pyarrow.csv as pacsv

        with pacsv.open_csv(spec.path, **csv_options(spec.format, spec.columns)) as reader:
            for batch in reader:
                yield pa.Table.from_batches([batch])


def rechunk(blocks: Iterable[pa.Table], chunk_size: int) -> Iterator[pa.Table]:
    """Cut a stream of tables into tables of exactly ``chunk_size`` rows (the last may be shorter).

    Pulls a block only when the chunk being built needs it, so at most one chunk plus one block
    is held at a time.
    """
    held: list[pa.Table] = []
    count = 0
    for block in blocks:
        held.append(block)
        count += block.num_rows
        while count >= chunk_size:
            table = pa.concat_tables(held)
            yield table.slice(0, chunk_size)
            rest = table.slice(chunk_size)
            held, count = ([rest] if rest.num_rows else []), rest.num_rows
    if count:
        yield pa.concat_tables(held)


def read_chunks(spec: InputSpec, chunk_size: int) -> Iterator[pa.Table]:
    """Chunks of ``chunk_size`` rows of (text, id) strings from a local file; DataError on a bad file."""
    try:
        yield from rechunk(_blocks(spec), chunk_size)
    except (pa.ArrowException, OSError, EOFError, UnicodeDecodeError) as exc:
        raise _read_error(spec.path, spec.format, exc) from None


def input_fingerprint(spec: InputSpec) -> dict[str, Any]:
    """What identifies the input for ``--resume``: its path, and for a local file its size and mtime."""
    out: dict[str, Any] = {"input": spec.path if is_url(spec.path) else str(Path(spec.path).resolve()),
                           "format": spec.format, "text_column": spec.text_column, "id_column": spec.id_column}
    if not is_url(spec.path):
        st = os.stat(spec.path)
        out.update(input_size=st.st_size, input_mtime_ns=st.st_mtime_ns)
    return out
