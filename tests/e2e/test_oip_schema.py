"""Bad input against a live gateway: every bad request gets a clear 4xx, nothing a client sends gets a 5xx.

Three sources of requests, all sent to the session's shared demo gateway (read-only use):
- schemathesis, driven by the Open Inference Protocol spec the team keeps in
  ../shared/data/specs/oip_dataplane.yaml, over the operations Sluice implements;
- hypothesis-built V2 infer requests (JSON and the binary tensor extension), each valid or broken
  in one known way, so the test knows the one right answer: 200 with the model's own output, or a
  400 `{"error": ...}` that never reached a batch;
- hypothesis-built KServe V1 `instances` bodies, judged the same way.

The demo model takes `x`, FP32 [-1, 256], and answers `y`, FP32 [-1, 10].

Requests that got a 500 when this file was first run are kept in FORMER_BUGS, each with what
caused it; `test_former_bug_gets_a_400` keeps them fixed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pytest
import requests
import yaml
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from backends.oip import DTYPES, HEADER_LENGTH, decode_response

pytestmark = pytest.mark.e2e

SPEC = Path(__file__).resolve().parents[3] / "shared" / "data" / "specs" / "oip_dataplane.yaml"

DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
             "FP16", "FP32", "FP64", "BYTES"]  # fmt: skip
MAX_ROWS = 48  # valid requests hold 1..MAX_ROWS rows: some above the gateway's B=16, all far below its limits
HTTP_TIMEOUT_S = 20.0  # a request that hangs fails the test instead of the run

# Derandomized (the same examples on every run, so CI is stable) and bounded in time.
BOUNDED = settings(
    deadline=None, derandomize=True, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)  # fmt: skip


# ---------------------------------------------------------------------------
# Gateway bugs this file found (reported, not fixed here): label -> (why, body, headers)

def _infer_doc(shape: Any, data: Any, datatype: Any = "FP32", **extra: Any) -> dict:
    return {"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "data": data}], **extra}


def _binary_zero_dims() -> tuple[bytes, dict[str, str]]:
    head = json.dumps({"inputs": [{"name": "x", "shape": [0, 2**40, 2**40], "datatype": "FP32",
                                   "parameters": {"binary_data_size": 0}}]}).encode()  # fmt: skip
    return head, {HEADER_LENGTH: str(len(head))}


_DEEP = 3000  # nesting deeper than both orjson's limit (1024) and Python's recursion limit
FORMER_BUGS: dict[str, tuple[str, bytes, dict[str, str]]] = {
    "zero-dim-with-huge-dims": (
        "backends/oip.py array_from_json: reshape(shape) of an empty array to [0, 2**40, 2**40] raises "
        "numpy's ValueError ('array is too big'), which nothing turns into a 400",
        json.dumps(_infer_doc([0, 2**40, 2**40], [])).encode(), {},
    ),
    "zero-dim-with-huge-dims-binary": (
        "backends/oip.py _from_binary: the same reshape, on a binary tensor of 0 bytes",
        *_binary_zero_dims(),
    ),
    "more-than-64-dims": (
        "backends/oip.py array_from_json: reshape to 65 dimensions raises numpy's ValueError "
        "('maximum supported dimension for an ndarray is currently 64')",
        json.dumps(_infer_doc([1] * 65, [1.0])).encode(), {},
    ),
    "deeply-nested-data": (
        "backends/oip.py _loads: orjson refuses nesting deeper than 1024, the json fallback then "
        "raises RecursionError, which is not a ValueError and escapes as a 500",
        b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": '
        + b"[" * _DEEP + b"1" + b"]" * _DEEP + b"}]}", {},
    ),
    "unhashable-datatype": (
        "backends/oip.py _tensor: `datatype not in DTYPES` with a list or object datatype raises TypeError",
        json.dumps(_infer_doc([1, 256], [0.0] * 256, datatype=["FP32"])).encode(), {},
    ),
    "huge-integer-timeout": (
        "gateway/app.py Gateway.deadline: parameters.timeout of 10**400 (a JSON integer) / 1e6 raises "
        "OverflowError, which the `except ValueError` there does not catch",
        json.dumps(_infer_doc([1, 256], [0.0] * 256, parameters={"timeout": 10**400})).encode(), {},
    ),
}  # fmt: skip


# ---------------------------------------------------------------------------
# Helpers


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def post(http: requests.Session, url: str, body: bytes, headers: dict[str, str]) -> requests.Response:
    return http.post(url, data=body, headers=headers, timeout=HTTP_TIMEOUT_S)


def batched_rows(http: requests.Session, url: str) -> float:
    """Rows the demo model has received in batches so far (`sluice_batch_size_sum`)."""
    text = http.get(f"{url}/metrics", timeout=HTTP_TIMEOUT_S).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "sluice_batch_size_sum" and sample.labels.get("model") == "demo":
                return sample.value
    return 0.0


class Reply(Protocol):
    """What a requests or a schemathesis response both have."""

    status_code: int
    text: str

    def json(self) -> Any: ...


def assert_error(response: Reply, status: int, label: str) -> None:
    """A refusal: the expected status, and a JSON body `{"error": "<non-empty text>"}`."""
    assert response.status_code == status, (label, response.status_code, response.text[:300])
    doc = response.json()
    assert isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"], (label, doc)


def assert_same_output(actual: np.ndarray, expected: np.ndarray) -> None:
    """The model run directly gave the same answer (NaN where it gave NaN)."""
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5, equal_nan=True)


# ---------------------------------------------------------------------------
# schemathesis over the spec


# Operations Sluice implements; the spec's streaming, generate and other operations are not among them.
IMPLEMENTED = ["server-live", "server-ready", "server-metadata", "model-metadata", "model-version-metadata",
               "model-ready", "model-version-ready", "model-inference", "model-version-inference"]  # fmt: skip

# Path parameters: mostly the real model, some unknown names; None keeps what schemathesis generated.
MODEL_NAMES = ("demo",) * 6 + ("nope", "Demo", "demo%20", "d%C3%A9mo", None)
VERSIONS = ("1",) * 3 + ("2", "latest", None)


def load_spec() -> dict:
    """The spec as published, with one repair: `TensorData` says `oneOf: [array, {type: bytes}]`, and
    `bytes` is no JSON Schema type (schemathesis refuses to generate from it); a string is the nearest
    reading (base64), and arrays are what Sluice sends."""
    raw = yaml.safe_load(SPEC.read_text())
    tensor_data = {"title": "TensorData", "oneOf": [{"type": "array"}, {"type": "string"}]}
    raw["components"]["schemas"]["TensorData"] = tensor_data
    return raw


def use_our_path_parameters(case: Any, name: str | None, version: str | None) -> bool:
    """Put the drawn model name and version into `case`; True when that makes its answer certain
    (False when a generated name or version stays, which only has to avoid a 5xx)."""
    params = case.path_parameters
    if not params:
        return True  # health and server metadata take no parameters
    if name is None:
        return False
    params["model_name"] = name
    if "model_version" in params:
        if version is None:
            return False
        params["model_version"] = version
    return True


def expected_status(case: Any) -> int:
    """200 for health, server metadata and the demo model's metadata and readiness; 404 for an
    unknown model or version; 400 for a generated infer body (never a valid `x` tensor)."""
    params = case.path_parameters or {}
    if "model_name" not in params:
        return 200
    if params["model_name"] != "demo" or params.get("model_version", "1") != "1":
        return 404
    return 200 if case.method == "GET" else 400


if SPEC.is_file():
    import schemathesis
    from schemathesis.checks import not_a_server_error, response_schema_conformance

    SCHEMA = schemathesis.openapi.from_dict(load_spec()).include(operation_id=IMPLEMENTED)
    SCHEMA.config.seed = 20240611
    SCHEMA.config.phases.update(phases=["examples", "coverage", "fuzzing"])

    @SCHEMA.parametrize()
    @SCHEMA.given(name=st.sampled_from(MODEL_NAMES), version=st.sampled_from(VERSIONS))
    @settings(BOUNDED, max_examples=25)
    def test_spec_operations_never_fail_with_5xx(case, name: str | None, version: str | None, gateway, http) -> None:
        """Positive and negative cases from the spec: no 5xx, bodies as the spec describes them where
        it does, every refusal a JSON `{"error": ...}`, and, where our own path parameters make it
        certain, the right status (200, 404 for an unknown model or version, 400 for a generated body)."""
        certain = use_our_path_parameters(case, name, version)
        response = case.call(base_url=gateway.url, session=http, timeout=HTTP_TIMEOUT_S)
        case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
        if response.status_code >= 400:
            assert_error(response, response.status_code, case.operation.label)
        if certain:
            assert response.status_code == expected_status(case), (case.operation.label, case.path_parameters)

    @pytest.mark.parametrize("path", ["/v2/models/{model_name}/infer",
                                      "/v2/models/{model_name}/versions/{model_version}/infer"])  # fmt: skip
    @pytest.mark.parametrize("binary", [False, True])
    def test_valid_infer_response_matches_the_spec(path: str, binary: bool, gateway, http, reference) -> None:
        """The spec's InferenceResponse describes Sluice's 200 (with JSON outputs; binary ones are the
        extension's, outside the spec, and only checked for their values)."""
        x = np.random.default_rng(7).standard_normal((3, 256)).astype(np.float32)
        body: dict[str, Any] = {"id": "r-1", "inputs": [{"name": "x", "shape": [3, 256], "datatype": "FP32",
                                                        "data": x.reshape(-1).tolist()}]}  # fmt: skip
        if binary:
            body["outputs"] = [{"name": "y", "parameters": {"binary_data": True}}]
        case = SCHEMA[path]["POST"].Case(path_parameters={"model_name": "demo", "model_version": "1"}, body=body)
        response = case.call(base_url=gateway.url, session=http, timeout=HTTP_TIMEOUT_S)
        assert response.status_code == 200, response.text[:300]
        if binary:
            (length,) = response.headers[HEADER_LENGTH.lower()]  # schemathesis: lower-case names, lists of values
            outputs = decode_response(response.content, int(length))
        else:
            case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
            doc = response.json()
            assert doc["model_name"] == "demo" and doc["id"] == "r-1"
            (out,) = doc["outputs"]
            outputs = {out["name"]: np.asarray(out["data"], np.float32).reshape(out["shape"])}
        assert_same_output(outputs["y"], reference(x))

else:

    @pytest.mark.skip(reason=f"no Open Inference Protocol spec at {SPEC}")
    def test_spec_operations_never_fail_with_5xx() -> None:
        """Placeholder, so a missing spec shows up as a skip."""


# ---------------------------------------------------------------------------
# hypothesis: V2 infer requests, valid or broken in one known way


@dataclass(frozen=True)
class Attempt:
    """One request, and the one right answer to it."""

    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    x: np.ndarray | None = None  # the model input when the request is valid; None: it must be refused
    bug: str | None = None  # the FORMER_BUGS label of the 500 this input once got

    def __repr__(self) -> str:  # what hypothesis prints for a failing example: bodies can be long
        body = self.body if len(self.body) <= 300 else self.body[:300] + b"..."
        valid = "valid" if self.x is not None else "invalid"
        return f"Attempt({valid}, {len(self.body)} bytes, body={body!r}, headers={self.headers}, bug={self.bug})"


def json_bytes(doc: Any) -> bytes:
    """JSON as Python writes it: NaN and Infinity as the tokens Triton and Python clients send."""
    return json.dumps(doc, allow_nan=True).encode()


# Values that stress the codec but keep the model's sums order-independent (no finite overflow).
SPECIAL = st.sampled_from([0.0, -0.0, 1e-45, -1e4, 1e4, math.nan, math.inf, -math.inf])


@st.composite
def model_inputs(draw: st.DrawFn, max_rows: int = MAX_ROWS) -> np.ndarray:
    """A valid `x`: 1..max_rows rows of 256 float32 (or whole numbers), a few of them special values."""
    rows = draw(st.integers(1, max_rows))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()):
        x = rng.uniform(-4, 4, (rows, 256)).astype(np.float32)
    else:
        x = rng.integers(-100, 100, (rows, 256)).astype(np.float32)  # sent as JSON integers
    for _ in range(draw(st.integers(0, 3))):
        x[draw(st.integers(0, rows - 1)), draw(st.integers(0, 255))] = draw(SPECIAL)
    return x


