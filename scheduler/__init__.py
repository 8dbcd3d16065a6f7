"""Placement of batches and planning of pools: the `Scheduler` interface, the cost-aware
hybrid scheduler, baselines, forecasters, keeping FaaS environments warm, and the dispatch
core (`Dispatcher`: admission, the backlog, placement, retries, the pool's state and bill)
that the gateway and the simulator both drive.

Like `batching/`, nothing here does I/O or reads a clock.
"""

from .backlog import Backlog
from .breaker import CircuitBreaker
from .budget import faas_demand, split_budget
from .clock import Clock, CoreTimer
from .actions import Actions, Failure, Send
from .dispatch import Dispatcher
from .environments import WarmEnvironments
from .fleet import RATE_WINDOW_S, FunctionSettings, Fleet, Ledger, Seat
from .baselines import BUILT_IN, FaasOnly, FixedPool, Mark, PoolOnly, load_scheduler
from .fill import batch_fill, function_price
from .forecast import Ewma, Holt, Seasonal
from .hybrid import HybridScheduler
from .keepwarm import IdleTimes, KeepWarmPolicy
from .lookback import PoolModel, enough_instances, replay_costs
from .placement import InstanceState, pick_instance
from .prior import Prior, same_time_of_day
from .types import ArrivalView, FaasView, InstanceView, Placement, PoolPlan, Prices, Scheduler, View, batch_deadline

__all__ = [
    "CircuitBreaker",
    "faas_demand",
    "split_budget",
    "Clock",
    "CoreTimer",
    "Actions",
    "Dispatcher",
    "Failure",
    "Send",
    "WarmEnvironments",
    "RATE_WINDOW_S",
    "FunctionSettings",
    "Fleet",
    "Ledger",
    "Seat",
    "Backlog",
    "BUILT_IN",
    "ArrivalView",
    "Ewma",
    "FaasOnly",
    "FixedPool",
    "FaasView",
    "Holt",
    "HybridScheduler",
    "IdleTimes",
    "InstanceState",
    "InstanceView",
    "KeepWarmPolicy",
    "Mark",
    "Placement",
    "PoolModel",
    "PoolOnly",
    "PoolPlan",
    "Prices",
    "Prior",
    "Scheduler",
    "Seasonal",
    "View",
    "batch_deadline",
    "load_scheduler",
    "enough_instances",
    "batch_fill",
    "function_price",
    "pick_instance",
    "replay_costs",
    "same_time_of_day",
]
