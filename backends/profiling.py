"""Measure how long a backend takes per batch size: the s(b) the tuner needs.

Batches are synthetic (zeros of the model's input shapes, batch axis = b), timed
end to end through the backend, so the gateway-to-worker hop is included: that
is what a request waits for.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import numpy as np

from .base import Backend
from .metadata import ModelMetadata
from .oip import DTYPES


def synthetic_inputs(metadata: ModelMetadata, batch_size: int) -> dict[str, np.ndarray]:
    """Zeros shaped like the model's inputs, with `batch_size` rows; free inner dimensions get 1."""
    inputs = {}
    for spec in metadata.inputs:
        shape = [batch_size] + [d if d >= 0 else 1 for d in spec.shape[1:]]
        if spec.datatype == "BYTES":
            inputs[spec.name] = np.full(shape, b"", dtype=object)
        else:
            inputs[spec.name] = np.zeros(shape, dtype=DTYPES[spec.datatype])
    return inputs


async def measure_batch_times(
    backend: Backend, metadata: ModelMetadata, sizes: Sequence[int] = (1, 2, 4, 8, 16, 32, 64), repeats: int = 5
) -> dict[int, float]:
    """Median seconds per batch for each size (after one warm-up call per size)."""
    times: dict[int, float] = {}
    for size in sizes:
        inputs = synthetic_inputs(metadata, size)
        await backend.infer(inputs)  # warm-up: allocations, caches
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            await backend.infer(inputs)
            samples.append(time.perf_counter() - started)
        times[size] = statistics.median(samples)
    return times


def service_curve(measured: dict[int, float], max_batch: int) -> np.ndarray:
    """s(b) for b = 1..max_batch by linear interpolation between the measured sizes
    (and linear extrapolation from the last two), never decreasing in b."""
    sizes = np.array(sorted(measured), dtype=float)
    seconds = np.array([measured[int(s)] for s in sizes])
    b = np.arange(1, max_batch + 1, dtype=float)
    curve = np.interp(b, sizes, seconds)
    if len(sizes) >= 2:
        slope = (seconds[-1] - seconds[-2]) / (sizes[-1] - sizes[-2])
        beyond = b > sizes[-1]
        curve[beyond] = seconds[-1] + slope * (b[beyond] - sizes[-1])
    return np.maximum.accumulate(curve)
