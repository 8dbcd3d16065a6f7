"""Online estimate of the arrival process: a sliding window, a fitted MAP, and change detection.

The tuner needs a model of the traffic now, not averaged over a period whose rate
has moved on. So the estimator keeps the arrival times of the last `window_s`
seconds, refits the arrival model to their gaps at most every `refit_s` seconds
(`fit_arrivals`: MAP(2) or a MAP of up to 4 phases, whichever predicts the latest
gaps best; the same fits `sluice tune` uses), and runs
a change detector; when it fires, the data before the estimated change point is
dropped and the model is refitted at once.

Change detection is a two-sided CUSUM (Page, 1954) in continuous time, testing
the reference rate lambda0 against lambda0 x `up_ratio` and x `down_ratio`.
The log-likelihood ratio of a stretch of time dt with k arrivals is
k log(ratio) - (ratio - 1) lambda0 dt, so the "up" statistic jumps at each
arrival and decays in between, the "down" one the reverse (it also grows when
nothing arrives: `rate` and `model` advance it); each is reset to zero whenever
it would go negative, and an alarm is raised when one exceeds `threshold`. On an
alarm the change point is estimated by maximum likelihood over the held data
(one change, both Poisson rates free), the data before it is dropped, and a new
segment starts. `changes` counts the alarms; `last_change` is the latest change
point.

Bursty traffic: the log-likelihood ratio is divided by the dispersion phi of
the reference (a quasi-Poisson likelihood), so stationary traffic whose counts
vary phi times more than Poisson counts needs phi times more evidence. phi is
the variance-to-mean ratio of the counts in equal bins of the reference (as
many as fit, each at least `dispersion_bin_s` wide, at most `max_bins` of them,
so a longer reference is measured on a longer time scale), taken at the upper
end of its `dispersion_confidence` interval (chi-square, bins - 1 degrees of
freedom) and never below 1: a short reference errs towards fewer alarms.
lambda0 and phi are recomputed every `refit_s` seconds. The detector sleeps
until the segment holds `min_arrivals` arrivals and `min_bins` bins, and, at
start-up, `warmup_s` seconds, so that bursts have had time to show in phi.
After a change the old phi stays a floor for `warmup_s` seconds: traffic that
was bursty is presumed to stay so.

Behaviour with the defaults (simulated): with phi = 1, Poisson traffic raises
a false alarm about once per 5 * 10^5 arrivals. A rate that quadruples is
detected after about threshold * phi / 1.77 arrivals at the old rate: 0.15 s on
average for 100/s -> 400/s (phi about 2 there), but seconds for traffic as
bursty as an MMPP(2) with SCV 3 (phi 25 to 125). Over 60 s runs: no alarm in 100
runs each of Poisson traffic and of three MMPP(2)s with SCV 3 to 8.5, alarms in
2 of 100 runs of an MMPP(2) switching between 100/s (for 1 s) and 1000/s
(0.1 s). Bursts that last longer than the detection time are changes, as far
as the detector can tell.
"""

from __future__ import annotations

import functools
import math
from bisect import bisect_left

import numpy as np
from scipy import special, stats

from .arrival_fits import fit_arrivals
from .fitting import FitResult


def _bin_counts(times: np.ndarray, start: float, width: float, bins: int) -> np.ndarray:
    """Sorted times counted in bins: exactly np.bincount(np.minimum(((times - start) /
    width).astype(int), bins - 1), minlength=bins), found by bisection, since that bin
    never decreases as the time grows (a fifth of the cost on 60 000 times)."""

    def bin_of(t: float) -> int:
        return min(int((t - start) / width), bins - 1)

    edges = [0]
    for k in range(1, bins):
        edges.append(bisect_left(times, k, lo=edges[-1], key=bin_of))
    edges.append(len(times))
    return np.diff(np.array(edges, dtype=np.intp))


@functools.lru_cache(maxsize=256)
def _chi2_quantile(q: float, dof: int) -> float:
    """stats.chi2.ppf, remembered: the reference asks for the same few every refresh."""
    return stats.chi2.ppf(q, dof)


