"""The discrete-event simulator: the same batching and scheduling policies at virtual time.

`simulate()` runs a policy over arrival times (a trace file or a synthetic process)
on a simulated FaaS or server-pool target built from a measured service profile,
and reports latency percentiles, SLO attainment and cost. `simulate_served()` serves
them as the gateway would (`Serving`: its pool, function, scheduler, admission and
deadlines), through the gateway's own dispatch core; `simulate_scheduled()` compares
schedulers on the same arrivals.
"""

from .engine import Engine, Event
from .profiles import ProfileError, ServiceCurve, ServiceProfile
from .results import SimResult
from .scheduled import simulate_scheduled
from .served import Serving, simulate_served
from .simulate import TARGETS, WarmEnvironments, simulate
from .sources import parse_arrivals, parse_spec, read_trace

__all__ = [
    "TARGETS",
    "Engine",
    "Event",
    "ProfileError",
    "ServiceCurve",
    "ServiceProfile",
    "Serving",
    "SimResult",
    "WarmEnvironments",
    "parse_arrivals",
    "parse_spec",
    "read_trace",
    "simulate",
    "simulate_scheduled",
    "simulate_served",
]
