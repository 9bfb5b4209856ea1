"""Amazon SES feedback, delivered by SNS: over HTTPS, or by SNS invoking the function.

SES writes two formats that differ mainly in the name of the type field:
feedback notifications (``notificationType``: Bounce, Complaint, Delivery) and
event publishing through a configuration set (``eventType``: those three plus
Send, Reject, DeliveryDelay, Open, Click, Rendering Failure, Subscription).
Reject and DeliveryDelay exist only in the event-publishing format.

References:
https://docs.aws.amazon.com/ses/latest/dg/notification-contents.html
https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-contents.html
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mailroom.adapters.webhooks.base import (
    ProviderWebhook,
    WebhookRequest,
    iso_datetime,
    make_event,
    mapping,
    provider_json,
)
from mailroom.adapters.webhooks.fetch import AwsHttpsFetcher
from mailroom.adapters.webhooks.verify_sns import (
    SUBSCRIPTION_CONFIRMATION,
    UNSUBSCRIBE_CONFIRMATION,
    SnsMessage,
    SnsVerifier,
    check_subscribe_url,
)
from mailroom.domain.errors import MalformedWebhook
from mailroom.domain.feedback import DeliveryEvent, FeedbackEventType, RejectReason

PROVIDER = "ses"
# SES publishes this as a plain Notification right after the subscription.
TOPIC_VALIDATION_MESSAGE = "Successfully validated SNS topic for Amazon SES event publishing."

# Event types other than Bounce (which depends on its bounceType below).
SES_EVENT_TYPES: dict[str, FeedbackEventType] = {
    "Send": FeedbackEventType.QUEUED,
    "Delivery": FeedbackEventType.DELIVERED,
    "Complaint": FeedbackEventType.COMPLAINED,
    "Reject": FeedbackEventType.REJECTED,
    "DeliveryDelay": FeedbackEventType.DEFERRED,
    "Open": FeedbackEventType.OPENED,
    "Click": FeedbackEventType.CLICKED,
    # Only for SES-side templates, which Mailroom does not use.
    "Rendering Failure": FeedbackEventType.REJECTED,
}

# (bounceType, bounceSubType) → normalised. A Permanent bounce is a hard
# bounce (suppressed); Transient ones are soft: SES gave up on this message
# but the address may work later, so they bounce the message without a
# suppression entry (reject reason other than bounced/invalid).
BOUNCE_TYPES: dict[tuple[str, str], tuple[FeedbackEventType, RejectReason]] = {
    ("Permanent", "General"): (FeedbackEventType.BOUNCED, RejectReason.BOUNCED),
    ("Permanent", "NoEmail"): (FeedbackEventType.BOUNCED, RejectReason.INVALID),
    ("Permanent", "Suppressed"): (FeedbackEventType.BOUNCED, RejectReason.BOUNCED),
    ("Permanent", "OnAccountSuppressionList"): (FeedbackEventType.BOUNCED, RejectReason.BOUNCED),
    ("Transient", "General"): (FeedbackEventType.BOUNCED, RejectReason.OTHER),
    ("Transient", "MailboxFull"): (FeedbackEventType.BOUNCED, RejectReason.OTHER),
    ("Transient", "MessageTooLarge"): (FeedbackEventType.BOUNCED, RejectReason.OTHER),
    ("Transient", "ContentRejected"): (FeedbackEventType.BOUNCED, RejectReason.BLOCKED),
    ("Transient", "AttachmentRejected"): (FeedbackEventType.BOUNCED, RejectReason.BLOCKED),
    ("Undetermined", "Undetermined"): (FeedbackEventType.BOUNCED, RejectReason.OTHER),
}
# A subtype SES adds later falls back on its bounceType.
BOUNCE_TYPE_FALLBACK: dict[str, tuple[FeedbackEventType, RejectReason]] = {
    "Permanent": (FeedbackEventType.BOUNCED, RejectReason.BOUNCED),
    "Transient": (FeedbackEventType.BOUNCED, RejectReason.OTHER),
    "Undetermined": (FeedbackEventType.BOUNCED, RejectReason.OTHER),
}

# DeliveryDelay delayType → why it is delayed.
DELAY_REASONS: dict[str, RejectReason] = {
    "InternalFailure": RejectReason.OTHER,
    "General": RejectReason.OTHER,
    "MailboxFull": RejectReason.OTHER,
    "SpamDetected": RejectReason.SPAM,
    "RecipientServerError": RejectReason.OTHER,
    "IPFailure": RejectReason.BLOCKED,
    "TransientCommunicationFailure": RejectReason.TIMED_OUT,
    "BYOIPHostNameLookupUnavailable": RejectReason.OTHER,
    "Undetermined": RejectReason.OTHER,
    "SendingDeferral": RejectReason.OTHER,
}

# Which object of the payload lists the recipients, and under which key.
RECIPIENT_LISTS: dict[str, tuple[str, str]] = {
    "Bounce": ("bounce", "bouncedRecipients"),
    "Complaint": ("complaint", "complainedRecipients"),
    "Delivery": ("delivery", "recipients"),
    "DeliveryDelay": ("deliveryDelay", "delayedRecipients"),
}
# The payload object holding the event's own details, by event type.
DETAIL_OBJECTS: dict[str, str] = {
    "Bounce": "bounce",
    "Complaint": "complaint",
    "Delivery": "delivery",
    "DeliveryDelay": "deliveryDelay",
    "Reject": "reject",
    "Open": "open",
    "Click": "click",
    "Rendering Failure": "failure",
    "Subscription": "subscription",
}


class SesWebhook(ProviderWebhook[SnsMessage]):
    """SES notifications in SNS envelopes; confirms subscriptions to allowed topics only.

    A SubscriptionConfirmation is confirmed by GETting its SubscribeURL through
    the same guarded fetcher as the certificates, after the signature and the
    topic allowlist passed: no AWS credentials or sns:ConfirmSubscription
    permission needed, and the URL must be SNS's own link for that topic.
    """

    provider = PROVIDER

    def __init__(self, verifier: SnsVerifier, fetcher: AwsHttpsFetcher) -> None:
        self._verifier = verifier
        self._fetcher = fetcher

    def validate_request(self, request: WebhookRequest) -> SnsMessage:
        envelope = mapping(request.json(), "the SNS message")
        declared = request.header("x-amz-sns-message-type")
        if declared is not None and declared != envelope.get("Type"):
            raise MalformedWebhook("x-amz-sns-message-type does not match the body's Type")
        return self._verifier.verify(envelope)

    def validate_lambda_record(self, record: Mapping[str, Any]) -> SnsMessage:
        """The ``Sns`` object of an SNS→Lambda record, verified the same way."""
        return self._verifier.verify(lambda_envelope(record))

    def parse_events(self, verified: SnsMessage) -> list[DeliveryEvent]:
        if verified.type == SUBSCRIPTION_CONFIRMATION:
            self._fetcher.fetch(check_subscribe_url(verified))
            return []
        if verified.type == UNSUBSCRIBE_CONFIRMATION:
            return []
        return parse_ses_message(verified.message, event_id=verified.message_id)


def lambda_envelope(record: Mapping[str, Any]) -> dict[str, Any]:
    """Lambda spells two keys differently and writes a null Subject; undo both."""
    envelope = dict(record)
    for lambda_key, http_key in (
        ("SigningCertUrl", "SigningCertURL"),
        ("UnsubscribeUrl", "UnsubscribeURL"),
    ):
        if lambda_key in envelope:
            envelope[http_key] = envelope.pop(lambda_key)
    if envelope.get("Subject") is None:
        envelope.pop("Subject", None)
    return envelope


def parse_ses_message(message: str, *, event_id: str) -> list[DeliveryEvent]:
    """The events in one SES notification (one per recipient it names)."""
    if message == TOPIC_VALIDATION_MESSAGE:
        return []
    try:
        payload = provider_json(message)
    except MalformedWebhook as error:
        raise MalformedWebhook(
            f"the SNS Message is not an SES notification: {error.message}", details=error.details
        ) from error
    payload = dict(mapping(payload, "the SES notification"))
    kind = payload.get("eventType") or payload.get("notificationType")
    if not isinstance(kind, str):
        raise MalformedWebhook("the SES notification has no eventType or notificationType")
    mail = mapping(payload.get("mail"), "mail")
    detail = mapping(payload.get(DETAIL_OBJECTS.get(kind, ""), {}), kind)
    common_headers = mail.get("commonHeaders")
    header_id = common_headers.get("messageId") if isinstance(common_headers, Mapping) else None

    event_type, reject_reason, description = _classify(kind, detail)
    timestamp = iso_datetime(detail.get("timestamp") or mail.get("timestamp"), "timestamp")
    recipients = _recipients(kind, detail, mail)
    return [
        make_event(
            PROVIDER,
            event_type=event_type,
            event_id=event_id,
            timestamp=timestamp,
            message_id=mail.get("messageId"),
            recipient=address,
            raw=payload,
            reject_reason=reject_reason,
            mta_response=response or detail.get("smtpResponse"),
            description=description,
            message_id_header=header_id,
        )
        for address, response in recipients
    ]


def _classify(
    kind: str, detail: Mapping[str, Any]
) -> tuple[FeedbackEventType, RejectReason | None, str | None]:
    if kind == "Bounce":
        bounce_type = str(detail.get("bounceType", ""))
        sub_type = str(detail.get("bounceSubType", ""))
        event_type, reason = BOUNCE_TYPES.get(
            (bounce_type, sub_type),
            BOUNCE_TYPE_FALLBACK.get(bounce_type, (FeedbackEventType.BOUNCED, RejectReason.OTHER)),
        )
        return event_type, reason, f"{bounce_type}: {sub_type}"
    event_type = SES_EVENT_TYPES.get(kind, FeedbackEventType.UNKNOWN)
    if kind == "Complaint":
        return event_type, RejectReason.SPAM, _str(detail.get("complaintFeedbackType"))
    if kind == "DeliveryDelay":
        delay = str(detail.get("delayType", ""))
        return event_type, DELAY_REASONS.get(delay, RejectReason.OTHER), delay or None
    if kind == "Reject":
        return event_type, RejectReason.BLOCKED, _str(detail.get("reason"))
    if kind == "Rendering Failure":
        return event_type, RejectReason.OTHER, _str(detail.get("errorMessage"))
    if event_type is FeedbackEventType.UNKNOWN:
        return event_type, None, f"SES event type {kind[:60]!r}"
    return event_type, None, None


def _recipients(
    kind: str, detail: Mapping[str, Any], mail: Mapping[str, Any]
) -> list[tuple[str | None, str | None]]:
    """(address, that recipient's own response) pairs; [(None, None)] if none are named."""
    found: list[tuple[str | None, str | None]] = []
    if kind in RECIPIENT_LISTS:
        entries = detail.get(RECIPIENT_LISTS[kind][1])
        if not isinstance(entries, list):
            raise MalformedWebhook(f"{kind} lists no recipients")
        for entry in entries:
            if isinstance(entry, str):  # delivery.recipients is a list of strings
                found.append((entry, None))
            elif isinstance(entry, Mapping):
                found.append((_str(entry.get("emailAddress")), _str(entry.get("diagnosticCode"))))
            else:
                raise MalformedWebhook(f"{kind} names a recipient of an unknown shape")
    else:
        # Send, Reject, Open, Click: SES names no single recipient, so the
        # event is recorded for each destination of the message.
        destination = mail.get("destination")
        if isinstance(destination, list):
            found = [(entry, None) for entry in destination if isinstance(entry, str)]
    return found or [(None, None)]


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
