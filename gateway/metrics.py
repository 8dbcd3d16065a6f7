"""Prometheus metrics, all prefixed `sluice_`, in a registry of the app's own."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_WAIT_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "sluice_requests", "Requests answered, by model and HTTP status code.", ["model", "version", "code"], registry=r
        )
        self.latency = Histogram(
            "sluice_request_duration_seconds", "End-to-end latency of answered infer requests.", ["model", "version"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_wait = Histogram(
            "sluice_queue_wait_seconds", "Time from arrival until the request's batch was sent to a backend.",
            ["model", "version"], buckets=_WAIT_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "sluice_batch_size", "Rows per batch sent to a backend.", ["model", "version"], buckets=_SIZE_BUCKETS, registry=r
        )
        self.batches_in_flight = Gauge(
            "sluice_batches_in_flight", "Batches sent to a backend and not yet answered.", ["model", "version"], registry=r
        )
        self.queue_depth = Gauge(
            "sluice_queue_depth", "Requests waiting in the gateway (open batch plus closed batches).", ["model", "version"],
            registry=r,
        )  # fmt: skip
        self.dispatches = Counter(
            "sluice_backend_dispatches", "Batches sent, by model and backend instance.", ["model", "version", "backend"],
            registry=r,
        )  # fmt: skip
        self.backend_errors = Counter(
            "sluice_backend_errors", "Failed batches, by model, backend instance and kind (unavailable, error).",
            ["model", "version", "backend", "kind"], registry=r,
        )  # fmt: skip
        self.batches_closed = Counter(
            "sluice_batches_closed", "Batches closed, by model and why: size, timeout, deadline (closed early so "
            "that its oldest request is answered in time), idle (an instance was free: work-conserving) or drain.",
            ["model", "version", "reason"], registry=r,
        )  # fmt: skip
        self.loop_lag = Gauge(
            "sluice_event_loop_lag_seconds", "How late the gateway's event loop runs a timer (90th percentile over "
            "about the last second); admission takes twice this (reading a request, writing its answer) off the "
            "SLO.",
            registry=r,
        )  # fmt: skip
        self.abandoned = Counter(
            "sluice_requests_abandoned", "Admitted requests whose client went away before the answer, by model and "
            "where they were: queued (taken out, never sent) or running (the answer dropped).", ["model", "version", "stage"],
            registry=r,
        )  # fmt: skip
        self.shed = Counter(
            "sluice_requests_shed", "Requests refused at admission (429): predicted to miss their deadline or SLO, "
            "or max_pending reached.", ["model", "version"], registry=r,
        )  # fmt: skip
        self.admission_margin = Gauge(
            "sluice_admission_margin_ratio", "How much longer than predicted the wait behind a backlog runs "
            "(99.5th percentile, a fraction of it): admission control stretches that wait by it.", ["model", "version"],
            registry=r,
        )  # fmt: skip
        self.admission_allowance = Gauge(
            "sluice_admission_allowance_seconds", "How much later than predicted requests behind a short queue "
            "are answered (99.5th percentile): admission control adds it to every prediction.", ["model", "version"],
            registry=r,
        )  # fmt: skip
        self.bisections = Counter(
            "sluice_batch_bisections", "Failed batches split in two to find the requests at fault.", ["model", "version"], registry=r
        )
        self.retries = Counter(
            "sluice_batch_retries", "Batches placed again after their instance failed.", ["model", "version"], registry=r
        )
        self.faas_invocations = Counter(
            "sluice_faas_invocations", "Function invocations, by model, function and outcome (ok, error, throttled).",
            ["model", "version", "function", "outcome"], registry=r,
        )  # fmt: skip
        self.faas_cold_starts = Counter(
            "sluice_faas_cold_starts", "Batch invocations that waited for a new execution environment.", ["model", "version", "function"],
            registry=r,
        )  # fmt: skip
        self.faas_throttles = Counter(
            "sluice_faas_throttles", "Invocations refused for lack of concurrency (429), retried or placed elsewhere.",
            ["model", "version", "function"], registry=r,
        )  # fmt: skip
        self.faas_billed = Counter(
            "sluice_faas_billed_seconds", "Billed function duration (1 ms granularity).", ["model", "version", "function"],
            registry=r,
        )  # fmt: skip
        self.cost = Counter(
            "sluice_cost_usd", "What serving cost, in US dollars, by model and backend (faas: billed duration x "
            "memory + the request price; pool: server time x instance_price_per_hour, for scheduled models).",
            ["model", "version", "backend"], registry=r,
        )  # fmt: skip
        self.placements = Counter(
            "sluice_placements", "Batches a scheduler placed, by model and target (pool: a server; faas: the "
            "function).", ["model", "version", "target"], registry=r,
        )  # fmt: skip
        self.pool_instances = Gauge(
            "sluice_pool_instances", "Servers in a scheduled model's pool (starting, serving or draining).", ["model", "version"],
            registry=r,
        )  # fmt: skip
        self.pool_desired = Gauge(
            "sluice_pool_desired_instances", "The scheduler's planned server count (carried out for local workers; "
            "advice for upstream and registered servers).", ["model", "version"], registry=r,
        )  # fmt: skip
        self.pool_billed = Counter(
            "sluice_pool_instance_seconds", "Server time billed to a scheduled model, start-up and minimum billing "
            "included.", ["model", "version"], registry=r,
        )  # fmt: skip
        self.plans = Counter(
            "sluice_pool_plans", "Plans this replica made for a scheduled model's pool (of several replicas, only "
            "the leader plans a shared pool).", ["model", "version"], registry=r,
        )  # fmt: skip
        self.slo = Gauge(
            "sluice_slo_seconds", "The model's latency SLO, at its percentile (for alerts on p99 against it).",
            ["model", "percentile"], registry=r,
        )  # fmt: skip
        # Several replicas sharing state (gateway.cluster).
        self.state_up = Gauge(
            "sluice_state_store_up", "1 while the shared state store answers; 0 while this replica goes on alone.",
            registry=r,
        )  # fmt: skip
        self.state_errors = Counter(
            "sluice_state_store_errors", "Calls to the shared state store that failed.", registry=r
        )
        self.leader = Gauge(
            "sluice_leader", "1 on the replica that plans the model's shared pool.", ["model"], registry=r
        )
        self.cluster_rate = Gauge(
            "sluice_cluster_arrival_rate", "Requests per second arriving at all replicas (last 30 s).", ["model"],
            registry=r,
        )  # fmt: skip
        self.cluster_replicas = Gauge(
            "sluice_cluster_replicas", "Replicas serving the model, this one included.", ["model"], registry=r
        )
        self.faas_share = Gauge(
            "sluice_faas_concurrency_share", "This replica's part of the function's concurrency limit.", ["model"],
            registry=r,
        )  # fmt: skip
        self.healthy_instances = Gauge(
            "sluice_healthy_instances", "Pool instances able to take a batch.", ["model", "version"], registry=r
        )

        self.batch_limit = Gauge(
            "sluice_batch_size_limit", "The batch size B in force (re-tuned by the adaptive policy).", ["model", "version"],
            registry=r,
        )  # fmt: skip
        self.batch_timeout = Gauge(
            "sluice_batch_timeout_seconds", "The batch timeout T in force.", ["model", "version"], registry=r
        )
        self.arrival_rate = Gauge(
            "sluice_arrival_rate", "Fitted arrival rate per second (adaptive policy).", ["model", "version"], registry=r
        )
        self.arrival_scv = Gauge(
            "sluice_arrival_scv", "Fitted squared coefficient of variation of inter-arrival times.", ["model", "version"],
            registry=r,
        )  # fmt: skip
        self.arrival_acf1 = Gauge(
            "sluice_arrival_acf1", "Fitted lag-1 autocorrelation of inter-arrival times.", ["model", "version"], registry=r
        )
        self.predicted_latency = Gauge(
            "sluice_predicted_latency_seconds", "The tuner's predicted latency at the SLO percentile.", ["model", "version"],
            registry=r,
        )  # fmt: skip
        self.allowance = Gauge(
            "sluice_latency_allowance_seconds", "Measured lateness of batches beyond the predicted service time, "
            "allowed for by deadline-aware closing (adaptive policy).", ["model", "version"], registry=r,
        )  # fmt: skip
        self.retunes = Gauge("sluice_policy_retunes", "Re-tunes applied by the adaptive policy.", ["model", "version"], registry=r)
        self.rollout_step = Gauge(
            "sluice_rollout_step", "A running rollout's candidate share of the model's traffic, in percent (0 when "
            "none runs).", ["model"], registry=r,
        )  # fmt: skip
        self.rollout_decisions = Counter(
            "sluice_rollout_decisions", "Rollout decisions, by model and decision: start, advance, hold, promote, "
            "rollback, abort.", ["model", "decision"], registry=r,
        )  # fmt: skip
        # Data drift (gateway.drift): the last closed window's scores against the reference.
        self.drift_score = Gauge(
            "sluice_drift_score", "Input drift of the last window against the reference: the largest over the "
            "tensor's features, by statistic (psi, ks).", ["model", "version", "tensor", "statistic"], registry=r,
        )  # fmt: skip
        self.drift_over = Gauge(
            "sluice_drift_features_over_threshold", "Features of a tensor (or its classes) whose score passed the "
            "threshold in the last window.", ["model", "version", "tensor"], registry=r,
        )  # fmt: skip
        self.output_drift = Gauge(
            "sluice_output_drift_score", "Output drift of the last window: the predicted-class distribution's PSI "
            "for a classifier, else the largest over the output's features.", ["model", "version", "output", "statistic"],
            registry=r,
        )  # fmt: skip
        # Request capture (gateway.capture): sampled records for retraining and audits.
        self.capture_dropped = Counter(
            "sluice_capture_dropped", "Captured records dropped, by reason: full (the queue in front of the "
            "destination was full: it cannot keep up, or stalls), error (a write or upload failed), stopped (still "
            "queued when the gateway stopped).", ["model", "version", "reason"], registry=r,
        )  # fmt: skip
        self.capture_records = Counter(
            "sluice_capture_records", "Captured records written to the destination.", ["model", "version"], registry=r
        )
        self.capture_bytes = Counter(
            "sluice_capture_bytes", "Bytes of captured records written to the destination.", ["model", "version"],
            registry=r,
        )  # fmt: skip
        self.capture_queue_bytes = Gauge(
            "sluice_capture_queue_bytes", "Captured records waiting for the destination (bounded by queue_mb).",
            ["model", "version"], registry=r,
        )  # fmt: skip
        # Shadow traffic (gateway.shadow): labelled by the shadow version.
        self.shadow_requests = Counter(
            "sluice_shadow_requests", "Copies of requests for a model's shadow version, by outcome: compared, "
            "answered (the primary failed), error, shed (not copied: the gateway had no room).",
            ["model", "version", "outcome"], registry=r,
        )  # fmt: skip
        self.shadow_rows = Counter(
            "sluice_shadow_rows", "Rows of shadow answers compared with the primary's.", ["model", "version"], registry=r
        )
        self.shadow_top_differs = Counter(
            "sluice_shadow_top_class_differs", "Compared rows whose top class differs from the primary's.",
            ["model", "version"], registry=r,
        )  # fmt: skip
        self.shadow_abs = Counter(
            "sluice_shadow_abs_difference", "Sum of absolute differences between shadow and primary output values "
            "(divide by sluice_shadow_compared_values for the mean).", ["model", "version"], registry=r,
        )  # fmt: skip
        self.shadow_values = Counter(
            "sluice_shadow_compared_values", "Output values compared.", ["model", "version"], registry=r
        )
        self.shadow_max = Gauge(
            "sluice_shadow_max_abs_difference", "The largest absolute difference seen.", ["model", "version"], registry=r
        )
        self.shadow_latency = Histogram(
            "sluice_shadow_request_duration_seconds", "Latency of answered shadow copies.", ["model", "version"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip

    def shadow(self, model: str, version: str, outcome: str, comparison=None, latency_s: float | None = None,
               largest: float | None = None) -> None:  # fmt: skip
        """One shadow copy's fate (the rare path: labels looked up each time); `largest`:
        the largest absolute difference so far."""
        self.shadow_requests.labels(model, version, outcome).inc()
        if latency_s is not None:
            self.shadow_latency.labels(model, version).observe(latency_s)
        if comparison is not None:
            self.shadow_rows.labels(model, version).inc(comparison.rows)
            self.shadow_top_differs.labels(model, version).inc(comparison.top_differs)
            self.shadow_abs.labels(model, version).inc(comparison.abs_sum)
            self.shadow_values.labels(model, version).inc(comparison.elements)
        if largest is not None:
            self.shadow_max.labels(model, version).set(largest)

    def watch_policy(self, model: str, version: str, policy) -> None:
        """Gauges read the adaptive policy when scraped."""
        now = time.monotonic
        at = (model, version)
        self.batch_limit.labels(*at).set_function(lambda: policy.limits(now()).max_size)
        self.batch_timeout.labels(*at).set_function(lambda: policy.limits(now()).max_wait)
        fitted = lambda: policy.tuned_for  # noqa: E731
        self.arrival_rate.labels(*at).set_function(lambda: fitted().rate if fitted() else 0.0)
        self.arrival_scv.labels(*at).set_function(lambda: fitted().scv if fitted() else 0.0)
        self.arrival_acf1.labels(*at).set_function(lambda: fitted().acf(1) if fitted() else 0.0)
        self.predicted_latency.labels(*at).set_function(lambda: policy.choice.latency_s if policy.choice else 0.0)
        self.retunes.labels(*at).set_function(lambda: policy.retunes)
        self.allowance.labels(*at).set_function(lambda: policy.allowance_s)

    def forget(self, model: str, version: str) -> None:
        """A version unloaded: its children leave the scrape (counters of a version that
        comes back start again from zero, as after a restart)."""
        for collector in vars(self).values():
            if isinstance(collector, Counter | Gauge | Histogram) and "version" in collector._labelnames:
                for labels in list(collector._metrics):
                    if labels[:2] == (model, version):
                        collector.remove(*labels)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def for_model(self, model: str, version: str = "1") -> ModelMetrics:
        return ModelMetrics(self, model, version)


class ModelMetrics:
    """One model version's metric children, bound once: `labels()` costs a lock and a
    lookup that the per-request path should not pay again and again."""

    def __init__(self, metrics: Metrics, model: str, version: str = "1") -> None:
        self._metrics, self.model, self.version = metrics, model, version
        at = self._at = (model, version)
        self.latency = metrics.latency.labels(*at)
        self.queue_wait = metrics.queue_wait.labels(*at)
        self.batch_size = metrics.batch_size.labels(*at)
        self.batches_in_flight = metrics.batches_in_flight.labels(*at)
        self.queue_depth = metrics.queue_depth.labels(*at)
        self.retries = metrics.retries.labels(*at)
        self.shed = metrics.shed.labels(*at)
        self.abandoned_queued = metrics.abandoned.labels(*at, "queued")
        self.abandoned_running = metrics.abandoned.labels(*at, "running")
        self.admission_margin = metrics.admission_margin.labels(*at)
        self.admission_allowance = metrics.admission_allowance.labels(*at)
        self.bisections = metrics.bisections.labels(*at)
        self.healthy_instances = metrics.healthy_instances.labels(*at)
        self._children: dict[tuple, object] = {}

    def requests(self, code: int) -> Counter:
        key = ("requests", code)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._metrics.requests.labels(*self._at, str(code))
        return child

    def dispatches(self, backend: str) -> Counter:
        key = ("dispatches", backend)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._metrics.dispatches.labels(*self._at, backend)
        return child

    def batches_closed(self, reason: str) -> Counter:
        key = ("closed", reason)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._metrics.batches_closed.labels(*self._at, reason)
        return child

    def faas_invocation(self, function: str, outcome: str, throttles: int, billed_ms: float | None,
                        cold: bool, cost_usd: float) -> None:  # fmt: skip
        m = self._metrics
        m.faas_invocations.labels(*self._at, function, outcome).inc()
        if throttles:
            m.faas_throttles.labels(*self._at, function).inc(throttles)
        if cold and outcome != "ping":  # a ping's cold start is the pre-warming itself
            m.faas_cold_starts.labels(*self._at, function).inc()
        if billed_ms is not None:
            m.faas_billed.labels(*self._at, function).inc(billed_ms / 1000.0)
        if cost_usd:
            m.cost.labels(*self._at, "faas").inc(cost_usd)

    def placed(self, target: str) -> None:
        self._metrics.placements.labels(*self._at, target).inc()

    def pool_size(self, count: int) -> None:
        self._metrics.pool_instances.labels(*self._at).set(count)

    def pool_desired(self, count: int) -> None:
        self._metrics.pool_desired.labels(*self._at).set(count)

    def planned(self) -> None:
        self._metrics.plans.labels(*self._at).inc()

    def pool_billed(self, seconds: float, cost_usd: float) -> None:
        self._metrics.pool_billed.labels(*self._at).inc(seconds)
        self._metrics.cost.labels(*self._at, "pool").inc(cost_usd)

    def backend_errors(self, backend: str, kind: str) -> Counter:
        return self._metrics.backend_errors.labels(*self._at, backend, kind)  # the rare path
