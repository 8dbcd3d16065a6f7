"""Request capture in process: the settings and their errors, the record format, the
sampling's statistics, rotation, and a destination that stalls (a FIFO nobody reads: a
real file whose open and writes block) never holding up the caller."""

from __future__ import annotations

import asyncio
import os
import select
import time
from pathlib import Path

import numpy as np
import pytest

from gateway.capture.records import decode_tensor, encode_tensor, read_source, to_arrays
from gateway.capture.writer import Capture, CaptureConfig
from gateway.config import ConfigError, load
from gateway.metrics import Metrics
from support import metric


def _config(tmp_path: Path, table: str) -> Path:
    path = tmp_path / "sluice.toml"
    path.write_text(f'[models.lin]\npath = "{tmp_path / "lin.onnx"}"\n[models.lin.capture]\n{table}\n')
    return path


def test_a_capture_table_is_read(tmp_path: Path) -> None:
    config = load(str(_config(tmp_path, f'destination = "file://{tmp_path}"\nfraction = 0.25\nerrors = true\nkeep = "inputs"')))
    capture = config.models["lin"].capture
    assert capture == CaptureConfig(destination=f"file://{tmp_path}", fraction=0.25, errors=True, keep="inputs")


@pytest.mark.parametrize(
    "table, named",
    [
        ('destination = "file:///no/such/dir"', r"\[capture\] destination 'file:///no/such/dir'.*not a directory"),
        ('destination = "ftp://host/dir"', r"\[capture\] destination 'ftp://host/dir' must be file://DIR or s3://"),
        ('destination = "s3:///prefix"', r"\[capture\] destination 's3:///prefix' names no bucket"),
        ('destination = "file://{tmp}"\nfraction = 1.5', r"\[capture\] fraction = 1.5 must be between 0 and 1"),
        ('destination = "file://{tmp}"\nfraction = -0.1', r"\[capture\] fraction = -0.1"),
        ('destination = "file://{tmp}"\nkeep = "labels"', r"\[capture\] keep = 'labels' must be one of inputs, outputs, both"),
        ('destination = "file://{tmp}"\nfraction = "half"', r"\[capture\]: fraction = 'half' is not a valid float"),
        ('destination = "file://{tmp}"\nqueue_mb = 0', r"\[capture\] max_file_mb, max_file_age_s and queue_mb must be positive"),
        ('destination = "file://{tmp}"\nsample = 0.1', r"unknown \[capture\] setting\(s\) \['sample'\]"),
        ("fraction = 0.1", r"\[capture\] needs a destination"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(tmp_path: Path, table: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load(str(_config(tmp_path, table.replace("{tmp}", str(tmp_path)))))


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64", "int64", "uint8", "bool"])
def test_tensors_come_back_bit_for_bit(dtype: str) -> None:
    rng = np.random.default_rng(1)
    array = (rng.standard_normal((3, 5)) * 100).astype(dtype)
    if array.dtype.kind == "f":
        array.flat[:3] = [np.nan, np.inf, -0.0]
    back = decode_tensor(encode_tensor(array))
    assert back.dtype == array.dtype.newbyteorder("=") and back.shape == array.shape
    assert back.tobytes() == array.astype(back.dtype).tobytes()


def test_strings_come_back() -> None:
    array = np.array([[b"a", "\u00e9t\u00e9"]], dtype=object)
    assert decode_tensor(encode_tensor(array)).tolist() == [["a", "\u00e9t\u00e9"]]


def _records(i: int) -> tuple[dict, dict]:
    x = np.full((1, 4), i, dtype=np.float32)
    return {"x": x}, {"y": 2 * x[:, :3]}


async def test_the_sampled_fraction_is_within_its_binomial_bounds(tmp_path: Path) -> None:
    metrics = Metrics()
    config = CaptureConfig(destination=f"file://{tmp_path}", fraction=0.02, errors=True)
    capture = Capture(config, "lin", "1", True, metrics)
    await capture.open()
    capture.start()
    offered, errors = 20_000, 300
    for i in range(offered):
        x, y = _records(i)
        capture.offer(f"r{i}", 200, 0.001, x, y)
    for i in range(errors):  # every error is kept, whatever the fraction
        capture.offer(f"e{i}", 503, 0.002, _records(i)[0], None, b'{"error": "no healthy instance"}')
    await capture.stop()
    records = list(read_source(str(tmp_path)))
    answered = [r for r in records if r["status"] == 200]
    failed = [r for r in records if r["status"] == 503]
    mean, sd = offered * 0.02, (offered * 0.02 * 0.98) ** 0.5
    assert abs(len(answered) - mean) < 4.5 * sd, (len(answered), mean, sd)
    assert len(failed) >= errors and all(r["error"] == "no healthy instance" and "outputs" not in r for r in failed)
    samples = _samples(metrics)
    assert metric(samples, "sluice_capture_records_total", model="lin") == len(records)
    assert metric(samples, "sluice_capture_dropped_total", model="lin") == 0
    arrays, count = to_arrays(answered)
    assert count == len(answered) and arrays["x"].shape == (count, 4) and arrays["y"].shape == (count, 3)
    np.testing.assert_array_equal(arrays["y"], 2 * arrays["x"][:, :3])  # each row's output beside its input


def _samples(metrics: Metrics) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(metrics.render().decode()) for s in f.samples}  # fmt: skip


async def test_files_rotate_by_size_and_by_age_and_every_record_is_read_once(tmp_path: Path) -> None:
    config = CaptureConfig(destination=f"file://{tmp_path}", fraction=1.0, max_file_mb=0.002, max_file_age_s=0.2)
    capture = Capture(config, "lin", "1", True, Metrics(), replica="test")
    await capture.open()
    capture.start()
    for i in range(60):
        capture.offer(f"r{i}", 200, 0.001, *_records(i))
    await asyncio.sleep(0.3)
    capture.offer("late", 200, 0.001, *_records(60))
    await asyncio.sleep(0.6)  # the last record's file is closed by age, not size
    files = sorted(tmp_path.glob("*.jsonl"))
    assert len(files) >= 5 and all(f.name.startswith("lin-1-test-") for f in files)
    assert all(f.stat().st_size < 2 * 2048 for f in files)
    assert not (tmp_path / "lin-1-test.jsonl").exists()  # nothing left open
    await capture.stop()
    ids = [r["request_id"] for r in read_source(str(tmp_path))]
    assert sorted(ids) == sorted([f"r{i}" for i in range(60)] + ["late"])


async def test_keep_outputs_writes_outputs_only(tmp_path: Path) -> None:
    capture = Capture(CaptureConfig(destination=f"file://{tmp_path}", fraction=1.0, keep="outputs"), "lin", "1", True, Metrics())
    await capture.open()
    capture.start()
    capture.offer("r", 200, 0.001, *_records(3))
    await capture.stop()
    (record,) = read_source(str(tmp_path))
    assert "inputs" not in record and decode_tensor(record["outputs"]["y"]).tolist() == [[6.0, 6.0, 6.0]]


async def test_a_stalled_destination_never_holds_up_the_caller_and_drops_are_counted(tmp_path: Path) -> None:
    fifo = tmp_path / "lin-1-stalled.jsonl"
    os.mkfifo(fifo)  # the active file: opening it for writing blocks until a reader comes
    metrics = Metrics()
    config = CaptureConfig(destination=f"file://{tmp_path}", fraction=1.0, queue_mb=0.02, flush_timeout_s=0.2)
    capture = Capture(config, "lin", "1", True, metrics, replica="stalled")
    await capture.open()
    capture.start()
    offered, slowest = 3000, 0.0
    started = time.perf_counter()
    for i in range(offered):
        t = time.perf_counter()
        capture.offer(f"r{i}", 200, 0.001, *_records(i))
        slowest = max(slowest, time.perf_counter() - t)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0 and slowest < 0.05, (elapsed, slowest)  # about 5 us each, stalled or not
    samples = _samples(metrics)
    full = metric(samples, "sluice_capture_dropped_total", model="lin", reason="full")
    assert full > offered - 100  # a 20 KB queue holds a few dozen records
    await capture.stop()  # gives up after flush_timeout_s: what it holds is dropped, counted
    samples = _samples(metrics)
    stopped = metric(samples, "sluice_capture_dropped_total", model="lin", reason="stopped")
    assert stopped > 0 and full + stopped == offered
    assert metric(samples, "sluice_capture_records_total", model="lin") == 0
    # A reader comes: the thread's open returns, it closes the file and ends.
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        give_up = time.monotonic() + 10
        while capture._thread.is_alive() and time.monotonic() < give_up:
            select.select([reader], [], [], 0.05)
            try:
                os.read(reader, 1 << 16)
            except BlockingIOError:
                pass
        assert not capture._thread.is_alive()
    finally:
        os.close(reader)


async def test_writes_that_fail_are_counted_as_errors(tmp_path: Path) -> None:
    (tmp_path / "lin-1-broken.jsonl").mkdir()  # the active file's name is taken: every open fails
    metrics = Metrics()
    capture = Capture(CaptureConfig(destination=f"file://{tmp_path}", fraction=1.0), "lin", "1", True, metrics, replica="broken")
    await capture.open()
    capture.start()
    for i in range(50):
        capture.offer(f"r{i}", 200, 0.001, *_records(i))
    await capture.stop()
    samples = _samples(metrics)
    assert metric(samples, "sluice_capture_dropped_total", model="lin", reason="error") == 50
    assert metric(samples, "sluice_capture_records_total", model="lin") == 0
