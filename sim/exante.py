"""The best fixed count chosen before the run: what knowing the traffic's law is worth (issue 15).

The family's cheapest baseline is a setting chosen knowing the whole run, most often a fixed
pool of the run's best size. No scheduler sees the run in advance; at most it knows the
traffic's law (its kind, level, cycle and burstiness: from a recorded week of it, say),
not the draw. `exante` gives a fixed pool that knowledge: the count cheapest on average over
other draws of the member's traffic (`Member.arrivals(draw)`), priced in hybrid's model of
a pool as `sim.clairvoyant` prices it. Its cost on the member over the member's own best
count says how much of the baseline's edge is the draw (a scheduler could not have it) and
how much the law (a scheduler could learn it, or be told it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scheduler import enough_instances

from .clairvoyant import Pricing, member_counts, step_costs
from .family import Member


@dataclass(frozen=True)
class ExAnte:
    count: int  # the count cheapest on average over the other draws
    best: int  # the member's own best fixed count
    ratio: float  # `count`'s cost on the member over `best`'s, in the model
    typical: float  # the same with each draw in turn as the run and the others as the law, averaged


def fixed_costs(member: Member, draws: int, step_s: float = 10.0) -> np.ndarray:
    """(draws + 1, counts): each fixed count's cost over the member's run (row 0) and over
    `draws` other draws of its traffic, in the model."""
    pricing = Pricing.of(member)
    runs = [member_counts(member, draw) for draw in range(draws + 1)]
    most = max(enough_instances(pricing.model, counts, 64) for counts in runs)
    return np.array([step_costs(counts, pricing.model, step_s=step_s, instance_per_s=pricing.instance_per_s,
                                per_request=pricing.per_request(counts), most=most).sum(axis=1) for counts in runs])  # fmt: skip


def exante(member: Member, draws: int = 8) -> ExAnte:
    """The count a scheduler that knows the member's law, not its draw, would hold."""
    relative = fixed_costs(member, draws)
    relative = relative / relative.min(axis=1, keepdims=True)  # each run's counts over its best

    def chosen(run: int) -> int:  # cheapest on average over the other runs
        return int(np.argmin(np.delete(relative, run, axis=0).mean(axis=0)))

    typical = float(np.mean([relative[run, chosen(run)] for run in range(draws + 1)]))
    return ExAnte(chosen(0), int(np.argmin(relative[0])), float(relative[0, chosen(0)]), typical)
