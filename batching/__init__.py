"""Request and batch types, the per-model queue, and batching policies.

Nothing in this package does I/O or reads a clock: every decision takes `now`.
"""

from .policy import BatchLimits, BatchPolicy, FixedPolicy, NoBatchingPolicy
from .queue import BatchQueue
from .tensors import concat_inputs, split_outputs
from .types import Batch, Request

__all__ = [
    "Batch",
    "BatchLimits",
    "BatchPolicy",
    "BatchQueue",
    "FixedPolicy",
    "NoBatchingPolicy",
    "Request",
    "concat_inputs",
    "split_outputs",
]
