"""Outbound webhooks (issue 19): what a client's endpoint receives, and when. No I/O.

Every row written to ``message_events`` is copied, in the same transaction, to
the ``webhook_events`` outbox by a PostgreSQL trigger (the migration
``w19whk01``), whatever code wrote it. This module decides what such a row
becomes for the client: :data:`PUBLIC_TYPE_OF` maps each internal event type
to its public ``email.*`` name, once; internal types that are not in it are
Mailroom's own bookkeeping (a retry, a requeue) and are never sent.

The body and the signature follow the Standard Webhooks specification
(https://www.standardwebhooks.com): headers ``webhook-id``,
``webhook-timestamp`` and ``webhook-signature: v1,<base64 HMAC-SHA256 of
"id.timestamp.body">``; the body is ``{"type", "timestamp", "data"}``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import random
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import SplitResult, urlsplit
from uuid import UUID

from mailroom.domain.errors import (
    BlockedAddress,
    InvalidRequest,
    UnknownEventType,
    UnsafeWebhookUrl,
)

# --- event types --------------------------------------------------------------

# The public names a client subscribes to, in the order the docs list them.
MESSAGE_EVENT_TYPES: tuple[str, ...] = (
    "email.queued",
    "email.scheduled",
    "email.sent",
    "email.delivered",
    "email.delivery_delayed",
    "email.bounced",
    "email.complained",
    "email.opened",
    "email.clicked",
    "email.failed",
    "email.cancelled",
    "email.suppressed",
    "email.unsubscribed",
    "batch.finished",
)
# Mailroom telling the client about its endpoints.
ENDPOINT_DISABLED = "webhook.endpoint_disabled"
TEST_EVENT = "webhook.test"
OPENED_EVENT = "email.opened"
OPENS_CHOICES = ("all", "first")
SUBSCRIBABLE_TYPES: tuple[str, ...] = (*MESSAGE_EVENT_TYPES, ENDPOINT_DISABLED)

# Internal type (message_events.type, webhook_events.type) -> public type.
# The one table: a type written by any code path is sent iff it is here.
# Names other engineers may add in this wave (scheduled, cancelled,
# batch_finished) are mapped ahead, so their events are sent the day they
# are written; tests/unit/test_outbound_webhooks.py fails for an EventType
# member that is neither here nor in INTERNAL_ONLY_TYPES, so a new type is
# always a decision, never a silent drop.
PUBLIC_TYPE_OF: Mapping[str, str] = {
    "accepted": "email.queued",
    "scheduled": "email.scheduled",
    "sent": "email.sent",
    "delivered": "email.delivered",
    "deferred": "email.delivery_delayed",
    "bounced": "email.bounced",
    "complained": "email.complained",
    "opened": "email.opened",
    "clicked": "email.clicked",
    "failed": "email.failed",
    # The provider refused the message for a recipient (invalid, spam...).
    "rejected": "email.failed",
    "cancelled": "email.cancelled",
    "canceled": "email.cancelled",
    "suppressed": "email.suppressed",
    # Some recipients were dropped before sending; data.partial says so.
    "recipients_suppressed": "email.suppressed",
    "unsubscribed": "email.unsubscribed",
    "batch_finished": "batch.finished",
    "endpoint_disabled": ENDPOINT_DISABLED,
    "webhook_test": TEST_EVENT,
}
# Bookkeeping the client does not subscribe to: retries, requeues, the
# provider's own acknowledgement (email.sent already said it left us).
INTERNAL_ONLY_TYPES: frozenset[str] = frozenset(
    {
        "enqueue_failed",
        "attempt_failed",
        "provider_failed",
        "provider_misconfigured",
        "redriven",
        "requeued",
        "provider_accepted",
        "provider_event",
        # POST /v1/messages/{id}/retry (issue 17): the retry's outcome is what
        # the client hears about (email.sent or email.failed again).
        "retried",
        # PATCH /v1/messages/{id} (issue 18): the client moved it itself.
        "rescheduled",
        # Held back by per-domain throttling (issue 20): sent later, not an attempt.
        "throttled",
        # A paused queue kept it, its resume let it go (issue 20): the client
        # paused it itself; email.sent follows.
        "held",
        "released",
    }
)


def public_type(internal_type: str) -> str | None:
    """The public name of an internal event type; None: never sent."""
    return PUBLIC_TYPE_OF.get(internal_type)


def internal_types_for(public_types: Iterable[str]) -> list[str]:
    """Every internal type that becomes one of ``public_types`` (for the feed's filter)."""
    wanted = set(public_types)
    return sorted(name for name, public in PUBLIC_TYPE_OF.items() if public in wanted)


def parse_event_types(values: Sequence[str] | None) -> list[str] | None:
    """A subscription's types, checked; None (or omitted) means every type."""
    if values is None:
        return None
    unknown = [value for value in values if value not in SUBSCRIBABLE_TYPES]
    if unknown:
        raise UnknownEventType(
            f"unknown event type {unknown[0][:64]!r}; known: " + ", ".join(SUBSCRIBABLE_TYPES),
            details=[{"field": "events", "unknown": [value[:64] for value in unknown]}],
        )
    if not values:
        raise InvalidRequest(
            "events cannot be empty: omit it (or send null) for every type",
            details=[{"field": "events"}],
        )
    return sorted(set(values), key=SUBSCRIBABLE_TYPES.index)


# --- endpoints ------------------------------------------------------------------

# Documented in README.md: endpoints are fan-out targets, not a list to grow
# without bound (each costs a delivery per event).
MAX_ENDPOINTS_PER_CLIENT = 10
MAX_URL_LENGTH = 2048
MAX_DESCRIPTION_LENGTH = 500
SECRET_PREFIX = "whsec_"  # noqa: S105 - the spec's prefix, not a secret
SECRET_BYTES = 32  # within the spec's 24-64


@dataclass(frozen=True, slots=True)
class WebhookUrl:
    """A checked endpoint URL: its parts as the sender connects to them."""

    url: str
    scheme: str
    host: str  # lowercased; IPv6 without brackets
    port: int
    target: str  # path and query, as sent on the request line

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def parse_webhook_url(raw: str, *, allow_private: bool) -> WebhookUrl:
    """The URL a client gives, refused unless it is HTTPS to a public host.

    ``allow_private`` (the operator setting WEBHOOK_ALLOW_PRIVATE_URLS, on in
    ``make dev``) admits plain http:// and private, loopback and link-local
    addresses, so a developer's local receiver works. Host names are checked
    again after DNS resolution, at every delivery (``refuse_address``).
    """
    if len(raw) > MAX_URL_LENGTH:
        raise UnsafeWebhookUrl(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(ord(char) < 0x21 or ord(char) == 0x7F for char in raw):
        raise UnsafeWebhookUrl("the URL holds spaces or control characters")
    try:
        parts: SplitResult = urlsplit(raw)
        port = parts.port
    except ValueError as error:
        raise UnsafeWebhookUrl(f"the URL does not parse: {error}") from error
    scheme = parts.scheme.lower()
    if scheme != "https" and not (scheme == "http" and allow_private):
        raise UnsafeWebhookUrl("the URL must start with https://")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise UnsafeWebhookUrl(
            "the URL may not hold credentials (user:password@): verify the "
            "webhook-signature header instead"
        )
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise UnsafeWebhookUrl("the URL names no host")
    if parts.fragment:
        raise UnsafeWebhookUrl("the URL may not hold a #fragment")
    try:
        host.encode("ascii")
    except UnicodeEncodeError as error:
        raise UnsafeWebhookUrl(
            "write an international host name in its xn-- (IDNA) form"
        ) from error
    if not allow_private:
        if host == "localhost" or host.endswith(".localhost"):
            raise UnsafeWebhookUrl("the URL names this machine (localhost)")
        literal = _ip_literal(host)
        if literal is not None:
            refuse_address(literal, allow_private=False)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    default_port = 443 if scheme == "https" else 80
    return WebhookUrl(raw, scheme, host, port or default_port, target)


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def refuse_address(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, *, allow_private: bool
) -> None:
    """Raise BlockedAddress for anything but a public unicast address."""
    if allow_private:
        return
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    ):
        raise BlockedAddress(
            f"{address} is a private, loopback, link-local or reserved address; "
            "Mailroom only calls public addresses"
        )


def clean_description(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if len(value) > MAX_DESCRIPTION_LENGTH:
        raise InvalidRequest(f"description: at most {MAX_DESCRIPTION_LENGTH} characters")
    if any(ord(char) < 0x20 and char not in "\t" for char in value):
        raise InvalidRequest("description: no control characters")
    return value or None


@dataclass(slots=True)
class Endpoint:
    id: UUID
    client_id: UUID
    url: str
    description: str | None
    # None: every type.
    event_types: list[str] | None
    secret_sealed: str = field(repr=False)
    # "first": of email.opened, only each message's first human open (issue 21).
    opens: str = "all"
    previous_secret_sealed: str | None = field(default=None, repr=False)
    previous_secret_expires_at: datetime | None = None
    disabled_at: datetime | None = None
    disabled_reason: str | None = None
    # The first failure since the last success: 5 days of it disables.
    failing_since: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def wants(self, public: str, detail: Mapping[str, Any] | None = None) -> bool:
        if public == TEST_EVENT:
            return True
        if self.event_types is not None and public not in self.event_types:
            return False
        # The tracking service marks the first human open of a message (issue 21).
        first_only = public == OPENED_EVENT and self.opens == "first"
        return not (first_only and not (detail or {}).get("first_open"))

    @property
    def enabled(self) -> bool:
        return self.disabled_at is None

    def audit_view(self) -> dict[str, Any]:
        """What the audit log keeps of it: never a secret, sealed or not."""
        return {
            "client_id": str(self.client_id),
            "url": self.url,
            "events": self.event_types,
            "description": self.description,
            "opens": self.opens,
            "disabled_reason": self.disabled_reason if self.disabled_at else None,
            "previous_secret_expires_at": self.previous_secret_expires_at.isoformat()
            if self.previous_secret_expires_at
            else None,
        }


def secret_context(endpoint_id: UUID) -> str:
    """What a sealed secret is bound to: it opens for this endpoint only."""
    return f"webhook:{endpoint_id}"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key a ``whsec_`` secret stands for (its base64-decoded bytes)."""
    body = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError("not a whsec_ secret") from error


# --- the message sent -----------------------------------------------------------


def event_id(outbox_id: int) -> str:
    """``webhook-id``: the event's, the same on every retry and in the feed."""
    return f"evt_{outbox_id}"


def outbox_id_of(event: str) -> int | None:
    if not event.startswith("evt_") or not event[4:].isdigit() or len(event) > 24:
        return None
    return int(event[4:])


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """A ``webhook_events`` row: an event as it happened, with what the message said then."""

    id: int
    client_id: UUID
    type: str  # internal
    at: datetime
    detail: dict[str, Any]
    message_id: UUID | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    recipients: list[str] = field(default_factory=list)
    is_test: bool = False
    feed_seq: int | None = None

    @property
    def public_type(self) -> str | None:
        return public_type(self.type)


# Detail keys of internal events that are bookkeeping, not the client's business.
_PRIVATE_DETAIL_KEYS = frozenset({"claim_token", "trace_id", "raw", "attempts_so_far"})


def event_body(event: OutboxEvent) -> dict[str, Any]:
    """The body every delivery and the feed carry for ``event`` (Standard Webhooks' shape)."""
    public = event.public_type or event.type
    data: dict[str, Any] = {}
    if event.message_id is not None:
        data["message_id"] = str(event.message_id)
        data["to"] = list(event.recipients)
        tags = event.metadata.get("tags") if isinstance(event.metadata, dict) else None
        data["metadata"] = event.metadata
        data["tags"] = tags if isinstance(tags, list | dict) else []
    detail = {k: v for k, v in event.detail.items() if k not in _PRIVATE_DETAIL_KEYS}
    if "recipient" in detail:
        data["recipient"] = detail.pop("recipient")
    elif event.message_id is not None and len(event.recipients) == 1:
        data["recipient"] = event.recipients[0]
    if event.type == "recipients_suppressed":
        data["partial"] = True
    data.update({k: v for k, v in detail.items() if k not in data})
    if event.is_test:
        data["mode"] = "test"
    return {"type": public, "timestamp": _timestamp(event.at), "data": data}


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode_body(body: Mapping[str, Any]) -> bytes:
    """The exact bytes signed and sent: compact, keys in a fixed order."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def signature(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` entry of ``webhook-signature``."""
    mac = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode("ascii")


def signed_headers(
    keys: Sequence[bytes], webhook_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers; during a rotation, one signature per key."""
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(key, webhook_id, timestamp, body) for key in keys),
    }


# --- retries --------------------------------------------------------------------

# Delay before attempt n+1 after attempt n failed (Svix's and Resend's schedule):
# immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h. The first entry is the
# first attempt itself.
RETRY_SCHEDULE: tuple[timedelta, ...] = (
    timedelta(0),
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
)
MAX_ATTEMPTS = len(RETRY_SCHEDULE)
RETRY_JITTER = 0.1  # +-10 %, so retries of many deliveries spread out
# An endpoint failing every attempt for this long is disabled.
DISABLE_AFTER = timedelta(days=5)
# Retry-After is honoured up to this.
MAX_RETRY_AFTER = timedelta(hours=10)


def next_attempt_delay(
    attempts_made: int, *, retry_after: timedelta | None = None, rng: random.Random | None = None
) -> timedelta | None:
    """How long to wait after ``attempts_made`` failed attempts; None: give up."""
    if attempts_made >= MAX_ATTEMPTS:
        return None
    base = RETRY_SCHEDULE[attempts_made]
    spread = (rng or random).uniform(-RETRY_JITTER, RETRY_JITTER)
    delay = base + base * spread
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return delay


def parse_retry_after(value: str | None, now: datetime) -> timedelta | None:
    """Retry-After as seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return timedelta(seconds=min(int(value), int(MAX_RETRY_AFTER.total_seconds())))
    from email.utils import parsedate_to_datetime

    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(timedelta(0), moment - now)


class DeliveryStatus:
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # The endpoint was disabled or deleted before this delivery's turn.
    SKIPPED = "skipped"
    ALL = (PENDING, SUCCEEDED, FAILED, SKIPPED)


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """What one HTTP attempt came to."""

    status_code: int | None
    latency_ms: int
    response_excerpt: str = ""
    error: str | None = None
    retry_after: timedelta | None = None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def gone(self) -> bool:
        """410: the receiver says the endpoint no longer exists; disable at once."""
        return self.status_code == 410
