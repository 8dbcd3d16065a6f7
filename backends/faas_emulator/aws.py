"""AWS's shapes, in one place: error responses, function-error bodies and the invocation log.

boto3 picks the exception class from `x-amzn-ErrorType` and the message from the
body, so these must match what the real service sends for clients to behave alike.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

from .config import PAYLOAD_LIMIT_BYTES, FunctionConfig, function_arn

LOG_TAIL_BYTES = 4096


def error_response(status: int, error_type: str, body: dict[str, Any], request_id: str) -> web.Response:
    return web.json_response(
        body, status=status, headers={"x-amzn-ErrorType": error_type, "x-amzn-RequestId": request_id}
    )


def not_found(name: str, request_id: str) -> web.Response:
    body = {"Type": "User", "Message": f"Function not found: {function_arn(name)}"}
    return error_response(404, "ResourceNotFoundException", body, request_id)


def throttled(request_id: str) -> web.Response:
    body = {"Type": "User", "message": "Rate Exceeded.", "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded"}
    return error_response(429, "TooManyRequestsException", body, request_id)


def request_too_large(request_id: str) -> web.Response:
    # The service's front end answers this one, not Lambda's API model: boto3 raises a plain ClientError.
    message = f"Request must be smaller than {PAYLOAD_LIMIT_BYTES} bytes for the InvokeFunction operation"
    return error_response(413, "RequestEntityTooLargeException", {"message": message}, request_id)


def invalid_content(message: str, request_id: str) -> web.Response:
    return error_response(400, "InvalidRequestContentException", {"Type": "User", "message": message}, request_id)


def invalid_parameter(message: str, request_id: str) -> web.Response:
    return error_response(400, "InvalidParameterValueException", {"Type": "User", "message": message}, request_id)


def service_unavailable(message: str, request_id: str) -> web.Response:
    return error_response(503, "ServiceException", {"Type": "Service", "Message": message}, request_id)


def function_error(error_type: str, message: str, request_id: str = "") -> bytes:
    """The payload of an Unhandled function error raised by the platform rather than the code."""
    body: dict[str, Any] = {"errorMessage": message, "errorType": error_type}
    if request_id:
        body["requestId"] = request_id
    return json.dumps(body).encode()


def response_too_large(size: int) -> bytes:
    # AWS answers 200 with this function error (not a 413) for a synchronous invocation.
    return function_error(
        "Function.ResponseSizeTooLarge",
        f"Response payload size ({size} bytes) exceeded maximum allowed payload size ({PAYLOAD_LIMIT_BYTES} bytes).",
    )


def timestamp() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


@dataclass(slots=True)
class Report:
    """The numbers of one invocation, as the REPORT line states them."""

    request_id: str
    duration_ms: float
    billed_ms: int
    memory_mb: int
    max_memory_mb: int
    init_ms: float | None = None
    status: str | None = None

    def line(self) -> str:
        parts = [
            f"REPORT RequestId: {self.request_id}", f"Duration: {self.duration_ms:.2f} ms",
            f"Billed Duration: {self.billed_ms} ms", f"Memory Size: {self.memory_mb} MB",
            f"Max Memory Used: {self.max_memory_mb} MB",
        ]  # fmt: skip
        if self.init_ms is not None:
            parts.append(f"Init Duration: {self.init_ms:.2f} ms")
        if self.status:
            parts.append(f"Status: {self.status}")
        return "\t".join(parts) + "\t\n"


def invocation_log(report: Report, init_log: str, handler_log: str) -> str:
    """The invocation's log as CloudWatch shows it: init output, START, output, END, REPORT."""
    rid = report.request_id
    body = handler_log if not handler_log or handler_log.endswith("\n") else handler_log + "\n"
    return f"{init_log}START RequestId: {rid} Version: $LATEST\n{body}END RequestId: {rid}\n{report.line()}"


def log_tail(log: str) -> str:
    """Base64 of the log's last 4 KB, cut at a character boundary so that it decodes as UTF-8."""
    data = log.encode()[-LOG_TAIL_BYTES:]
    while data and data[0] & 0xC0 == 0x80:
        data = data[1:]
    return base64.b64encode(data).decode()


def configuration(config: FunctionConfig) -> dict[str, Any]:
    """GetFunctionConfiguration's answer, with the fields clients read."""
    return {
        "FunctionName": config.name, "FunctionArn": config.arn, "Runtime": "python3.11",
        "Handler": "handler.handler", "MemorySize": config.memory_mb, "Timeout": int(config.timeout_s),
        "Environment": {"Variables": dict(config.environment)},
        "State": "Active", "LastUpdateStatus": "Successful", "Version": "$LATEST",
    }  # fmt: skip


def updated(config: FunctionConfig, changes: Any) -> FunctionConfig:
    """UpdateFunctionConfiguration's changes applied; ValueError for what the emulator cannot change."""
    if not isinstance(changes, dict):
        raise ValueError("the request body must be a JSON object")
    unsupported = set(changes) - {"MemorySize", "Timeout", "Environment", "FunctionName"}
    if unsupported:
        raise ValueError(f"the emulator cannot change {sorted(unsupported)}")
    values: dict[str, Any] = {}
    if "MemorySize" in changes:
        values["memory_mb"] = int(changes["MemorySize"])
    if "Timeout" in changes:
        values["timeout_s"] = float(changes["Timeout"])
    if "Environment" in changes:
        variables = changes["Environment"].get("Variables", {})
        values["environment"] = tuple(sorted((str(k), str(v)) for k, v in variables.items()))
    return replace(config, **values)  # FunctionConfig checks the values
