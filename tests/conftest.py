"""Shared fixtures: real gateway processes on 127.0.0.1, started and stopped per test or session,
a Redis server, and the input files of the `sluice sim` and `sluice tune` tests. The helpers
they and the tests use are in support.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from backends.worker.demo import demo_model_path

from support import SIM_PROFILE, TUNE_PROFILE, TUNE_TRACE_ARRIVALS, GatewayProcess, RedisServer, start_gateway

# Hypothesis times each example; on a stalled machine any deadline is a coin toss.
settings.register_profile("sluice", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("sluice")


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test credentials for boto3's chain, in this process and in the gateways it starts."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="session")
def demo_path() -> Path:
    return demo_model_path()


@pytest.fixture(scope="session")
def reference(demo_path: Path):
    """The demo model run directly with onnxruntime, to compare the gateway's answers with."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(demo_path), providers=["CPUExecutionProvider"])
    return lambda x: session.run(["y"], {"x": x})[0]


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory, demo_path: Path) -> Iterator[GatewayProcess]:
    """One shared gateway for tests that do not disturb it: 2 workers, B=16, T=10 ms."""
    gw = start_gateway(
        tmp_path_factory.mktemp("gw"), "--model", f"demo={demo_path}", "--workers", "2",
        "--batch-size", "16", "--timeout-ms", "10", "--max-body-bytes", "1000000",
    )  # fmt: skip
    yield gw
    gw.stop()


@pytest.fixture
def redis_server(tmp_path: Path):
    """A real Redis server of this test's own, stopped after it."""
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def profile_path(tmp_path: Path) -> str:
    """A `sluice sim` profile file (tests of `sluice sim`)."""
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(SIM_PROFILE))
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A profile, a trace of Poisson arrivals and a one-arrival trace (tests of `sluice tune`)."""
    folder = tmp_path_factory.mktemp("tune_cli")
    (folder / "profile.json").write_text(json.dumps(TUNE_PROFILE))
    gaps = np.random.default_rng(1).exponential(1 / 40.0, TUNE_TRACE_ARRIVALS - 1)
    times = np.concatenate([[0.0], np.cumsum(gaps)])
    (folder / "trace.txt").write_text("".join(f"{t:.6f}\n" for t in times))
    (folder / "one.txt").write_text("12.5\n")
    return {"profile": str(folder / "profile.json"), "trace": str(folder / "trace.txt"), "one": str(folder / "one.txt")}
