"""The function's concurrency shared among gateway replicas: pure, so that every replica,
given the same reports, computes the same shares (`gateway.replicas` carries them)."""

from __future__ import annotations


def split_budget(limit: int, demands: dict[str, int]) -> dict[str, int]:
    """Share `limit` among replicas: each gets its demand if all fit, else a max-min fair
    part (no one above their demand while another is below its fair level); what is
    left over is spread evenly, so that an idle replica can take a burst at once.
    Every replica computes this from the same reports and gets the same answer;
    the shares never sum to more than `limit`."""
    names = sorted(demands)
    share = dict.fromkeys(names, 0)
    left = limit
    wanting = [n for n in names if demands[n] > 0]
    while left > 0 and wanting:
        level = max(1, left // len(wanting))
        for name in wanting:
            give = min(level, demands[name] - share[name], left)
            share[name] += give
            left -= give
        wanting = [n for n in wanting if share[n] < demands[n]]
    for i, name in enumerate(names):  # the rest, evenly; the remainder to the first in order
        if left <= 0:
            break
        extra = left // (len(names) - i) + (1 if left % (len(names) - i) else 0)
        share[name] += extra
        left -= extra
    return share


def faas_demand(high_water: int, share: int, limit: int) -> int:
    """What a replica asks for: twice its peak when it used all its share (so a burst
    gets room fast), else its peak and one more."""
    return min(limit, 2 * high_water if high_water >= share > 0 else high_water + 1)
