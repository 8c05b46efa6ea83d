"""Where modcompress keeps what it may reuse between runs, and the small JSON store of measurements.

``cache_root()`` is ``$MODCOMPRESS_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/modcompress``
(``~/.cache/modcompress`` by default). Teacher soft labels (``soft_labels/``) and the precision
measurements ``mixed_precision=auto`` decides from (``precision.json``, :class:`MeasurementCache`)
live there.

A cache only saves time: a missing, unreadable or corrupt file reads as empty (a corrupt one with a
warning), and a failed write is a warning, never an error.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress.errors import one_line

log = logging.getLogger(__name__)

CACHE_ENV = "MODCOMPRESS_CACHE_DIR"
PRECISION_FILE = "precision.json"
FORMAT_VERSION = 1


def cache_root() -> Path:
    """``$MODCOMPRESS_CACHE_DIR``, else ``$XDG_CACHE_HOME/modcompress`` (``~/.cache/modcompress``)."""
    override = os.environ.get(CACHE_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "modcompress"


def cache_key(fields: dict[str, Any]) -> str:
    """One stable string for a dict of JSON-able fields (sorted keys)."""
    return json.dumps(fields, sort_keys=True, default=str)


@dataclass(frozen=True)
class MeasurementCache:
    """A JSON file of measurements by key: ``{"version": 1, "entries": {key: {...}}}``.

    Attributes:
        path: the file (``cache_root() / "precision.json"`` by default, :meth:`default`).
    """

    path: Path

    @classmethod
    def default(cls) -> MeasurementCache:
        return cls(cache_root() / PRECISION_FILE)

    def _entries(self) -> dict[str, Any]:
        """Every entry; {} when the file is missing, unreadable or not ours (a warning when it is corrupt)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.warning("cannot read the measurement cache %s (%s); measuring instead", self.path, one_line(exc))
            return {}
        try:
            data = json.loads(text)
            entries = data["entries"] if data.get("version") == FORMAT_VERSION else None
            if not isinstance(entries, dict):
                raise ValueError("no entries")
        except (ValueError, TypeError, KeyError, AttributeError):
            log.warning("ignoring the measurement cache %s: it is not a modcompress cache file (corrupt?); "
                        "it will be rewritten", self.path)
            return {}
        return entries

    def get(self, key: str) -> dict[str, Any] | None:
        """The entry stored under ``key``, or None."""
        entry = self._entries().get(key)
        return entry if isinstance(entry, dict) else None

    def put(self, key: str, entry: dict[str, Any]) -> bool:
        """Store ``entry`` under ``key`` (atomic rename); False, with a warning, when the file cannot be written."""
        entries = self._entries()
        entries[key] = entry
        text = json.dumps({"version": FORMAT_VERSION, "entries": entries}, indent=1, sort_keys=True)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(text)
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            log.warning("cannot write the measurement cache %s (%s); the next run measures again (set %s to a "
                        "writable directory to keep it)", self.path, one_line(exc), CACHE_ENV)
            return False
        return True
