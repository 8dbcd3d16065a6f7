"""Placement of batches and planning of pools: the `Scheduler` interface, the cost-aware
hybrid scheduler, baselines, forecasters, and keeping FaaS environments warm.

Like `batching/`, nothing here does I/O or reads a clock.
"""

from .backlog import Backlog
from .baselines import BUILT_IN, FaasOnly, Mark, PoolOnly, load_scheduler
from .forecast import Ewma, Holt, Seasonal
from .hybrid import HybridScheduler
from .keepwarm import IdleTimes, KeepWarmPolicy
from .placement import InstanceState, pick_instance
from .types import ArrivalView, FaasView, InstanceView, Placement, PoolPlan, Prices, Scheduler, View, batch_deadline

__all__ = [
    "Backlog",
    "BUILT_IN",
    "ArrivalView",
    "Ewma",
    "FaasOnly",
    "FaasView",
    "Holt",
    "HybridScheduler",
    "IdleTimes",
    "InstanceState",
    "InstanceView",
    "KeepWarmPolicy",
    "Mark",
    "Placement",
    "PoolOnly",
    "PoolPlan",
    "Prices",
    "Scheduler",
    "Seasonal",
    "View",
    "batch_deadline",
    "load_scheduler",
    "pick_instance",
]
