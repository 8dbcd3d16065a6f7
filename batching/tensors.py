"""Concatenate request tensors along the batch axis, and split outputs back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

Tensors = Mapping[str, np.ndarray]


def concat_inputs(per_request: Sequence[Tensors]) -> dict[str, np.ndarray]:
    """Stack each named input of every request along axis 0.

    All requests carry the same input names (the gateway validated them against
    the model); a batch of one is passed through without a copy.
    """
    if not per_request:
        raise ValueError("cannot concatenate an empty batch")
    if len(per_request) == 1:
        return dict(per_request[0])
    names = per_request[0].keys()
    return {name: np.concatenate([tensors[name] for tensors in per_request], axis=0) for name in names}


def split_outputs(outputs: Tensors, sizes: Sequence[int]) -> list[dict[str, np.ndarray]]:
    """Cut each output along axis 0 into pieces of `sizes` rows, one per request."""
    total = sum(sizes)
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != total:
            raise ValueError(
                f"output {name!r} has shape {list(array.shape)}, expected {total} rows along the batch axis"
            )
    if len(sizes) == 1:
        return [dict(outputs)]
    bounds = np.cumsum(sizes)[:-1]
    pieces = {name: np.split(array, bounds, axis=0) for name, array in outputs.items()}
    return [{name: pieces[name][i] for name in outputs} for i in range(len(sizes))]
