"""Admission control: refuse at once what cannot be served in time, rather than queue it to fail later.

A new request waits behind the batches and rows already waiting (of its priority or
higher), which the pool's slots drain at the measured service time s(rows) = a + b rows,
then for its own batch to close and be served. When that prediction passes the request's budget (its deadline, or
the model's SLO), the gateway answers 429 with a Retry-After of about how long the
backlog needs to shrink enough. Until a batch has been measured there is nothing
to predict with, and every request is admitted. Pure functions of their arguments:
no clock, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .overrun import OverrunTracker


class ServiceMeter:
    """A batch's service time on one instance slot, s(rows) = a + b * rows, fitted online to
    finished batches by least squares with exponential forgetting (recent batches count
    most). Requests of very different sizes are why it has two terms: a backlog of a few
    huge requests drains at the per-row rate, one of many single rows at the per-batch one."""

    def __init__(self, memory: float = 64.0) -> None:
        self.decay = 1.0 - 1.0 / memory
        self.batches = 0
        self._w = self._x = self._y = self._xx = self._xy = 0.0

    def record(self, rows: int, seconds: float) -> None:
        d = self.decay
        self._w = self._w * d + 1.0
        self._x = self._x * d + rows
        self._y = self._y * d + seconds
        self._xx = self._xx * d + rows * rows
        self._xy = self._xy * d + rows * seconds
        self.batches += 1

    def fit(self) -> tuple[float, float]:
        """(a, b), both at least 0.

        While every batch had one size n, the split between the two terms is unknown.
        Of single rows (n = 1) it is all per batch. Of larger batches it is all per row,
        through the origin: charged per batch, a backlog of single-row batches behind one
        measured batch of 12,000 rows was predicted at 12,000 times its length, and
        refused for minutes of work it would have done in milliseconds. Per row errs the
        other way for a smaller batch (too short, which the corrections learn from the
        answers) until a batch of another size is measured."""
        if self._w == 0:
            return 0.0, 0.0
        mx, my = self._x / self._w, self._y / self._w
        var = self._xx / self._w - mx * mx
        if var <= 1e-9 * max(1.0, mx * mx):  # one size so far
            return (my, 0.0) if mx <= 1.0 else (0.0, my / mx)
        b = max(0.0, (self._xy / self._w - mx * my) / var)
        a = my - b * mx
        if a < 0:  # the line would start below zero: all per-row, through the origin
            a, b = 0.0, my / mx if mx > 0 else 0.0
        return a, b

    def seconds(self, rows: float) -> float:
        a, b = self.fit()
        return a + b * rows


@dataclass(frozen=True)
class Admission:
    admitted: bool
    predicted_s: float  # the predicted time from now to the answer, margins included
    drain_s: float = 0.0  # of which: waiting for the work ahead (before its margin)
    retry_after_s: float = 0.0
    reason: str = ""


def admit(
    *, ahead_rows: int, ahead_batches: int, rows: int, pending: int, max_pending: int, slots: int,
    meter: ServiceMeter, max_wait_s: float, budget_s: float, margin: float = 0.0, allowance_s: float = 0.0,
    budget_is_slo: bool = False,
) -> Admission:  # fmt: skip
    """Admit a request of `rows` rows, behind `ahead_rows` rows in `ahead_batches` batches,
    with `budget_s` left to its deadline? `slots`: batches the healthy instances take at
    once (0: an outage, which the runner's grace period handles, so admit). `pending`:
    requests admitted and not yet answered, bounded by `max_pending` whatever the prediction.

    Two corrections learnt from answers: the drain behind the backlog is stretched by
    `1 + margin` (an error in the measured throughput grows with the backlog), and
    `allowance_s` is added for what a short queue's prediction leaves out (timers, the
    gateway's own handling).

    `budget_is_slo`: the budget is a latency SLO (a percentile target), not the request's
    own deadline. Then only the backlog's drain and the service are judged, not the open
    batch's wait (the batching policy sets it to meet the SLO at its percentile) nor the
    allowance (noise in a short queue's tail, which the percentile tolerates): admission
    is there to refuse the backlog, never a request that finds none. The prediction
    returned still holds every term, so the corrections keep learning from the answers."""
    if pending >= max_pending:
        return Admission(False, math.inf, 0.0, 1.0, f"{pending} requests are already pending (max_pending)")
    if meter.batches == 0 or slots <= 0:
        return Admission(True, 0.0)
    a, b = meter.fit()
    drain_s = (ahead_batches * a + ahead_rows * b) / slots
    predicted = drain_s * (1.0 + margin) + max_wait_s + a + b * rows + allowance_s
    judged = drain_s * (1.0 + margin) + a + b * rows if budget_is_slo else predicted
    if judged <= budget_s:
        return Admission(True, predicted, drain_s)
    retry = max(1.0, math.ceil(judged - budget_s))
    what = "SLO" if budget_is_slo else "deadline"
    return Admission(False, predicted, drain_s, retry,
                     f"predicted latency {judged * 1e3:.0f} ms exceeds the {budget_s * 1e3:.0f} ms {what}")  # fmt: skip


class Corrections:
    """How far off admission's predictions run, learnt from the answers: the drain behind
    a backlog is stretched by `1 + margin` (the throughput's error grows with it), and
    `allowance_s` is added to every prediction (what a short queue's prediction leaves out).

    Under overload every admitted request is predicted right at the edge, so the share
    answered late is the share of misses beyond the correction: take the 99.5th
    percentile, half the tail a p99 SLO allows. The quantile of a window of answers is
    a short memory at high rates (2048 answers is 14 s at 150 a second), and a shared
    host slows for a second every tens of seconds: a correction that fell back as soon
    as the last slow spell left the window let the next one make the whole backlog
    admitted at the edge late (2-3% of a 20 s overload). So a correction rises to the
    quantile as soon as an answer misses beyond it, and falls towards it only with a
    half-life of `HALF_LIFE_S`: a few requests refused too many is the cheaper error,
    and under overload it costs no throughput, only a shorter queue."""

    HALF_LIFE_S = 60.0

    def __init__(self) -> None:
        self._drain_misses = OverrunTracker(0.995, window=2048, minimum=32, ceiling_s=4.0)
        self._short_misses = OverrunTracker(0.995, window=2048, minimum=32, ceiling_s=1.0)
        self.margin = 0.0
        self.allowance_s = 0.0
        self._answers = 0
        self._updated = None  # when the corrections last fell

    @property
    def now(self) -> tuple[float, float]:
        """(margin, allowance) as predictions use them now; `learn` is told which a prediction used."""
        return self.margin, self.allowance_s

    def learn(self, admission: Admission, used: tuple[float, float], took_s: float, now: float) -> None:
        """A request predicted by `admission` (with corrections `used`) was answered after `took_s`, at `now`."""
        if admission.predicted_s <= 0:
            return
        drain, (margin, allowance) = admission.drain_s, used
        if drain > 0.5 * admission.predicted_s:
            rest = admission.predicted_s - drain * (1.0 + margin) - allowance
            miss = (took_s - rest) / drain - 1.0
            self._drain_misses.record(miss)
            if miss > self.margin:
                self.margin = max(self.margin, self._drain_misses.allowance())
        else:
            miss = took_s - (admission.predicted_s - allowance)
            self._short_misses.record(miss)
            if miss > self.allowance_s:
                self.allowance_s = max(self.allowance_s, self._short_misses.allowance())
        self._answers += 1
        if self._answers % 32 == 0:  # two sorts of 2048 values: every 32nd answer
            keep = 0.5 ** ((now - self._updated) / self.HALF_LIFE_S) if self._updated is not None else 0.0
            self._updated = now
            self.margin = _fall(self.margin, self._drain_misses.allowance(), keep)
            self.allowance_s = _fall(self.allowance_s, self._short_misses.allowance(), keep)


def _fall(value: float, target: float, keep: float) -> float:
    """`value` moved towards a lower `target`, keeping `keep` of the difference; a higher target at once."""
    return target if target >= value else target + (value - target) * keep
