"""How often a request meets a cold FaaS environment, from the arrival model rather than a replay.

Why: the tuner mixes a cold start into the latency of a share p of the requests; p
observed in one replay follows one sample path. Here p follows from the MAP, the
batch-closing law of (B, T), the time a batch holds its environment, the provider's
keep-alive K, the cold start c, a concurrency limit and the run's horizon H.

The provider (`scheduler.environments.WarmEnvironments`) reuses the environment idle
longest. Every warm environment is then reused in turn, so with C(t) the batches in
service and N(t) the batches that closed in (t - K - h, t) (each touched a distinct
environment, as the rotation goes), the warm pool obeys
    W(t) = max(C(t), min(W(t-), N(t)))  =  sup_{s <= t} min(C(s), inf_{(s, t]} N),
and a closing at level C(t-) = m is cold exactly when no environment is free: when
no batch completed within K (N = C, "a gap"), or when, looking back, the pool was
last cut to <= m (an event D_m: N fell to <= m, or the run began) more recently
than concurrency last rose past m (an event U_m).

Approximations, each cheap (one small eigendecomposition per level and target):
- Per MAP phase i, batches close at rate mu_i (the phase's arrivals batched as
  Poisson, rescaled to the exact mean batch size), with gaps between closings a
  fixed open time (T for a batch that times out) plus a gamma rest. C and N given
  the phase are renewal counts in the hold h and in K + h (an M/G/inf occupancy,
  Takacs 1962, with regular rather than Poisson closings), in two parts by the
  phase's age: a phase younger than the span still sees the previous phase's rate.
- U_m and D_m, looking back, come at hazards (entries into the state over the time
  outside it; up-crossings declumped by (m + 1) / (m + 1 + rho), after Aldous 1989,
  the Poisson clumping heuristic); a phase that outlasts K + h brings its own cut.
  Looking back the phase runs the time-reversed chain (Kelly 1979); which event
  comes first is an absorption probability, averaged over the closing's age in
  [0, H] in closed form.
- Start-up from no warm environment: every batch closing before the first one is
  free again is cold, and these hold h + c: 1 + N(h + c) cold starts, from a phase
  drawn from pi; later closings are cold only above that level.
- Cascade: a batch that regrows a cut pool (or one emptied by a gap) holds its new
  environment h + c, so for h + c only the w environments the cut left serve warm,
  a loss system: the share of closings it blocks is Erlang's B(w, rho) (insensitive
  to the hold's law). The level-by-level colds are the first of a cascade: a phase
  counts the larger of the two.
- The gap: no arrival in the K + h - w before the batch opened (w its open time),
  from the MAP's time-reversed D0.
Stationary (H = None): the start-up and the run's start as a cut vanish.
Measured against simulation in tests/unit/test_coldstart.py and bench/coldstart_model.py.
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaincc, gammaln, pdtr

from .arrivals import MAP

_FLOOR = 1e-300


def phase_batching(arrivals: MAP, size_pmf: np.ndarray, timeout_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Per phase: the batch closing rate mu_i and the batch-size law (phases, B).

    Each phase's arrivals are batched as Poisson at its own rate (exact for an MMPP
    whose phases outlast a batch); the rates are then scaled so that their
    stationary mean is the exact closing rate lambda / E[b] of `size_pmf`."""
    pmf = np.asarray(size_pmf, dtype=float)
    big_b = len(pmf)
    lam = arrivals.D1.sum(axis=1)
    mean_count = lam * timeout_s
    k = np.arange(big_b - 1)
    log_pois = k[None, :] * np.log(np.maximum(mean_count, _FLOOR))[:, None] - mean_count[:, None] - gammaln(k + 1)[None, :]
    laws = np.zeros((len(lam), big_b))
    laws[:, : big_b - 1] = np.exp(log_pois)
    laws[:, big_b - 1] = np.clip(1.0 - laws[:, : big_b - 1].sum(axis=1), 0.0, None)
    sizes = np.arange(1, big_b + 1)
    mu = lam / np.maximum(laws @ sizes, 1.0)
    exact = arrivals.rate / float(sizes @ pmf)
    mu *= exact / float(arrivals.theta @ mu)
    return mu, laws


