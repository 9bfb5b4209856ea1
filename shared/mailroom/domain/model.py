"""Mailroom's entities: clients, messages and the events that explain them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID


class ClientStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class MessageStatus(StrEnum):
    # Issue 18: held until ``scheduled_at``; the scheduler enqueues it when due.
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    # Claimed by a worker until its lease runs out (services/delivery.py).
    SENDING = "sending"
    # Issue 20: accepted into a paused queue; kept in PostgreSQL, not on SQS,
    # until the queue is resumed (or drained).
    HELD = "held"
    SENT = "sent"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    FAILED = "failed"
    SPAM = "spam"
    # A bulk batch's message its batch's cancel stopped before any send (issue 17),
    # or a scheduled message cancelled before sending began (issue 18).
    CANCELLED = "cancelled"

    @property
    def is_final_for_sending(self) -> bool:
        """True once the worker has nothing left to do for the message."""
        return self not in (
            MessageStatus.QUEUED,
            MessageStatus.SENDING,
            MessageStatus.SCHEDULED,
            MessageStatus.HELD,
        )


class EventType(StrEnum):
    """Why a message's row changed; one row in ``message_events`` each."""

    ACCEPTED = "accepted"
    ENQUEUE_FAILED = "enqueue_failed"
    ATTEMPT_FAILED = "attempt_failed"
    SENT = "sent"
    FAILED = "failed"
    # Provider chain: one provider of an attempt failed (the next was tried);
    # a provider refused our own configuration (an operator alarm); an
    # operator sent the message back from the dead-letter queue.
    PROVIDER_FAILED = "provider_failed"
    PROVIDER_MISCONFIGURED = "provider_misconfigured"
    REDRIVEN = "redriven"
    # The reconciler put a stuck message back on the queue (issue 7).
    REQUEUED = "requeued"
    # The client asked for a failed message to be sent again (issue 17).
    RETRIED = "retried"
    # Delivery feedback from the provider (domain/feedback.py maps them).
    PROVIDER_ACCEPTED = "provider_accepted"
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    REJECTED = "rejected"
    OPENED = "opened"
    CLICKED = "clicked"
    UNSUBSCRIBED = "unsubscribed"
    PROVIDER_EVENT = "provider_event"
    # Suppression list: every recipient refused, or some dropped before sending.
    SUPPRESSED = "suppressed"
    RECIPIENTS_SUPPRESSED = "recipients_suppressed"
    # Bulk batches (issue 17) and scheduling (issue 18): stopped before sending.
    # Issue 18: accepted for later, its time moved.
    SCHEDULED = "scheduled"
    RESCHEDULED = "rescheduled"
    CANCELLED = "cancelled"
    # Over its recipient domain group's rate (issue 20): put back, not an attempt.
    THROTTLED = "throttled"
    # Issue 20: a paused queue kept the message; its resume (or drain) let it go.
    HELD = "held"
    RELEASED = "released"


@dataclass(slots=True)
class Client:
    id: UUID
    name: str
    # The key the client was created with; its secret and every other key
    # are in api_keys (domain/api_keys.py).
    api_key_prefix: str
    rate_limit: int
    quota_limit: int
    status: ClientStatus = ClientStatus.ACTIVE
    # Provider names in the order this client's mail tries them; None means
    # the service-wide order from config.
    provider_order: list[str] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    # Written at most every LAST_USED_WRITE_INTERVAL_SECONDS per instance.
    last_used_at: datetime | None = None
    # Issue 15: every key of the client acts in test mode.
    sandbox_mode: bool = False
    # Messages per UTC day; None: no daily limit (the monthly quota applies).
    daily_limit: int | None = None
    # Issue 21: reputation paused the client's live sending, and why; an
    # operator lifts it. Written by services/reputation.py only.
    sending_paused_at: datetime | None = None
    sending_paused_reason: str | None = None


