"""The Triton Python-backend model behind every `serve start` model.

:func:`serve.server.start_server` writes one model directory per served predictor::

    NAME/config.pbtxt     backend "python": TEXT in, PROBABILITIES / LABELS out, batcher, instances
    NAME/predictor.json   how to load the predictor: export.runtime.load arguments (artifacts), or
    NAME/predictor.pkl    the pickled predictor (any other Predictor object)
    NAME/1/model.py       imports :class:`TritonPythonModel` from here

Triton runs each model instance in its own Python-backend stub process: the instance loads its
own predictor in ``initialize`` and runs every dynamic batch in ``execute``, right where Triton
hands it over, with no further hop to another process. Instances therefore run in parallel.

Bad requests get a per-request error (Triton code ``INVALID_ARG`` -> HTTP 400 / gRPC
INVALID_ARGUMENT) with one line and never fail the other requests Triton batched with them:
Triton itself rejects wrong datatypes, shapes, missing inputs, batches over the maximum and
unknown models; this module rejects what only the model can see (empty or whitespace-only
texts, non-UTF-8 bytes, texts over ``max_text_bytes``). A predictor that raises fails its
batch's requests with ``INTERNAL`` (HTTP 500), one line each, and the instance keeps serving.

Imports only numpy and two small modules of ours (compress.errors, serve.config) at module level:
the stub imports this before any model code runs.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from compress.errors import one_line
from serve.config import (
    INPUT_TEXT,
    LABEL_SEPARATOR,
    OUTPUT_LABELS,
    OUTPUT_PROBABILITIES,
    PARAM_LABELS,
    PARAM_THRESHOLDS,
)

LOGGER = logging.getLogger(__name__)

SPEC_FILE = "predictor.json"
PICKLE_FILE = "predictor.pkl"
PARAM_MAX_TEXT_BYTES = "max_text_bytes"

# One request's result: its outputs, or (Triton error code name, one-line message).
Result = dict[str, np.ndarray] | tuple[str, str]


class BadRequestError(ValueError):
    """A request the model refuses (answered with HTTP 400 / gRPC INVALID_ARGUMENT)."""


def decode_texts(batch: np.ndarray | None, max_text_bytes: int) -> list[str]:
    """Turn one request's ``TEXT`` tensor into N strings, or raise :class:`BadRequestError`.

    Args:
        batch: (N, 1) array of bytes objects, as Triton hands a BYTES input with dims [1].
        max_text_bytes: longest accepted text in UTF-8 bytes.

    Returns:
        N non-empty texts.
    """
    if batch is None:
        raise BadRequestError(f"missing input {INPUT_TEXT}; send a BYTES tensor of shape [N, 1]")
    if batch.ndim != 2 or batch.shape[1] != 1:
        raise BadRequestError(f"input {INPUT_TEXT} has shape {list(batch.shape)}; send shape [N, 1]")
    if batch.shape[0] == 0:
        raise BadRequestError("empty batch; send at least one text")
    texts = []
    n = batch.shape[0]
    for i, item in enumerate(batch[:, 0]):
        if isinstance(item, bytes):
            raw = item
        elif isinstance(item, str):
            raw = item.encode("utf-8", "surrogatepass")
        else:
            raise BadRequestError(f"text {i} of {n} is a {type(item).__name__}, not bytes; send BYTES")
        if len(raw) > max_text_bytes:
            raise BadRequestError(f"text {i} of {n} is {len(raw)} bytes; the limit is {max_text_bytes}, "
                                  f"so shorten or split it")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequestError(f"text {i} of {n} is not valid UTF-8 (bad byte at offset {exc.start}); "
                                  f"encode texts as UTF-8") from None
        if not text.strip():
            raise BadRequestError(f"text {i} of {n} is empty or only whitespace; send non-empty texts")
        texts.append(text)
    return texts


def labels_over_threshold(probs: np.ndarray, labels: Sequence[str], thresholds: np.ndarray) -> list[str]:
    """For each row, the labels with probability >= threshold joined with ``;``.

    Args:
        probs: (N, L) probabilities.
        labels: L names.
        thresholds: (L,) thresholds.
    """
    hits = probs >= np.asarray(thresholds, dtype=np.float32)[None, :]  # (N, L)
    return [LABEL_SEPARATOR.join(name for name, hit in zip(labels, row, strict=True) if hit) for row in hits]


class BatchRunner:
    """One dynamic batch in, one result per request out; never raises.

    Args:
        predictor: an :class:`export.runtime.Predictor`.
        outputs: the output names the model exposes (``PROBABILITIES`` and/or ``LABELS``).
        max_text_bytes: longest accepted text in UTF-8 bytes.
        labels / thresholds: what the model config publishes (default: the predictor's own); the
            ``LABELS`` output applies exactly these.
    """

    def __init__(self, predictor: Any, outputs: Sequence[str], max_text_bytes: int,
                 labels: Sequence[str] | None = None, thresholds: Sequence[float] | None = None) -> None:
        self.name = predictor.name
        self._predictor = predictor
        self._labels = list(predictor.labels if labels is None else labels)
        self._thresholds = np.asarray(predictor.thresholds if thresholds is None else thresholds, dtype=np.float32)
        if len(self._labels) != len(predictor.labels) or self._thresholds.shape != (len(self._labels),):
            raise ValueError(f"model {self.name}: the config publishes {len(self._labels)} labels and "
                             f"{self._thresholds.size} thresholds, the predictor has {len(predictor.labels)} labels")
        self._chunk = int(predictor.max_batch_size)
        self._outputs = tuple(outputs)
        self._max_text_bytes = int(max_text_bytes)

    def run(self, requests: Sequence[tuple[np.ndarray | None, Sequence[str]]]) -> list[Result]:
        """Validate each request alone, predict the valid ones together.

        Args:
            requests: per request, its ``TEXT`` array ((n, 1) bytes) and the outputs it asked for
                (empty: all of them).

        Returns:
            Per request, ``{output name: array}`` (``PROBABILITIES`` (n, L) float32, ``LABELS``
            (n, 1) bytes) or ``(code, message)`` with code ``INVALID_ARG`` or ``INTERNAL``.
        """
        try:
            return self._run(requests)
        except Exception as exc:  # never fail the instance: every request gets an answer
            LOGGER.exception("model %s: unexpected error in a batch of %d requests", self.name, len(requests))
            return [("INTERNAL", one_line(f"model {self.name} failed: {type(exc).__name__}: {exc}"))
                    for _ in requests]

    def _run(self, requests: Sequence[tuple[np.ndarray | None, Sequence[str]]]) -> list[Result]:
        results: list[Result | None] = [None] * len(requests)
        texts: list[str] = []
        spans: list[tuple[int, int, int]] = []  # (request index, start row, end row) in texts
        for i, (batch, _) in enumerate(requests):
            try:
                decoded = decode_texts(batch, self._max_text_bytes)
            except BadRequestError as exc:
                results[i] = ("INVALID_ARG", one_line(f"model {self.name}: {exc}"))
                continue
            spans.append((i, len(texts), len(texts) + len(decoded)))
            texts.extend(decoded)
        if texts:
            try:
                probs = self._predict(texts)
            except Exception as exc:  # the model broke, not the request: 500, the server keeps running
                LOGGER.exception("model %s failed on a batch of %d texts", self.name, len(texts))
                message = one_line(f"model {self.name} failed: {type(exc).__name__}: {exc}")
                for i, _, _ in spans:
                    results[i] = ("INTERNAL", message)
            else:
                for i, start, end in spans:
                    results[i] = self._outputs_for(requests[i][1], probs[start:end])
        return results  # type: ignore[return-value]

    def _predict(self, texts: list[str]) -> np.ndarray:
        """(N, L) float32 probabilities, in chunks of the predictor's max batch size."""
        parts = [np.asarray(self._predictor.predict(texts[start:start + self._chunk]), dtype=np.float32)
                 for start in range(0, len(texts), self._chunk)]
        probs = np.concatenate(parts, axis=0)
        if probs.shape != (len(texts), len(self._labels)):
            raise RuntimeError(f"predict returned shape {probs.shape}, expected {(len(texts), len(self._labels))}")
        return probs

    def _outputs_for(self, requested: Sequence[str], probs: np.ndarray) -> dict[str, np.ndarray]:
        wanted = [n for n in (requested or self._outputs) if n in self._outputs]
        out: dict[str, np.ndarray] = {}
        if OUTPUT_PROBABILITIES in wanted:
            out[OUTPUT_PROBABILITIES] = np.ascontiguousarray(probs)  # (n, L)
        if OUTPUT_LABELS in wanted:
            joined = labels_over_threshold(probs, self._labels, self._thresholds)
            out[OUTPUT_LABELS] = np.array([[s.encode()] for s in joined], dtype=np.object_)  # (n, 1)
        return out


def save_predictor(model_dir: Path, predictor: Any) -> str:
    """Write how to rebuild ``predictor`` in a stub process; returns the file name written.

    A predictor made by :func:`export.runtime.load` carries ``source`` (its load arguments): the
    stub loads the artifact again. Any other predictor is pickled.

    Raises:
        TypeError: the predictor has no ``source`` and cannot be pickled, or its class lives in
            ``__main__`` (a script), which the server's processes cannot import.
    """
    source = getattr(predictor, "source", None)
    if isinstance(source, dict):
        (model_dir / SPEC_FILE).write_text(json.dumps(source, indent=2))
        return SPEC_FILE
    if type(predictor).__module__ == "__main__":
        raise TypeError(f"{type(predictor).__name__} is defined in the script being run (__main__), which the "
                        f"server's processes cannot import; move it into a module")
    try:
        data = pickle.dumps(predictor, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise TypeError(f"{type(predictor).__name__} cannot be pickled ({type(exc).__name__}: {exc})") from None
    (model_dir / PICKLE_FILE).write_bytes(data)
    return PICKLE_FILE


def load_predictor(model_dir: Path) -> Any:
    """The predictor :func:`save_predictor` wrote into ``model_dir``."""
    spec = model_dir / SPEC_FILE
    if spec.is_file():
        from export.runtime import load

        return load(**json.loads(spec.read_text()))
    with open(model_dir / PICKLE_FILE, "rb") as f:
        return pickle.load(f)  # noqa: S301 - written by this server a moment ago, in its own work directory


class TritonPythonModel:
    """Triton Python-backend model: one instance = one stub process = one predictor."""

    def initialize(self, args: dict[str, str]) -> None:
        """Load this instance's predictor (Triton calls this once per instance)."""
        import triton_python_backend_utils as pb_utils  # only inside Triton's stub

        self._pb = pb_utils
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        predictor = load_predictor(Path(args["model_repository"]))
        outputs = [output["name"] for output in config.get("output", [])]
        published = {key: json.loads(params[key]) for key in (PARAM_LABELS, PARAM_THRESHOLDS) if key in params}
        self._runner = BatchRunner(predictor, outputs, int(params.get(PARAM_MAX_TEXT_BYTES, 65536)),
                                   labels=published.get(PARAM_LABELS), thresholds=published.get(PARAM_THRESHOLDS))
        LOGGER.info("model %s instance %s ready (pid %d)", args.get("model_name"), args.get("model_instance_name"),
                    os.getpid())

    def execute(self, requests: list[Any]) -> list[Any]:
        """One dynamic batch: one response (outputs or a one-line error) per request."""
        pb = self._pb
        batch = []
        for request in requests:
            tensor = pb.get_input_tensor_by_name(request, INPUT_TEXT)
            batch.append((None if tensor is None else tensor.as_numpy(), list(request.requested_output_names())))
        responses = []
        for result in self._runner.run(batch):
            if isinstance(result, tuple):
                code, message = result
                error = pb.TritonError(message, getattr(pb.TritonError, code, pb.TritonError.INTERNAL))
                responses.append(pb.InferenceResponse(error=error))
            else:
                responses.append(pb.InferenceResponse(
                    output_tensors=[pb.Tensor(name, array) for name, array in result.items()]))
        return responses

    def finalize(self) -> None:
        """Drop the predictor (Triton calls this when the model unloads)."""
        self._runner = None  # type: ignore[assignment]