def _eig(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eigenvalues, vectors and inverse vectors of a stack of small matrices."""
    lam, vec = np.linalg.eig(matrix)
    return lam, vec, np.linalg.inv(vec)


def _apply(lam: np.ndarray, vec: np.ndarray, inv: np.ndarray, values: np.ndarray, right: np.ndarray) -> np.ndarray:
    """(V diag(values) V^-1) @ right for stacks; real part."""
    return np.real(np.einsum("...ij,...j,...jk,...k->...i", vec, values, inv, right.astype(complex)))


def _reversed(generator: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """The time-reversed phase generator, Theta^-1 G^T Theta (Kelly 1979)."""
    return (generator.T * theta[None, :]) / np.maximum(theta, _FLOOR)[:, None]


def _expected_closings(q_eig: tuple[np.ndarray, np.ndarray, np.ndarray], mu: np.ndarray, span: np.ndarray) -> np.ndarray:
    """[int_0^span e^{q s} ds mu]_i per phase: closings expected within span from phase i,
    q given by its eigendecomposition `_eig(q)`. span (...,); returns (..., phases)."""
    lam, vec, inv = q_eig
    x = np.asarray(span, dtype=float)[..., None] * lam
    small = np.abs(x) < 1e-9
    safe = np.where(small, 1.0, lam)
    values = np.where(small, np.asarray(span, dtype=float)[..., None] + 0j, np.expm1(x) / safe)
    return _apply(lam, vec, inv, values, mu)


def _log_poisson(levels: np.ndarray, mean: np.ndarray) -> np.ndarray:
    r = np.maximum(mean, _FLOOR)
    return levels * np.log(r) - r - gammaln(levels + 1)


def _renewal_below(levels: np.ndarray, mean: np.ndarray, span: np.ndarray, gaps: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """P(N <= m): N the closings within `span` before a closing, `mean` of them, when the
    gaps between closings are a fixed part d (a batch that times out is open T) plus a
    gamma part of squared CV `scv` (gaps = (d, scv)): N >= k iff k gaps fit, and k gaps
    are k d plus a gamma of shape k / scv. Exact for Poisson arrivals and batches that
    time out; far less dispersed than Poisson when closings come about every T."""
    shift, scv = (np.asarray(x, dtype=float)[..., None] for x in gaps)
    span_ = np.asarray(span, dtype=float)[..., None]
    gap = span_ / np.maximum(np.asarray(mean, dtype=float)[..., None], _FLOOR)
    free = np.maximum(gap - shift, 1e-12)
    shape = 1.0 / scv
    return gammaincc((levels + 1.0) * shape, np.clip(span_ - (levels + 1.0) * shift, 0.0, None) * shape / free)


def _renewal_mean(mean: np.ndarray, span: np.ndarray, gaps: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """E[N] from a closing for the gaps of `_renewal_below`: sum_k P(N >= k), below the
    time-average `mean` when closings are regular (floor(L / g))."""
    top = int(np.max(mean) + 10.0 * np.sqrt(np.max(mean)) + 20.0)
    k = np.arange(top, dtype=float)
    return np.sum(1.0 - _renewal_below(k, mean, span, gaps), axis=-1)


def _two_part(levels: np.ndarray, weight_old: np.ndarray, mean_old: np.ndarray, mean_all: np.ndarray,
              span: np.ndarray, gaps: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """P(N = m), P(N <= m), (..., M), for a count given the phase, in two parts by the
    phase's age: older than the span (its own rate) with weight_old, or younger (the
    rest of the mean, which carries the previous phases' rates)."""
    young = np.clip((mean_all - weight_old * mean_old) / np.maximum(1.0 - weight_old, 1e-12), 0.0, None)
    below = weight_old[..., None] * _renewal_below(levels, mean_old, span, gaps)
    below = below + (1.0 - weight_old)[..., None] * _renewal_below(levels, young, span, gaps)
    pmf = np.diff(below, axis=-1, prepend=0.0)
    return np.clip(pmf, 0.0, 1.0), np.clip(below, 0.0, 1.0)


def _gap_law(arrivals: MAP, laws: np.ndarray, mu: np.ndarray, timeout_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Per phase, the time between closings as (fixed part, squared CV of the rest): the
    batch's open time (T when it times out, else the B - 1 arrivals that fill it) plus
    the exponential wait for the next opener."""
    lam = np.maximum(arrivals.D1.sum(axis=1), _FLOOR)
    fills = laws[:, -1]
    k = laws.shape[1] - 1
    fill_mean, fill_var = k / lam, k / lam**2
    open_mean = (1 - fills) * timeout_s + fills * np.minimum(fill_mean, timeout_s)
    open_sq = (1 - fills) * timeout_s**2 + fills * np.minimum(fill_var + fill_mean**2, timeout_s**2)
    var = np.clip(open_sq - open_mean**2, 0.0, None) + 1.0 / lam**2
    shift = np.clip((1 - fills) * timeout_s, 0.0, 0.999 / mu)
    return shift[None, :], np.clip(var * mu**2 / (1.0 - shift[None, :][0] * mu) ** 2, 1e-4, 1e4)[None, :]


def cold_by_phase(
    arrivals: MAP,
    size_pmf: np.ndarray,
    busy_s: np.ndarray,
    keep_alive_s: float,
    timeout_s: float,
    concurrency: int | None = None,
    horizon_s: float | None = None,
    cold_start_s: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per target and MAP phase: the probability that a batch closing in that phase
    meets a cold start ((targets, phases); `cold_probability` for the arguments), the
    phase law of a closing and the mean batch size per phase. Cold starts gather in
    the phases where concurrency peaks, so the latency model mixes them per phase."""
    busy = np.atleast_2d(np.asarray(busy_s, dtype=float))
    pmf = np.asarray(size_pmf, dtype=float)
    big_b, n, theta = len(pmf), arrivals.order, arrivals.theta
    mu, laws = phase_batching(arrivals, pmf, timeout_s)
    gen = arrivals.D0 + arrivals.D1
    back = _reversed(gen, theta)
    back_eig = _eig(back)
    leave = -np.diag(gen)  # rate of leaving each phase
    hold = busy[:, :big_b] @ laws.T  # (targets, phases): mean warm hold of a batch closing in phase i
    targets = len(hold)
    share = theta * mu / float(theta @ mu)  # the phase of a closing
    mean_hold = hold @ share  # (targets,)
    cold_s, keep = float(cold_start_s), float(keep_alive_s)

    gaps = _gap_law(arrivals, laws, mu, timeout_s)  # (1, phases) each
    # Concurrency C at a closing, given its phase (M/G/inf, two parts by the phase's age).
    diag = np.arange(n)
    smooth = _expected_closings(back_eig, mu, hold)[..., diag, diag]  # (t, phases)
    own = mu[None, :] * hold
    top = float(max(own.max(), smooth.max()))
    levels = int(top + 8.0 * np.sqrt(top) + 12.0)
    if concurrency is not None:
        levels = min(levels, int(concurrency))  # at the cap a batch waits, warm
    m = np.arange(levels, dtype=float)
    p_level, c_below = _two_part(m, np.exp(-leave[None, :] * hold), own, smooth, hold, gaps)  # (t, phases, M)
    c_r = np.maximum(own, smooth)[..., None]
    # U_m: concurrency past m, looking back: entries into {C > m} (arrivals finding m,
    # declumped) over the time outside it.
    clump = p_level * (m + 1) / (m + 1 + c_r)
    hazard_u = mu[None, :, None] * clump / np.maximum(c_below, 1e-12)

    # D_m: the window count N (closings within K + h) at most m, which cuts the pool to m.
    span = keep + hold  # (t, phases)
    old = np.exp(-leave[None, :] * span)
    n_own = mu[None, :] * span
    n_pmf, n_below = _two_part(m, old, n_own, _expected_closings(back_eig, mu, span)[..., diag, diag], span, gaps)
    own_below = _renewal_below(m, n_own, span, gaps)  # the phase's own window, once the phase outlasts it
    # entering a phase that outlasts the window: the cut comes with it (P = old)
    x = leave[None, :] * span
    settle = np.where(x > 1e-9, leave[None, :] / np.expm1(np.clip(x, 1e-9, 700.0)), 1.0 / span)
    hazard_d = settle[..., None] * own_below + mu[None, :, None] * n_pmf / np.maximum(1.0 - n_below, 1e-12)
    hazard_d = np.minimum(hazard_d, 1e9)

    # Looking back from a closing: which of U_m, D_m (or the run's start) comes first.
    rate_u, rate_d = hazard_u.transpose(0, 2, 1), hazard_d.transpose(0, 2, 1)  # (t, M, phases)
    g = back[None, None] - np.eye(n)[None, None] * (rate_u + rate_d)[..., None, :]
    lam, vec, inv = _eig(g)
    if horizon_s is None:
        d_first = _apply(lam, vec, inv, -1.0 / np.where(np.abs(lam) < 1e-12, -1e-12, lam), rate_d)
        neither = np.zeros_like(d_first)
    else:  # averaged over the closing's age, uniform in [0, H]
        h_s = float(horizon_s)
        x = lam * h_s
        tiny = np.abs(x) < 1e-6
        xs = np.where(tiny, 1.0, x)
        avg_exp = np.where(tiny, 1.0 + x / 2, np.expm1(x) / xs)
        avg_int = np.where(tiny, h_s / 2 * (1 + x / 3), (np.expm1(x) - x) / (np.where(tiny, 1.0, lam) * xs))
        d_first = _apply(lam, vec, inv, avg_int, rate_d)
        neither = _apply(lam, vec, inv, avg_exp, np.ones_like(rate_d))
    d_first = np.clip(d_first, 0.0, 1.0).transpose(0, 2, 1)  # (t, phases, M)
    neither = np.clip(neither, 0.0, 1.0).transpose(0, 2, 1)
    # At level 0 the previous closing is the last rise: the pool was cut since only on a gap.
    d_first[..., 0] = 0.0
    neither[..., 0] = 0.0

    # Start-up: every closing before the first environment is free again is cold: 1 + closings in h + c.
    burst_mean = _expected_closings(back_eig, mu, mean_hold + cold_s)  # (t, phases)
    burst_span = hold + cold_s
    # P(1 + N <= m), the run starting in a phase drawn from pi (whatever phase the closing is in)
    burst_below = np.where(m >= 1, _renewal_below(m - 1.0, burst_mean, burst_span, gaps), 0.0)  # by start phase
    burst_below = np.einsum("p,tpm->tm", arrivals.pi, burst_below)[:, None, :]
    # Cascade: a batch that regrows a cut pool holds its environment c longer, so for
    # h + c after it only the w environments left by the cut serve warm, as a loss
    # system (Erlang B, insensitive to the hold's law): the closings it blocks are cold.
    regrow = hazard_u * (d_first + neither * burst_below)  # rate of "cut to m (or a start-up below it), then past m"
    recent = -np.expm1(-(hold + cold_s)[..., None] * regrow)  # a regrowth through m within h + c
    cut_at = np.diff(np.maximum.accumulate(recent, axis=-1), axis=-1, prepend=0.0)  # ... from a cut at m
    offered = own[..., None]
    blocked = np.exp(_log_poisson(m, offered)) / np.maximum(pdtr(m, offered), _FLOOR)  # Erlang B(w, rho)
    cascade = np.einsum("tpm,tpm->tp", cut_at, np.clip(blocked, 0.0, 1.0))  # (t, phases)

    # The gap: no arrival within K + h - w before the batch opened (w its open time).
    open_s = timeout_s * (1.0 - laws[:, -1])
    gap_span = np.clip(keep + hold - open_s[None, :], 0.0, None) @ share  # (t,)
    lam0, vec0, inv0 = _eig(_reversed(arrivals.D0, theta))
    gap = _apply(lam0[None], vec0[None], inv0[None], np.exp(gap_span[:, None] * lam0[None]), np.ones((targets, n)))
    gap = np.clip(gap, 0.0, 1.0)[..., None]  # (t, phases, 1)

    # A gap cuts the pool to nothing: the closings within h + c of its cold start are cold too.
    after_gap = -np.expm1(-(hold + cold_s) * mu[None, :] * gap[..., 0])  # (t, phases)
    cascade = np.maximum(cascade, after_gap)
    cold_given = gap + (1.0 - gap) * np.clip(d_first + neither * burst_below, 0.0, 1.0)
    # The closings a cut leaves cold level by level are the first of its cascade: the larger counts.
    level_term = np.clip(np.einsum("tpm,tpm->tp", p_level, cold_given), 0.0, 1.0)
    per_phase = np.maximum(level_term, gap[..., 0] + (1.0 - gap[..., 0]) * cascade)
    if horizon_s is not None:  # the start-up's own cold starts, in the phases it starts in
        closings = float(theta @ mu) * float(horizon_s)
        start = 1.0 + _renewal_mean(burst_mean, burst_span, gaps) @ arrivals.pi  # (t,)
        per_phase = per_phase + start[:, None] * arrivals.pi[None, :] / (closings * np.maximum(share, _FLOOR))
    return np.clip(per_phase, 0.0, 1.0), share, laws @ np.arange(1, big_b + 1)


def cold_probability(
    arrivals: MAP,
    size_pmf: np.ndarray,
    busy_s: np.ndarray,
    keep_alive_s: float,
    timeout_s: float,
    concurrency: int | None = None,
    horizon_s: float | None = None,
    cold_start_s: float = 0.0,
    per_request: bool = True,
) -> np.ndarray:
    """The probability that a request (or, per_request=False, a batch) meets a cold start.

    busy_s: (B,) or (targets, B): how long a warm batch of b holds its environment
    (invocation overhead plus service). One value per target (0-d for 1-d busy_s).
    horizon_s: the share over a run of that many seconds from no warm environment;
    None: stationary. `concurrency` caps the batches in service: a batch that finds
    every allowed environment busy waits for one, and takes it warm."""
    per_phase, share, sizes = cold_by_phase(arrivals, size_pmf, busy_s, keep_alive_s, timeout_s, concurrency,
                                            horizon_s, cold_start_s)  # fmt: skip
    weight = sizes if per_request else np.ones(len(share))
    rate = np.clip(per_phase @ (share * weight) / float(share @ weight), 0.0, 1.0)
    return rate[0] if np.ndim(busy_s) == 1 else rate


def cold_by_size(
    arrivals: MAP,
    size_pmfs: list[np.ndarray],
    busy_s: np.ndarray,
    keep_alive_s: float,
    timeout_s: float,
    concurrency: int | None = None,
    horizon_s: float | None = None,
    cold_start_s: float = 0.0,
) -> np.ndarray:
    """(targets, len(size_pmfs)): `cold_probability` per target for each batch-size law of
    one timeout (size_pmfs[k] the law of (B_k, T), B_k = len(size_pmfs[k])), the shape a
    tuner's plane takes. busy_s (targets, >= max B). One call per law (~0.1-1 ms each):
    evaluate it on a coarse set of B and interpolate where that is too slow."""
    busy = np.atleast_2d(np.asarray(busy_s, dtype=float))
    return np.stack(
        [cold_probability(arrivals, pmf, busy[:, : len(pmf)], keep_alive_s, timeout_s, concurrency, horizon_s, cold_start_s)
         for pmf in size_pmfs], axis=1)  # fmt: skip
