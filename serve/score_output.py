"""The output of `serve score`: finished chunks on disk, resume state, and the final file.

While a job runs, every finished chunk is one Parquet file ``OUTPUT.parts/part-00000.parquet``,
written to a temporary name and renamed, and then ``OUTPUT.parts/state.json`` (chunks and rows
done, the job's fingerprint) is replaced the same way. A kill at any moment therefore leaves
finished parts and a state that names only finished parts; ``--resume`` checks the fingerprint
(same input, artifact and options), drops any part the state does not name, and goes on from the
next chunk. At the end the parts are streamed into ``OUTPUT`` (Parquet or CSV) under a temporary
name inside the parts directory, ``OUTPUT.score.json`` (the job's record, which also marks OUTPUT
as ours) is written, OUTPUT is replaced by one rename, and the parts go. OUTPUT is thus never
half-written.

Only what this tool made is ever replaced or deleted: an existing OUTPUT only with
``--overwrite`` and only when its ``OUTPUT.score.json`` says we wrote it; in ``OUTPUT.parts``
only our part, temporary and state files (the directory itself only once it is empty).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from compress.errors import ConfigError
from serve.score_table import as_csv, null_rows

TOOL = "modcompress serve score"
OUTPUT_FORMATS = ("parquet", "csv")
STATE = "state.json"
PART = "part-{:05d}.parquet"
TMP_SUFFIX = ".tmp"


def output_format(path: Path, given: str | None = None) -> str:
    """``given``, else ``csv`` for ``.csv`` / ``.csv.gz``, else ``parquet``."""
    if given:
        if given not in OUTPUT_FORMATS:
            raise ConfigError(f"output_format: must be one of {', '.join(OUTPUT_FORMATS)}, got {given!r}")
        return given
    return "csv" if path.name.lower().endswith((".csv", ".csv.gz")) else "parquet"


def parts_dir(output: Path) -> Path:
    return output.with_name(output.name + ".parts")


def record_path(output: Path) -> Path:
    return output.with_name(output.name + ".score.json")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` in one rename (a kill leaves the old or the new file, never half of one)."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _read_ours(path: Path) -> dict[str, Any] | None:
    """The JSON at ``path`` when this tool wrote it, else None."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("tool") == TOOL else None


def _differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return "; ".join(f"{k} was {old.get(k)!r}, now {new.get(k)!r}" for k in keys[:3])


def _our_files(parts: Path) -> list[Path]:
    """What a run of ours leaves in a parts directory: parts, temporary files, the state."""
    return [p for p in parts.iterdir() if p.is_file() and (
        (p.name.startswith("part-") and p.name.endswith((".parquet", ".parquet" + TMP_SUFFIX)))
        or p.name in (STATE, STATE + TMP_SUFFIX, "output" + TMP_SUFFIX))]


def _remove_ours(parts: Path) -> None:
    for p in _our_files(parts):
        p.unlink()
    try:
        parts.rmdir()
    except OSError:  # something of the user's is in there: leave it
        pass


