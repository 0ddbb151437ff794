"""Prometheus metrics the gate records; the sidecar exposes them and the rollout guard reads them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class GateMetrics:
    """One set of metrics per gate, in its own registry (so tests and several gates do not clash)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "waltz_gate_requests", "Checks by decision and Stage 2 mode.", ["decision", "stage2_mode"], registry=r
        )
        self.latency = Histogram(
            "waltz_gate_request_latency_seconds", "Check latency by decision.", ["decision"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.plugin_latency = Histogram(
            "waltz_gate_plugin_latency_seconds", "Latency of each plugin.", ["plugin"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.plugin_status = Counter(
            "waltz_gate_plugin_status", "Plugin outcomes: ok, error, timeout, skipped.", ["plugin", "status"], registry=r
        )
        self.degraded = Counter(
            "waltz_gate_degraded", "Checks where a plugin failed; bypassed says fail-open let it through.",
            ["bypassed"], registry=r,
        )
        self.shadow_disagreement = Counter(
            "waltz_gate_stage2_shadow_disagreement",
            "Shadow-mode checks where Stage 2 would have changed the decision.", registry=r,
        )
        self.http_requests = Counter(
            "waltz_gate_http_requests", "HTTP requests by route and status code.", ["route", "status"], registry=r
        )
        self.http_latency = Histogram(
            "waltz_gate_http_latency_seconds", "HTTP latency by route.", ["route"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.flags_fetch_failures = Counter(
            "waltz_gate_flags_fetch_failures", "Failed fetches of the flags from the Unleash server.", registry=r
        )
        self.flags_server_ok = Gauge(
            "waltz_gate_flags_server_ok", "1 while the Unleash server answers, 0 while serving last-known flags.",
            registry=r,
        )
        self.stage2_queue_depth = Gauge(
            "waltz_gate_stage2_queue_depth", "Stage 2 items waiting or running, per plugin.", ["plugin"], registry=r
        )
        self.stage2_shed = Counter(
            "waltz_gate_stage2_shed", "Stage 2 checks refused at admission: the queue could not finish them in time.",
            ["plugin"], registry=r,
        )
        self.stage2_expired = Counter(
            "waltz_gate_stage2_expired", "Queued Stage 2 items dropped unrun: deadline passed or caller gone.",
            ["plugin"], registry=r,
        )
        self.stage2_busy = Counter(
            "waltz_gate_stage2_busy_seconds",
            "Time Stage 2 workers spent running batches; rate() / waltz_gate_stage2_workers is the utilisation.",
            ["plugin"], registry=r,
        )
        self.stage2_workers = Gauge("waltz_gate_stage2_workers", "Stage 2 batch workers per plugin.", ["plugin"], registry=r)
        self.batch_size = Histogram(
            "waltz_gate_stage2_batch_size", "Stage 2 micro-batch sizes.",
            buckets=(1, 2, 4, 8, 16, 32, 64), registry=r,
        )