def json_data(x: np.ndarray, nested: bool = False) -> list:
    """`x` as JSON data: flat (row-major) or nested by rows; whole numbers as integers."""
    whole = bool(np.all(np.isfinite(x))) and bool(np.all(x == np.rint(x)))
    values = x.astype(np.int64) if whole else x
    return values.tolist() if nested else values.reshape(-1).tolist()


def tensor(x: np.ndarray, nested: bool = False) -> dict:
    return {"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": json_data(x, nested)}


def binary_head(rows: int, size: Any, **changes: Any) -> dict:
    spec = {"name": "x", "shape": [rows, 256], "datatype": "FP32", "parameters": {"binary_data_size": size}}
    return {"inputs": [{**spec, **changes}]}


def binary_body(head: dict, raw: bytes, header_length: int | None = None) -> tuple[bytes, dict[str, str]]:
    """The binary tensor extension: JSON header, then raw tensor bytes; the header's length in a header."""
    encoded = json.dumps(head).encode()
    length = len(encoded) if header_length is None else header_length
    return encoded + raw, {HEADER_LENGTH: str(length), "Content-Type": "application/octet-stream"}


@st.composite
def valid_requests(draw: st.DrawFn) -> Attempt:
    """Valid for the demo model: JSON flat or nested, or binary; optional id, outputs, binary outputs, timeout."""
    x = draw(model_inputs())
    doc: dict[str, Any] = {}
    if draw(st.booleans()):
        doc["id"] = draw(st.text(max_size=12))
    if draw(st.booleans()):
        doc["outputs"] = [{"name": "y", "parameters": {"binary_data": draw(st.booleans())}}]
    if draw(st.booleans()):
        doc["parameters"] = {"timeout": 10_000_000}  # 10 s, in microseconds
    how = draw(st.sampled_from(["flat", "nested", "binary"]))
    if how == "binary":
        body, headers = binary_body({**doc, **binary_head(len(x), x.nbytes)}, x.tobytes())
        return Attempt(body, headers, x=x)
    return Attempt(json_bytes({**doc, "inputs": [tensor(x, nested=how == "nested")]}), x=x)


