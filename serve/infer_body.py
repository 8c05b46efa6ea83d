"""What the HTTP front accepts as a KServe v2 inference request body, checked before Triton parses it.

Triton's JSON parser recurses once per nesting level and dies (signal 11, the whole server) on a
body nested tens of thousands deep; it also answers HTTP 500 for bodies that are simply malformed.
:func:`check_infer_body` therefore runs first, in the front, and raises :class:`BadBodyError` (one
line, answered with HTTP 400) for:

- a JSON part nested deeper than :data:`MAX_DEPTH` (found by a non-recursive scan: no parser runs
  on it);
- a JSON part that is empty, not UTF-8, not JSON, truncated, or JSON that Triton's parser would
  refuse (a byte-order mark, NaN, Infinity);
- JSON of the wrong structure: not an object, ``inputs`` not a list of objects, a ``name`` or
  ``datatype`` that is not a string, a ``shape`` that is not a list of non-negative integers,
  ``parameters`` that are not an object of strings, numbers and booleans (those Triton reads, such
  as ``binary_data_size`` or ``priority``, of the type it reads), ``outputs`` not a list of
  objects with a string ``name``;
- ``data`` nested deeper than the declared shape, or holding values of another type than the
  declared datatype (numbers where BYTES are declared, strings where FP32 are, ...).

What only Triton or the model knows (the model's input names, shapes and batch limit, the element
count against the shape, empty or non-UTF-8 texts) stays theirs to answer, also with a 4xx. The
body itself is never re-serialized: the front forwards the bytes it received.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

# Deepest JSON nesting accepted. A KServe v2 request of a rank-2 tensor is 5 levels deep
# (request, inputs, input, data rows, row); Triton's parser is fine far beyond 64.
MAX_DEPTH = 64

# Parameters Triton reads with one type (anything else made it answer 500): "uint" is an integer
# in [0, 2**64).
_REQUEST_PARAMETERS = {"sequence_id": "uint|str", "sequence_start": "bool", "sequence_end": "bool",
                       "priority": "uint", "timeout": "uint", "binary_data_output": "bool"}
_INPUT_PARAMETERS = {"binary_data_size": "uint", "shared_memory_region": "str", "shared_memory_byte_size": "uint",
                     "shared_memory_offset": "uint"}
_OUTPUT_PARAMETERS = {"binary_data": "bool", "classification": "uint", "shared_memory_region": "str",
                      "shared_memory_byte_size": "uint", "shared_memory_offset": "uint"}
_PARAMETER_TYPES = {
    "uint": (lambda v: type(v) is int and 0 <= v < 2**64, "a non-negative integer"),
    "bool": (lambda v: isinstance(v, bool), "a boolean"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "uint|str": (lambda v: isinstance(v, str) or (type(v) is int and 0 <= v < 2**64), "a string or a non-negative integer"),
}

_INTEGER_TYPES = frozenset({"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"})
_FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64", "BF16"})

# A JSON string literal, matched without backtracking (possessive), so a long or unterminated one
# costs one pass.
_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)
_OPEN, _CLOSE = 1, 255  # a bracket's step as an int8: +1, -1
_BRACKET_STEPS = bytes(_OPEN if b in b"[{" else _CLOSE if b in b"]}" else 0 for b in range(256))
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


class BadBodyError(ValueError):
    """A request body the front answers with HTTP 400; the message is one line."""


def depth_over(data: bytes, limit: int = MAX_DEPTH) -> int | None:
    """How deep ``data`` nests brackets, if deeper than ``limit`` (else None); no recursion, no parser.

    Brackets inside JSON strings do not count. A body with at most ``limit`` brackets in all is
    answered from two counts; only one with more is scanned (string literals dropped by a regex,
    then the running sum of its +1/-1 bracket steps).
    """
    if data.count(b"[") + data.count(b"{") <= limit:
        return None
    brackets = _STRING.sub(b"", data).translate(_BRACKET_STEPS, _NOT_BRACKETS)
    depth = int(np.cumsum(np.frombuffer(brackets, dtype=np.int8), dtype=np.int64).max()) if brackets else 0
    return depth if depth > limit else None


def parse_json(data: bytes) -> Any:
    """``data`` as JSON, or :class:`BadBodyError`; the depth is checked before any parser runs."""
    if not data.strip():
        raise BadBodyError("the request body is empty; send a KServe v2 inference request (JSON)")
    if data.startswith(b"\xef\xbb\xbf"):
        raise BadBodyError("the request body starts with a byte-order mark; send plain UTF-8 JSON")
    depth = depth_over(data)
    if depth is not None:
        raise BadBodyError(f"the request JSON is nested {depth} levels deep; at most {MAX_DEPTH} are accepted")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadBodyError(f"the request body is not valid UTF-8 (bad byte at offset {exc.start}); "
                           f"encode texts as UTF-8") from None
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        truncated = exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string")
        where = "it ends too early" if truncated else f"at character {exc.pos}"
        raise BadBodyError(f"the request body is not valid JSON ({exc.msg}; {where}); "
                           f"send a KServe v2 inference request") from None


def _no_constant(name: str) -> None:
    raise BadBodyError(f"the request JSON holds {name}, which is not JSON; send finite numbers")


def check_infer_body(body: bytes, json_length: int | None = None) -> None:
    """Raise :class:`BadBodyError` unless ``body`` is a well-formed KServe v2 inference request.

    Args:
        body: the whole request body.
        json_length: the ``Inference-Header-Content-Length`` header (binary tensor extension): the
            JSON part is the first ``json_length`` bytes and the tensors' raw bytes follow; None
            when the whole body is JSON.
    """
    if json_length is not None and json_length > len(body):
        raise BadBodyError(f"Inference-Header-Content-Length is {json_length} but the body has only "
                           f"{len(body)} bytes; send the JSON length of the body")
    request = parse_json(body if json_length is None else body[:json_length])
    if not isinstance(request, dict):
        raise BadBodyError(f"the request JSON must be an object with an 'inputs' list, not {_kind(request)}")
    _check_string(request, "id", "the request")
    _check_parameters(request, "the request", _REQUEST_PARAMETERS)
    if "inputs" not in request:
        raise BadBodyError("the request has no 'inputs'; send a list of input tensors")
    inputs = request["inputs"]
    if not isinstance(inputs, list):
        raise BadBodyError(f"'inputs' must be a list of input tensors, not {_kind(inputs)}")
    for i, tensor in enumerate(inputs):
        _check_input(i, tensor)
    outputs = request.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list):
            raise BadBodyError(f"'outputs' must be a list of {{\"name\": ...}} objects, not {_kind(outputs)}")
        for i, output in enumerate(outputs):
            if not isinstance(output, dict) or not isinstance(output.get("name"), str):
                raise BadBodyError(f"output {i} must be an object with a string 'name', not {_kind(output)}")
            _check_parameters(output, f"output {output['name']!r}", _OUTPUT_PARAMETERS)


def _kind(value: Any) -> str:
    """A JSON type name for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return {str: "a string", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _check_string(obj: dict[str, Any], key: str, where: str) -> None:
    if key in obj and not isinstance(obj[key], str):
        raise BadBodyError(f"{where}: '{key}' must be a string, not {_kind(obj[key])}")


def _check_parameters(obj: dict[str, Any], where: str, typed: dict[str, str]) -> None:
    """``obj["parameters"]``, if present: an object of scalars, those Triton reads (``typed``) of their type."""
    params = obj.get("parameters")
    if params is None:
        return
    if not isinstance(params, dict):
        raise BadBodyError(f"{where}: 'parameters' must be an object, not {_kind(params)}")
    for key, value in params.items():
        if not isinstance(value, (str, int, float, bool)):
            raise BadBodyError(f"{where}: parameter {key!r} must be a string, number or boolean, not {_kind(value)}")
        if key in typed:
            ok, want = _PARAMETER_TYPES[typed[key]]
            if not ok(value):
                raise BadBodyError(f"{where}: parameter {key!r} must be {want}, got {json.dumps(value)[:40]}")


def _check_input(i: int, tensor: Any) -> None:
    if not isinstance(tensor, dict):
        raise BadBodyError(f"input {i} must be an object (name, datatype, shape, data), not {_kind(tensor)}")
    for key in ("name", "datatype"):
        if key not in tensor:
            raise BadBodyError(f"input {i} has no '{key}'")
        _check_string(tensor, key, f"input {i}")
    name, datatype = tensor["name"], tensor["datatype"]
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and 0 <= d < 2**63 for d in shape):
        raise BadBodyError(f"input {name!r}: 'shape' must be a list of non-negative integers, got "
                           f"{json.dumps(shape)[:80]}")
    _check_parameters(tensor, f"input {name!r}", _INPUT_PARAMETERS)
    if "data" in tensor:
        _check_data(name, datatype, tensor["data"], max(1, len(shape)))


