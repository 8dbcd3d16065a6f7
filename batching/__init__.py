"""Request and batch types, the per-model queue, batching policies, and the models
behind the adaptive policy: arrival processes, their fitting, the exact latency and
cost model, and the tuner.

Nothing in this package does I/O or reads a clock: every decision takes `now`.

The adaptive policy's models (fitting, latency, tuner: scipy) load on first use, so a
fixed-policy `sluice sim` or a worker does not pay scipy's import time (about 0.7 s).
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .arrivals import MAP, gamma_renewal_sample
from .formation import Formation, form_batches
from .policy import BatchLimits, BatchPolicy, FixedPolicy, NoBatchingPolicy
from .queue import BatchQueue
from .tensors import concat_inputs, split_outputs
from .types import Batch, Request

if TYPE_CHECKING:
    from .adaptive import AdaptivePolicy
    from .arrival_fits import fit_arrivals
    from .counting import CountingProcess
    from .estimator import ArrivalEstimator
    from .fitting import FitResult, describe, fit_map2
    from .latency import WaitDistribution, WindowTables, wait_distribution
    from .likelihood import log_likelihood
    from .phase_fit import fit_hyper_map
    from .tuner import Choice, Target, TuneResult, tune, tune_coarse_to_fine, tune_for_budget

_LAZY = {
    "AdaptivePolicy": "adaptive",
    "CountingProcess": "counting",
    "ArrivalEstimator": "estimator",
    "fit_arrivals": "arrival_fits",
    "fit_hyper_map": "phase_fit",
    "log_likelihood": "likelihood",
    **dict.fromkeys(("FitResult", "describe", "fit_map2"), "fitting"),
    **dict.fromkeys(("WaitDistribution", "WindowTables", "wait_distribution"), "latency"),
    **dict.fromkeys(("Choice", "Target", "TuneResult", "tune", "tune_coarse_to_fine", "tune_for_budget"), "tuner"),
}


def __getattr__(name: str) -> Any:
    """Load a lazy name's module on first use (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value

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
    "fit_arrivals",
    "fit_hyper_map",
    "fit_map2",
    "form_batches",
    "gamma_renewal_sample",
    "log_likelihood",
    "split_outputs",
    "tune",
    "tune_coarse_to_fine",
    "tune_for_budget",
    "wait_distribution",
]