@dataclass
class PartStore:
    """Finished chunks of one job, as part files plus a state file (see the module docstring).

    Attributes:
        output: the final file.
        format: parquet or csv (the final file's; parts are always Parquet).
        fingerprint: what makes two runs the same job (input, artifact, options).
        chunks / rows / null_rows: finished so far (counted over resumed runs too).
        complete: True when OUTPUT already holds this very job's result (``--resume`` after the end).
    """

    output: Path
    format: str
    fingerprint: dict[str, Any]
    chunks: int = 0
    rows: int = 0
    null_rows: int = 0
    complete: bool = False
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def parts(self) -> Path:
        return parts_dir(self.output)

    @classmethod
    def open(cls, output: Path, fmt: str, fingerprint: dict[str, Any], resume: bool = False,
             overwrite: bool = False) -> PartStore:
        """Check what is on disk, then start a new job or take up an interrupted one.

        Every refusal is one ConfigError line and changes nothing on disk.
        """
        if resume and overwrite:
            raise ConfigError("--resume continues a job and --overwrite starts it over; pass one of them")
        if output.is_dir():
            raise ConfigError(f"{output} is a directory; --output takes a file name")
        parts, mark = parts_dir(output), record_path(output)
        ours_out = _read_ours(mark) if output.exists() else None
        not_ours = (f"{output} exists and was not written by serve score (no {mark.name} beside it); remove it "
                    f"yourself or choose another --output")
        state = None
        if parts.exists():
            state = _read_ours(parts / STATE) if parts.is_dir() else None
            if state is None:
                raise ConfigError(f"{parts} exists and was not made by serve score; move it away or choose another "
                                  f"--output")
            if not (resume or overwrite):
                raise ConfigError(f"an interrupted run left {parts}; rerun with --resume to continue it, or "
                                  f"--overwrite to start over")
            if resume and state.get("fingerprint") != fingerprint:
                changed = _differences(state.get("fingerprint", {}), fingerprint)
                raise ConfigError(f"--resume: {parts} belongs to another job ({changed}); rerun with the same input, "
                                  f"artifact and options, or pass --overwrite to start over")
            if output.exists() and ours_out is None:
                raise ConfigError(not_ours)
        elif output.exists():
            if ours_out is None:
                raise ConfigError(not_ours)
            if resume and ours_out.get("fingerprint") == fingerprint:
                return cls(output, fmt, fingerprint, ours_out["chunks"], ours_out["rows"], ours_out["null_rows"],
                           complete=True, record=ours_out)
            if resume:
                raise ConfigError(f"--resume: {output} is the finished result of another job, nothing to resume "
                                  f"({_differences(ours_out.get('fingerprint', {}), fingerprint)}); pass "
                                  f"--overwrite to replace it")
            if not overwrite:
                raise ConfigError(f"{output} exists; pass --overwrite to replace it or choose another --output")

        store = cls(output, fmt, fingerprint)
        if state is not None and resume:
            store.chunks, store.rows, store.null_rows = state["chunks"], state["rows"], state["null_rows"]
            for p in _our_files(parts):  # a part finished after the last state write is scored again
                if p.name != STATE and p.name not in {PART.format(k) for k in range(store.chunks)}:
                    p.unlink()
        else:
            if state is not None:  # --overwrite of an interrupted run
                _remove_ours(parts)
            output.parent.mkdir(parents=True, exist_ok=True)
            parts.mkdir(exist_ok=True)  # it survives an --overwrite when it holds a file of the user's
            store._save_state()
        return store

    def discard_if_empty(self) -> None:
        """Remove the parts directory when it holds no finished chunk (a job that failed before its first)."""
        if self.chunks == 0 and self.parts.is_dir():
            _remove_ours(self.parts)

    def _save_state(self) -> None:
        _write_json(self.parts / STATE, {"tool": TOOL, "fingerprint": self.fingerprint, "chunks": self.chunks,
                                         "rows": self.rows, "null_rows": self.null_rows})

    def write(self, table: pa.Table, schema: pa.Schema) -> None:
        """Add the next finished chunk: its part file, then the state naming it."""
        path = self.parts / PART.format(self.chunks)
        tmp = path.with_name(path.name + TMP_SUFFIX)
        pq.write_table(table.cast(schema), tmp)
        os.replace(tmp, path)
        self.chunks += 1
        self.rows += table.num_rows
        self.null_rows += null_rows(table)
        self._save_state()

    def finish(self, schema: pa.Schema, record: dict[str, Any]) -> None:
        """Stream the parts into OUTPUT (one part in memory at a time), write the record, rename, clean up."""
        tmp = self.parts / ("output" + TMP_SUFFIX)
        paths = [self.parts / PART.format(k) for k in range(self.chunks)]
        if self.format == "parquet":
            with pq.ParquetWriter(tmp, schema) as writer:
                for path in paths:
                    writer.write_table(pq.read_table(path).cast(schema))
        else:
            import pyarrow.csv as pacsv

            csv_schema = as_csv(schema.empty_table()).schema
            compression = "gzip" if self.output.name.lower().endswith(".gz") else None
            with pa.output_stream(tmp, compression=compression) as sink, pacsv.CSVWriter(sink, csv_schema) as writer:
                for path in paths:
                    writer.write_table(as_csv(pq.read_table(path).cast(schema)))
        self.record = {"tool": TOOL, "output": str(self.output), "format": self.format, "chunks": self.chunks,
                       "rows": self.rows, "null_rows": self.null_rows, "fingerprint": self.fingerprint, **record}
        _write_json(record_path(self.output), self.record)
        os.replace(tmp, self.output)
        _remove_ours(self.parts)
        self.complete = True
