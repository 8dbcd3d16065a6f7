"""Arrival sources: trace files and synthetic arrival processes, as sorted arrival times in seconds.

Every source starts at 0 so that results from different traces line up, and every
synthetic source is a pure function of (spec, duration, seed) so that a run can be
repeated exactly.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from batching import arrivals as arrival_models
from scheduler import Prior, same_time_of_day

from .counts import arrival_times, is_counts, read_counts

log = logging.getLogger("sluice.prior")

# --------------------------------------------------------------------------- trace files


def read_trace(path: str | Path) -> np.ndarray:
    """Arrival times in seconds, sorted, with the first at 0.

    Accepts a text file with one number (seconds) per line, or a CSV, with or without
    a header, whose first column is a timestamp: numeric seconds or a date-time such
    as "2023-11-16 18:15:46.6805900" (parsed to the nanosecond).
    """
    return read_stamped_trace(path)[0]


def read_stamped_trace(path: str | Path) -> tuple[np.ndarray, datetime | None]:
    """`read_trace`'s arrival times, and when the first of them came: its date-time (UTC; a
    date-time without a zone is read as UTC), None for a trace of plain seconds."""
    if is_counts(path):
        counts, first = read_counts(path)
        times = arrival_times(counts)
        if first is None or not len(times):
            raise ValueError(f"{path}: no arrivals in the log")
        return times - times[0], first + timedelta(seconds=float(times[0]))
    text = Path(path).read_text()
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise ValueError(f"{path}: no arrival times in the file")
    fields = [line.split(",", 1)[0].strip().strip('"').strip("'") for line in lines]
    if not _looks_like_time(fields[0]):
        fields = fields[1:]  # a header row
        if not fields:
            raise ValueError(f"{path}: only a header, no arrival times")
    if _is_number(fields[0]):
        times, first = _parse_seconds(fields, path), None
    else:
        times, first = _parse_datetimes(fields, path)
    times = np.sort(times)
    return times - times[0], first


def read_prior(path: str | Path, weight_s: float, start: datetime | None) -> Prior | None:
    """A recorded trace as the hybrid planner's prior (`scheduler.Prior`). When the run's start
    (wall clock, or the simulated trace's first arrival) and the record both carry a date-time,
    the record is read from the start's time of day; else from its first second. None, with a
    warning, when the record holds no second at that time of day. A traffic log (`sim.counts`)
    is read up to the start: what came before it (yesterday, at that time of day)."""
    if is_counts(path):
        counts, first = read_counts(path, before=start)
        span_s = float(len(counts))
        if first is None:
            log.warning("traffic log %s holds no second before the start: planning without it", path, extra={"path": str(path)})
            return None
    else:
        times, first = read_stamped_trace(path)
        span_s = math.floor(times[-1]) + 1.0
        counts = None
    start_s = 0.0
    if first is not None and start is not None:
        second = same_time_of_day(first, start, span_s)
        if second is None:
            holds = f"{first:%H:%M:%S}-{first + timedelta(seconds=span_s):%H:%M:%S} UTC"
            at = f"{start.astimezone(timezone.utc):%H:%M:%S} UTC"
            log.warning("prior trace %s holds %s, not %s: planning without it", path, holds, at,
                        extra={"path": str(path), "holds": holds, "at": at})  # fmt: skip
            return None
        start_s = second
    log.info("prior trace read", extra={"path": str(path), "from_second": start_s, "seconds": span_s})
    return Prior(counts, weight_s, start_s) if counts is not None else Prior.from_times(times, weight_s, start_s)


def _is_number(field: str) -> bool:
    try:
        return math.isfinite(float(field))
    except ValueError:
        return False


def _looks_like_time(field: str) -> bool:
    return _is_number(field) or bool(re.match(r"^\d{4}-\d{2}-\d{2}[ T]\d", field))


def _parse_seconds(fields: list[str], path: str | Path) -> np.ndarray:
    try:
        times = np.array(fields, dtype=float)
    except ValueError:
        bad = next(f for f in fields if not _is_number(f))
        raise ValueError(f"{path}: {bad!r} is not a number of seconds") from None
    if not np.isfinite(times).all():
        raise ValueError(f"{path}: arrival times must be finite")
    return times


def _parse_datetimes(fields: list[str], path: str | Path) -> tuple[np.ndarray, datetime]:
    """Seconds since the earliest timestamp, and that timestamp. numpy parses ISO date-times in C
    (about 0.2 s per million rows); time-zone offsets fall back to datetime.fromisoformat row by row."""
    stripped = np.array([f[:-1] if f.endswith("Z") else f for f in fields])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            stamps = stripped.astype("datetime64[ns]")
        if np.isnat(stamps).any():
            raise ValueError("empty timestamp")
        nanos = stamps.astype(np.int64)
        earliest = _EPOCH + timedelta(microseconds=int(nanos.min()) // 1000)
        return (nanos - nanos.min()).astype(float) / 1e9, earliest
    except (ValueError, Warning):
        pass
    parsed = []
    for field in fields:
        try:
            stamp = datetime.fromisoformat(_trim_fraction(field))
        except ValueError:
            raise ValueError(f"{path}: {field!r} is neither a number of seconds nor a date-time") from None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=timezone.utc)
        parsed.append(stamp)
    earliest = min(parsed)
    return np.array([(stamp - earliest).total_seconds() for stamp in parsed], dtype=float), earliest.astimezone(timezone.utc)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _trim_fraction(field: str) -> str:
    """datetime.fromisoformat takes at most 6 fractional digits; Azure traces carry 7."""
    return re.sub(r"(\.\d{6})\d+", r"\1", field)


# --------------------------------------------------------------------------- synthetic arrivals

# spec name -> {parameter: number of values}
_SPECS: dict[str, dict[str, int]] = {
    "poisson": {"rate": 1},
    "mmpp2": {"rates": 2, "switch": 2},
    "map": {"D0": -1, "D1": -1},  # n*n values, row by row
    "gamma": {"rate": 1, "cv": 1},
    "diurnal": {"rate": 1, "amplitude": 1, "period": 1, "burst": 1, "every": 1, "length": 1},
}
# Parameters a spec may leave out (all of a group, or none of it).
_OPTIONAL: dict[str, tuple[str, ...]] = {"diurnal": ("burst", "every", "length")}
_SPEC_FORMS = (
    "poisson:rate=R, mmpp2:rates=R1,R2;switch=S1,S2, map:D0=a,b,c,d;D1=e,f,g,h, gamma:rate=R,cv=C, "
    "diurnal:rate=R,amplitude=A,period=P[,burst=B,every=E,length=L]"
)


def parse_spec(spec: str) -> tuple[str, dict[str, list[float]]]:
    """Split "kind:key=v[,v...][;key=...]" into the kind and its numeric parameters.

    Parameters are separated by ';' or ',' (a ',' followed by "name=" starts a new one),
    so both "gamma:rate=5,cv=2" and "mmpp2:rates=1,9;switch=0.1,0.5" read naturally.
    """
    kind, colon, body = spec.strip().partition(":")
    kind = kind.strip().lower()
    if kind not in _SPECS:
        raise ValueError(f"unknown arrival process {kind!r} in {spec!r}; expected one of: {_SPEC_FORMS}")
    if not colon or not body.strip():
        raise ValueError(f"arrival spec {spec!r} has no parameters; expected one of: {_SPEC_FORMS}")
    expected = _SPECS[kind]
    params: dict[str, list[float]] = {}
    for part in re.split(r"[;,]\s*(?=[A-Za-z_]\w*\s*=)", body.strip()):
        key, eq, values = part.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ValueError(f"arrival spec {spec!r}: expected key=value, got {part!r}")
        if key not in expected:
            raise ValueError(f"arrival spec {spec!r}: unknown parameter {key!r} for {kind} (takes {', '.join(expected)})")
        if key in params:
            raise ValueError(f"arrival spec {spec!r}: parameter {key!r} given twice")
        try:
            numbers = [float(v) for v in values.split(",")]
        except ValueError:
            raise ValueError(f"arrival spec {spec!r}: {key}={values!r} must be numbers separated by ','") from None
        if not all(math.isfinite(x) for x in numbers):
            raise ValueError(f"arrival spec {spec!r}: {key} must be finite")
        count = expected[key]
        if count > 0 and len(numbers) != count:
            raise ValueError(f"arrival spec {spec!r}: {key} takes {count} value(s), got {len(numbers)}")
        if count < 0 and math.isqrt(len(numbers)) ** 2 != len(numbers):
            raise ValueError(f"arrival spec {spec!r}: {key} must be a square matrix given row by row, got {len(numbers)} values")
        params[key] = numbers
    optional = _OPTIONAL.get(kind, ())
    missing = [key for key in expected if key not in params and key not in optional]
    given = [key for key in optional if key in params]
    if given and len(given) != len(optional):
        missing += [key for key in optional if key not in params]
    if missing:
        raise ValueError(f"arrival spec {spec!r}: missing {', '.join(missing)}; expected one of: {_SPEC_FORMS}")
    return kind, params


def parse_arrivals(spec: str, duration_s: float, seed: int) -> np.ndarray:
    """Arrival times in [0, duration_s) from a synthetic process spec, reproducible by seed."""
    if not (isinstance(duration_s, (int, float)) and math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"duration must be a positive number of seconds, got {duration_s!r}")
    kind, params = parse_spec(spec)
    if kind == "poisson":
        rate = _positive(params["rate"][0], "rate", spec)
        return _arrivals_from_gaps(lambda n, rng: rng.exponential(1.0 / rate, n), rate, duration_s, seed)
    if kind == "gamma":
        rate = _positive(params["rate"][0], "rate", spec)
        cv = params["cv"][0]
        if cv < 0:
            raise ValueError(f"arrival spec {spec!r}: cv must be non-negative, got {cv:g}")
        sample = _needs(arrival_models, "gamma_renewal_sample", spec)
        return _arrivals_from_gaps(lambda n, rng: sample(rate, cv, n, rng), rate, duration_s, seed)
    if kind == "diurnal":
        return _thinned(DiurnalRate.from_params(params, spec), duration_s, seed)
    try:
        if kind == "mmpp2":
            process = arrival_models.MAP.mmpp2(tuple(params["rates"]), tuple(params["switch"]))
        else:
            d0, d1 = (np.array(params[k]).reshape(math.isqrt(len(params[k])), -1) for k in ("D0", "D1"))
            process = arrival_models.MAP(d0, d1)
    except ValueError as exc:
        raise ValueError(f"arrival spec {spec!r}: {exc}") from None
    sample_map = _needs(process, "sample", spec)
    return _arrivals_from_gaps(lambda n, rng: sample_map(n, rng), process.rate, duration_s, seed)


def _positive(value: float, name: str, spec: str) -> float:
    if value <= 0:
        raise ValueError(f"arrival spec {spec!r}: {name} must be positive, got {value:g}")
    return value


def _needs(owner: object, name: str, spec: str) -> Callable:
    function = getattr(owner, name, None)
    if function is None:
        raise ValueError(f"arrival spec {spec!r} needs batching.arrivals {name}(), which this version lacks")
    return function


def _arrivals_from_gaps(
    sample: Callable[[int, np.random.Generator], np.ndarray], rate: float, duration_s: float, seed: int
) -> np.ndarray:
    """Cumulative gaps up to duration_s. When a draw falls short the whole sequence is redrawn,
    twice as long, from the same seed: one unbroken sample path, so correlated processes keep
    their correlation, and the result depends only on (spec, duration, seed)."""
    n = int(rate * duration_s * 1.1 + 10 * math.sqrt(rate * duration_s) + 16)
    while True:
        gaps = np.asarray(sample(n, np.random.default_rng(seed)), dtype=float)
        if len(gaps) != n or not np.isfinite(gaps).all() or (gaps < 0).any():
            raise ValueError("the arrival process produced invalid inter-arrival times")
        times = np.cumsum(gaps)
        if times[-1] >= duration_s:
            return times[: int(np.searchsorted(times, duration_s, side="left"))]
        n *= 2


# --------------------------------------------------------------------------- time-varying rates


@dataclass(frozen=True)
class DiurnalRate:
    """rate x (1 + amplitude x sin(2 pi t / period)), plus `burst` more during the first
    `length` seconds of every `every` seconds (from t = 0): a day compressed into `period`,
    with the spikes a forecast cannot see coming. `rate` is the base's mean over a period."""

    rate: float
    amplitude: float
    period: float
    burst: float = 0.0
    every: float = math.inf
    length: float = 0.0

    @classmethod
    def from_params(cls, params: dict[str, list[float]], spec: str) -> DiurnalRate:
        value = {key: values[0] for key, values in params.items()}
        rate = _positive(value["rate"], "rate", spec)
        period = _positive(value["period"], "period", spec)
        amplitude = value["amplitude"]
        if not 0.0 <= amplitude <= 1.0:
            raise ValueError(f"arrival spec {spec!r}: amplitude is a fraction of the rate in [0, 1], got {amplitude:g}")
        if "burst" not in value:
            return cls(rate, amplitude, period)
        burst = value["burst"]
        if burst < 0:
            raise ValueError(f"arrival spec {spec!r}: burst must be non-negative, got {burst:g}")
        every = _positive(value["every"], "every", spec)
        length = _positive(value["length"], "length", spec)
        if length > every:
            raise ValueError(f"arrival spec {spec!r}: a burst's length ({length:g} s) exceeds every ({every:g} s)")
        return cls(rate, amplitude, period, burst, every, length)

    def __call__(self, t: np.ndarray) -> np.ndarray:
        base = self.rate * (1.0 + self.amplitude * np.sin(2.0 * np.pi * t / self.period))
        return base + np.where(np.mod(t, self.every) < self.length, self.burst, 0.0)

    @property
    def peak(self) -> float:
        return self.rate * (1.0 + self.amplitude) + self.burst


def _thinned(rate: DiurnalRate, duration_s: float, seed: int, window_s: float = 60.0) -> np.ndarray:
    """A non-homogeneous Poisson process, exactly, by thinning (Lewis and Shedler): a Poisson
    process at the peak rate, each point kept with probability rate(t) / peak. Drawn window
    by window so a long busy trace needs memory for one window, not the whole of it."""
    rng = np.random.default_rng(seed)
    chunks = []
    for start in np.arange(0.0, duration_s, window_s):
        end = min(start + window_s, duration_s)
        times = np.sort(rng.uniform(start, end, rng.poisson(rate.peak * (end - start))))
        keep = rng.uniform(0.0, rate.peak, len(times)) < rate(times)
        chunks.append(times[keep])
    return np.concatenate(chunks) if chunks else np.zeros(0)
