"""Request and batch types, the per-model queue, batching policies, and the models
behind the adaptive policy: arrival processes, their fitting, the exact latency and
cost model, and the tuner.

Nothing in this package does I/O or reads a clock: every decision takes `now`.
"""

from .adaptive import AdaptivePolicy
from .arrivals import MAP, gamma_renewal_sample
from .counting import CountingProcess
from .estimator import ArrivalEstimator
from .fitting import FitResult, describe, fit_map2
from .formation import Formation, form_batches
from .latency import WaitDistribution, WindowTables, wait_distribution
from .policy import BatchLimits, BatchPolicy, FixedPolicy, NoBatchingPolicy
from .queue import BatchQueue
from .tensors import concat_inputs, split_outputs
from .tuner import Choice, Target, TuneResult, tune, tune_coarse_to_fine, tune_for_budget
from .types import Batch, Request

__all__ = [
    "MAP",
    "AdaptivePolicy",
    "ArrivalEstimator",
    "Batch",
    "BatchLimits",
    "BatchPolicy",
    "BatchQueue",
    "Choice",
    "CountingProcess",
    "FitResult",
    "FixedPolicy",
    "Formation",
    "NoBatchingPolicy",
    "Request",
    "Target",
    "TuneResult",
    "WaitDistribution",
    "WindowTables",
    "concat_inputs",
    "describe",
    "fit_map2",
    "form_batches",
    "gamma_renewal_sample",
    "split_outputs",
    "tune",
    "tune_coarse_to_fine",
    "tune_for_budget",
    "wait_distribution",
]
