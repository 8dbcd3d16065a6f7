"""Open Inference Protocol (V2) tensors on the wire: JSON, and the binary extension.

The binary tensor extension (as Triton defines it) sends a JSON header followed by
raw tensor bytes; the header's length travels in `Inference-Header-Content-Length`.
It spares both sides the cost of printing and parsing floats, so Sluice uses it
between the gateway and its own workers, and accepts it from clients.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

HEADER_LENGTH = "Inference-Header-Content-Length"

DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_NAMES = {dtype: name for name, dtype in DTYPES.items() if name != "BYTES"}

# Which numpy kinds of parsed JSON data each datatype accepts: no silent truncation of
# 1.5 into an INT32, no strings into a float, no true/false as numbers (an all-boolean
# list parses as kind "b"; mixed with numbers, numpy has already made them 1 and 0, which
# would take a walk over every value to catch).
_ACCEPTS = {"b": "b", "u": "iu", "i": "iu", "f": "iuf"}


class ProtocolError(ValueError):
    """The request does not follow the protocol; the client gets a 400."""


def datatype_of(array: np.ndarray) -> str:
    if array.dtype.kind in "OSU":
        return "BYTES"
    try:
        return _NAMES[array.dtype]
    except KeyError:
        raise ProtocolError(f"numpy dtype {array.dtype} has no protocol datatype") from None


@dataclass(slots=True)
class InferRequest:
    """A decoded infer request: named tensors plus what the client asked back."""

    inputs: dict[str, np.ndarray]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: list[str] | None = None  # None: all outputs
    binary_outputs: set[str] = field(default_factory=set)
    binary_default: bool = False


def _parameters(doc: dict, where: str) -> dict:
    """`doc`'s optional 'parameters': an object, or absent (null taken as absent)."""
    params = doc.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise ProtocolError(f"{where}: 'parameters' must be an object")
    return params


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value):
        raise ProtocolError(f"{where}: 'shape' must be a list of non-negative integers")
    return tuple(value)


