"""The discrete-event simulator: the same batching and scheduling policies at virtual time.

`simulate()` runs a policy over arrival times (a trace file or a synthetic process)
on a simulated FaaS or server-pool target built from a measured service profile,
and reports latency percentiles, SLO attainment and cost.
"""

from .engine import Engine, Event
from .profiles import ProfileError, ServiceCurve, ServiceProfile
from .results import SimResult
from .simulate import TARGETS, WarmEnvironments, simulate
from .sources import parse_arrivals, parse_spec, read_trace

__all__ = [
    "TARGETS",
    "Engine",
    "Event",
    "ProfileError",
    "ServiceCurve",
    "ServiceProfile",
    "SimResult",
    "WarmEnvironments",
    "parse_arrivals",
    "parse_spec",
    "read_trace",
    "simulate",
]
