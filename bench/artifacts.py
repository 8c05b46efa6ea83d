"""The artifacts a benchmark runs: found under ``runs/``, checked, and loaded as predictors on a runtime."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from compress.artifact import ARTIFACT_FILE, read_info
from compress.errors import ArtifactError, ConfigError, UserError

GPU_RUNTIMES = ("ort-cuda", "ort-trt", "tensorrt")
BASELINE_BACKEND = "sklearn"


class Skipped(Exception):
    """A runtime does not apply to an artifact; the message says why."""


def find_artifacts(root: str | os.PathLike[str] = "runs") -> list[Path]:
    """Artifact directories ``root/*/artifact.json``, sorted by name (hidden directories skipped).

    Raises:
        ArtifactError: none found (the message says where it looked and how to make one).
    """
    root = Path(root)
    # ".name.tmp-*" / ".name.old-*" are artifacts being written or replaced (compress.artifact): not yet ones.
    found = sorted(p.parent for p in root.glob(f"*/{ARTIFACT_FILE}") if not p.parent.name.startswith("."))
    if not found:
        raise ArtifactError(f"no artifacts found under {root}/ (looked for {root}/*/{ARTIFACT_FILE}); pass artifact "
                            f"directories, or make one with `compress train` / `compress distill` / `compress baseline`")
    return found


def check_artifacts(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The given artifact directories, each checked to hold an ``artifact.json`` (one-line errors)."""
    out = []
    for path in map(Path, paths):
        read_info(path)  # raises ArtifactError naming the problem
        out.append(path)
    return out


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def load_predictor(artifact: str | os.PathLike[str], runtime: str = "auto", max_batch_size: int | None = None,
                   threads: int | None = None) -> Any:
    """A Predictor (``predict(texts) -> (N, L)``) for ``artifact`` on ``runtime``, via :func:`export.runtime.load`.

    A baseline asked for ``torch`` runs in its own library (backend ``sklearn``), as ``auto`` does.

    Args:
        artifact: artifact directory.
        runtime: an export.runtime backend or ``auto``.
        max_batch_size: the predictor's micro-batch size (None: the runtime's default).
        threads: intra-op threads of PyTorch / ONNX Runtime (None: the runtime's default, the physical cores).

    Raises:
        Skipped: the runtime does not apply to this artifact (reason in the message).
        ArtifactError: ``artifact`` is not an artifact.
        ConfigError: ``runtime`` is not a backend name.
    """
    directory = Path(artifact)
    info = read_info(directory)
    backend = BASELINE_BACKEND if info.kind == "baseline" and runtime == "torch" else runtime
    if backend in GPU_RUNTIMES and not _cuda_available():
        raise Skipped(f"{backend} needs a CUDA GPU and this machine has none")
    from export.runtime import load

    kwargs: dict[str, Any] = {"max_batch_size": int(max_batch_size)} if max_batch_size else {}
    if threads:
        import torch

        torch.set_num_threads(int(threads))  # also for baselines (fastText is PyTorch), which take no threads
        kwargs["threads"] = int(threads)
    try:
        return load(directory, backend=backend, **kwargs)
    except ConfigError:
        raise
    except UserError as exc:
        raise Skipped(str(exc)) from None