def array_from_json(data: Any, datatype: str, where: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Convert parsed JSON data to an array of `datatype`, shaped `shape` (or as nested).

    Refuses rather than coerces: no silent truncation of 1.5 into an INT32, no
    strings in a float tensor, no out-of-range integers, no finite number that
    overflows a narrow float type.
    """
    if datatype == "BYTES":
        parsed = np.asarray(data, dtype=object)
        if not all(isinstance(v, str | bytes) for v in parsed.reshape(-1)):
            raise ProtocolError(f"{where}: BYTES data must be strings")
    else:
        try:
            parsed = np.asarray(data)
        except (ValueError, OverflowError):
            raise ProtocolError(f"{where}: 'data' is ragged or not numeric") from None
    count = parsed.size if shape is None else math.prod(shape)
    if parsed.size != count:
        raise ProtocolError(f"{where}: shape {list(shape)} needs {count} values, 'data' has {parsed.size}")
    target = DTYPES[datatype]
    if datatype != "BYTES" and count:
        if target == np.uint64 and parsed.dtype.kind in "fO":
            # numpy reads a mix of ints below and from 2**63 as float64 (or objects).
            parsed = _exact_uint64(data, where)
        if parsed.dtype.kind not in _ACCEPTS[target.kind]:
            raise ProtocolError(f"{where}: 'data' does not hold {datatype} values")
        if target.kind in "iu" and parsed.dtype.kind in "iu":
            info = np.iinfo(target)
            if parsed.min() < info.min or parsed.max() > info.max:
                raise ProtocolError(f"{where}: values out of range for {datatype}")
        if target.kind == "f" and target.itemsize < parsed.dtype.itemsize:
            limit = float(np.finfo(target).max)
            if not -limit <= parsed.min() <= parsed.max() <= limit:  # also false with NaN or inf present
                _check_narrowing(parsed, target, f"{where}: values out of range for {datatype}")
    array = parsed.astype(target, copy=False)
    return array if shape is None else _reshaped(array, shape, where)


def _reshaped(array: np.ndarray, shape: tuple[int, ...], where: str) -> np.ndarray:
    """`array.reshape(shape)`, refusing what numpy cannot hold: more dimensions than it
    allows, or dimensions whose product overflows even when another one is 0."""
    try:
        return array.reshape(shape)
    except ValueError as exc:
        raise ProtocolError(f"{where}: shape {list(shape)} cannot be held ({exc})") from None


def _check_narrowing(parsed: np.ndarray, target: np.dtype, message: str) -> None:
    """The slow path: refuse a finite value that becomes infinite in `target`."""
    with np.errstate(over="ignore"):
        narrowed = parsed.astype(target)
    if np.count_nonzero(np.isfinite(narrowed)) != np.count_nonzero(np.isfinite(parsed)):
        raise ProtocolError(message)


def _exact_uint64(data: Any, where: str) -> np.ndarray:
    flat = np.asarray(data, dtype=object).reshape(-1)
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**64 for v in flat):
        raise ProtocolError(f"{where}: 'data' does not hold UINT64 values")
    return np.asarray(data, dtype=np.uint64)


def _from_binary(raw: memoryview, datatype: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    count = math.prod(shape)
    if datatype == "BYTES":
        items, offset = [], 0
        while offset < len(raw):
            if offset + 4 > len(raw):
                raise ProtocolError(f"{where}: truncated BYTES element")
            (length,) = struct.unpack_from("<I", raw, offset)
            offset += 4
            if offset + length > len(raw):
                raise ProtocolError(f"{where}: truncated BYTES element")
            items.append(bytes(raw[offset : offset + length]))
            offset += length
        if len(items) != count:
            raise ProtocolError(f"{where}: shape {list(shape)} needs {count} elements, got {len(items)}")
        return _reshaped(np.array(items, dtype=object), shape, where)
    dtype = DTYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise ProtocolError(f"{where}: binary_data_size {len(raw)} does not match shape {list(shape)} of {datatype}")
    return _reshaped(np.frombuffer(raw, dtype=dtype), shape, where)


def _tensor(spec: Any, binary: memoryview, offset: int, where: str, kind: str = "input") -> tuple[str, np.ndarray, int]:
    if not isinstance(spec, dict):
        raise ProtocolError(f"{where} must be an object")
    name, datatype = spec.get("name"), spec.get("datatype")
    if not isinstance(name, str) or not name:
        raise ProtocolError(f"{where}: 'name' must be a non-empty string")
    where = f"{kind} {name!r}"
    if not isinstance(datatype, str) or datatype not in DTYPES:
        raise ProtocolError(f"{where}: unknown datatype {datatype!r}")
    shape = _shape(spec.get("shape"), where)
    params = _parameters(spec, where)
    size = params.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
            raise ProtocolError(f"{where}: binary_data_size {size!r} runs past the end of the body")
        return name, _from_binary(binary[offset : offset + size], datatype, shape, where), offset + size
    if "data" not in spec:
        raise ProtocolError(f"{where}: needs 'data' or a binary_data_size parameter")
    return name, array_from_json(spec["data"], datatype, where, shape), offset


def decode_request(body: bytes, header_length: int | None = None) -> InferRequest:
    """Parse an infer request body (JSON, or JSON header + binary tensors)."""
    head = _head(body, header_length)
    doc = _loads(head, "")
    if not isinstance(doc, dict):
        raise ProtocolError("the request body must be a JSON object")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ProtocolError("'inputs' must be a non-empty list")
    binary = memoryview(body)[len(head) :]
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for i, spec in enumerate(raw_inputs):
        name, array, offset = _tensor(spec, binary, offset, f"inputs[{i}]")
        if name in inputs:
            raise ProtocolError(f"input {name!r} is given twice")
        inputs[name] = array
    if offset != len(binary):
        raise ProtocolError("the body holds binary data beyond what the inputs declare")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError("'id' must be a string")
    parameters = _parameters(doc, "the request")
    request = InferRequest(inputs=inputs, id=request_id, parameters=parameters)
    request.binary_default = bool(parameters.get("binary_data_output", False))
    raw_outputs = doc.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in raw_outputs):
            raise ProtocolError("'outputs' must be a list of objects with a 'name' (and object 'parameters')")
        request.outputs = [o["name"] for o in raw_outputs]
        for o in raw_outputs:
            if _parameters(o, f"output {o['name']!r}").get("binary_data", request.binary_default):
                request.binary_outputs.add(o["name"])
    return request


def _json_data(array: np.ndarray) -> Any:
    if array.dtype.kind in "OSU":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]
    if array.dtype == np.float16:
        array = array.astype(np.float32)
    return np.ascontiguousarray(array).reshape(-1)


def _binary_bytes(array: np.ndarray) -> bytes:
    if array.dtype.kind in "OSU":
        parts = []
        for v in array.reshape(-1):
            b = v if isinstance(v, bytes) else str(v).encode()
            parts.append(struct.pack("<I", len(b)) + b)
        return b"".join(parts)
    return np.ascontiguousarray(array).tobytes()


def encode_tensors(
    doc: dict[str, Any], key: str, tensors: Mapping[str, np.ndarray], binary: set[str] | bool
) -> tuple[bytes, int | None]:
    """Write `tensors` under doc[key]; return the body and the JSON header length
    (None when no tensor went binary, so the body is plain JSON)."""
    entries, blobs = [], []
    for name, array in tensors.items():
        entry: dict[str, Any] = {"name": name, "datatype": datatype_of(array), "shape": list(array.shape)}
        if binary is True or (binary and name in binary):
            blob = _binary_bytes(array)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _json_data(array)
        entries.append(entry)
    doc[key] = entries
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if b"null" in header and any(_non_finite(e.get("data")) for e in entries):
        # orjson writes NaN and Infinity as null; write the tokens Python and Triton read.
        for entry in entries:
            if isinstance(entry.get("data"), np.ndarray):
                entry["data"] = entry["data"].tolist()
        header = json.dumps(doc, separators=(",", ":")).encode()
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def _non_finite(data: Any) -> bool:
    return isinstance(data, np.ndarray) and data.dtype.kind == "f" and not np.isfinite(data).all()


def encode_response(
    model: str,
    version: str | None,
    outputs: Mapping[str, np.ndarray],
    request_id: str | None = None,
    binary: set[str] | bool = False,
) -> tuple[bytes, int | None]:
    doc: dict[str, Any] = {"model_name": model}
    if version is not None:
        doc["model_version"] = version
    if request_id is not None:
        doc["id"] = request_id
    return encode_tensors(doc, "outputs", outputs, binary)


def encode_request(
    inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None, binary: bool = False
) -> tuple[bytes, int | None]:
    """The body a client (the gateway, to a backend) sends; asks for binary outputs when `binary`."""
    doc: dict[str, Any] = {}
    if binary:
        doc["parameters"] = {"binary_data_output": True}
    if outputs is not None:
        doc["outputs"] = [{"name": n, "parameters": {"binary_data": binary}} for n in outputs]
    return encode_tensors(doc, "inputs", inputs, binary)


def decode_response(body: bytes, header_length: int | None = None) -> dict[str, np.ndarray]:
    """Parse an infer response's output tensors (as a backend returned them)."""
    head = _head(body, header_length)
    doc = _loads(head, "the backend sent ")
    outputs = doc.get("outputs") if isinstance(doc, dict) else None
    if not isinstance(outputs, list):
        raise ProtocolError("backend response has no 'outputs' list")
    binary = memoryview(body)[len(head) :]
    result, offset = {}, 0
    for i, spec in enumerate(outputs):
        name, array, offset = _tensor(spec, binary, offset, f"outputs[{i}]", "output")
        if name in result:
            raise ProtocolError(f"output {name!r} is given twice")
        result[name] = array
    if offset != len(binary):
        raise ProtocolError("the response holds binary data beyond what the outputs declare")
    return result


def _head(body: bytes, header_length: int | None) -> bytes:
    if header_length is None:
        return body
    if not 0 <= header_length <= len(body):
        raise ProtocolError(f"{HEADER_LENGTH} {header_length} is outside the body")
    return body[:header_length]


def _loads(text: bytes, who: str) -> Any:
    """orjson, falling back to the standard library for the NaN and Infinity tokens
    that JSON lacks but Python, Triton and others write for non-finite floats."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        try:
            return json.loads(text)
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deep
            raise ProtocolError(f"{who}malformed JSON: {exc}") from None
