"""MLflow tracking: a local store by default, an MLflow server via ``tracking_uri``.

:func:`tracked_run` is a context manager yielding a :class:`Tracker`; with tracking disabled it
yields a tracker whose calls do nothing, so workflows never branch on it.

:func:`run_hooks` lets a caller that wraps a workflow (``compress tune``) see its metrics as they
are logged (per-epoch validation scores, e.g. for pruning) and add tags to the runs it opens,
without the workflow knowing: a run opened while another is active becomes its nested child.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
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
        if self.active:
            clean = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
            if clean:
                self._mlflow.log_metrics(clean, step=step)
        # after logging, so a hook that stops the run (a pruned trial) still leaves this step on record
        for hooks in _HOOKS.get():
            if hooks.on_metrics is not None:
                hooks.on_metrics(self, metrics, step)

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


MetricsHook = Callable[[Tracker, Mapping[str, Any], "int | None"], None]


@dataclass(frozen=True)
class RunHooks:
    """What :func:`run_hooks` adds to every run opened inside it."""

    tags: Mapping[str, Any] = field(default_factory=dict)
    on_metrics: MetricsHook | None = None


_HOOKS: contextvars.ContextVar[tuple[RunHooks, ...]] = contextvars.ContextVar("modcompress_run_hooks", default=())


@contextlib.contextmanager
def run_hooks(tags: Mapping[str, Any] | None = None, on_metrics: MetricsHook | None = None) -> Iterator[None]:
    """Inside the block, every :func:`tracked_run` gets ``tags`` and every logged metric dict is passed
    to ``on_metrics(tracker, metrics, step)`` (also with tracking disabled); an exception it raises
    propagates out of the workflow that logged the metrics.
    """
    token = _HOOKS.set((*_HOOKS.get(), RunHooks(dict(tags or {}), on_metrics)))
    try:
        yield
    finally:
        _HOOKS.reset(token)


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

    # MLflow prints "View run ... at: URL" to stdout when a server-backed run ends, which would break
    # `--json` output; the run id and URI are logged (stderr) below instead. Set it to false to get it back.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
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
    # inside another run (a tuning study), this run becomes its child
    with mlflow.start_run(run_name=run_name, nested=mlflow.active_run() is not None) as run:
        tracker = Tracker(mlflow, run.info.run_id, mlflow.get_tracking_uri())
        if params:
            tracker.log_params(params)
        all_tags = {k: v for hooks in _HOOKS.get() for k, v in hooks.tags.items()} | dict(tags or {})
        if all_tags:
            tracker.set_tags(all_tags)
        log.info("mlflow run %s at %s", run.info.run_id, tracker.uri)
        yield tracker
