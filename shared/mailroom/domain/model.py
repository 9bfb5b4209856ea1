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
    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    FAILED = "failed"
    SPAM = "spam"

    @property
    def is_final_for_sending(self) -> bool:
        """True once the worker has nothing left to do for the message."""
        return self is not MessageStatus.QUEUED


class EventType(StrEnum):
    """Why a message's row changed; one row in ``message_events`` each."""

    ACCEPTED = "accepted"
    ENQUEUE_FAILED = "enqueue_failed"
    ATTEMPT_FAILED = "attempt_failed"
    SENT = "sent"
    FAILED = "failed"


@dataclass(slots=True)
class Client:
    id: UUID
    name: str
    api_key_prefix: str
    api_secret_hash: str
    rate_limit: int
    quota_limit: int
    status: ClientStatus = ClientStatus.ACTIVE
    # Provider names in the order this client's mail tries them; None means
    # the service-wide order from config.
    provider_order: list[str] | None = None
    created_at: datetime | None = None


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
    status: MessageStatus = MessageStatus.QUEUED
    provider: str | None = None
    provider_msg_id: str | None = None
    attempts: int = 0
    last_error: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    sent_at: datetime | None = None

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
