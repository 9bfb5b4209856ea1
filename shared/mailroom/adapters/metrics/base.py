"""The metrics facade: what Mailroom counts, whatever stores it.

Every name is fixed here (operators' dashboards and alert rules use them, so
renaming one breaks alerting: add new ones instead) and every label is
bounded: provider names, error codes, queue names, route templates, event
types. Never a message id or an address. A client's id is a label only when
the operator turns ``METRICS_CLIENT_LABEL`` on (a bounded number of
clients is the operator's call, not ours).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Final


class MetricName(StrEnum):
    """The names, as Prometheus sees them (EMF drops the ``mailroom_`` prefix)."""

    EMAILS_QUEUED = "mailroom_emails_queued_total"
    EMAILS_SENT = "mailroom_emails_sent_total"
    EMAILS_FAILED = "mailroom_emails_failed_total"
    PROVIDER_ERRORS = "mailroom_provider_errors_total"
    BREAKER_TRANSITIONS = "mailroom_breaker_transitions_total"
    BREAKER_STATE = "mailroom_breaker_state"
    RATE_LIMIT_HITS = "mailroom_rate_limit_hits_total"
    WEBHOOK_DELIVERIES = "mailroom_webhook_deliveries_total"
    EVENTS_INGESTED = "mailroom_events_ingested_total"
    SEND_LATENCY = "mailroom_send_latency_seconds"
    API_LATENCY = "mailroom_api_request_duration_seconds"
    API_REQUESTS = "mailroom_api_requests_total"
    QUEUE_DEPTH = "mailroom_queue_depth"
    QUEUE_OLDEST_AGE = "mailroom_queue_oldest_age_seconds"
    # Issue 21: a client's reputation moved (to warn, throttle, pause or ok).
    REPUTATION_CHANGES = "mailroom_reputation_changes_total"


# A breaker's state as a gauge value: alert on > 0.
BREAKER_STATE_VALUES: Final = {"closed": 0.0, "half-open": 1.0, "half_open": 1.0, "open": 2.0}

# Send latency: one provider call, SMTP on a LAN to an HTTPS API far away.
SEND_LATENCY_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# API latency: Lambda's own p99 target is well under a second.
API_LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_ERROR_TYPE = re.compile(r"^[a-z][a-z_]{0,39}$")
OTHER = "other"


def error_type_of(reason: str | None) -> str:
    """The bounded error type of a failure reason: its code (``render_error: ...``)."""
    if not reason:
        return OTHER
    code = reason.split(":", 1)[0].strip()
    return code if _ERROR_TYPE.match(code) else OTHER


class Metrics:
    """What Mailroom counts. This base records nothing: metrics are off."""

    def email_queued(self, *, client_id: str | None = None) -> None:
        """One message accepted and put on the send queue."""

    def email_sent(self, provider: str, seconds: float, *, client_id: str | None = None) -> None:
        """A provider accepted one message, after ``seconds`` in its send call."""

    def email_failed(self, error_type: str, *, client_id: str | None = None) -> None:
        """One message ended ``failed`` (``error_type`` from ``error_type_of``)."""

    def provider_error(self, provider: str, kind: str) -> None:
        """One failed provider call (transient, permanent, deferred, config)."""

    def breaker_changed(self, provider: str, state: str) -> None:
        """A provider's circuit breaker moved to ``state`` (counted where it was made)."""

    def breaker_state(self, provider: str, state: str) -> None:
        """A provider's breaker state as last seen (a gauge; no transition counted)."""

    def rate_limited(self, code: str) -> None:
        """A request answered 429 (``rate_limited`` or ``quota_exceeded``)."""

    def webhook_delivery(self, provider: str, outcome: str) -> None:
        """A provider's delivery webhook answered: ``accepted``, ``refused`` or ``failed``."""

    def event_ingested(self, event_type: str, count: int = 1) -> None:
        """Delivery events (bounce, complaint, delivered...) recorded from feedback."""

    def reputation_changed(self, state: str) -> None:
        """A client's reputation moved to ``state`` (ok, warn, throttle, pause); alarm on pause."""

    def api_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One HTTP request answered; ``route`` is the route template, not the path."""

    def queue_depth(self, queue: str, depth: int | None, oldest_age_seconds: float | None) -> None:
        """What waits on ``queue`` (``send``, ``dead-letter``) and how old its oldest is."""

    def flush(self) -> None:
        """Hand what was recorded to the backend (EMF prints once per invocation)."""