@dataclass(frozen=True, slots=True)
class SendOptions:
    """What the caller asked of the message beyond its content (issue 16).

    Stored as one JSON document (``messages.options``); empty for most mail.
    """

    # Validated caller headers (domain/outgoing_headers.py), written as given.
    headers: tuple[tuple[str, str], ...] = ()
    tags: tuple[str, ...] = ()
    # Bulk/marketing mail: carries List-Unsubscribe and List-Unsubscribe-Post.
    bulk: bool = False
    # Feedback-ID's campaign part; the template name when not given.
    campaign: str | None = None
    # The client's own List-Unsubscribe URL instead of Mailroom's /u/{token}.
    unsubscribe_url: str | None = None
    # The client's SMTP relay the send named (issue 20); None: the client's
    # default relay if it has one, else the provider chain.
    smtp_config_id: str | None = None
    # Issue 21: the caller's {"opens": bool, "clicks": bool}, either key
    # optional; None: the defaults (domain/tracking.py resolves them).
    tracking: tuple[tuple[str, bool], ...] | None = None

    def to_document(self) -> dict[str, Any]:
        document: dict[str, Any] = {}
        if self.headers:
            document["headers"] = [list(pair) for pair in self.headers]
        if self.tags:
            document["tags"] = list(self.tags)
        if self.bulk:
            document["bulk"] = True
        if self.campaign:
            document["campaign"] = self.campaign
        if self.unsubscribe_url:
            document["unsubscribe_url"] = self.unsubscribe_url
        if self.smtp_config_id:
            document["smtp_config_id"] = self.smtp_config_id
        if self.tracking is not None:
            document["tracking"] = dict(self.tracking)
        return document

    @classmethod
    def from_document(cls, document: dict[str, Any] | None) -> SendOptions:
        if not document:
            return _NO_OPTIONS
        return cls(
            headers=tuple((str(name), str(value)) for name, value in document.get("headers", ())),
            tags=tuple(str(tag) for tag in document.get("tags", ())),
            bulk=bool(document.get("bulk", False)),
            campaign=document.get("campaign"),
            unsubscribe_url=document.get("unsubscribe_url"),
            smtp_config_id=document.get("smtp_config_id"),
            tracking=_tracking_of(document.get("tracking")),
        )


def _tracking_of(value: Any) -> tuple[tuple[str, bool], ...] | None:
    if not isinstance(value, dict):
        return None
    return tuple(
        (str(key), bool(flag)) for key, flag in value.items() if key in ("opens", "clicks")
    )


_NO_OPTIONS = SendOptions()


@dataclass(slots=True)
class MessageEvent:
    type: EventType
    at: datetime
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Message:
    id: UUID
    client_id: UUID
    trace_id: str
    template_name: str
    from_address: str
    to: list[str]
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    reply_to: list[str] = field(default_factory=list)
    # The caller's subject override until the worker renders; the subject
    # actually sent afterwards.
    subject: str | None = None
    props: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    # An uploaded template's version: pinned by the send, or the newest when
    # it was accepted; None for a file template (the deployed files render).
    template_version: int | None = None
    # Whose uploaded template that version is (issue 15): True the shared one,
    # False the message's client's own; None: resolved by name at render time
    # (file templates, and rows accepted before owners existed).
    template_shared: bool | None = None
    status: MessageStatus = MessageStatus.QUEUED
    provider: str | None = None
    provider_msg_id: str | None = None
    attempts: int = 0
    last_error: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    sent_at: datetime | None = None
    # Worker claims (issue 7): when a retry is due, when the current claim's
    # lease runs out, and how many times a worker has claimed the message.
    next_attempt_at: datetime | None = None
    lease_expires_at: datetime | None = None
    claims: int = 0
    # Sent in test mode (issue 15): the sandbox provider records it, no real one sees it.
    is_test: bool = False
    options: SendOptions = field(default_factory=SendOptions)
    # Issue 18: when the message is due (UTC); the schedule and run that made it.
    scheduled_at: datetime | None = None
    schedule_id: UUID | None = None
    schedule_run_id: UUID | None = None

    @property
    def recipient(self) -> str:
        """The ``recipient`` column of the seed design: the To line as text."""
        return ", ".join(self.to)

    @property
    def envelope_recipients(self) -> list[str]:
        return [*self.to, *self.cc, *self.bcc]


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    subject: str
    html: str
    text: str
