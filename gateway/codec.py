"""Client-facing request checks, the error envelope, and the KServe V1 dialect.

Everything here runs before a request is queued: a request that fails a check
gets a 400 and never reaches a batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
from aiohttp import web

from backends import ModelMetadata, ProtocolError
from backends.oip import array_from_json


def error_response(status: int, message: str, headers: dict | None = None) -> web.Response:
    """Every error the gateway answers, on any route: `{"error": "..."}` with its status.
    Written with orjson: under overload most answers are refusals, and the standard
    library's encoder was a tenth of the gateway's CPU there."""
    return web.Response(body=orjson.dumps({"error": message}), status=status, headers=headers,
                        content_type="application/json")  # fmt: skip


def validate_inputs(meta: ModelMetadata, inputs: Mapping[str, np.ndarray], max_elements: int) -> int:
    """Check `inputs` against the model's metadata; return the rows they add to a batch."""
    expected = {t.name: t for t in meta.inputs}
    if inputs.keys() != expected.keys():
        missing = sorted(expected.keys() - inputs.keys())
        unknown = sorted(inputs.keys() - expected.keys())
        detail = "; ".join(p for p in (missing and f"missing {missing}", unknown and f"unknown {unknown}") if p)
        raise ProtocolError(f"model {meta.name!r} takes inputs {sorted(expected)}: {detail}")
    elements = 0
    for name, array in inputs.items():
        expected[name].check(array)
        elements += array.size
    if elements > max_elements:
        raise ProtocolError(f"the request holds {elements} tensor elements; the limit is {max_elements}")
    if not meta.batchable:
        return 1
    rows = {array.shape[0] for array in inputs.values()}
    if len(rows) != 1:
        raise ProtocolError(f"inputs disagree on the batch dimension: {sorted(rows)}")
    (count,) = rows
    if count < 1:
        raise ProtocolError("inputs must hold at least one row")
    return count


def check_outputs(meta: ModelMetadata, requested: list[str] | None) -> None:
    if requested is None:
        return
    known = {t.name for t in meta.outputs}
    unknown = sorted(set(requested) - known)
    if unknown:
        raise ProtocolError(f"model {meta.name!r} has no output(s) {unknown}; it has {sorted(known)}")


def decode_v1(meta: ModelMetadata, body: bytes) -> dict[str, np.ndarray]:
    """KServe V1 `{"instances": [...]}`: one row per instance; an object per instance
    (input name -> row) when the model has several inputs."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"malformed JSON: {exc}") from None
    instances = doc.get("instances") if isinstance(doc, dict) else None
    if not isinstance(instances, list) or not instances:
        raise ProtocolError("the body must be an object with a non-empty 'instances' list")
    specs = meta.inputs
    if len(specs) == 1 and not isinstance(instances[0], dict):
        columns: dict[str, Any] = {specs[0].name: instances}
    else:
        if not all(isinstance(i, dict) for i in instances):
            raise ProtocolError("with several model inputs, every instance must be an object of input name -> value")
        columns = {s.name: [i.get(s.name) for i in instances] for s in specs}
        if any(v is None for column in columns.values() for v in column):
            raise ProtocolError(f"every instance needs the inputs {[s.name for s in specs]}")
    return {s.name: array_from_json(columns[s.name], s.datatype, f"input {s.name!r}") for s in specs}


def encode_v1(outputs: Mapping[str, np.ndarray]) -> bytes:
    if len(outputs) == 1:
        (array,) = outputs.values()
        predictions: Any = array
    else:
        rows = next(iter(outputs.values())).shape[0]
        predictions = [{name: array[i] for name, array in outputs.items()} for i in range(rows)]
    return orjson.dumps({"predictions": predictions}, option=orjson.OPT_SERIALIZE_NUMPY)