# Ways to break a request (JSON, binary extension, KServe V1). Each takes a valid `x` (1..4 rows) and
# returns a request that differs from the valid one in that way only; each runs as its own test case,
# so every way is tried on every run. `bug` marks the inputs that once got a 500.
Breaker = Callable[[st.DrawFn, np.ndarray], Attempt]
JSON_BREAKERS: dict[str, Breaker] = {}
BINARY_BREAKERS: dict[str, Breaker] = {}
V1_BREAKERS: dict[str, Breaker] = {}


def breaks(table: dict[str, Breaker], name: str) -> Callable[[Breaker], Breaker]:
    """Register the decorated breaker in `table` under `name` (its test id)."""

    def register(func: Breaker) -> Breaker:
        table[name] = func
        return func

    return register


def with_input(x: np.ndarray, bug: str | None = None, **changes: Any) -> Attempt:
    """The valid JSON request for `x` with its one input changed."""
    return Attempt(json_bytes({"inputs": [{**tensor(x), **changes}]}), bug=bug)


def with_flat_value(draw: st.DrawFn, x: np.ndarray, value: Any) -> Attempt:
    """The valid JSON request for `x` with one element of its data replaced by `value`."""
    data = json_data(x)
    data[draw(st.integers(0, len(data) - 1))] = value
    return with_input(x, data=data)


