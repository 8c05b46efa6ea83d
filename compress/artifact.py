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
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from compress.errors import ArtifactError

FORMAT_VERSION = 1
ARTIFACT_FILE = "artifact.json"
KINDS = ("teacher", "student", "quantized", "onnx", "tensorrt", "baseline")


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

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, default=_json_default)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArtifactInfo:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def read_info(path: str | os.PathLike[str], kinds: Sequence[str] | None = None) -> ArtifactInfo:
    """Read ``artifact.json`` of the artifact at ``path``.

    Args:
        path: artifact directory.
        kinds: if given, the kinds the caller accepts; any other raises :class:`ArtifactError`.
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
    try:
        data = json.loads(meta.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{meta} is not valid JSON ({exc.msg}); the artifact is damaged, re-create it") from exc
    if data.get("format_version", 0) > FORMAT_VERSION:
        raise ArtifactError(
            f"{directory} uses artifact format {data['format_version']}, newer than this modcompress "
            f"({FORMAT_VERSION}); upgrade modcompress"
        )
    info = ArtifactInfo.from_dict(data)
    if kinds is not None and info.kind not in kinds:
        raise ArtifactError(
            f"{directory} is a {info.kind} artifact; this command needs one of: {', '.join(kinds)}"
        )
    return info


def write_info(directory: str | os.PathLike[str], info: ArtifactInfo) -> None:
    """Write ``artifact.json`` into ``directory`` (normally the temporary one from :func:`atomic_artifact_dir`)."""
    Path(directory, ARTIFACT_FILE).write_text(info.to_json() + "\n")


@contextlib.contextmanager
def atomic_artifact_dir(target: str | os.PathLike[str], overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary directory beside ``target``; rename it to ``target`` on success.

    On an exception the temporary directory is removed and ``target`` is untouched. If
    ``target`` exists and ``overwrite`` is true it is replaced (moved aside, then deleted, so
    there is no moment without a complete artifact at a readable path other than the swap).
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise ArtifactError(f"{target} already exists; choose another --out or pass --overwrite")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def copy_artifact_files(src: str | os.PathLike[str], dst: str | os.PathLike[str], names: Sequence[str]) -> None:
    """Copy the named files/dirs of artifact ``src`` into ``dst`` (e.g. ``tokenizer`` for a derived artifact)."""
    for name in names:
        s, d = Path(src, name), Path(dst, name)
        if s.is_dir():
            shutil.copytree(s, d)
        elif s.is_file():
            shutil.copy2(s, d)
