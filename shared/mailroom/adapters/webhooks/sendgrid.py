"""SendGrid's Event Webhook: a JSON array of events per request, signed as a whole.

Reference: https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mailroom.adapters.webhooks.base import (
    ProviderWebhook,
    WebhookRequest,
    content_id,
    epoch_datetime,
    make_event,
    mapping,
    text_field,
)
from mailroom.adapters.webhooks.verify_sendgrid import SendGridSignatureVerifier
from mailroom.domain.errors import MalformedWebhook
from mailroom.domain.feedback import DeliveryEvent, FeedbackEventType, RejectReason

PROVIDER = "sendgrid"
# The custom arg adapters/providers/sendgrid.py attaches to every message.
OUR_MESSAGE_ID_ARG = "mailroom_message_id"

EVENT_TYPES: dict[str, FeedbackEventType] = {
    "processed": FeedbackEventType.QUEUED,
    "deferred": FeedbackEventType.DEFERRED,
    "delivered": FeedbackEventType.DELIVERED,
    "bounce": FeedbackEventType.BOUNCED,
    "dropped": FeedbackEventType.REJECTED,
    "open": FeedbackEventType.OPENED,
    "click": FeedbackEventType.CLICKED,
    "spamreport": FeedbackEventType.COMPLAINED,
    "unsubscribe": FeedbackEventType.UNSUBSCRIBED,
    "group_unsubscribe": FeedbackEventType.UNSUBSCRIBED,
}

# A bounce's "type": "bounce" is a hard bounce; "blocked" (and "expired", after
# 72 hours of deferral) may clear later, so they bounce without suppression.
BOUNCE_TYPES: dict[str, RejectReason] = {
    "bounce": RejectReason.BOUNCED,
    "blocked": RejectReason.BLOCKED,
    "expired": RejectReason.TIMED_OUT,
}

# A drop's "reason" (lowercased): why SendGrid would not send at all.
DROP_REASONS: dict[str, RejectReason] = {
    "bounced address": RejectReason.BOUNCED,
    "invalid": RejectReason.INVALID,
    "invalid smtpapi header": RejectReason.OTHER,
    "unsubscribed address": RejectReason.UNSUBSCRIBED,
    "unsubscribed group": RejectReason.UNSUBSCRIBED,
    "spam reporting address": RejectReason.SPAM,
    "spam content (if spam checker app is enabled)": RejectReason.SPAM,
    "recipient list over package quota": RejectReason.OTHER,
}

FIXED_REASONS: dict[FeedbackEventType, RejectReason] = {
    FeedbackEventType.COMPLAINED: RejectReason.SPAM,
    FeedbackEventType.UNSUBSCRIBED: RejectReason.UNSUBSCRIBED,
}


class SendGridWebhook(ProviderWebhook[list[Mapping[str, Any]]]):
    provider = PROVIDER

    def __init__(self, verifier: SendGridSignatureVerifier) -> None:
        self._verifier = verifier

    def validate_request(self, request: WebhookRequest) -> list[Mapping[str, Any]]:
        self._verifier.verify(request)
        batch = request.json()
        if not isinstance(batch, list):
            raise MalformedWebhook("a SendGrid event batch is a JSON array")
        return [mapping(item, "a SendGrid event") for item in batch]

    def parse_events(self, verified: list[Mapping[str, Any]]) -> list[DeliveryEvent]:
        return [parse_sendgrid_event(item) for item in verified]


def parse_sendgrid_event(item: Mapping[str, Any]) -> DeliveryEvent:
    name = text_field(item.get("event"), "event")
    if name is None:
        raise MalformedWebhook("a SendGrid event has no 'event'")
    event_type = EVENT_TYPES.get(name, FeedbackEventType.UNKNOWN)
    reject_reason: RejectReason | None = FIXED_REASONS.get(event_type)
    response = item.get("response")
    description = None
    if event_type is FeedbackEventType.BOUNCED:
        reject_reason = BOUNCE_TYPES.get(str(item.get("type", "bounce")), RejectReason.OTHER)
        response = item.get("reason")
        description = item.get("bounce_classification")
    elif event_type is FeedbackEventType.REJECTED:
        reason = str(item.get("reason", ""))
        reject_reason = DROP_REASONS.get(reason.lower(), RejectReason.OTHER)
        description = reason or None
    elif event_type is FeedbackEventType.UNKNOWN:
        description = f"SendGrid event {name[:60]!r}"
    # sg_message_id is the X-Message-Id the send call returned, followed by
    # SendGrid's own ".filter..."/".recvd-..." suffix.
    sg_message_id = text_field(item.get("sg_message_id"), "sg_message_id")
    return make_event(
        PROVIDER,
        event_type=event_type,
        # Old "dropped" events carry no sg_event_id; their content is their identity.
        event_id=text_field(item.get("sg_event_id"), "sg_event_id") or content_id(item),
        timestamp=epoch_datetime(item.get("timestamp"), "timestamp"),
        message_id=sg_message_id.split(".", 1)[0] if sg_message_id else None,
        recipient=item.get("email"),
        raw=dict(item),
        reject_reason=reject_reason,
        mta_response=response,
        description=description,
        message_id_header=_our_message_id(item) or item.get("smtp-id"),
    )


def _our_message_id(item: Mapping[str, Any]) -> str | None:
    """The Message-ID the SendGrid provider sends as a custom arg; events echo custom args."""
    value = text_field(item.get(OUR_MESSAGE_ID_ARG), OUR_MESSAGE_ID_ARG)
    return f"<{value.strip('<>')}>" if value else None