def _check_data(name: str, datatype: str, data: Any, max_depth: int) -> None:
    """``data`` is a list nested at most ``max_depth`` deep whose leaves have ``datatype``'s JSON type."""
    if not isinstance(data, list):
        raise BadBodyError(f"input {name!r}: 'data' must be a list, not {_kind(data)}")
    if datatype == "BYTES":
        ok, want = (lambda v: isinstance(v, str)), "strings"
    elif datatype == "BOOL":
        ok, want = (lambda v: isinstance(v, bool)), "booleans"
    elif datatype in _INTEGER_TYPES:
        ok, want = (lambda v: type(v) is int), "integers"
    elif datatype in _FLOAT_TYPES:
        ok, want = (lambda v: type(v) in (int, float)), "numbers"
    else:  # an unknown datatype: Triton names it in its own 400
        ok, want = (lambda v: not isinstance(v, (list, dict))), "scalars"
    stack = [(data, 1)]
    while stack:
        items, depth = stack.pop()
        for item in items:
            if isinstance(item, list):
                if depth >= max_depth:
                    raise BadBodyError(f"input {name!r}: 'data' is nested deeper than its shape's "
                                       f"{max_depth} dimensions")
                stack.append((item, depth + 1))
            elif not ok(item):
                raise BadBodyError(f"input {name!r} is {datatype}, but its data holds {_kind(item)}; "
                                   f"send {want}")
