"""Metrics for Prometheus (prometheus-client): the local runner and the container roles.

Each instance owns its registry, so tests and processes never share counts
by accident; ``wsgi_app`` is what a process serves at ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from mailroom.adapters.metrics.base import (
    API_LATENCY_BUCKETS,
    BREAKER_STATE_VALUES,
    SEND_LATENCY_BUCKETS,
    MetricName,
    Metrics,
)


def _base(name: MetricName) -> str:
    # prometheus-client appends _total to counters itself.
    return name.value.removesuffix("_total")


class PrometheusMetrics(Metrics):
    def __init__(
        self, *, client_label: bool = False, registry: CollectorRegistry | None = None
    ) -> None:
        self.registry = registry or CollectorRegistry()
        self._client_label = client_label
        client = ("client",) if client_label else ()
        r = self.registry
        self._queued = Counter(
            _base(MetricName.EMAILS_QUEUED), "Messages accepted and queued", client, registry=r
        )
        self._sent = Counter(
            _base(MetricName.EMAILS_SENT),
            "Messages a provider accepted",
            ("provider", *client),
            registry=r,
        )
        self._failed = Counter(
            _base(MetricName.EMAILS_FAILED),
            "Messages that ended failed, by error code",
            ("error_type", *client),
            registry=r,
        )
        self._provider_errors = Counter(
            _base(MetricName.PROVIDER_ERRORS),
            "Failed provider calls, by failure kind",
            ("provider", "kind"),
            registry=r,
        )
        self._breaker_transitions = Counter(
            _base(MetricName.BREAKER_TRANSITIONS),
            "Circuit breaker state changes made by this process",
            ("provider", "state"),
            registry=r,
        )
        self._breaker_state = Gauge(
            MetricName.BREAKER_STATE.value,
            "Circuit breaker state: 0 closed, 1 half-open, 2 open",
            ("provider",),
            registry=r,
        )
        self._rate_limited = Counter(
            _base(MetricName.RATE_LIMIT_HITS),
            "Requests answered 429, by code",
            ("code",),
            registry=r,
        )
        self._webhooks = Counter(
            _base(MetricName.WEBHOOK_DELIVERIES),
            "Provider delivery webhooks received, by outcome",
            ("provider", "outcome"),
            registry=r,
        )
        self._events = Counter(
            _base(MetricName.EVENTS_INGESTED),
            "Delivery events recorded from provider feedback",
            ("type",),
            registry=r,
        )
        self._reputation = Counter(
            _base(MetricName.REPUTATION_CHANGES),
            "Client reputation state changes, by the state moved to",
            ("state",),
            registry=r,
        )
        self._send_latency = Histogram(
            MetricName.SEND_LATENCY.value,
            "Seconds one successful provider send call took",
            ("provider",),
            buckets=SEND_LATENCY_BUCKETS,
            registry=r,
        )
        self._api_latency = Histogram(
            MetricName.API_LATENCY.value,
            "Seconds the API took to answer, by route template",
            ("route", "method"),
            buckets=API_LATENCY_BUCKETS,
            registry=r,
        )
        self._api_requests = Counter(
            _base(MetricName.API_REQUESTS),
            "API requests answered, by route template and status class",
            ("route", "method", "status"),
            registry=r,
        )
        self._queue_depth = Gauge(
            MetricName.QUEUE_DEPTH.value, "Messages waiting on the queue", ("queue",), registry=r
        )
        self._queue_age = Gauge(
            MetricName.QUEUE_OLDEST_AGE.value,
            "Age of the oldest message waiting on the queue",
            ("queue",),
            registry=r,
        )

    def _client(self, client_id: str | None) -> tuple[str, ...]:
        return (client_id or "none",) if self._client_label else ()

    def email_queued(self, *, client_id: str | None = None) -> None:
        labels = self._client(client_id)
        (self._queued.labels(*labels) if labels else self._queued).inc()

    def email_sent(self, provider: str, seconds: float, *, client_id: str | None = None) -> None:
        self._sent.labels(provider, *self._client(client_id)).inc()
        self._send_latency.labels(provider).observe(seconds)

    def email_failed(self, error_type: str, *, client_id: str | None = None) -> None:
        self._failed.labels(error_type, *self._client(client_id)).inc()

    def provider_error(self, provider: str, kind: str) -> None:
        self._provider_errors.labels(provider, kind).inc()

    def breaker_changed(self, provider: str, state: str) -> None:
        self._breaker_transitions.labels(provider, state).inc()
        self.breaker_state(provider, state)

    def breaker_state(self, provider: str, state: str) -> None:
        self._breaker_state.labels(provider).set(BREAKER_STATE_VALUES.get(state, -1.0))

    def rate_limited(self, code: str) -> None:
        self._rate_limited.labels(code).inc()

    def webhook_delivery(self, provider: str, outcome: str) -> None:
        self._webhooks.labels(provider, outcome).inc()

    def event_ingested(self, event_type: str, count: int = 1) -> None:
        self._events.labels(event_type).inc(count)

    def reputation_changed(self, state: str) -> None:
        self._reputation.labels(state).inc()

    def api_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self._api_latency.labels(route, method).observe(seconds)
        self._api_requests.labels(route, method, f"{status // 100}xx").inc()

    def queue_depth(self, queue: str, depth: int | None, oldest_age_seconds: float | None) -> None:
        if depth is not None:
            self._queue_depth.labels(queue).set(depth)
        if oldest_age_seconds is not None:
            self._queue_age.labels(queue).set(oldest_age_seconds)

    def wsgi_app(self) -> Callable[[dict[str, Any], Any], Iterable[bytes]]:
        """A WSGI application answering the scrape of this registry."""
        app: Callable[[dict[str, Any], Any], Iterable[bytes]] = make_wsgi_app(self.registry)
        return app