@breaks(JSON_BREAKERS, "name: not x")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    name = draw(st.text(max_size=8).filter(lambda s: s != "x") | st.sampled_from([None, 1, ["x"], {"x": 1}]))
    return with_input(x, name=name)


@breaks(JSON_BREAKERS, "datatype: unknown, or another type's name")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    named = st.sampled_from([d for d in DATATYPES if d != "FP32"] + ["fp32", "FLOAT32", "FP8", "BF16", " FP32"])
    other = named | st.text(max_size=6).filter(lambda s: s != "FP32") | st.sampled_from([None, 32, 3.2])
    return with_input(x, datatype=draw(other))


@breaks(JSON_BREAKERS, "datatype: not a string")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    return with_input(x, datatype=draw(st.sampled_from([["FP32"], {"type": "FP32"}, []])), bug="unhashable-datatype")


@breaks(JSON_BREAKERS, "datatype: a well-formed tensor of another type")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    """Data that is right for its datatype (so it decodes), but the model takes FP32."""
    datatype = draw(st.sampled_from([d for d in DATATYPES if d != "FP32"]))
    values = np.nan_to_num(x).reshape(-1)
    if datatype == "BYTES":
        data: list = [str(v) for v in values]
    elif datatype == "BOOL":
        data = (values > 0).tolist()
    elif datatype.startswith(("INT", "UINT")):
        info = np.iinfo(DTYPES[datatype])
        data = np.clip(np.rint(values), info.min, info.max).astype(DTYPES[datatype]).tolist()
    else:
        data = x.reshape(-1).astype(DTYPES[datatype]).tolist()  # FP16, FP64: NaN and infinities allowed
    return Attempt(json_bytes({"inputs": [{**tensor(x), "datatype": datatype, "data": data}]}))


