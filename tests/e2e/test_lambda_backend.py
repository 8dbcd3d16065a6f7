"""The Lambda backend through real boto3 against `sluice faas-emulator`, in process and behind
the gateway: batches formed, outputs equal to onnxruntime, throttling absorbed, nothing lost."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from backends import BackendError
from backends.lambda_backend import PAYLOAD_LIMIT, InvocationReport, LambdaBackend

from support import scrape_demo, send, start_emulator, start_gateway, total, v2_body

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("aws_credentials")]


async def test_a_batch_over_6_mb_is_split_and_a_bad_one_fails_alone(demo_path, reference) -> None:
    emulator = start_emulator("--function", f"demo={demo_path}", "--max-concurrency", "4")
    reports: list[InvocationReport] = []
    backend = LambdaBackend("demo", region="us-east-1", endpoint_url=f"http://127.0.0.1:{emulator.port}", on_report=reports.append)
    try:
        x = np.random.default_rng(1).standard_normal((3000, 256)).astype(np.float32)  # about 9 MB of JSON
        outputs = await backend.infer({"x": x})
        np.testing.assert_allclose(outputs["y"], reference(x), rtol=1e-5, atol=1e-6)
        assert len(reports) >= 2 and all(r.ok for r in reports), "the batch should have gone out in parts"
        assert reports[0].report is not None and reports[0].report.billed_ms >= 1
        with pytest.raises(BackendError, match="unknown input 'z'"):
            await backend.infer({"z": x[:2]})
        metadata = await backend.metadata()
        assert [t.name for t in metadata.inputs] == ["x"] and metadata.batchable
        assert await backend.ready()
        assert not await LambdaBackend("missing", region="us-east-1", endpoint_url=f"http://127.0.0.1:{emulator.port}").ready()
    finally:
        await backend.close()
        assert emulator.stop() == 0
    assert PAYLOAD_LIMIT == 6 * 1024 * 1024


def function_config(tmp_path, port: int, *, model: tuple[str, ...], faas: tuple[str, ...]) -> Path:
    """A config serving the demo model on the emulator's function: `model` and `faas`, lines of
    its [models.demo] and [models.demo.faas] tables beside the function's address."""
    lines = ["[models.demo]", *model, "[models.demo.faas]", 'function = "demo"', 'region = "us-east-1"',
             f'endpoint_url = "http://127.0.0.1:{port}"', *faas]  # fmt: skip
    config = tmp_path / "sluice.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


async def post(session: aiohttp.ClientSession, url: str, x: np.ndarray) -> tuple[int, dict]:
    async with session.post(f"{url}/v2/models/demo/infer", json=v2_body(x)) as resp:
        return resp.status, await resp.json()


async def test_the_gateway_batches_onto_the_function_and_absorbs_throttling(tmp_path, demo_path, reference) -> None:
    """The function allows 1 invocation at a time, the gateway tries 3: throttled
    invocations are retried until they run, and every request gets its right answer."""
    emulator = start_emulator("--function", f"demo={demo_path}", "--max-concurrency", "1")
    config = function_config(tmp_path, emulator.port, model=("batch_size = 8", "timeout_ms = 20"),
                             faas=("memory_mb = 1024", "concurrency = 3"))  # fmt: skip
    gw = None
    try:
        gw = start_gateway(tmp_path, "--config", str(config))
        rng = np.random.default_rng(5)
        xs = [rng.standard_normal((1, 256)).astype(np.float32) for _ in range(150)]
        async with aiohttp.ClientSession() as session:
            answers = await asyncio.gather(*(post(session, gw.url, x) for x in xs))
            async with session.get(f"{gw.url}/metrics") as resp:
                text = await resp.text()
        metrics = await scrape_demo(gw.url)
    finally:
        if gw is not None:
            assert gw.stop() == 0
        assert emulator.stop() == 0
    for x, (status, body) in zip(xs, answers):
        assert status == 200, body
        np.testing.assert_allclose(np.array(body["outputs"][0]["data"]).reshape(1, 10), reference(x), rtol=1e-5, atol=1e-6)
    batches = metrics[("sluice_batch_size_count", None)]
    assert metrics[("sluice_batch_size_sum", None)] == 150 and batches < 150 / 2, "requests should share invocations"
    # Every batch ran once, plus the startup call that asked the function for its metadata.
    assert total(text, "sluice_faas_invocations_total", outcome="ok") == batches + 1
    assert total(text, "sluice_faas_invocations_total", outcome="error") == 0
    assert total(text, "sluice_faas_throttles_total") > 0
    assert total(text, "sluice_faas_cold_starts_total") == 1  # one environment, reused
    billed = total(text, "sluice_faas_billed_seconds_total")
    assert total(text, "sluice_cost_usd_total", backend="faas") == pytest.approx(billed * 0.0000166667 + (batches + 1) * 0.0000002)


