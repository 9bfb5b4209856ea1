"""POST /webhooks/{provider} and SNS→Lambda records, end to end on fakes.

For each provider and each fixture: the message status ends right and a
suppression entry exists exactly where it should. Every refusal is a 4xx in
the error shape and leaves the database as it was; our own failures are 5xx.
"""

from __future__ import annotations

import copy
import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy.exc import OperationalError

from mailroom.adapters.webhooks.registry import WebhookRegistry
from mailroom.bootstrap import Services, bootstrap
from mailroom.config import Settings
from mailroom.domain.feedback import SuppressionReason, SuppressionScope
from mailroom.domain.model import Message, MessageStatus
from mailroom.entrypoints.webhooks import (
    create_webhooks_api,
    is_sns_event,
    process_sns_event,
    webhooks_function_routes,
)
from mailroom.services import clients
from tests.events import FakeLambdaContext
from tests.fakes import FakeUnitOfWork, PlainHasher, RecordingQueue
from tests.fakes_feedback import FixedClock, MemoryReplayGuard, StaticFetcher
from tests.feedback_support import (
    CERT_URL,
    MAILGUN_SIGNING_KEY,
    NOW,
    TOPIC_ARN,
    fixture,
    mailgun_signed,
    sendgrid_signer,
    ses_envelope,
    sns_lambda_event,
    sns_signer,
    webhook_event,
)

S = MessageStatus
HARD, COMPLAINT, UNSUB = (
    SuppressionReason.HARD_BOUNCE,
    SuppressionReason.COMPLAINT,
    SuppressionReason.UNSUBSCRIBE,
)
LIMIT = 64 * 1024


class Stack:
    def __init__(self, *, settings: Settings | None = None, uow: Any = None) -> None:
        self.uow = FakeUnitOfWork()
        self.fetcher = StaticFetcher({CERT_URL: sns_signer().certificate_pem})
        self.guard = MemoryReplayGuard()
        settings = settings or Settings(
            sns_topic_arns=TOPIC_ARN,
            sendgrid_webhook_public_key=sendgrid_signer().public_key,
            mailgun_webhook_signing_key=SecretStr(MAILGUN_SIGNING_KEY),
        )
        self.services: Services = bootstrap(
            settings,
            uow=uow or (lambda: self.uow),
            hasher=PlainHasher(),
            queue=RecordingQueue(),
            health_probes={},
            webhooks=WebhookRegistry(
                settings, fetcher=self.fetcher, replay_guard=self.guard, clock=FixedClock(NOW)
            ),
        )
        self.app = create_webhooks_api(
            webhooks_function_routes(lambda: self.services), max_request_bytes=lambda: LIMIT
        )
        self.client_id = clients.register_client(self.uow, PlainHasher(), name="acme").client.id

    def message(self, provider: str, provider_msg_id: str, to: list[str]) -> Message:
        message = Message(
            id=uuid.uuid4(),
            client_id=self.client_id,
            trace_id="t",
            template_name="welcome",
            from_address="noreply@example.com",
            to=to,
            status=S.SENT,
            provider=provider,
            provider_msg_id=provider_msg_id,
        )
        with self.uow:
            self.uow.messages.add(message)
            self.uow.commit()
        return message

    def post(self, provider: str, body: str | bytes, **headers: str) -> tuple[int, dict[str, Any]]:
        response = self.app.resolve(webhook_event(provider, body, **headers), FakeLambdaContext())
        return response["statusCode"], json.loads(response["body"])

    def status(self, message: Message) -> MessageStatus:
        return self.uow.messages.rows[message.id].status

    def suppressions(self) -> set[tuple[str, SuppressionReason, SuppressionScope]]:
        return {(s.address, s.reason, s.scope) for s in self.uow.suppressions.entries}

    def state(self) -> Any:
        """Everything a webhook could change, to compare before and after a refusal."""
        return copy.deepcopy(
            (
                {k: v.status for k, v in self.uow.messages.rows.items()},
                list(self.uow.messages.event_rows),
                self.uow.feedback_state,
            )
        )


def _ses_post(stack: Stack, payload: dict[str, Any], **kwargs: Any) -> tuple[int, dict[str, Any]]:
    envelope = ses_envelope(payload, **kwargs)
    return stack.post("ses", json.dumps(envelope), **{"x-amz-sns-message-type": "Notification"})