@breaks(JSON_BREAKERS, "shape: no rows")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    return with_input(x, shape=[0, 256], data=[])


@breaks(JSON_BREAKERS, "shape: wrong width")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    width = draw(st.sampled_from([0, 1, 255, 257, 512]))
    return with_input(x, shape=[len(x), width], data=[0.5] * (len(x) * width))


@breaks(JSON_BREAKERS, "shape: wrong rank")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    n = len(x)
    return with_input(x, shape=draw(st.sampled_from([[n * 256], [n, 256, 1], [1, n, 256], [n, 16, 16]])))


@breaks(JSON_BREAKERS, "shape: negative")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    n = len(x)
    shapes = [[-1, 256], [n, -256], [-n, -256], [-(2**63), 256], [-(2**70), 256]]
    return with_input(x, shape=draw(st.sampled_from(shapes)))


@breaks(JSON_BREAKERS, "shape: element count overflows")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    huge = [[2**31, 256], [2**40, 2**40], [2**63 - 1, 256], [2**64, 256], [10**30, 256], [2**62, 2**62, 2**62]]
    return with_input(x, shape=draw(st.sampled_from(huge)))


@breaks(JSON_BREAKERS, "shape: a zero and huge dims")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    huge = draw(st.sampled_from([2**32, 2**40, 2**62]))
    return with_input(x, shape=[0, huge, huge], data=[], bug="zero-dim-with-huge-dims")


@breaks(JSON_BREAKERS, "shape: many dims")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    dims = draw(st.integers(3, 70))
    return with_input(x, shape=[1] * dims, data=[1.0], bug="more-than-64-dims" if dims > 64 else None)


@breaks(JSON_BREAKERS, "shape: not a list of integers")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    n = len(x)
    shapes = ["[1, 256]", 256, None, {"n": 1}, True, [float(n), 256.0], [True, 256], [n, "256"], [n, None], [n, [256]]]
    return with_input(x, shape=draw(st.sampled_from(shapes)))


@breaks(JSON_BREAKERS, "data: too short")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    data = json_data(x)
    return with_input(x, data=data[: draw(st.integers(0, len(data) - 1))])


@breaks(JSON_BREAKERS, "data: too long")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    return with_input(x, data=json_data(x) + [1.0] * draw(st.integers(1, 300)))


@breaks(JSON_BREAKERS, "data: ragged rows")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    rows = json_data(x, nested=True)
    rows[draw(st.integers(0, len(rows) - 1))] = [0.0] * draw(st.sampled_from([0, 1, 255, 257]))
    return with_input(x, data=rows)


@breaks(JSON_BREAKERS, "data: a string")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    return with_flat_value(draw, x, draw(st.sampled_from(["1.0", "", "NaN", "x"])))


@breaks(JSON_BREAKERS, "data: null, object or object element")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    if draw(st.booleans()):
        return with_flat_value(draw, x, draw(st.sampled_from([None, {}, {"v": 1.0}])))
    return with_input(x, data=draw(st.sampled_from([None, {}, {"x": json_data(x)}, "0.5", 0.5])))


@breaks(JSON_BREAKERS, "data: beyond FP32")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    """JSON has no integers apart from numbers: 2**64 is a fine FP32; 10**39 is not, nor 10**400,
    which only the standard library's parser reads (as a Python int)."""
    return with_flat_value(draw, x, draw(st.sampled_from([1e39, -3.5e38, 1.7e308, 10**39, -(10**40), 10**400])))


@breaks(JSON_BREAKERS, "data: nested deep")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    depth = draw(st.sampled_from([3, 40, 500, 1100, _DEEP]))
    body = (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": '
            + b"[" * depth + b"1.0" + b"]" * depth + b"}]}")  # fmt: skip
    return Attempt(body, bug="deeply-nested-data" if depth > 1024 else None)  # past orjson's limit, json's recursion


@breaks(JSON_BREAKERS, "inputs: empty or not a list")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    return Attempt(json_bytes({"inputs": draw(st.sampled_from([[], {}, "x", None, 42, tensor(x)]))}))


@breaks(JSON_BREAKERS, "inputs: x twice, or another input")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    good, other = tensor(x), {**tensor(x), "name": "z"}
    return Attempt(json_bytes({"inputs": draw(st.sampled_from([[good, good], [good, other], [other]]))}))


