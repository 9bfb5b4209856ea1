"""``/metrics``: the process's Prometheus metrics as a WSGI application.

Mount it wherever a WSGI server runs Mailroom: the local runner serves it at
``/metrics`` beside the API; the container roles (issue 22) mount the same
application. It answers 404 unless METRICS_BACKEND is ``prometheus`` (in
Lambda the metrics are EMF lines and there is nothing to scrape).

Gauges that live elsewhere (queue depth and age, breaker states) are read
on a scrape at most every ``refresh_seconds``: Prometheus scrapes every 15 s
by default, and several scrapers must not multiply the SQS and Redis calls.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from mailroom.bootstrap import Services
from mailroom.services import detailed_health

WsgiApp = Callable[[dict[str, Any], Any], Iterable[bytes]]
REFRESH_SECONDS = 10.0


class GaugeRefresh:
    """Reads the queue and breaker gauges into the metrics, at most once per interval."""

    def __init__(self, services: Callable[[], Services], refresh_seconds: float) -> None:
        self._services = services
        self._refresh_seconds = refresh_seconds
        self._last: float | None = None
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            now = time.monotonic()
            if self._last is not None and now - self._last < self._refresh_seconds:
                return
            self._last = now
            active = self._services()
            queues = detailed_health.measure_queues(
                active.settings, detailed_health.oldest_queued_age(active.uow)
            )
            for name, queue in queues.items():
                active.metrics.queue_depth(name, queue.depth, queue.oldest_age_seconds)
            try:
                states = active.providers.breaker_states()
            except Exception:  # noqa: BLE001 - Redis down: the gauges keep their last value
                return
            for provider, state in states.items():
                active.metrics.breaker_state(provider, state)


def metrics_app(
    services: Callable[[], Services], *, refresh_seconds: float = REFRESH_SECONDS
) -> WsgiApp:
    """The WSGI application answering a Prometheus scrape of this process."""
    from mailroom.adapters.metrics.prometheus import PrometheusMetrics

    refresh = GaugeRefresh(services, refresh_seconds)

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        metrics = services().metrics
        if not isinstance(metrics, PrometheusMetrics):
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"metrics are not kept for Prometheus here (METRICS_BACKEND)\n"]
        refresh()
        return metrics.wsgi_app()(environ, start_response)

    return app
