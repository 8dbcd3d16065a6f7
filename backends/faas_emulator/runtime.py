"""The runtime inside one execution environment: load the handler, then serve invocations.

Run by file path (`python runtime.py HANDLER.py`), never as `-m backends...`: importing
the `backends` package would pull aiohttp and more into every environment and make
each cold start pay for code the function never uses. Standard library only.

Wire: every message is two frames, a JSON header and a body, each a 4-byte big-endian
length then the bytes. The emulator sends {request_id, deadline_ms, client_context}
and the event's JSON; the runtime answers {ok, log} and the result's JSON (or the
error's). Right after start it answers {ok, log} once for the init phase.

The frames use private copies of fd 0 and fd 1; fd 0 then reads /dev/null and fd 1
writes to stderr, so nothing the handler or a native library prints can corrupt
the stream. Prints during an invocation are also kept for the invocation's log.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import struct
import sys
import time
import traceback
from typing import Any, BinaryIO

_LENGTH = struct.Struct(">I")


def read_frame(stream: BinaryIO) -> bytes | None:
    """One frame's bytes, or None at a clean end of input (the emulator closed stdin)."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack(head)
    body = stream.read(size)
    if len(body) < size:
        return None
    return body


def write_message(stream: BinaryIO, header: dict[str, Any], body: bytes) -> None:
    head = json.dumps(header).encode()
    stream.write(_LENGTH.pack(len(head)) + head + _LENGTH.pack(len(body)))
    stream.write(body)
    stream.flush()


class _Tee(io.TextIOBase):
    """A text stream that keeps what is written and passes it on to stderr."""

    def __init__(self, out: Any) -> None:
        self.out, self.parts = out, []

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.parts.append(text)
        self.out.write(text)
        return len(text)

    def flush(self) -> None:
        self.out.flush()

    def take(self) -> str:
        text, self.parts = "".join(self.parts), []
        return text


class Context:
    """What AWS's Python runtime passes as `context` (memory_limit_in_mb is a str there too)."""

    def __init__(self, request_id: str, deadline_ms: int, client_context: Any) -> None:
        self.aws_request_id = request_id
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
        region = os.environ.get("AWS_REGION", "us-east-1")
        self.invoked_function_arn = f"arn:aws:lambda:{region}:000000000000:function:{self.function_name}"
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = None
        self.client_context = client_context
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))


def error_body(
    exc: BaseException, error_type: str | None = None, message: str | None = None, skip: int = 0
) -> dict[str, Any]:
    """The JSON that AWS's Python runtime returns for an unhandled exception; `skip` drops the
    runtime's own frames so that the stack starts in the function's code, as on AWS."""
    stack = traceback.format_list(traceback.extract_tb(exc.__traceback__)[skip:])
    return {
        "errorMessage": str(exc) if message is None else message,
        "errorType": error_type or type(exc).__name__,
        "requestId": "",
        "stackTrace": [line.rstrip("\n") for line in stack],
    }


def _log_error(body: dict[str, Any]) -> None:
    """The `[ERROR]` record AWS's runtime writes to the log for a failed invocation or init."""
    lines = [f"[ERROR] {body['errorType']}: {body['errorMessage']}", "Traceback (most recent call last):"]
    print("\n".join(lines + body["stackTrace"]), file=sys.stderr)


def load(handler_path: str) -> tuple[Any, dict[str, Any] | None]:
    """Import the handler module and load its model: the init phase of a cold start."""
    name = os.path.splitext(os.path.basename(handler_path))[0]
    sys.path.insert(0, os.path.dirname(os.path.abspath(handler_path)))  # the task root, as on AWS
    try:
        spec = importlib.util.spec_from_file_location(name, handler_path)
        if spec is None or spec.loader is None:
            raise ImportError(f"no module at {handler_path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    except Exception as exc:
        return None, error_body(exc, "Runtime.ImportModuleError", f"Unable to import module '{name}': {exc}")
    function = getattr(module, "handler", None)
    if not callable(function):
        return None, {"errorMessage": f"Handler 'handler' missing on module '{name}'",
                      "errorType": "Runtime.HandlerNotFound", "requestId": "", "stackTrace": []}  # fmt: skip
    if callable(getattr(module, "session", None)):
        try:
            module.session()  # the model load belongs to the cold start, not to the first invocation
        except Exception as exc:
            return None, error_body(exc)
    return function, None


def invoke(function: Any, header: dict[str, Any], payload: bytes) -> tuple[bool, bytes]:
    request_id = header["request_id"]
    context = Context(request_id, header["deadline_ms"], header.get("client_context"))
    try:
        event = json.loads(payload) if payload else {}
        cpu = time.process_time()
        try:
            result = function(event, context)
        finally:
            _hold_cpu_share(time.process_time() - cpu)
    except Exception as exc:
        body = error_body(exc, skip=1)
    else:
        try:
            return True, json.dumps(result).encode()
        except (TypeError, ValueError) as exc:
            body = error_body(exc, "Runtime.MarshalError", f"Unable to marshal response: {exc}")
    body["requestId"] = request_id
    _log_error(body)
    return False, json.dumps(body).encode()


def _hold_cpu_share(cpu_s: float) -> None:
    """Below one vCPU (memory under 1769 MB), Lambda lets a function run only part of
    the time; having used `cpu_s` of CPU at full speed, wait out the rest, as a CPU
    quota would have made it wait."""
    share = float(os.environ.get("SLUICE_CPU_SHARE", "1") or 1)
    if 0 < share < 1 and cpu_s > 0:
        time.sleep(cpu_s * (1 / share - 1))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: runtime.py HANDLER.py", file=sys.stderr)
        return 2
    frames_in = os.fdopen(os.dup(0), "rb")  # buffered: read(n) waits for all n bytes
    frames_out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdin = open(os.devnull)  # noqa: SIM115
    tee = _Tee(sys.stderr)
    sys.stdout = sys.stderr = tee  # type: ignore[assignment]

    function, failure = load(argv[1])
    if failure is not None:
        _log_error(failure)
        write_message(frames_out, {"ok": False, "log": tee.take()}, json.dumps(failure).encode())
        return 1
    write_message(frames_out, {"ok": True, "log": tee.take()}, b"")
    while True:
        head = read_frame(frames_in)
        payload = read_frame(frames_in) if head is not None else None
        if payload is None:
            return 0
        ok, body = invoke(function, json.loads(head), payload)
        sys.stdout.flush()
        write_message(frames_out, {"ok": ok, "log": tee.take()}, body)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