@breaks(JSON_BREAKERS, "input: not an object")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    return Attempt(json_bytes({"inputs": draw(st.sampled_from([[42], ["x"], [None], [tensor(x), 42]]))}))


@breaks(JSON_BREAKERS, "input: a key missing")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    spec = tensor(x)
    del spec[draw(st.sampled_from(["name", "shape", "datatype", "data"]))]
    return Attempt(json_bytes({"inputs": [spec]}))


@breaks(JSON_BREAKERS, "input: parameters not an object")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    return with_input(x, parameters=draw(st.sampled_from([[1], "p", 1, True, 2.5])))


@breaks(JSON_BREAKERS, "outputs")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    outputs = [[{"name": "nope"}], [{"name": "y"}, {"name": "z"}], "y", {"name": "y"}, [{"name": 1}], [{}], ["y"],
               [{"name": "y", "parameters": 3}]]  # fmt: skip
    return Attempt(json_bytes({"inputs": [tensor(x)], "outputs": draw(st.sampled_from(outputs))}))


@breaks(JSON_BREAKERS, "id not a string")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    return Attempt(json_bytes({"id": draw(st.sampled_from([42, 1.5, [], {}, True, ["a"]])), "inputs": [tensor(x)]}))


@breaks(JSON_BREAKERS, "parameters not an object")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    return Attempt(json_bytes({"parameters": draw(st.sampled_from([[1], "p", 1, True, 2.5])), "inputs": [tensor(x)]}))


@breaks(JSON_BREAKERS, "parameters.timeout")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    timeout = draw(st.sampled_from(["soon", "5", -5, 0, -0.0, True, [1], {}, -math.inf, 10**400]))
    bug = "huge-integer-timeout" if timeout == 10**400 else None
    return Attempt(json_bytes({"parameters": {"timeout": timeout}, "inputs": [tensor(x)]}), bug=bug)


@breaks(JSON_BREAKERS, "X-Request-Timeout-Ms")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    header = draw(st.sampled_from(["soon", "-1", "0", "", "1e", "0x10", "-inf", "1,5"]))
    return Attempt(json_bytes({"inputs": [tensor(x)]}), {"X-Request-Timeout-Ms": header})


@breaks(JSON_BREAKERS, "top level: not an object")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    return Attempt(json_bytes(draw(st.sampled_from([[{"inputs": [tensor(x)]}], "inputs", 42, None, True, {}]))))


