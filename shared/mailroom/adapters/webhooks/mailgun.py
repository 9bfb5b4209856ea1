"""Mailgun webhooks (the current JSON form): one event per request, signed in the body.

Reference: https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/webhook-payloads
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import getaddresses
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
from mailroom.adapters.webhooks.verify_mailgun import MailgunSignatureVerifier
from mailroom.domain.errors import InvalidSignature, MalformedWebhook
from mailroom.domain.feedback import DeliveryEvent, FeedbackEventType, RejectReason

PROVIDER = "mailgun"

EVENT_TYPES: dict[str, FeedbackEventType] = {
    "accepted": FeedbackEventType.QUEUED,
    "delivered": FeedbackEventType.DELIVERED,
    "rejected": FeedbackEventType.REJECTED,
    "opened": FeedbackEventType.OPENED,
    "clicked": FeedbackEventType.CLICKED,
    "unsubscribed": FeedbackEventType.UNSUBSCRIBED,
    "complained": FeedbackEventType.COMPLAINED,
}

# "failed" splits on severity and reason. Permanent "suppress-*" failures are
# Mailgun refusing to send to an address on its own lists (never attempted);
# a permanent "bounce" is a hard bounce; temporary failures are retried.
FAILURES: dict[tuple[str, str | None], tuple[FeedbackEventType, RejectReason]] = {
    ("permanent", "bounce"): (FeedbackEventType.BOUNCED, RejectReason.BOUNCED),
    ("permanent", "suppress-bounce"): (FeedbackEventType.REJECTED, RejectReason.BOUNCED),
    ("permanent", "suppress-unsubscribe"): (
        FeedbackEventType.REJECTED,
        RejectReason.UNSUBSCRIBED,
    ),
    ("permanent", "suppress-complaint"): (FeedbackEventType.REJECTED, RejectReason.SPAM),
    ("permanent", "espblock"): (FeedbackEventType.BOUNCED, RejectReason.BLOCKED),
    ("permanent", "old"): (FeedbackEventType.BOUNCED, RejectReason.TIMED_OUT),
    ("permanent", None): (FeedbackEventType.BOUNCED, RejectReason.OTHER),
    ("temporary", "greylisted"): (FeedbackEventType.DEFERRED, RejectReason.OTHER),
    ("temporary", None): (FeedbackEventType.DEFERRED, RejectReason.OTHER),
}

FIXED_REASONS: dict[FeedbackEventType, RejectReason] = {
    FeedbackEventType.COMPLAINED: RejectReason.SPAM,
    FeedbackEventType.UNSUBSCRIBED: RejectReason.UNSUBSCRIBED,
    FeedbackEventType.REJECTED: RejectReason.OTHER,
}


@dataclass(frozen=True, slots=True)
class VerifiedMailgunEvent:
    payload: Mapping[str, Any]
    event_data: Mapping[str, Any]
    replay_key: str


class MailgunWebhook(ProviderWebhook[VerifiedMailgunEvent]):
    provider = PROVIDER

    def __init__(self, verifier: MailgunSignatureVerifier) -> None:
        self._verifier = verifier

    def validate_request(self, request: WebhookRequest) -> VerifiedMailgunEvent:
        payload = mapping(request.json(), "the Mailgun webhook")
        signature = payload.get("signature")
        if not isinstance(signature, Mapping):
            # Unsigned is a signature failure, not a shape problem.
            raise InvalidSignature("the Mailgun webhook carries no signature object")
        replay_key = self._verifier.verify(signature)
        try:
            event_data = mapping(payload.get("event-data"), "event-data")
        except MalformedWebhook:
            self._verifier.release(replay_key)
            raise
        return VerifiedMailgunEvent(payload=payload, event_data=event_data, replay_key=replay_key)

    def parse_events(self, verified: VerifiedMailgunEvent) -> list[DeliveryEvent]:
        return [parse_mailgun_event(verified.event_data, raw=dict(verified.payload))]

    def forget(self, verified: VerifiedMailgunEvent) -> None:
        self._verifier.release(verified.replay_key)


def parse_mailgun_event(data: Mapping[str, Any], *, raw: dict[str, Any]) -> DeliveryEvent:
    name = text_field(data.get("event"), "event")
    if name is None:
        raise MalformedWebhook("event-data has no 'event'")
    delivery_status = data.get("delivery-status")
    status = delivery_status if isinstance(delivery_status, Mapping) else {}
    reason = text_field(data.get("reason"), "reason")
    reject_reason: RejectReason | None
    if name == "failed":
        severity = str(data.get("severity", "permanent"))
        event_type, reject_reason = FAILURES.get(
            (severity, reason),
            FAILURES.get((severity, None), (FeedbackEventType.BOUNCED, RejectReason.OTHER)),
        )
    else:
        event_type = EVENT_TYPES.get(name, FeedbackEventType.UNKNOWN)
        reject_reason = FIXED_REASONS.get(event_type)
    headers = _headers(data)
    message_id = text_field(headers.get("message-id"), "message-id")
    recipient = data.get("recipient")
    description = status.get("description") or None
    if event_type is FeedbackEventType.REJECTED and name == "rejected":
        reject = data.get("reject")
        description = reject.get("reason") if isinstance(reject, Mapping) else description
        # A "rejected" event names no recipient; the To header does.
        recipient = recipient or _first_address(headers.get("to"))
    timestamp = epoch_datetime(data.get("timestamp"), "timestamp")
    # Mailgun's event id is unique "within a day"; with the event's own
    # timestamp it is unique, and stable across Mailgun's retries.
    event_id = text_field(data.get("id"), "event id")
    return make_event(
        PROVIDER,
        event_type=event_type,
        event_id=f"{event_id}@{data.get('timestamp')}" if event_id else content_id(data),
        timestamp=timestamp,
        message_id=message_id,
        recipient=recipient,
        raw=raw,
        reject_reason=reject_reason,
        mta_response=status.get("message") or None,
        description=description,
        message_id_header=f"<{message_id.strip('<>')}>" if message_id else None,
    )


def _headers(data: Mapping[str, Any]) -> Mapping[str, Any]:
    message = data.get("message")
    headers = message.get("headers") if isinstance(message, Mapping) else None
    return headers if isinstance(headers, Mapping) else {}


def _first_address(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    parsed = getaddresses([value])
    return parsed[0][1] or None if parsed else None
