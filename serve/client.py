"""A thin client for a `serve start` endpoint: KServe v2 over HTTP (:class:`HttpTransport`), or gRPC (``tritonclient``).

::

    with ServeClient("http://127.0.0.1:8000") as client:   # or "grpc://127.0.0.1:8001"
        client.ready()                 # server and model ready?
        client.labels()                # label names, from the model config parameters
        client.predict(["you idiot"])  # (N, L) float32 probabilities
        client.predict_labels(["..."]) # labels at or over threshold, per text

Failures raise :class:`ClientError` (a UserError: one line, with the HTTP status or gRPC code in
``status``). A client holds one connection and is not meant to be shared between threads;
close it (or use ``with``) so the server can shut down without waiting for the connection.

Over HTTP, texts go and probabilities come back as KServe binary tensor data (``binary=False``:
JSON), on one keep-alive connection (:mod:`serve.http_connection`). tritonclient's HTTP client,
which this used before, cost ~2.5x the CPU per one-text request (~280-350 vs ~105-140 µs, sequential
requests to a model that does nothing; a gevent hub per thread, request and response objects): on a
box that runs client and server, CPU the model does not get (:mod:`bench.serve_speed`).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import numpy as np

from compress.errors import UserError, one_line
from serve.config import (
    DEFAULT_GRPC_PORT,
    DEFAULT_HTTP_PORT,
    INPUT_TEXT,
    LABEL_SEPARATOR,
    OUTPUT_LABELS,
    OUTPUT_PROBABILITIES,
    PARAM_LABELS,
    PARAM_THRESHOLDS,
)
from serve.http_connection import HttpConnection, HttpProtocolError, Response

PROTOCOLS = ("http", "grpc")


class ClientError(UserError):
    """A request to the server failed.

    Attributes:
        status: HTTP status (``"400"``) or gRPC code (``"StatusCode.INVALID_ARGUMENT"``), or None
            when the server could not be reached.
    """

    def __init__(self, message: str, status: str | None = None) -> None:
        super().__init__(one_line(message))
        self.status = status


def parse_url(url: str, protocol: str | None = None) -> tuple[str, str]:
    """Split ``[http|grpc://]host[:port]`` into (protocol, ``host:port``).

    Args:
        url: server address; the scheme, if any, picks the protocol.
        protocol: ``http`` or ``grpc`` when the URL has no scheme (default ``http``).
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = protocol or "http", url
    scheme = scheme.lower()
    if scheme not in PROTOCOLS:
        raise ClientError(f"unsupported URL scheme {scheme!r} in {url!r}; use http://HOST:PORT or grpc://HOST:PORT")
    if protocol and protocol != scheme:
        raise ClientError(f"URL {url!r} says {scheme} but protocol={protocol!r}; make them agree")
    address = rest.rstrip("/")
    if not address or "/" in address:
        raise ClientError(f"bad server URL {url!r}; expected {scheme}://HOST:PORT")
    host_part = address.rsplit("]", 1)[-1]  # an IPv6 literal holds colons of its own
    if ":" not in host_part:
        address = f"{address}:{DEFAULT_HTTP_PORT if scheme == 'http' else DEFAULT_GRPC_PORT}"
    port = address.rsplit(":", 1)[1]
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ClientError(f"bad port {port!r} in {url!r}; use a port number in 1..65535")
    return scheme, address


def encode_bytes_tensor(items: Sequence[bytes]) -> bytes:
    """KServe binary form of a BYTES tensor: each element as a 4-byte little-endian length, then its bytes."""
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def decode_bytes_tensor(data: bytes) -> list[bytes]:
    """The elements of a binary BYTES tensor (see :func:`encode_bytes_tensor`)."""
    items, offset = [], 0
    while offset < len(data):
        (size,) = struct.unpack_from("<I", data, offset)
        items.append(data[offset + 4:offset + 4 + size])
        offset += 4 + size
    return items


_DTYPES = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16, "INT64": np.int64, "INT32": np.int32,
           "INT8": np.int8, "UINT8": np.uint8, "BOOL": np.bool_}


