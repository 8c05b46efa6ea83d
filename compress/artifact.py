"""The on-disk contract every stage reads and writes.

::

    runs/<name>/
      artifact.json   format version, kind, architecture, labels + hierarchy, thresholds,
                      max_length, parent, metrics, data fingerprint, library versions, created
      model/          save_pretrained directory, or state_dict + config json
      tokenizer/      tokenizer files
      model.onnx | model.plan   (export stages)

Writes are atomic: :func:`atomic_artifact_dir` yields a temporary sibling directory and renames
it into place only when the block finishes without an exception, so a crash never leaves a
half-written artifact that a later stage would load.

Nothing the toolkit did not make is ever replaced: :func:`check_out` validates an ``--out``
destination before any work (a non-empty directory that is not ours, a file, the directory of an
input, ``.``, a system path are refused; an earlier output of ours only with ``overwrite``), and
the commit re-checks. Every output carries the marker file ``.modcompress`` (artifacts are also
recognised by a valid ``artifact.json``). Temporary directories are locked by their writer, so
the next write to the same place removes the ones a killed run left behind.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import math
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from compress.errors import ArtifactError, UserError

FORMAT_VERSION = 1
ARTIFACT_FILE = "artifact.json"
MARKER_FILE = ".modcompress"  # in every directory an atomic write of ours produced
KINDS = ("teacher", "student", "quantized", "onnx", "tensorrt", "baseline")
SYSTEM_ROOTS = ("/proc", "/sys", "/dev", "/boot", "/etc", "/bin", "/sbin", "/usr", "/lib", "/lib64")


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape an artifact's numbers (missing ones are skipped)."""
    versions = {"python": platform.python_version()}
    for name in ("torch", "transformers", "onnx", "onnxruntime", "sklearn", "numpy"):
        try:
            module = __import__(name)
        except Exception:  # noqa: BLE001 - optional libraries
            continue
        versions[name] = str(getattr(module, "__version__", "unknown"))
    return versions