SES_ID = "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000"
SES_CASES = [
    ("notification-bounce-permanent.json", S.BOUNCED, {("jane@example.com", HARD, "global")}),
    (
        "notification-bounce-no-dsn.json",
        S.BOUNCED,
        {("jane@example.com", HARD, "global"), ("richard@example.com", HARD, "global")},
    ),
    ("notification-bounce-transient.json", S.BOUNCED, set()),
    ("notification-complaint.json", S.SPAM, {("richard@example.com", COMPLAINT, "client")}),
    ("notification-delivery.json", S.DELIVERED, set()),
    ("event-bounce-permanent.json", S.BOUNCED, {("recipient@example.com", HARD, "global")}),
    ("event-bounce-transient.json", S.BOUNCED, set()),
    ("event-complaint.json", S.SPAM, {("recipient@example.com", COMPLAINT, "client")}),
    ("event-delivery.json", S.DELIVERED, set()),
    ("event-send.json", S.SENT, set()),
    ("event-reject.json", S.FAILED, set()),
    ("event-deliverydelay.json", S.SENT, set()),
    ("event-open.json", S.SENT, set()),
    ("event-click.json", S.SENT, set()),
]


@pytest.mark.parametrize(("name", "status", "suppressed"), SES_CASES)
def test_ses_fixture_over_https(name: str, status: MessageStatus, suppressed: set[Any]) -> None:
    # GIVEN a sent message whose SES id is the fixture's
    stack = Stack()
    payload = fixture("ses", name)
    message = stack.message("ses", payload["mail"]["messageId"], payload["mail"]["destination"])
    # WHEN SNS posts the signed notification
    code, body = _ses_post(stack, payload)
    # THEN 200, the status ends right and suppressions are exactly as expected
    assert code == 200, body
    assert body["applied"] >= 1
    assert stack.status(message) is status
    assert stack.suppressions() == {(a, r, SuppressionScope(s)) for a, r, s in suppressed}


@pytest.mark.parametrize(("name", "status", "suppressed"), SES_CASES)
def test_ses_fixture_through_sns_invoking_the_function(
    name: str, status: MessageStatus, suppressed: set[Any]
) -> None:
    stack = Stack()
    payload = fixture("ses", name)
    message = stack.message("ses", payload["mail"]["messageId"], payload["mail"]["destination"])
    event = sns_lambda_event(payload)
    assert is_sns_event(event)
    result = process_sns_event(event, stack.services)
    assert result["refused"] == 0
    assert result["applied"] >= 1
    assert stack.status(message) is status
    assert stack.suppressions() == {(a, r, SuppressionScope(s)) for a, r, s in suppressed}


SENDGRID_CASES = [
    ("processed.json", S.SENT, set()),
    ("deferred.json", S.SENT, set()),
    ("delivered.json", S.DELIVERED, set()),
    ("bounce.json", S.BOUNCED, {HARD}),
    ("blocked.json", S.BOUNCED, set()),
    ("dropped.json", S.FAILED, {HARD}),
    ("open.json", S.SENT, set()),
    ("click.json", S.SENT, set()),
    ("spamreport.json", S.SPAM, {COMPLAINT}),
    ("unsubscribe.json", S.SENT, {UNSUB}),
    ("group_unsubscribe.json", S.SENT, {UNSUB}),
]


@pytest.mark.parametrize(("name", "status", "reasons"), SENDGRID_CASES)
def test_sendgrid_fixture(name: str, status: MessageStatus, reasons: set[Any]) -> None:
    stack = Stack()
    message = stack.message("sendgrid", "14c5d75ce93", ["example@test.com"])
    body = json.dumps(fixture("sendgrid", name)).encode()
    code, answer = stack.post("sendgrid", body, **sendgrid_signer().headers(body))
    assert code == 200, answer
    assert answer == {"received": 1, "applied": 1, "duplicates": 0, "orphans": 0, "adopted": 0}
    assert stack.status(message) is status
    assert {r for _, r, _ in stack.suppressions()} == reasons


def test_a_sendgrid_batch_is_applied_as_one_and_ends_delivered() -> None:
    stack = Stack()
    message = stack.message("sendgrid", "14c5d75ce93", ["example@test.com"])
    body = json.dumps(fixture("sendgrid", "batch.json")).encode()
    code, answer = stack.post("sendgrid", body, **sendgrid_signer().headers(body))
    assert (code, answer["received"], answer["applied"]) == (200, 5, 5)
    assert stack.status(message) is S.DELIVERED


MAILGUN_CASES = [
    ("accepted.json", S.SENT, set()),
    ("delivered.json", S.DELIVERED, set()),
    ("failed-permanent.json", S.BOUNCED, {HARD}),
    ("failed-suppress-bounce.json", S.FAILED, {HARD}),
    ("failed-temporary.json", S.SENT, set()),
    ("opened.json", S.SENT, set()),
    ("clicked.json", S.SENT, set()),
    ("unsubscribed.json", S.SENT, {UNSUB}),
    ("complained.json", S.SPAM, {COMPLAINT}),
]


