"""Property tests for concatenating request tensors and splitting outputs back."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from batching import concat_inputs, split_outputs

DTYPES = [np.dtype(np.float32), np.dtype(np.int64), np.dtype(np.bool_)]

Tensors = dict[str, np.ndarray]


def assert_identical(actual: np.ndarray, expected: np.ndarray) -> None:
    """Same dtype, same shape, same bytes (so NaN and -0.0 count too)."""
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    assert np.ascontiguousarray(actual).tobytes() == np.ascontiguousarray(expected).tobytes()


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[int], list[Tensors]]:
    """Per-request tensors that agree on names, dtypes and trailing dims; row counts differ."""
    names = draw(st.lists(st.sampled_from(["x", "mask", "ids", "emb"]), min_size=1, max_size=4, unique=True))
    specs = {
        name: (draw(st.sampled_from(DTYPES)), tuple(draw(st.lists(st.integers(0, 3), max_size=2))))
        for name in names
    }
    rows = draw(st.lists(st.integers(1, 5), min_size=1, max_size=6))
    per_request = [
        {
            name: draw(hnp.arrays(dtype, (n, *trailing), elements=elements(dtype)))
            for name, (dtype, trailing) in specs.items()
        }
        for n in rows
    ]
    return rows, per_request


def elements(dtype: np.dtype) -> st.SearchStrategy:
    if dtype == np.float32:
        return st.floats(width=32, allow_nan=True, allow_infinity=True)
    return hnp.from_dtype(dtype)


@settings(max_examples=200, deadline=None)
@given(batches())
def test_concat_then_split_round_trips(batch: tuple[list[int], list[Tensors]]) -> None:
    rows, per_request = batch
    merged = concat_inputs(per_request)
    assert set(merged) == set(per_request[0])
    for name, array in merged.items():
        assert array.shape[0] == sum(rows)
        assert array.dtype == per_request[0][name].dtype
    pieces = split_outputs(merged, rows)
    assert len(pieces) == len(per_request)
    for piece, original in zip(pieces, per_request):
        assert set(piece) == set(original)
        for name in original:
            assert_identical(piece[name], original[name])


@settings(max_examples=200, deadline=None)
@given(batches())
def test_concat_stacks_requests_in_order(batch: tuple[list[int], list[Tensors]]) -> None:
    rows, per_request = batch
    merged = concat_inputs(per_request)
    start = 0
    for n, original in zip(rows, per_request):
        for name, array in original.items():
            assert_identical(merged[name][start : start + n], array)
        start += n


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(st.integers(1, 5), min_size=1, max_size=6),
    dtype=st.sampled_from(DTYPES),
    trailing=st.lists(st.integers(0, 3), max_size=2),
    error=st.integers(-3, 3).filter(lambda e: e != 0),
    bad_index=st.integers(0, 2),
)
def test_split_rejects_wrong_row_count(
    rows: list[int], dtype: np.dtype, trailing: list[int], error: int, bad_index: int
) -> None:
    total = sum(rows)
    bad_rows = max(0, total + error)
    if bad_rows == total:
        bad_rows = total + 1
    outputs = {f"out{i}": np.zeros((total, *trailing), dtype=dtype) for i in range(3)}
    outputs[f"out{bad_index}"] = np.zeros((bad_rows, *trailing), dtype=dtype)
    with pytest.raises(ValueError):
        split_outputs(outputs, rows)


@pytest.mark.parametrize("dtype", DTYPES)
def test_split_rejects_scalar_output(dtype: np.dtype) -> None:
    with pytest.raises(ValueError):
        split_outputs({"y": np.zeros((), dtype=dtype)}, [1])


def test_concat_rejects_empty_batch() -> None:
    with pytest.raises(ValueError):
        concat_inputs([])


def test_split_of_single_request_keeps_all_rows() -> None:
    y = np.arange(6, dtype=np.int64).reshape(3, 2)
    (piece,) = split_outputs({"y": y}, [3])
    assert_identical(piece["y"], y)
