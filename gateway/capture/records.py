"""The capture record format: one JSON object per line, tensors exact and compact.

A record is one answered request:

    {"request_id": "...", "model": "lin", "version": "1", "timestamp": 1765080000.123,
     "latency_ms": 1.92, "status": 200, "replica": "host-1234", "rows": 1,
     "inputs": {"x": {"datatype": "FP32", "shape": [1, 4], "b64": "..."}},
     "outputs": {"y": {...}}, "error": "..."}

`timestamp` is when the answer was given (Unix seconds; the request arrived `latency_ms`
before). Numeric tensors are their raw little-endian bytes in C order, base64: exact
(a float is the very bits the client got) and about a third of a JSON number list. BYTES
tensors are a `data` list of strings. `rows` is the request's batch axis (null for a model
that does not batch). `error` is there for an error answer; `inputs`/`outputs` hold what
`keep` asked for and the request had (a request refused before its body was read has none).

Reading turns records back into arrays named after the tensors, rows along the first axis
(`sluice capture read`): what `sluice reference` and model training read.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from backends.oip import DTYPES, datatype_of

log = logging.getLogger("sluice.capture")


def encode_tensor(array: np.ndarray) -> dict[str, Any]:
    datatype = datatype_of(array)
    entry: dict[str, Any] = {"datatype": datatype, "shape": list(array.shape)}
    if datatype == "BYTES":
        entry["data"] = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]
    else:
        little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        entry["b64"] = base64.b64encode(little.tobytes()).decode("ascii")
    return entry


def decode_tensor(entry: dict[str, Any]) -> np.ndarray:
    shape = tuple(entry["shape"])
    if entry["datatype"] == "BYTES":
        return np.array(entry["data"], dtype=object).reshape(shape)
    dtype = DTYPES[entry["datatype"]].newbyteorder("<")
    return np.frombuffer(base64.b64decode(entry["b64"]), dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def record_line(meta: dict[str, Any], inputs: dict[str, np.ndarray] | None, outputs: dict[str, np.ndarray] | None,
                error_body: bytes | None) -> bytes:  # fmt: skip
    """One record as a JSON line. `error_body`: the error answer's body (`{"error": ...}`)."""
    doc = dict(meta)
    if inputs:
        doc["inputs"] = {name: encode_tensor(a) for name, a in inputs.items()}
    if outputs:
        doc["outputs"] = {name: encode_tensor(a) for name, a in outputs.items()}
    if error_body:
        try:
            doc["error"] = orjson.loads(error_body).get("error")
        except (orjson.JSONDecodeError, AttributeError):
            doc["error"] = error_body.decode("utf-8", "replace")[:1000]
    return orjson.dumps(doc) + b"\n"


def parse_lines(data: bytes, where: str) -> Iterator[dict[str, Any]]:
    """The records in a file's bytes. A last line without its newline is one still being
    written (a live file): left out, as a line that does not parse is, with a warning."""
    lines = data.split(b"\n")
    if lines and lines[-1]:
        log.warning("left out an incomplete last line", extra={"file": where})
    for number, line in enumerate(lines[:-1], 1):
        if not line.strip():
            continue
        try:
            yield orjson.loads(line)
        except orjson.JSONDecodeError:
            log.warning("left out a line that is not JSON", extra={"file": where, "line": number})


def read_source(source: str) -> Iterator[dict[str, Any]]:
    """Every record of a file, of the `*.jsonl` files under a directory, or of the objects
    under an `s3://BUCKET/PREFIX` (credentials and endpoint: boto3's usual chain)."""
    if source.startswith("s3://"):
        yield from _read_s3(source)
        return
    path = Path(source.removeprefix("file://"))
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.jsonl") if p.is_file())
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"{source}: no such file or directory")
    for file in files:
        yield from parse_lines(file.read_bytes(), str(file))


def _read_s3(source: str) -> Iterator[dict[str, Any]]:
    import boto3

    bucket, _, prefix = source.removeprefix("s3://").partition("/")
    s3 = boto3.client("s3")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in sorted(page.get("Contents", []), key=lambda i: i["Key"]):
            if item["Key"].endswith(".jsonl"):
                body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                yield from parse_lines(body, f"s3://{bucket}/{item['Key']}")


def to_arrays(records: Iterable[dict[str, Any]]) -> tuple[dict[str, np.ndarray], int]:
    """Arrays named after the tensors, the records' rows one after another along the
    first axis (a model that does not batch: one row per record); and the record count.
    An output named like an input is `output:<name>`. Tensors whose shapes disagree
    across records are an error naming the tensor."""
    parts: dict[str, list[np.ndarray]] = {}
    count = 0
    for record in records:
        count += 1
        inputs = record.get("inputs") or {}
        named = [(name, entry) for name, entry in inputs.items()]
        named += [(f"output:{name}" if name in inputs else name, entry) for name, entry in (record.get("outputs") or {}).items()]
        for name, entry in named:
            array = decode_tensor(entry)
            parts.setdefault(name, []).append(array if record.get("rows") is not None else array[None, ...])
    arrays = {}
    for name, pieces in parts.items():
        shapes = {p.shape[1:] for p in pieces}
        if len(shapes) > 1:
            raise ValueError(f"tensor {name!r} has rows of different shapes across records: {sorted(shapes)}")
        arrays[name] = np.concatenate(pieces)
    return arrays, count