@pytest.mark.parametrize(("name", "status", "reasons"), MAILGUN_CASES)
def test_mailgun_fixture(name: str, status: MessageStatus, reasons: set[Any]) -> None:
    stack = Stack()
    message = stack.message(
        "mailgun", "20180812211713.1.DF5966851B4BAA99@example.org", ["recipient@example.com"]
    )
    code, answer = stack.post("mailgun", json.dumps(mailgun_signed(fixture("mailgun", name))))
    assert code == 200, answer
    assert answer["applied"] == 1
    assert stack.status(message) is status
    assert {r for _, r, _ in stack.suppressions()} == reasons


# --- refusals: 4xx, and nothing changes -------------------------------------------


def _refusals() -> list[tuple[str, Any, int, str]]:
    sendgrid_body = json.dumps(fixture("sendgrid", "bounce.json")).encode()
    good_sendgrid = sendgrid_signer().headers(sendgrid_body)
    bounce = fixture("ses", "event-bounce-permanent.json")

    def ses_forged() -> tuple[str, str | bytes, dict[str, str]]:
        envelope = ses_envelope(bounce)
        envelope["Message"] = envelope["Message"].replace("recipient@", "someone-else@")
        return "ses", json.dumps(envelope), {}

    def ses_foreign_topic() -> tuple[str, str | bytes, dict[str, str]]:
        envelope = fixture("ses", "sns-notification.json")
        envelope.update(
            TopicArn="arn:aws:sns:us-west-2:999999999999:Attacker", Message=json.dumps(bounce)
        )
        del envelope["Subject"]
        return "ses", json.dumps(sns_signer().sign(envelope)), {}

    def ses_foreign_cert() -> tuple[str, str | bytes, dict[str, str]]:
        envelope = fixture("ses", "sns-notification.json")
        envelope.update(
            Message=json.dumps(bounce),
            SigningCertURL="https://evil.example/SimpleNotificationService-x.pem",
        )
        del envelope["Subject"]
        return "ses", json.dumps(sns_signer().sign(envelope)), {}

    def sendgrid_forged() -> tuple[str, str | bytes, dict[str, str]]:
        return "sendgrid", sendgrid_body.replace(b"bounce", b"spamreport"), good_sendgrid

    def sendgrid_stale() -> tuple[str, str | bytes, dict[str, str]]:
        headers = sendgrid_signer().headers(sendgrid_body, timestamp=NOW - timedelta(hours=1))
        return "sendgrid", sendgrid_body, headers

    def mailgun_forged() -> tuple[str, str | bytes, dict[str, str]]:
        payload = mailgun_signed(fixture("mailgun", "failed-permanent.json"), key="guessed")
        return "mailgun", json.dumps(payload), {}

    def mailgun_stale() -> tuple[str, str | bytes, dict[str, str]]:
        payload = mailgun_signed(
            fixture("mailgun", "failed-permanent.json"), timestamp=NOW - timedelta(minutes=30)
        )
        return "mailgun", json.dumps(payload), {}

    def malformed() -> tuple[str, str | bytes, dict[str, str]]:
        body = b"[{"
        return "sendgrid", body, sendgrid_signer().headers(body)

    return [
        ("forged SES notification", ses_forged, 401, "invalid_signature"),
        ("SNS topic not on the allowlist", ses_foreign_topic, 403, "topic_not_allowed"),
        ("certificate URL on a foreign host", ses_foreign_cert, 403, "untrusted_certificate_url"),
        ("forged SendGrid batch", sendgrid_forged, 401, "invalid_signature"),
        ("stale SendGrid timestamp", sendgrid_stale, 401, "stale_timestamp"),
        ("forged Mailgun event", mailgun_forged, 401, "invalid_signature"),
        ("stale Mailgun timestamp", mailgun_stale, 401, "stale_timestamp"),
        ("signed but malformed body", malformed, 400, "malformed_payload"),
    ]


@pytest.mark.parametrize(
    ("case", "build", "status", "code"), _refusals(), ids=[c[0] for c in _refusals()]
)
def test_refused_requests_change_nothing(case: str, build: Any, status: int, code: str) -> None:
    # GIVEN messages the forged events name
    stack = Stack()
    stack.message("ses", "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000", ["a@b.c"])
    stack.message("sendgrid", "14c5d75ce93", ["example@test.com"])
    stack.message("mailgun", "20180812211713.1.DF5966851B4BAA99@example.org", ["r@example.com"])
    before = stack.state()
    provider, body, headers = build()
    # WHEN the request arrives
    got_status, answer = stack.post(provider, body, **headers)
    # THEN it is refused in the error shape and nothing changed
    assert (got_status, answer["error"]["code"]) == (status, code), answer
    assert answer["error"]["message"]
    assert stack.state() == before