def _output_array(output: dict[str, Any], raw: bytes | None) -> np.ndarray:
    """One output tensor of an infer response: from its binary data, or from its JSON ``data``."""
    shape = [int(d) for d in output.get("shape", [])]
    datatype = output.get("datatype")
    if raw is None:
        data = output.get("data", [])
        if datatype == "BYTES":
            return np.array([str(x).encode("utf-8") for x in data], dtype=np.object_).reshape(shape)
        return np.asarray(data, dtype=_DTYPES.get(datatype, np.float32)).reshape(shape)
    if datatype == "BYTES":
        return np.array(decode_bytes_tensor(raw), dtype=np.object_).reshape(shape)
    if datatype not in _DTYPES:
        raise ClientError(f"the server sent output {output.get('name')!r} as {datatype}, which this client cannot "
                          f"read")
    return np.frombuffer(raw, dtype=_DTYPES[datatype]).reshape(shape)


class HttpTransport:
    """What :class:`ServeClient` asks of a server over HTTP/1.1, on one keep-alive connection.

    Args:
        address: ``host:port`` (an IPv6 host in brackets).
        timeout_s: connection and read timeout.
        binary: send and receive tensors as KServe binary data (else as JSON).
    """

    def __init__(self, address: str, timeout_s: float, binary: bool = True) -> None:
        host, port = address.rsplit(":", 1)
        self._conn = HttpConnection(host, int(port), timeout_s)
        self.binary = binary

    def close(self) -> None:
        self._conn.close()

    def _request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Response:
        """Send one request and return its answer; once more on a fresh connection when a kept-alive one
        turns out closed before any answer (the server closed it while it was idle)."""
        reused = self._conn.reused
        try:
            return self._conn.request(method, path, body, headers)
        except (HttpProtocolError, BrokenPipeError, ConnectionResetError) as exc:
            if not reused or (isinstance(exc, HttpProtocolError) and "before answering" not in str(exc)):
                raise
        return self._conn.request(method, path, body, headers)

    def _json(self, what: str, method: str, path: str, body: bytes | None = None,
              headers: dict[str, str] | None = None) -> dict[str, Any]:
        """The JSON answer of a request that must succeed (ClientError with the status otherwise)."""
        response = self._request(method, path, body or b"", headers)
        data = response.body
        if response.status != 200:
            raise ClientError(f"{what} failed ({response.status}): {_error_text(data)}", str(response.status))
        try:
            return json.loads(data)
        except ValueError:
            raise ClientError(f"{what} failed: the server's answer is not JSON ({data[:60]!r})") from None

    def _ok(self, path: str) -> bool:
        return self._request("GET", path).status == 200

    def is_server_live(self) -> bool:
        return self._ok("/v2/health/live")

    def is_server_ready(self) -> bool:
        return self._ok("/v2/health/ready")

    def is_model_ready(self, model: str) -> bool:
        return self._ok(f"/v2/models/{quote(model, safe='')}/ready")

    def get_inference_statistics(self, model: str = "") -> dict[str, Any]:
        path = f"/v2/models/{quote(model, safe='')}/stats" if model else "/v2/models/stats"
        return self._json("statistics", "GET", path)

    def get_model_config(self, model: str) -> dict[str, Any]:
        return self._json("model config", "GET", f"/v2/models/{quote(model, safe='')}/config")

    def infer_texts(self, model: str, input_name: str, texts: Sequence[bytes], output: str) -> np.ndarray:
        """One infer request: ``texts`` as a BYTES tensor of shape (n, 1); returns the ``output`` tensor."""
        shape = [len(texts), 1]
        if self.binary:
            tensor = encode_bytes_tensor(texts)
            request = {"inputs": [{"name": input_name, "datatype": "BYTES", "shape": shape,
                                   "parameters": {"binary_data_size": len(tensor)}}],
                       "outputs": [{"name": output, "parameters": {"binary_data": True}}]}
            head = json.dumps(request, separators=(",", ":")).encode()
            body, headers = head + tensor, {"Inference-Header-Content-Length": str(len(head)),
                                            "Content-Type": "application/octet-stream"}
        else:
            request = {"inputs": [{"name": input_name, "datatype": "BYTES", "shape": shape,
                                   "data": [t.decode("utf-8") for t in texts]}],
                       "outputs": [{"name": output, "parameters": {"binary_data": False}}]}
            body, headers = json.dumps(request).encode(), {"Content-Type": "application/json"}
        response = self._request("POST", f"/v2/models/{quote(model, safe='')}/infer", body, headers)
        data = response.body
        if response.status != 200:
            raise ClientError(f"inference failed ({response.status}): {_error_text(data)}", str(response.status))
        try:
            return _read_output(data, response.headers.get("inference-header-content-length"), output)
        except (ValueError, TypeError, KeyError, AttributeError, struct.error) as exc:
            raise ClientError(f"inference failed: the answer of model {model} could not be read "
                              f"({type(exc).__name__}: {exc})") from None


