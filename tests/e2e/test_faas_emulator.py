"""`sluice faas-emulator` end to end: real emulator and environment processes, real boto3, 127.0.0.1 only.

Besides the demo model's functions, the emulator runs a `tool` function whose handler
(written below, passed with `--handler`) sleeps, prints, exits or answers big on
request: it holds concurrency and times out without burning the machine's CPU.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import botocore.config
import numpy as np
import pytest
from botocore.exceptions import ClientError

from backends.faas_emulator import cli as faas_cli

from support import Emulator, alive, start_emulator

pytestmark = pytest.mark.e2e

TOOL_HANDLER = '''
import os, sys, time

print("tool init")


def handler(event, context):
    action = event.get("action", "sleep")
    if action == "exit":
        os._exit(event.get("code", 3))
    if action == "big":
        return {"data": "x" * event["size"]}
    if action == "print":
        print(event["text"])
        print("to stderr", file=sys.stderr)
    started = time.time()
    time.sleep(event.get("seconds", 0))
    return {
        "pid": os.getpid(), "start": started, "end": time.time(), "request_id": context.aws_request_id,
        "function_name": context.function_name, "memory": context.memory_limit_in_mb,
        "remaining_ms": context.get_remaining_time_in_millis(),
    }
'''

TIMEOUT_S = 2  # the main emulator's --timeout-s
REPORT = re.compile(r"REPORT RequestId: (\S+)\tDuration: ([\d.]+) ms\tBilled Duration: (\d+) ms\t"
                    r"Memory Size: (\d+) MB\tMax Memory Used: (\d+) MB\t(?:Init Duration: ([\d.]+) ms\t)?")  # fmt: skip


def make_client(port: int):
    return boto3.client(
        "lambda", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test",
        config=botocore.config.Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=60),
    )  # fmt: skip


def oip(x: np.ndarray, name: str = "x") -> str:
    tensor = {"name": name, "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
    return json.dumps({"inputs": [tensor]})


def invoke(client, function: str, payload, **kwargs) -> tuple[dict, dict | list | str, str]:
    """The response, its decoded payload and its Tail log."""
    if not isinstance(payload, (str, bytes)):
        payload = json.dumps(payload)
    response = client.invoke(FunctionName=function, Payload=payload, LogType="Tail", **kwargs)
    body = json.loads(response["Payload"].read())
    return response, body, base64.b64decode(response["LogResult"]).decode()


@pytest.fixture(scope="module")
def tool_handler(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("faas") / "tool.py"
    path.write_text(TOOL_HANDLER)
    return path


@pytest.fixture(scope="module")
def emulator(demo_path: Path, tool_handler: Path) -> Iterator[Emulator]:
    """Functions: demo, coldwarm and metered (each used by one test for what it counts), tool, and
    broken, whose handler cannot be imported."""
    broken = tool_handler.with_name("broken.py")
    broken.write_text('raise RuntimeError("cannot load this")\n')
    emu = start_emulator(
        "--function", f"demo={demo_path}", "--function", f"coldwarm={demo_path}",
        "--function", f"metered={demo_path}", "--function", f"tool={demo_path}", "--handler", f"tool={tool_handler}",
        "--function", f"broken={demo_path}", "--handler", f"broken={broken}",
        "--max-concurrency", "2", "--timeout-s", str(TIMEOUT_S),
    )  # fmt: skip
    yield emu
    emu.stop()


@pytest.fixture(scope="module")
def client(emulator: Emulator):
    return make_client(emulator.port)


def test_invoke_matches_onnxruntime(client, reference) -> None:
    x = np.random.default_rng(7).standard_normal((3, 256)).astype(np.float32)
    response, body, _ = invoke(client, "demo", oip(x))
    assert response["StatusCode"] == 200 and "FunctionError" not in response
    assert response["ExecutedVersion"] == "$LATEST"
    assert re.fullmatch(r"[0-9a-f-]{36}", response["ResponseMetadata"]["RequestId"])
    (output,) = body["outputs"]
    assert output["name"] == "y" and output["shape"] == [3, 10]
    y = np.asarray(output["data"], dtype=np.float32).reshape(3, 10)
    np.testing.assert_allclose(y, reference(x), rtol=1e-5)


def test_bad_payload_is_an_unhandled_function_error(client) -> None:
    response, body, log = invoke(client, "demo", oip(np.zeros((1, 256), np.float32), name="z"))
    assert response["StatusCode"] == 200 and response["FunctionError"] == "Unhandled"
    assert body["errorType"] == "ValueError"
    assert "unknown input 'z'" in body["errorMessage"] and "'x'" in body["errorMessage"]
    assert body["stackTrace"] and "handler.py" in body["stackTrace"][0]  # the runtime's own frames are not shown
    assert "[ERROR] ValueError: unknown input 'z'" in log


def test_unknown_function(client) -> None:
    with pytest.raises(client.exceptions.ResourceNotFoundException) as info:
        client.invoke(FunctionName="nope", Payload=b"{}")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert "function:nope" in info.value.response["Error"]["Message"]


def test_payload_limits(client) -> None:
    big = b'"' + b"x" * (6 * 1024 * 1024) + b'"'
    with pytest.raises(ClientError) as info:
        client.invoke(FunctionName="demo", Payload=big)
    # The service's front end answers this one, outside Lambda's API model: a plain ClientError.
    assert not isinstance(info.value, client.exceptions.RequestTooLargeException)
    assert info.value.response["Error"]["Code"] == "RequestEntityTooLargeException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    response, body, _ = invoke(client, "tool", {"action": "big", "size": 6 * 1024 * 1024 + 100})
    assert response["StatusCode"] == 200 and response["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Function.ResponseSizeTooLarge"
    with pytest.raises(client.exceptions.InvalidRequestContentException):
        client.invoke(FunctionName="demo", Payload=b"{not json")


def test_dry_run_and_event(emulator: Emulator, client) -> None:
    assert client.invoke(FunctionName="demo", InvocationType="DryRun")["StatusCode"] == 204
    before = emulator.metric("sluice_faas_emulator_invocations_total", function="tool", outcome="ok")
    arn = "arn:aws:lambda:us-east-1:000000000000:function:tool"
    assert client.invoke(FunctionName=arn, InvocationType="Event", Payload=b"{}")["StatusCode"] == 202
    give_up = time.monotonic() + 15
    while emulator.metric("sluice_faas_emulator_invocations_total", function="tool", outcome="ok") == before:
        assert time.monotonic() < give_up, "the Event invocation never ran"
        time.sleep(0.05)


def test_handler_output_and_context(client) -> None:
    response, body, log = invoke(client, "tool", {"action": "print", "text": "hello from the handler"})
    assert "FunctionError" not in response
    start, end = log.index("START RequestId: "), log.index("END RequestId: ")
    assert "hello from the handler" in log[start:end] and "to stderr" in log[start:end]
    assert body["request_id"] == response["ResponseMetadata"]["RequestId"]
    assert body["function_name"] == "tool" and body["memory"] == "1024"
    assert 0 < body["remaining_ms"] <= TIMEOUT_S * 1000


def test_throttling_caps_invocations_in_flight(emulator: Emulator, client) -> None:
    throttles_before = emulator.metric("sluice_faas_emulator_throttles_total", function="tool")
    counted_before = emulator.metric("sluice_faas_emulator_invocations_total", function="tool", outcome="throttled")
    barrier = threading.Barrier(6)
    refused = []

    def call(_: int) -> dict:
        barrier.wait()
        while True:  # retry the 429s ourselves, so that every call eventually runs
            try:
                return json.loads(client.invoke(FunctionName="tool", Payload=b'{"seconds": 0.5}')["Payload"].read())
            except client.exceptions.TooManyRequestsException as exc:
                refused.append(exc)
                time.sleep(0.05)

    with ThreadPoolExecutor(6) as threads:
        runs = list(threads.map(call, range(6)))
    assert refused, "six concurrent calls with --max-concurrency 2: some must be throttled"
    error = refused[0].response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert error["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    edges = sorted([(r["start"], 1) for r in runs] + [(r["end"], -1) for r in runs])
    in_flight = peak = 0
    for _, step in edges:
        in_flight += step
        peak = max(peak, in_flight)
    assert 1 <= peak <= 2
    assert emulator.metric("sluice_faas_emulator_throttles_total", function="tool") - throttles_before == len(refused)
    counted = emulator.metric("sluice_faas_emulator_invocations_total", function="tool", outcome="throttled")
    assert counted - counted_before == len(refused)
    assert emulator.metric("sluice_faas_emulator_environments", function="tool", state="busy") == 0


def test_cold_then_warm(emulator: Emulator, client) -> None:
    x = np.ones((3, 256), np.float32)
    started = time.perf_counter()
    _, _, cold_log = invoke(client, "coldwarm", oip(x))
    cold_s = time.perf_counter() - started
    warm_s, warm_logs = [], []
    for _ in range(3):
        started = time.perf_counter()
        warm_logs.append(invoke(client, "coldwarm", oip(x))[2])
        warm_s.append(time.perf_counter() - started)
    init_ms = REPORT.search(cold_log).group(6)
    assert init_ms is not None and float(init_ms) > 0, cold_log
    assert all(REPORT.search(log).group(6) is None for log in warm_logs), warm_logs
    assert cold_s >= float(init_ms) / 1000  # the caller waited for the init
    assert cold_s - min(warm_s) > 0.05, (cold_s, warm_s)
    assert emulator.metric("sluice_faas_emulator_cold_starts_total", function="coldwarm") == 1


def test_metrics_meter_what_ran(emulator: Emulator, client) -> None:
    logs = [invoke(client, "metered", oip(np.ones((2, 256), np.float32)))[2] for _ in range(2)]
    logs.append(invoke(client, "metered", oip(np.ones((1, 256), np.float32), name="z"))[2])
    reports = [REPORT.search(log) for log in logs]
    billed = sum(int(r.group(3)) for r in reports)
    # Billed: the duration rounded up to the millisecond. The line prints the duration to 0.01 ms,
    # so 3.001 ms reads "3.00" and bills 4: the bill is the ceiling of a value within 0.005 of it.
    for r in reports:
        shown = float(r.group(2))
        assert max(1, int(np.ceil(shown - 0.005))) <= int(r.group(3)) <= max(1, int(np.ceil(shown + 0.005))), r.group(0)
    assert [int(r.group(4)) for r in reports] == [1024] * 3 and all(int(r.group(5)) > 0 for r in reports)

    def m(name: str, **labels: str) -> float:
        return emulator.metric(f"sluice_faas_emulator_{name}", function="metered", **labels)

    assert m("invocations_total", outcome="ok") == 2 and m("invocations_total", outcome="error") == 1
    assert m("invocations_total", outcome="throttled") == 0 and m("throttles_total") == 0
    assert m("cold_starts_total") == 1
    assert m("billed_duration_ms_total") == billed
    assert m("billed_gb_seconds_total") == pytest.approx(billed / 1000 * 1024 / 1024)
    assert m("environments", state="idle") == 1 and m("environments", state="busy") == 0


def test_timeout_kills_the_environment(emulator: Emulator, client) -> None:
    pid = invoke(client, "tool", {})[1]["pid"]
    started = time.perf_counter()
    response, body, log = invoke(client, "tool", {"seconds": 30})
    elapsed = time.perf_counter() - started
    assert response["FunctionError"] == "Unhandled" and body["errorType"] == "Sandbox.Timedout"
    assert f"Task timed out after {TIMEOUT_S:.2f} seconds" in body["errorMessage"]
    assert TIMEOUT_S <= elapsed < TIMEOUT_S + 3
    assert "Status: timeout" in log
    assert not alive(pid), "the timed-out environment (the most recently used one) is still running"
    assert emulator.metric("sluice_faas_emulator_invocations_total", function="tool", outcome="timeout") >= 1
    assert "FunctionError" not in invoke(client, "tool", {})[0]  # the function still works


def test_dead_environment_is_discarded(client) -> None:
    pid = invoke(client, "tool", {})[1]["pid"]
    response, body, _ = invoke(client, "tool", {"action": "exit", "code": 3})
    assert response["FunctionError"] == "Unhandled" and body["errorType"] == "Runtime.ExitError"
    assert "exit status 3" in body["errorMessage"]
    assert not alive(pid)  # the environment that ran it (the most recently used one) is gone
    response, body, log = invoke(client, "tool", {})
    assert "FunctionError" not in response and body["pid"] != pid


def test_init_failure_is_a_function_error(emulator: Emulator, client) -> None:
    response, body, log = invoke(client, "broken", {})
    assert response["FunctionError"] == "Unhandled" and body["errorType"] == "Runtime.ImportModuleError"
    assert "Unable to import module 'broken': cannot load this" in body["errorMessage"]
    assert "Init Duration" in log and log.index("[ERROR] Runtime.ImportModuleError") < log.index("START RequestId")
    assert emulator.metric("sluice_faas_emulator_environments", function="broken", state="idle") == 0


def test_keep_alive_expiry(demo_path: Path) -> None:
    emu = start_emulator("--function", f"demo={demo_path}", "--keep-alive-s", "1")
    try:
        client = make_client(emu.port)
        x = oip(np.ones((1, 256), np.float32))
        first = REPORT.search(invoke(client, "demo", x)[2])
        (pid,) = emu.environment_pids()
        began = time.monotonic()
        while alive(pid) and time.monotonic() - began < 10.0:  # reaped 1 s after use, on a 0.5 s tick
            time.sleep(0.1)
        assert not alive(pid), "the idle environment outlived its keep-alive by 9 s"
        assert emu.metric("sluice_faas_emulator_environments", function="demo", state="idle") == 0
        second = REPORT.search(invoke(client, "demo", x)[2])
        assert first.group(6) is not None and second.group(6) is not None  # both cold
        assert emu.metric("sluice_faas_emulator_cold_starts_total", function="demo") == 2
    finally:
        assert emu.stop() == 0


def test_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "faas-emulator", "--port", "0", "--function", f"demo={tmp_path / 'no.onnx'}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("sluice faas-emulator: ") and len(done.stderr.splitlines()) == 1
    assert "no.onnx" in done.stderr and done.stdout == ""
    for bad in (["--function", "no-equals-sign"], ["--function", "a=", "--memory-mb", "1024"]):
        parser = argparse.ArgumentParser()
        faas_cli.add_arguments(parser)
        assert faas_cli.run(parser.parse_args(bad)) == 2
        err = capsys.readouterr().err
        assert err.startswith("sluice faas-emulator: --function takes NAME=PATH") and len(err.splitlines()) == 1


# Last: it stops the module's emulator.
def test_stop_ends_every_environment(emulator: Emulator, client) -> None:
    with ThreadPoolExecutor(1) as threads:
        pending = threads.submit(client.invoke, FunctionName="tool", Payload=b'{"seconds": 1.5}')
        give_up = time.monotonic() + 15
        while emulator.metric("sluice_faas_emulator_environments", function="tool", state="busy") < 1:
            assert time.monotonic() < give_up
            time.sleep(0.02)
        pids = emulator.environment_pids()
        assert len(pids) >= 4  # idle environments of demo, coldwarm and metered, and the busy one of tool
        started = time.monotonic()
        assert emulator.stop() == 0
        assert time.monotonic() - started < 5
        try:
            pending.result(30)  # answered (a Runtime.ExitError) or cut off: either way it returns
        except Exception:
            pass
    assert [pid for pid in pids if alive(pid)] == []
