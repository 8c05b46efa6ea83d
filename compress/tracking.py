"""MLflow tracking: a local store by default, an MLflow server via ``tracking_uri``.

:func:`tracked_run` is a context manager yielding a :class:`Tracker`; with tracking disabled it
yields a tracker whose calls do nothing, so workflows never branch on it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

from compress.config import flatten
from compress.errors import UserError

log = logging.getLogger(__name__)


class Tracker:
    """Logs to one MLflow run (or nowhere, when ``run_id`` is None)."""

    def __init__(self, mlflow_module: Any = None, run_id: str | None = None, uri: str | None = None):
        self._mlflow = mlflow_module
        self.run_id = run_id
        self.uri = uri

    @property
    def active(self) -> bool:
        return self._mlflow is not None

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        if not self.active:
            return
        clean = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        if clean:
            self._mlflow.log_metrics(clean, step=step)

    def log_params(self, params: Mapping[str, Any]) -> None:
        if not self.active:
            return
        flat = {k: ("" if v is None else str(v))[:6000] for k, v in flatten(params).items()}
        # MLflow caps a batch at 100 params.
        items = list(flat.items())
        for i in range(0, len(items), 100):
            self._mlflow.log_params(dict(items[i : i + 100]))

    def log_artifact_dir(self, path: str | os.PathLike[str], name: str = "artifact") -> None:
        if self.active:
            self._mlflow.log_artifacts(str(path), artifact_path=name)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self.active:
            self._mlflow.set_tags({k: str(v) for k, v in tags.items()})


@contextlib.contextmanager
def tracked_run(
    enabled: bool,
    tracking_uri: str | None,
    experiment: str,
    run_name: str | None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
) -> Iterator[Tracker]:
    """Open an MLflow run (ended FAILED if the block raises), log ``params``, yield a Tracker."""
    if not enabled:
        yield Tracker()
        return
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    try:
        mlflow.set_experiment(experiment)
    except Exception as exc:  # noqa: BLE001 - connection errors come in many types
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"cannot reach MLflow tracking at {mlflow.get_tracking_uri()} ({first}); "
            "check --tracking-uri or pass tracking.enabled=false"
        ) from None
    with mlflow.start_run(run_name=run_name) as run:
        tracker = Tracker(mlflow, run.info.run_id, mlflow.get_tracking_uri())
        if params:
            tracker.log_params(params)
        if tags:
            tracker.set_tags(tags)
        log.info("mlflow run %s at %s", run.info.run_id, tracker.uri)
        yield tracker