@breaks(JSON_BREAKERS, "top level: not JSON")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    whole = json_bytes({"inputs": [tensor(x)]})
    body = draw(st.sampled_from([b"", b"{", b'{"inputs": "\xff\xfe"}', b"\x00" * 8, whole[: len(whole) // 2]])
                | st.binary(max_size=64))  # fmt: skip
    return Attempt(body)


# Ways to break a binary-extension request: its lengths, or its datatype, do not add up.


def binary_attempt(x: np.ndarray, raw: bytes | None = None, length: int | None = None, **changes: Any) -> Attempt:
    raw = x.tobytes() if raw is None else raw
    body, headers = binary_body(binary_head(len(x), x.nbytes, **changes), raw, length)
    return Attempt(body, headers)


def head_length(x: np.ndarray) -> int:
    return len(json.dumps(binary_head(len(x), x.nbytes)).encode())


@breaks(BINARY_BREAKERS, "header length wrong")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    n = head_length(x)
    return binary_attempt(x, length=draw(st.sampled_from([-1, 0, 1, n - 1, n + 1, n + 7, n + x.nbytes + 1, 10**30])))


@breaks(BINARY_BREAKERS, "header length not an integer")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    attempt = binary_attempt(x)
    values = ["", "abc", "1.5", "0x10", "1e3", "-", str(head_length(x)) + "x"]
    attempt.headers[HEADER_LENGTH] = draw(st.sampled_from(values))
    return attempt


@breaks(BINARY_BREAKERS, "header length missing")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    attempt = binary_attempt(x)
    del attempt.headers[HEADER_LENGTH]
    return attempt


@breaks(BINARY_BREAKERS, "binary_data_size too small")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    return binary_attempt(x, parameters={"binary_data_size": x.nbytes - draw(st.integers(1, x.nbytes))})


@breaks(BINARY_BREAKERS, "binary_data_size too large")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    return binary_attempt(x, parameters={"binary_data_size": x.nbytes + draw(st.sampled_from([1, 4, 1024, 2**40]))})


@breaks(BINARY_BREAKERS, "binary_data_size not a size")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    size = draw(st.sampled_from([-4, str(x.nbytes), float(x.nbytes), True, [x.nbytes], None]))
    return binary_attempt(x, parameters={"binary_data_size": size})


@breaks(BINARY_BREAKERS, "bytes after the tensor")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    return binary_attempt(x, raw=x.tobytes() + draw(st.binary(min_size=1, max_size=16)))


@breaks(BINARY_BREAKERS, "tensor cut short")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    return binary_attempt(x, raw=x.tobytes()[: -draw(st.integers(1, x.nbytes))])


@breaks(BINARY_BREAKERS, "shape disagrees with the bytes")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    n = len(x)
    shapes = [[n + 1, 256], [n, 255], [n * 256], [-n, -256], [2**63 - 1, 256]]
    return binary_attempt(x, shape=draw(st.sampled_from(shapes)))


@breaks(BINARY_BREAKERS, "another datatype")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    datatype = draw(st.sampled_from(["FP16", "FP64", "INT32", "UINT8", "BOOL"]))
    raw = x.astype(DTYPES[datatype]).tobytes()
    return binary_attempt(x, raw=raw, datatype=datatype, parameters={"binary_data_size": len(raw)})


@breaks(BINARY_BREAKERS, "BYTES tensor")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    item = draw(st.binary(max_size=4))
    raw = b"".join(len(item).to_bytes(4, "little") + item for _ in range(x.size))
    return binary_attempt(x, raw=raw, datatype="BYTES", parameters={"binary_data_size": len(raw)})


@breaks(BINARY_BREAKERS, "a zero and huge dims")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    body, headers = binary_body(binary_head(0, 0, shape=[0, 2**40, 2**40]), b"")
    return Attempt(body, headers, bug="zero-dim-with-huge-dims-binary")


def answer_of(response: requests.Response) -> np.ndarray:
    """`y` from a V2 200, JSON or binary."""
    if HEADER_LENGTH in response.headers:
        return decode_response(response.content, int(response.headers[HEADER_LENGTH]))["y"]
    doc = response.json()
    assert doc["model_name"] == "demo"
    (out,) = doc["outputs"]
    assert out["name"] == "y" and out["datatype"] == "FP32"
    return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])


def v1_answer(response: requests.Response) -> np.ndarray:
    return np.asarray(response.json()["predictions"], dtype=np.float32)


def check_attempt(http: requests.Session, base: str, path: str, attempt: Attempt, reference: Callable | None = None,
                  answer: Callable[[requests.Response], np.ndarray] = answer_of) -> None:  # fmt: skip
    """200 with the model's own output exactly when the request is valid; otherwise a 400 with an
    error, and no batch; never a 5xx."""
    before = batched_rows(http, base) if attempt.x is None else None
    response = post(http, base + path, attempt.body, attempt.headers)
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if attempt.x is not None:
        assert response.status_code == 200, response.text[:300]
        assert_same_output(answer(response), reference(attempt.x))
    else:
        assert_error(response, 400, "refused")
        assert batched_rows(http, base) == before, "a refused request reached a batch"


@settings(BOUNDED, max_examples=40)
@given(attempt=valid_requests())
def test_valid_v2_infer_gets_the_models_answer(attempt: Attempt, gateway, http, reference) -> None:
    """Valid tensors, JSON flat or nested or binary, up to MAX_ROWS rows, with NaN and infinities:
    200, and what onnxruntime gives for the same rows."""
    check_attempt(http, gateway.url, "/v2/models/demo/infer", attempt, reference)


V2_BREAKERS = {**JSON_BREAKERS, **{f"binary: {name}": breaker for name, breaker in BINARY_BREAKERS.items()}}


@pytest.mark.parametrize("how", V2_BREAKERS)
@settings(BOUNDED, max_examples=5)
@given(data=st.data())
def test_broken_v2_infer_gets_400(how: str, data: st.DataObject, gateway, http) -> None:
    """Each way of breaking a request, several times over: a 400 `{"error": ...}`, and no batch."""
    attempt = V2_BREAKERS[how](data.draw, data.draw(model_inputs(max_rows=4), label="x"))
    note(repr(attempt))
    check_attempt(http, gateway.url, "/v2/models/demo/infer", attempt)


# ---------------------------------------------------------------------------
# hypothesis: KServe V1 predict


def finite(x: np.ndarray) -> np.ndarray:
    """V1 bodies are read with orjson, which has no NaN or Infinity."""
    return np.where(np.isfinite(x), x, 0.0).astype(np.float32)


def v1_body(instances: Any) -> Attempt:
    return Attempt(json_bytes({"instances": instances}))


@st.composite
def valid_v1_requests(draw: st.DrawFn) -> Attempt:
    """Rows of 256 numbers, or `{"x": row}` objects, one per instance."""
    x = finite(draw(model_inputs(max_rows=8)))
    rows = json_data(x, nested=True)
    instances = rows if draw(st.booleans()) else [{"x": row} for row in rows]
    return Attempt(json_bytes({"instances": instances}), x=x)


@breaks(V1_BREAKERS, "empty or not a list")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    return v1_body(draw(st.sampled_from([[], None, {}, "rows", 1, {"x": json_data(x, nested=True)}])))


@breaks(V1_BREAKERS, "rows of the wrong width")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    width = draw(st.sampled_from([0, 1, 255, 257]))
    return v1_body([[0.5] * width for _ in range(len(x))])


@breaks(V1_BREAKERS, "ragged rows")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    rows = json_data(x, nested=True)
    return v1_body([*rows, rows[0][: draw(st.integers(0, 255))]])


@breaks(V1_BREAKERS, "strings")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    return v1_body([[str(v) for v in row] for row in json_data(x, nested=True)])


@breaks(V1_BREAKERS, "wrong rank")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    rows = json_data(x, nested=True)
    return v1_body(draw(st.sampled_from([rows[0], [[row] for row in rows], [[[0.5] * 256]] * 2])))


@breaks(V1_BREAKERS, "objects without x")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    rows = json_data(x, nested=True)
    return v1_body(draw(st.sampled_from([[{"z": row} for row in rows], [{"x": rows[0]}, {}], [{"x": None}]])))


@breaks(V1_BREAKERS, "rows and objects mixed")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    row = json_data(x, nested=True)[0]
    return v1_body(draw(st.sampled_from([[row, {"x": row}], [{"x": row}, row]])))


@breaks(V1_BREAKERS, "values beyond FP32")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    return v1_body([[draw(st.sampled_from([1e39, -1.7e308, 10**39, 10**400]))] * 256])


@breaks(V1_BREAKERS, "nested deep")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    depth = draw(st.sampled_from([3, 100, 1000, 1100]))
    return Attempt(b'{"instances": ' + b"[" * depth + b"1.0" + b"]" * depth + b"}")


@breaks(V1_BREAKERS, "not JSON, or not an object")
def _(draw: st.DrawFn, x: np.ndarray) -> Attempt:
    nan_row = b"[" + b", ".join([b"NaN"] + [b"0.5"] * 255) + b"]"
    bodies = [b"", b"[]", b"null", b'"instances"', b"{", b'{"instances": [[1.0]]', b'{"instances": [' + nan_row + b"]}",
              b'{"inputs": []}', b"\xff\xfe"]  # fmt: skip
    return Attempt(draw(st.sampled_from(bodies) | st.binary(max_size=32)))


@settings(BOUNDED, max_examples=15)
@given(attempt=valid_v1_requests())
def test_valid_v1_predict_gets_the_models_answer(attempt: Attempt, gateway, http, reference) -> None:
    """KServe V1 rows or objects: 200 with the model's predictions."""
    check_attempt(http, gateway.url, "/v1/models/demo:predict", attempt, reference, v1_answer)


@pytest.mark.parametrize("how", V1_BREAKERS)
@settings(BOUNDED, max_examples=4)
@given(data=st.data())
def test_broken_v1_predict_gets_400(how: str, data: st.DataObject, gateway, http) -> None:
    """Each way of breaking a V1 body: a 400 `{"error": ...}`, and no batch."""
    attempt = V1_BREAKERS[how](data.draw, finite(data.draw(model_inputs(max_rows=4), label="x")))
    note(repr(attempt))
    check_attempt(http, gateway.url, "/v1/models/demo:predict", attempt)


# ---------------------------------------------------------------------------
# The former bugs, one request each


@pytest.mark.parametrize("label", list(FORMER_BUGS))
def test_former_bug_gets_a_400(label: str, gateway, http) -> None:
    """Each request in FORMER_BUGS once got a 500; it deserves a 400 with an error."""
    _, body, headers = FORMER_BUGS[label]
    response = post(http, f"{gateway.url}/v2/models/demo/infer", body, headers)
    assert_error(response, 400, label)
