"""Each provider's fixtures become the right normalised events, raw payload kept."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from mailroom.adapters.webhooks.mailgun import parse_mailgun_event
from mailroom.adapters.webhooks.sendgrid import parse_sendgrid_event
from mailroom.adapters.webhooks.ses import TOPIC_VALIDATION_MESSAGE, parse_ses_message
from mailroom.domain.errors import MalformedWebhook
from mailroom.domain.feedback import DeliveryEvent, FeedbackEventType, RejectReason
from tests.feedback_support import fixture

E = FeedbackEventType
R = RejectReason
SES_ID = "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000"


def _ses(name: str) -> list[DeliveryEvent]:
    return parse_ses_message(json.dumps(fixture("ses", name)), event_id="sns-message-1")


def _fields(event: DeliveryEvent) -> dict[str, Any]:
    return {
        "type": event.event_type,
        "recipient": event.recipient,
        "reason": event.reject_reason,
        "response": event.mta_response,
        "description": event.description,
    }


# (fixture, provider message id, timestamp, [normalised fields per recipient])
SES_CASES: list[tuple[str, str, datetime, list[dict[str, Any]]]] = [
    (
        "notification-bounce-permanent.json",
        "00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0680-000000",
        datetime(2016, 1, 27, 14, 59, 38, 237000, tzinfo=UTC),
        [
            {
                "type": E.BOUNCED,
                "recipient": "jane@example.com",
                "reason": R.BOUNCED,
                "response": "smtp; 550 5.1.1 <jane@example.com>... User",
                "description": "Permanent: General",
            }
        ],
    ),
    (
        "notification-bounce-no-dsn.json",
        "00000137860315fd-34208509-5b74-41f3-95c5-22c1edc3c924-000000",
        datetime(2016, 1, 27, 14, 59, 38, 237000, tzinfo=UTC),
        [
            {
                "type": E.BOUNCED,
                "recipient": address,
                "reason": R.BOUNCED,
                "response": None,
                "description": "Permanent: General",
            }
            for address in ("jane@example.com", "richard@example.com")
        ],
    ),
    (
        "notification-bounce-transient.json",
        "00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0681-000000",
        datetime(2016, 1, 27, 14, 59, 38, 237000, tzinfo=UTC),
        [
            {
                "type": E.BOUNCED,
                "recipient": "jane@example.com",
                "reason": R.OTHER,
                "response": "smtp; 452 4.2.2 <jane@example.com>... Mailbox full",
                "description": "Transient: MailboxFull",
            }
        ],
    ),
    (
        "notification-complaint.json",
        "000001378603177f-7a5433e7-8edb-42ae-af10-f0181f34d6ee-000000",
        datetime(2016, 1, 27, 14, 59, 38, 237000, tzinfo=UTC),
        [
            {
                "type": E.COMPLAINED,
                "recipient": "richard@example.com",
                "reason": R.SPAM,
                "response": None,
                "description": "abuse",
            }
        ],
    ),
    (
        "notification-delivery.json",
        "0000014644fe5ef6-9a483358-9170-4cb4-a269-f5dcdf415321-000000",
        datetime(2016, 1, 27, 14, 59, 38, 237000, tzinfo=UTC),
        [
            {
                "type": E.DELIVERED,
                "recipient": "jane@example.com",
                "reason": None,
                "response": "250 ok:  Message 64111812 accepted",
                "description": None,
            }
        ],
    ),
    (
        "event-bounce-permanent.json",
        SES_ID,
        datetime(2017, 8, 5, 0, 41, 2, 669000, tzinfo=UTC),
        [
            {
                "type": E.BOUNCED,
                "recipient": "recipient@example.com",
                "reason": R.BOUNCED,
                "response": "smtp; 550 5.1.1 user unknown",
                "description": "Permanent: General",
            }
        ],
    ),
    (
        "event-bounce-transient.json",
        SES_ID,
        datetime(2017, 8, 5, 0, 41, 2, 669000, tzinfo=UTC),
        [
            {
                "type": E.BOUNCED,
                "recipient": "recipient@example.com",
                "reason": R.OTHER,
                "response": "smtp; 421 4.4.7 delivery time expired",
                "description": "Transient: General",
            }
        ],
    ),
    (
        "event-complaint.json",
        SES_ID,
        datetime(2017, 8, 5, 0, 41, 2, 669000, tzinfo=UTC),
        [
            {
                "type": E.COMPLAINED,
                "recipient": "recipient@example.com",
                "reason": R.SPAM,
                "response": None,
                "description": "abuse",
            }
        ],
    ),
    (
        "event-delivery.json",
        SES_ID,
        datetime(2016, 10, 19, 23, 21, 4, 133000, tzinfo=UTC),
        [
            {
                "type": E.DELIVERED,
                "recipient": "recipient@example.com",
                "reason": None,
                "response": "250 2.6.0 Message received",
                "description": None,
            }
        ],
    ),
    (
        "event-send.json",
        SES_ID,
        datetime(2016, 10, 14, 5, 2, 16, 645000, tzinfo=UTC),
        [
            {
                "type": E.QUEUED,
                "recipient": "recipient@example.com",
                "reason": None,
                "response": None,
                "description": None,
            }
        ],
    ),
    (
        "event-reject.json",
        SES_ID,
        datetime(2016, 10, 14, 17, 38, 15, 211000, tzinfo=UTC),
        [
            {
                "type": E.REJECTED,
                "recipient": "sender@example.com",
                "reason": R.BLOCKED,
                "response": None,
                "description": "Bad content",
            }
        ],
    ),
    (
        "event-deliverydelay.json",
        SES_ID,
        datetime(2020, 6, 16, 0, 25, 40, 95000, tzinfo=UTC),
        [
            {
                "type": E.DEFERRED,
                "recipient": "recipient@example.com",
                "reason": R.TIMED_OUT,
                "response": "smtp; 421 4.4.1 Unable to connect to remote host",
                "description": "TransientCommunicationFailure",
            }
        ],
    ),
    (
        "event-open.json",
        SES_ID,
        datetime(2017, 8, 9, 22, 0, 19, 652000, tzinfo=UTC),
        [
            {
                "type": E.OPENED,
                "recipient": "recipient@example.com",
                "reason": None,
                "response": None,
                "description": None,
            }
        ],
    ),
    (
        "event-click.json",
        SES_ID,
        datetime(2017, 8, 9, 23, 51, 25, 570000, tzinfo=UTC),
        [
            {
                "type": E.CLICKED,
                "recipient": "recipient@example.com",
                "reason": None,
                "response": None,
                "description": None,
            }
        ],
    ),
]


@pytest.mark.parametrize(("name", "message_id", "timestamp", "expected"), SES_CASES)
def test_ses_payloads_normalise(
    name: str, message_id: str, timestamp: datetime, expected: list[dict[str, Any]]
) -> None:
    # GIVEN an SES notification or event record from the documentation
    # WHEN it is parsed
    events = _ses(name)
    # THEN one event per named recipient, with every normalised field right
    assert [_fields(e) for e in events] == expected
    for event in events:
        assert event.provider == "ses"
        assert event.event_id == "sns-message-1"  # the SNS MessageId
        assert event.message_id == message_id
        assert event.timestamp == timestamp
        assert event.raw == fixture("ses", name)  # the raw payload is kept beside it
        headers = fixture("ses", name)["mail"].get("commonHeaders", {})
        assert event.message_id_header == headers.get("messageId")


def test_ses_notification_and_event_formats_agree() -> None:
    # GIVEN the same kind of event in both SES formats
    notification = _ses("notification-delivery.json")[0]
    published = _ses("event-delivery.json")[0]
    # THEN both normalise to the same type and shape
    assert notification.event_type is published.event_type is E.DELIVERED
    assert notification.recipient == "jane@example.com"
    assert published.recipient == "recipient@example.com"


def test_ses_topic_validation_message_is_no_event() -> None:
    assert parse_ses_message(TOPIC_VALIDATION_MESSAGE, event_id="x") == []


@pytest.mark.parametrize(
    "message",
    [
        "not json",
        json.dumps([1, 2]),
        json.dumps({"mail": {"messageId": "x"}}),  # no type
        json.dumps({"notificationType": "Bounce", "mail": "nope"}),
        json.dumps({"notificationType": "Bounce", "mail": {}, "bounce": {"bounceType": "X"}}),
    ],
)
def test_malformed_ses_messages_are_refused(message: str) -> None:
    with pytest.raises(MalformedWebhook):
        parse_ses_message(message, event_id="x")


def test_an_unknown_ses_event_type_is_kept_as_unknown() -> None:
    payload = fixture("ses", "event-send.json")
    payload["eventType"] = "SomethingNew"
    (event,) = parse_ses_message(json.dumps(payload), event_id="x")
    assert event.event_type is E.UNKNOWN
    assert event.description == "SES event type 'SomethingNew'"


SENDGRID_ID = "14c5d75ce93"
SENDGRID_CASES: list[tuple[str, dict[str, Any]]] = [
    ("processed.json", {"type": E.QUEUED, "reason": None, "response": None, "description": None}),
    (
        "deferred.json",
        {
            "type": E.DEFERRED,
            "reason": None,
            "response": "400 try again later",
            "description": None,
        },
    ),
    (
        "delivered.json",
        {"type": E.DELIVERED, "reason": None, "response": "250 OK", "description": None},
    ),
    (
        "bounce.json",
        {
            "type": E.BOUNCED,
            "reason": R.BOUNCED,
            "response": "500 unknown recipient",
            "description": "Invalid Address",
        },
    ),
    (
        "blocked.json",
        {
            "type": E.BOUNCED,
            "reason": R.BLOCKED,
            "response": "550 5.7.1 Message rejected due to local policy",
            "description": "Reputation",
        },
    ),
    (
        "dropped.json",
        {
            "type": E.REJECTED,
            "reason": R.BOUNCED,
            "response": None,
            "description": "Bounced Address",
        },
    ),
    ("open.json", {"type": E.OPENED, "reason": None, "response": None, "description": None}),
    ("click.json", {"type": E.CLICKED, "reason": None, "response": None, "description": None}),
    (
        "spamreport.json",
        {"type": E.COMPLAINED, "reason": R.SPAM, "response": None, "description": None},
    ),
    (
        "unsubscribe.json",
        {"type": E.UNSUBSCRIBED, "reason": R.UNSUBSCRIBED, "response": None, "description": None},
    ),
    (
        "group_unsubscribe.json",
        {"type": E.UNSUBSCRIBED, "reason": R.UNSUBSCRIBED, "response": None, "description": None},
    ),
]


@pytest.mark.parametrize(("name", "expected"), SENDGRID_CASES)
def test_sendgrid_events_normalise(name: str, expected: dict[str, Any]) -> None:
    (raw,) = fixture("sendgrid", name)
    event = parse_sendgrid_event(raw)
    assert {
        "type": event.event_type,
        "reason": event.reject_reason,
        "response": event.mta_response,
        "description": event.description,
    } == expected
    assert event.provider == "sendgrid"
    assert event.event_id == raw["sg_event_id"]
    # The X-Message-Id the send call returned: sg_message_id up to its first dot.
    assert event.message_id == SENDGRID_ID
    assert event.recipient == "example@test.com"
    assert event.timestamp == datetime(2017, 12, 15, 0, 59, 29, tzinfo=UTC)
    assert event.message_id_header == "<14c5d75ce93.dfd.64b469@ismtpd-555>"
    assert event.raw == raw


def test_sendgrid_event_without_an_id_gets_a_stable_content_id() -> None:
    (raw,) = fixture("sendgrid", "dropped.json")
    del raw["sg_event_id"]
    first, again = parse_sendgrid_event(raw), parse_sendgrid_event(dict(raw))
    assert first.event_id.startswith("sha256:")
    assert first.event_id == again.event_id


def test_sendgrid_custom_arg_names_our_message() -> None:
    (raw,) = fixture("sendgrid", "delivered.json")
    raw["mailroom_message_id"] = "0f5c3a52-0000-4000-8000-000000000001@example.com"
    event = parse_sendgrid_event(raw)
    assert event.message_id_header == "<0f5c3a52-0000-4000-8000-000000000001@example.com>"


MAILGUN_ID = "20180812211713.1.DF5966851B4BAA99@example.org"
MAILGUN_CASES: list[tuple[str, dict[str, Any]]] = [
    ("accepted.json", {"type": E.QUEUED, "reason": None, "response": None}),
    ("delivered.json", {"type": E.DELIVERED, "reason": None, "response": "OK"}),
    (
        "failed-permanent.json",
        {
            "type": E.BOUNCED,
            "reason": R.BOUNCED,
            "response": "5.1.1 The email account that you tried to reach does not exist. "
            "Please try\n5.1.1 double-checking the recipient's email address for typos",
        },
    ),
    ("failed-suppress-bounce.json", {"type": E.REJECTED, "reason": R.BOUNCED, "response": None}),
    (
        "failed-temporary.json",
        {"type": E.DEFERRED, "reason": R.OTHER, "response": "No MX for example.com"},
    ),
    ("opened.json", {"type": E.OPENED, "reason": None, "response": None}),
    ("clicked.json", {"type": E.CLICKED, "reason": None, "response": None}),
    ("unsubscribed.json", {"type": E.UNSUBSCRIBED, "reason": R.UNSUBSCRIBED, "response": None}),
    ("complained.json", {"type": E.COMPLAINED, "reason": R.SPAM, "response": None}),
]


@pytest.mark.parametrize(("name", "expected"), MAILGUN_CASES)
def test_mailgun_events_normalise(name: str, expected: dict[str, Any]) -> None:
    payload = fixture("mailgun", name)
    data = payload["event-data"]
    event = parse_mailgun_event(data, raw=payload)
    assert {
        "type": event.event_type,
        "reason": event.reject_reason,
        "response": event.mta_response,
    } == expected
    assert event.provider == "mailgun"
    assert event.event_id == f"{data['id']}@{data['timestamp']}"
    assert event.message_id == MAILGUN_ID
    assert event.message_id_header == f"<{MAILGUN_ID}>"
    assert event.recipient == "recipient@example.com"
    assert event.timestamp == datetime.fromtimestamp(data["timestamp"], tz=UTC)
    assert event.raw == payload


def test_mailgun_rejected_event_takes_the_recipient_from_the_to_header() -> None:
    data = {
        "event": "rejected",
        "timestamp": 1529704976.104692,
        "reject": {"reason": "Sandbox subdomains are for test purposes only.", "description": ""},
        "message": {
            "headers": {"to": "Recipient Name <recipient@example.org>", "message-id": "a@b"}
        },
    }
    event = parse_mailgun_event(data, raw={"event-data": data})
    assert (event.event_type, event.recipient, event.reject_reason) == (
        E.REJECTED,
        "recipient@example.org",
        R.OTHER,
    )
    assert event.description == "Sandbox subdomains are for test purposes only."


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"event": ["delivered"]},
        {"event": "delivered", "timestamp": "yesterday"},
        {"event": "delivered", "timestamp": 1, "recipient": "x" * 2000},
        {"event": "delivered", "timestamp": 1, "message": {"headers": {"message-id": "m" * 300}}},
    ],
)
def test_malformed_mailgun_event_data_is_refused(data: dict[str, Any]) -> None:
    with pytest.raises(MalformedWebhook):
        parse_mailgun_event(data, raw={})
