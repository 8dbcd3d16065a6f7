"""simulate_scheduled(): a `Scheduler` placing batches on a simulated pool and function, at virtual time.

The model is served as the gateway serves it (`sim.served`: the same dispatch core, the
same placement rule, the same plan applied and the same bill); what differs from a
`sluice sim --config` run is the setting a comparison of schedulers wants: no deadlines
and no admission (every request is answered, so costs compare on the same work), no
server at the start but the scheduler's plan for the first minute, ready at once
(yesterday's traffic is known; nobody starts the day cold).
"""

from __future__ import annotations

import math

import numpy as np

from batching import BatchPolicy
from scheduler import Scheduler

from .profiles import ServiceProfile
from .results import SimResult
from .served import Serving, simulate_served


def simulate_scheduled(
    arrivals: np.ndarray, policy: BatchPolicy, profile: ServiceProfile, scheduler: Scheduler, *,
    slo_s: float, memory_mb: int | None = None, keep_alive_s: float = 600.0, concurrency_limit: int | None = None,
    max_instances: int = 64, instance_min_billed_s: float = 60.0,
) -> SimResult:  # fmt: skip
    """Run `policy` batching and `scheduler` placing and planning on the profile's pool and function."""
    if profile.iaas is None and profile.faas is None:
        raise ValueError(f"profile {profile.name!r} has neither a pool ('iaas') nor FaaS")
    serving = Serving(
        servers=0, max_servers=max_instances, function=profile.faas is not None, concurrency=concurrency_limit,
        memory_mb=memory_mb, keep_alive_s=keep_alive_s, timeout_s=math.inf, slo_s=slo_s, admit_on_slo=False,
        max_pending=1 << 62, instance_min_billed_s=instance_min_billed_s, provision_at_start=True,
    )  # fmt: skip
    return simulate_served(arrivals, policy, profile, serving, scheduler, slo_s=slo_s)
