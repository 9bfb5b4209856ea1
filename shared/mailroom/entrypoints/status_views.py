"""Response models of the status API's delivery views: recipients, events, listings."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from mailroom.adapters.db.tracking import Engagement
from mailroom.domain.feedback import RecipientOutcome, RecipientStatus, RejectReason
from mailroom.domain.model import Message, MessageEvent, MessageStatus
from mailroom.domain.tenancy import KeyKind
from mailroom.services.status import MessagePage


class RecipientView(BaseModel):
    address: str
    kind: str = Field(description="to, cc, bcc, or other (reported by the provider only)")
    status: RecipientStatus = Field(
        description=(
            "What the provider reported for this recipient; until it does, the message's "
            "own state (queued, sent, failed). `suppressed`: dropped before sending."
        )
    )
    reject_reason: RejectReason | None = None
    response: str | None = Field(default=None, description="The receiving server's answer")
    updated_at: datetime | None = Field(
        default=None, description="When this recipient's status last changed"
    )


class EngagementView(BaseModel):
    """Opens and clicks of a tracked message, derived from every recorded hit (issue 21)."""

    opens: int = Field(description="Every recorded pixel fetch, machines included")
    machine_opens: int = Field(
        description="Fetches flagged as machines: proxies (Apple MPP, Gmail), scanners, too soon"
    )
    unique_opens: int = Field(description="Distinct user agent and address pairs of human opens")
    first_open_at: datetime | None = Field(description="The first human open")
    clicks: int = Field(description="Every recorded click, machines included")
    machine_clicks: int = Field(description="Clicks flagged as machines (scanners, honeypot)")
    unique_clicks: int = Field(description="Distinct links clicked by people")
    first_click_at: datetime | None = Field(description="The first human click")


def engagement_view(engagement: Engagement) -> EngagementView:
    return EngagementView(
        opens=engagement.opens,
        machine_opens=engagement.machine_opens,
        unique_opens=engagement.unique_opens,
        first_open_at=engagement.first_open_at,
        clicks=engagement.clicks,
        machine_clicks=engagement.machine_clicks,
        unique_clicks=engagement.unique_clicks,
        first_click_at=engagement.first_click_at,
    )


class MessageEventView(BaseModel):
    type: str
    at: datetime
    detail: dict[str, Any]


MODE_DESCRIPTION = "test: sent in test mode, recorded by the sandbox; no provider saw it."


class MessageEventsView(BaseModel):
    message_id: uuid.UUID
    mode: KeyKind = Field(description=MODE_DESCRIPTION)
    events: list[MessageEventView]


class MessageSummaryView(BaseModel):
    id: uuid.UUID
    status: MessageStatus
    mode: KeyKind = Field(description=MODE_DESCRIPTION)
    template: str
    to: list[str]
    subject: str | None
    provider: str | None
    created_at: datetime | None
    updated_at: datetime | None


class MessagePageView(BaseModel):
    messages: list[MessageSummaryView]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next (older) page; null on the last page."
    )


def recipient_views(outcomes: list[RecipientOutcome]) -> list[RecipientView]:
    return [
        RecipientView(
            address=outcome.address,
            kind=outcome.kind,
            status=outcome.status or RecipientStatus.QUEUED,
            reject_reason=outcome.reject_reason,
            response=outcome.response,
            updated_at=outcome.updated_at,
        )
        for outcome in outcomes
    ]


def mode_of(message: Message) -> KeyKind:
    """``test`` for a message sent in test mode (issue 15), else ``live``."""
    return KeyKind.TEST if message.is_test else KeyKind.LIVE


def events_view(message: Message, events: list[MessageEvent]) -> MessageEventsView:
    return MessageEventsView(
        message_id=message.id,
        mode=mode_of(message),
        events=[MessageEventView(type=e.type.value, at=e.at, detail=e.detail) for e in events],
    )


def page_view(page: MessagePage) -> MessagePageView:
    return MessagePageView(
        messages=[_summary(message) for message in page.messages], next_cursor=page.next_cursor
    )


def _summary(message: Message) -> MessageSummaryView:
    return MessageSummaryView(
        id=message.id,
        status=message.status,
        mode=mode_of(message),
        template=message.template_name,
        to=message.to,
        subject=message.subject,
        provider=message.provider,
        created_at=message.created_at,
        updated_at=message.updated_at,
    )