def test_a_replayed_mailgun_token_is_refused_and_changes_nothing() -> None:
    stack = Stack()
    message = stack.message(
        "mailgun", "20180812211713.1.DF5966851B4BAA99@example.org", ["recipient@example.com"]
    )
    signed = mailgun_signed(fixture("mailgun", "delivered.json"))
    assert stack.post("mailgun", json.dumps(signed))[0] == 200
    before = stack.state()
    # the same signed request again, even carrying another event
    replay = dict(signed, **{"event-data": fixture("mailgun", "complained.json")["event-data"]})
    status, answer = stack.post("mailgun", json.dumps(replay))
    assert (status, answer["error"]["code"]) == (401, "replayed_token")
    assert stack.state() == before
    assert stack.status(message) is S.DELIVERED


def test_a_duplicate_delivery_of_the_same_event_is_answered_200_and_applied_once() -> None:
    stack = Stack()
    payload = fixture("ses", "event-bounce-permanent.json")
    message = stack.message("ses", payload["mail"]["messageId"], ["recipient@example.com"])
    envelope = json.dumps(ses_envelope(payload, message_id="sns-retry-1"))
    first = stack.post("ses", envelope)
    again = stack.post("ses", envelope)
    assert first == (
        200,
        {"received": 1, "applied": 1, "duplicates": 0, "orphans": 0, "adopted": 0},
    )
    assert again == (
        200,
        {"received": 1, "applied": 0, "duplicates": 1, "orphans": 0, "adopted": 0},
    )
    assert len(stack.uow.messages.events(message.id)) == 1


def test_an_event_for_an_unknown_message_is_answered_200_as_an_orphan() -> None:
    stack = Stack()
    code, answer = _ses_post(stack, fixture("ses", "event-delivery.json"))
    assert (code, answer["orphans"], answer["applied"]) == (200, 1, 0)


def test_a_forged_sns_record_invoking_the_function_is_dropped_not_retried() -> None:
    stack = Stack()
    payload = fixture("ses", "event-complaint.json")
    message = stack.message("ses", payload["mail"]["messageId"], ["recipient@example.com"])
    event = sns_lambda_event(payload)
    event["Records"][0]["Sns"]["TopicArn"] = "arn:aws:sns:us-west-2:999999999999:Attacker"
    result = process_sns_event(event, stack.services)
    assert result["refused"] == 1
    assert stack.status(message) is S.SENT


def test_the_subscription_confirmation_is_visited_for_the_allowed_topic() -> None:
    stack = Stack()
    envelope = sns_signer().sign(fixture("ses", "sns-subscription-confirmation.json"))
    status, answer = stack.post(
        "ses", json.dumps(envelope), **{"x-amz-sns-message-type": "SubscriptionConfirmation"}
    )
    assert (status, answer["received"]) == (200, 0)
    assert stack.fetcher.fetched[-1] == envelope["SubscribeURL"]


def test_an_api_gateway_event_is_not_mistaken_for_an_sns_one() -> None:
    assert not is_sns_event(webhook_event("ses", "{}"))
    assert not is_sns_event({"Records": [{"EventSource": "aws:sqs"}]})
    assert not is_sns_event({"Records": []})


def test_unknown_provider_is_404() -> None:
    status, answer = Stack().post("postmark", "{}")
    assert (status, answer["error"]["code"]) == (404, "unknown_provider")


@pytest.mark.parametrize("provider", ["ses", "sendgrid", "mailgun"])
def test_a_provider_without_its_key_is_our_misconfiguration_so_503(provider: str) -> None:
    stack = Stack(settings=Settings())
    status, answer = stack.post(provider, "[]")
    assert (status, answer["error"]["code"]) == (503, "webhook_not_configured")


def test_the_database_down_is_503_so_the_provider_retries() -> None:
    class DownUnitOfWork(FakeUnitOfWork):
        def __enter__(self) -> DownUnitOfWork:
            raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    stack = Stack(uow=DownUnitOfWork)
    body = json.dumps(fixture("sendgrid", "delivered.json")).encode()
    status, answer = stack.post("sendgrid", body, **sendgrid_signer().headers(body))
    assert (status, answer["error"]["code"]) == (503, "service_unavailable")


def test_a_body_over_the_limit_is_413_before_anything_parses_it() -> None:
    stack = Stack()
    body = "[" + " " * LIMIT + "]"
    status, answer = stack.post("sendgrid", body)
    assert (status, answer["error"]["code"]) == (413, "payload_too_large")


def test_sns_text_plain_content_type_is_accepted() -> None:
    stack = Stack()
    envelope = ses_envelope(fixture("ses", "event-delivery.json"))
    status, _ = stack.post(
        "ses", json.dumps(envelope), **{"Content-Type": "text/plain; charset=UTF-8"}
    )
    assert status == 200