async def test_keep_warm_pings_bridge_gaps_longer_than_the_keep_alive(tmp_path, demo_path) -> None:
    """Requests every 1.6 s, the emulator keeps an idle environment 1.5 s: every request is a
    cold start until the gateway's histogram has 10 gaps, then pings keep it warm. The
    gateway is told a keep-alive of 1 s, shorter than the provider's, as a user who cannot
    know it should. Its pings then come 0.9 s into a gap, 0.6 s before the environment
    would go (or, where the gaps plainly outlast 1 s, a cold start's time before the next
    request is due): room for a stalled machine."""
    emulator = start_emulator("--function", f"demo={demo_path}", "--keep-alive-s", "1.5")
    config = function_config(tmp_path, emulator.port, model=('policy = "none"',),
                             faas=("keep_warm = true", "keep_alive_s = 1.0"))  # fmt: skip
    gw = None
    colds = []
    try:
        gw = start_gateway(tmp_path, "--config", str(config))
        x = np.zeros((1, 256), dtype=np.float32)
        async with aiohttp.ClientSession() as session:
            for _ in range(16):
                status, _ = await post(session, gw.url, x)
                assert status == 200
                colds.append(emulator.metric("sluice_faas_emulator_cold_starts_total", function="demo"))
                await asyncio.sleep(1.6)
            async with session.get(f"{gw.url}/metrics") as resp:
                text = await resp.text()
    finally:
        if gw is not None:
            assert gw.stop() == 0
        assert emulator.stop() == 0
    learning, warm = np.diff(colds[:12]), np.diff(colds[12:])
    assert learning.sum() >= 8, f"gaps past the keep-alive should start cold while the policy learns: {colds}"
    assert warm.sum() == 0, f"once learned, pings should keep it warm: {colds}"
    assert total(text, "sluice_faas_invocations_total", outcome="ping") >= 3
    assert total(text, "sluice_faas_cold_starts_total") == colds[-1]  # no ping started one


async def test_an_slo_on_a_function_only_model_tunes_against_the_function(tmp_path, demo_path, reference) -> None:
    emulator = start_emulator("--function", f"demo={demo_path}")
    config = function_config(tmp_path, emulator.port, model=("slo_ms = 150",), faas=())
    gw = None
    try:
        gw = start_gateway(tmp_path, "--config", str(config))
        rng = np.random.default_rng(3)
        xs = [rng.standard_normal((1, 256)).astype(np.float32) for _ in range(40)]
        async with aiohttp.ClientSession() as session:
            answers = await asyncio.gather(*(post(session, gw.url, x) for x in xs))
        logs = gw.logs()
    finally:
        if gw is not None:
            assert gw.stop() == 0
        assert emulator.stop() == 0
    for x, (status, body) in zip(xs, answers):
        assert status == 200, body
        np.testing.assert_allclose(np.array(body["outputs"][0]["data"]).reshape(1, 10), reference(x), rtol=1e-5, atol=1e-6)
    measured = next(e for e in logs if e.get("msg") == "measured service times")
    assert set(measured["ms"]) >= {"1", "8", "64"}
    ready = next(e for e in logs if e.get("msg") == "model ready")
    assert "AdaptivePolicy" in ready["policy"]


def test_profile_measures_each_memory_size_and_leaves_the_function_as_it_was(tmp_path, demo_path) -> None:
    import json
    import subprocess
    import sys

    import boto3

    emulator = start_emulator("--function", f"demo={demo_path}", "--memory-mb", "1024")
    endpoint = f"http://127.0.0.1:{emulator.port}"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "profile", "--target", "faas", "--function", "demo", "--endpoint-url",
             endpoint, "--region", "us-east-1", "--memory-mb", "512,2048", "--batch-sizes", "1,16", "--repeats", "3",
             "--cold-starts", "1", "--json"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        client = boto3.client("lambda", endpoint_url=endpoint, region_name="us-east-1")
        after = client.get_function_configuration(FunctionName="demo")
    finally:
        assert emulator.stop() == 0
    assert done.returncode == 0, done.stderr
    faas = json.loads(done.stdout)["faas"]
    curves = faas["memory_mb"]
    assert set(curves) == {"512", "2048"}
    # Below one vCPU (1769 MB) a function runs only part of the time: 512 MB is slower.
    assert curves["512"]["batch_ms"]["16"] > 1.5 * curves["2048"]["batch_ms"]["16"]
    assert faas["cold_start_ms"] > 0 and faas["invoke_overhead_ms"] > 0
    assert after["MemorySize"] == 1024 and "SLUICE_PROFILE_NONCE" not in after["Environment"]["Variables"]


async def test_the_adaptive_policy_re_tunes_a_function_live(tmp_path, demo_path) -> None:
    """An SLO on a function-backed model: the gateway measures s(b) on the function, then
    its solver process fits the window's arrivals and tunes (B, T) while requests flow;
    the event loop only hands over the gaps and applies the choice."""
    emulator = start_emulator("--function", f"demo={demo_path}", "--max-concurrency", "8")
    config = function_config(tmp_path, emulator.port, model=("slo_ms = 1000", "percentile = 95"),
                             faas=("memory_mb = 1024", "concurrency = 8"))  # fmt: skip
    gw = None
    try:
        gw = start_gateway(tmp_path, "--config", str(config))
        await send(gw.url, 40.0, 9.0, np.random.default_rng(2))  # light, with a loose SLO: nothing is refused on a busy machine
        metrics = await scrape_demo(gw.url)
        logs = gw.logs()
    finally:
        if gw is not None:
            assert gw.stop() == 0
        assert emulator.stop() == 0
    retuned = [e for e in logs if e.get("msg") == "re-tuned"]
    assert retuned, "the first re-tune is due 5 s after traffic starts"
    first = retuned[0]
    assert first["feasible"] and first["batch_size"] > 1, first
    assert first["fit"] and 20.0 < first["rate"] < 80.0, first
    assert metrics[("sluice_policy_retunes", None)] >= 1
    assert metrics[("sluice_batch_size_limit", None)] == retuned[-1]["batch_size"]