def _read_output(data: bytes, json_length: str | None, output: str) -> np.ndarray:
    """The ``output`` tensor of an infer answer: its JSON part (the first ``json_length`` bytes, or all), then
    the binary data of the outputs that have ``binary_data_size``, in their order."""
    split = int(json_length) if json_length is not None else len(data)
    answer = json.loads(data[:split])
    offset = split
    for tensor_out in answer.get("outputs", []):
        size = (tensor_out.get("parameters") or {}).get("binary_data_size")
        raw = None if size is None else data[offset:offset + int(size)]
        offset += int(size or 0)
        if tensor_out.get("name") == output:
            return _output_array(tensor_out, raw)
    raise ValueError(f"it has no {output} output")


def _error_text(data: bytes) -> str:
    """The message of a KServe error answer (``{"error": "..."}``), else the answer itself (shortened)."""
    try:
        return str(json.loads(data)["error"])
    except (ValueError, KeyError, TypeError):
        return data[:200].decode("utf-8", "replace")


class ServeClient:
    """Client for one model of a `serve start` server.

    Args:
        url: ``http://host:port`` (default) or ``grpc://host:port``.
        model: model name; None picks the only model the server has.
        protocol: ``http`` or ``grpc`` for a URL without a scheme.
        timeout_s: connection and request timeout.
        binary: over HTTP, tensors as KServe binary data (default) or, False, as JSON.
    """

    def __init__(self, url: str = f"http://127.0.0.1:{DEFAULT_HTTP_PORT}", model: str | None = None,
                 protocol: str | None = None, timeout_s: float = 30.0, binary: bool = True) -> None:
        self.protocol, self.address = parse_url(url, protocol)
        self.url = f"{self.protocol}://{self.address}"
        self.timeout_s = float(timeout_s)
        self._model = model
        self._config: dict[str, Any] | None = None
        if self.protocol == "http":
            self._client: Any = HttpTransport(self.address, self.timeout_s, binary)
        else:
            import tritonclient.grpc as tc

            self._client = tc.InferenceServerClient(self.address)
            self._tc = tc

    # -- plumbing -----------------------------------------------------------------------------
    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one tritonclient call; every failure becomes a one-line ClientError."""
        from tritonclient.utils import InferenceServerException

        if self.protocol == "grpc":  # the HTTP transport got its timeout at construction
            kwargs.setdefault("client_timeout", self.timeout_s)
        try:
            return fn(*args, **kwargs)
        except TimeoutError:
            raise ClientError(f"{what} at {self.url} timed out after {self.timeout_s:g} s") from None
        except InferenceServerException as exc:
            status = exc.status()
            if status == "StatusCode.DEADLINE_EXCEEDED":
                raise ClientError(f"{what} at {self.url} timed out after {self.timeout_s:g} s", status) from None
            if status in (None, "StatusCode.UNAVAILABLE") and "connect" in str(exc.message()).lower():
                raise ClientError(f"cannot reach {self.url} ({exc.message()}); is `serve start` running "
                                  f"there?", status) from None
            raise ClientError(f"{what} failed ({status}): {exc.message()}", status) from None
        except OSError as exc:  # connection refused, reset, closed mid-answer (HTTP)
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise ClientError(f"cannot reach {self.url} ({reason}); is `serve start` running there?") from None

    def close(self) -> None:
        """Close the connection."""
        self._client.close()

    def __enter__(self) -> ServeClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- server -------------------------------------------------------------------------------
    def live(self) -> bool:
        """True if the server answers ``/v2/health/live``."""
        try:
            return bool(self._call("live", self._client.is_server_live))
        except ClientError:
            return False

    def ready(self) -> bool:
        """True if the server is ready (all its models loaded) and, when a model is named, so is it."""
        try:
            if not self._call("ready", self._client.is_server_ready):
                return False
            return self._model is None or bool(self._call("model ready", self._client.is_model_ready, self._model))
        except ClientError:
            return False

    def models(self) -> list[str]:
        """Names of the models the server has loaded (from the open statistics endpoint)."""
        kwargs = {"as_json": True} if self.protocol == "grpc" else {}
        stats = self._call("statistics", self._client.get_inference_statistics, "", **kwargs)
        return sorted({entry["name"] for entry in stats.get("model_stats", [])})

    def statistics(self) -> dict[str, Any]:
        """Triton's inference statistics for this model (``model_stats[0]``)."""
        kwargs = {"as_json": True} if self.protocol == "grpc" else {}
        stats = self._call("statistics", self._client.get_inference_statistics, self.model, **kwargs)
        return stats["model_stats"][0]

    # -- model --------------------------------------------------------------------------------
    @property
    def model(self) -> str:
        """The model name (asked of the server once when not given)."""
        if self._model is None:
            names = self.models()
            if len(names) != 1:
                raise ClientError(f"{self.url} serves {len(names)} models ({', '.join(names) or 'none'}); "
                                  f"name one (--model NAME)")
            self._model = names[0]
        return self._model

    def config(self) -> dict[str, Any]:
        """The model's Triton config (JSON form), cached."""
        if self._config is None:
            if self.protocol == "grpc":
                self._config = self._call("model config", self._client.get_model_config, self.model,
                                          as_json=True)["config"]
            else:
                self._config = self._call("model config", self._client.get_model_config, self.model)
        return self._config

    def _parameter(self, key: str) -> Any:
        params = self.config().get("parameters", {})
        if key not in params:
            raise ClientError(f"model {self.model} at {self.url} has no {key!r} parameter; "
                              f"is it served by `serve start`?")
        return json.loads(params[key]["string_value"])

    def labels(self) -> list[str]:
        """Label names, one per probability column."""
        return [str(x) for x in self._parameter(PARAM_LABELS)]

    def thresholds(self) -> np.ndarray:
        """(L,) float32 decision thresholds."""
        return np.asarray(self._parameter(PARAM_THRESHOLDS), dtype=np.float32)

    def outputs(self) -> list[str]:
        """Output names the model exposes."""
        return [o["name"] for o in self.config().get("output", [])]

    @property
    def max_batch_size(self) -> int:
        """Largest batch one request may carry."""
        return int(self.config().get("max_batch_size", 0)) or 1

    # -- inference ----------------------------------------------------------------------------
    def _infer(self, texts: Sequence[str], output: str) -> np.ndarray:
        """Send texts in requests of at most ``max_batch_size``; concatenate ``output`` rows."""
        if output not in self.outputs():
            hint = "; use predict_labels (the server runs with --labels-only)" if output == OUTPUT_PROBABILITIES else ""
            raise ClientError(f"model {self.model} at {self.url} has no {output} output{hint}")
        if isinstance(texts, (str, bytes)):
            raise ClientError("texts must be a list of strings, not one string")
        parts = []
        step = self.max_batch_size
        for start in range(0, len(texts), step):
            chunk = [t.encode("utf-8") for t in texts[start:start + step]]
            if self.protocol == "http":
                parts.append(self._call("inference", self._client.infer_texts, self.model, INPUT_TEXT, chunk, output))
                continue
            data = np.array([[t] for t in chunk], dtype=np.object_)  # (n, 1)
            tensor = self._tc.InferInput(INPUT_TEXT, list(data.shape), "BYTES")
            tensor.set_data_from_numpy(data)
            result = self._call("inference", self._client.infer, self.model, [tensor],
                                outputs=[self._tc.InferRequestedOutput(output)])
            parts.append(result.as_numpy(output))
        return np.concatenate(parts, axis=0) if parts else np.zeros((0,), dtype=np.float32)

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """(N, L) float32 probabilities for N texts."""
        if len(texts) == 0:
            return np.zeros((0, len(self.labels())), dtype=np.float32)
        return self._infer(texts, OUTPUT_PROBABILITIES).astype(np.float32, copy=False)

    def predict_labels(self, texts: Sequence[str]) -> list[list[str]]:
        """For each text, the labels whose probability is at or over the label's threshold."""
        if len(texts) == 0:
            return []
        rows = self._infer(texts, OUTPUT_LABELS).reshape(-1)
        decoded = [(r.decode("utf-8") if isinstance(r, bytes) else str(r)) for r in rows]
        return [s.split(LABEL_SEPARATOR) if s else [] for s in decoded]
