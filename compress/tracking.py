"""MLflow tracking: a local store by default, an MLflow server via ``tracking_uri``.

:func:`tracked_run` is a context manager yielding a :class:`Tracker`; with tracking disabled (and on
every process but the main one under a launcher) it yields a tracker whose calls do nothing, so
workflows never branch on it.

:func:`run_hooks` lets a caller that wraps a workflow (``compress tune``) see its metrics as they
are logged (per-epoch validation scores, e.g. for pruning) and add tags to the runs it opens,
without the workflow knowing: a run opened while another is active becomes its nested child.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import logging
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.config import flatten
from compress.distributed import is_main_process
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

    def log_text(self, text: str, name: str) -> None:
        """Store ``text`` as the run artifact file ``name``."""
        if self.active:
            self._mlflow.log_text(text, name)

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


def _set_experiment(mlflow: Any, name: str) -> None:
    """``mlflow.set_experiment``; a new experiment in a SQLite store keeps its files beside the database.

    MLflow's default artifact root is ``./mlruns`` of whatever directory the command runs in, so runs
    logged to ``sqlite:///elsewhere/mlflow.db`` would still write model files into the working directory.
    """
    uri = mlflow.get_tracking_uri()
    db = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
    if db and db != ":memory:" and mlflow.get_experiment_by_name(name) is None:
        try:
            mlflow.create_experiment(name, artifact_location=(Path(db).resolve().parent / "mlartifacts").as_uri())
        except Exception:  # noqa: BLE001 - another process created it first; set_experiment below uses theirs
            pass
    mlflow.set_experiment(name)


@contextlib.contextmanager
def tracked_run(
    enabled: bool,
    tracking_uri: str | None,
    experiment: str,
    run_name: str | None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
) -> Iterator[Tracker]:
    """Open an MLflow run (ended FAILED if the block raises), log ``params``, yield a Tracker.

    Under a launcher only the main process opens the run; the others get a Tracker that logs nowhere.
    """
    if not enabled or not is_main_process():
        yield Tracker()
        return
    import mlflow

    # MLflow prints "View run ... at: URL" to stdout when a server-backed run ends, which would break
    # `--json` output; the run id and URI are logged (stderr) below instead. Set it to false to get it back.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    try:
        _set_experiment(mlflow, experiment)
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


# -- one-shot runs for commands that quantize or benchmark --------------------------------------

#: keys whose values name a row of a report list (an artifact, a runtime, a batch size ...)
_ROW_KEYS = ("artifact", "name", "model", "label", "runtime", "backend", "mode", "precision", "batch_size",
             "seq_len", "length", "concurrency", "users")
_METRIC_NAME = re.compile(r"[^A-Za-z0-9_\-. /]")
MAX_REPORT_METRICS = 1000


def add_tracking_args(parser: argparse.ArgumentParser) -> None:
    """``--tracking-uri`` and ``--no-tracking`` for commands that log one MLflow run."""
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: the local store)")
    parser.add_argument("--no-tracking", action="store_true", help="do not log this run to MLflow")


def _row_label(row: Mapping[str, Any], index: int) -> str:
    parts: list[str] = []
    for key in _ROW_KEYS:
        value = row.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            part = Path(value).name if isinstance(value, str) and "/" in value else str(value)
            if part not in parts:  # an artifact path and its name often say the same
                parts.append(part)
    return "_".join(parts) if parts else str(index)


def report_metrics(report: Any, prefix: str = "") -> dict[str, float]:
    """Every finite number in a (nested) JSON report, named by its path.

    List items that are dicts are named by their identifying fields (artifact, runtime, batch
    size ...) instead of their position, so ``rows/distilbert_ort-int8_1/p50_ms`` reads as what it is.
    At most :data:`MAX_REPORT_METRICS` are returned (the first ones in document order).
    """
    out: dict[str, float] = {}

    def walk(node: Any, path: str) -> None:
        if len(out) >= MAX_REPORT_METRICS:
            return
        if isinstance(node, bool):
            return
        if isinstance(node, (int, float)):
            if math.isfinite(node) and path:
                out[_METRIC_NAME.sub("_", path)[:250]] = float(node)
            return
        if isinstance(node, Mapping):
            for key, value in node.items():
                if not str(key).startswith("_"):
                    walk(value, f"{path}/{key}" if path else str(key))
            return
        if isinstance(node, list):
            seen: dict[str, int] = {}
            for i, item in enumerate(node):
                label = _row_label(item, i) if isinstance(item, Mapping) else str(i)
                seen[label] = seen.get(label, 0) + 1
                if seen[label] > 1:
                    label = f"{label}_{seen[label]}"
                walk(item, f"{path}/{label}" if path else label)

    walk(report, prefix)
    return out


def log_command_run(
    args: argparse.Namespace,
    command: str,
    report: Mapping[str, Any],
    files: Mapping[str, str],
    artifact_dir: str | os.PathLike[str] | None = None,
) -> str | None:
    """Log one finished command as an MLflow run: its options (params), the report's numbers
    (metrics), the report texts (``files``: name -> text) and optionally an artifact directory.

    Honours ``--no-tracking`` / ``--tracking-uri`` from :func:`add_tracking_args`; returns the run id
    (None when tracking is off). Runs land in the ``modcompress`` experiment, named after the command.
    """
    if getattr(args, "no_tracking", False):
        return None
    params = {k: v for k, v in vars(args).items() if k not in ("func", "no_tracking", "tracking_uri")
              and not callable(v)}
    with tracked_run(True, getattr(args, "tracking_uri", None), "modcompress", command,
                     params=params, tags={"command": command}) as tracker:
        metrics = report_metrics(report)
        items = list(metrics.items())
        for i in range(0, len(items), 500):
            tracker.log_metrics(dict(items[i : i + 500]))
        for name, text in files.items():
            tracker.log_text(text, name)
        if artifact_dir is not None:
            tracker.log_artifact_dir(artifact_dir)
        return tracker.run_id