@dataclass
class ArtifactInfo:
    """The parsed ``artifact.json``.

    Attributes:
        kind: one of :data:`KINDS`.
        architecture: registry name (``hf``, ``distilbert``, ``textcnn``, ``bilstm``, ``tfidf``...).
        labels: label names, in output-column order (L of them).
        hierarchy: child label name -> parent label name.
        exclusive: groups of mutually exclusive sibling labels (see ``compress.data.LabelSchema``).
        thresholds: per-label decision thresholds (L floats) tuned on validation.
        max_length: tokenizer truncation length.
        parent: path of the artifact this one was made from, or None.
        metrics: validation metrics (macro_roc_auc, macro_f1, ...).
        data_fingerprint: sha256 of the training data.
        recipe: the resolved config that produced it.
        extra: stage-specific fields (quantization numbers, export tolerances, ...).
    """

    kind: str
    architecture: str
    labels: list[str]
    hierarchy: dict[str, str] = field(default_factory=dict)
    exclusive: list[list[str]] = field(default_factory=list)
    thresholds: list[float] = field(default_factory=list)
    max_length: int = 128
    parent: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    data_fingerprint: str | None = None
    recipe: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    libraries: dict[str, str] = field(default_factory=library_versions)
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ArtifactError(f"unknown artifact kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if self.thresholds and len(self.thresholds) != len(self.labels):
            raise ArtifactError(
                f"artifact has {len(self.labels)} labels but {len(self.thresholds)} thresholds"
            )

    def schema(self) -> Any:
        """The artifact's ``compress.data.LabelSchema`` (labels, hierarchy, exclusive groups)."""
        from compress.data import LabelSchema

        return LabelSchema.from_names(self.labels, self.hierarchy, self.exclusive)

    def label_fields(self) -> dict[str, Any]:
        """``labels``, ``hierarchy`` and ``exclusive`` as keyword arguments, for an artifact made from this one."""
        return {"labels": list(self.labels), "hierarchy": dict(self.hierarchy),
                "exclusive": [list(g) for g in self.exclusive]}

    @staticmethod
    def fields_of(schema: Any) -> dict[str, Any]:
        """``labels``, ``hierarchy`` and ``exclusive`` keyword arguments from a ``LabelSchema``."""
        return {"labels": list(schema.names), "hierarchy": {c: p for c, p in schema.hierarchy},
                "exclusive": [list(g) for g in schema.exclusive]}

    def to_json(self) -> str:
        """Strict JSON: a non-finite number (an AUC over a label with one class) is written as null."""
        return json.dumps(_finite(asdict(self)), indent=2, sort_keys=True, default=_json_default, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArtifactInfo:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def _finite(value: Any) -> Any:
    """``value`` with every NaN / infinity (also inside numpy arrays and scalars) replaced by None."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


# What a valid artifact.json holds: field -> (check, what it must be).
_FIELD_CHECKS: dict[str, tuple[Any, str]] = {
    "kind": (lambda v: v in KINDS, f"one of {', '.join(KINDS)}"),
    "architecture": (lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
    "labels": (lambda v: isinstance(v, list) and bool(v) and all(isinstance(x, str) and x for x in v),
               "a non-empty list of label names"),
    "hierarchy": (lambda v: isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()),
                  "an object of child -> parent label names"),
    "exclusive": (lambda v: isinstance(v, list) and all(isinstance(g, list) and all(isinstance(x, str) for x in g)
                                                        for g in v), "a list of lists of label names"),
    "thresholds": (lambda v: isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                         and math.isfinite(x) for x in v), "a list of numbers"),
    "max_length": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a non-negative integer"),
    "parent": (lambda v: v is None or isinstance(v, str), "a path or null"),
    "metrics": (lambda v: isinstance(v, dict), "an object"),
    "data_fingerprint": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "recipe": (lambda v: isinstance(v, dict), "an object"),
    "extra": (lambda v: isinstance(v, dict), "an object"),
    "format_version": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "libraries": (lambda v: isinstance(v, dict), "an object"),
    "created": (lambda v: isinstance(v, str), "a string"),
}
_REQUIRED = ("kind", "architecture", "labels")


def parse_info(meta: Path) -> ArtifactInfo:
    """Parse and validate an ``artifact.json``; :class:`ArtifactError` (one line) for anything malformed."""
    fix = "the artifact is damaged, re-create it"
    try:
        data = json.loads(meta.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ArtifactError(f"{meta} is not UTF-8 text; {fix}") from None
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{meta} is not valid JSON ({exc.msg}); {fix}") from None
    except OSError as exc:
        raise ArtifactError(f"cannot read {meta} ({exc.strerror or type(exc).__name__}); {fix}") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{meta} holds a JSON {type(data).__name__}, not an object; {fix}")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ArtifactError(f"{meta} lacks {', '.join(missing)}; {fix}")
    version = data.get("format_version", 0)
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise ArtifactError(
            f"{meta.parent} uses artifact format {version}, newer than this modcompress "
            f"({FORMAT_VERSION}); upgrade modcompress"
        )
    for name, (ok, expected) in _FIELD_CHECKS.items():
        if name in data and not ok(data[name]):
            raise ArtifactError(f"{meta}: {name} must be {expected}, got {json.dumps(data[name])[:60]}; {fix}")
    if data.get("thresholds") and len(data["thresholds"]) != len(data["labels"]):
        raise ArtifactError(f"{meta}: {len(data['labels'])} labels but {len(data['thresholds'])} thresholds; {fix}")
    info = ArtifactInfo.from_dict(data)
    try:
        info.schema()
    except UserError as exc:
        raise ArtifactError(f"{meta}: {exc}; {fix}") from None
    return info


def read_info(path: str | os.PathLike[str], kinds: Sequence[str] | None = None) -> ArtifactInfo:
    """Read and validate ``artifact.json`` of the artifact at ``path``.

    Args:
        path: artifact directory.
        kinds: if given, the kinds the caller accepts; any other raises :class:`ArtifactError`.

    Raises:
        ArtifactError: not a directory, no ``artifact.json``, or one that is not UTF-8, not a
            JSON object, lacks a required field or has a field of the wrong type (one line each).
    """
    directory = Path(path)
    meta = directory / ARTIFACT_FILE
    if not directory.is_dir():
        raise ArtifactError(f"{directory} is not a directory; pass an artifact directory made by `compress`")
    if not meta.is_file():
        raise ArtifactError(
            f"{directory} has no {ARTIFACT_FILE}; it is not a modcompress artifact "
            "(make one with `compress train` or `compress distill`)"
        )
    info = parse_info(meta)
    if kinds is not None and info.kind not in kinds:
        raise ArtifactError(
            f"{directory} is a {info.kind} artifact; this command needs one of: {', '.join(kinds)}"
        )
    return info


def write_info(directory: str | os.PathLike[str], info: ArtifactInfo) -> None:
    """Write ``artifact.json`` into ``directory`` (normally the temporary one from :func:`atomic_artifact_dir`)."""
    Path(directory, ARTIFACT_FILE).write_text(info.to_json() + "\n")


def is_ours(path: str | os.PathLike[str]) -> bool:
    """True for a directory an earlier write of ours produced (marker file, or a valid ``artifact.json``)."""
    directory = Path(path)
    if not directory.is_dir():
        return False
    if (directory / MARKER_FILE).is_file():
        return True
    try:
        parse_info(directory / ARTIFACT_FILE)
    except ArtifactError:
        return False
    return True


def claim_dir(path: str | os.PathLike[str]) -> Path:
    """Create directory ``path`` (checked first with :func:`check_out`) and mark it as ours, for outputs made of
    several artifacts and files (the quickstart folder); its parts may then be replaced by our later runs."""
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / MARKER_FILE
    if not marker.exists():
        marker.write_text(json.dumps({"made_by": "modcompress"}) + "\n")
    return directory


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def check_out(target: str | os.PathLike[str] | None, overwrite: bool = False,
              inputs: Sequence[str | os.PathLike[str] | None] = ()) -> Path:
    """Validate an ``--out`` destination before any work; returns it (unresolved).

    Accepted: a path that does not exist (its parent exists or can be made, and is writable), an
    empty directory, or an earlier output of ours when ``overwrite`` is true.

    Raises:
        ArtifactError: one line naming the problem and the fix, for an empty path, ``.``, a system
            path (/proc, /sys, ...), a file, a non-empty directory we did not make, an earlier
            output without ``overwrite``, a destination that is or holds one of ``inputs``, or a
            parent that cannot be created or written.
    """
    if target is None or not str(target).strip():
        raise ArtifactError("out: empty path; pass --out DIR, a new directory for the result")
    out = Path(target)
    resolved = out.resolve()
    if resolved == Path.cwd().resolve() or str(target).strip() in (".", "./"):
        raise ArtifactError(f"out: {target} is the current directory; pass --out DIR, a new directory for the result")
    if resolved == Path(resolved.anchor) or any(_inside(resolved, Path(r)) for r in SYSTEM_ROOTS):
        raise ArtifactError(f"out: {target} is a system path; pass --out DIR under your own work directory")
    for given in inputs:
        if given is None or not str(given):
            continue
        source = Path(given).resolve()
        if _inside(source, resolved):
            raise ArtifactError(f"out: {target} is or holds the input {given}; pass another --out "
                                "(an output must not replace what it was made from)")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ArtifactError(f"out: {target} exists and is not a directory; pass another --out "
                            "(modcompress never replaces files it did not make)")
    if out.is_dir() and any(out.iterdir()):
        if not is_ours(out):
            raise ArtifactError(f"out: {target} is a non-empty directory that modcompress did not make; pass "
                                "another --out (it never deletes what it did not make)")
        if not overwrite:
            raise ArtifactError(f"out: {target} already holds an earlier result; pass --overwrite to replace it, "
                                "or choose another --out")
    parent = resolved.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ArtifactError(f"out: cannot create {target}: {parent} is not a writable directory; pass another --out")
    return out


def _lock(path: Path) -> int:
    """Hold an exclusive lock on ``path`` (created) for as long as this process lives or until closed."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Remove ``.NAME.tmp-*`` / ``.NAME.old-*`` siblings of ``target`` that a killed writer of ours left.

    A temporary of ours holds :data:`MARKER_FILE`, locked by its writer while it runs: a lock we can
    take belongs to a dead process. Anything without our marker is left alone. Returns what was removed.
    """
    removed = []
    if not target.parent.is_dir():
        return removed
    for pattern in (f".{target.name}.tmp-*", f".{target.name}.old-*"):
        for leftover in target.parent.glob(pattern):
            marker = leftover / MARKER_FILE
            if leftover.is_symlink() or not leftover.is_dir() or not marker.is_file():
                continue
            try:
                fd = _lock(marker)
            except OSError:
                continue  # its writer is alive
            try:
                if pattern.endswith("old-*") and not target.exists():
                    os.replace(leftover, target)  # killed mid-swap: the old artifact is the complete one
                else:
                    shutil.rmtree(leftover, ignore_errors=True)
                    removed.append(leftover)
            finally:
                os.close(fd)
    return removed


@contextlib.contextmanager
def atomic_artifact_dir(target: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``target``; rename it to ``target`` on success.

    On an exception the temporary directory is removed and ``target`` is untouched. ``target``
    may replace only an earlier output of ours, and only with ``overwrite`` (checked before the
    block and again at the swap). What a killed earlier write left beside ``target`` is removed
    first. The old output is moved aside, the new one renamed in, then the old one deleted; a
    kill between the two renames is repaired by the next write (the old one is put back).
    """
    target = Path(target)
    check_out(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    lock = _lock(tmp / MARKER_FILE)
    try:
        try:
            yield tmp
            check_out(target, overwrite)  # the destination may have changed during a long run
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        os.write(lock, json.dumps({"made_by": "modcompress", "pid": os.getpid()}).encode())
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        os.close(lock)


def copy_artifact_files(src: str | os.PathLike[str], dst: str | os.PathLike[str], names: Sequence[str]) -> None:
    """Copy the named files/dirs of artifact ``src`` into ``dst`` (e.g. ``tokenizer`` for a derived artifact)."""
    for name in names:
        s, d = Path(src, name), Path(dst, name)
        if s.is_dir():
            shutil.copytree(s, d)
        elif s.is_file():
            shutil.copy2(s, d)
