"""Prometheus metrics of one aggregator process, in a registry of its own (no globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


class Metrics:
    """Counters the app, the transport and the orchestrator update; rendered at ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.rejections = Counter(
            "fedgate_rejections_total", "Refused requests and messages, by component and reason",
            ["component", "reason"], registry=self.registry,
        )
        self.http_requests = Counter(
            "fedgate_http_requests_total", "HTTP requests by method, route template and status",
            ["method", "route", "status"], registry=self.registry,
        )
        self.enrollment_codes = Counter(
            "fedgate_enrollment_codes_issued_total", "One-time enrollment codes issued",
            registry=self.registry,
        )
        self.enrollments = Counter(
            "fedgate_enrollments_total", "Gateways enrolled", registry=self.registry,
        )
        self.model_versions = Gauge(
            "fedgate_model_versions", "Signed model versions in the registry",
            registry=self.registry,
        )
        self.rounds = Counter(
            "fedgate_rounds_total", "Finished rounds by outcome", ["outcome"],
            registry=self.registry,
        )

    def reject(self, component: str, reason: str) -> None:
        """Count one rejection; ``reason`` is a short, bounded label (never user input)."""
        self.rejections.labels(component=component, reason=reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
