"""Outbound webhooks' domain (issue 19): the type table, URLs, signatures, the retry schedule."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook

from mailroom.adapters.webhook_sender import Urllib3WebhookSender
from mailroom.domain.errors import (
    BlockedAddress,
    InvalidRequest,
    UnknownEventType,
    UnsafeWebhookUrl,
)
from mailroom.domain.model import EventType
from mailroom.domain.outbound_webhooks import (
    INTERNAL_ONLY_TYPES,
    MESSAGE_EVENT_TYPES,
    PUBLIC_TYPE_OF,
    RETRY_SCHEDULE,
    SUBSCRIBABLE_TYPES,
    TEST_EVENT,
    new_secret,
    next_attempt_delay,
    parse_event_types,
    parse_retry_after,
    parse_webhook_url,
    secret_key,
    signed_headers,
)


def test_every_internal_event_type_is_a_decision() -> None:
    # GIVEN every EventType Mailroom records
    # THEN each is either sent (mapped to a public type) or bookkeeping, never both:
    # a type added later fails here until someone decides which
    undecided = [t.value for t in EventType if t.value not in PUBLIC_TYPE_OF]
    assert set(undecided) <= INTERNAL_ONLY_TYPES, undecided
    assert not (set(PUBLIC_TYPE_OF) & INTERNAL_ONLY_TYPES)


def test_every_public_type_has_a_source_and_every_mapping_a_public_type() -> None:
    sources = set(PUBLIC_TYPE_OF.values())
    assert set(MESSAGE_EVENT_TYPES) <= sources
    assert sources <= {*SUBSCRIBABLE_TYPES, TEST_EVENT}


def test_signatures_verify_with_the_reference_library_for_each_secret() -> None:
    # GIVEN two secrets (a rotation) and a body
    old, new = new_secret(), new_secret()
    body = b'{"type":"email.sent","timestamp":"2026-12-06T10:00:00.000Z","data":{}}'
    now = int(datetime.now(UTC).timestamp())
    # WHEN it is signed with both
    headers = signed_headers([secret_key(new), secret_key(old)], "evt_1", now, body)
    # THEN each secret alone verifies it
    assert Webhook(old).verify(body, headers)["type"] == "email.sent"
    assert Webhook(new).verify(body, headers)["type"] == "email.sent"
    assert headers["webhook-signature"].count("v1,") == 2


def test_secrets_are_whsec_and_24_to_64_bytes() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert 24 <= len(secret_key(secret)) <= 64


def test_the_retry_schedule_with_jitter_and_retry_after() -> None:
    rng = random.Random(1)
    for attempts, planned in enumerate(RETRY_SCHEDULE[1:], start=1):
        delay = next_attempt_delay(attempts, rng=rng)
        assert delay is not None
        assert planned * 0.9 <= delay <= planned * 1.1
    assert next_attempt_delay(len(RETRY_SCHEDULE)) is None
    # Retry-After stretches a short wait, never shortens a long one, and is capped.
    assert next_attempt_delay(1, retry_after=timedelta(minutes=3), rng=rng) == timedelta(minutes=3)
    long_wait = next_attempt_delay(6, retry_after=timedelta(seconds=1), rng=rng)
    assert long_wait is not None
    assert long_wait > timedelta(hours=9)
    capped = next_attempt_delay(1, retry_after=timedelta(days=30), rng=rng)
    assert capped == timedelta(hours=10)


def test_retry_after_as_seconds_or_an_http_date() -> None:
    now = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == timedelta(seconds=120)
    assert parse_retry_after("Sun, 06 Dec 2026 10:01:00 GMT", now) == timedelta(minutes=1)
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/",
        "https://a:b@hooks.example.com/",
        "https://@hooks.example.com/",
        "https://127.0.0.1/",
        "https://[::ffff:127.0.0.1]/",
        "https://[fe80::1]/",
        "https://100.64.0.1/",
        "https://0.0.0.0/",
        "https://x.localhost/",
        "https://hooks.example.com/#frag",
        "https://hooks.exämple.com/",
        "https://hooks.example.com:99999/",
        "javascript:alert(1)",
        "https://hooks example.com/",
    ],
)
def test_unsafe_urls(url: str) -> None:
    with pytest.raises(UnsafeWebhookUrl):
        parse_webhook_url(url, allow_private=False)


def test_the_operator_setting_admits_a_local_receiver() -> None:
    parsed = parse_webhook_url("http://127.0.0.1:8080/hook?x=1", allow_private=True)
    assert (parsed.scheme, parsed.host, parsed.port, parsed.target) == (
        "http",
        "127.0.0.1",
        8080,
        "/hook?x=1",
    )
    # Credentials stay refused even then.
    with pytest.raises(UnsafeWebhookUrl):
        parse_webhook_url("http://u:p@127.0.0.1/", allow_private=True)


def test_unknown_and_empty_event_types() -> None:
    assert parse_event_types(None) is None
    assert parse_event_types(["email.sent", "email.queued", "email.sent"]) == [
        "email.queued",
        "email.sent",
    ]
    with pytest.raises(UnknownEventType):
        parse_event_types(["email.sent", "email.nope"])
    with pytest.raises(InvalidRequest):
        parse_event_types([])


def test_a_name_with_any_private_address_is_refused_before_connecting() -> None:
    # GIVEN a name resolving to a public and a private address (DNS rebinding's shape)
    sender = Urllib3WebhookSender(resolver=lambda host, port: ["93.184.216.34", "10.0.0.7"])
    url = parse_webhook_url("https://rebind.example.com/hook", allow_private=False)
    # WHEN an attempt is made
    outcome = sender.post("e", url, {}, b"{}")
    # THEN it fails as blocked, with no connection tried (unit tests have no network)
    assert outcome.status_code is None
    assert outcome.error is not None
    assert outcome.error.startswith("blocked:")
    assert "10.0.0.7" in outcome.error


def test_blocked_address_is_an_unsafe_url() -> None:
    assert issubclass(BlockedAddress, UnsafeWebhookUrl)