class _TimeRing:
    """Arrival times in a growable ring buffer of at most `capacity` entries, oldest first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._data = np.empty(min(capacity, 1024))
        self._start = 0  # physical index of the oldest time
        self.size = 0

    def append(self, t: float) -> float | None:
        """Add t; if full, drop the oldest time and return it."""
        dropped = None
        if self.size == len(self._data):
            if len(self._data) < self.capacity:
                grown = min(self.capacity, 2 * len(self._data))
                self._data = np.concatenate([self.array(), np.empty(grown - self.size)])
                self._start = 0
            else:
                dropped = self.oldest()
                self._start = (self._start + 1) % len(self._data)
                self.size -= 1
        self._data[(self._start + self.size) % len(self._data)] = t
        self.size += 1
        return dropped

    @property
    def slots(self) -> int:
        """Times it can hold before it must grow (or, at capacity, push the oldest out)."""
        return len(self._data)

    def oldest(self) -> float:
        return float(self._data[self._start])

    def drop_oldest(self) -> None:
        self._start = (self._start + 1) % len(self._data)
        self.size -= 1

    def drop_through(self, t: float) -> None:
        """Drop every time <= t."""
        while self.size and self.oldest() <= t:
            self.drop_oldest()

    def count_through(self, t: float | np.ndarray) -> int | np.ndarray:
        """How many held times are <= t (each of t, if an array): what `drop_through(t)` would drop."""
        end = self._start + self.size
        count = np.searchsorted(self._data[self._start : min(end, len(self._data))], t, side="right")
        if end > len(self._data):
            count = count + np.searchsorted(self._data[: end - len(self._data)], t, side="right")
        return count

    def extend_through(self, times: np.ndarray, through: float) -> None:
        """Leave the buffer, slot for slot, as `drop_through(b)` then `append(t)` for each
        sorted time t would, with non-decreasing bounds b of which `through` is the last:
        only the last bound decides what is dropped. The caller makes sure the buffer
        would never be full at an append (no growth, nothing pushed out)."""
        length, added = len(self._data), len(times)
        if not added:
            return
        dropped = int(self.count_through(through)) + min(int(np.searchsorted(times, through, side="right")), added - 1)
        skip = max(0, added - length)  # written over by later ones within this call
        at = (self._start + self.size + skip) % length
        head = min(added - skip, length - at)
        self._data[at : at + head] = times[skip : skip + head]
        self._data[: added - skip - head] = times[skip + head :]
        self._start = (self._start + dropped) % length
        self.size += added - dropped

    def array(self) -> np.ndarray:
        end = self._start + self.size
        if end <= len(self._data):
            return self._data[self._start : end].copy()
        return np.concatenate([self._data[self._start :], self._data[: end - len(self._data)]])


class ArrivalEstimator:
    """Rate and fitted MAP of the recent arrivals, adapting at once to sustained rate changes."""

    def __init__(
        self,
        window_s: float = 30.0,
        min_arrivals: int = 50,
        refit_s: float = 1.0,
        threshold: float = 12.0,
        up_ratio: float = 2.0,
        down_ratio: float = 0.5,
        dispersion_bin_s: float = 0.5,
        min_bins: int = 4,
        max_bins: int = 16,
        warmup_s: float = 10.0,
        dispersion_confidence: float = 0.95,
        max_arrivals: int = 1_000_000,
    ) -> None:
        if not window_s > 0 or not refit_s >= 0 or not threshold > 0 or min_arrivals < 2:
            raise ValueError("window_s and threshold must be positive, refit_s non-negative, min_arrivals >= 2")
        if not up_ratio > 1 or not 0 < down_ratio < 1 or not dispersion_bin_s > 0 or min_bins < 2:
            raise ValueError("need up_ratio > 1, 0 < down_ratio < 1, dispersion_bin_s > 0, min_bins >= 2")
        self.window_s, self.min_arrivals, self.refit_s, self.threshold = window_s, min_arrivals, refit_s, threshold
        self.up_ratio, self.down_ratio = up_ratio, down_ratio
        self.dispersion_bin_s, self.min_bins, self.max_bins = dispersion_bin_s, min_bins, max_bins
        self.warmup_s, self.dispersion_confidence = warmup_s, dispersion_confidence
        self._carried_dispersion: float | None = None  # phi before the latest change
        self._times = _TimeRing(max_arrivals)
        self._since: float | None = None  # the data held is complete from here on (first arrival or change point)
        self._clock: float | None = None  # the latest time seen
        self._fit: FitResult | None = None
        self._fit_at = -math.inf
        self._reference_at = -math.inf
        self._rate0 = 0.0  # lambda0 of the detector; 0 while it sleeps
        self._dispersion = 1.0
        self._up = self._down = 0.0
        self._up_from = self._down_from = 0.0
        self.changes = 0
        self.last_change: float | None = None  # the estimated change point of the latest alarm

    # -- input -----------------------------------------------------------------------

    def observe(self, now: float) -> None:
        """Record one arrival at time `now`."""
        self._advance(now)
        if self._since is None:
            self._since = now
            return  # the first arrival opens the record; rates count the arrivals after it
        dropped = self._times.append(now)
        if dropped is not None:
            self._since = max(self._since, dropped)
        if self._rate0 > 0:
            self._up += math.log(self.up_ratio) / self._dispersion
            self._down += math.log(self.down_ratio) / self._dispersion
            if self._down <= 0:
                self._down, self._down_from = 0.0, now
            if self._up > self.threshold or self._down > self.threshold:
                self._change(self._up_from if self._up > self.threshold else self._down_from, now)
        if now - self._reference_at >= self.refit_s:
            self._refresh_reference(now)

    def observe_many(self, times: np.ndarray) -> int:
        """Record arrivals in order, up to and including the first that raises an alarm (the
        caller may act on it before the next); how many were recorded. The state is, to the
        bit, what `observe` once per arrival leaves (which costs ~2 us an arrival): arrivals
        between refreshes of the reference only move the clock, the buffer and the CUSUM, so
        they go in bulk; the others (the first, a refresh, an alarm, a buffer that fills,
        time going backwards) go through `observe`."""
        times = np.asarray(times, dtype=float)
        changes, i = self.changes, 0
        while i < len(times):
            i = self._observe_plain(times, i)
            if i < len(times):
                self.observe(float(times[i]))
                i += 1
                if self.changes != changes:
                    break
        return i

    # -- output ----------------------------------------------------------------------

    def rate(self, now: float) -> float:
        """Arrivals per second over the window (or since the last change, if later); 0 before any."""
        self._advance(now)
        start = self._window_start(now)
        span = now - start if start is not None else 0.0
        return self._times.size / span if span > 0 else 0.0

    def gaps(self, now: float) -> np.ndarray | None:
        """The window's gaps, to fit elsewhere (the fit takes tens of milliseconds: the
        gateway runs it in its solver process); None with fewer than `min_arrivals` arrivals."""
        self._advance(now)
        if self._times.size < self.min_arrivals:
            return None
        return np.diff(self._times.array())

    def model(self, now: float) -> FitResult | None:
        """The arrival model fitted to the window's gaps (`fit_arrivals`); None with fewer than `min_arrivals` arrivals."""
        self._advance(now)
        if self._times.size < self.min_arrivals:
            return None
        if self._fit is None or now - self._fit_at >= self.refit_s:
            self._fit = fit_arrivals(np.diff(self._times.array()))
            self._fit_at = now
        return self._fit

    @property
    def arrivals_held(self) -> int:
        return self._times.size

    # -- internals -------------------------------------------------------------------

    def _window_start(self, now: float) -> float | None:
        return None if self._since is None else max(self._since, now - self.window_s)

    def _advance(self, now: float) -> None:
        """Move the clock to `now`: evict old arrivals, run the detector's statistics up to now."""
        if self._clock is not None and now < self._clock:
            raise ValueError(f"time went backwards: {now} < {self._clock}")
        elapsed = now - self._clock if self._clock is not None else 0.0
        self._clock = now
        self._times.drop_through(now - self.window_s)
        if self._rate0 <= 0 or elapsed <= 0:
            return
        up_drift = (self.up_ratio - 1.0) * self._rate0 / self._dispersion
        if self._up <= up_drift * elapsed:
            self._up_from = now - elapsed + self._up / up_drift  # where the statistic reached zero
            self._up = 0.0
        else:
            self._up -= up_drift * elapsed
        self._down += (1.0 - self.down_ratio) * self._rate0 / self._dispersion * elapsed
        if self._down > self.threshold:
            self._change(self._down_from, now)

    def _observe_plain(self, times: np.ndarray, i: int) -> int:
        """Record in bulk the arrivals from times[i] on that `observe` would take without a
        refresh, an alarm, a full buffer or a clock error; the index of the first it leaves."""
        if self._since is None or self._clock is None:
            return i
        # The search only bounds the run; the refresh test below is `observe`'s own.
        end = i + int(np.searchsorted(times[i:], self._reference_at + self.refit_s, side="right")) + 1
        run = times[i:end]
        elapsed = np.diff(run, prepend=self._clock)
        stop = ~(elapsed >= 0) | (run - self._reference_at >= self.refit_s)
        count = int(np.argmax(stop)) if stop.any() else len(run)
        count = self._before_full(run[:count])
        if count and self._rate0 > 0:
            now, gaps = run[:count].tolist(), elapsed[:count].tolist()
            count, state = self._cusum(now, gaps)
            if count < len(now):  # an alarm at arrival `count`: the state just before it
                state = self._cusum(now[:count], gaps[:count])[1]
            self._up, self._down, self._up_from, self._down_from = state
        if count:
            self._clock = float(run[count - 1])
            self._times.extend_through(run[:count], self._clock - self.window_s)
        return i + count

    def _before_full(self, run: np.ndarray) -> int:
        """How many of `run` can be appended before the buffer is full at an append
        (it would grow or push the oldest out: `observe` does that)."""
        ring = self._times
        if ring.size + len(run) <= ring.slots:
            return len(run)
        bounds = run - self.window_s  # each arrival's eviction, as `_advance` computes it
        earlier = np.arange(len(run))
        dropped = ring.count_through(bounds) + np.minimum(np.searchsorted(run, bounds, side="right"), earlier)
        held = ring.size + earlier - dropped  # before each arrival's append
        full = held >= ring.slots
        return int(np.argmax(full)) if full.any() else len(run)

    def _cusum(self, times: list[float], elapsed: list[float]) -> tuple[int, tuple[float, float, float, float]]:
        """`_advance` and `observe`'s CUSUM steps, arrival by arrival, with the reference
        fixed: how many arrivals pass before the first alarm, and (up, down, up_from,
        down_from) where the steps stop (part-way into the alarm's arrival, if any)."""
        # Python floats: the same IEEE arithmetic as numpy's scalars (phi is one), several times faster.
        up, down, up_from, down_from = float(self._up), float(self._down), float(self._up_from), float(self._down_from)
        up_drift = float((self.up_ratio - 1.0) * self._rate0 / self._dispersion)
        down_drift = float((1.0 - self.down_ratio) * self._rate0 / self._dispersion)
        up_jump = float(math.log(self.up_ratio) / self._dispersion)
        down_jump = float(math.log(self.down_ratio) / self._dispersion)
        threshold = float(self.threshold)
        for k, (now, gap) in enumerate(zip(times, elapsed)):
            if gap > 0:
                if up <= up_drift * gap:
                    up_from = now - gap + up / up_drift
                    up = 0.0
                else:
                    up -= up_drift * gap
                down += down_drift * gap
                if down > threshold:
                    return k, (up, down, up_from, down_from)
            up += up_jump
            down += down_jump
            if down <= 0:
                down, down_from = 0.0, now
            if up > threshold or down > threshold:
                return k, (up, down, up_from, down_from)
        return len(times), (up, down, up_from, down_from)

    def _refresh_reference(self, now: float) -> None:
        """Recompute lambda0 and phi from the segment in the window; sleep if there is too little."""
        self._reference_at = now
        start = self._window_start(now)
        span = now - start if start is not None else 0.0
        bins = min(self.max_bins, int(span / self.dispersion_bin_s))
        carried = self._carried_dispersion if span < self.warmup_s else None
        if self._times.size < self.min_arrivals or bins < self.min_bins or (span < self.warmup_s and carried is None):
            self._rate0, self._up, self._down = 0.0, 0.0, 0.0
            return
        times = self._times.array()
        width = span / bins
        counts = _bin_counts(times, start, width, bins)
        mean = counts.mean()
        ratio = counts.var(ddof=1) / mean if mean > 0 else 1.0
        upper = ratio * (bins - 1) / _chi2_quantile(1.0 - self.dispersion_confidence, bins - 1)
        if self._rate0 <= 0:
            self._up_from = self._down_from = now
        self._rate0 = self._times.size / span
        self._dispersion = max(1.0, upper, carried or 1.0)

    def _change(self, hint: float, now: float) -> None:
        """A change detected at `now`: drop what came before it and start a new segment."""
        change_point = self._change_point(now, hint)
        self.changes += 1
        self.last_change = change_point
        self._carried_dispersion = self._dispersion
        self._times.drop_through(change_point)
        self._since = change_point
        self._fit, self._fit_at = None, -math.inf
        self._rate0, self._up, self._down = 0.0, 0.0, 0.0
        self._reference_at = -math.inf

    def _change_point(self, now: float, hint: float) -> float:
        """The maximum-likelihood point of one change of Poisson rate in the held data.

        The CUSUM's own start of run (`hint`) is the likeliest change point for a
        change by exactly the design ratio; the real ratio is unknown, so the
        split is chosen again with both rates free, maximising
        N1 log(N1 / T1) + N2 log(N2 / T2). Within a gap that is convex in the
        split time, so only the instants just before and just after each
        arrival need to be tried.
        """
        start = self._window_start(now)
        times = self._times.array()
        if start is None or now <= start or len(times) == 0:
            return hint
        splits = np.concatenate((np.nextafter(times, -np.inf), times))
        n1 = np.concatenate((np.arange(len(times)), np.arange(1, len(times) + 1))).astype(float)
        n2 = len(times) - n1
        t1, t2 = np.maximum(splits - start, 1e-12), np.maximum(now - splits, 1e-12)
        likelihood = special.xlogy(n1, n1 / t1) + special.xlogy(n2, n2 / t2)
        return float(splits[int(np.argmax(likelihood))])
